"""Durable study store: one Part 10 file per instance under the data directory.

An instance is on disk for good (file fsync, atomic rename, directory fsync)
before the listener answers success. Paths are built only from valid UIDs:
``studies/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from agent.uids import is_valid_uid


class InvalidUID(ValueError):
    """A UID that cannot name a file."""


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file's data (fdatasync: size included, mtime not) or a directory's entries."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd) if directory else os.fdatasync(fd)
    finally:
        os.close(fd)


class StudyStore:
    def __init__(self, data_dir: Path, fsync: bool = True):
        self.root = Path(data_dir)
        self.fsync = fsync
        self.studies = self.root / "studies"
        self.incoming = self.root / "incoming"
        self.quarantine_dir = self.root / "quarantine"
        self._lock = threading.Lock()
        self._syncer: ThreadPoolExecutor | None = None
        for d in (self.studies, self.incoming, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid),
                          ("SOPInstanceUID", sop_uid)):
            if not is_valid_uid(uid):
                raise InvalidUID(f"{name} is not a valid DICOM UID")
        return self.studies / study_uid / series_uid / f"{sop_uid}.dcm"

    def _ensure_dir(self, directory: Path) -> None:
        """Create the series folder if it is missing, and make its creation durable.

        Checked on disk every time (a stat): retention may have removed it since.
        """
        if directory.is_dir():
            return
        with self._lock:
            missing = []
            d = directory
            while not d.exists():
                missing.append(d)
                d = d.parent
            directory.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                for m in reversed(missing):
                    fsync_path(m.parent, directory=True)

    def sync_soon(self, tmp_path: Path) -> Future | None:
        """Start flushing a received file's data to disk now, in a background thread, so that
        the flush overlaps the listener's header checks; `commit(..., synced=)` waits for it
        before the rename. None when fsync is off."""
        if not self.fsync:
            return None
        fd = os.open(tmp_path, os.O_RDONLY)

        def flush() -> None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        if self._syncer is None:
            with self._lock:
                if self._syncer is None:
                    self._syncer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")
        try:
            return self._syncer.submit(flush)
        except RuntimeError:  # shutting down
            os.close(fd)
            return None

    def commit(self, tmp_path: Path, study_uid: str, series_uid: str, sop_uid: str,
               synced: Future | None = None) -> tuple[Path, bool]:
        """Move a received file into place durably. Returns (path, was_duplicate).

        `synced`: the file's flush started by `sync_soon`; waited for (and its error raised)
        before the rename, so the file is on disk before its name is."""
        dest = self.path_for(study_uid, series_uid, sop_uid)
        self._ensure_dir(dest.parent)
        duplicate = dest.exists()
        if self.fsync:
            if synced is not None:
                synced.result()
            else:
                fsync_path(tmp_path)
        try:
            try:
                os.replace(tmp_path, dest)
            except FileNotFoundError:  # the folder was removed meanwhile (retention): again
                self._ensure_dir(dest.parent)
                os.replace(tmp_path, dest)
        except FileNotFoundError:
            raise
        except OSError:  # another file system: copy, then replace atomically
            staged = dest.with_suffix(".part")
            shutil.copyfile(tmp_path, staged)
            if self.fsync:
                fsync_path(staged)
            os.replace(staged, dest)
        if self.fsync:
            fsync_path(dest.parent, directory=True)
        return dest, duplicate

    def quarantine(self, tmp_path: Path, reason: str, detail: str = "") -> Path:
        """Keep a rejected dataset with a sidecar saying why (no patient data in it)."""
        day = time.strftime("%Y%m%d")
        target_dir = self.quarantine_dir / day
        target_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:12]}"
        target = target_dir / f"{name}.dcm"
        try:
            os.replace(tmp_path, target)
        except OSError:
            shutil.copyfile(tmp_path, target)
        if self.fsync:
            fsync_path(target)
            fsync_path(target_dir, directory=True)
        (target_dir / f"{name}.json").write_text(
            json.dumps({"reason": reason, "detail": detail, "received": time.time()}) + "\n"
        )
        return target

    def own_incoming(self) -> Path:
        """This process's folder for datasets being received: incoming/<host>-<pid>."""
        d = self.incoming / f"{socket.gethostname()}-{os.getpid()}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clean_incoming(self, stale_after: float = 86400.0) -> int:
        """Remove partial files left by a crash (they were never acknowledged).

        Only those of processes that are gone: folders of this host whose process no
        longer runs, and, for other hosts (a shared store) or loose files, ones untouched
        for `stale_after` seconds. Another listener's receptions in progress are left alone.
        """
        count = 0
        host = socket.gethostname()
        now = time.time()
        for p in self.incoming.iterdir():
            if p.is_file():
                if now - _mtime(p) > stale_after:
                    p.unlink(missing_ok=True)
                    count += 1
                continue
            owner, _, pid = p.name.rpartition("-")
            if owner == host and pid.isdigit():
                gone = int(pid) != os.getpid() and not _alive(int(pid))
            else:
                gone = now - max([_mtime(f) for f in p.iterdir()] + [_mtime(p)]) > stale_after
            if gone:
                for f in p.iterdir():
                    f.unlink(missing_ok=True)
                    count += 1
                try:
                    p.rmdir()
                except OSError:
                    pass
        return count


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Housekeeping of the data directory: the store is a working copy, PACS is the archive.

Studies whose last instance arrived more than `retention_days` ago, and that are no
longer waiting to be triaged, are removed from disk and from the index (and, through
`on_remove`, from the local worklist). Quarantined datasets are kept as long, for someone to look at.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from typing import Callable

from core.index import QUEUED, StudyIndex
from agent.store import StudyStore

log = logging.getLogger(__name__)
DAY = 86400.0


def sweep(store: StudyStore, index: StudyIndex, retention_days: float, now: float | None = None,
          on_remove: Callable[[str], None] | None = None, _before_remove: Callable[[str], None] | None = None) -> int:
    """Remove expired studies; return how many. `on_remove(uid)` lets the worklist forget them.

    An instance of an expired study that is received during the sweep is never lost: the
    study folder is first renamed aside, the index is forgotten only if nothing was received
    since it was read (else the folder is put back), and any file newer than the study's last
    reception found in the folder set aside is moved back and indexed again.
    """
    if retention_days <= 0:
        return 0
    cutoff = (now or time.time()) - retention_days * DAY
    removed = 0
    for study_dir in list(store.studies.iterdir()):
        uid = study_dir.name
        if uid.startswith(".") or not study_dir.is_dir():
            continue
        if index.is_pending(uid) or index.redis.zscore(QUEUED, uid) is not None:
            continue  # still receiving or not yet triaged
        seen = index.last_received_raw(uid)
        last = float(seen) if seen else _newest_mtime(study_dir)
        if last > cutoff:
            continue
        newest = _newest_mtime(study_dir)  # files older than this are the expired study's
        if _before_remove:
            _before_remove(uid)  # tests: a late instance arrives here
        if _remove_study(store, index, uid, seen, newest):
            if on_remove:
                on_remove(uid)
            removed += 1
    for day_dir in store.quarantine_dir.iterdir():
        if day_dir.is_dir() and _newest_mtime(day_dir) < cutoff:
            shutil.rmtree(day_dir, ignore_errors=True)
    if removed:
        log.info("retention: removed %d stud%s older than %g days", removed, "y" if removed == 1 else "ies",
                 retention_days)
    return removed


def _remove_study(store: StudyStore, index: StudyIndex, uid: str, seen: str | None, last: float) -> bool:
    study_dir = store.studies / uid
    trash = store.studies / f".removing-{uid}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(study_dir, trash)
    except FileNotFoundError:
        return False
    if not index.forget(uid, seen if seen is not None else ""):
        # Received meanwhile: the study is alive again; put everything back.
        _restore(store, trash, uid, lambda p: True, index=None)
        return False
    # Forgotten. A file committed after `last` (a late instance) goes back and is indexed.
    _restore(store, trash, uid, lambda p: _mtime(p) > last, index=index)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _restore(store: StudyStore, trash: Path, uid: str, keep: Callable[[Path], bool], index) -> None:
    import pydicom

    from core.headers import summarize

    for f in sorted(trash.glob("*/*.dcm")):
        if not keep(f):
            continue
        dest = store.studies / uid / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.replace(f, dest)
            if store.fsync:
                from agent.store import fsync_path

                fsync_path(dest.parent, directory=True)
        if index is not None:
            try:
                ds = pydicom.dcmread(dest, stop_before_pixels=True)
                index.record_instance(summarize(ds, dest, dest.stat().st_size), received=time.time())
            except Exception as exc:  # indexed by reconciliation later
                log.warning("retention: cannot index a late instance now: %s", type(exc).__name__)
    if index is None:
        shutil.rmtree(trash, ignore_errors=True)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _newest_mtime(directory: Path) -> float:
    times = [p.stat().st_mtime for p in directory.rglob("*")]
    return max(times, default=directory.stat().st_mtime)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free

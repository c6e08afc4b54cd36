"""Audit trail: an append-only record of what happened to each study, as JSON lines.

Events: ``received`` (an instance acknowledged), ``triaged`` (with the rulebook version),
``triage_failed``, ``pushed`` (where and when, which revision), ``replayed`` (dead letters
sent again), ``rulebook_reloaded``; from the console: ``console_view`` (who viewed which
page or study), ``console_action`` (e.g. a dead letter replayed), ``console_login``. Fields are identifiers, codes and numbers only — never
free text, names, IDs of the patient or dates of birth (`FIELDS` is the allow-list).

Each process appends to its own file, ``<data_dir>/audit/<YYYYMMDD>/<host>-<pid>.jsonl``
(one write per line, O_APPEND), so listeners and workers sharing a data directory never
interleave; `export` merges them in time order. Days older than `audit_retention_days`
are removed by the housekeeping sweep.

No module state: each process makes one `AuditTrail` when it starts (`AuditTrail.from_config`;
`workers.runtime.Context.audit` for the workers) and hands it to what records (listener, HL7
listener, console, actors, worklist closing). `AuditTrail(None)` records nothing.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

EVENTS = frozenset({"received", "triaged", "triage_failed", "pushed", "replayed", "rulebook_reloaded", "removed",
                    "console_view", "console_action", "console_login", "order_received", "closed"})
#: The only fields an audit record may carry (no free text, no patient data).
FIELDS = frozenset({"study", "series", "instance", "calling_aet", "bytes", "revision", "priority", "rulebook",
                    "flags", "kind", "destination", "attempts", "reason", "version", "status", "control", "source",
                    "user", "view", "action"})  # console: user name, page viewed, action taken


class AuditTrail:
    """This process's audit trail under `<data_dir>/audit`; records nothing when `data_dir` is None
    or `enabled` is false."""

    def __init__(self, data_dir: Path | None, enabled: bool = True):
        self.directory = Path(data_dir) / "audit" if (data_dir is not None and enabled) else None
        self._lock = threading.Lock()
        self._path: Path | None = None  # the file `_fd` is open on (this day, this host and process)
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None  # (device, inode) of the open file

    @classmethod
    def from_config(cls, cfg) -> "AuditTrail":
        """The trail `cfg` asks for (`data_dir`, `audit`)."""
        return cls(cfg.data_dir, bool(getattr(cfg, "audit", True)))

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def record(self, event: str, **fields: Any) -> None:
        """Append one event; never raises on I/O (the audit must not stop reception or triage).
        An unknown event or field is a programming error: ValueError, even when disabled."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"audit fields not allowed: {sorted(unknown)}")
        if self.directory is None:
            return
        now = time.time()
        line = json.dumps({"at": round(now, 3), "event": event, **{k: v for k, v in fields.items() if v is not None}},
                          separators=(",", ":"), ensure_ascii=False) + "\n"
        day = time.strftime("%Y%m%d", time.gmtime(now))
        path = self.directory / day / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        with self._lock:
            try:
                # The file stays open (a stat and one write per record, no mkdir/open/close): a
                # new day or a forked process (its own pid in the name) opens its own file, and so
                # does a file removed or rotated meanwhile (its name no longer leads to the open one).
                if path != self._path or not self._still_named():
                    self._close()
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    self._path, self._id = path, _file_id(os.fstat(self._fd))
                os.write(self._fd, line.encode())
            except OSError as exc:
                self._close()  # opened again at the next record
                log.warning("audit record not written: %s", type(exc).__name__)

    def _still_named(self) -> bool:
        try:
            return _file_id(os.stat(self._path)) == self._id
        except OSError:
            return False

    def _close(self) -> None:
        fd, self._fd, self._path = self._fd, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        """Close the open file (records after this open it again)."""
        with self._lock:
            self._close()

    def __repr__(self) -> str:
        return f"AuditTrail({str(self.directory) if self.directory else 'off'})"


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def export(data_dir: Path, since: float | None = None, until: float | None = None) -> Iterator[dict]:
    """Every record of every process, in time order."""
    root = Path(data_dir) / "audit"
    if not root.is_dir():
        return iter(())
    streams = [_read(p) for p in sorted(root.glob("*/*.jsonl"))]
    merged = heapq.merge(*streams, key=lambda r: r["at"])
    return (r for r in merged if (since is None or r["at"] >= since) and (until is None or r["at"] < until))


def _read(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut by a crash


def sweep(data_dir: Path, retention_days: float, now: float | None = None) -> int:
    """Remove days older than the retention; return how many."""
    root = Path(data_dir) / "audit"
    if retention_days <= 0 or not root.is_dir():
        return 0
    cutoff = time.strftime("%Y%m%d", time.gmtime((now or time.time()) - retention_days * 86400))
    removed = 0
    for day in root.iterdir():
        if day.is_dir() and day.name.isdigit() and day.name < cutoff:
            shutil.rmtree(day, ignore_errors=True)
            removed += 1
    return removed

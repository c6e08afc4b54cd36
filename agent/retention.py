"""Housekeeping of the data directory: the store is a working copy, PACS is the archive.

Studies whose last instance arrived more than `retention_days` ago, and that are no
longer waiting to be triaged, are removed from disk and from the index (and, through
`on_remove`, from the local worklist). Quarantined datasets are kept as long, for someone to look at.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from typing import Callable

from core.index import StudyIndex
from agent.store import StudyStore

log = logging.getLogger(__name__)
DAY = 86400.0


def sweep(store: StudyStore, index: StudyIndex, retention_days: float, now: float | None = None,
          on_remove: Callable[[str], None] | None = None) -> int:
    """Remove expired studies; return how many. `on_remove(uid)` lets the worklist forget them."""
    if retention_days <= 0:
        return 0
    cutoff = (now or time.time()) - retention_days * DAY
    removed = 0
    for study_dir in store.studies.iterdir():
        uid = study_dir.name
        if index.is_pending(uid):
            continue  # still receiving or not yet triaged
        last = index.last_received(uid) or _newest_mtime(study_dir)
        if last > cutoff:
            continue
        shutil.rmtree(study_dir, ignore_errors=True)
        index.forget(uid)
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


def _newest_mtime(directory: Path) -> float:
    times = [p.stat().st_mtime for p in directory.rglob("*")]
    return max(times, default=directory.stat().st_mtime)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free

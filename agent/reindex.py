"""Rebuild the Redis index from the study store (after Redis lost its data).

Every stored instance that the index does not know is summarised again from its
header and indexed with its file time, so its study becomes stable and is triaged.
"""

from __future__ import annotations

import logging

import pydicom

from core.headers import summarize
from core.index import StudyIndex, study_key
from agent.store import StudyStore

log = logging.getLogger(__name__)


def _candidates(store: StudyStore, index: StudyIndex, only_mismatched: bool):
    if not only_mismatched:
        yield from sorted(store.studies.glob("*/*/*.dcm"))
        return
    for study_dir in sorted(store.studies.iterdir()):
        if not study_dir.is_dir() or study_dir.name.startswith("."):
            continue
        files = sorted(study_dir.glob("*/*.dcm"))
        if files and index.redis.hlen(study_key(study_dir.name) + ":instances") >= len(files):
            continue  # every file indexed (the common case: one round trip per study)
        yield from files


def reindex(store: StudyStore, index: StudyIndex, only_mismatched: bool = False) -> tuple[int, int]:
    """Index what is on disk but not in Redis; return (instances added, studies touched)."""
    added, studies = 0, set()
    for path in _candidates(store, index, only_mismatched):
        study_uid, sop_uid = path.parent.parent.name, path.stem
        if index.redis.hexists(study_key(study_uid) + ":instances", sop_uid):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            log.warning("reindex: cannot read %s: %s", path.name, type(exc).__name__)
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed by retention meanwhile
            continue
        index.record_instance(summarize(ds, path, stat.st_size), received=stat.st_mtime)
        added += 1
        studies.add(study_uid)
    return added, len(studies)

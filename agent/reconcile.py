"""Automatic reconciliation of the study store (disk) and the Redis index and queue.

Runs at start, periodically, after the listener could not index an instance (Redis
away), and whenever Redis restarted (its run id changed: it may have lost data):

- every stored instance the index does not know is indexed again from its header
  (`agent.reindex`), so its study becomes pending and is triaged;
- a study on disk that is fully indexed but neither pending, queued nor on the worklist
  (its state was lost) is made pending again;
- a study queued for triage longer than the lease, with no live triage lock, is queued
  again (its message was lost: acknowledged while its retry could not be queued, or lost
  with Redis data). Triage is idempotent, so a second message costs a little work only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import redis

from core import keys, metrics
from core.index import PENDING, QUEUED, StudyIndex, study_key
from agent.reindex import reindex
from agent.store import StudyStore

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, store: StudyStore, index: StudyIndex, enqueue: Callable[[str], None],
                 lease: float = 300.0, interval: float = 60.0):
        self.store = store
        self.index = index
        self.enqueue = enqueue
        self.lease = lease
        self.interval = interval
        self.dirty = threading.Event()  # set by the listener when an instance could not be indexed
        self.dirty.set()  # reconcile the disk once at start
        self._run_id: str | None = None
        self._last = float("-inf")
        self._busy = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        """Called every couple of seconds; cheap unless something needs doing."""
        if not self._busy.acquire(blocking=False):
            return
        try:
            self._tick(now)
        finally:
            self._busy.release()

    def _tick(self, now: float | None) -> None:
        try:
            run_id = self.index.redis.info("server").get("run_id")
        except redis.RedisError:
            self.dirty.set()  # Redis away: whatever arrives meanwhile is indexed when it returns
            return
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted: reconciling the store and the index")
            self.dirty.set()
        self._run_id = run_id
        if self.dirty.is_set():
            self.dirty.clear()
            try:
                self.reconcile_disk()
            except Exception:
                self.dirty.set()
                raise
        mono = time.monotonic()
        if mono - self._last >= self.interval:
            self._last = mono
            self.requeue_overdue(now)

    def reconcile_disk(self) -> int:
        added, studies = reindex(self.store, self.index, only_mismatched=True)
        if added:
            metrics.reconciled_instances.inc(added)
            log.warning("reconciliation: indexed %d stored instance(s) of %d stud%s", added, studies,
                        "y" if studies == 1 else "ies")
        revived = self._revive_orphans()
        return added + revived

    def _revive_orphans(self) -> int:
        """Fully indexed studies that nothing will ever triage: make them pending."""
        from workers.worklist import entry_key

        revived = 0
        r = self.index.redis
        for study_dir in self.store.studies.iterdir():
            uid = study_dir.name
            if not study_dir.is_dir() or uid.startswith("."):
                continue
            pipe = r.pipeline(transaction=False)
            pipe.exists(study_key(uid) + ":instances")
            pipe.exists(entry_key(uid))
            pipe.zscore(PENDING, uid)
            pipe.zscore(QUEUED, uid)
            indexed, has_entry, pending, queued = pipe.execute()
            if indexed and not has_entry and pending is None and queued is None:
                r.zadd(PENDING, {uid: time.time()}, nx=True)
                revived += 1
        if revived:
            log.warning("reconciliation: %d indexed stud%s never triaged, queued again", revived,
                        "y" if revived == 1 else "ies")
        return revived

    def requeue_overdue(self, now: float | None = None) -> int:
        # One listener at a time (several may share the Redis): the others skip this round.
        if not self.index.redis.set(keys.RECONCILE_LOCK, "1", nx=True, px=int(max(self.interval, 1) * 1000)):
            return 0
        count = 0
        for uid in self.index.overdue(self.lease, now):
            if self.index.redis.exists(keys.triage_lock(uid)):
                self.index.mark_queued(uid)  # a live triage holds it: look again after a lease
                continue
            # Marked first: a triage that starts at once (before a mark made after the send)
            # would otherwise leave the mark behind and be queued again after a lease.
            self.index.mark_queued(uid)
            self.enqueue(uid)
            metrics.requeued_studies.inc()
            count += 1
            log.warning("study %s queued for triage again: its triage did not finish within %gs", uid,
                        self.lease)
        return count

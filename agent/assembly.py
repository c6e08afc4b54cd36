"""Study assembly: a study is stable after a quiet period with no new instance.

The state lives in Redis (`core.index`), so any number of listeners on any
number of hosts can feed one study; each runs a watcher, and a short Redis lock
makes one of them queue it. A study is released from watching only after its
triage message is on the queue, and only if nothing arrived meanwhile, so a
crash in between means a second (idempotent) triage, never a lost study.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from core import metrics
from core import keys
from core.index import StudyIndex

log = logging.getLogger(__name__)


class StabilityWatcher:
    def __init__(self, index: StudyIndex, enqueue: Callable[[str], None], stable_after: float,
                 interval: float | None = None):
        self.index = index
        self.enqueue = enqueue
        self.stable_after = stable_after
        self.interval = interval if interval is not None else min(0.1, max(stable_after / 4, 0.02))
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stability", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # Redis away: try again next tick
                log.warning("stability check failed: %s", type(exc).__name__)

    def poll(self) -> int:
        """Queue every study that is due; return how many were queued."""
        queued = 0
        for uid, seen in self.index.due(self.stable_after):
            lock = keys.stable_lock(uid)
            if not self.index.redis.set(lock, "1", nx=True, px=5000):
                continue  # another listener is queueing it
            try:
                self.enqueue(uid)
                if self.index.release(uid, seen):
                    metrics.studies_stable.inc()
                    queued += 1
                    log.info("study %s stable, queued for triage", uid)
            finally:
                self.index.redis.delete(lock)
        return queued

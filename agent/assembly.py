"""Study assembly: a study is stable after a quiet period with no new instance.

The state lives in Redis (`core.index`), so any number of listeners on any
number of hosts can feed one study; each runs a watcher, and a short Redis lock
makes one of them queue it. A study is released from watching only after its
triage message is on the queue, and only if nothing arrived meanwhile, so a
crash in between means a second (idempotent) triage, never a lost study.

Preparation ahead (`prepare_ahead`): a study quiet for `stable_after - prepare_ahead` seconds
gets one "prepare" message per last-instance time (a Redis mark, set and compared in one command,
so several watchers send it once). A worker computes its triage then and keeps the result aside
(`workers.prepared`); nothing is saved, sent or shown, and the study stays pending. The triage
queued when the quiet period really ends uses that result only if the instance set, the order,
the rulebook and the configuration it was computed from are unchanged; otherwise it computes afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from core import metrics
from core import keys
from core.index import StudyIndex

log = logging.getLogger(__name__)


class StabilityWatcher:
    """Queues studies once they are quiet. Event-driven: it sleeps until the earliest pending
    study is due, or until `kick()` (an instance was just indexed) says one may be due sooner;
    with nothing pending it looks again only every `idle` seconds (studies fed by another
    listener process or host, which its own watcher normally queues)."""

    def __init__(self, index: StudyIndex, enqueue: Callable[[str], None], stable_after: float,
                 idle: float = 5.0, prepare: Callable[[str], None] | None = None, prepare_ahead: float = 0.0):
        self.index = index
        self.enqueue = enqueue
        self.stable_after = stable_after
        self.idle = idle
        self.prepare = prepare if prepare_ahead > 0 else None
        # A study is prepared after this much quiet (never before half the quiet period: a short
        # pause within a study should not cost a preparation).
        self.prepare_after = max(stable_after - prepare_ahead, stable_after / 2) if self.prepare else stable_after
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next = float("inf")  # monotonic time of the next planned look
        self.thread = threading.Thread(target=self._run, name="stability", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.thread.join(5)

    def kick(self) -> None:
        """An instance was indexed: its study is due `stable_after` from now (to be prepared
        `prepare_after` from now); wake the watcher only if it planned to look later than that
        (cheap: no wake-up per instance)."""
        if self._next > time.monotonic() + self.prepare_after:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.poll()
                wait = self.next_wait()
            except Exception as exc:  # Redis away: try again in a moment
                log.warning("stability check failed: %s", type(exc).__name__)
                wait = 1.0
            self._next = time.monotonic() + wait
            self._wake.wait(wait)

    def next_wait(self, now: float | None = None) -> float:
        """Seconds until the earliest pending study is due, or the earliest one not yet quiet
        enough to prepare is (at least 20 ms), at most `idle`."""
        first = self.index.redis.zrange(keys.PENDING, 0, 0, withscores=True)
        if not first:
            return self.idle
        now = now if now is not None else time.time()
        due = first[0][1] + self.stable_after
        if self.prepare is not None:
            later = self.index.redis.zrangebyscore(keys.PENDING, f"({now - self.prepare_after!r}", "+inf",
                                                   start=0, num=1, withscores=True)
            if later:
                due = min(due, later[0][1] + self.prepare_after)
        return min(self.idle, max(due - now, 0.02))

    def poll(self) -> int:
        """Queue every study that is due; return how many were queued."""
        queued = 0
        for uid, seen in self.index.due(self.stable_after):
            lock = keys.stable_lock(uid)
            if not self.index.redis.set(lock, "1", nx=True, px=5000):
                continue  # another listener is queueing it
            try:
                # Read again under the lock: another watcher may have queued it since `due` was read
                # (its lock already gone), or an instance arrived; either way it is not due here.
                score = self.index.redis.zscore(keys.PENDING, uid)
                if score is None or score > seen:
                    continue
                # The "queued" time is taken before the send: a triage that starts at once
                # must find its study queued earlier than its own start (`index.triaged`).
                queued_at = time.time()
                self.enqueue(uid)
                if self.index.release(uid, seen, now=queued_at):
                    metrics.studies_stable.inc()
                    queued += 1
                    log.info("study %s stable, queued for triage", uid)
            finally:
                self.index.redis.delete(lock)
        if self.prepare is not None:
            self.poll_prepare()
        return queued

    def poll_prepare(self, now: float | None = None) -> int:
        """Send one "prepare" message for each study quiet for `prepare_after` (but not yet
        `stable_after`) seconds, once per last-instance time; return how many were sent."""
        now = now if now is not None else time.time()
        rows = self.index.redis.zrangebyscore(keys.PENDING, f"({now - self.stable_after!r}",
                                              repr(now - self.prepare_after), start=0, num=100, withscores=True)
        if not rows:
            return 0
        ttl = int(self.stable_after * 2 + 60)
        pipe = self.index.redis.pipeline(transaction=False)
        for uid, seen in rows:
            # SET ... GET: the previous mark, in the same command (two watchers send it once)
            pipe.set(keys.prepare_mark(uid.decode()), repr(seen), ex=ttl, get=True)
        sent = 0
        for (uid, seen), previous in zip(rows, pipe.execute()):
            if previous is not None and previous.decode() == repr(seen):
                continue  # already prepared (or being prepared) for this last instance
            try:
                self.prepare(uid.decode())
                sent += 1
            except Exception as exc:  # only a speed-up: the triage at stability computes it anyway
                log.warning("study %s: preparation not queued: %s", uid.decode(), type(exc).__name__)
        return sent

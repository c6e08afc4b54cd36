"""A Redis lock with a short time-to-live that its holder keeps renewing.

A worker that is killed stops renewing, so its lock is gone after `ttl`
seconds (not after the longest possible triage); a worker that is alive keeps
it for as long as it works, however long that is.
"""

from __future__ import annotations

import logging
import threading

import redis

log = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Someone else holds the lock."""


class RenewingLock:
    def __init__(self, client: redis.Redis, name: str, ttl: float = 30.0, wait: float = 5.0):
        self.lock = client.lock(name, timeout=ttl, blocking_timeout=wait, thread_local=False)
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def __enter__(self) -> "RenewingLock":
        if not self.lock.acquire():
            raise LockBusy(self.lock.name)
        self._thread = threading.Thread(target=self._renew, name="lock-renew", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.lock.reacquire():
                    self.lost = True
                    return
            except redis.exceptions.LockError:
                self.lost = True
                return
            except redis.RedisError as exc:  # Redis away for a moment: try again next period
                log.warning("lock renewal failed: %s", type(exc).__name__)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        try:
            self.lock.release()
        except (redis.exceptions.LockError, redis.RedisError):
            pass  # expired or Redis away: it frees itself after ttl

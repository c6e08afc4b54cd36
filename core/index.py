"""The study index in Redis: instance header summaries and study activity (keys: core.keys)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from core import keys
from core.keys import PENDING
from core.study import Study

# Remove a pending study only if no instance arrived since it was seen stable.
_RELEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def study_key(uid: str) -> str:
    return keys.study(uid)


class StudyIndex:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._release = client.register_script(_RELEASE)

    def record_instance(self, summary: dict[str, Any], received: float | None = None) -> None:
        """Index one stored instance and mark its study as receiving."""
        now = received if received is not None else time.time()
        uid = summary["StudyInstanceUID"]
        key = study_key(uid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key + ":instances", summary["SOPInstanceUID"], json.dumps(summary))
        pipe.hsetnx(key, "first_received", repr(now))
        pipe.hset(key, "last_received", repr(now))
        pipe.hincrby(key, "bytes", int(summary.get("size") or 0))
        pipe.zadd(PENDING, {uid: now})
        pipe.execute()

    def load(self, uid: str) -> Study | None:
        key = study_key(uid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hvals(key + ":instances")
        pipe.hgetall(key)
        raw, meta = pipe.execute()
        if not raw:
            return None
        study = Study.from_summaries(json.loads(r) for r in raw)
        study.last_received = float(meta.get(b"last_received", 0)) or None
        study.first_received = float(meta.get(b"first_received", 0)) or None
        return study

    def due(self, quiet: float, now: float | None = None, limit: int = 100) -> list[tuple[str, float]]:
        """Studies with no new instance for `quiet` seconds: (uid, last received)."""
        now = now if now is not None else time.time()
        rows = self.redis.zrangebyscore(PENDING, "-inf", now - quiet, start=0, num=limit, withscores=True)
        return [(u.decode(), s) for u, s in rows]

    def release(self, uid: str, seen: float) -> bool:
        """Stop watching a study queued for triage, unless it received more since `seen`."""
        return bool(self._release(keys=[PENDING], args=[uid, repr(seen)]))

    def forget(self, uid: str) -> None:
        """Drop a study from the index (its files are gone)."""
        key = study_key(uid)
        self.redis.delete(key, key + ":instances")
        self.redis.zrem(PENDING, uid)

    def is_pending(self, uid: str) -> bool:
        return self.redis.zscore(PENDING, uid) is not None

    def last_received(self, uid: str) -> float | None:
        raw = self.redis.hget(study_key(uid), "last_received")
        return float(raw) if raw else None

    def pending_count(self) -> int:
        return int(self.redis.zcard(PENDING))

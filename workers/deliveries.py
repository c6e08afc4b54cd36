"""Sink bookkeeping in Redis: which revision reached which destination, and dead letters."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from core import keys

DELIVERED = keys.DELIVERED  # hash "kind|destination|study" -> revision
DEAD = keys.DEAD_LETTERS  # hash "kind|destination|study" -> JSON
PRIORITY = keys.DELIVERED_PRIORITY  # hash "kind|destination|study" -> our priority last delivered


def _field(kind: str, destination: str, uid: str) -> str:
    return f"{kind}|{destination}|{uid}"


# Record a delivered revision only if it is newer than the one recorded.
_MARK = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
end
redis.call('HDEL', KEYS[2], ARGV[1])
return cur
"""


class Deliveries:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._mark = client.register_script(_MARK)

    def delivered_revision(self, kind: str, destination: str, uid: str) -> int:
        raw = self.redis.hget(DELIVERED, _field(kind, destination, uid))
        return int(raw) if raw else 0

    def mark_delivered(self, kind: str, destination: str, uid: str, revision: int,
                       priority: str | None = None) -> None:
        """Never records an older revision over a newer one."""
        self._mark(keys=[DELIVERED, DEAD, PRIORITY], args=[_field(kind, destination, uid), int(revision),
                                                          priority or ""])

    def delivered_priority(self, kind: str, destination: str, uid: str) -> str | None:
        raw = self.redis.hget(PRIORITY, _field(kind, destination, uid))
        return raw.decode() if raw else None

    def dead_letter(self, kind: str, destination: str, uid: str, error: str, attempts: int) -> None:
        record = {"kind": kind, "destination": destination, "study_instance_uid": uid,
                  "error": error[:500], "attempts": attempts, "failed_at": time.time()}
        self.redis.hset(DEAD, _field(kind, destination, uid), json.dumps(record))

    def dead_letters(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.redis.hvals(DEAD)), key=lambda r: r["failed_at"])

    def take_dead_letters(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Remove and return the dead letters (of one kind), for replay."""
        taken = []
        for key, raw in self.redis.hgetall(DEAD).items():
            record = json.loads(raw)
            if kind is None or record["kind"] == kind:
                if self.redis.hdel(DEAD, key):
                    taken.append(record)
        return taken

    def delivered_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.redis.hkeys(DELIVERED):
            kind, destination, _ = key.decode().split("|", 2)
            counts[f"{kind}|{destination}"] = counts.get(f"{kind}|{destination}", 0) + 1
        return counts

"""The local worklist in Redis: one entry per study, ordered by priority then arrival.

Saving an entry merges it with the one already there so that the suggested
priority never goes down and no flag is ever dropped (domain guide §1.3, §7).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis

from core import keys
from core.audit import AuditTrail
from core.entry import WorklistEntry
from rules.model import Flag, Priority, merge_flags

ORDER = keys.WORKLIST
PRIORITY_SPAN = 1e11  # > any epoch-seconds arrival time


def entry_key(uid: str) -> str:
    return keys.entry(uid)


def revision_key(uid: str) -> str:
    """The last revision of a removed entry: a study sent again continues from it."""
    return keys.last_revision(uid)


def score(entry: dict[str, Any]) -> float:
    """Lower scores first: STAT, then URGENT, then ROUTINE; earlier arrival first within each."""
    rank = int(Priority.STAT) - int(Priority.parse(entry["priority"]))
    return rank * PRIORITY_SPAN + float(entry.get("first_received") or entry.get("triaged_at") or 0)


#: What a re-triage must change for the destinations to hear about it again
#: (with the analysers' results, less their timings).
FINGERPRINT_KEYS = ("priority", "flags", "recommendations", "priors", "priors_status", "postop_interval_hours",
                    "course", "instance_count", "series_count", "rulebook_version")


#: Kept up to date without a new revision: what the order said (read by the report and the HL7 sink).
ORDER_KEYS = ("order_priority", "order_source")


def fingerprint(entry: dict[str, Any]) -> str:
    content = {k: entry.get(k) for k in FINGERPRINT_KEYS}
    content["analysers"] = [{k: v for k, v in a.items() if k != "timings"} for a in entry.get("analysers") or []]
    body = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def merge_previous(entry: dict[str, Any], previous: dict[str, Any] | None,
                   last_revision: int = 0) -> dict[str, Any]:
    """Never lower a suggestion already made; keep every earlier flag and its evidence.

    `last_revision` is the revision of an entry removed by retention, so revisions keep
    growing and every destination hears about a study sent again."""
    if not previous:
        entry["revision"] = int(last_revision) + 1
        return entry
    entry["revision"] = int(previous.get("revision", 0)) + 1
    new = Priority.parse(entry["priority"])
    old = Priority.parse(previous["priority"])
    if old > new:
        entry["priority"] = old.name
        entry.setdefault("explain", []).append(
            f"Priority kept at {old.name}: an earlier triage suggested it and only a human may lower it."
        )
    flags = [Flag.from_dict(f) for f in previous.get("flags", [])] + [Flag.from_dict(f) for f in entry["flags"]]
    entry["flags"] = [f.to_dict() for f in merge_flags(flags)]
    entry["first_received"] = previous.get("first_received") or entry.get("first_received")
    for key in ("closed_at", "closed_by"):  # a signed report stays signed
        if previous.get(key) is not None:
            entry[key] = previous[key]
    return entry


class Worklist:
    def __init__(self, client: redis.Redis):
        self.redis = client

    def get(self, uid: str) -> dict[str, Any] | None:
        raw = self.redis.get(entry_key(uid))
        return json.loads(raw) if raw else None

    def save(self, entry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Merge with the stored entry and store the result atomically.

        Returns (entry, changed); an unchanged re-triage keeps the stored entry and its
        revision, so the destinations are not told the same thing twice.
        """
        key = entry_key(entry["study_instance_uid"])
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    previous = json.loads(raw) if raw else None
                    last = 0 if previous else int(pipe.get(revision_key(entry["study_instance_uid"])) or 0)
                    merged = merge_previous(dict(entry), previous, last)
                    merged["fingerprint"] = fingerprint(merged)
                    WorklistEntry.from_dict(merged)  # raises EntryError: never store an entry off the schema
                    if previous and previous.get("fingerprint") == merged["fingerprint"]:
                        known = {k: merged.get(k) for k in ORDER_KEYS if merged.get(k) is not None}
                        if all(previous.get(k) == v for k, v in known.items()):
                            pipe.unwatch()
                            return previous, False
                        # The RIS order became known (a late order) without changing what the
                        # destinations were told: recorded, no new revision.
                        previous = dict(previous, **known)
                        pipe.multi()
                        pipe.set(key, json.dumps(previous))
                        pipe.execute()
                        return previous, False
                    pipe.multi()
                    pipe.set(key, json.dumps(merged))
                    if merged.get("closed_at") is None:
                        pipe.zadd(ORDER, {merged["study_instance_uid"]: score(merged)})
                    pipe.execute()
                    return merged, True
                except redis.WatchError:
                    continue

    def entries(self, limit: int = 100, wait_cap_minutes: float | None = None,
                now: float | None = None) -> list[dict[str, Any]]:
        """The worklist in reading order: priority, then arrival.

        With `wait_cap_minutes`, a ROUTINE study that has waited longer is read with the
        URGENT ones (marked ``lifted_by_wait``): flagged studies gain, but the longest
        routine waits must not grow without bound. Its suggested priority is unchanged.
        """
        uids = self.redis.zrange(ORDER, 0, -1 if wait_cap_minutes else limit - 1)
        if not uids:
            return []
        raws = self.redis.mget([entry_key(u.decode()) for u in uids])
        entries = [json.loads(r) for r in raws if r]
        if wait_cap_minutes:
            for e in entries:
                e["lifted_by_wait"] = (e["priority"] == "ROUTINE"
                                       and waiting_minutes(e, now) > wait_cap_minutes)
            entries.sort(key=lambda e: score(e) - (PRIORITY_SPAN if e["lifted_by_wait"] else 0))
        return entries[:limit]

    def remove(self, uid: str) -> None:
        """Forget a study's entry, keeping its last revision (see `revision_key`)."""
        previous = self.get(uid)
        if previous:
            self.redis.set(revision_key(uid), int(previous.get("revision", 0)))
        self.redis.delete(entry_key(uid))
        self.redis.zrem(ORDER, uid)
        self.redis.zrem(keys.CLOSED, uid)

    def close(self, uid: str, when: float, by: str, *, audit: AuditTrail) -> bool:
        """The report is signed: the entry records when and how, and leaves the active worklist;
        `audit` (the process's trail) records it.

        Returns False when there is no entry or it was already closed (a repeated ORU)."""
        key = entry_key(uid)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        pipe.unwatch()
                        return False
                    entry = json.loads(raw)
                    if entry.get("closed_at") is not None:
                        pipe.unwatch()
                        return False
                    entry["closed_at"], entry["closed_by"] = float(when), by
                    pipe.multi()
                    pipe.set(key, json.dumps(entry))
                    pipe.zrem(ORDER, uid)
                    pipe.zadd(keys.CLOSED, {uid: float(when)})
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        from core import metrics

        audit.record("closed", study=uid, reason=by, priority=entry["priority"])
        metrics.entries_closed.labels(by.split(" ")[0]).inc()
        if entry.get("last_received"):
            metrics.time_to_report.labels(entry["priority"], entry.get("order_priority") or "none").observe(
                max(0.0, float(when) - float(entry["last_received"])))
        return True

    def closed(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Closed entries (report signed), most recently closed first; `since`: closed at or after."""
        uids = self.redis.zrevrangebyscore(keys.CLOSED, "+inf", since if since is not None else "-inf",
                                           start=0 if limit else None, num=limit)
        if not uids:
            return []
        raws = self.redis.mget([entry_key(u.decode()) for u in uids])
        return [json.loads(r) for r in raws if r]


def waiting_minutes(entry: dict[str, Any], now: float | None = None) -> float:
    start = entry.get("last_received") or entry.get("triaged_at") or 0
    return max(0.0, ((now or time.time()) - float(start)) / 60)

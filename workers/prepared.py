"""A triage prepared before the quiet period ends, kept aside until the study is stable.

A worker computes the triage of a study that has been quiet for `stable_after - prepare_ahead`
seconds (`agent.assembly` sends the "prepare" message) and keeps the entry here, with digests of
what it was computed from: the study's instance set (`StudyIndex.load_with_digest`), the RIS
order it read, the rulebook version and the worker's configuration. Nothing is saved to the
worklist, sent or shown: the study is still pending, and only the triage queued when the quiet
period really ends may use the result, once (`take` deletes it), and only if all four inputs are
unchanged. Any difference discards it and that triage computes afresh, exactly as without
preparation.

What a preparation reads from outside (priors from the PACS, a Modality Worklist order) is read
a few seconds earlier than the triage would have read it; the record lives `ttl` seconds (the
quiet period plus half a minute by default), so a result older than that is never used. A later
re-triage does not use one either: a priors refresh does not look, a late order changes the
order's digest, and reconciliation re-queues a study only after `triage_lease`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from core import keys

# Keep the record only while the study is pending or queued for a triage that has not finished
# (which may be waiting for this very preparation); a preparation that finishes after its study's
# triage is done leaves nothing behind.
_KEEP = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Inputs:
    """What a triage of one study is computed from, as digests."""

    study: str  # the instance set (StudyIndex.load_with_digest)
    order: str  # the RIS order read (order_digest)
    rulebook: str  # the rulebook version (a content hash)
    settings: str  # the worker's configuration (settings_digest)


def order_digest(order) -> str:
    """A digest of a `core.orders.Order` as stored (or "none")."""
    if order is None:
        return "none"
    return hashlib.sha256(json.dumps(order.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def settings_digest(config) -> str:
    """A digest of this worker's configuration (secrets left out): a result prepared by a worker
    configured otherwise (analysers, budgets, destinations) is not used."""
    values = {f.name: getattr(config, f.name) for f in fields(config) if not f.metadata.get("secret")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


class PreparedTriages:
    def __init__(self, client, ttl: float):
        self.redis = client
        self.ttl = ttl
        self._keep = client.register_script(_KEEP)

    def keep(self, uid: str, inputs: Inputs, entry: dict[str, Any]) -> bool:
        """Keep a prepared entry while the study is pending or its triage is queued and not done;
        False (nothing kept) once that triage is done."""
        record = json.dumps({"inputs": asdict(inputs), "entry": entry, "at": time.time()})
        return bool(self._keep(keys=[keys.PENDING, keys.prepared(uid), keys.QUEUED],
                               args=[uid, record, int(self.ttl * 1000)]))

    def take(self, uid: str, inputs: Inputs) -> tuple[dict[str, Any] | None, str]:
        """The prepared entry if it was computed from exactly `inputs` (removed either way), and
        why: "used", "none" (nothing prepared, or expired) or "changed" (discarded)."""
        raw = self.redis.getdel(keys.prepared(uid))
        if raw is None:
            return None, "none"
        try:
            record = json.loads(raw)
            same = Inputs(**record["inputs"]) == inputs
        except (ValueError, TypeError, KeyError):
            return None, "changed"
        return (record["entry"], "used") if same else (None, "changed")

    def preparing(self, uid: str) -> bool:
        """A worker is preparing this study's triage now."""
        return bool(self.redis.exists(keys.prepare_lock(uid)))

"""Closing the loop through UPS: a workitem reaching COMPLETED means the report is signed.

`poll_ups` runs from `serve`'s housekeeping every `ups_poll_interval` seconds: for each open
worklist entry already delivered to a UPS provider, it reads the workitem's Procedure Step
State by N-GET (one association per provider) and closes the entry on COMPLETED. CANCELED
does not close it (the study still needs a report). One process at a time (Redis lock).
"""

from __future__ import annotations

import logging
import time

from core import keys
from core.audit import AuditTrail
from workers.deliveries import Deliveries
from workers.sinks import SinkError
from workers.sinks.ups import workitem_states
from workers.worklist import Worklist

log = logging.getLogger(__name__)
#: Workitems asked per provider per poll.
BATCH = 500


def poll_ups(redis, config, now: float | None = None, audit: AuditTrail | None = None) -> int:
    """Close the entries whose UPS workitem is COMPLETED; return how many were closed. `audit`: the
    process's trail (default: the one `config` asks for)."""
    audit = audit if audit is not None else AuditTrail.from_config(config)
    interval = max(float(config.ups_poll_interval or 0), 1.0)
    if not redis.set(keys.UPS_POLL_LOCK, "1", nx=True, px=int(interval * 1000)):
        return 0
    open_uids = [u.decode() for u in redis.zrange(keys.WORKLIST, 0, -1)]
    deliveries = Deliveries(redis)
    worklist = Worklist(redis)
    closed = 0
    for node in config.ups:
        delivered = [u for u in open_uids if deliveries.delivered_revision("ups", str(node), u) > 0][:BATCH]
        if not delivered:
            continue
        try:
            states = workitem_states(node, delivered, config)
        except SinkError as exc:
            log.warning("UPS poll of %s failed: %s", node, exc)
            continue
        for uid, state in states.items():
            if state == "COMPLETED" and worklist.close(uid, now or time.time(), "UPS workitem COMPLETED", audit=audit):
                closed += 1
                log.info("study %s: UPS workitem COMPLETED, entry closed", uid)
        open_uids = [u for u in open_uids if u not in states or states[u] != "COMPLETED"]
    return closed

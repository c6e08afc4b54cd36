"""Closing the loop through UPS: a workitem the reading station moved to COMPLETED closes the
entry (N-GET poll), against the pynetdicom UPS SCP of the tests (issue 12)."""

from __future__ import annotations

import time

import pytest

from agent.closing import poll_ups
from core import keys
from core.config import Config, DicomNode
from sink_peers import sample_entry
from ups_scp import UpsScp
from workers.deliveries import Deliveries
from workers.sinks import ups as ups_sink
from workers.worklist import Worklist


@pytest.fixture
def scp():
    server = UpsScp().start()
    yield server
    server.stop()


def on_worklist(redis_client, cfg, uid, **changes):
    entry = sample_entry(study_instance_uid=uid, triaged_at=time.time(), last_received=time.time() - 1200, **changes)
    entry.pop("revision")
    saved, _ = Worklist(redis_client).save(entry)
    ups_sink.push(saved, cfg.ups[0], cfg)
    Deliveries(redis_client).mark_delivered("ups", str(cfg.ups[0]), uid, saved["revision"], saved["priority"])
    return saved


def test_completed_workitem_closes_the_entry(scp, redis_client):
    cfg = Config(ups=[DicomNode.parse(scp.node)], ups_timeout=5, ups_poll_interval=1)
    done, busy, unsent = "1.2.826.0.1.3680043.8.498.501", "1.2.826.0.1.3680043.8.498.502", "1.2.826.0.1.3680043.8.498.503"
    on_worklist(redis_client, cfg, done, priority="STAT", order_priority="ROUTINE")
    on_worklist(redis_client, cfg, busy)
    entry = sample_entry(study_instance_uid=unsent, triaged_at=time.time())
    entry.pop("revision")
    Worklist(redis_client).save(entry)  # on the worklist, never delivered to UPS: not asked
    scp.set_state(ups_sink.workitem_uid(done), "COMPLETED")
    scp.set_state(ups_sink.workitem_uid(busy), "IN PROGRESS", "1.2.826.0.1.3680043.8.498.9")
    gets = len(scp.operations("N-GET"))
    assert poll_ups(redis_client, cfg) == 1
    assert len(scp.operations("N-GET")) - gets == 2  # the two delivered workitems, one association
    worklist = Worklist(redis_client)
    assert {e["study_instance_uid"] for e in worklist.entries()} == {busy, unsent}
    closed = worklist.closed()
    assert [e["study_instance_uid"] for e in closed] == [done]
    assert closed[0]["closed_by"] == "UPS workitem COMPLETED" and closed[0]["closed_at"] <= time.time()
    # One process at a time: the lock holds until the interval has passed.
    assert poll_ups(redis_client, cfg) == 0
    redis_client.delete(keys.UPS_POLL_LOCK)
    assert poll_ups(redis_client, cfg) == 0  # nothing else completed


def test_provider_away_changes_nothing(redis_client):
    from peers import free_port

    cfg = Config(ups=[DicomNode.parse(f"NOBODY@127.0.0.1:{free_port()}")], ups_timeout=2, ups_poll_interval=1)
    uid = "1.2.826.0.1.3680043.8.498.601"
    entry = sample_entry(study_instance_uid=uid, triaged_at=time.time())
    entry.pop("revision")
    Worklist(redis_client).save(entry)
    Deliveries(redis_client).mark_delivered("ups", str(cfg.ups[0]), uid, 1, "ROUTINE")
    assert poll_ups(redis_client, cfg) == 0
    assert [e["study_instance_uid"] for e in Worklist(redis_client).entries()] == [uid]

"""HL7 v2 order intake and report closing: the agent's MLLP listener against python-hl7's client,
on a real Redis (issue 12)."""

from __future__ import annotations

import logging
import time

import pytest
from hl7.exceptions import ParseException

from core import keys
from core.config import Config
from core.index import StudyIndex
from core.orders import OrderStore
from agent.orders import OrderListener
from peers import free_port
from ris_peers import ack_code, error_code, order, result, send
from sink_peers import sample_entry
from workers.worklist import Worklist

UID = "1.2.826.0.1.3680043.8.498.1001"


@pytest.fixture
def listener(redis_client):
    cfg = Config(hl7_listen=free_port(), hl7_listen_bind="127.0.0.1", order_retention_days=2)
    queued: list[str] = []
    server = OrderListener(cfg, redis_client, queued.append, StudyIndex(redis_client)).start()
    server.queued = queued
    yield server
    server.stop()


def triaged(redis_client, accession="ACC1", patient_id="PT-0001", triaged_at=None, **changes):
    """A study already on the worklist under `accession`."""
    entry = sample_entry(accession_number=accession, patient_id=patient_id, issuer_of_patient_id="HOSP",
                         triaged_at=triaged_at or time.time(), last_received=time.time() - 600, **changes)
    entry.pop("revision", None)
    saved, _ = Worklist(redis_client).save(entry)
    OrderStore(redis_client).link_study(accession, UID)
    return saved


def test_new_order_stored_by_accession_and_patient(listener, redis_client):
    ack = send(listener.port, order("NW", "ACC1", priority="S", reason="fever after L4-L5 fusion",
                                    clinical="wound redness | drainage", notes=("call ward 5",),
                                    control_reason="post-op check"))
    assert ack_code(ack) == "AA"
    stored = OrderStore(redis_client).get("ACC1")
    assert stored.priority == "STAT" and stored.priority_source == "HL7 order TQ1-9" and stored.priority_code == "S"
    assert stored.status == "active" and stored.control == "NW"
    texts = {t["field"]: t["value"] for t in stored.texts}
    assert texts == {"OBR-31": "fever after L4-L5 fusion", "OBR-13": "wound redness | drainage",
                     "ORC-16": "post-op check", "NTE": "call ward 5"}
    assert [o.accession_number for o in OrderStore(redis_client).for_patient("PT-0001", "HOSP")] == ["ACC1"]
    assert OrderStore(redis_client).for_patient("PT-0001", "OTHER") == []
    names = [k.decode() for k in redis_client.scan_iter("pt:*")]
    assert names and not any("PT-0001" in n or "ACC1" in n for n in names)  # key names carry no identifier
    ttl = redis_client.ttl(keys.order(__import__("core.orders").orders.digest("ACC1")))
    assert 0 < ttl <= 2 * 86400  # retention


@pytest.mark.parametrize("where,code,expected", [("OBR27", "A", "URGENT"), ("OBR5", "R", "ROUTINE"),
                                                  ("TQ1", "STAT", "STAT")])
def test_priority_fields(listener, redis_client, where, code, expected):
    assert ack_code(send(listener.port, order(priority=code, priority_in=where))) == "AA"
    assert OrderStore(redis_client).get("ACC1").priority == expected


def test_omi_change_and_cancel(listener, redis_client):
    assert ack_code(send(listener.port, order("NW", "ACC9", kind="OMI^O23^OMI_O23", reason="CSF leak?"))) == "AA"
    assert OrderStore(redis_client).get("ACC9").texts[0]["value"] == "CSF leak?"
    assert ack_code(send(listener.port, order("XO", "ACC9", priority="S", kind="OMI^O23^OMI_O23"))) == "AA"
    changed = OrderStore(redis_client).get("ACC9")
    assert changed.priority == "STAT" and changed.control == "XO"
    assert changed.texts and changed.texts[0]["value"] == "CSF leak?"  # a priority-only change keeps the text
    assert ack_code(send(listener.port, order("CA", "ACC9"))) == "AA"
    assert OrderStore(redis_client).get("ACC9").status == "cancelled"


def test_rejections(listener, redis_client):
    adt = "MSH|^~\\&|RIS|H|PT|H|20261126||ADT^A01|X1|P|2.5.1\rPID|1||PT-0001"
    ack = send(listener.port, adt)
    assert ack_code(ack) == "AR" and error_code(ack) == "200" and str(ack["MSA.2"]) == "X1"
    ack = send(listener.port, order("ZZ"))
    assert ack_code(ack) == "AR" and error_code(ack) == "103"
    no_accession = "MSH|^~\\&|RIS|H|PT|H|20261126||ORM^O01|X2|P|2.5.1\rPID|1||PT-0001\rORC|NW\rOBR|1"
    ack = send(listener.port, no_accession)
    assert ack_code(ack) == "AE" and error_code(ack) == "101"
    assert ack_code(send(listener.port, "this is not HL7")) == "AR"
    assert list(redis_client.scan_iter("pt:order:*")) == []


def test_other_patient_refused_without_patient_data_in_logs(listener, redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    send(listener.port, order("NW", "ACC1", patient_id="PT-0001", priority="R"))
    ack = send(listener.port, order("XO", "ACC1", patient_id="PT-9999", priority="S"))
    assert ack_code(ack) == "AR" and error_code(ack) == "204"
    assert OrderStore(redis_client).get("ACC1").priority == "ROUTINE"  # unchanged
    ack = send(listener.port, result("ACC1", patient_id="PT-9999"))
    assert ack_code(ack) == "AR"
    logged = caplog.text
    assert "refused" in logged and "PT-9999" not in logged and "PT-0001" not in logged and "TEST" not in logged


def test_order_after_triage_queues_the_study_again(listener, redis_client):
    triaged(redis_client)
    assert ack_code(send(listener.port, order("NW", "ACC1", priority="S"))) == "AA"
    assert listener.queued == [UID]
    assert redis_client.zscore(keys.QUEUED, UID) is not None  # the reconciler's lease covers it
    # A cancel never re-triages; nor does an order for a study triaged outside the window.
    send(listener.port, order("CA", "ACC1"))
    assert listener.queued == [UID]


def test_order_outside_the_window_does_not_retriage(listener, redis_client):
    triaged(redis_client, triaged_at=time.time() - 25 * 3600)
    assert ack_code(send(listener.port, order("NW", "ACC1", priority="S"))) == "AA"
    assert listener.queued == []


def test_order_for_another_patient_than_the_study_is_refused(listener, redis_client):
    triaged(redis_client, patient_id="PT-0001")
    ack = send(listener.port, order("NW", "ACC1", patient_id="PT-7777", priority="S"))
    assert ack_code(ack) == "AR" and listener.queued == []
    assert OrderStore(redis_client).get("ACC1") is None


def test_signed_report_closes_the_entry(listener, redis_client):
    triaged(redis_client, priority="URGENT", order_priority="ROUTINE")
    worklist = Worklist(redis_client)
    assert ack_code(send(listener.port, result("ACC1", status="P"))) == "AA"  # preliminary: still open
    assert [e["study_instance_uid"] for e in worklist.entries()] == [UID]
    before = time.time()
    assert ack_code(send(listener.port, result("ACC1", status="F"))) == "AA"
    assert worklist.entries() == []
    closed = worklist.closed()
    assert [e["study_instance_uid"] for e in closed] == [UID]
    assert before <= closed[0]["closed_at"] <= time.time()
    assert closed[0]["closed_by"] == "HL7 ORU^R01 result status F"
    first = closed[0]["closed_at"]
    assert ack_code(send(listener.port, result("ACC1", status="C"))) == "AA"  # a correction: still closed once
    assert worklist.closed()[0]["closed_at"] == first
    # A later re-triage of the study keeps it closed, off the active worklist.
    entry = sample_entry(triaged_at=time.time(), priority="STAT")
    entry.pop("revision")
    saved, changed = worklist.save(entry)
    assert changed and saved["closed_at"] == first and worklist.entries() == []


def test_report_before_triage_is_kept_on_the_order(listener, redis_client):
    send(listener.port, order("NW", "ACC5", priority="R"))
    assert ack_code(send(listener.port, result("ACC5", status="F"))) == "AA"
    stored = OrderStore(redis_client).get("ACC5")
    assert stored.signed_at is not None and stored.signed_status == "F"


def test_several_messages_on_one_connection(listener, redis_client):
    from hl7.client import MLLPClient

    with MLLPClient("127.0.0.1", listener.port) as client:
        for n in range(5):
            raw = client.send_message(order("NW", f"ACC{n}", priority="A"))
            assert b"MSA|AA|" in raw
    assert all(OrderStore(redis_client).get(f"ACC{n}").priority == "URGENT" for n in range(5))


def test_addresses_outside_allowed_networks_are_refused(redis_client):
    cfg = Config(hl7_listen=free_port(), hl7_listen_bind="127.0.0.1", allowed_networks=["10.0.0.0/8"])
    server = OrderListener(cfg, redis_client, lambda uid: None).start()
    try:
        # closed without an answer: refused at connect, reset, or an empty reply the client cannot parse
        with pytest.raises((ConnectionError, OSError, ValueError, ParseException)):
            send(server.port, order("NW", "ACC1"))
    finally:
        server.stop()
    assert OrderStore(redis_client).get("ACC1") is None


def test_a_late_order_that_changes_nothing_else_is_recorded_without_a_new_revision(redis_client):
    worklist = Worklist(redis_client)
    entry = sample_entry(triaged_at=time.time(), order_priority=None)
    entry.pop("revision")
    first, _ = worklist.save(dict(entry))
    again, changed = worklist.save(dict(entry, order_priority="ROUTINE", order_source="HL7"))
    assert not changed and again["revision"] == first["revision"]
    stored = worklist.get(UID)
    assert stored["order_priority"] == "ROUTINE" and stored["order_source"] == "HL7"

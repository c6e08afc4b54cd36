"""The RIS order read with the images (issue 12): its text with the source named in the evidence,
its priority as the floor, another patient's order refused; the HL7 sink never lowers the order."""

from __future__ import annotations

import logging

import hl7
import pytest

from core.config import Config
from core.orders import Order
from rules.engine import Rulebook
from sink_peers import MllpServer
from workers.pipeline import triage
from workers.sinks import hl7 as hl7_sink

SADDLE = "new saddle anaesthesia and urinary retention 1 day after L4-L5 decompression"


@pytest.fixture(scope="module")
def rulebook():
    return Rulebook.load()


def study(texts=(), priorities=None, patient_id="PT-0001", issuer="HOSP", accession="ACC1"):
    from core.study import Study

    summary = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77.1",
               "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77.1.1", "Modality": "MR", "AccessionNumber": accession,
               "PatientID": patient_id, "IssuerOfPatientID": issuer, "PatientName": "TEST^PATIENT",
               "StudyDate": "20261121", "StudyTime": "101500", "StudyDescription": "MR LUMBAR SPINE",
               "TextFields": [{"keyword": k, "tag": "(0040,1002)", "value": v} for k, v in texts],
               "OrderPriorities": priorities or {}}
    return Study.from_summaries([summary], last_received=1795250010.0)


def hl7_order(priority=None, reason="", patient_id="PT-0001", status="active", code=None):
    return Order("ACC1", patient_id, "HOSP", priority=priority, priority_code=code or priority,
                 priority_source="HL7 order TQ1-9" if priority else None, status=status,
                 texts=[{"source": "HL7 order", "field": "OBR-31", "value": reason}] if reason else [])


def test_header_without_text_is_read_with_the_order_text(rulebook):
    bare = triage(study(), rulebook, analyse=False)
    assert bare["priority"] == "ROUTINE" and not bare["flags"]
    entry = triage(study(), rulebook, analyse=False, order_lookup=lambda s: hl7_order(reason=SADDLE))
    assert entry["priority"] == "STAT"
    sources = {e["source"] for f in entry["flags"] for e in f["evidence"]}
    assert "HL7 order OBR-31" in sources
    assert entry["order_source"] == "HL7"
    assert "Clinical text read from HL7 order: OBR-31." in entry["explain"]


def test_order_priority_is_the_floor(rulebook):
    entry = triage(study(), rulebook, analyse=False, order_lookup=lambda s: hl7_order(priority="STAT", code="S"))
    assert entry["priority"] == "STAT" and entry["order_priority"] == "STAT"
    assert any("Order priority STAT from HL7 order TQ1-9" in line for line in entry["explain"])


def test_another_patients_order_is_not_read(rulebook, caplog):
    caplog.set_level(logging.DEBUG)
    order = hl7_order(priority="STAT", reason=SADDLE, patient_id="PT-4242")
    entry = triage(study(), rulebook, analyse=False, order_lookup=lambda s: order)
    assert entry["priority"] == "ROUTINE" and entry["order_priority"] is None and not entry["flags"]
    assert entry["order_source"] is None
    assert any("names another patient" in line for line in entry["explain"])
    assert "names another patient" in caplog.text
    assert "PT-4242" not in caplog.text and "PT-0001" not in caplog.text and "saddle" not in caplog.text


def test_cancelled_order_is_not_read(rulebook):
    entry = triage(study(), rulebook, analyse=False,
                   order_lookup=lambda s: hl7_order(priority="STAT", reason=SADDLE, status="cancelled"))
    assert entry["priority"] == "ROUTINE"


# --- what reaches the RIS ---------------------------------------------------------------------

@pytest.fixture
def ris():
    server = MllpServer().start()
    yield server
    server.stop()


def _priorities_sent(msg: hl7.Message) -> set[str]:
    """Every priority value in ORC-7.6, TQ1-9, OBR-5, OBR-27.6 (empty ones left out)."""
    found = set()
    for seg_name, num, comp in (("ORC", 7, 5), ("TQ1", 9, 0), ("OBR", 5, 0), ("OBR", 27, 5)):
        try:
            segments = msg.segments(seg_name)
        except KeyError:
            continue
        for seg in segments:
            fields = str(seg).split("|")
            comps = fields[num].split("^") if len(fields) > num else []
            if len(comps) > comp and comps[comp]:
                found.add(comps[comp])
    return found


CSTORE_VARIANTS = [
    ((), {}),  # no text, no priority in the header
    ((), {"RequestedProcedurePriority": "LOW"}),
    ((), {"RequestedProcedurePriority": "ROUTINE", "ReportingPriority": "ROUTINE"}),
    ((("ReasonForTheRequestedProcedure", "routine follow-up, no complaints"),), {"RequestedProcedurePriority": "MEDIUM"}),
    ((("ReasonForTheRequestedProcedure", "6 weeks after L4-L5 fusion, doing well"),), {}),
]


@pytest.mark.parametrize("texts,priorities", CSTORE_VARIANTS)
def test_a_stat_order_is_never_demoted_whatever_arrives_by_cstore(rulebook, ris, texts, priorities):
    order = hl7_order(priority="STAT", code="S")
    entry = triage(study(texts, priorities), rulebook, analyse=False, order_lookup=lambda s: order)
    assert entry["priority"] == "STAT" and entry["order_priority"] == "STAT"
    entry["revision"] = 1
    cfg = Config(hl7_timeout=2)
    receipt = hl7_sink.push(entry, ris.address, cfg)
    msg = ris.messages[-1]
    assert str(msg["ORC.1"]) == "SC" and "notes only" in receipt  # no order change at all
    assert _priorities_sent(msg) == set()  # no priority field: nothing the RIS could read as lower
    notes = [str(s(3)) for s in msg.segments("NTE")]
    assert "the order's priority STAT is kept" in notes[0]


def test_xo_only_above_the_order(rulebook, ris):
    cfg = Config(hl7_timeout=2)
    raised = triage(study(), rulebook, analyse=False,
                    order_lookup=lambda s: hl7_order(priority="ROUTINE", code="R", reason=SADDLE))
    raised["revision"] = 1
    assert raised["priority"] == "STAT" and raised["order_priority"] == "ROUTINE"
    hl7_sink.push(raised, ris.address, cfg)
    msg = ris.messages[-1]
    assert str(msg["ORC.1"]) == "XO" and _priorities_sent(msg) == {"S"}
    notes = [str(s(3)) for s in msg.segments("NTE")]
    assert any(n.startswith("Evidence for epidural_haematoma read in:") and "HL7 order OBR-31" in n for n in notes)
    assert not any("saddle" in n or "PT-0001" in n for n in notes)  # sources, not the text


@pytest.mark.parametrize("ours,order,expected", [
    ("URGENT", "URGENT", False), ("URGENT", "ROUTINE", True), ("STAT", "URGENT", True),
    ("ROUTINE", None, False), ("URGENT", None, False), ("STAT", None, True), ("URGENT", "STAT", False)])
def test_raises_order(ours, order, expected):
    assert hl7_sink.raises_order({"priority": ours, "order_priority": order}) is expected

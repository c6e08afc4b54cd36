"""The triage actor reads the stored RIS order (issue 12): a header without text triaged from the
order, a failed triage read at the RIS order's priority, a report signed before the triage."""

from __future__ import annotations

import time

import pydicom

from core.headers import summarize
from core.index import StudyIndex
from core.orders import Order, OrderStore
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import wait_for
from workers.worklist import Worklist

SADDLE = "new saddle anaesthesia and urinary retention 1 day after L4-L5 decompression"


def index_bare_study(redis_client, tmp_path, accession):
    spec = StudySpec(accession=accession, requested_procedure="", series=[SeriesSpec("MR", "T2 SAG", 2)])
    index = StudyIndex(redis_client)
    for f in write_study(tmp_path / accession, spec):
        index.record_instance(summarize(pydicom.dcmread(f, stop_before_pixels=True), f, f.stat().st_size))
    return spec


def test_header_without_text_triaged_from_the_stored_order(workers_running, actors, redis_client, tmp_path):
    workers_running()
    spec = index_bare_study(redis_client, tmp_path, "ACC-ORD-1")
    orders = OrderStore(redis_client)
    orders.save(Order("ACC-ORD-1", spec.patient_id, spec.issuer, priority="ROUTINE", priority_code="R",
                      priority_source="HL7 order TQ1-9",
                      texts=[{"source": "HL7 order", "field": "OBR-31", "value": SADDLE}]))
    actors.triage_study.send(spec.study_uid)
    entry = wait_for(lambda: Worklist(redis_client).get(spec.study_uid), timeout=30, what="entry")
    assert entry["priority"] == "STAT" and entry["order_priority"] == "ROUTINE" and entry["order_source"] == "HL7"
    assert orders.study_of("ACC-ORD-1") == spec.study_uid  # a later order or report finds the study


def test_failed_triage_is_read_at_the_ris_order_priority(workers_running, actors, redis_client, tmp_path,
                                                         monkeypatch):
    workers_running()
    spec = index_bare_study(redis_client, tmp_path, "ACC-ORD-2")
    OrderStore(redis_client).save(Order("ACC-ORD-2", spec.patient_id, spec.issuer, priority="STAT",
                                        priority_code="S", priority_source="HL7 order TQ1-9"))
    monkeypatch.setattr(actors, "triage", lambda *a, **k: (_ for _ in ()).throw(TypeError("bug")))
    actors.triage_study.send_with_options(args=(spec.study_uid,), max_retries=0)
    entry = wait_for(lambda: Worklist(redis_client).get(spec.study_uid), timeout=20, what="triage-failed entry")
    assert entry["triage_failed"] and entry["priority"] == "STAT" and entry["order_priority"] == "STAT"


def test_report_signed_before_the_triage_closes_the_entry_once_triaged(workers_running, actors, redis_client,
                                                                       tmp_path):
    workers_running()
    spec = index_bare_study(redis_client, tmp_path, "ACC-ORD-3")
    signed = time.time()
    OrderStore(redis_client).save(Order("ACC-ORD-3", spec.patient_id, spec.issuer, priority="URGENT",
                                        priority_code="A", priority_source="HL7 order TQ1-9",
                                        signed_at=signed, signed_status="F"))
    actors.triage_study.send(spec.study_uid)
    entry = wait_for(lambda: (lambda e: e if e and e.get("closed_at") else None)(
        Worklist(redis_client).get(spec.study_uid)), timeout=30, what="closed entry")
    assert entry["closed_at"] == signed and entry["closed_by"] == "HL7 ORU^R01 result status F"
    assert Worklist(redis_client).entries() == []

"""UPS sink against a UPS SCP built on pynetdicom (tests/ups_scp.py).

No UPS server ships for this machine (Orthanc from Debian has no UPS, dcm4chee
is not packaged), hence the in-process SCP, which keeps workitem states as
PS3.4 Annex CC defines them.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import UnifiedProcedureStepPull

from core.config import Config
from peers import free_port
from sink_peers import STAT_FLAG, URGENT_FLAG, sample_entry
from ups_scp import UpsScp
from workers.sinks import SinkError, ups


@pytest.fixture
def scp():
    server = UpsScp().start()
    yield server
    server.stop()


@pytest.fixture
def config():
    cfg = Config()
    cfg.ups_timeout = 5
    return cfg


def only_workitem(scp: UpsScp) -> Dataset:
    assert len(scp.workitems) == 1
    return next(iter(scp.workitems.values()))


def test_stat_creates_one_high_workitem(scp, config):
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG])
    receipt = ups.push(entry, scp.node, config)
    item = only_workitem(scp)
    uid = ups.workitem_uid(entry["study_instance_uid"])
    assert item.SOPInstanceUID == uid and uid in receipt and "created HIGH" in receipt
    assert item.ScheduledProcedureStepPriority == "HIGH"
    assert item.ProcedureStepState == "SCHEDULED"
    assert item.InputReadinessState == "READY"
    assert item.WorklistLabel == ups.WORKLIST_LABEL and item.ProcedureStepLabel
    assert item.ScheduledWorkitemCodeSequence[0].CodeValue == "110005"
    assert item.StudyInstanceUID == entry["study_instance_uid"]
    assert item.PatientID == "PT-0001" and str(item.PatientName) == "TEST^PATIENT"
    assert item.ReferencedRequestSequence[0].AccessionNumber == "ACC2026001"
    # Input Information Sequence references every instance of the study
    series = item.InputInformationSequence[0]
    assert series.StudyInstanceUID == entry["study_instance_uid"]
    assert series.SeriesInstanceUID == entry["series"][0]["series_instance_uid"]
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence] == entry["series"][0]["instances"]
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert series.DICOMRetrievalSequence[0].RetrieveAETitle == config.ae_title
    # STAT target turnaround: 30 min after the study arrived (1795250000 = 2026-11-21 08:33:20 UTC)
    assert item.ScheduledProcedureStepStartDateTime == "20261121083340+0000"
    assert item.ExpectedCompletionDateTime == "20261121090320+0000"
    comments = item.CommentsOnTheScheduledProcedureStep
    assert "Suspected epidural_haematoma" in comments and "early.ces.haematoma" in comments
    assert "TEST" not in comments and "PT-0001" not in comments


def test_routine_is_medium_and_map_is_configurable(scp, config):
    ups.push(sample_entry(), scp.node, config)
    assert only_workitem(scp).ScheduledProcedureStepPriority == "MEDIUM"
    assert ups.ups_priority("URGENT") == "HIGH"
    config.ups_priority_map = {"ROUTINE": "LOW", "URGENT": "MEDIUM"}
    assert ups.ups_priority("ROUTINE", config) == "LOW"
    assert ups.ups_priority("URGENT", config) == "MEDIUM"
    assert ups.ups_priority("STAT", config) == "HIGH"


def test_second_push_lower_priority_keeps_one_workitem_and_never_lowers(scp, config):
    ups.push(sample_entry(priority="STAT", flags=[STAT_FLAG]), scp.node, config)
    receipt = ups.push(sample_entry(priority="ROUTINE", revision=2), scp.node, config)
    item = only_workitem(scp)
    assert item.ScheduledProcedureStepPriority == "HIGH"
    assert "Suspected epidural_haematoma" in item.CommentsOnTheScheduledProcedureStep
    assert "kept" in receipt
    assert [op[2] for op in scp.operations("N-CREATE")] == [0x0000, 0x0111]
    assert scp.operations("N-SET") == []


def test_same_push_twice_is_idempotent(scp, config):
    entry = sample_entry(priority="URGENT", flags=[URGENT_FLAG])
    ups.push(entry, scp.node, config)
    ups.push(entry, scp.node, config)
    assert only_workitem(scp).ScheduledProcedureStepPriority == "HIGH"
    assert scp.operations("N-SET") == []


def test_higher_priority_is_raised_with_n_set(scp, config):
    ups.push(sample_entry(), scp.node, config)
    before = only_workitem(scp).ExpectedCompletionDateTime
    receipt = ups.push(sample_entry(priority="STAT", revision=2, flags=[STAT_FLAG]), scp.node, config)
    item = only_workitem(scp)
    assert item.ScheduledProcedureStepPriority == "HIGH"
    assert "MEDIUM -> HIGH" in receipt
    assert len(scp.operations("N-SET")) == 1 and scp.operations("N-SET")[0][2] == 0
    assert item.ExpectedCompletionDateTime < before  # STAT deadline is earlier than ROUTINE's
    assert "Suspected epidural_haematoma" in item.CommentsOnTheScheduledProcedureStep
    # and a later routine re-triage leaves it at HIGH
    ups.push(sample_entry(revision=3), scp.node, config)
    assert only_workitem(scp).ScheduledProcedureStepPriority == "HIGH"
    assert len(scp.operations("N-SET")) == 1


def test_in_progress_workitem_is_left_alone(scp, config):
    entry = sample_entry()
    ups.push(entry, scp.node, config)
    uid = ups.workitem_uid(entry["study_instance_uid"])
    scp.set_state(uid, "IN PROGRESS", transaction_uid="1.2.3.999")
    receipt = ups.push(sample_entry(priority="STAT", revision=2, flags=[STAT_FLAG]), scp.node, config)
    assert "IN PROGRESS" in receipt
    assert only_workitem(scp).ScheduledProcedureStepPriority == "MEDIUM"
    assert scp.operations("N-SET") == []


def test_other_studies_get_their_own_workitem(scp, config):
    ups.push(sample_entry(), scp.node, config)
    ups.push(sample_entry(study_instance_uid="1.2.826.0.1.3680043.8.498.2002"), scp.node, config)
    assert len(scp.workitems) == 2


def test_worklist_query_finds_the_high_workitem(scp, config):
    ups.push(sample_entry(), scp.node, config)
    ups.push(sample_entry(study_instance_uid="1.2.826.0.1.3680043.8.498.2002", priority="STAT",
                          flags=[STAT_FLAG]), scp.node, config)
    ae = AE(ae_title="READER")
    ae.add_requested_context(UnifiedProcedureStepPull)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.aet)
    assert assoc.is_established
    query = Dataset()
    query.ProcedureStepState = "SCHEDULED"
    query.ScheduledProcedureStepPriority = "HIGH"
    query.StudyInstanceUID = ""
    query.SOPInstanceUID = ""
    found = [ds for status, ds in assoc.send_c_find(query, UnifiedProcedureStepPull) if status.Status == 0xFF00]
    assoc.release()
    assert [ds.StudyInstanceUID for ds in found] == ["1.2.826.0.1.3680043.8.498.2002"]


def test_unreachable_worklist_manager_is_retryable_then_created_once(config):
    port = free_port()
    with pytest.raises(SinkError) as err:
        ups.push(sample_entry(priority="STAT"), f"UPSSCP@127.0.0.1:{port}", config)
    assert err.value.retryable
    scp = UpsScp()
    scp.port = port
    scp.start()
    try:
        ups.push(sample_entry(priority="STAT"), scp.node, config)
        ups.push(sample_entry(priority="STAT"), scp.node, config)  # a retry after a lost receipt
        assert only_workitem(scp).ScheduledProcedureStepPriority == "HIGH"
    finally:
        scp.stop()


def test_peer_without_ups_pull_cannot_be_raised():
    scp = UpsScp(push_only=True).start()
    try:
        ups.push(sample_entry(), scp.node, Config())
        with pytest.raises(SinkError) as err:
            ups.push(sample_entry(priority="STAT", revision=2), scp.node, Config())
        assert not err.value.retryable
        assert only_workitem(scp).ScheduledProcedureStepPriority == "MEDIUM"
    finally:
        scp.stop()


def test_workitem_uid_is_deterministic_per_study():
    a = ups.workitem_uid("1.2.3")
    assert a == ups.workitem_uid("1.2.3") and a != ups.workitem_uid("1.2.4")
    assert len(a) <= 64


def test_bad_destination_is_not_retryable(config):
    with pytest.raises(SinkError) as err:
        ups.push(sample_entry(), "no-aet-here", config)
    assert not err.value.retryable

"""The order from a DICOM Modality Worklist: C-FIND MWL on AccessionNumber against Debian's Orthanc
with its ModalityWorklists plugin, worklist files written by the test (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from peers import Orthanc
from rules.engine import Rulebook
from workers.mwl import MwlError, query_order
from workers.pipeline import triage

PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")


def worklist_item(accession: str, patient_id: str, priority: str, reason: str, step: str = "MR lumbar spine") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = accession
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = generate_uid()
    ds.RequestedProcedureID = "RP" + accession
    ds.RequestedProcedureDescription = "MR lumbar spine"
    ds.RequestedProcedurePriority = priority
    ds.ReasonForTheRequestedProcedure = reason
    sps = Dataset()
    sps.Modality = "MR"
    sps.ScheduledStationAETitle = "MRI1"
    sps.ScheduledProcedureStepStartDate = "20261126"
    sps.ScheduledProcedureStepDescription = step
    sps.ScheduledProcedureStepID = "SPS" + accession
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def write_wl(folder: Path, name: str, ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(folder / f"{name}.wl", enforce_file_format=True)


@pytest.fixture(scope="module")
def mwl(tmp_path_factory):
    if not PLUGIN.exists():
        pytest.skip("Orthanc's ModalityWorklists plugin is not installed")
    work = tmp_path_factory.mktemp("mwl")
    folder = work / "worklists"
    folder.mkdir()
    write_wl(folder, "stat", worklist_item("MWL-STAT-1", "PT-0001", "STAT", "Post-op day 1 after L4-L5 decompression"))
    write_wl(folder, "saddle", worklist_item(
        "MWL-SADDLE-2", "PT-0002", "ROUTINE",
        "saddle anaesthesia, urinary retention 1 day after L4-5 surgery"))
    write_wl(folder, "other", worklist_item("MWL-OTHER-3", "PT-0003", "HIGH", "back pain"))
    server = Orthanc(work / "orthanc", aet="RISMWL", Plugins=[str(PLUGIN)],
                     modalities={"triage": ["PACSTRIAGE", "127.0.0.1", 104]},
                     Worklists={"Enable": True, "Database": str(folder)}).start()
    yield server
    server.stop()


def test_stat_priority_and_text_from_the_worklist(mwl):
    order = query_order(mwl.node, "MWL-STAT-1", timeout=10)
    assert order is not None and order.source == "MWL"
    assert order.priority == "STAT" and order.priority_code == "STAT"
    assert order.priority_source == "MWL (0040,1003) RequestedProcedurePriority"
    assert order.patient_id == "PT-0001" and order.issuer_of_patient_id == "HOSP"
    texts = {t["field"]: (t["source"], t["value"]) for t in order.texts}
    assert texts["ReasonForTheRequestedProcedure"] == ("MWL (0040,1002)", "Post-op day 1 after L4-L5 decompression")
    assert texts["ScheduledProcedureStepDescription"][1] == "MR lumbar spine"


def test_unknown_accession_has_no_order(mwl):
    assert query_order(mwl.node, "NO-SUCH-ACC", timeout=10) is None
    assert query_order(mwl.node, "MWL-STAT", timeout=10) is None  # no partial match


def test_unreachable_worklist_raises():
    from peers import free_port

    with pytest.raises(MwlError):
        query_order(f"NOBODY@127.0.0.1:{free_port()}", "MWL-STAT-1", timeout=2)


def test_worklist_order_triages_a_header_without_text(mwl):
    from core.study import Study

    def study(accession, patient_id):
        return Study.from_summaries([{
            "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.88", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.88.1",
            "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.88.1.1", "Modality": "MR", "AccessionNumber": accession,
            "PatientID": patient_id, "IssuerOfPatientID": "HOSP", "StudyDate": "20261126", "StudyTime": "090000",
            "TextFields": [], "OrderPriorities": {}}])

    rulebook = Rulebook.load()
    lookup = lambda s: query_order(mwl.node, s.accession_number, timeout=10)  # noqa: E731
    floor = triage(study("MWL-STAT-1", "PT-0001"), rulebook, analyse=False, order_lookup=lookup)
    assert floor["priority"] == "STAT" and floor["order_priority"] == "STAT" and floor["order_source"] == "MWL"
    text = triage(study("MWL-SADDLE-2", "PT-0002"), rulebook, analyse=False, order_lookup=lookup)
    assert text["priority"] == "STAT" and text["order_priority"] == "ROUTINE"
    assert any(e["source"] == "MWL (0040,1002) ReasonForTheRequestedProcedure"
               for f in text["flags"] for e in f["evidence"])
    mismatch = triage(study("MWL-OTHER-3", "PT-0002"), rulebook, analyse=False, order_lookup=lookup)
    assert mismatch["order_priority"] is None  # another patient's worklist item is not read

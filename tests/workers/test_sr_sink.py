"""The DICOM SR sink against a real Orthanc: build, store, re-send, failures."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared helpers in tests/

from core.config import Config, DicomNode  # noqa: E402
from core.headers import summarize  # noqa: E402
from core.study import Study  # noqa: E402
from dicomgen import StudySpec, postop_three_series, write_study  # noqa: E402
from peers import Orthanc, free_port  # noqa: E402
from workers.sinks import SinkError  # noqa: E402
from workers.sinks.dicom import push  # noqa: E402
from workers.sr import SCHEME, build_sr, sr_uids  # noqa: E402

HEADER_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
               "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
               "StudyDescription", "SpecificCharacterSet")


def make_entry(directory: Path, spec: StudySpec, priority: str = "URGENT", revision: int = 1) -> dict:
    """A realistic worklist entry for a synthetic study written to `directory`."""
    paths = write_study(directory, spec)
    study = Study.from_summaries(summarize(pydicom.dcmread(p, stop_before_pixels=True), str(p)) for p in paths)
    flags = [
        {"code": "epidural_haematoma", "status": "suspected", "priority": priority, "rule": "early.ces",
         "rules": ["early.ces"],
         "evidence": [
             {"source": "ReasonForTheRequestedProcedure", "rule": "early.ces",
              "text": "anesthésie en selle", "start": 29, "end": 48, "assertion": "affirmed"},
             {"source": "analyser:canal", "rule": "image.canal_area",
              "measurement": {"name": "dural_sac_area", "value": 42.5, "unit": "mm2", "threshold": 75},
              "note": "below threshold"},
         ]},
        {"code": "insufficient_decompression", "status": "suspected", "priority": "URGENT",
         "rule": "inefficacy.persistent", "rules": ["inefficacy.persistent"],
         "evidence": [{"source": "ImagingServiceRequestComments", "rule": "inefficacy.persistent",
                       "text": "déficit L5 gauche", "assertion": "uncertain"}]},
    ]
    return {
        "study_instance_uid": study.uid,
        "accession_number": study.get("AccessionNumber"),
        "patient_id": study.get("PatientID"),
        "issuer_of_patient_id": study.get("IssuerOfPatientID"),
        "priority": priority, "order_priority": None,
        "flags": flags,
        "postop_interval_hours": 30, "course": "early",
        "priors": [{"study_instance_uid": "1.2.3.4", "study_date": "20261001", "study_description": "IRM préop"}],
        "recommendations": ["Étendre au rachis entier si doute (hématome remontant)."],
        "explain": ["Suspected epidural_haematoma: anesthésie en selle à J+1."],
        "rulebook_version": "2026.11-test",
        "modalities": study.modalities,
        "study_date": study.get("StudyDate"), "study_time": study.get("StudyTime"),
        "study_description": study.get("StudyDescription"),
        "series_count": len(study.series), "instance_count": study.instance_count,
        "triaged_at": 1795000000.0 + revision, "revision": revision,
        "analysers": [],
        "series": [
            {"series_instance_uid": s.uid, "modality": s.modality, "description": s.description,
             "sop_class_uid": s.instances[0]["SOPClassUID"],
             "instances": [i["SOPInstanceUID"] for i in s.instances]}
            for s in study.series.values()
        ],
        "headers": {k: study.get(k) for k in HEADER_KEYS if study.get(k) is not None},
    }


def codes_in(ds) -> set[tuple[str, str]]:
    """Every (scheme, value) of concept names and coded values in the content tree."""
    found = set()

    def walk(items):
        for item in items:
            for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                for c in item.get(seq, []):
                    value = c.get("CodeValue") or c.get("LongCodeValue")
                    found.add((c.CodingSchemeDesignator, value))
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def texts_in(ds) -> list[str]:
    out = []

    def walk(items):
        for item in items:
            if item.get("ValueType") == "TEXT":
                out.append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return out


def roundtrip(sr) -> pydicom.Dataset:
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture
def config():
    return Config(ae_title="PACSTRIAGE")


def node(orthanc) -> DicomNode:
    return DicomNode.parse(orthanc.node)


def download(orthanc, orthanc_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{orthanc_id}/file")))


# -- build ------------------------------------------------------------------------

def test_build_content_is_readable_and_suspected(tmp_path):
    entry = make_entry(tmp_path, postop_three_series(), priority="STAT")
    ds = roundtrip(build_sr(entry))
    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyInstanceUID == entry["study_instance_uid"]
    assert ds.PatientName == "DUPONT^MARIE" and ds.PatientID == "PT0001"
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    found = codes_in(ds)
    assert (SCHEME, "STAT") in found
    assert (SCHEME, "epidural_haematoma") in found and (SCHEME, "insufficient_decompression") in found
    assert ("SCT", "415684004") in found  # "Suspected"
    texts = texts_in(ds)
    joined = "\n".join(texts)
    assert "anesthésie en selle" in joined and "déficit L5 gauche" in joined  # French survives
    assert "rule early.ces" in joined and "assertion affirmed" in joined and "[29-48]" in joined
    assert "2026.11-test" in joined and "30 h" in joined and "Étendre au rachis" in joined
    assert "1.2.3.4" in joined and "not a diagnosis" in joined
    assert not any(w in joined.lower() for w in ("normal", "cleared", "no haematoma"))
    # evidence: every triaged instance is referenced
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    referenced = {e[2] for e in sr.get_evidence()}
    assert referenced == {uid for s in entry["series"] for uid in s["instances"]} and len(referenced) == 12


def test_measurement_is_tid300_with_ucum(tmp_path):
    entry = make_entry(tmp_path, postop_three_series())
    sr = hd.sr.srread(io.BytesIO(_bytes(build_sr(entry))))
    groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        "triage summary", "suspected epidural_haematoma", "suspected insufficient_decompression"]
    (m,) = groups[1].get_measurements()
    assert (m.name.value, m.value, m.unit.value, m.unit.scheme_designator) == ("dural_sac_area", 42.5, "mm2", "UCUM")
    assert groups[2].get_measurements() == []
    evals = {(q.name.value, q.value.value) for q in groups[1].get_qualitative_evaluations()}
    assert evals == {("epidural_haematoma", "415684004"), ("flag-priority", "URGENT")}


def _bytes(sr) -> bytes:
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_uids_are_deterministic_per_study(tmp_path):
    entry = make_entry(tmp_path / "a", postop_three_series())
    one, two = build_sr(entry), build_sr(dict(entry, revision=2, priority="STAT"))
    assert (one.SOPInstanceUID, one.SeriesInstanceUID) == (two.SOPInstanceUID, two.SeriesInstanceUID)
    assert (one.SeriesInstanceUID, one.SOPInstanceUID) == sr_uids(entry["study_instance_uid"])
    assert (one.InstanceNumber, two.InstanceNumber) == (1, 2)
    other = make_entry(tmp_path / "b", postop_three_series())
    assert build_sr(other).SOPInstanceUID != one.SOPInstanceUID


def test_missing_type2_headers_give_empty_values(tmp_path):
    entry = make_entry(tmp_path, postop_three_series(omit_type2=True))
    assert "PatientName" not in entry["headers"]
    ds = roundtrip(build_sr(entry))
    for kw in ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
               "ReferringPhysicianName", "StudyID"):
        assert kw in ds and ds[kw].value in ("", None), kw
    assert ds.PatientID == "PT0001" and ds.StudyDate == "20261121"


def test_malformed_headers_are_cleaned_not_invented(tmp_path):
    long_name = "DE LA FONTAINE-MONTMORENCY-" + "X" * 60 + "^JEAN-BAPTISTE^MARIE^DR^JR^EXTRA"
    entry = make_entry(tmp_path, postop_three_series())
    entry["headers"].update(PatientName=long_name + "\r\n", PatientBirthDate="1961-04-12",
                            PatientSex="male", StudyTime="25h", StudyDate="20260230")
    with _nowarn():
        ds = roundtrip(build_sr(entry))
    name = str(ds.PatientName)
    assert name.startswith("DE LA FONTAINE-MONTMORENCY-XXX") and "\n" not in name
    groups = name.split("=")
    assert all(len(g) <= 64 for g in groups) and name.count("^") <= 4
    assert ds.PatientBirthDate == "" and ds.PatientSex == "" and ds.StudyTime == "" and ds.StudyDate == ""
    assert ds.PatientID == "PT0001"


class _nowarn:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", UserWarning)  # pydicom's invalid-value warnings

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# -- push to a real Orthanc --------------------------------------------------------

def test_push_stores_readable_sr(orthanc, config, tmp_path):
    entry = make_entry(tmp_path, postop_three_series(), priority="URGENT")
    receipt = push(entry, node(orthanc), config)
    _, sop_uid = sr_uids(entry["study_instance_uid"])
    assert receipt == f"SR {sop_uid} stored at {orthanc.node} (0x0000)"
    (found,) = orthanc.find_instances(SOPInstanceUID=sop_uid)
    ds = download(orthanc, found["ID"])
    assert ds.StudyInstanceUID == entry["study_instance_uid"]
    assert (SCHEME, "URGENT") in codes_in(ds) and (SCHEME, "epidural_haematoma") in codes_in(ds)
    assert "anesthésie en selle" in "\n".join(texts_in(ds))
    hd.sr.srread(io.BytesIO(orthanc.get(f"/instances/{found['ID']}/file")))


def test_second_push_replaces_the_first(orthanc, config, tmp_path):
    entry = make_entry(tmp_path, postop_three_series(), priority="URGENT")
    push(entry, node(orthanc), config)
    newer = dict(entry, revision=2, priority="STAT", triaged_at=entry["triaged_at"] + 60,
                 flags=[dict(entry["flags"][0], priority="STAT")] + entry["flags"][1:])
    push(newer, node(orthanc), config)
    srs = orthanc.find_instances(StudyInstanceUID=entry["study_instance_uid"], Modality="SR")
    assert len(srs) == 1
    ds = download(orthanc, srs[0]["ID"])
    assert ds.InstanceNumber == 2
    found = codes_in(ds)
    assert (SCHEME, "STAT") in found and (SCHEME, "URGENT") in found  # STAT now; URGENT stays on one flag
    summary = ds.ContentSequence[-1].ContentSequence[0]  # first measurement group: triage summary
    priority = [i for i in summary.ContentSequence
                if i.get("ValueType") == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "priority"]
    assert priority[0].ConceptCodeSequence[0].CodeValue == "STAT"


def test_missing_type2_headers_are_stored(orthanc, config, tmp_path):
    entry = make_entry(tmp_path, postop_three_series(omit_type2=True, patient_id="PT0002"))
    push(entry, node(orthanc), config)
    _, sop_uid = sr_uids(entry["study_instance_uid"])
    (found,) = orthanc.find_instances(SOPInstanceUID=sop_uid)
    assert orthanc.instance_tags(found["ID"])["PatientID"] == "PT0002"


def test_down_pacs_is_retryable(config, tmp_path):
    entry = make_entry(tmp_path, postop_three_series())
    started = time.monotonic()
    with pytest.raises(SinkError) as err:
        push(entry, DicomNode("NOBODY", "127.0.0.1", free_port()), config)
    assert err.value.retryable
    assert "PT0001" not in str(err.value) and "DUPONT" not in str(err.value)
    assert time.monotonic() - started < 10


def test_entry_without_instances_is_not_retryable(orthanc, config, tmp_path):
    entry = dict(make_entry(tmp_path, postop_three_series()), series=[])
    with pytest.raises(SinkError) as err:
        push(entry, node(orthanc), config)
    assert not err.value.retryable


def test_no_patient_data_in_logs_or_warnings(orthanc, config, tmp_path, caplog, recwarn):
    spec = postop_three_series(patient_name="DUPONTONLY", patient_id="PT0003", accession="ACC-TOO-LONG-FOR-SH-0003")
    entry = make_entry(tmp_path, spec)
    caplog.set_level("INFO")
    receipt = push(entry, node(orthanc), config)
    _, sop_uid = sr_uids(entry["study_instance_uid"])
    (found,) = orthanc.find_instances(SOPInstanceUID=sop_uid)
    tags = orthanc.instance_tags(found["ID"])
    assert tags["PatientName"] == "DUPONTONLY" and tags["AccessionNumber"] == "ACC-TOO-LONG-FOR-SH-0003"
    said = caplog.text + receipt + "".join(str(w.message) for w in recwarn)
    assert sop_uid in caplog.text
    for secret in ("DUPONTONLY", "PT0003", "ACC-TOO-LONG", "19610412"):
        assert secret not in said


def test_permanent_rejection_is_not_retryable(config, tmp_path):
    strict = Orthanc(tmp_path / "strict", DicomCheckCalledAet=True).start()
    try:
        entry = make_entry(tmp_path / "s", postop_three_series())
        with pytest.raises(SinkError) as err:
            push(entry, DicomNode("NOT_ORTHANC", "127.0.0.1", strict.dicom_port), config)
        assert "rejected" in str(err.value) and "permanent" in str(err.value)
        assert not err.value.retryable
    finally:
        strict.stop()


def test_unknown_sop_class_first_still_builds(tmp_path):
    entry = make_entry(tmp_path, postop_three_series())
    odd = {"series_instance_uid": "1.2.826.0.1.3680043.8.498.1", "modality": "OT", "description": "vendor",
           "sop_class_uid": "1.2.840.113619.4.999", "instances": ["1.2.826.0.1.3680043.8.498.2"]}
    entry["series"].insert(0, odd)
    ds = roundtrip(build_sr(entry))
    assert ds.PatientID == "PT0001"
    assert "1.2.826.0.1.3680043.8.498.2" in {e[2] for e in hd.sr.Comprehensive3DSR.from_dataset(ds).get_evidence()}

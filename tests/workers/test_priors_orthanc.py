"""Prior-exam lookup against a real Orthanc (tests/peers.py): roles, identity, outage, prefetch."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydicom import dcmread
from pydicom.uid import ComputedRadiographyImageStorage, XRayAngiographicImageStorage

from core.config import DicomNode
from core.headers import summarize
from core.study import Study
from dicomgen import SeriesSpec, StudySpec, instance
from peers import Orthanc, free_port, wait_for
from workers.priors import TTLCache, find_priors, prefetch

OUR_AET = "PRIORSTEST"
#: Modalities dicomgen cannot write: built as DX, then relabelled.
RELABEL = {"XA": XRayAngiographicImageStorage, "RF": XRayAngiographicImageStorage,
           "CR": ComputedRadiographyImageStorage}


def write(directory: Path, spec: StudySpec) -> list[Path]:
    """Like dicomgen.write_study, also for XA/RF/CR (built as DX, then relabelled)."""
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for sn, sspec in enumerate(spec.series, start=1):
        modality = sspec.modality
        base = SeriesSpec("DX", sspec.description, sspec.count, sspec.body_part) if modality in RELABEL else sspec
        series_uid = f"{spec.study_uid}.{sn}"
        for n in range(1, sspec.count + 1):
            ds = instance(spec, base, series_uid, sn, n)
            if modality in RELABEL:
                ds.Modality = modality
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = RELABEL[modality]
            if not sspec.body_part:
                del ds.BodyPartExamined
            path = directory / f"{modality}{sn:02d}_{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def spec(uid: str, date: str, time_: str, description: str, *series: SeriesSpec, **kw) -> StudySpec:
    return StudySpec(study_uid=uid, study_date=date, study_time=time_, study_description=description,
                     accession=f"A{uid[-4:]}", series=list(series), **kw)


ROOT = "1.2.826.0.1.3680043.8.498.4242"
PREOP_MR = spec(f"{ROOT}.1", "20260515", "101500", "IRM RACHIS LOMBAIRE", SeriesSpec("MR", "SAG T2", 2))
PREOP_XR = spec(f"{ROOT}.2", "20261118", "160000", "RACHIS LOMBAIRE FACE PROFIL DEBOUT",
                SeriesSpec("CR", "PROFIL", 1, "LSPINE"))
INTRAOP = spec(f"{ROOT}.3", "20261120", "083000", "PER-OP SCOPIE", SeriesSpec("XA", "SCOPIE", 2, ""))
POSTOP_XR = spec(f"{ROOT}.4", "20261121", "090000", "RX RACHIS LOMBAIRE POST-OP",
                 SeriesSpec("CR", "FACE", 1, "LSPINE"))
HEAD_CT = spec(f"{ROOT}.5", "20261001", "120000", "SCANNER CEREBRAL", SeriesSpec("CT", "CRANE SPC", 2, "HEAD"))
OTHER_PATIENT = spec(f"{ROOT}.6", "20261119", "100000", "IRM RACHIS LOMBAIRE", SeriesSpec("MR", "SAG T2", 1),
                     patient_id="PT0002")  # same name (dicomgen default), different ID
OTHER_ISSUER = spec(f"{ROOT}.7", "20261119", "110000", "IRM RACHIS LOMBAIRE", SeriesSpec("MR", "SAG T2", 1),
                    issuer="HOSP-B")  # same PatientID, another issuer: another person
HISTORY = [PREOP_MR, PREOP_XR, INTRAOP, POSTOP_XR, HEAD_CT, OTHER_PATIENT, OTHER_ISSUER]


def current_study(tmp: Path) -> Study:
    """The new postoperative MRI (J+2), as the pipeline would assemble it."""
    s = spec(f"{ROOT}.99", "20261122", "143000", "IRM RACHIS LOMBAIRE", SeriesSpec("MR", "SAG T2 TSE", 2))
    return Study.from_summaries([summarize(dcmread(p), path=p) for p in write(tmp / "current", s)])


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("priors-pacs")
    station = Orthanc(tmp / "station", aet="STATION").start()
    orthanc = Orthanc(tmp / "pacs", aet="PACS", modalities={
        OUR_AET: [OUR_AET, "127.0.0.1", 104],
        "STATION": ["STATION", "127.0.0.1", station.dicom_port],
    }).start()
    for s in HISTORY:
        for path in write(tmp / "history" / s.study_uid, s):
            orthanc.upload(path)
    yield orthanc, station, tmp
    orthanc.stop()
    station.stop()


def node(orthanc: Orthanc) -> DicomNode:
    return DicomNode.parse(orthanc.node)


def test_roles_surgery_and_exclusions(pacs):
    orthanc, _, tmp = pacs
    study = current_study(tmp)
    result = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5, attempts=2)
    assert result.status == "ok", result.to_dict()
    roles = {p["study_instance_uid"]: p["role"] for p in result.priors}
    assert roles == {
        PREOP_MR.study_uid: "preoperative",
        PREOP_XR.study_uid: "preoperative",
        INTRAOP.study_uid: "intraoperative",
        POSTOP_XR.study_uid: "postoperative_reference",
    }
    # the preoperative MRI is also the latest comparable MRI
    mr = next(p for p in result.priors if p["study_instance_uid"] == PREOP_MR.study_uid)
    assert mr["roles"] == ["preoperative", "recent_comparable"]
    assert mr["interval_days"] == -191 and mr["modalities"] == ["MR"] and mr["instances"] == 2
    assert mr["accession_number"] == PREOP_MR.accession and mr["description"] == "IRM RACHIS LOMBAIRE"
    xa = next(p for p in result.priors if p["role"] == "intraoperative")
    assert xa["modalities"] == ["XA"] and xa["interval_days"] == -2 and xa["study_time"] == "083000"
    # surgery from the intraoperative study, 54 h before the current study
    assert result.surgery.datetime == "2026-11-20T08:30:00"
    assert result.surgery.trust == "high"
    assert result.surgery.source == f"intraoperative study {INTRAOP.study_uid} (XA, 'PER-OP SCOPIE')"
    assert result.surgery.postop_interval_hours == 54.0
    assert result.conflicts == []
    texts = [e.text for e in result.evidence]
    assert any(t.startswith("surgery date 2026-11-20 from intraoperative study") for t in texts)
    assert not any("no preoperative imaging" in t for t in texts)
    hints = result.hints
    assert any(h.startswith("Preoperative MRI of 2026-05-15 available — compare the herniation") for h in hints)
    assert any(h.startswith("Baseline postoperative radiograph of 2026-11-21") for h in hints)
    assert result.to_dict()["priors"][0]["study_instance_uid"] == PREOP_MR.study_uid


def test_issuer_mismatch_and_other_patient_excluded(pacs):
    orthanc, _, tmp = pacs
    study = current_study(tmp)
    uids = {p["study_instance_uid"] for p in
            find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5).priors}
    assert OTHER_ISSUER.study_uid not in uids and OTHER_PATIENT.study_uid not in uids
    assert HEAD_CT.study_uid not in uids
    # the same patient seen from HOSP-B only gets the HOSP-B study
    study.attributes["IssuerOfPatientID"] = "HOSP-B"
    result = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5)
    assert [p["study_instance_uid"] for p in result.priors] == [OTHER_ISSUER.study_uid]
    assert result.surgery is None
    assert any(e.text == "preoperative imaging not identified: surgery date unknown"
               and e.note.startswith("not_assessed: ") for e in result.evidence)


def test_text_surgery_conflict_is_reported(pacs):
    orthanc, _, tmp = pacs
    result = find_priors(current_study(tmp), node(orthanc), calling_aet=OUR_AET, timeout=5,
                         text_surgery={"date": "2026-11-16", "source": "ReasonForTheRequestedProcedure"})
    assert result.surgery.trust == "high"  # the intraoperative study still wins
    assert len(result.conflicts) == 1 and "differs by 4 days" in result.conflicts[0]
    assert [c["trust"] for c in result.surgery.candidates] == ["high", "medium", "low"]


def test_cache_answers_without_the_pacs(pacs):
    orthanc, _, tmp = pacs
    study = current_study(tmp)
    cache = TTLCache(ttl=60)
    before = REGISTRY.get_sample_value("pacs_triage_priors_query_seconds_count") or 0
    first = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5, cache=cache)
    dead = DicomNode(orthanc.aet, "127.0.0.1", orthanc.dicom_port)  # same key; the cache answers
    second = find_priors(study, dead, calling_aet=OUR_AET, timeout=5, cache=cache)
    assert second.to_dict() == first.to_dict()
    assert REGISTRY.get_sample_value("pacs_triage_priors_query_seconds_count") == before + 1


def test_unreachable_pacs_is_unavailable_within_budget():
    port = free_port()  # nothing listens there
    study = Study(uid="1.2.3.4", attributes={"PatientID": "PT0001", "StudyDate": "20261122"})
    failures = REGISTRY.get_sample_value("pacs_triage_priors_failures_total") or 0
    start = time.monotonic()
    result = find_priors(study, DicomNode("PACS", "127.0.0.1", port), calling_aet=OUR_AET, timeout=1, attempts=3)
    assert time.monotonic() - start < 1 * 3 + 0.5
    assert result.status == "unavailable" and result.priors == []
    assert result.evidence[0].text.startswith("priors unavailable: ")
    assert "after 3 attempt(s)" in result.evidence[0].text
    assert REGISTRY.get_sample_value("pacs_triage_priors_failures_total") == failures + 3
    assert result.hints[0].startswith("Priors unavailable: ")


def test_silent_pacs_times_out_within_budget():
    with socket.socket() as server:  # accepts TCP connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        study = Study(uid="1.2.3.5", attributes={"PatientID": "PT0001"})
        start = time.monotonic()
        result = find_priors(study, DicomNode("PACS", "127.0.0.1", server.getsockname()[1]),
                             calling_aet=OUR_AET, timeout=0.5, attempts=2)
        elapsed = time.monotonic() - start
    assert result.status == "unavailable"
    assert 0.5 <= elapsed < 0.5 * 2 + 0.5


def test_stopped_orthanc_then_back(tmp_path):
    orthanc = Orthanc(tmp_path / "pacs", aet="PACS", modalities={OUR_AET: [OUR_AET, "127.0.0.1", 104]}).start()
    try:
        for path in write(tmp_path / "h", PREOP_MR):
            orthanc.upload(path)
        study = current_study(tmp_path)
        cache = TTLCache(ttl=60)
        orthanc.stop()
        failures = REGISTRY.get_sample_value("pacs_triage_priors_failures_total") or 0
        down = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=1, attempts=2, cache=cache)
        assert down.status == "unavailable"
        assert REGISTRY.get_sample_value("pacs_triage_priors_failures_total") == failures + 2
        orthanc.start()  # the outage was not cached: the next triage asks again
        up = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5, cache=cache)
        assert up.status == "ok" and [p["role"] for p in up.priors] == ["recent_comparable"]
        assert any(e.text == "surgery date not found among the PACS priors" for e in up.evidence)
    finally:
        orthanc.stop()


def test_prefetch_moves_priors_to_the_station(pacs):
    orthanc, station, tmp = pacs
    result = find_priors(current_study(tmp), node(orthanc), calling_aet=OUR_AET, timeout=5)
    wanted = [p for p in result.priors if p["role"] in ("preoperative", "postoperative_reference")]
    moved = prefetch(wanted, node(orthanc), "STATION", calling_aet=OUR_AET, timeout=10)
    assert sorted(moved) == sorted(p["study_instance_uid"] for p in wanted) and len(moved) == 3
    def on_station():
        return sorted(s["MainDicomTags"]["StudyInstanceUID"] for s in station.get("/studies?expand"))

    assert wait_for(on_station, timeout=10, what="studies on the station") == sorted(moved)
    assert prefetch([{"study_instance_uid": "1.2.3.999"}], node(orthanc), "NOSUCHAET", calling_aet=OUR_AET,
                    timeout=5) == []


@pytest.mark.parametrize("patient_id", ["*", "PT?", "PT*", "A\\B"])
def test_wildcard_patient_id_is_never_sent_as_a_cfind(pacs, patient_id):
    """A PatientID of "*" would be a PACS-wide query answering with other patients' studies."""
    orthanc, _, tmp = pacs
    study = current_study(tmp)
    study.attributes["PatientID"] = patient_id
    cache = TTLCache()
    result = find_priors(study, node(orthanc), calling_aet=OUR_AET, timeout=5, cache=cache)
    assert result.status == "refused" and result.priors == []
    assert any("wildcard" in (e.text or "") for e in result.evidence)
    assert not cache._data, "nothing asked, nothing cached"

"""End to end, on the embedded defaults: DCMTK storescu -> `pacs-triage serve` -> SR in Orthanc.

`serve` runs as its own process with no Redis URL, so it starts and manages its
own Redis, runs the workers in-process, and pushes the SR to a real Orthanc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pydicom
import pytest

from dicomgen import SeriesSpec, StudySpec, postop_three_series, write_study
from peers import dcmtk, free_port, serve_process, service_ready, wait_for

STABLE_AFTER = 2.0


def cli(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"pacs-triage {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def service(tmp_path_factory, orthanc):
    data = tmp_path_factory.mktemp("svc") / "data"
    port, http_port = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER=str(STABLE_AFTER))
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    with serve_process(data, data.parent / "serve.log", ["--port", port, "--pacs", orthanc.node], env,
                       http_port=http_port, ready_timeout=30) as proc:
        yield {"port": port, "http": http_port, "data": data, "proc": proc, "log": data.parent / "serve.log"}


def metrics_text(service) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{service['http']}/metrics", timeout=5) as r:
        return r.read().decode()


def worklist(service) -> list[dict]:
    return json.loads(cli("worklist", "--json", "--data-dir", service["data"]).stdout)


def srs_for(orthanc, study_uid):
    return [i for i in orthanc.find_instances(StudyInstanceUID=study_uid)
            if i.get("MainDicomTags", {}).get("SOPInstanceUID") and _modality(orthanc, i) == "SR"]


def _modality(orthanc, instance):
    series = orthanc.get(f"/series/{instance['ParentSeries']}")
    return series["MainDicomTags"].get("Modality")


def test_postop_study_reaches_pacs_as_sr_and_tops_the_worklist(service, orthanc, tmp_path):
    dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"])
    routine = StudySpec(accession="ACC-ROUTINE", reason="Contrôle à 1 an d'une arthrodèse, asymptomatique",
                        series=[SeriesSpec("DX", "RACHIS LOMBAIRE FACE", 1)])
    urgent = postop_three_series(accession="ACC-STAT")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "r", routine))
    files = write_study(tmp_path / "s", urgent)
    sent = time.monotonic()
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *files)

    srs = wait_for(lambda: srs_for(orthanc, urgent.study_uid), timeout=STABLE_AFTER + 20, what="SR in Orthanc")
    elapsed = time.monotonic() - sent
    assert len(srs) == 1
    assert elapsed < STABLE_AFTER + 15

    entries = wait_for(lambda: [e for e in worklist(service) if e["accession_number"] in ("ACC-STAT", "ACC-ROUTINE")]
                       if len(worklist(service)) >= 2 else None, timeout=20, what="two worklist entries")
    top = entries[0]
    assert top["study_instance_uid"] == urgent.study_uid, "the STAT study is read first"
    assert top["priority"] == "STAT"
    codes = {f["code"] for f in top["flags"]}
    assert "epidural_haematoma" in codes
    for flag in top["flags"]:
        assert flag["evidence"] and flag["rule"]
    assert top["instance_count"] == 12 and top["series_count"] == 3

    sr = orthanc.get(f"/instances/{srs[0]['ID']}/file")
    ds = pydicom.dcmread(__import__("io").BytesIO(sr))
    assert ds.StudyInstanceUID == urgent.study_uid
    assert "epidural_haematoma" in str(ds.ContentSequence) or "haematoma" in str(ds.ContentSequence).lower()

    # durable layout on disk
    for f in files:
        d = pydicom.dcmread(f, stop_before_pixels=True)
        assert (service["data"] / "studies" / d.StudyInstanceUID / d.SeriesInstanceUID /
                f"{d.SOPInstanceUID}.dcm").exists()

    text = metrics_text(service)
    assert 'pacs_triage_instances_received_total{status="stored"} 13.0' in text
    assert 'pacs_triage_flags_total{code="epidural_haematoma"}' in text
    assert 'pacs_triage_sink_pushes_total{sink="pacs"}' in text
    assert "pacs_triage_end_to_end_latency_seconds_count" in text
    for forbidden in ("DUPONT", "PT0001", "19610412", "hématome"):
        assert forbidden not in text, "no patient data in metrics"
        assert forbidden not in service["log"].read_text(), "no patient data in the service log"


def test_late_instance_retriages_the_same_entry_and_replaces_the_sr(service, orthanc, tmp_path):
    spec = postop_three_series(accession="ACC-LATE")
    files = write_study(tmp_path / "a", spec)
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *files[:6])
    wait_for(lambda: srs_for(orthanc, spec.study_uid), timeout=STABLE_AFTER + 20, what="first SR")
    first = next(e for e in worklist(service) if e["study_instance_uid"] == spec.study_uid)
    assert first["instance_count"] == 6

    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *files[6:])

    def updated():
        e = next(e for e in worklist(service) if e["study_instance_uid"] == spec.study_uid)
        return e if e["instance_count"] == 12 and e["revision"] > first["revision"] else None

    entry = wait_for(updated, timeout=STABLE_AFTER + 20, what="re-triage")
    assert entry["priority"] == "STAT"
    assert len([e for e in worklist(service) if e["study_instance_uid"] == spec.study_uid]) == 1
    time.sleep(STABLE_AFTER + 1)
    assert len(srs_for(orthanc, spec.study_uid)) == 1, "a re-send replaces the SR, never duplicates it"


def test_order_priority_is_never_lowered(service, tmp_path):
    spec = StudySpec(accession="ACC-ORDER", order_priority="STAT", reason="Contrôle systématique",
                     series=[SeriesSpec("CT", "AX BONE", 2)])
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "o", spec))
    entry = wait_for(lambda: next((e for e in worklist(service) if e["accession_number"] == "ACC-ORDER"), None),
                     timeout=STABLE_AFTER + 20, what="entry")
    assert entry["priority"] == "STAT"
    assert entry["order_priority"] == "STAT"


def test_silent_ct_request_the_images_speak(service, orthanc, tmp_path):
    """'CT lumbar spine, follow-up' says nothing: a screw 5 mm into the canal makes it STAT."""
    from phantom import PhantomSpec, ScrewSpec, write_series

    spec = PhantomSpec(screws=[ScrewSpec(0, "left", medial=5.0), ScrewSpec(0, "right"),
                               ScrewSpec(1, "left"), ScrewSpec(1, "right")])
    files = write_series(spec, tmp_path / "ct")
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *files)
    wait_for(lambda: srs_for(orthanc, study_uid), timeout=STABLE_AFTER + 40, what="SR for the CT")
    entry = next(e for e in worklist(service) if e["study_instance_uid"] == study_uid)
    assert entry["priority"] == "STAT"
    screw = next(f for f in entry["flags"] if f["code"] == "misplaced_screw")
    measured = [e["measurement"] for e in screw["evidence"] if e.get("measurement")]
    assert measured and 4.0 <= measured[0]["value"] < 6.5 and measured[0]["unit"] == "mm"
    assert screw["rule"].startswith("ct_hardware")
    # The key image went to the PACS as a Secondary Capture in the study, referenced from the SR.
    from workers.keyimage import key_image_uids

    _, key_uid = key_image_uids(study_uid)
    key = wait_for(lambda: orthanc.find_instances(SOPInstanceUID=key_uid), timeout=20, what="key image in Orthanc")
    assert _modality(orthanc, key[0]) == "OT"
    sr_file = orthanc.get(f"/instances/{srs_for(orthanc, study_uid)[-1]['ID']}/file")
    assert key_uid.encode() in sr_file, "the SR references the key image"


def test_audit_trail_records_reception_triage_and_delivery_without_free_text(service, orthanc, tmp_path):
    spec = postop_three_series(accession="ACC-AUDIT")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "a", spec))

    def events():
        out = cli("audit", "export", "--data-dir", service["data"]).stdout
        return [json.loads(line) for line in out.splitlines() if spec.study_uid in line]

    def complete():
        kinds = [r["event"] for r in events()]
        return "pushed" in kinds and kinds

    kinds = wait_for(complete, timeout=30, what="audit of reception, triage and push")
    assert kinds.count("received") == 12 and "triaged" in kinds
    recs = events()
    triaged = next(r for r in recs if r["event"] == "triaged")
    assert triaged["rulebook"] and triaged["priority"] == "STAT" and triaged["revision"] >= 1
    pushed = next(r for r in recs if r["event"] == "pushed")
    assert pushed["kind"] == "pacs" and pushed["destination"] == orthanc.node and pushed["at"] >= recs[0]["at"]
    from core.audit import FIELDS

    for r in recs:
        assert set(r) <= FIELDS | {"at", "event"}
        assert spec.patient_name.split("^")[0] not in json.dumps(r) and spec.patient_id not in json.dumps(r)

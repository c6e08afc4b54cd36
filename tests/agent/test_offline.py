"""`pacs-triage triage PATH... --json`: the offline contract other tools depend on."""

from __future__ import annotations

import json
import subprocess
import sys

from dicomgen import SeriesSpec, StudySpec, postop_three_series, write_study


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "triage", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_json_lines_one_object_per_study_with_the_contract_fields(tmp_path):
    stat = postop_three_series(accession="ACC-1")
    routine = StudySpec(accession="ACC-2", patient_id="PT0002", reason="Bilan de lombalgie chronique",
                        series=[SeriesSpec("DX", "RACHIS LOMBAIRE PROFIL", 2)])
    write_study(tmp_path / "a" / "nested", stat)
    write_study(tmp_path / "b", routine)
    # any file name, and files that are not DICOM
    (tmp_path / "a" / "README.txt").write_text("not dicom")
    (tmp_path / "b" / "IM0001").write_bytes((tmp_path / "b" / "DX01_0001.dcm").read_bytes())
    (tmp_path / "b" / "DX01_0001.dcm").unlink()

    proc = run(tmp_path / "a", tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    by_acc = {r["accession_number"]: r for r in records}
    for r in records:
        for key in ("study_instance_uid", "accession_number", "priority", "flags", "postop_interval_hours",
                    "priors", "recommendations"):
            assert key in r
        assert r["priority"] in ("STAT", "URGENT", "ROUTINE")
        for flag in r["flags"]:
            assert flag["code"] and flag["rule"] and flag["evidence"], "every flag carries its evidence"
    assert by_acc["ACC-1"]["study_instance_uid"] == stat.study_uid
    assert by_acc["ACC-1"]["priority"] == "STAT"
    assert "epidural_haematoma" in {f["code"] for f in by_acc["ACC-1"]["flags"]}
    assert isinstance(by_acc["ACC-1"]["postop_interval_hours"], (int, float))
    assert by_acc["ACC-2"]["priority"] == "ROUTINE"
    assert "README.txt" in proc.stderr and "not a DICOM file" in proc.stderr
    assert "DUPONT" not in proc.stderr


def test_explain_says_why_each_flag_fired(tmp_path):
    write_study(tmp_path, postop_three_series())
    proc = run(tmp_path, "--json", "--explain")
    record = json.loads(proc.stdout)
    assert record["explain"] and any("epidural_haematoma" in line for line in record["explain"])
    human = run(tmp_path, "--explain")
    assert human.returncode == 0 and "suspected epidural_haematoma" in human.stdout and "why:" in human.stdout


def test_no_dicom_at_all_is_an_error(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    proc = run(tmp_path, "--json")
    assert proc.returncode == 1 and proc.stdout == ""


def test_offline_triage_with_priors_from_the_pacs(tmp_path, orthanc):
    """`--pacs` uses the same prior lookup: a preoperative MRI of the same patient is found."""
    pre = StudySpec(patient_id="PT-PRIORS", accession="ACC-PRE", study_date="20260915", reason="Sciatique L5",
                    study_description="IRM RACHIS LOMBAIRE", series=[SeriesSpec("MR", "SAG T2", 1)])
    for f in write_study(tmp_path / "pre", pre):
        orthanc.upload(f)
    now = postop_three_series(patient_id="PT-PRIORS", accession="ACC-NOW")
    write_study(tmp_path / "now", now)
    proc = run(tmp_path / "now", "--json", "--pacs", orthanc.node)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["priors_status"] == "ok"
    prior = next(p for p in record["priors"] if p["study_instance_uid"] == pre.study_uid)
    assert prior["role"] == "preoperative" and prior["interval_days"] < 0
    for key in ("study_date", "modalities", "description"):
        assert key in prior

"""No patient data where it does not belong: an end-to-end run (serve with its workers,
Orthanc as the PACS, DCMTK as the modality, a bad dataset quarantined), then every log
line, every metric, every quarantine sidecar and every Redis key NAME is scanned for the
patient's name, ID and birth date. (Redis values hold them by design: the worklist.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pydicom
import redis

from dicomgen import postop_three_series, write_study
from peers import dcmtk, free_port, service_ready, wait_for

NAME, FAMILY, GIVEN = "ZORGLUB^ANNABELLE", "ZORGLUB", "ANNABELLE"
PATIENT_ID, BIRTH = "PID7734215", "19371224"


def test_no_patient_data_in_logs_metrics_sidecars_or_key_names(tmp_path, redis_url, redis_client, orthanc):
    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TRIAGE_")}
    env.update(PACS_TRIAGE_STABLE_AFTER="1", PACS_TRIAGE_MIN_FREE_BYTES="0", PACS_TRIAGE_LOG_LEVEL="DEBUG")
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", data, "--port", str(port),
                             "--http-port", str(http), "--redis-url", redis_url, "--pacs", orthanc.node],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: service_ready(http, proc, log_path), timeout=30, what="serve")
        spec = postop_three_series(accession="ACC-PHI")
        spec.patient_name, spec.patient_id, spec.birth_date = NAME, PATIENT_ID, BIRTH
        files = write_study(tmp_path / "in", spec)
        # one instance with a path-like UID: quarantined, with a sidecar
        bad = tmp_path / "bad.dcm"
        ds = pydicom.dcmread(files[0])
        ds.StudyInstanceUID = "../" + PATIENT_ID
        ds.save_as(bad, enforce_file_format=True)
        try:
            dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, bad)
        except RuntimeError:
            pass
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, *files)
        wait_for(lambda: redis_client.get(f"pt:entry:{spec.study_uid}") and "delivered to pacs" in
                 log_path.read_text(errors="replace"), timeout=30, what="triaged and delivered")
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
        log.close()

    logs = log_path.read_text(errors="replace")
    sidecars = [p.read_text() for p in (data / "quarantine").rglob("*.json")]
    assert sidecars, "the bad dataset was quarantined"
    keys = [k.decode(errors="replace") for k in redis.Redis.from_url(redis_url).scan_iter("*", count=1000)]
    for where, text in (("log", logs), ("metrics", metrics), ("sidecars", "\n".join(sidecars)),
                        ("redis key names", "\n".join(keys))):
        for secret in (FAMILY, GIVEN, PATIENT_ID, BIRTH):
            assert secret not in text, f"{secret!r} found in {where}"
    assert "DEBUG" in logs or "INFO" in logs

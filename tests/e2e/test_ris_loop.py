"""End to end, issue 12's "Done when": `pacs-triage serve` with its HL7 listener. An HL7 order
received first makes a study whose header carries no text STAT; the RIS gets an XO raising
its ROUTINE order; a late order re-triages a study already triaged; a signed ORU closes the
entry and `pacs-triage report` shows the time to report per priority."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port, serve_process, service_ready, wait_for
from ris_peers import ack_code, order, result, send
from sink_peers import MllpServer

STABLE_AFTER = 1.5
SADDLE = "new saddle anaesthesia and urinary retention 1 day after L4-L5 decompression"


def cli(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def ris():
    server = MllpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, ris):
    data = tmp_path_factory.mktemp("ris") / "data"
    port, http_port, hl7_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER=str(STABLE_AFTER), PACS_TRIAGE_HL7_LISTEN_BIND="127.0.0.1")
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    with serve_process(data, data.parent / "serve.log",
                       ["--port", port, "--hl7-listen", hl7_port, "--hl7", ris.address], env,
                       http_port=http_port, ready_timeout=30):
        yield {"port": port, "http": http_port, "hl7": hl7_port, "data": data, "log": data.parent / "serve.log"}


def bare_study(accession: str) -> StudySpec:
    """No clinical text anywhere in the header, no order priority."""
    return StudySpec(accession=accession, requested_procedure="", reason="", history="",
                     series=[SeriesSpec("MR", "T2 SAG", 2)])


def entry(service, uid, closed=False):
    entries = json.loads(cli("worklist", "--json", *(["--closed"] if closed else []), "--data-dir", service["data"]))
    return next((e for e in entries if e["study_instance_uid"] == uid), None)


def test_order_then_images_then_report(service, ris, tmp_path):
    # The RIS's order first (ROUTINE, the clinical question only in OBR-31), then the images.
    ack = send(service["hl7"], order("NW", "ACC-E2E-1", patient_id="PT0001", issuer="HOSP-A", priority="R",
                                     reason=SADDLE))
    assert ack_code(ack) == "AA"
    spec = bare_study("ACC-E2E-1")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "a", spec))
    e = wait_for(lambda: entry(service, spec.study_uid), timeout=STABLE_AFTER + 30, what="worklist entry")
    assert e["priority"] == "STAT" and e["order_priority"] == "ROUTINE" and e["order_source"] == "HL7"
    assert any(ev["source"] == "HL7 order OBR-31" for f in e["flags"] for ev in f["evidence"])

    # The RIS hears an XO raising its order to S (never a lower one).
    xo = wait_for(lambda: [m for m in ris.messages if str(m["ORC.2"]) == "ACC-E2E-1"], timeout=20, what="HL7 XO")
    assert str(xo[-1]["ORC.1"]) == "XO" and str(xo[-1]["TQ1.9"]) == "S"

    # The report is signed: the entry leaves the worklist and the report shows it.
    assert ack_code(send(service["hl7"], result("ACC-E2E-1", patient_id="PT0001", issuer="HOSP-A"))) == "AA"
    assert entry(service, spec.study_uid) is None
    closed = entry(service, spec.study_uid, closed=True)
    assert closed["closed_by"] == "HL7 ORU^R01 result status F" and closed["closed_at"] >= closed["last_received"]
    report = cli("report", "--since", "7d", "--data-dir", service["data"])
    stat = next(line for line in report.splitlines() if line.startswith("STAT "))
    assert stat.split()[1] == "1"
    assert "raised by triage above their order's priority: 1 of 1 study" in report
    with urllib.request.urlopen(f"http://127.0.0.1:{service['http']}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'pacs_triage_time_to_report_seconds_count{order_priority="ROUTINE",priority="STAT"} 1.0' in metrics
    assert "PT0001" not in metrics and "ACC-E2E" not in metrics


def test_late_stat_order_retriages_the_study(service, ris, tmp_path):
    spec = bare_study("ACC-E2E-2")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "b", spec))
    first = wait_for(lambda: entry(service, spec.study_uid), timeout=STABLE_AFTER + 30, what="worklist entry")
    assert first["priority"] == "ROUTINE" and first["order_priority"] is None
    ack = send(service["hl7"], order("NW", "ACC-E2E-2", patient_id="PT0001", issuer="HOSP-A", priority="S"))
    assert ack_code(ack) == "AA"
    again = wait_for(lambda: (lambda e: e if e and e["revision"] > first["revision"] else None)(
        entry(service, spec.study_uid)), timeout=30, what="re-triage after the order")
    assert again["priority"] == "STAT" and again["order_priority"] == "STAT"
    # A study whose header was triaged ROUTINE got no XO lowering anything, and STAT from the order
    # itself is not above the order: notes only.
    sent = [m for m in ris.messages if str(m["ORC.2"]) == "ACC-E2E-2"]
    assert all(str(m["ORC.1"]) == "SC" for m in sent)


def test_no_patient_data_in_the_log_the_audit_or_redis_key_names(service):
    """Runs last in this module: everything above went through the listener."""
    import redis as redis_lib

    from core.redis_server import discover

    log = service["log"].read_text(errors="replace")
    audit = "".join(p.read_text() for p in (service["data"] / "audit").rglob("*.jsonl"))
    assert "order_received" in audit and '"event":"closed"' in audit
    names = [k.decode() for k in redis_lib.Redis.from_url(discover(service["data"] / "redis")).scan_iter("pt:*")]
    assert any(n.startswith("pt:order:") for n in names)
    for text in (log, audit, "\n".join(names)):
        for forbidden in ("PT0001", "DUPONT", "19610412", "HOSP-A", "ACC-E2E", "saddle"):
            assert forbidden not in text

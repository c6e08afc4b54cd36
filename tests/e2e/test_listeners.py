"""`serve --listeners N`: N DICOM listener processes on one port, one store, one Redis.

Sixteen senders at once: the connections are spread over both processes (balanced dispatch,
the default; or the kernel's SO_REUSEPORT hash), every instance is stored and indexed once, and
each study is triaged once onto the worklist. Each process receives into its own
incoming/<host>-<pid>/. Under balanced dispatch, six associations held open at once over three
processes are exactly two per process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port, serve_process, service_ready, wait_for

pytestmark = pytest.mark.timeout(240)
SENDERS = 16


def counter(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_two_listener_processes_share_the_port_and_the_store(tmp_path):
    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER="1")
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    log_path = tmp_path / "serve.log"
    with serve_process(data, log_path, ["--listeners", "2", "--port", port], env, http_port=http,
                       ready_timeout=60, stop_timeout=60):
        # the listener process serves its own /metrics on a loopback port it writes down
        child_port = wait_for(lambda: [int(p.read_text()) for p in (data / "run").glob("listener-*.http")]
                              if (data / "run").exists() else None, timeout=60, what="listener process")[0]
        wait_for(lambda: service_ready(child_port), timeout=60, what="listener process /readyz")
        studies = []
        for n in range(SENDERS):
            spec = StudySpec(accession=f"ACC-L{n}", patient_id=f"PL{n}",
                             series=[SeriesSpec("DX", "RACHIS LOMBAIRE FACE", 3)])
            studies.append((spec, write_study(tmp_path / f"s{n}", spec)))
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(lambda s: dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, *s[1]), studies))

        # serve's /metrics counts both processes; the child's own /metrics its share
        total, child = (counter(h, "pacs_triage_associations_total") for h in (http, child_port))
        assert total == SENDERS
        assert 0 < child < SENDERS, f"one process took every association: {child} of {total} in the child"
        assert counter(http, 'pacs_triage_instances_received_total{status="stored"}') == 3 * SENDERS

        def entries():
            out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--data-dir", str(data)],
                                 capture_output=True, text=True, timeout=60, env=env)
            got = json.loads(out.stdout) if out.returncode == 0 else []
            return got if len(got) >= SENDERS else None

        got = wait_for(entries, timeout=90, interval=1, what="every study on the worklist")
        assert sorted(e["accession_number"] for e in got) == sorted(s.accession for s, _ in studies)
        assert all(e["instance_count"] == 3 for e in got)
        assert len(list((data / "studies").glob("*/*/*.dcm"))) == 3 * SENDERS
        own = [p.name for p in (data / "incoming").iterdir() if p.is_dir()]
        assert len(own) == 2, f"one incoming folder per listener process: {own}"
    assert "exited with" not in log_path.read_text(), "a listener process died"


@pytest.mark.parametrize("dispatch", ["balanced", "reuseport"])
def test_two_listener_processes_either_dispatch(tmp_path, dispatch):
    """Both ways of spreading connections store every instance once (the default is balanced)."""
    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_LISTENER_DISPATCH=dispatch)
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    with serve_process(data, tmp_path / "serve.log", ["--listeners", "2", "--port", port, "--no-workers"], env,
                       http_port=http, ready_timeout=60, stop_timeout=60):
        wait_for(lambda: list((data / "run").glob("listener-*.http")) if (data / "run").exists() else None,
                 timeout=60, what="listener process")
        spec = StudySpec(accession="ACC-D", patient_id="PD", series=[SeriesSpec("DX", "RACHIS FACE", 2)])
        files = write_study(tmp_path / "d", spec)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, *files), range(8)))
        wait_for(lambda: counter(http, "pacs_triage_associations_total") == 8, timeout=30, what="8 associations")
        assert counter(http, 'pacs_triage_instances_received_total{status="duplicate"}') + counter(
            http, 'pacs_triage_instances_received_total{status="stored"}') == 16
        assert len(list((data / "studies").glob("*/*/*.dcm"))) == 2


def test_balanced_dispatch_gives_each_process_its_share_of_associations_held_open(tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = dict(os.environ)
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    log_path = tmp_path / "serve.log"
    with serve_process(data, log_path, ["--listeners", "3", "--port", port, "--no-workers"], env,
                       http_port=http, ready_timeout=60, stop_timeout=60):
        children = wait_for(lambda: [int(p.read_text()) for p in (data / "run").glob("listener-*.http")
                                     if p.read_text()] if (data / "run").exists() else None, timeout=60,
                            what="listener processes")
        wait_for(lambda: len(children) == 2 or children.extend(
            int(p.read_text()) for p in (data / "run").glob("listener-*.http")
            if p.read_text() and int(p.read_text()) not in children), timeout=60, what="two listener children")
        for h in children:
            wait_for(lambda: service_ready(h), timeout=60, what="listener process /readyz")
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        held = []
        try:
            for _ in range(6):  # one after the other, each kept open: the counts decide, not chance
                assoc = ae.associate("127.0.0.1", port, ae_title="PACSTRIAGE")
                assert assoc.is_established
                held.append(assoc)
            own = counter(http, "pacs_triage_associations_total")  # merged: every process
            shares = [counter(h, "pacs_triage_associations_total") for h in children]
            assert own == 6
            assert shares == [2, 2], f"each listener child holds two of six associations: {shares}"
        finally:
            for assoc in held:
                assoc.release()
    assert "exited with" not in log_path.read_text()


def test_worker_processes_share_the_triage_and_one_that_dies_is_started_again(tmp_path):
    """`serve --worker-processes 2 --workers 1`: serve and one worker child, one thread each. Both
    take triages from the queue (an image analysis in one never holds up the other's), serve's
    /metrics counts both, and a worker child killed with SIGKILL is started again and triages."""
    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER="1")
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--listeners", "1", "--worker-processes", "2",
                             "--workers", "1", "--data-dir", str(data), "--port", str(port), "--http-port", str(http)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)

    def worker_child():
        files = list((data / "run").glob("worker-*.http")) if (data / "run").exists() else []
        return [(int(p.name.split("-")[1].split(".")[0]), int(p.read_text())) for p in files if p.read_text()]

    def send(n0: int, count: int):
        studies = []
        for n in range(n0, n0 + count):
            spec = StudySpec(accession=f"ACC-W{n}", patient_id=f"PW{n}", series=[SeriesSpec("DX", "RACHIS FACE", 2)])
            studies.append((spec, write_study(tmp_path / f"w{n}", spec)))
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda s: dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, *s[1]), studies))
        return studies

    def triaged(h: int) -> float:
        return counter(h, "pacs_triage_triage_duration_seconds_count")

    try:
        wait_for(lambda: service_ready(http, proc, log_path), timeout=60, what="serve /readyz")
        [(pid, child_http)] = wait_for(worker_child, timeout=60, what="worker process")
        wait_for(lambda: service_ready(child_http), timeout=60, what="worker process /readyz")
        send(0, 12)
        wait_for(lambda: triaged(http) >= 12, timeout=90, interval=0.5, what="12 studies triaged")
        assert triaged(http) == 12
        assert 0 < triaged(child_http) < 12, f"the worker child triaged {triaged(child_http)} of 12"

        os.kill(pid, signal.SIGKILL)
        [(pid2, child_http2)] = wait_for(lambda: [w for w in worker_child() if w[0] != pid and
                                                  service_ready(w[1])], timeout=60, what="worker process again")
        assert pid2 != pid
        later = {spec.accession for spec, _ in send(12, 4)}

        def on_worklist():
            out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--data-dir", str(data)],
                                 capture_output=True, text=True, timeout=60, env=env)
            got = {e["accession_number"] for e in json.loads(out.stdout)} if out.returncode == 0 else set()
            return later <= got

        # (serve's counters lose the dead child's share: a counter reset, as Prometheus expects)
        wait_for(on_worklist, timeout=90, interval=1, what="4 more studies triaged")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert "worker process 1 exited with" in log_path.read_text()

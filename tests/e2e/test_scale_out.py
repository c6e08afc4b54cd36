"""Scaled mode: a listener without workers and a separate `pacs-triage worker`, over one Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from dicomgen import postop_three_series, write_study
from peers import dcmtk, free_port, service_ready, wait_for


def start(*args, log):
    return subprocess.Popen([sys.executable, "-m", "agent.cli", *map(str, args)], stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture
def cluster(tmp_path, redis_url, redis_client):
    data = tmp_path / "shared-data"
    port, listener_http, worker_http = free_port(), free_port(), free_port()
    log = open(tmp_path / "cluster.log", "wb")
    procs = [
        start("serve", "--no-workers", "--redis-url", redis_url, "--data-dir", data, "--port", port,
              "--http-port", listener_http, "--stable-after", 1, log=log),
        start("worker", "--redis-url", redis_url, "--data-dir", data, "--http-port", worker_http,
              "--workers", 2, log=log),
    ]
    try:
        wait_for(lambda: service_ready(listener_http) and service_ready(worker_http), timeout=30, what="listener and worker")
        yield {"port": port, "data": data, "redis_url": redis_url, "log": tmp_path / "cluster.log"}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_listener_and_separate_worker_process(cluster, tmp_path):
    spec = postop_three_series(accession="ACC-SCALE")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", cluster["port"], *write_study(tmp_path / "s", spec))

    def entry():
        out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--redis-url",
                              cluster["redis_url"]], capture_output=True, text=True, timeout=30).stdout
        return next((e for e in json.loads(out) if e["study_instance_uid"] == spec.study_uid), None)

    found = wait_for(entry, timeout=20, what="entry triaged by the separate worker")
    assert found["priority"] == "STAT"
    log = cluster["log"].read_text()
    assert "triaged: STAT" in log

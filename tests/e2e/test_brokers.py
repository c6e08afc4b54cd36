"""The same end-to-end path on both message brokers: Redis (default) and RabbitMQ (`--broker amqp://…`).

`pacs-triage serve --no-workers` receives a study from DCMTK storescu and queues its triage on the
broker; a separate `pacs-triage worker` process takes it from there, triages it and pushes the SR
to a real Orthanc. With RabbitMQ the triage and delivery messages go through RabbitMQ (on a vhost
of this test alone), with Redis still holding the index and the worklist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

import rabbitmq_peer
from dicomgen import postop_three_series, write_study
from peers import cli_process, dcmtk, free_port, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request, tmp_path_factory):
    if request.param == "redis":
        yield None  # the default: the embedded Redis
        return
    why = rabbitmq_peer.available()
    if why:
        pytest.skip(f"RabbitMQ broker test skipped: {why}")
    server = rabbitmq_peer.RabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    yield server.url
    server.stop()


def metrics(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_study_triaged_and_pushed_through_the_broker(broker_url, orthanc, tmp_path):
    data = tmp_path / "data"
    port, serve_http, worker_http = free_port(), free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER="1")
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    env.pop("PACS_TRIAGE_BROKER", None)
    common = ["--data-dir", data, "--pacs", orthanc.node]
    if broker_url:
        common += ["--broker", broker_url]
    with cli_process(["serve", "--no-workers", "--port", port, "--http-port", serve_http, *common],
                     tmp_path / "serve.log", env, http_port=serve_http, ready_timeout=60), \
            cli_process(["worker", "--http-port", worker_http, *common], tmp_path / "worker.log", env,
                        http_port=worker_http, ready_timeout=60):
        spec = postop_three_series(accession="ACC-BROKER")
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", port, *write_study(tmp_path / "s", spec))
        srs = wait_for(lambda: [i for i in orthanc.find_instances(StudyInstanceUID=spec.study_uid)
                                if orthanc.get(f"/series/{i['ParentSeries']}")["MainDicomTags"].get(
                                    "Modality") == "SR"], timeout=60, what="SR in Orthanc")
        assert len(srs) == 1
        out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--data-dir", data],
                             capture_output=True, text=True, timeout=60, env=env)
        entry = next(e for e in json.loads(out.stdout) if e["study_instance_uid"] == spec.study_uid)
        assert entry["priority"] == "STAT"
        # the triage ran in the worker process, not in serve
        assert 'pacs_triage_sink_pushes_total{sink="pacs"} 1.0' in metrics(worker_http)
        assert 'pacs_triage_sink_pushes_total{sink="pacs"} 0.0' in metrics(serve_http)
        # the queue gauge is read from the configured broker
        assert 'pacs_triage_queue_depth{queue="triage"} 0.0' in metrics(serve_http)
    if broker_url:
        import pika

        # the messages went through RabbitMQ: dramatiq declared its queues on this vhost
        conn = pika.BlockingConnection(pika.URLParameters(broker_url))
        try:
            channel = conn.channel()
            for queue in ("triage", "sink_pacs"):
                channel.queue_declare(queue, passive=True)  # raises if RabbitMQ never saw it
        finally:
            conn.close()
        for log in ("serve.log", "worker.log"):
            assert "guest:guest" not in (tmp_path / log).read_text(), "no broker credentials in the logs"

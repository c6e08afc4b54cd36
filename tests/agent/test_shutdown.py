"""SIGTERM drains, SIGKILL leaves no orphan: `pacs-triage serve` on its embedded Redis, as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, StoragePresentationContexts

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port, service_ready, wait_for


def start(data: Path, log: Path, port: int, http: int, **env_extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TRIAGE_")}
    env.update(PACS_TRIAGE_STABLE_AFTER="1", PACS_TRIAGE_MIN_FREE_BYTES="0", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", data, "--port", str(port),
                             "--http-port", str(http)], stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)
    wait_for(lambda: service_ready(http, proc, log), timeout=30, what="serve")
    return proc


def redis_pid(data: Path) -> int:
    return int((data / "redis" / "redis.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_sigkill_of_serve_takes_its_embedded_redis_with_it(tmp_path):
    data = tmp_path / "d"
    proc = start(data, tmp_path / "serve.log", free_port(), free_port())
    pid = redis_pid(data)
    assert alive(pid)
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not alive(pid), timeout=10, what="the embedded redis-server to exit with its parent")
    port, http = free_port(), free_port()
    proc = start(data, tmp_path / "serve.log", port, http)  # restarts on the same files, one Redis
    try:
        dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", port)
        redis_procs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and alive(int(p.name))
                       and str(data).encode() in (p / "cmdline").read_bytes()]
        assert len(redis_procs) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)


def test_sigterm_lets_the_association_in_progress_finish_then_stops(tmp_path):
    data = tmp_path / "d"
    port, http = free_port(), free_port()
    proc = start(data, tmp_path / "serve.log", port, http, PACS_TRIAGE_SHUTDOWN_TIMEOUT="10")
    rpid = redis_pid(data)
    spec = StudySpec(series=[SeriesSpec("MR", "SAG T2", 10, rows=16, columns=16)])
    files = write_study(tmp_path / "in", spec)
    statuses = []

    def send():
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts[:120]
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSTRIAGE")
        for f in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            statuses.append(getattr(status, "Status", None))
            time.sleep(0.2)
        assoc.release()

    t = threading.Thread(target=send)
    t.start()
    wait_for(lambda: len(statuses) >= 2, timeout=20, what="association in progress")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", port, timeout=10)
        new_refused = False
    except RuntimeError:
        new_refused = True
    t.join(30)
    assert proc.wait(40) == 0
    assert new_refused, "no new association after SIGTERM"
    assert statuses == [0] * len(files), "the association in progress finished, every instance acknowledged"
    assert len(list((data / "studies").rglob("*.dcm"))) == len(files)
    wait_for(lambda: not alive(rpid), timeout=10, what="the embedded Redis stopped last")


def test_ctrl_c_to_the_process_group_stops_cleanly(tmp_path):
    """`make run` stopped by Ctrl-C: the terminal sends SIGINT to the whole process group. The
    embedded Redis and the listener process are in sessions of their own, so the workers stop
    consuming before Redis stops: exit code 0, no CRITICAL consumer error, no traceback."""
    data, log = tmp_path / "d", tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TRIAGE_")}
    http = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", data, "--port", str(free_port()),
                             "--http-port", str(http), "--listeners", "2"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(lambda: service_ready(http, proc, log), timeout=60, what="serve")
        wait_for(lambda: list((data / "run").glob("listener-*.http")) if (data / "run").exists() else None,
                 timeout=60, what="the listener process")
        pid = redis_pid(data)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert "stopping" in text and "Worker has been shut down" in text
    assert "CRITICAL" not in text and "Traceback" not in text, text
    assert "exited with" not in text, "the listener process died instead of stopping"
    wait_for(lambda: not alive(pid), timeout=10, what="the embedded redis-server to stop")

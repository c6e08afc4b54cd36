"""Over 1,000 generated hostile inputs against a running `pacs-triage serve`, then a good study.

The service runs as its own process (workers in-process, the test session's Redis);
pynetdicom sends the dataset cases as raw C-STORE bodies over a negotiated context, and
raw sockets carry malformed A-ASSOCIATE PDUs and garbage. Every C-STORE must get a
status (success, 0xA900 or 0xC000, never a dropped association), every rejected dataset
must be in quarantine with its sidecar, no partial file may stay in incoming/, memory
must stay bounded, and the service must then store and triage a good study.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import MRImageStorage

from dicomgen import file_with_dataset_bytes, postop_three_series, write_study
from generate import cases
from peers import dcmtk, free_port, service_ready, wait_for

ALLOWED = {0x0000, 0xA900, 0xC000}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_url):
    tmp = tmp_path_factory.mktemp("hostile")
    data = tmp / "data"
    port, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TRIAGE_")}
    env.update(PACS_TRIAGE_STABLE_AFTER="1", PACS_TRIAGE_ACSE_TIMEOUT="1", PACS_TRIAGE_PDU_TIMEOUT="1", PACS_TRIAGE_ASSOCIATION_IDLE_TIMEOUT="4",
               PACS_TRIAGE_FSYNC="false",
               PACS_TRIAGE_MIN_FREE_BYTES="0", PACS_TRIAGE_BIND="127.0.0.1")
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", data, "--port", str(port),
                             "--http-port", str(http), "--redis-url", redis_url], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    wait_for(lambda: service_ready(http, proc, tmp / "serve.log"), timeout=30, what="serve")
    yield {"port": port, "http": http, "data": data, "proc": proc, "log": tmp / "serve.log", "tmp": tmp}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Sender:
    """One SCU association that counts a C-STORE as unanswered only if no response reached the socket.

    pynetdicom's requestor has a race under load: its reactor thread can take the C-STORE-RSP off the
    DIMSE queue before `send_c_store` looks ("Received unexpected C-STORE service message"), and
    `send_c_store` then times out with no status although the service answered. Every response
    received is therefore recorded by message ID from EVT_DIMSE_RECV, and a missing status is the
    service's fault (an abort) only when no response with that ID arrived.
    """

    def __init__(self, port: int):
        self.port = port
        self.assoc = None
        self.aborts = 0
        self.scu_races = 0
        self.msg_id = 0
        self.received: dict[int, int] = {}

    def _on_dimse_recv(self, event):
        cs = event.message.command_set
        if "MessageIDBeingRespondedTo" in cs and "Status" in cs:
            self.received[int(cs.MessageIDBeingRespondedTo)] = int(cs.Status)

    def _connect(self):
        ae = AE(ae_title="HOSTILE")
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        self.assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSTRIAGE",
                                  evt_handlers=[(evt.EVT_DIMSE_RECV, self._on_dimse_recv)])
        assert self.assoc.is_established

    def send(self, path: Path) -> int | None:
        if self.assoc is None or not self.assoc.is_established:
            self._connect()
        self.msg_id = self.msg_id % 65535 + 1
        self.received.pop(self.msg_id, None)
        status = self.assoc.send_c_store(path, msg_id=self.msg_id)
        code = getattr(status, "Status", None)
        if code is None:
            code = self.received.get(self.msg_id)
            if code is None:
                self.aborts += 1
            else:
                self.scu_races += 1
            if self.assoc.is_established:
                self.assoc.abort()
            self.assoc = None
        return code

    def close(self):
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def _raw(port: int, body: bytes) -> float:
    """Send raw bytes; return how long the service took to answer or drop us."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(body)
            s.settimeout(5)
            while s.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    return time.monotonic() - started


def test_a_thousand_hostile_inputs_then_a_good_study(service, tmp_path):
    generated = cases()
    assert len(generated) >= 1000
    rss_before = rss_kb(service["proc"].pid)
    statuses: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:  # malformed association requests, 24 at a time
        raw_times = list(pool.map(lambda c: _raw(service["port"], c.body), [c for c in generated if c.raw]))
    slowest_raw = max(raw_times)
    raw_elapsed = time.monotonic() - started
    started = time.monotonic()
    stores = [(i, c) for i, c in enumerate(generated) if not c.raw]
    lanes = 6  # associations in parallel (pynetdicom as the SCU is slow per message)
    senders = [Sender(service["port"]) for _ in range(lanes)]
    _config.STORE_SEND_CHUNKED_DATASET = True

    def lane(n):
        out = []
        for i, case in stores[n::lanes]:
            out.append((case.kind, senders[n].send(file_with_dataset_bytes(tmp_path / f"c{i}.dcm", case.body))))
        senders[n].close()
        return out

    try:
        with ThreadPoolExecutor(lanes) as pool:
            results = [r for part in pool.map(lane, range(lanes)) for r in part]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    for kind, code in results:
        statuses[code] += 1
        by_kind.setdefault(kind, Counter())[code] += 1
    aborts = sum(s.aborts for s in senders)
    print(f"{len(raw_times)} raw inputs in {raw_elapsed:.1f} s; {sum(statuses.values())} C-STOREs in "
          f"{time.monotonic() - started:.1f} s")
    print({k: {hex(s) if s is not None else None: n for s, n in c.items()} for k, c in by_kind.items()})
    print(f"pynetdicom requestor races (answered, status taken from the received response): "
          f"{sum(s.scu_races for s in senders)}")
    assert aborts == 0, "every C-STORE got a status"
    assert set(statuses) <= ALLOWED, statuses
    assert by_kind["bad_uid"][0x0000] == 0, "an invalid UID is never stored"
    assert by_kind["huge_length"][0x0000] == 0 and by_kind["bad_length"][0x0000] == 0, \
        "an element claiming more bytes than were sent is never acknowledged"
    assert by_kind["truncated"][0x0000] <= 20, "truncation is caught unless it ends on an element boundary"
    assert slowest_raw < 6, "malformed association requests are answered or dropped quickly"

    data = service["data"]
    rejected = sum(n for s, n in statuses.items() if s != 0x0000)
    sidecars = list((data / "quarantine").rglob("*.json"))
    assert len(sidecars) == rejected and len(list((data / "quarantine").rglob("*.dcm"))) == rejected
    for sc in sidecars[:50]:
        assert set(json.loads(sc.read_text())) == {"reason", "detail", "received"}
    assert not [p for p in (data / "incoming").rglob("*") if p.is_file()], "no partial file left"
    stored = {p.parent.parent.name for p in (data / "studies").glob("*/*/*.dcm")}
    assert all(".." not in u and "/" not in u for u in stored)
    rss_after = rss_kb(service["proc"].pid)
    print(f"serve RSS {rss_before // 1024} MB before, {rss_after // 1024} MB after the hostile inputs")
    assert rss_after - rss_before < 200 * 1024, f"RSS grew {rss_before} -> {rss_after} kB"

    # still serving, and a good study is triaged
    assert service_ready(service["http"])
    dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"])
    spec = postop_three_series(accession="ACC-AFTER-HOSTILE")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "good", spec))

    def triaged():
        out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--data-dir", data,
                              "--redis-url", os.environ.get("REDIS_URL") or service_redis(service)],
                             capture_output=True, text=True, timeout=30).stdout
        return next((e for e in json.loads(out or "[]") if e["study_instance_uid"] == spec.study_uid), None)

    try:
        # 90 s: the CI run of session 8, on a machine twice as slow as usual, did not see it within 30 s
        entry = wait_for(triaged, timeout=90, what="the good study triaged")
    except TimeoutError:
        print("".join(service["log"].read_text(errors="replace").splitlines(keepends=True)[-60:]))
        raise
    assert entry["priority"] == "STAT"


def service_redis(service) -> str:
    cmd = Path(f"/proc/{service['proc'].pid}/cmdline").read_bytes().split(b"\0")
    return cmd[cmd.index(b"--redis-url") + 1].decode()

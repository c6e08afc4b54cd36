"""Exposure: what a peer on the network can make the listener and the HTTP endpoints hold.

The listener runs in this process against a real Redis; DCMTK is the real modality.
Short limits are configured so each case takes about a second.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest

from core.config import Config
from agent.http import HttpServer
from core.index import StudyIndex
from agent.listener import Listener
from agent.store import StudyStore
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port


def sample(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def make_listener(tmp_path, redis_client):
    started = []

    def make(**options):
        options.setdefault("min_free_bytes", 0)
        cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1", **options)
        lst = Listener(cfg, StudyStore(cfg.data_dir), StudyIndex(redis_client))
        lst.start()
        started.append(lst)
        return lst

    yield make
    for lst in started:
        lst.stop()


def echo(port: int, aet: str = "MODALITY", timeout: float = 10) -> bool:
    try:
        dcmtk("echoscu", "-aet", aet, "-aec", "PACSTRIAGE", "-to", "5", "-ta", "5", "-td", "5",
              "127.0.0.1", str(port), timeout=timeout)
        return True
    except Exception:
        return False


def _closed(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_huge_declared_association_request_is_refused_before_it_is_read(make_listener):
    lst = make_listener()
    sock = socket.create_connection(("127.0.0.1", lst.port))
    sock.sendall(struct.pack(">BBL", 0x01, 0, 400 * 1024 * 1024) + b"\x00" * 1024)
    started = time.monotonic()
    assert _closed(sock, 5), "dropped at once, not after reading 400 MB"
    assert time.monotonic() - started < 3
    sock.close()
    assert echo(lst.port)


def test_slow_loris_peers_are_dropped_and_real_senders_get_through(make_listener, tmp_path):
    lst = make_listener(max_associations=8, acse_timeout=1.0, pdu_timeout=1.0)
    stop = threading.Event()
    socks = []
    for _ in range(12):  # more than the slots
        try:
            socks.append(socket.create_connection(("127.0.0.1", lst.port), timeout=2))
        except OSError:
            pass

    def trickle():
        header = struct.pack(">BBL", 0x01, 0, 200)
        i = 0
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(header[i % 6:i % 6 + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(0.3)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(1.5)  # the trickling peers are past their deadline
        started = time.monotonic()
        files = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 2)]))
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port, *files, timeout=20)
        assert time.monotonic() - started < 5
        assert lst.active_associations <= 2
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_idle_connection_is_dropped(make_listener):
    lst = make_listener(acse_timeout=0.5)
    sock = socket.create_connection(("127.0.0.1", lst.port))
    assert _closed(sock, 4), "a peer that never sends an association request is dropped"
    sock.close()


def test_calling_ae_allow_list(make_listener):
    lst = make_listener(allowed_calling_aets=["CT01"])
    assert echo(lst.port, aet="CT01")
    assert not echo(lst.port, aet="INTRUDER")


def test_network_allow_list(make_listener):
    refused = sample("pacs_triage_associations_rejected_total")
    lst = make_listener(allowed_networks=["10.0.0.0/8"])
    assert not echo(lst.port)
    assert sample("pacs_triage_associations_rejected_total") > refused
    ok = make_listener(allowed_networks=["127.0.0.0/8"])
    assert echo(ok.port)


def test_http_is_loopback_by_default_with_timeouts_and_bounded_threads():
    assert Config().http_bind == "127.0.0.1"
    server = HttpServer("127.0.0.1", free_port(), timeout=0.5, max_clients=4)
    server.start()
    idle = []
    try:
        for _ in range(30):  # idle sockets: each is dropped after the timeout, none blocks /healthz
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        time.sleep(1.0)
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - started < 2
        assert threading.active_count() < 40
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_per_association_byte_limit_drops_the_association_and_keeps_serving(make_listener, tmp_path):
    lst = make_listener(max_association_bytes=60_000)
    files = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 8, rows=64, columns=64)]))
    with pytest.raises(RuntimeError):  # ~8 KB each plus headers: cut off after the limit
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port, *files, timeout=20)
    stored = len(list(lst.store.studies.rglob("*.dcm")))
    assert 0 < stored < len(files)
    assert echo(lst.port), "the next association is served"


def test_when_slow_peers_hold_every_slot_a_real_sender_gets_one_at_once(make_listener):
    """acse_timeout is long here: the slot is made by dropping the longest-waiting peer."""
    lst = make_listener(max_associations=6, acse_timeout=60.0, pdu_timeout=60.0)
    socks = [socket.create_connection(("127.0.0.1", lst.port), timeout=2) for _ in range(6)]
    for s in socks:
        s.send(b"\x01")  # started a PDU, never finishes it
    deadline = time.monotonic() + 10
    while lst.active_associations < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # under load the server may take a while to start six threads
    assert lst.active_associations == 6
    time.sleep(1.3)
    started = time.monotonic()
    assert echo(lst.port), "the real sender is served"
    assert time.monotonic() - started < 3
    for s in socks:
        s.close()

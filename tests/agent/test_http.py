"""The HTTP server's bound on concurrent requests: the next request gets 503 at once, not a wait."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from agent.http import HttpServer


def test_requests_beyond_max_clients_get_503_at_once_and_the_server_recovers():
    release, entered = threading.Event(), threading.Event()

    def slow_scrape():
        entered.set()
        release.wait(10)

    server = HttpServer("127.0.0.1", 0, before_scrape=slow_scrape, max_clients=1)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        held = threading.Thread(target=lambda: urllib.request.urlopen(base + "/metrics", timeout=15).read())
        held.start()
        assert entered.wait(5)
        started = time.monotonic()
        try:
            urllib.request.urlopen(base + "/healthz", timeout=5)
            raise AssertionError("a second request was served beyond max_clients=1")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and e.headers.get("Retry-After") == "1"
        assert time.monotonic() - started < 1.0
        release.set()
        held.join(10)
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        release.set()
        server.stop()

"""HTTP endpoints: /metrics (Prometheus), /healthz (alive), /readyz (ready to take studies)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class HttpServer:
    """Serves the endpoints in a thread. `checks` name -> callable returning (ok, detail)."""

    def __init__(self, bind: str, port: int, checks: dict[str, Check] | None = None,
                 before_scrape: Callable[[], None] | None = None, timeout: float = 10.0,
                 max_clients: int = 16, exposition: Callable[[], bytes] | None = None):
        self.checks = checks or {}
        self.before_scrape = before_scrape
        self.exposition = exposition or (lambda: generate_latest(REGISTRY))
        outer = self
        outer_timeout = timeout
        self._scrape_lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            timeout = outer_timeout  # a client that sends nothing is dropped, not held

            def do_GET(self):  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    if outer.before_scrape:
                        try:
                            with outer._scrape_lock:  # one refresh at a time, however many scrapers
                                outer.before_scrape()
                        except Exception as exc:
                            log.warning("metrics refresh failed: %s", type(exc).__name__)
                    self._send(200, outer.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    results = {}
                    for name, check in outer.checks.items():
                        try:
                            ok, detail = check()
                        except Exception as exc:
                            ok, detail = False, type(exc).__name__
                        results[name] = {"ok": ok, "detail": detail}
                    ready = all(r["ok"] for r in results.values())
                    body = json.dumps({"ready": ready, "checks": results}).encode()
                    self._send(200 if ready else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # access logs stay out of the service log
                pass

        self.httpd = BoundedHTTPServer((bind, port), Handler, max_clients=max_clients)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self.thread.start()
        log.info("HTTP endpoints on port %d", self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per request, but at most `max_clients` at once; the others get 503 at once."""

    daemon_threads = True
    request_queue_size = 128  # accepted quickly, then served or answered 503

    def __init__(self, address, handler, max_clients: int = 16):
        self._slots = threading.BoundedSemaphore(max(1, max_clients))
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

"""HTTP endpoints on one Starlette + uvicorn server: /metrics (Prometheus), /healthz (alive),
/readyz (ready to take studies) and, in `serve`, the triage console under /console.

The server runs in its own thread (its own asyncio loop), so it never blocks reception or
triage. Limits: a client has `timeout` seconds to send a request (an idle connection is
closed, also before its first request), and at most `max_clients` requests are handled at
once — the others are answered 503 at once (the console's live-update streams have their
own cap, see agent.console).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # no start-up banner in the service log

Check = Callable[[], tuple[bool, str]]


class BoundedRequests:
    """ASGI middleware: at most `limit` requests at once, the next ones get 503 + Retry-After.

    Paths under `exempt` (long-lived event streams) are not counted: they hold no thread."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...] = ()):
        self.app = app
        self.limit = max(1, limit)
        self.exempt = exempt
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-length", b"0"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": b""})
            return
        self.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _idle_protocol(timeout: float):
    """uvicorn's h11 protocol, but a connection that sends nothing is closed after `timeout`
    (uvicorn only times out idle keep-alive connections, not fresh ones)."""

    class IdleTimeoutH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(timeout, self.timeout_keep_alive_handler)

    return IdleTimeoutH11


class _QuietServer(uvicorn.Server):
    """uvicorn's server with a 1 s housekeeping tick instead of 0.1 s (its Date header is still
    renewed every second), woken at once by `wake()` to stop: with three processes serving
    /metrics, uvicorn's ticks were a third of the idle service's CPU."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick renews the Date header when counter % 10 == 0
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop has closed
                pass


class HttpServer:
    """Serves the endpoints in a thread. `checks` name -> callable returning (ok, detail).

    `console` (optional) is an agent.console.Console whose routes are mounted at /console."""

    def __init__(self, bind: str, port: int, checks: dict[str, Check] | None = None,
                 before_scrape: Callable[[], None] | None = None, timeout: float = 10.0,
                 max_clients: int = 16, console=None, exposition: Callable[[], bytes] | None = None):
        self.checks = checks or {}
        self.before_scrape = before_scrape
        self.console = console
        self.exposition = exposition or (lambda: generate_latest(REGISTRY))
        self._scrape_lock = threading.Lock()
        routes = [Route("/metrics", self._metrics), Route("/healthz", self._healthz),
                  Route("/readyz", self._readyz)]
        if console is not None:
            routes += [Route("/", lambda r: RedirectResponse("/console/", 303)), Mount("/console", app=console.app)]
        app = Starlette(routes=routes)
        app.add_exception_handler(404, lambda r, e: PlainTextResponse("not found\n", 404))
        self.app = BoundedRequests(app, max_clients, exempt=("/console/events",))
        # Bound here (not in the thread) so a busy port fails at construction and port 0 is known.
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        config = uvicorn.Config(self.app, http=_idle_protocol(timeout), lifespan="off", log_config=None,
                                access_log=False, timeout_keep_alive=max(1, int(timeout)),
                                limit_concurrency=max(64, max_clients * 8), ws="none",
                                timeout_graceful_shutdown=2)
        self.server = _QuietServer(config)
        self.thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    # --- endpoints (sync: Starlette runs them in its thread pool, bounded by BoundedRequests)
    def _metrics(self, request: Request) -> Response:
        if self.before_scrape:
            try:
                with self._scrape_lock:  # one refresh at a time, however many scrapers
                    self.before_scrape()
            except Exception as exc:
                log.warning("metrics refresh failed: %s", type(exc).__name__)
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def _readyz(self, request: Request) -> Response:
        results = {}
        for name, check in self.checks.items():
            try:
                ok, detail = check()
            except Exception as exc:
                ok, detail = False, type(exc).__name__
            results[name] = {"ok": ok, "detail": detail}
        ready = all(r["ok"] for r in results.values())
        return Response(json.dumps({"ready": ready, "checks": results}), status_code=200 if ready else 503,
                        media_type="application/json")

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self.thread.start()
        log.info("HTTP endpoints on port %d", self.port)

    def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
        self.server.should_exit = True
        self.server.wake()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        try:
            self.sock.close()
        except OSError:
            pass

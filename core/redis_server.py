"""A local Redis server managed by `pacs-triage serve` when no Redis URL is configured.

It is a real redis-server with its persistence (append-only file) in the data
directory, reachable on a Unix socket there, so other local commands
(`pacs-triage worklist`, `pacs-triage worker`) find it without configuration.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from core.processes import stop_process

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class EmbeddedRedis:
    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 15.0) -> str:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: run `make run`, or configure --redis-url")
        self.directory.mkdir(parents=True, exist_ok=True)
        sock = self.directory / SOCKET_NAME
        args = [binary, "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--logfile", str(self.directory / "redis.log")]
        if len(str(sock)) <= MAX_SOCKET_PATH:
            sock.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port)]
            self.url = f"redis://127.0.0.1:{port}/0"
            (self.directory / "redis.url").write_text(self.url)
        self._stop_orphan()
        args += ["--pidfile", str(self.directory / "redis.pid")]
        # Dies with us: the kernel sends it SIGTERM if this process dies, even by SIGKILL. Its own
        # session: a signal to our process group (Ctrl-C in a terminal, `timeout`) reaches us only,
        # and `stop` ends it after the workers stopped consuming from it.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: see {self.directory}/redis.log")
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer in time")
            time.sleep(0.05)
        log.info("started the embedded Redis in %s", self.directory)
        return self.url

    def _stop_orphan(self) -> None:
        """A redis-server left on our files by an earlier run (it must not run twice on them)."""
        pidfile = self.directory / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline or str(self.directory).encode() not in cmdline:
            return
        log.warning("stopping a redis-server left running on %s by an earlier run", self.directory)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)  # SIGTERM: redis saves the AOF
        self.proc = None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def discover(directory: Path) -> str | None:
    """The URL of an embedded Redis running in `directory`, if any."""
    directory = Path(directory)
    sock = directory / SOCKET_NAME
    if sock.exists():
        return f"unix://{sock.resolve()}"
    url_file = directory / "redis.url"
    return url_file.read_text().strip() if url_file.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

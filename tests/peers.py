"""Real peers for the tests: Redis, Orthanc (Debian's package) and DCMTK tools.

Nothing here is a mock: each helper starts the real program on loopback ports
in a temporary directory and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from core.processes import stop_process


#: Test servers take ports below Linux's ephemeral range (32768-60999): a port the kernel handed out for a
#: free-port probe can be taken by any outgoing connection (to Redis, RabbitMQ…) before the server binds it.
_PORT_LOW, _PORT_HIGH = 20000, 32000
_issued: set[int] = set()
_next_port = _PORT_LOW + (os.getpid() * 7919) % (_PORT_HIGH - _PORT_LOW)


def free_port() -> int:
    """A loopback port nobody listens on, outside the ephemeral range, never the same twice in this process."""
    global _next_port
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port, _next_port = _next_port, _PORT_LOW + (_next_port + 1 - _PORT_LOW) % (_PORT_HIGH - _PORT_LOW)
        if port in _issued:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _issued.add(port)
        return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


def stop_processes(procs) -> None:
    """Terminate every process still running, then wait for each (10 s, then kill)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        raise RuntimeError(f"{binary} is not installed: run `make test`, which installs it")
    return path


class RedisServer:
    """A throw-away redis-server on a free loopback port; with `aof`, persistent as shipped
    (deploy/compose, systemd/redis.md: append-only file, appendfsync everysec) and restartable
    on the same port and file."""

    def __init__(self, workdir: Path, aof: bool = False):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.aof = aof
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _ping(self.client()), what="redis-server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


class Orthanc:
    """Debian's Orthanc as the PACS, on free loopback ports, checked over REST."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: dict | None = None, **options):
        self.workdir = Path(workdir)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}
        self.options = options
        self.proc: subprocess.Popen | None = None

    @property
    def node(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict:
        cfg = {
            "Name": "pacs-triage-test",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "UnknownSopClassAccepted": True,
            "OverwriteInstances": True,
            "StableAge": 1,
            "Plugins": [],
            "DicomModalities": self.modalities,
        }
        cfg.update(self.options)
        return cfg

    def start(self) -> "Orthanc":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        self.log = open(self.workdir / "orthanc.log", "wb")
        self.proc = subprocess.Popen([require("Orthanc"), str(cfg_path)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._alive, timeout=30, what="Orthanc REST API")
        return self

    def _alive(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited: see {self.workdir / 'orthanc.log'}")
        try:
            self.get("/system")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self.proc = None
            self.log.close()

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes | dict, content_type: str = "application/dicom"):
        if isinstance(data, dict):
            data, content_type = json.dumps(data).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def upload(self, path: Path) -> dict:
        """Store one DICOM file through the REST API."""
        return self.post("/instances", Path(path).read_bytes())

    def find_instances(self, **query) -> list[dict]:
        """Instances matching DICOM tags, e.g. find_instances(SOPInstanceUID=...)."""
        return self.post("/tools/find", {"Level": "Instance", "Query": query, "Expand": True})

    def instance_tags(self, orthanc_id: str) -> dict:
        return self.get(f"/instances/{orthanc_id}/simplified-tags")


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a DCMTK tool (storescu, echoscu, findscu); raise with its output if it fails."""
    proc = subprocess.run([require(tool), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def service_ready(http_port: int, proc: subprocess.Popen | None = None, log: Path | None = None) -> bool:
    """True once a pacs-triage process answers 200 on /readyz; raises if it exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"pacs-triage exited {proc.returncode}: {Path(log).read_text() if log else ''}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def cli_process(args: list, log_path: Path, env: dict[str, str], *, http_port: int,
                ready_timeout: float = 40, stop_timeout: float = 40):
    """`pacs-triage ARGS...` (serve, worker) with its output in LOG_PATH, ready (/readyz on HTTP_PORT)
    on entry, SIGTERM (then SIGKILL after STOP_TIMEOUT) on exit; yields the process."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *map(str, args)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: service_ready(http_port, proc, log_path), timeout=ready_timeout,
                 what=f"pacs-triage {args[0]} /readyz")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()


def serve_process(data: Path, log_path: Path, args: list, env: dict[str, str], *,
                  http_port: int, ready_timeout: float = 40, stop_timeout: float = 40):
    """`pacs-triage serve --data-dir DATA --http-port HTTP_PORT ARGS...` as `cli_process`."""
    return cli_process(["serve", "--data-dir", data, "--http-port", http_port, *args], log_path, env,
                       http_port=http_port, ready_timeout=ready_timeout, stop_timeout=stop_timeout)

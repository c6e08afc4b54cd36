"""RabbitMQ for the broker tests, on a dedicated virtual host so tests never share queues.

- A RabbitMQ answering on 127.0.0.1:5672 (this machine kind runs one): a fresh vhost is made
  with `rabbitmqctl` for the test and deleted afterwards.
- None running (or no rabbitmqctl rights), but `rabbitmq-server` installed: a private node is
  started on free ports in a temporary directory (its default vhost is then private too).
- No `rabbitmq-server` binary at all: the caller skips, saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from peers import free_port, wait_for


def _open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def _direct(name: str) -> str | None:
    """The program itself: Debian's /usr/sbin wrappers switch to the rabbitmq user (and drop
    the environment that places a private node)."""
    path = f"/usr/lib/rabbitmq/bin/{name}"
    return path if os.path.exists(path) else _binary(name)


def available() -> str | None:
    """None if a RabbitMQ can be had, else why not."""
    if _binary("rabbitmq-server") or (_open(5672) and _binary("rabbitmqctl")):
        return None
    return "rabbitmq-server is not installed (Debian package rabbitmq-server)"


class RabbitMQ:
    """`url` is an amqp:// URL on a vhost of this test alone."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.vhost: str | None = None
        self.proc: subprocess.Popen | None = None
        self.env: dict | None = None
        self.url = ""

    def start(self) -> "RabbitMQ":
        ctl = _binary("rabbitmqctl")
        if os.environ.get("PACS_TRIAGE_TEST_OWN_RABBITMQ") != "1" and _open(5672) and ctl:
            vhost = f"pacs-triage-test-{uuid.uuid4().hex[:12]}"
            ok = subprocess.run([ctl, "add_vhost", vhost], capture_output=True, text=True, timeout=60)
            if ok.returncode == 0:
                subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                               capture_output=True, text=True, timeout=60, check=True)
                self.vhost = vhost
                self.url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
                return self
        return self._start_own()

    def _start_own(self) -> "RabbitMQ":
        server = _direct("rabbitmq-server")
        if not server:
            raise RuntimeError(available())
        port, dist = free_port(), free_port()
        base = self.workdir / "rabbitmq"
        base.mkdir(parents=True, exist_ok=True)
        node = f"pt{uuid.uuid4().hex[:8]}@localhost"
        self.env = dict(os.environ, RABBITMQ_NODENAME=node, RABBITMQ_NODE_PORT=str(port),
                        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(dist),
                        RABBITMQ_MNESIA_BASE=str(base / "mnesia"), RABBITMQ_LOG_BASE=str(base / "log"),
                        RABBITMQ_PID_FILE=str(base / "rabbit.pid"), RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "plugins"),
                        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq"), HOME=str(base))
        (base / "plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text("loopback_users.guest = true\nlisteners.tcp.default = "
                                            f"{port}\n")
        self.proc = subprocess.Popen([server], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: self._amqp_ready(port), timeout=90, interval=0.5, what="a private rabbitmq-server")
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        return self

    def _amqp_ready(self, port: int) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}")
        if not _open(port):
            return False
        import pika

        try:
            pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")).close()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.vhost:
            subprocess.run([_binary("rabbitmqctl"), "delete_vhost", self.vhost], capture_output=True, timeout=60)
            self.vhost = None
        if self.proc is not None:
            ctl = _direct("rabbitmqctl")
            if ctl:
                subprocess.run([ctl, "stop"], env=self.env, capture_output=True, timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
            self.proc = None

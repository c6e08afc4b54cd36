"""A listener or worker child of `serve` stops when the process that started it is gone.

`serve` starts its children with PR_SET_PDEATHSIG (SIGTERM when it dies). That signal is armed in the child between
fork and exec, and a parent that dies before it is armed (SIGKILL while it restarts a listener child — the likely
way a fault test's `serve --no-workers` listener child of session 24's own runs was left serving 80 minutes later) or
a child started by anything else never gets it. So each child also checks its parent on its existing 2-s wait (no new
wake-up) and stops when it has changed. Here a listener child is started through a shell that exits: no death signal
is armed, as in the race.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from peers import free_port, wait_for

pytestmark = pytest.mark.timeout(120)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_listener_child_whose_parent_is_gone_stops(tmp_path, redis_url):
    data, log_path, pid_file = tmp_path / "data", tmp_path / "child.log", tmp_path / "child.pid"
    env = dict(os.environ, PACS_TRIAGE_REDIS_URL=redis_url)
    child_cmd = (f"{sys.executable} -m agent.cli serve --data-dir {data} --port {free_port()} --http-port "
                 f"{free_port()} --listener-child >{log_path} 2>&1 & echo $! >{pid_file}; sleep 4")
    shell = subprocess.Popen(["sh", "-c", child_cmd], env=env, start_new_session=True)
    pid = None
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10, what="the child's pid")
        pid = int(pid_file.read_text())
        wait_for(lambda: "listening for DICOM" in log_path.read_text(errors="replace"), timeout=60,
                 what="the listener child listening")
        assert alive(pid)
        shell.wait(20)  # the shell exits: the child is reparented
        wait_for(lambda: not alive(pid), timeout=15, what="the orphaned listener child stopped")
    finally:
        if shell.poll() is None:
            shell.kill()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)  # never leave one behind, whatever happened above
    assert "the service process that started this one is gone: stopping" in log_path.read_text(errors="replace")

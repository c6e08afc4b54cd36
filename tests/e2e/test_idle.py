"""`pacs-triage serve` with nothing to do costs (almost) nothing: no polling loops.

Measured as the CPU time (utime + stime from /proc) of the service process and of its
children (embedded redis-server, one listener and one worker process per further core) over a quiet window. Before the waits were event-driven it used
about 5 % of a core (dramatiq consumers polling Redis every 100 ms, the stability watcher
every 100 ms); the bench measures the same over 60 s (`make bench`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peers import free_port, service_ready, wait_for

WINDOW = 5.0
#: Up to this many consecutive windows are measured; the service is idle when one of them stays under the bound. A
#: polling loop costs the same in every window, so it fails all of them; what a single window on a loaded machine
#: also saw (session 14: 4.9 % once, in a clean-clone run sharing both cores, 0.5 % when run again) was the tail of
#: start-up work slowed down by the other jobs, which does not repeat.
WINDOWS = 4
#: Share of one core allowed on average over a window (service + its Redis). The issue's target is 1 % (measured here
#: 0.4-0.5 % in session 9, and over 60 s by `make bench`); the test keeps a margin for a CI machine that ran the whole
#: suite 2-3 times slower than usual (session 8).
BOUND = 0.02

pytestmark = pytest.mark.timeout(120)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_idle_service_uses_under_two_percent_of_a_core(tmp_path):
    data = tmp_path / "data"
    http_port = free_port()
    env = dict(os.environ)
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", str(data),
                                 "--port", str(free_port()), "--http-port", str(http_port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: service_ready(http_port, proc, log_path), timeout=60, what="serve /readyz")

            def children_started() -> bool:  # each listener and worker process writes down its /metrics port
                kids = [p for p in children(proc.pid) if b"redis" not in Path(f"/proc/{p}/cmdline").read_bytes()]
                return all(list((data / "run").glob(f"*-{p}.http")) for p in kids) if (data / "run").exists() else False

            wait_for(children_started, timeout=60, what="listener and worker processes started")
            # each child writes its port down once its start-up work is done (imports, the rulebook loaded and compiled:
            # session 9, the worker child loaded it only at its first tick, 2 s after, which this window saw as 3-5 %)
            time.sleep(3)
            pids = [proc.pid, *children(proc.pid)]
            assert len(pids) >= 2, "serve, its embedded redis-server (and listener processes)"
            shares = []
            for _ in range(WINDOWS):
                before = sum(cpu_seconds(p) for p in pids)
                time.sleep(WINDOW)
                shares.append((sum(cpu_seconds(p) for p in pids) - before) / WINDOW)
                if shares[-1] < BOUND:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            finally:
                if proc.poll() is None:
                    proc.kill()
    print("idle: " + ", ".join(f"{s:.2%}" for s in shares) + f" of a core over consecutive {WINDOW:.0f}-s windows")
    assert min(shares) < BOUND, f"idle service used {min(shares):.1%} of a core at best over {len(shares)} windows (bound {BOUND:.0%})"

"""`pacs-triage serve` with nothing to do costs (almost) nothing: no polling loops.

Measured as the CPU time (utime + stime from /proc) of the service process and of its
children (embedded redis-server, one listener and one worker process per further core) over a quiet window. Before the waits were event-driven it used
about 5 % of a core (dramatiq consumers polling Redis every 100 ms, the stability watcher
every 100 ms); the bench measures the same over 60 s (`make bench`).

What an idle service costs is its wake-ups (timeouts of its waits, Redis's own ticks) times what one wake-up costs the
machine. On the session-24 machine one trivial thread wake-up cost 270-300 µs of CPU (20-50 µs usually): the same code
that measured 0.5 % in session 22 measured 1.4-6 % there (the session start's code alike). So the same window also
measures the machine's cost of a wake-up (a thread of this test waking 20 times a second) and counts the service's
wake-ups (voluntary context switches of all its threads): on a machine whose wake-ups cost more than twice `NORMAL_WAKE_S`, the
CPU bound grows in proportion, and the wake-ups must stay under `WAKE_BOUND` a second — the count a polling loop raises
whatever the machine (a 100-ms poll in each of ten threads adds 100 a second; pynetdicom's 1-ms polls, thousands).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
#: CPU one trivial thread wake-up usually costs (seconds); the machine's own is measured in the same window.
NORMAL_WAKE_S = 50e-6
#: Wake-ups a second of all the service's threads and processes (72 measured in session 24: HTTP and watcher ticks,
#: dramatiq's 1-s worker timeouts, Redis's hz).
WAKE_BOUND = 150

pytestmark = pytest.mark.timeout(120)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    """Voluntary context switches of all a process's threads so far: each is a wait that ended, a wake-up (the
    involuntary ones are preemptions by other jobs, not the service's doing)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def wake_cost(seconds: float) -> float:
    """CPU seconds one trivial wake-up of a thread costs on this machine now (20 wake-ups a second)."""
    event, n = threading.Event(), 0
    start, end = time.thread_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        event.wait(0.05)
        n += 1
    return (time.thread_time() - start) / max(n, 1)


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
            shares, wakes, costs = [], [], []
            for _ in range(WINDOWS):
                before, woke = sum(cpu_seconds(p) for p in pids), sum(switches(p) for p in pids)
                cost: list[float] = []
                calibration = threading.Thread(target=lambda: cost.append(wake_cost(WINDOW - 0.2)))
                calibration.start()
                time.sleep(WINDOW)
                calibration.join()
                shares.append((sum(cpu_seconds(p) for p in pids) - before) / WINDOW)
                wakes.append((sum(switches(p) for p in pids) - woke) / WINDOW)
                costs.append(cost[0])
                if idle(shares[-1], wakes[-1], costs[-1]):
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            finally:
                if proc.poll() is None:
                    proc.kill()
    print("idle: " + ", ".join(f"{s:.2%} ({w:.0f} wake-ups/s, {c * 1e6:.0f} µs each on this machine)"
                               for s, w, c in zip(shares, wakes, costs)) + f" over consecutive {WINDOW:.0f}-s windows")
    assert any(idle(s, w, c) for s, w, c in zip(shares, wakes, costs)), (
        f"idle service used {min(shares):.1%} of a core at best over {len(shares)} windows (bound {BOUND:.0%}, "
        f"{WAKE_BOUND} wake-ups/s on a machine whose wake-ups cost more than {2 * NORMAL_WAKE_S * 1e6:.0f} µs)")


def idle(share: float, wakes: float, cost: float) -> bool:
    """Under the bound; or, on a machine whose wake-ups cost more than twice the usual, few wake-ups and under the
    bound grown in proportion to their cost."""
    if share < BOUND:
        return True
    slow = cost / NORMAL_WAKE_S
    return slow > 2 and wakes < WAKE_BOUND and share < BOUND * slow


def test_the_idle_rule_fails_a_polling_service_on_any_machine():
    assert idle(0.015, 500, 30e-6)  # under 2 %: idle, whatever it wakes
    assert not idle(0.05, 70, 30e-6)  # a usual machine: 5 % is not idle
    assert idle(0.05, 70, 300e-6)  # wake-ups ten times dearer: 70 of them a second are
    assert not idle(0.05, 400, 300e-6)  # ... but not 400 (a polling loop)
    assert not idle(0.15, 70, 300e-6)  # ... nor 15 % (work, not wake-ups)

"""Stopping a child process: a signal, a bounded wait, then SIGKILL (the embedded Redis; the tests' peers)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send `sig` to a running `proc` and wait up to `timeout` seconds; kill it if it is still there."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

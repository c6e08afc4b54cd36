"""The stability watcher sleeps until a study is due (or an instance kicks it), instead of polling."""

from __future__ import annotations

import threading
import time

from agent.assembly import StabilityWatcher
from core.index import StudyIndex


def summary(study: str, sop: str) -> dict:
    return {"StudyInstanceUID": study, "SeriesInstanceUID": study + ".1", "SOPInstanceUID": sop, "Modality": "CT",
            "size": 10, "TextFields": [], "OrderPriorities": {}}


def test_queued_at_the_end_of_its_quiet_period_without_polling(redis_client):
    index = StudyIndex(redis_client)
    queued: list[tuple[str, float]] = []
    got = threading.Event()

    def enqueue(uid):
        queued.append((uid, time.monotonic()))
        got.set()

    watcher = StabilityWatcher(index, enqueue, stable_after=0.5, idle=30.0)
    calls = {"n": 0}
    real_due = index.due

    def counting_due(*a, **kw):
        calls["n"] += 1
        return real_due(*a, **kw)

    index.due = counting_due
    watcher.start()
    try:
        time.sleep(1.0)
        assert calls["n"] == 1, "with nothing pending it looked once, then waits for idle or a kick"
        index.record_instance(summary("1.2.7", "1.2.7.1.1"))
        received = time.monotonic()
        watcher.kick()
        assert got.wait(5)
        delay = queued[0][1] - received
        assert 0.45 <= delay < 1.0, f"queued {delay:.2f}s after the last instance (quiet period 0.5 s)"
        assert calls["n"] <= 4, f"{calls['n']} looks for one study: it slept until the study was due"
    finally:
        watcher.stop()


def test_next_wait_is_bounded_by_idle_and_the_earliest_due_study(redis_client):
    index = StudyIndex(redis_client)
    watcher = StabilityWatcher(index, lambda uid: None, stable_after=10, idle=5)
    assert watcher.next_wait() == 5
    now = time.time()
    index.record_instance(summary("1.2.8", "1.2.8.1.1"), received=now - 8)
    assert abs(watcher.next_wait(now) - 2) < 0.01
    index.record_instance(summary("1.2.9", "1.2.9.1.1"), received=now - 30)
    assert watcher.next_wait(now) == 0.02

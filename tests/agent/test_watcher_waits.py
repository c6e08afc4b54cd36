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


def test_a_quiet_study_is_prepared_once_per_last_instance(redis_client):
    """`prepare_ahead`: a study quiet for stable_after - prepare_ahead seconds gets one "prepare"
    message per last-instance time, from whichever watcher sees it first; a study already due is
    queued, not prepared; a late instance means a new preparation once it is quiet again."""
    index = StudyIndex(redis_client)
    sent: list[str] = []
    watcher = StabilityWatcher(index, lambda uid: None, stable_after=10, idle=5, prepare=sent.append,
                               prepare_ahead=3)
    other = StabilityWatcher(index, lambda uid: None, stable_after=10, idle=5, prepare=sent.append,
                             prepare_ahead=3)  # another listener process's watcher
    now = time.time()
    index.record_instance(summary("1.2.20", "1.2.20.1.1"), received=now - 5)  # quiet 5 s: not yet
    index.record_instance(summary("1.2.21", "1.2.21.1.1"), received=now - 8)  # quiet 8 s: prepared
    index.record_instance(summary("1.2.22", "1.2.22.1.1"), received=now - 12)  # due: queued, not prepared
    assert watcher.poll_prepare(now) == 1 and sent == ["1.2.21"]
    assert watcher.poll_prepare(now + 0.5) == 0 and other.poll_prepare(now + 0.5) == 0, "sent once"
    index.record_instance(summary("1.2.21", "1.2.21.1.2"), received=now - 7.5)  # a late instance
    assert other.poll_prepare(now) == 1 and sent == ["1.2.21", "1.2.21"]
    assert watcher.poll_prepare(now + 3) == 1 and sent[-1] == "1.2.20"


def test_next_wait_includes_the_next_preparation(redis_client):
    index = StudyIndex(redis_client)
    watcher = StabilityWatcher(index, lambda uid: None, stable_after=10, idle=5, prepare=lambda uid: None,
                               prepare_ahead=3)
    now = time.time()
    index.record_instance(summary("1.2.23", "1.2.23.1.1"), received=now - 6)  # prepared in 1 s, due in 4 s
    assert abs(watcher.next_wait(now) - 1) < 0.01
    index.record_instance(summary("1.2.24", "1.2.24.1.1"), received=now - 7.5)  # in its window already
    assert abs(watcher.next_wait(now) - 1) < 0.01, "the earliest study not yet in its window, not one in it"
    assert StabilityWatcher(index, lambda uid: None, stable_after=2, prepare=lambda uid: None,
                            prepare_ahead=3).prepare_after == 1, "never before half the quiet period"
    assert StabilityWatcher(index, lambda uid: None, stable_after=10, prepare=lambda uid: None,
                            prepare_ahead=0).prepare is None, "0 = off"


def test_prepared_before_it_is_queued(redis_client):
    index = StudyIndex(redis_client)
    events: list[tuple[str, float]] = []
    queued = threading.Event()

    def enqueue(uid):
        events.append(("queue", time.monotonic()))
        queued.set()

    watcher = StabilityWatcher(index, enqueue, stable_after=1.0, idle=30.0,
                               prepare=lambda uid: events.append(("prepare", time.monotonic())), prepare_ahead=0.4)
    watcher.start()
    try:
        index.record_instance(summary("1.2.25", "1.2.25.1.1"))
        received = time.monotonic()
        watcher.kick()
        assert queued.wait(5)
        assert [e for e, _ in events] == ["prepare", "queue"]
        assert 0.55 <= events[0][1] - received < 0.9, "prepared 0.6 s after the last instance"
        assert 0.95 <= events[1][1] - received < 1.5
    finally:
        watcher.stop()


def test_a_study_another_watcher_just_queued_is_not_queued_again(redis_client):
    """Two listener processes' watchers: the second read the due list before the first queued the
    study and released its lock; it must not send a second triage message (a whole second triage)."""
    index = StudyIndex(redis_client)
    sent: list[str] = []
    first = StabilityWatcher(index, sent.append, stable_after=10)
    second = StabilityWatcher(StudyIndex(redis_client), sent.append, stable_after=10)
    now = time.time()
    index.record_instance(summary("1.2.26", "1.2.26.1.1"), received=now - 12)
    stale = second.index.due(10)  # read before the first watcher queues it
    assert first.poll() == 1 and sent == ["1.2.26"]
    second.index.due = lambda *a, **k: stale
    assert second.poll() == 0 and sent == ["1.2.26"], "queued once"
    # A study that received an instance after the due list was read is not queued either.
    index.record_instance(summary("1.2.27", "1.2.27.1.1"), received=now - 12)
    stale = second.index.due(10)
    index.record_instance(summary("1.2.27", "1.2.27.1.2"), received=now)
    assert second.poll() == 0 and index.is_pending("1.2.27")

"""The broker: nothing at import, explicit set-up, and Redis consumers that wait instead of polling."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import dramatiq
import pytest
from dramatiq import Worker

from core.redis_client import parse_sentinel
from workers import broker as broker_module

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_importing_the_actors_connects_nowhere_and_sending_needs_a_setup():
    code = (
        "import dramatiq.broker as b\n"
        "import workers.actors as a\n"
        "assert b.global_broker is None, 'a broker was made at import'\n"
        "assert all(x.broker is a.triage_study.broker for x in a.ALL)\n"
        "try:\n"
        "    a.triage_study.send('1.2.3')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "refused: no broker in this process" in out.stdout


def test_sentinel_urls_parse():
    p = parse_sentinel("redis+sentinel://:s3cret@h1:26379,h2:26380,[::1]:26381/pacs-triage/2?sentinel_password=x")
    assert p["sentinels"] == [("h1", 26379), ("h2", 26380), ("::1", 26381)]
    assert (p["service"], p["db"], p["password"], p["sentinel_password"]) == ("pacs-triage", 2, "s3cret", "x")
    assert parse_sentinel("redis+sentinel://h1/m")["sentinels"] == [("h1", 26379)]
    with pytest.raises(ValueError):
        parse_sentinel("redis+sentinel://h1:26379")


@pytest.fixture
def event_broker(redis_url, redis_client):
    """A separate EventRedisBroker with a long idle timeout and one test actor."""
    b = broker_module.make(redis_url, heartbeat_timeout=120, idle_timeout=30.0)
    done: list[tuple[str, float]] = []
    ran = threading.Event()

    def record(tag: str) -> None:
        done.append((tag, time.monotonic()))
        ran.set()

    actor = dramatiq.actor(record, broker=b, queue_name="pt_test_wake", actor_name="pt_test_record")
    b.flush_all()
    worker = Worker(b, worker_threads=1, worker_timeout=broker_module.worker_timeout(b))
    worker.start()
    time.sleep(0.5)  # consumers fetched once and are waiting
    yield b, actor, done, ran, worker
    worker.stop(timeout=10_000)
    b.flush_all()


def test_a_message_wakes_an_idle_consumer_at_once(event_broker):
    b, actor, done, ran, _ = event_broker
    time.sleep(1.0)
    sent = time.monotonic()
    actor.send("now")
    assert ran.wait(5), "message not processed"
    assert done[0][1] - sent < 1.0, "picked up by a wake-up, not after the 30 s idle timeout"


def test_a_delayed_message_runs_when_due_not_at_the_idle_timeout(event_broker):
    b, actor, done, ran, _ = event_broker
    sent = time.monotonic()
    actor.send_with_options(args=("later",), delay=800)
    assert ran.wait(10), "delayed message not processed"
    took = done[0][1] - sent
    assert 0.7 <= took < 2.5, f"ran after {took:.2f}s for a delay of 0.8 s"


def test_idle_consumers_do_not_poll_and_stop_promptly(event_broker, redis_client):
    b, actor, done, ran, worker = event_broker

    def evalsha_calls() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    before = evalsha_calls()
    time.sleep(3.0)
    fetches = evalsha_calls() - before
    # 2 consumers (queue and delay queue): dramatiq's own loop at 100 ms would make ~60
    assert fetches <= 4, f"{fetches} fetches in 3 s of idleness"
    started = time.monotonic()
    worker.stop(timeout=10_000)
    assert time.monotonic() - started < 3.0, "an idle consumer held up the stop"

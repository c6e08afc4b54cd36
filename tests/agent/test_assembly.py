"""Study assembly across listeners sharing one Redis, and the embedded Redis's persistence."""

from __future__ import annotations

import time

import redis

from agent.assembly import StabilityWatcher
from core.index import StudyIndex
from core.redis_server import EmbeddedRedis, discover


def summary(study: str, series: str, sop: str) -> dict:
    return {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop, "Modality": "CT",
            "size": 10, "TextFields": [], "OrderPriorities": {}}


def test_two_listeners_feed_one_study_and_it_is_queued_once(redis_client):
    a, b = StudyIndex(redis_client), StudyIndex(redis_client)
    now = time.time()
    a.record_instance(summary("1.2.3", "1.2.3.1", "1.2.3.1.1"), received=now - 5)
    b.record_instance(summary("1.2.3", "1.2.3.2", "1.2.3.2.1"), received=now - 4)
    queued: list[str] = []
    wa = StabilityWatcher(a, queued.append, stable_after=2)
    wb = StabilityWatcher(b, queued.append, stable_after=2)
    assert wa.poll() + wb.poll() == 1
    assert queued == ["1.2.3"]
    study = a.load("1.2.3")
    assert study.instance_count == 2 and len(study.series) == 2


def test_quiet_period_and_late_instances(redis_client):
    index = StudyIndex(redis_client)
    queued: list[str] = []
    watcher = StabilityWatcher(index, queued.append, stable_after=10)
    index.record_instance(summary("1.2.4", "1.2.4.1", "1.2.4.1.1"))
    assert watcher.poll() == 0, "not stable before the quiet period"
    index.record_instance(summary("1.2.4", "1.2.4.1", "1.2.4.1.1"), received=time.time() - 11)
    assert watcher.poll() == 1 and queued == ["1.2.4"]
    assert watcher.poll() == 0, "queued once"
    index.record_instance(summary("1.2.4", "1.2.4.1", "1.2.4.1.2"), received=time.time() - 11)
    assert watcher.poll() == 1 and queued == ["1.2.4", "1.2.4"], "a late instance means a re-triage"


def test_an_instance_arriving_while_queueing_keeps_the_study_watched(redis_client):
    index = StudyIndex(redis_client)
    index.record_instance(summary("1.2.5", "1.2.5.1", "1.2.5.1.1"), received=time.time() - 20)

    def enqueue_while_another_arrives(uid):
        index.record_instance(summary(uid, "1.2.5.1", "1.2.5.1.2"))

    watcher = StabilityWatcher(index, enqueue_while_another_arrives, stable_after=10)
    assert watcher.poll() == 0
    assert index.pending_count() == 1, "the newer instance keeps the study pending for its own triage"


def test_failed_enqueue_loses_nothing(redis_client):
    index = StudyIndex(redis_client)
    index.record_instance(summary("1.2.6", "1.2.6.1", "1.2.6.1.1"), received=time.time() - 20)

    def broker_down(uid):
        raise ConnectionError("broker down")

    watcher = StabilityWatcher(index, broker_down, stable_after=10)
    try:
        watcher.poll()
    except ConnectionError:
        pass
    assert index.pending_count() == 1, "still pending: the next poll queues it"
    assert not redis_client.exists("pt:lock:stable:1.2.6")


def test_embedded_redis_keeps_its_data_across_restarts(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    assert discover(tmp_path / "redis") == url
    redis.Redis.from_url(url).set("pt:probe", "kept")
    server.stop()
    server = EmbeddedRedis(tmp_path / "redis")
    try:
        assert redis.Redis.from_url(server.start()).get("pt:probe") == b"kept"
    finally:
        server.stop()


def test_worklist_order_priority_then_arrival_with_an_optional_wait_cap(redis_client):
    from workers.worklist import Worklist

    wl = Worklist(redis_client)
    now = time.time()

    def entry(uid, priority, minutes_ago):
        return {"study_instance_uid": uid, "priority": priority, "flags": [], "first_received": now - minutes_ago * 60,
                "last_received": now - minutes_ago * 60}

    wl.save(entry("1.1", "ROUTINE", 600))
    wl.save(entry("1.2", "URGENT", 30))
    wl.save(entry("1.3", "STAT", 5))
    wl.save(entry("1.4", "URGENT", 60))
    wl.save(entry("1.5", "ROUTINE", 20))
    assert [e["study_instance_uid"] for e in wl.entries()] == ["1.3", "1.4", "1.2", "1.1", "1.5"]
    capped = wl.entries(wait_cap_minutes=240, now=now)
    assert [e["study_instance_uid"] for e in capped] == ["1.3", "1.1", "1.4", "1.2", "1.5"]
    assert capped[1]["lifted_by_wait"] and capped[1]["priority"] == "ROUTINE", "order lifted, suggestion unchanged"


def test_reindex_after_redis_lost_its_data_and_retention(tmp_path, redis_client, redis_url):
    import os

    import pydicom

    from agent.cli import main
    from agent.reindex import reindex
    from agent.retention import sweep
    from agent.store import StudyStore
    from dicomgen import SeriesSpec, StudySpec, write_study

    store = StudyStore(tmp_path / "data", fsync=False)
    spec = StudySpec(series=[SeriesSpec("CT", "AX", 3)])
    for f in write_study(tmp_path / "in", spec):
        ds = pydicom.dcmread(f)
        dest = store.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    index = StudyIndex(redis_client)
    assert reindex(store, index) == (3, 1)
    assert index.load(spec.study_uid).instance_count == 3 and index.pending_count() == 1
    assert reindex(store, index) == (0, 0), "nothing twice"
    assert main(["reindex", "--data-dir", str(tmp_path / "data"), "--redis-url", redis_url]) == 0

    assert sweep(store, index, retention_days=1, now=time.time() + 3 * 86400) == 0, "pending studies stay"
    index.release(spec.study_uid, time.time() + 1)
    assert sweep(store, index, retention_days=1, now=time.time() + 3 * 86400) == 0, "queued, not yet triaged"
    index.triaged(spec.study_uid, time.time() + 1)
    assert sweep(store, index, retention_days=30, now=time.time()) == 0, "recent studies stay"
    from workers.worklist import Worklist

    worklist = Worklist(redis_client)
    worklist.save({"study_instance_uid": spec.study_uid, "priority": "ROUTINE", "flags": []})
    assert sweep(store, index, retention_days=1, now=time.time() + 3 * 86400, on_remove=worklist.remove) == 1
    assert not (store.studies / spec.study_uid).exists() and index.load(spec.study_uid) is None
    assert worklist.get(spec.study_uid) is None and worklist.entries() == []


def test_a_study_sent_again_after_retention_removed_it_is_stored(tmp_path):
    import shutil

    from agent.store import StudyStore

    store = StudyStore(tmp_path / "data")
    uids = ("1.2.7", "1.2.7.1", "1.2.7.1.1")
    for round_ in range(2):
        tmp = store.incoming / f"rx{round_}.dcm"
        tmp.write_bytes(b"dataset")
        path, duplicate = store.commit(tmp, *uids)
        assert path.read_bytes() == b"dataset" and not duplicate
        shutil.rmtree(store.studies / uids[0])  # what retention does between the two sends

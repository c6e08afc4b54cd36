"""Regression tests for the defects of issue 11 ("guarantees under faults").

Each test failed before its fix. Real Redis, real dramatiq workers, DCMTK as the
modality; the UPS SCP is the in-process one of tests/ups_scp.py (no UPS server is
packaged for this machine).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pydicom
import pytest
import redis

from core.config import Config
from core.headers import summarize
from core.index import QUEUED, StudyIndex
from agent.listener import Listener
from agent.reconcile import Reconciler
from agent.store import StudyStore
from core.study import Study
from dicomgen import SeriesSpec, StudySpec, postop_three_series, write_study
from peers import dcmtk, free_port, wait_for
from sink_peers import HttpServer, sample_entry
from workers.deliveries import Deliveries
from workers.worklist import Worklist


def summaries(tmp_path, spec):
    out = []
    for f in write_study(tmp_path / spec.accession, spec):
        out.append(summarize(pydicom.dcmread(f, stop_before_pixels=True), f, f.stat().st_size))
    return out


def index_summaries(redis_client, items):
    index = StudyIndex(redis_client)
    for s in items:
        index.record_instance(s)
    return index


# --- lost or never triaged -------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("InstanceNumber", "1\\2"), ("InstanceNumber", ["1", "2"]),
                                         ("SeriesNumber", "abc"), ("InstanceNumber", 2.5)])
def test_malformed_instance_or_series_number_never_blocks_the_study(tmp_path, field, value):
    items = summaries(tmp_path, postop_three_series(accession="ACC-MALFORMED"))
    items[1][field] = value
    study = Study.from_summaries(items)
    assert study.instance_count == len(items)


def test_malformed_number_study_is_triaged_by_the_workers(workers_running, actors, redis_client, tmp_path):
    workers_running()
    items = summaries(tmp_path, postop_three_series(accession="ACC-ABC"))
    items[0]["SeriesNumber"] = "abc"
    items[1]["InstanceNumber"] = "1\\2"
    uid = items[0]["StudyInstanceUID"]
    index_summaries(redis_client, items)
    actors.triage_study.send(uid)
    entry = wait_for(lambda: Worklist(redis_client).get(uid), timeout=20, what="triaged entry")
    assert entry["priority"] == "STAT" and not entry.get("triage_failed")


def test_order_priority_floor_is_the_highest_over_all_instances(tmp_path):
    routine = summaries(tmp_path, StudySpec(accession="ACC-R", order_priority="ROUTINE",
                                            series=[SeriesSpec("MR", "SAG T2", 2)]))
    stat = summaries(tmp_path, StudySpec(accession="ACC-S", order_priority="STAT", study_uid=routine[0]["StudyInstanceUID"],
                                         series=[SeriesSpec("MR", "AX T2", 2)]))
    for s in stat:
        s["SeriesNumber"] = 2
    study = Study.from_summaries(routine + stat)
    assert study.order_priorities["RequestedProcedurePriority"] == "STAT"


def test_failed_triage_yields_a_triage_failed_entry_and_a_metric(workers_running, actors, redis_client, tmp_path,
                                                                monkeypatch):
    from prometheus_client import REGISTRY

    workers_running()
    items = summaries(tmp_path, StudySpec(accession="ACC-FAIL", order_priority="URGENT"))
    uid = items[0]["StudyInstanceUID"]
    index_summaries(redis_client, items)

    def broken(*args, **kwargs):
        raise TypeError("a bug in the pipeline")

    monkeypatch.setattr(actors, "triage", broken)
    before = REGISTRY.get_sample_value("pacs_triage_triage_failed_entries_total") or 0
    actors.triage_study.send_with_options(args=(uid,), max_retries=0)
    entry = wait_for(lambda: Worklist(redis_client).get(uid), timeout=20, what="triage-failed entry")
    assert entry["triage_failed"] == "error"
    assert entry["explain"] == ["triage failed — read at order priority"]
    assert entry["priority"] == "URGENT", "read at the order's priority"
    assert (REGISTRY.get_sample_value("pacs_triage_triage_failed_entries_total") or 0) == before + 1
    assert redis_client.zscore(QUEUED, uid) is None


def test_failing_triage_is_on_the_worklist_at_once_while_it_is_retried(workers_running, actors, redis_client,
                                                                       tmp_path, monkeypatch):
    workers_running()
    items = summaries(tmp_path, StudySpec(accession="ACC-RETRY", order_priority="STAT"))
    uid = items[0]["StudyInstanceUID"]
    index_summaries(redis_client, items)
    monkeypatch.setattr(actors, "triage", lambda *a, **k: (_ for _ in ()).throw(TypeError("bug")))
    actors.triage_study.send_with_options(args=(uid,), max_retries=5, min_backoff=60_000)
    entry = wait_for(lambda: Worklist(redis_client).get(uid), timeout=20, what="entry before the retries end")
    assert entry["triage_failed"] == "error" and entry["priority"] == "STAT"


def test_triage_that_killed_its_worker_twice_is_quarantined(workers_running, actors, redis_client, tmp_path):
    workers_running()
    items = summaries(tmp_path, StudySpec(accession="ACC-POISON", order_priority="STAT"))
    uid = items[0]["StudyInstanceUID"]
    index_summaries(redis_client, items)
    redis_client.set(f"pt:triage:starts:{uid}", 2)  # two starts that never finished
    actors.triage_study.send(uid)
    entry = wait_for(lambda: Worklist(redis_client).get(uid), timeout=20, what="poison entry")
    assert entry["triage_failed"] == "poison" and entry["priority"] == "STAT"


def test_lost_triage_message_is_queued_again_by_reconciliation(workers_running, actors, redis_client, tmp_path):
    """Redis down mid-triage: the message was acknowledged but its retry never queued."""
    workers_running()
    spec = postop_three_series(accession="ACC-LOST")
    index = index_summaries(redis_client, summaries(tmp_path, spec))
    assert index.release(spec.study_uid, time.time() + 1, now=time.time() - 10)  # queued 10 s ago...
    # ...and the message is gone. Nothing triages it unless reconciliation does.
    store = StudyStore(tmp_path / "data")
    rec = Reconciler(store, index, actors.triage_study.send, lease=5, interval=0)
    assert rec.requeue_overdue() == 1
    wait_for(lambda: Worklist(redis_client).get(spec.study_uid), timeout=20, what="re-queued triage")
    wait_for(lambda: redis_client.zscore(QUEUED, spec.study_uid) is None, timeout=10, what="queued mark cleared")


def test_reconciliation_indexes_what_redis_lost_and_revives_orphans(tmp_path, redis_client):
    store = StudyStore(tmp_path / "data", fsync=False)
    spec = postop_three_series(accession="ACC-REC")
    for f in write_study(tmp_path / "in", spec):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        store.commit(f, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    index = StudyIndex(redis_client)
    sent = []
    rec = Reconciler(store, index, sent.append, lease=5, interval=0)
    rec.tick()
    assert index.load(spec.study_uid).instance_count == 12 and index.is_pending(spec.study_uid)
    # indexed but neither pending, queued nor triaged (its state was lost): pending again
    redis_client.zrem("pt:pending", spec.study_uid)
    rec.dirty.set()
    rec.tick()
    assert index.is_pending(spec.study_uid)


def test_listener_keeps_accepting_to_disk_while_redis_is_down(tmp_path, redis_client):
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1", min_free_bytes=0)
    store = StudyStore(cfg.data_dir)
    flagged = []
    lst = Listener(cfg, store, StudyIndex(down), on_index_failure=lambda: flagged.append(1))
    lst.start()
    try:
        spec = postop_three_series(accession="ACC-NOREDIS")
        files = write_study(tmp_path / "in", spec)
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port, *files)  # exits 0: all succeeded
    finally:
        lst.stop()
    assert len(list(store.studies.rglob("*.dcm"))) == len(files) and flagged
    index = StudyIndex(redis_client)  # Redis is back: reconciliation indexes them
    Reconciler(store, index, lambda uid: None).tick()
    assert index.load(spec.study_uid).instance_count == len(files)


def test_listener_start_leaves_other_listeners_receptions_alone(tmp_path):
    store = StudyStore(tmp_path / "data", fsync=False)
    import socket

    host = socket.gethostname()
    other = store.incoming / f"{host}-{os.getppid()}"  # a live process: another listener
    other.mkdir()
    (other / "rx-in-progress").write_bytes(b"partial")
    dead = store.incoming / f"{host}-999999999"  # no such process: a crashed listener
    dead.mkdir()
    (dead / "rx-left").write_bytes(b"partial")
    assert store.clean_incoming() == 1
    assert (other / "rx-in-progress").exists() and not dead.exists()


def receive(store: StudyStore, index: StudyIndex, f) -> None:
    """What the listener does with one received file: make it durable, then index its summary."""
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    path, _ = store.commit(f, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    index.record_instance(summarize(ds, path, path.stat().st_size))


def triaged_study_but_its_last_instance(tmp_path, redis_client, accession: str):
    """A triaged study with every instance but the last received; (store, index, spec, files)."""
    store = StudyStore(tmp_path / "data", fsync=False)
    index = StudyIndex(redis_client)
    spec = postop_three_series(accession=accession)
    files = write_study(tmp_path / "in", spec)
    for f in files[:-1]:
        receive(store, index, f)
    index.release(spec.study_uid, time.time() + 1)
    index.triaged(spec.study_uid, time.time() + 1)
    return store, index, spec, files


def test_retention_never_deletes_an_instance_received_during_the_sweep(tmp_path, redis_client):
    from agent.retention import sweep

    store, index, spec, files = triaged_study_but_its_last_instance(tmp_path, redis_client, "ACC-OLD")
    time.sleep(0.05)
    late = files[-1]
    os.utime(late)  # written now

    def late_instance_arrives(uid):
        receive(store, index, late)

    sweep(store, index, retention_days=1, now=time.time() + 3 * 86400, _before_remove=late_instance_arrives)
    ds = pydicom.dcmread(files[-1] if files[-1].exists() else next(store.studies.rglob("*.dcm")))
    kept = list(store.studies.glob("*/*/*.dcm"))
    assert any(p.stem == ds.SOPInstanceUID for p in kept), "the acknowledged late instance is on disk"
    study = index.load(spec.study_uid)
    assert study is not None and index.is_pending(spec.study_uid), "and it will be triaged"
    assert all(os.path.exists(i["path"]) for s in study.series.values() for i in s.instances)


def test_retention_race_where_the_late_instance_is_indexed_before_forget(tmp_path, redis_client):
    """The late instance is indexed before the sweep forgets: the study stays, whole."""
    from agent.retention import sweep

    store, index, spec, files = triaged_study_but_its_last_instance(tmp_path, redis_client, "ACC-OLD2")

    def late(uid):
        receive(store, index, files[-1])

    assert sweep(store, index, retention_days=1, now=time.time() + 3 * 86400, _before_remove=late) == 0
    assert len(list(store.studies.glob("*/*/*.dcm"))) == len(files)
    assert index.load(spec.study_uid).instance_count == len(files)


# --- delivered twice, never, or out of order -------------------------------------------

def test_redelivered_triage_dispatches_an_entry_saved_but_never_sent(workers_running, actors, redis_client,
                                                                      tmp_path):
    from workers.pipeline import triage

    hook = HttpServer().start()
    try:
        workers_running(webhook=[hook.url], sink_backoff=0.05)
        spec = postop_three_series(accession="ACC-SAVED")
        index = index_summaries(redis_client, summaries(tmp_path, spec))
        # the first triage saved its entry, then its worker died before queueing deliveries
        entry = triage(index.load(spec.study_uid), actors.context().rulebook.get())
        Worklist(redis_client).save(entry)
        actors.triage_study.send(spec.study_uid)  # redelivered
        wait_for(lambda: hook.delivered(), timeout=20, what="delivery of the saved entry")
        assert Deliveries(redis_client).delivered_revision("webhook", hook.url, spec.study_uid) == 1
    finally:
        hook.stop()


def test_an_older_revision_is_never_recorded_over_a_newer_one(redis_client):
    d = Deliveries(redis_client)
    d.mark_delivered("pacs", "A@h:1", "1.2.3", 2, "STAT")
    d.mark_delivered("pacs", "A@h:1", "1.2.3", 1, "URGENT")  # a slow push of revision 1 ends late
    assert d.delivered_revision("pacs", "A@h:1", "1.2.3") == 2
    assert d.delivered_priority("pacs", "A@h:1", "1.2.3") == "STAT"


def test_deliveries_to_one_destination_are_serialised(workers_running, actors, redis_client, tmp_path):
    """Revision 1's push is held in flight; revision 2 waits for it, then lands last."""
    hook = HttpServer().start()
    try:
        workers_running(webhook=[hook.url], sink_backoff=0.05)
        entry = sample_entry(study_instance_uid="1.2.826.0.1.3680043.8.498.77")
        saved, _ = Worklist(redis_client).save(entry)
        uid = saved["study_instance_uid"]
        lock = redis_client.lock(f"pt:lock:deliver:webhook|{hook.url}|{uid}", timeout=1.5)
        assert lock.acquire()  # revision 1 being pushed by someone else
        Worklist(redis_client).save(dict(entry, priority="STAT"))  # revision 2
        actors.dispatch(uid, workers_running(webhook=[hook.url], sink_backoff=0.05))
        wait_for(lambda: hook.delivered(), timeout=20, what="revision 2 delivered after the lock")
        assert json.loads(hook.delivered()[-1]["body"])["revision"] == 2
    finally:
        hook.stop()


def test_revisions_continue_after_retention_removed_the_entry(redis_client):
    w = Worklist(redis_client)
    uid = "1.2.826.0.1.3680043.8.498.99"
    for priority in ("ROUTINE", "URGENT", "STAT"):
        w.save(sample_entry(study_instance_uid=uid, priority=priority))
    assert w.get(uid)["revision"] == 3
    w.remove(uid)  # retention
    again, changed = w.save(sample_entry(study_instance_uid=uid))
    assert changed and again["revision"] == 4, "destinations that hold revision 3 hear about it"


def test_priors_refresh_is_not_capped_at_four_and_never_multiplies(workers_running, actors, monkeypatch):
    from dramatiq.middleware import CurrentMessage

    workers_running()
    sent = []

    class Msg:
        options = {"priors_refresh": 10}

    monkeypatch.setattr(CurrentMessage, "get_current_message", staticmethod(lambda: Msg()))
    monkeypatch.setattr(actors.triage_study, "send_with_options", lambda **kw: sent.append(kw))
    assert actors.refresh_when_priors_return("1.2.3")
    assert sent and sent[0]["delay"] == actors.PRIORS_REFRESH_DELAYS[-1] * 1000 and sent[0]["priors_refresh"] == 11
    # another triage of the same study (a late instance) does not start a second chain
    monkeypatch.setattr(CurrentMessage, "get_current_message", staticmethod(lambda: None))
    assert not actors.refresh_when_priors_return("1.2.3") and len(sent) == 1


def test_triage_lock_is_renewed_while_held_and_expires_when_its_holder_dies(redis_client):
    from workers.locks import RenewingLock

    with RenewingLock(redis_client, "pt:lock:triage:test", ttl=0.6) as held:
        time.sleep(1.5)  # longer than the ttl: renewed
        assert held.lock.owned()
    dead = redis_client.lock("pt:lock:triage:dead", timeout=0.6)  # a killed worker's lock: never renewed
    assert dead.acquire()
    time.sleep(0.8)
    assert not redis_client.exists("pt:lock:triage:dead"), "gone after its ttl, not after 15 minutes"


# --- priority lowered ------------------------------------------------------------------

def test_ups_urgent_to_stat_updates_the_workitem():
    from ups_scp import UpsScp
    from workers.sinks import ups

    scp = UpsScp().start()
    try:
        cfg = Config()
        urgent = sample_entry(priority="URGENT", revision=1)
        ups.push(urgent, scp.node, cfg)
        before = next(iter(scp.workitems.values())).ExpectedCompletionDateTime
        receipt = ups.push(sample_entry(priority="STAT", revision=2, delivered_priority="URGENT"), scp.node, cfg)
        item = next(iter(scp.workitems.values()))
        assert "updated URGENT -> STAT" in receipt
        assert item.ExpectedCompletionDateTime < before
        assert "STAT" in item.CommentsOnTheScheduledProcedureStep
    finally:
        scp.stop()


def test_disk_watermark_refuses_new_instances_then_resumes(tmp_path, redis_client):
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1",
                 min_free_bytes=shutil.disk_usage(tmp_path).total * 2)
    store = StudyStore(cfg.data_dir)
    lst = Listener(cfg, store, StudyIndex(redis_client))
    lst.start()
    try:
        files = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 1)]))
        with pytest.raises(RuntimeError):
            dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port, *files)
        assert not [p for p in store.root.rglob("*") if p.is_file()], "nothing stored, no partial file"
        cfg.min_free_bytes = 1024  # space is back: reception resumes by itself
        dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port, *files)
        assert len(list(store.studies.rglob("*.dcm"))) == 1
    finally:
        lst.stop()


def test_clinical_text_that_arrived_as_UN_is_read_not_dropped():
    """Text over 64 KB sent by DCMTK with its default conversion arrives as UN."""
    import io
    import struct

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from core.headers import text_fields

    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = "1.2.3"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    text = ("Syndrome de la queue de cheval à J2, anesthésie en selle. " * 1200).encode()
    raw = fp.getvalue() + struct.pack("<HH", 0x0040, 0x1002) + b"UN\0\0" + struct.pack("<I", len(text)) + text
    fields = text_fields(pydicom.dcmread(io.BytesIO(raw), force=True))
    assert [f["keyword"] for f in fields] == ["ReasonForTheRequestedProcedure"]
    assert fields[0]["value"].startswith("Syndrome de la queue de cheval à J2")

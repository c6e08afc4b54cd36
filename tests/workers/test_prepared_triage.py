"""A triage prepared before the quiet period ends (`prepare_ahead`, workers/prepared.py) is used by the
triage at stability only when nothing it was computed from changed; it then gives the very entry the
triage would have computed, and anything else (a late instance, an instance sent again, an order
that arrived, a study already stable) means the triage computes afresh, as without preparation.

The actors are called in this process (dramatiq's synchronous call), bound to the session's Redis
broker with a configuration of our own; a real Redis holds the index, the orders and the worklist."""

from __future__ import annotations

import json
import time

import pydicom
import pytest

from core import keys, metrics
from core.headers import summarize
from core.index import StudyIndex
from core.orders import Order, OrderStore
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import wait_for
from workers.worklist import Worklist, fingerprint, merge_previous

SADDLE = "new saddle anaesthesia and urinary retention 1 day after L4-L5 decompression"


@pytest.fixture
def bound(broker, redis_url, redis_client):
    """Bind the actors to a context with preparation on; yields (actors, context)."""
    from core.config import Config
    from workers import actors
    from workers import broker as broker_module
    from workers import runtime

    ctx = runtime.Context(Config(redis_url=redis_url, prepare_ahead=3.0))
    broker_module.bind(broker, ctx)
    yield actors, ctx
    for queue in broker.get_declared_queues():
        broker.flush(queue)


def index_study(redis_client, tmp_path, accession, reason="Contrôle post-opératoire", count=3):
    spec = StudySpec(accession=accession, reason=reason, series=[SeriesSpec("MR", "T2 SAG", count)])
    files = write_study(tmp_path / accession, spec)
    index = StudyIndex(redis_client)
    for f in files[:-1]:
        index.record_instance(summarize(pydicom.dcmread(f, stop_before_pixels=True), f, f.stat().st_size))
    return spec, files[-1]  # the last file is kept back: a late instance when a test sends it


def record(redis_client, f):
    StudyIndex(redis_client).record_instance(summarize(pydicom.dcmread(f, stop_before_pixels=True), f,
                                                       f.stat().st_size))


def counted(actors, monkeypatch):
    """Count the pipeline runs of the actors module."""
    runs = {"n": 0}
    real = actors.triage

    def triage(*a, **k):
        runs["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(actors, "triage", triage)
    return runs


def outcome_count(outcome: str) -> float:
    return metrics.triage_prepared.labels(outcome)._value.get()


def without_time(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "triaged_at"}


def test_prepared_entry_is_the_entry_the_triage_computes(bound, redis_client, tmp_path, monkeypatch):
    actors, ctx = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-1")
    OrderStore(redis_client).save(Order("ACC-PREP-1", spec.patient_id, spec.issuer, priority="ROUTINE",
                                        priority_code="R", priority_source="HL7 order TQ1-9",
                                        texts=[{"source": "HL7 order", "field": "OBR-31", "value": SADDLE}]))
    # The entry of the triage without preparation, computed first from the same Redis state.
    study = ctx.index.load(spec.study_uid)
    reference, _, _ = actors._compute(ctx, study, OrderStore(redis_client))
    reference = json.loads(json.dumps(reference))

    actors.prepare_triage(spec.study_uid)
    record_raw = redis_client.get(keys.prepared(spec.study_uid))
    assert record_raw is not None, "a pending study's triage is prepared and kept aside"
    assert Worklist(redis_client).get(spec.study_uid) is None, "preparing saves nothing to the worklist"
    assert StudyIndex(redis_client).is_pending(spec.study_uid), "the study is still pending"
    assert without_time(json.loads(record_raw)["entry"]) == without_time(reference)

    runs = counted(actors, monkeypatch)
    used = outcome_count("used")
    actors.triage_study(spec.study_uid)
    entry = Worklist(redis_client).get(spec.study_uid)
    assert runs["n"] == 0, "the triage at stability used the prepared entry instead of running the pipeline"
    assert outcome_count("used") == used + 1
    assert redis_client.get(keys.prepared(spec.study_uid)) is None, "a prepared entry is used once"
    assert entry["priority"] == "STAT" and entry["order_source"] == "HL7"
    # What the worklist stores for the entry computed without preparation (revision, fingerprint):
    # the same, but for the time of the triage.
    expected = merge_previous(dict(reference), None, 0)
    expected["fingerprint"] = fingerprint(expected)
    assert without_time(entry) == without_time(expected)
    assert entry["triaged_at"] >= json.loads(record_raw)["at"], "triaged when the triage ran, not when prepared"


def test_late_instance_discards_the_prepared_triage(bound, redis_client, tmp_path, monkeypatch):
    actors, _ = bound
    spec, late = index_study(redis_client, tmp_path, "ACC-PREP-2")
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is not None
    record(redis_client, late)  # arrives after the preparation, before the quiet period ends
    runs = counted(actors, monkeypatch)
    changed = outcome_count("changed")
    actors.triage_study(spec.study_uid)
    entry = Worklist(redis_client).get(spec.study_uid)
    assert runs["n"] == 1 and outcome_count("changed") == changed + 1
    assert entry["instance_count"] == 3, "the late instance is in the entry"
    assert redis_client.get(keys.prepared(spec.study_uid)) is None


def test_an_instance_sent_again_discards_the_prepared_triage(bound, redis_client, tmp_path, monkeypatch):
    """Same SOP Instance UID, same header summary: the file may differ (pixels), so the triage is
    computed again (the digest covers the last received time)."""
    actors, ctx = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-3")
    before = ctx.index.load_with_digest(spec.study_uid)[1]
    actors.prepare_triage(spec.study_uid)
    first = sorted((tmp_path / "ACC-PREP-3").rglob("*.dcm"))[0]
    record(redis_client, first)
    assert ctx.index.load_with_digest(spec.study_uid)[1] != before
    runs = counted(actors, monkeypatch)
    actors.triage_study(spec.study_uid)
    assert runs["n"] == 1


def test_an_order_arriving_after_the_preparation_is_read(bound, redis_client, tmp_path, monkeypatch):
    actors, _ = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-4", reason="")
    actors.prepare_triage(spec.study_uid)
    prepared = json.loads(redis_client.get(keys.prepared(spec.study_uid)))["entry"]
    assert prepared["priority"] != "STAT"
    OrderStore(redis_client).save(Order("ACC-PREP-4", spec.patient_id, spec.issuer, priority="ROUTINE",
                                        priority_code="R", priority_source="HL7 order TQ1-9",
                                        texts=[{"source": "HL7 order", "field": "OBR-31", "value": SADDLE}]))
    runs = counted(actors, monkeypatch)
    actors.triage_study(spec.study_uid)
    entry = Worklist(redis_client).get(spec.study_uid)
    assert runs["n"] == 1 and entry["priority"] == "STAT" and entry["order_source"] == "HL7"


def test_a_study_already_stable_is_not_prepared(bound, redis_client, tmp_path):
    actors, ctx = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-5")
    seen = redis_client.zscore(keys.PENDING, spec.study_uid)
    assert ctx.index.release(spec.study_uid, seen)  # queued for triage: no longer pending
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is None


def test_a_preparation_finishing_after_its_study_was_queued_is_kept_for_that_triage(bound, redis_client,
                                                                                     tmp_path, monkeypatch):
    """The quiet period ended while the preparation ran: its triage (queued, perhaps waiting for it)
    still gets it."""
    actors, ctx = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-6")
    real = actors._compute

    def compute_then_stable(c, study, orders):
        out = real(c, study, orders)
        assert ctx.index.release(spec.study_uid, redis_client.zscore(keys.PENDING, spec.study_uid))
        return out

    monkeypatch.setattr(actors, "_compute", compute_then_stable)
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is not None
    monkeypatch.setattr(actors, "_compute", real)
    runs = counted(actors, monkeypatch)
    actors.triage_study(spec.study_uid)
    assert runs["n"] == 0 and Worklist(redis_client).get(spec.study_uid) is not None


def test_a_preparation_finishing_after_its_triage_is_done_leaves_nothing(bound, redis_client, tmp_path,
                                                                         monkeypatch):
    actors, ctx = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-11")
    real = actors._compute

    def compute_then_triaged(c, study, orders):
        out = real(c, study, orders)
        assert ctx.index.release(spec.study_uid, redis_client.zscore(keys.PENDING, spec.study_uid))
        assert ctx.index.triaged(spec.study_uid, time.time() + 1)  # its triage saved its entry meanwhile
        return out

    monkeypatch.setattr(actors, "_compute", compute_then_triaged)
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is None


def test_preparation_off_never_uses_a_prepared_entry(broker, redis_url, redis_client, tmp_path, monkeypatch):
    from core.config import Config
    from workers import actors
    from workers import broker as broker_module
    from workers import runtime

    broker_module.bind(broker, runtime.Context(Config(redis_url=redis_url, prepare_ahead=3.0)))
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-7")
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is not None
    broker_module.bind(broker, runtime.Context(Config(redis_url=redis_url, prepare_ahead=0)))
    runs = counted(actors, monkeypatch)
    actors.triage_study(spec.study_uid)
    assert runs["n"] == 1


def test_a_triage_prepared_under_another_configuration_is_discarded(broker, redis_url, redis_client, tmp_path,
                                                                     monkeypatch):
    from core.config import Config
    from workers import actors
    from workers import broker as broker_module
    from workers import runtime

    broker_module.bind(broker, runtime.Context(Config(redis_url=redis_url, prepare_ahead=3.0,
                                                      ct_volume_budget_mb=64)))
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-8")
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is not None
    broker_module.bind(broker, runtime.Context(Config(redis_url=redis_url, prepare_ahead=3.0)))
    runs = counted(actors, monkeypatch)
    actors.triage_study(spec.study_uid)
    assert runs["n"] == 1


def test_a_preparation_that_did_not_finish_is_not_tried_again(bound, redis_client, tmp_path):
    """A preparation that killed its worker left its start mark: dramatiq's redelivery is ignored."""
    actors, _ = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-9")
    redis_client.set(keys.prepare_starts(spec.study_uid), 1)
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is None
    redis_client.delete(keys.prepare_starts(spec.study_uid))
    actors.prepare_triage(spec.study_uid)
    assert redis_client.get(keys.prepared(spec.study_uid)) is not None
    assert redis_client.get(keys.prepare_starts(spec.study_uid)) is None, "a finished preparation clears its mark"


def test_the_triage_waits_for_a_preparation_still_running(bound, redis_client, tmp_path, monkeypatch):
    """The quiet period ends while the preparation runs: the triage waits for it (the same work,
    started earlier) and uses it, instead of running the pipeline a second time."""
    import threading

    actors, _ = bound
    spec, _ = index_study(redis_client, tmp_path, "ACC-PREP-10")
    runs = counted(actors, monkeypatch)
    real = actors._compute

    def slow(*a, **k):
        time.sleep(1.0)
        return real(*a, **k)

    monkeypatch.setattr(actors, "_compute", slow)
    preparing = threading.Thread(target=actors.prepare_triage, args=(spec.study_uid,))
    preparing.start()
    try:
        assert wait_for(lambda: redis_client.exists(keys.prepare_lock(spec.study_uid)), timeout=5)
        monkeypatch.setattr(actors, "_compute", real)
        actors.triage_study(spec.study_uid)
    finally:
        preparing.join(10)
    assert runs["n"] == 1, "one pipeline run: the preparation's"
    assert Worklist(redis_client).get(spec.study_uid)["instance_count"] == 2

"""Triage and delivery through real dramatiq workers on a real Redis.

Sinks get their own queues, retries with backoff, dead letters, and replay; a
re-triage never lowers a priority and an unchanged one tells nobody twice.
"""

from __future__ import annotations

import json
import time

import hl7

import pydicom
from prometheus_client import REGISTRY

from agent.cli import main as cli_main
from core.headers import summarize
from core.index import StudyIndex
from dicomgen import SeriesSpec, StudySpec, postop_three_series, write_study
from peers import wait_for
from sink_peers import HttpServer
from workers.deliveries import Deliveries
from workers.worklist import Worklist


def index_study(redis_client, tmp_path, spec) -> str:
    index = StudyIndex(redis_client)
    for f in write_study(tmp_path / spec.accession, spec):
        index.record_instance(summarize(pydicom.dcmread(f, stop_before_pixels=True), f, f.stat().st_size))
    return spec.study_uid


def dead_letters(kind: str) -> float:
    return REGISTRY.get_sample_value("pacs_triage_sink_dead_letters_total", {"sink": kind}) or 0.0


def test_triage_then_webhook_retried_until_it_answers_and_delivered_once(workers_running, actors, redis_client, tmp_path):
    hook = HttpServer().start()
    try:
        workers_running(webhook=[hook.url], sink_attempts=5, sink_backoff=0.05, sink_max_backoff=0.2)
        hook.fail(2)  # down for a while: two 503s
        uid = index_study(redis_client, tmp_path, postop_three_series(accession="ACC-HOOK"))
        actors.triage_study.send(uid)
        wait_for(lambda: hook.delivered(), timeout=20, what="web hook delivery")
        assert len(hook.requests) == 3 and len(hook.delivered()) == 1
        body = json.loads(hook.delivered()[0]["body"])
        assert body["study_instance_uid"] == uid and body["priority"] == "STAT"
        # the worker records the delivery after the hook has answered: wait for it (it raced the assertion on a loaded machine)
        wait_for(lambda: Deliveries(redis_client).delivered_revision("webhook", hook.url, uid) == 1, timeout=10,
                 what="delivery recorded")
    finally:
        hook.stop()


def test_unchanged_retriage_tells_nobody_twice_and_never_lowers(workers_running, actors, redis_client, tmp_path):
    hook = HttpServer().start()
    try:
        workers_running(webhook=[hook.url], sink_backoff=0.05)
        uid = index_study(redis_client, tmp_path, postop_three_series(accession="ACC-TWICE"))
        actors.triage_study.send(uid)
        wait_for(lambda: hook.delivered(), timeout=20, what="first delivery")
        actors.triage_study.send(uid)
        wait_for(lambda: not redis_client.exists("pt:lock:triage:" + uid) and
                 redis_client.hlen("pacs-triage:triage.msgs") == 0, timeout=20, what="second triage")
        entries = [e for e in Worklist(redis_client).entries() if e["study_instance_uid"] == uid]
        assert len(entries) == 1 and entries[0]["revision"] == 1
        assert len(hook.delivered()) == 1

        # the request text is corrected to something mild: the STAT suggestion stays
        key = f"pt:study:{uid}:instances"
        for sop, raw in redis_client.hgetall(key).items():
            summary = json.loads(raw)
            summary["TextFields"] = [{"keyword": "ReasonForTheRequestedProcedure", "tag": "(0040,1002)",
                                      "value": "Contrôle systématique"}]
            redis_client.hset(key, sop, json.dumps(summary))
        actors.triage_study.send(uid)
        wait_for(lambda: Worklist(redis_client).get(uid)["revision"] == 2, timeout=20, what="re-triage")
        entry = Worklist(redis_client).get(uid)
        assert entry["priority"] == "STAT", "an earlier suggestion is never lowered"
        assert "epidural_haematoma" in {f["code"] for f in entry["flags"]}, "no flag is ever dropped"
    finally:
        hook.stop()


def test_dead_letter_after_last_attempt_then_replay(workers_running, actors, redis_client, redis_url, tmp_path, capsys):
    hook = HttpServer().start()
    try:
        workers_running(webhook=[hook.url], sink_attempts=3, sink_backoff=0.05, sink_max_backoff=0.1)
        hook.fail(50)
        before = dead_letters("webhook")
        uid = index_study(redis_client, tmp_path, StudySpec(accession="ACC-DEAD", reason="Contrôle",
                                                            series=[SeriesSpec("DX", "LAT", 1)]))
        actors.triage_study.send(uid)
        wait_for(lambda: Deliveries(redis_client).dead_letters(), timeout=20, what="dead letter")
        assert len(hook.requests) == 3, "exactly sink_attempts tries"
        assert dead_letters("webhook") - before == 1

        assert cli_main(["sinks", "status", "--json", "--redis-url", redis_url]) == 0
        status = json.loads(capsys.readouterr().out)
        assert [d["study_instance_uid"] for d in status["dead_letters"]] == [uid]

        hook.failures.clear()
        assert cli_main(["sinks", "replay", "--redis-url", redis_url]) == 0
        wait_for(lambda: hook.delivered(), timeout=20, what="replayed delivery")
        assert len(hook.delivered()) == 1
        assert not Deliveries(redis_client).dead_letters()
    finally:
        hook.stop()


def test_a_failing_destination_does_not_hold_back_another(workers_running, actors, redis_client, tmp_path):
    down, up = HttpServer().start(), HttpServer().start()
    try:
        workers_running(webhook=[down.url, up.url], sink_attempts=20, sink_backoff=0.5)
        down.fail(100)
        uid = index_study(redis_client, tmp_path, postop_three_series(accession="ACC-TWO"))
        actors.triage_study.send(uid)
        wait_for(lambda: up.delivered(), timeout=20, what="delivery to the healthy destination")
        assert not down.delivered()
    finally:
        down.stop()
        up.stop()


def test_stat_study_reaches_every_worklist_even_if_they_were_down(workers_running, actors, redis_client, tmp_path):
    """UPS worklist manager, RIS over HL7 and a web hook, all down when the study arrives."""
    from core.config import DicomNode
    from sink_peers import MllpServer
    from ups_scp import UpsScp

    ups, ris, hook = UpsScp(), MllpServer(), HttpServer()
    ups_node = DicomNode.parse(ups.node)
    workers_running(ups=[ups_node], hl7=[ris.address], webhook=[hook.url], sink_attempts=30,
                    sink_backoff=0.2, sink_max_backoff=0.5, hl7_timeout=2)
    hook.fail(3)
    routine = index_study(redis_client, tmp_path, StudySpec(accession="ACC-R", reason="Contrôle à 1 an",
                                                            series=[SeriesSpec("DX", "FACE", 1)]))
    stat = index_study(redis_client, tmp_path, postop_three_series(accession="ACC-S"))
    actors.triage_study.send(routine)
    actors.triage_study.send(stat)
    try:
        time.sleep(1.0)  # deliveries are failing and being retried
        ups.start(), ris.start(), hook.start()
        wait_for(lambda: len(ups.workitems) == 2 and len(ris.messages) == 2 and len(hook.delivered()) == 2,
                 timeout=30, what="every destination served once it is back")
        priorities = {str(w.get("ScheduledProcedureStepPriority")) for w in ups.workitems.values()}
        assert priorities == {"HIGH", "MEDIUM"}
        orders = {str(m["ORC.2"]): (str(m["ORC.1"]), str(m["TQ1.9"]) if str(m["ORC.1"]) == "XO" else None)
                  for m in (hl7.parse(str(raw)) for raw in ris.messages)}
        # STAT raises any order (XO); ROUTINE raises nothing: notes only, no priority (issue 12)
        assert orders == {"ACC-S": ("XO", "S"), "ACC-R": ("SC", None)}
        # re-triage of the same unchanged study: still one workitem and one order update
        actors.triage_study.send(stat)
        time.sleep(1.5)
        assert len(ups.workitems) == 2 and len(ris.messages) == 2
    finally:
        ups.stop(), ris.stop(), hook.stop()


def test_priors_unavailable_then_refreshed_when_the_pacs_answers(workers_running, actors, redis_client, tmp_path,
                                                                 monkeypatch):
    from core.config import DicomNode
    from peers import Orthanc

    pacs = Orthanc(tmp_path / "pacs")
    pre = StudySpec(patient_id="PT-REFRESH", accession="ACC-PRE", study_date="20260901",
                    series=[SeriesSpec("MR", "SAG T2", 1)])
    monkeypatch.setattr(actors, "PRIORS_REFRESH_DELAYS", (1, 1, 1))
    workers_running(pacs=[DicomNode.parse(pacs.node)], sink_attempts=1)  # SR delivery is not the point here
    uid = index_study(redis_client, tmp_path, postop_three_series(patient_id="PT-REFRESH", accession="ACC-NOW"))
    actors.triage_study.send(uid)  # the PACS is down
    first = wait_for(lambda: Worklist(redis_client).get(uid), timeout=60, what="first triage")
    assert first["priors_status"] == "unavailable" and first["priors"] == []
    pacs.start()
    try:
        for f in write_study(tmp_path / "pre", pre):
            pacs.upload(f)
        entry = wait_for(lambda: (e := Worklist(redis_client).get(uid)) and e["priors_status"] == "ok" and e,
                         timeout=60, what="re-triage with priors")
        assert [p["study_instance_uid"] for p in entry["priors"]] == [pre.study_uid]
        assert entry["revision"] > first["revision"] and entry["priority"] == "STAT"
    finally:
        pacs.stop()

"""`pacs-triage report` and `worklist --closed`: time to signed report per priority, studies
raised above their order, and the Prometheus histogram (issue 12)."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import REGISTRY

from agent.cli import main
from core.audit import AuditTrail
from sink_peers import sample_entry
from workers.report import parse_since, percentile, summarize
from workers.worklist import Worklist


def closed_entry(uid, priority, order, minutes, closed_ago=3600.0):
    now = time.time()
    closed_at = now - closed_ago
    return sample_entry(study_instance_uid=uid, priority=priority, order_priority=order,
                        last_received=closed_at - minutes * 60, closed_at=closed_at, closed_by="HL7 ORU^R01 result status F")


def test_summary_figures():
    entries = [closed_entry(f"1.{n}", "STAT", "ROUTINE", m) for n, m in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])]
    entries += [closed_entry("2.1", "ROUTINE", "ROUTINE", 600), closed_entry("2.2", "URGENT", None, 120),
                closed_entry("2.3", "STAT", "STAT", 5)]
    figures = summarize(entries)
    stat = figures["by_priority"]["STAT"]
    assert stat["studies"] == 11 and stat["median_seconds"] == pytest.approx(50 * 60) and stat["p90_seconds"] == pytest.approx(90 * 60)
    assert figures["by_priority"]["ROUTINE"]["median_seconds"] == pytest.approx(600 * 60)
    assert figures["by_order_priority"]["none"]["studies"] == 1
    assert figures["with_order"] == 12 and figures["raised_above_order"] == 10


def test_helpers():
    assert parse_since("7d") == 7 * 86400 and parse_since("24h") == 86400 and parse_since("90m") == 5400
    assert parse_since("2") == 2 * 86400
    with pytest.raises(ValueError):
        parse_since("last week")
    assert percentile([], 90) is None and percentile([5], 90) == 5 and percentile(list(range(1, 11)), 50) == 5


def test_commands_on_redis(redis_client, redis_url, capsys):
    worklist = Worklist(redis_client)
    before = REGISTRY.get_sample_value("pacs_triage_time_to_report_seconds_count",
                                       {"priority": "STAT", "order_priority": "ROUTINE"}) or 0
    for uid, priority, order, minutes in (("1.2.826.0.1.3680043.8.498.701", "STAT", "ROUTINE", 30),
                                          ("1.2.826.0.1.3680043.8.498.702", "ROUTINE", "ROUTINE", 300),
                                          ("1.2.826.0.1.3680043.8.498.703", "URGENT", None, 90)):
        e = sample_entry(study_instance_uid=uid, priority=priority, order_priority=order, triaged_at=time.time(),
                         last_received=time.time() - minutes * 60)
        e.pop("revision")
        worklist.save(e)
        assert worklist.close(uid, time.time(), "HL7 ORU^R01 result status F", audit=AuditTrail(None))
    old = sample_entry(study_instance_uid="1.2.826.0.1.3680043.8.498.704", priority="STAT", triaged_at=time.time(),
                       last_received=time.time() - 10 * 86400)
    old.pop("revision")
    worklist.save(old)
    worklist.close(old["study_instance_uid"], time.time() - 9 * 86400, "UPS workitem COMPLETED",
                   audit=AuditTrail(None))  # outside 7d
    after = REGISTRY.get_sample_value("pacs_triage_time_to_report_seconds_count",
                                      {"priority": "STAT", "order_priority": "ROUTINE"})
    assert after == before + 2  # 701 and 704 (STAT on a ROUTINE order)

    assert main(["report", "--redis-url", redis_url, "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "3 closed studies" in out
    stat_line = next(line for line in out.splitlines() if line.startswith("STAT "))
    assert stat_line.split()[1] == "1" and "30 min" in stat_line
    assert "raised by triage above their order's priority: 1 of 2 studies" in out
    assert "TEST" not in out and "PT-0001" not in out

    assert main(["report", "--redis-url", redis_url, "--since", "30d", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["studies"] == 4

    assert main(["worklist", "--redis-url", redis_url]) == 0
    assert "worklist is empty" in capsys.readouterr().out
    assert main(["worklist", "--redis-url", redis_url, "--closed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "HL7 ORU^R01 result status F" in lines[1] and "UPS workitem COMPLETED" in lines[4]

"""The Prometheus configuration and alerting rules, checked by Prometheus's own promtool.

- `promtool check config` on the compose scrape configuration (rule file path made local);
- `promtool check rules` on the rules;
- `promtool test rules` on deploy/prometheus/pacs-triage-rules.test.yaml, which must hold a case
  firing every alert of the rules file (and a healthy case firing none of the main ones).

promtool comes with Debian's `prometheus` package, which `make test` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "pacs-triage-rules.yaml"
RULE_TESTS = PROMETHEUS / "pacs-triage-rules.test.yaml"
COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "prometheus.yml"

#: The alerts issue 14 names; each must exist and be unit tested.
REQUIRED_ALERTS = {
    "PacsTriageQueueBacklog", "PacsTriageEndToEndLatencyHigh", "PacsTriageSinkDeadLetters",
    "PacsTriageListenerDown", "PacsTriageDown", "PacsTriageDiskBelowWatermark", "PacsTriageRedisUnreachable",
    "PacsTriageTriageFailures",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: `make test` installs Debian's prometheus package"
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def alerts() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_check_rules():
    proc = run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_config(tmp_path):
    text = COMPOSE_CONFIG.read_text()
    local = re.sub(r"/etc/prometheus/rules/pacs-triage-rules\.yaml", str(RULES), text)
    assert local != text, "the compose config no longer loads the rules file from /etc/prometheus/rules"
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(local)
    proc = run("check", "config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_unit_tests_pass():
    proc = run("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_case_that_fires_it():
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    assert REQUIRED_ALERTS <= alerts()
    assert alerts() - fired == set(), "alerts without a unit test that fires them"
    assert fired <= alerts(), "unit tests name alerts that do not exist"


def test_a_broken_rule_fails_the_unit_tests(tmp_path):
    """The unit tests can fail: raise the backlog threshold and the backlog case no longer fires."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("pacs_triage:queue_depth:max > 200",
                                                                 "pacs_triage:queue_depth:max > 2000"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    proc = run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert proc.returncode != 0
    assert "PacsTriageQueueBacklog" in proc.stdout + proc.stderr


def test_listener_processes_metrics_are_added_into_one_exposition():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from core.metrics import merge_expositions

    def process(stored: int, active: int, reason: str | None, up: int) -> str:
        reg = CollectorRegistry()
        c = Counter("pacs_triage_instances_received", "Instances", ["status"], registry=reg)
        c.labels("stored").inc(stored)
        q = Counter("pacs_triage_quarantined", "Quarantined", ["reason"], registry=reg)
        if reason:
            q.labels(reason).inc()
        Gauge("pacs_triage_associations_active", "Open", registry=reg).set(active)
        Gauge("pacs_triage_listener_up", "Up", registry=reg).set(up)
        Histogram("pacs_triage_triage_duration_seconds", "Triage", registry=reg, buckets=(1,)).observe(0.5)
        return generate_latest(reg).decode()

    merged = merge_expositions(process(3, 1, None, 1), [process(5, 2, "unparseable", 0)])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(merged) for s in f.samples}
    assert samples[("pacs_triage_instances_received_total", (("status", "stored"),))] == 8
    assert samples[("pacs_triage_quarantined_total", (("reason", "unparseable"),))] == 1, "child-only series kept"
    assert samples[("pacs_triage_associations_active", ())] == 3
    assert samples[("pacs_triage_listener_up", ())] == 1, "other gauges stay this process's"
    assert samples[("pacs_triage_triage_duration_seconds_count", ())] == 2
    assert samples[("pacs_triage_triage_duration_seconds_bucket", (("le", "1.0"),))] == 2

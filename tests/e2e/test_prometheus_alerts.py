"""A real Prometheus scrapes a running `pacs-triage serve` and raises the alert for a sink that is down.

The rules are the shipped deploy/prometheus/pacs-triage-rules.yaml with their `for:` holds and group
intervals shortened (scrape and evaluation every second), so the test takes seconds, not minutes.
The web hook destination is a closed port: every delivery fails, the last attempt is a dead letter.
The Grafana dashboard's queries are checked against the metric families the running service exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port, serve_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "pacs-triage-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pacs-triage-dashboard.json"

pytestmark = pytest.mark.timeout(180)


def fast_rules(path: Path) -> None:
    """The shipped rules with every hold (`for:`) at 0 s and recording rules evaluated each second."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serve")
    data = tmp_path / "data"
    port, http_port, closed = free_port(), free_port(), free_port()
    cfg = tmp_path / "pacs-triage.toml"
    cfg.write_text(f'stable_after = 1\nsink_attempts = 2\nsink_backoff = 0.2\n'
                   f'webhook = ["http://127.0.0.1:{closed}/hook"]\nwebhook_timeout = 2\n')
    env = dict(os.environ)
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    with serve_process(data, tmp_path / "serve.log", ["--config", cfg, "--port", port], env,
                       http_port=http_port, ready_timeout=60):
        yield {"port": port, "http": http_port}


@pytest.fixture
def prometheus(tmp_path, service):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make test` installs Debian's prometheus package"
    rules = tmp_path / "rules.yaml"
    fast_rules(rules)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "pacs-triage-listener",
                            "static_configs": [{"targets": [f"127.0.0.1:{service['http']}"]}]}],
    }))
    web = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web}"

    def scraping():
        try:
            targets = get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
        except OSError:
            return False
        return targets and all(t["health"] == "up" for t in targets)

    try:
        wait_for(scraping, timeout=60, what="Prometheus scraping the service")
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def firing(base: str) -> dict[str, list[dict]]:
    alerts = get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
    out: dict[str, list[dict]] = {}
    for a in alerts:
        if a["state"] == "firing":
            out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
    return out


def test_sink_down_fires_its_alerts_in_a_real_prometheus(service, prometheus, tmp_path):
    time.sleep(3)  # a few scrapes at zero first: increase() needs a sample before the failure
    assert "PacsTriageSinkFailures" not in firing(prometheus)
    assert "PacsTriageRedisUnreachable" not in firing(prometheus)
    assert "PacsTriageListenerDown" not in firing(prometheus)

    spec = StudySpec(accession="ACC-PROM", series=[SeriesSpec("DX", "RACHIS LOMBAIRE FACE", 1)])
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "s", spec))

    def sink_alerts():
        now = firing(prometheus)
        if "PacsTriageSinkFailures" in now and "PacsTriageSinkDeadLetters" in now:
            return now

    now = wait_for(sink_alerts, timeout=60, interval=0.5, what="the sink alerts firing in Prometheus")
    assert [labels["sink"] for labels in now["PacsTriageSinkFailures"]] == ["webhook"]
    assert [labels["sink"] for labels in now["PacsTriageSinkDeadLetters"]] == ["webhook"]
    assert now["PacsTriageSinkDeadLetters"][0]["severity"] == "critical"
    for healthy in ("PacsTriageDown", "PacsTriageListenerDown", "PacsTriageRedisUnreachable",
                    "PacsTriageDiskBelowWatermark", "PacsTriageStoreFailures"):
        assert healthy not in now, f"{healthy} fires on a healthy service"


def exported_names(metrics_text: str) -> set[str]:
    """Sample names the exposition announces (a histogram family gives _bucket, _sum, _count)."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind == "histogram":
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
    return names


PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                "offset", "bool", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, matchers, ranges, groupings, functions removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    return {m.group(1) for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?", e)
            if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS}


def dashboard_exprs() -> list[str]:
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in walk(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]


def recorded_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def test_dashboard_queries_use_metrics_the_service_exports(service):
    with urllib.request.urlopen(f"http://127.0.0.1:{service['http']}/metrics", timeout=5) as r:
        exported = exported_names(r.read().decode())
    assert "pacs_triage_redis_up" in exported and "pacs_triage_listener_up" in exported
    used = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    assert used, "no query found in the dashboard"
    unknown = used - exported - recorded_names()
    assert not unknown, f"dashboard queries metrics the running service does not export: {sorted(unknown)}"

"""Hot reload of the rulebook in a running `serve`: a good edit takes effect, a bad one is
rejected with file:line and the previous rulebook stays active; the service keeps serving."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import rules
from peers import dcmtk, free_port, service_ready, wait_for


def readyz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
        return json.loads(r.read())


def rulebook_version(port: int) -> str:
    return readyz(port)["checks"]["rulebook"]["detail"]


@pytest.fixture
def serve_with_rules(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(Path(rules.__file__).parent, rules_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cfg = tmp_path / "pacs-triage.toml"
    port, http = free_port(), free_port()
    cfg.write_text(f'rules_dir = "{rules_dir}"\ndata_dir = "{tmp_path / "data"}"\nport = {port}\n'
                   f'http_port = {http}\nbind = "127.0.0.1"\nhttp_bind = "127.0.0.1"\n')
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)

    wait_for(lambda: service_ready(http, proc, tmp_path / "serve.log"), timeout=30, what="serve")
    yield {"proc": proc, "rules": rules_dir, "port": port, "http": http, "log": tmp_path / "serve.log"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


def test_sighup_and_file_watch_reload_good_rules_and_reject_bad_ones(serve_with_rules):
    s = serve_with_rules
    first = rulebook_version(s["http"])
    early = s["rules"] / "early.yaml"
    original = early.read_text()

    early.write_text(original + "\n# reviewed by the radiology safety board\n")
    s["proc"].send_signal(signal.SIGHUP)
    second = wait_for(lambda: (v := rulebook_version(s["http"])) != first and v, timeout=10, what="reload")

    lines = original.splitlines()
    lines.insert(3, "  - id: [unclosed")  # YAML error on line 4
    early.write_text("\n".join(lines) + "\n")
    wait_for(lambda: "early.yaml:" in s["log"].read_text(), timeout=10, what="rejection logged by the file watch")
    assert rulebook_version(s["http"]) == second, "the previous rulebook stays active"

    def reload_failures() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{s['http']}/metrics", timeout=3) as r:
            failures = [line for line in r.read().decode().splitlines()
                        if line.startswith("pacs_triage_rulebook_reload_failures_total ")]
        return float(failures[0].split()[1])

    # every process watches the files (2 s ticks): the worker child may log the rejection before this process counts it
    wait_for(lambda: reload_failures() >= 1, timeout=10, what="the rejection counted in /metrics")
    assert rulebook_version(s["http"]) == second
    assert readyz(s["http"])["ready"]
    dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", s["port"])  # still serving

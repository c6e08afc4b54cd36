"""Configuration precedence and errors; the HTTP endpoints."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from core import metrics  # noqa: F401  (registers the metrics)
from agent.cli import main
from core.config import Config, ConfigError, DicomNode
from agent.http import HttpServer


def test_defaults_are_the_embedded_one_box_service():
    cfg = Config.load(env={})
    assert (cfg.ae_title, cfg.port, cfg.http_port, cfg.stable_after, cfg.redis_url) == ("PACSTRIAGE", 11112, 9108,
                                                                                        10.0, None)


def test_file_then_environment_then_command_line(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('port = 2000\nstable_after = 3\nae_title = "FILEAET"\npacs = ["PACS@10.0.0.1:104"]\n')
    cfg = Config.load(f, env={"PACS_TRIAGE_PORT": "3000"}, overrides={"ae_title": "CLIAET"})
    assert cfg.port == 3000 and cfg.stable_after == 3.0 and cfg.ae_title == "CLIAET"
    assert cfg.pacs == [DicomNode("PACS", "10.0.0.1", 104)]
    env = Config.load(env={"PACS_TRIAGE_CONFIG": str(f), "PACS_TRIAGE_PACS": "A@h:1,B@h:2"})
    assert [n.aet for n in env.pacs] == ["A", "B"] and env.port == 2000


@pytest.mark.parametrize("text", ["PACS", "PACS@host", "@host:104", "PACS@host:0", "WAYTOOLONGAETITLE17@h:1"])
def test_bad_dicom_node_is_a_clear_error(text):
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        DicomNode.parse(text)


def test_unknown_option_in_file_is_rejected(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        Config.load(f, env={})


def test_cli_reports_configuration_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["worklist", "--redis-url", "redis://127.0.0.1:1/0", "--config", str(tmp_path / "none.toml")]) == 2
    assert "configuration error" in capsys.readouterr().err


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_http_endpoints():
    state = {"redis": True}
    server = HttpServer("127.0.0.1", 0, checks={"redis": lambda: (state["redis"], "ping")})
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, ctype, body = get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain") and b'pacs_triage_instances_received_total{status="stored"}' in body
        assert get(base + "/healthz")[0] == 200
        code, _, body = get(base + "/readyz")
        assert code == 200 and json.loads(body)["ready"] is True
        state["redis"] = False
        code, _, body = get(base + "/readyz")
        assert code == 503 and json.loads(body)["checks"]["redis"]["ok"] is False
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()

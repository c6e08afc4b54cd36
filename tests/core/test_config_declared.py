"""Every documented option is a declared field that loads from a file, a section and the environment."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from agent.cli import main
from core.config import OPTION_NAMES, Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "config.example.toml"

#: One valid environment value per option type, to prove each option can be set.
SAMPLES = {"bool": "true", "int": "7", "float": "2.5", "str": "X", "Path": "/tmp/x", "dict": "STAT=HIGH",
           "list[DicomNode]": "A@h:1", "list[str]": "h:1", "list[float]": "60,300", "DicomNode": "A@h:1"}


def sample(f) -> str:
    for key in sorted(SAMPLES, key=len, reverse=True):
        if str(f.type).startswith(key):
            return SAMPLES[key]
    raise AssertionError(f"no sample for {f.name}: {f.type}")


def example_assignments() -> list[str]:
    """Every `key = value` of the example file, commented out or not, in its section."""
    out, section = [], None
    for line in EXAMPLE.read_text().splitlines():
        text = line.lstrip("# ").rstrip()
        if re.fullmatch(r"\[(\w+)\]", text):
            section = text
        elif re.match(r"[a-z_0-9]+ = ", text):
            out.append(f"{section}\n{text}" if section else text)
    return out


def test_every_option_is_declared_with_a_description():
    for f in fields(Config):
        assert f.metadata.get("help"), f"{f.name} has no description"


@pytest.mark.parametrize("f", fields(Config), ids=lambda f: f.name)
def test_every_option_can_be_set_from_the_environment(f):
    cfg, sources = Config.load_with_sources(env={"PACS_TRIAGE_" + f.name.upper(): sample(f)})
    assert sources[f.name].startswith("environment") and getattr(cfg, f.name) not in (None, [], {})


def test_every_assignment_of_the_example_file_loads(tmp_path):
    assignments = example_assignments()
    assert len(assignments) > 30
    seen = set()
    for text in assignments:
        path = tmp_path / "one.toml"
        path.write_text(text + "\n")
        _, sources = Config.load_with_sources(path, env={})
        seen |= {name for name, source in sources.items() if source.startswith("file")}
    assert seen == set(OPTION_NAMES), f"options missing from {EXAMPLE.name}: {sorted(set(OPTION_NAMES) - seen)}"


def test_the_example_file_loads_as_a_whole():
    with open(EXAMPLE, "rb") as fh:
        tomllib.load(fh)
    Config.load(EXAMPLE, env={})


def test_readme_environment_variables_are_options():
    names = set(re.findall(r"PACS_TRIAGE_([A-Z_]+)=", (ROOT / "README.md").read_text()))
    assert names and {n.lower() for n in names} - {"config"} <= set(OPTION_NAMES)


def test_sections_map_to_options(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[hl7]\ndestinations = ["ris:2575"]\nsending_facility = "HOSP"\npriority_map = {URGENT = "S"}\n'
                    '[ups]\ntimeout = 3\nworklist_label = "SPINE"\n[pacs]\ndestinations = ["P@h:104"]\n'
                    'priors = "Q@h:105"\n')
    cfg = Config.load(path, env={})
    assert cfg.hl7 == ["ris:2575"] and cfg.hl7_sending_facility == "HOSP" and cfg.hl7_priority_map == {"URGENT": "S"}
    assert cfg.ups_timeout == 3.0 and cfg.ups_worklist_label == "SPINE"
    assert str(cfg.pacs[0]) == "P@h:104" and str(cfg.priors_node) == "Q@h:105"


def test_unknown_key_in_a_section_is_rejected(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[hl7]\nsending_facilty = 1\n")
    with pytest.raises(ConfigError, match=r"\[hl7\] sending_facilty"):
        Config.load(path, env={})


def test_the_sinks_read_the_declared_settings(tmp_path):
    from workers.sinks import hl7, ups

    path = tmp_path / "c.toml"
    path.write_text('[hl7]\nsending_application = "TRIAGE"\nreceiving_facility = "RADIOLOGY"\n'
                    'priority_map = {ROUTINE = "T"}\n[ups]\nworklist_label = "SPINE"\n')
    cfg = Config.load(path, env={})
    entry = {"study_instance_uid": "1.2.3", "accession_number": "A1", "priority": "ROUTINE", "flags": [], "revision": 1}
    assert hl7.hl7_priority("ROUTINE", cfg) == "T"
    assert ups.build_workitem(entry, cfg).WorklistLabel == "SPINE"
    msh = str(hl7.build_message(entry, cfg).segment("MSH"))
    assert "TRIAGE" in msh and "RADIOLOGY" in msh


def test_config_show_names_the_source_of_each_value(tmp_path, capsys, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("stable_after = 4\nwebhook_secret = \"s3cret\"\n")
    monkeypatch.setenv("PACS_TRIAGE_WORKERS", "3")
    assert main(["config", "show", "--json", "--config", str(path), "--port", "2104"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["stable_after"]["value"] == 4.0 and rows["stable_after"]["source"] == f"file {path}"
    assert rows["workers"]["source"] == "environment PACS_TRIAGE_WORKERS"
    assert rows["port"]["value"] == 2104 and rows["port"]["source"] == "command line"
    assert rows["ae_title"]["source"] == "default"
    assert rows["webhook_secret"]["value"] == "***"

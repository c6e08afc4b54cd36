"""The rule files' JSON Schema: shipped for editors, checked first by `rules check`."""

from __future__ import annotations

import json

import pytest

from rules import schema
from rules.commands import check
from rules.engine import DEFAULT_DIRECTORY
from rules.loader import rule_files


def test_the_shipped_schema_is_the_one_rules_check_uses():
    assert json.loads(schema.SHIPPED.read_text()) == schema.schema()


@pytest.mark.parametrize("path", rule_files(DEFAULT_DIRECTORY), ids=lambda p: p.name)
def test_every_shipped_rule_file_follows_the_schema(path):
    assert schema.problems(path) == []


@pytest.mark.parametrize("change, message", [
    ("    priority: STAT\n", "    priority: HIGHEST\n"),
    ("    scenario: 1\n", "    scenario: 1\n    colour: red\n"),
    ("    flags: [epidural_haematoma]\n", "    flags: [epidural_hematoma_typo]\n"),
])
def test_a_departure_is_reported_with_file_and_line(tmp_path, capsys, change, message):
    for f in rule_files(DEFAULT_DIRECTORY):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    early = tmp_path / "early.yaml"
    text = early.read_text(encoding="utf-8")
    assert change in text
    early.write_text(text.replace(change, message, 1), encoding="utf-8")
    errors = schema.problems(early)
    assert errors and all(e.line > 1 for e in errors), [str(e) for e in errors]
    assert check(tmp_path) == 1
    assert "early.yaml:" in capsys.readouterr().out

"""Comparison hints come from rules/policy/comparison.yaml, checked like the rule files."""

from __future__ import annotations

import pytest
import yaml

from rules import comparison


def test_the_shipped_policy_is_complete_and_referenced():
    doc = comparison.load()
    assert set(doc["hints"]) == set(comparison.NAMES)
    assert all(h["reference"] for h in doc["hints"].values())


def test_hint_fills_placeholders():
    assert comparison.hint("recent_comparable", modalities="MR", date="2026-01-02", days=40) == (
        "Latest comparable MR of 2026-01-02 (40 days) — compare for progression")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["hints"].pop("conflict"), "missing"),
    (lambda d: d["hints"]["conflict"].update(text="{patient_name}"), "unknown placeholder"),
    (lambda d: d["hints"]["conflict"].pop("reference"), "reference"),
    (lambda d: d["settings"].update(contrast_unhelpful_after_months=-1), "non-negative"),
])
def test_a_broken_policy_names_file_and_key(tmp_path, mutate, message):
    doc = yaml.safe_load(comparison.DEFAULT_FILE.read_text())
    mutate(doc)
    path = tmp_path / "comparison.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(comparison.PolicyError, match=message):
        comparison.load(path)

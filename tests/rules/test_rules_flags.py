"""The flag vocabulary is clinical policy in rules/policy/flags.yaml, not Python."""

from __future__ import annotations

import pytest

from rules import model
from rules.model import Priority


def test_the_vocabulary_comes_from_the_policy_file():
    assert model.HEADLINE_FLAGS == ("epidural_haematoma", "misplaced_screw", "cord_compression")
    assert len(model.FLAG_CODES) == 20
    assert model.DEFAULT_PRIORITIES["epidural_haematoma"] is Priority.STAT
    assert model.DEFAULT_PRIORITIES["screw_loosening"] is Priority.ROUTINE


def test_a_headline_flag_must_be_a_listed_code(tmp_path):
    bad = tmp_path / "flags.yaml"
    bad.write_text("headline: [no_such_flag]\nflags: {csf_leak: URGENT}\n")
    with pytest.raises(ValueError, match="headline"):
        model._flag_vocabulary(bad)

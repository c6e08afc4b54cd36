"""Properties of the round-12 classes (session 4, issue 9), on generated text (not from any round):

- weakness of both legs or both hands in other words is a cord question (STAT, cord_compression), never when negated;
- an earlier value written after the current one is a trend ("Hb 85 (from 140)"); a heart rate at or above the systolic
  pressure (shock index >= 1) makes a bleeding STAT, but is not a shock on its own (fever with tachycardia stays URGENT);
- a red-flag list explained or checked, then closed by "none", is negated; a new emergency after it is not;
- a measurement's shock_index must name another measurement, a concept and a reference (the loader refuses it otherwise).
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.priority import Priority
from rules.engine import DEFAULT_DIRECTORY, Rulebook, RulebookError
from rulebook_probe import RB, codes, triage

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


OPS = ["T9-T11 laminectomy yesterday.", "C5-C7 posterior fixation 3 h ago.", "Laminectomie D6-D8 hier.", "POD2 after T12-L2 fixation."]
BILATERAL = ["Progressive weakness of both legs", "Legs getting weaker since noon", "Unable to move both lower limbs",
             "Power 1/5 b/l", "Can't grip with either hand", "Cannot lift either leg", "Faiblesse des deux jambes",
             "Weak grip bilaterally", "Both legs feel heavy"]
NEGATED = ["No weakness of either leg", "No weakness in both legs", "Power 5/5 in both legs", "Pas de faiblesse des deux jambes"]


@SETTINGS
@given(st.sampled_from(OPS), st.sampled_from(BILATERAL))
def test_bilateral_weakness_in_other_words_is_a_cord_question(op, finding):
    out = triage(f"{op} {finding}.")
    assert out.priority == Priority.STAT and "cord_compression" in codes(out), out.explain


@SETTINGS
@given(st.sampled_from(OPS), st.sampled_from(NEGATED))
def test_negated_bilateral_weakness_raises_nothing(op, finding):
    out = triage(f"{op} {finding}. Wound check.")
    assert "cord_compression" not in codes(out) and out.priority < Priority.STAT, out.explain


@pytest.mark.parametrize("text, value, earlier", [
    ("Hb 85 (from 140)", 8.5, 14.0), ("Hb 8.1, was 12.9", 8.1, 12.9), ("Hb 92 g/L down from 131", 9.2, 13.1),
    ("Hb 7,9 contre 12,4", 7.9, 12.4),
])
def test_earlier_value_written_second_is_a_trend(text, value, earlier):
    found = [m for m in RB.matcher.measure.find(text, {"keyword": "ReasonForTheRequestedProcedure"}) if "bleeding" in m.concepts]
    assert found and found[0].measurement["value"] == value and found[0].measurement["from"] == earlier


def test_a_small_fall_written_second_is_no_bleeding():
    found = RB.matcher.measure.find("Hb 11.4 (from 12.6)", {"keyword": "ReasonForTheRequestedProcedure"})
    assert not any("bleeding" in m.concepts for m in found)


@pytest.mark.parametrize("text, stat", [
    ("XLIF L3-4 yesterday. Hb 85 (from 140), HR 118, BP 95/60.", True),       # bleeding + shock index 1.24
    ("ALIF L5-S1 POD1, Hb 8.1 was 12.9, pulse 104, BP 100/70.", True),          # 1.04
    ("ALIF L5-S1 POD1, Hb 8.1 was 12.9, pulse 84, BP 120/70.", False),          # 0.7: URGENT bleeding
    ("TLIF L4-5 3 days ago. T 38.6, HR 118, BP 92/60, wound oozing.", False),  # no bleeding: infection, URGENT
])
def test_shock_index_makes_a_bleeding_stat_only(text, stat):
    out = triage(text)
    assert (out.priority == Priority.STAT) is stat, out.explain
    assert out.priority >= Priority.URGENT


@pytest.mark.parametrize("verb", ["explained", "discussed", "checked", "screened for", "recherchés"])
def test_red_flag_list_explained_then_none(verb):
    out = triage(f"6 weeks post L4-5 laminectomy, improving. Red flags (saddle numbness, retention, leg weakness) {verb} - none present.")
    assert out.priority == Priority.ROUTINE, out.explain
    out = triage(f"6 weeks post L4-5 laminectomy. Red flags {verb} at discharge. Now new saddle numbness and retention.")
    assert out.priority == Priority.STAT, out.explain


@pytest.mark.parametrize("old, new", [
    ("with: systolic_pressure", "with: blood_pressure"), ("concept: shock_index", "concept: shock_idx"),
])
def test_loader_refuses_a_bad_shock_index(tmp_path, old, new):
    for f in DEFAULT_DIRECTORY.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "measurements.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RulebookError) as info:
        Rulebook.load(tmp_path)
    assert "shock_index" in info.value.message

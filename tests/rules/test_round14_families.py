"""Properties of the round-14 classes (session 4, issue 9), on generated text (not from any round):

- a sacral dermatome scored 0 or 1 out of 2 after surgery is STAT (saddle anaesthesia); 2/2 never is;
- the day a read is wanted ("please report today") is no day of the operation: the time since surgery comes from the
  operation's own time;
- a complaint "since" an earlier year is pre-existing, unless it is said to be worse or new;
- a recovering grade series outside the first days raises nothing; in the first days it stays STAT;
- a retention ended by a passed TWOC raises nothing; a failed one stays STAT.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.priority import Priority
from rulebook_probe import triage

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


OPS_EARLY = ["L4-5 decompression yesterday.", "POD1 microdiscectomy L5/S1.", "Laminectomie L3-L4 hier.", "TLIF L4/5 this morning."]
SACRAL = ["S3-S5", "S4-5", "S2-S4", "S3 to S5"]
MODES = ["light touch", "pin prick", "LT", "PP"]


@SETTINGS
@given(st.sampled_from(OPS_EARLY), st.sampled_from(SACRAL), st.sampled_from(MODES), st.sampled_from(["0/2", "1/2"]))
def test_sacral_dermatome_scored_low_is_stat(op, level, mode, score):
    out = triage(f"{op} Neuro obs: {level} {mode} {score}.")
    assert out.priority == Priority.STAT
    assert "epidural_haematoma" in {f.code for f in out.flags}


@SETTINGS
@given(st.sampled_from(OPS_EARLY), st.sampled_from(SACRAL), st.sampled_from(MODES))
def test_sacral_dermatome_normal_is_not(op, level, mode):
    out = triage(f"{op} Neuro obs: {level} {mode} 2/2. Wound check.")
    assert out.priority == Priority.ROUTINE


@SETTINGS
@given(st.sampled_from(["Please report today.", "Surgeon wants read today.", "Result needed today before clinic.",
                        "Pls report today if possible."]), st.sampled_from([6, 8, 10]))
def test_day_the_read_is_wanted_is_not_the_operation_day(ask, weeks):
    out = triage(f"L4-5 microdiscectomy {weeks} weeks ago, no relief, same leg pain. {ask}")
    assert out.postop_interval_hours is not None and out.postop_interval_hours >= 24 * 7 * (weeks - 1)
    assert "misplaced_screw" not in {f.code for f in out.flags}


@SETTINGS
@given(st.sampled_from(["Complete T6 paraplegia", "Incomplete paraparesis", "Paraplégie D8"]),
       st.sampled_from(["since RTA 2011", "since 2015", "depuis 2010", "since fall 2009"]))
def test_since_an_earlier_year_is_pre_existing_unless_worse(finding, since):
    assert triage(f"{finding} {since}. CT for metalwork review.").priority == Priority.ROUTINE
    assert triage(f"{finding} {since}, now worse over 2 days.").priority == Priority.STAT


@SETTINGS
@given(st.sampled_from(["EHL", "TA", "Quadriceps"]), st.sampled_from([(2, 4), (1, 3), (3, 4)]))
def test_recovering_grade_series(muscle, grades):
    a, b = grades
    late = triage(f"4 months after L4-5 decompression for foot drop; {muscle} improving {a}/5 -> {b}/5. Routine MRI.")
    assert late.priority == Priority.ROUTINE
    early = triage(f"TLIF L4/5 yesterday, {muscle} improving {a}/5 -> {b}/5.")
    assert early.priority == Priority.STAT


def test_retention_ended_by_a_passed_twoc_raises_nothing_but_a_failed_one_does():
    assert triage("PLIF L5/S1 POD2. Retention day 0, TWOC day 1 passed, voiding.").priority == Priority.ROUTINE
    assert triage("PLIF L5/S1 POD2. Retention, TWOC failed, recatheterised 1.1 L.").priority == Priority.STAT

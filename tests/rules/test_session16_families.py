"""Properties of session 16's classes (issue 9), on generated text (not from any round):

- values listed with their day after each ("Hb 13,1 (J0) / 10,4 (J1) / 8,0 (J2)") are a trend from the first to the last:
  a fall of 2 g/dL or more is a bleeding, a smaller one that stays at or above 8 is not;
- a consent cue that holds a word of the present ("Consented today for: ...") still opens its list: the items are
  hypothetical, and a new finding in the next sentence is not.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.priority import Priority
from rulebook_probe import RB, triage

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELD = {"keyword": "ReasonForTheRequestedProcedure"}


def _series(values: list[float], sep: str, decimal: str, label: str) -> str:
    items = [f"{v:.1f}".replace(".", decimal) + f" ({label}{d})" for d, v in enumerate(values)]
    return "Hb " + f" {sep} ".join(items)


@SETTINGS
@given(first=st.floats(11.0, 15.0), fall=st.floats(2.1, 3.0), mid=st.floats(0.2, 0.8), sep=st.sampled_from(["/", ",", ";"]),
       decimal=st.sampled_from([".", ","]), label=st.sampled_from(["J", "D", "POD", "day "]))
def test_a_listed_fall_of_two_or_more_is_a_bleeding(first, fall, mid, sep, decimal, label):
    values = [first, first - fall * mid, first - fall]
    found = [m for m in RB.matcher.measure.find(_series(values, sep, decimal, label), FIELD) if "bleeding" in m.concepts]
    assert found, _series(values, sep, decimal, label)
    assert abs(found[0].measurement["from"] - round(first, 1)) < 0.06


@SETTINGS
@given(first=st.floats(11.0, 15.0), fall=st.floats(0.0, 1.8), sep=st.sampled_from(["/", ","]), label=st.sampled_from(["J", "D"]))
def test_a_small_listed_fall_above_eight_is_no_bleeding(first, fall, sep, label):
    text = _series([first, first - fall / 2, first - fall], sep, ".", label)
    assert not [m for m in RB.matcher.measure.find(text, FIELD) if "bleeding" in m.concepts], text


@SETTINGS
@given(when=st.sampled_from(["today", "in clinic today", "this morning"]),
       items=st.permutations(["infection", "bleeding/haematoma", "nerve damage", "cauda equina syndrome", "paralysis"]))
def test_a_consent_cue_with_a_word_of_the_present_opens_its_list(when, items):
    text = f"Pre-op MRI, L4-5 decompression booked next month. Consented {when} for: {', '.join(items)}."
    out = triage(text)
    assert out.priority == Priority.ROUTINE, text
    after = text + " Since this morning new urinary retention 900 ml and saddle numbness."
    assert triage(after).priority == Priority.STAT

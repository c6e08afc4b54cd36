"""Properties of the round-13 classes (session 4, issue 9), on generated text (not from any round):

- the period of an abbreviation ends no scope: a consent list after "risks incl." stays hypothetical, while findings said
  current after "incl." still raise;
- a year after a measurement's name is a date, not a value ("rétention urinaire en 2019"); a volume with its unit still is;
- a finding dated by an old event's year is history; the same event without a year (possibly yesterday's) is not;
- vasopressors with fever or an infected wound are a septic shock (STAT), fever alone is not;
- a haematoma named for the operative bed or a subcutaneous swelling is bleeding (URGENT), a plain query stays STAT.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.priority import Priority
from rulebook_probe import codes, triage
from rules.text import tokenize

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


EMERGENCIES = ["haematoma", "CES", "cauda equina syndrome", "urinary retention", "epidural haematoma"]
OTHERS = ["dural tear", "infection", "nerve damage", "death", "stroke", "bleeding"]


def test_abbreviation_period_is_no_sentence_end():
    assert [t.norm for t in tokenize("risks incl. haematoma")] == ["risks", "incl", "hematoma"]
    assert [t.norm for t in tokenize("done. haematoma")] == ["done", ".", "hematoma"]
    assert [t.norm for t in tokenize("risks e.g. haematoma")] == ["risks", "e", "g", "hematoma"]
    assert [t.norm for t in tokenize("see. Haematoma")] == ["see", ".", "hematoma"]


@SETTINGS
@given(st.lists(st.sampled_from(EMERGENCIES + OTHERS), min_size=2, max_size=5, unique=True), st.sampled_from(["incl.", "including", "incl"]))
def test_consent_risk_list_raises_nothing(items, cue):
    out = triage(f"Pre-op. Consented for L4-5 decompression, discussed risks {cue} {', '.join(items)}. Claudication only.")
    assert out.priority == Priority.ROUTINE, items


@pytest.mark.parametrize("item", EMERGENCIES)
def test_current_finding_after_incl_still_raises(item):
    out = triage(f"Day 2 after L4-5 laminectomy. Symptoms incl. {item} since this morning.")
    assert out.priority == Priority.STAT


@pytest.mark.parametrize("name", ["rétention urinaire", "globe vésical", "bladder scan", "résidu post-mictionnel"])
@pytest.mark.parametrize("year", [1998, 2015, 2019, 2024])
def test_year_after_measurement_name_is_a_date(name, year):
    out = triage(f"Contrôle à 1 an de la décompression L4-L5. ATCD de {name} en {year} (prostate). Aucun symptôme actuel.")
    assert out.priority == Priority.ROUTINE
    assert triage(f"J1 décompression L4-L5. {name} 900 mL ce matin.").priority == Priority.STAT


@pytest.mark.parametrize("event", ["MVA", "RTA", "fall", "accident"])
def test_deficit_dated_by_an_old_event_year(event):
    assert triage(f"Paraplegia since {event} 2009. T11-L2 fixation 2009, back pain.").priority == Priority.ROUTINE
    assert triage(f"T11-L2 fixation last year. Paraplegia since {event} yesterday.").priority == Priority.STAT


@pytest.mark.parametrize("drug", ["on pressors", "on norad", "sous amines", "on vasopressors"])
def test_vasopressors_with_fever_is_septic_shock(drug):
    out = triage(f"Day 10 after L2-S1 fusion, {drug} in ICU, T 39.5, pus from the wound.")
    assert out.priority == Priority.STAT and "surgical_site_infection" in codes(out)
    assert triage("Day 10 after L2-S1 fusion, T 39.5, pus from the wound.").priority == Priority.URGENT


def test_wound_haematoma_is_bleeding_plain_query_stays_stat():
    out = triage("POD1 L3-5 laminectomy. Hb 9.1 from 12.4, stable. Subcutaneous swelling lower back, eval for hematoma.")
    assert out.priority == Priority.URGENT and "active_bleeding" in codes(out) and "epidural_haematoma" not in codes(out)
    out = triage("POD1 L3-5 laminectomy. Hb 9.1 from 12.4, stable. ?hematoma")
    assert out.priority == Priority.STAT and "epidural_haematoma" in codes(out)
    out = triage("J1 laminectomie L4-L5. Hématome de la loge ? Nouveau déficit des releveurs.")
    assert out.priority == Priority.STAT

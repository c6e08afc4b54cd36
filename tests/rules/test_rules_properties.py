"""Property-based tests (hypothesis) of the rulebook as a whole.

- adding an affirmed emergency cue never lowers the priority (and gives STAT);
- negating a cue never raises the priority;
- appending unrelated text, moving sentences between attributes, changing case or
  accents, or reordering sentences never changes the result;
- generated time expressions map to the right interval and window.
"""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.casebook import build_study
from rules.engine import Rulebook
from rules.model import Priority

RB = Rulebook.load()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Whole sentences a referrer writes (no "ces"/"CES": upper-casing the French word is a known trap tested apart).
SENTENCES = [
    "TLIF L4-L5 J+2",
    "Discectomie L5-S1 il y a 3 jours",
    "Laminectomy L3-L5 POD 1",
    "Arthrodèse L4-S1 en 2019",
    "Microdiscectomy 6/52 ago",
    "Lumbar decompression 3 months ago",
    "Radiculalgie L5 gauche nouvelle",
    "New left leg pain",
    "Pas de fièvre",
    "No fever",
    "Lombalgies mécaniques",
    "Mild back pain",
    "Cicatrice propre",
    "Wound clean and dry",
    "Contrôle systématique",
    "Routine follow-up",
    "Douleur différente, nocturne",
    "Same pain as before surgery, no improvement",
    "Fièvre 38,9 et écoulement de la cicatrice",
    "?vis L5 droite",
    "Céphalées posturales",
    "Mollet gauche douloureux",
    "Récidive de sciatique après intervalle libre",
    "Flexion-extension views please",
]
UNRELATED = [
    "Patient lives alone",
    "Allergic to penicillin",
    "Interpreter needed",
    "Please send report to the GP",
    "Patiente anxieuse",
    "Mobilité réduite, brancard",
    "Weight 82 kg",
    "Contact: ward 12",
]
#: (affirmed, negated) pairs of emergency cues.
EMERGENCIES = [
    ("Urinary retention", "No urinary retention"),
    ("Saddle anaesthesia", "No saddle anaesthesia"),
    ("Rétention urinaire", "Pas de rétention urinaire"),
    ("Anesthésie en selle", "Pas d'anesthésie en selle"),
    ("Paraplégie", "Pas de paraplégie"),
    ("?epidural haematoma", "Epidural haematoma ruled out"),
    ("Hématome épidural suspecté", "Absence d'hématome épidural"),
    ("Cauda equina syndrome", "No cauda equina syndrome"),
    ("Incontinence", "Denies incontinence"),
]

sentences = st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=5, unique=True)


def run(fields: dict, order: str | None = None):
    data = {"fields": fields}
    if order:
        data["order_priority"] = order
    out = RB.evaluate(build_study(data))
    return out.priority, sorted(f.code for f in out.flags)


def text(parts: list[str]) -> str:
    return ". ".join(parts) + "."


@SETTINGS
@given(sentences, st.sampled_from(EMERGENCIES), st.sampled_from([None, "ROUTINE", "HIGH", "STAT"]))
def test_adding_an_affirmed_emergency_never_lowers_and_gives_stat(parts, cue, order):
    before, _ = run({"ReasonForTheRequestedProcedure": text(parts)}, order)
    after, _ = run({"ReasonForTheRequestedProcedure": text(parts + [cue[0]])}, order)
    assert after >= before
    assert after == Priority.STAT


@SETTINGS
@given(sentences, st.sampled_from(EMERGENCIES))
def test_negating_a_cue_never_raises(parts, cue):
    affirmed, _ = run({"ReasonForTheRequestedProcedure": text(parts + [cue[0]])})
    negated, _ = run({"ReasonForTheRequestedProcedure": text(parts + [cue[1]])})
    alone, _ = run({"ReasonForTheRequestedProcedure": text(parts)})
    assert negated <= affirmed
    assert negated == alone


@SETTINGS
@given(sentences, st.lists(st.sampled_from(UNRELATED), min_size=1, max_size=3))
def test_appending_unrelated_text_changes_nothing(parts, extra):
    assert run({"ReasonForTheRequestedProcedure": text(parts)}) == run({"ReasonForTheRequestedProcedure": text(parts + extra)})


@SETTINGS
@given(sentences, st.data())
def test_moving_sentences_between_attributes_changes_nothing(parts, data):
    whole = run({"ReasonForTheRequestedProcedure": text(parts)})
    keywords = ["ReasonForTheRequestedProcedure", "AdditionalPatientHistory", "RequestedProcedureComments", "StudyComments"]
    fields: dict[str, list[str]] = {}
    for p in parts:
        fields.setdefault(data.draw(st.sampled_from(keywords)), []).append(p)
    assert run({k: text(v) for k, v in fields.items()}) == whole


@SETTINGS
@given(sentences, st.permutations(range(5)))
def test_reordering_sentences_changes_nothing(parts, order):
    shuffled = [parts[i] for i in order if i < len(parts)]
    assert run({"ReasonForTheRequestedProcedure": text(parts)}) == run({"ReasonForTheRequestedProcedure": text(shuffled)})


def _strip_accents(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


@SETTINGS
@given(sentences, st.sampled_from(["upper", "lower", "strip_accents", "strip_and_upper"]))
def test_case_and_accents_change_nothing(parts, how):
    original = text(parts)
    changed = {
        "upper": original.upper(),
        "lower": original.lower(),
        "strip_accents": _strip_accents(original),
        "strip_and_upper": _strip_accents(original).upper(),
    }[how]
    assert run({"ReasonForTheRequestedProcedure": original}) == run({"ReasonForTheRequestedProcedure": changed})


UNITS = {
    "J+{n}": 24, "POD {n}": 24, "{n} days ago": 24, "il y a {n} jours": 24, "{n}/7": 24,
    "{n}/52": 24 * 7, "{n} weeks ago": 24 * 7, "{n}/12": 24 * 30.44, "il y a {n} mois": 24 * 30.44,
    "{n} h ago": 1,
}
PROCEDURES = ["TLIF L4-L5", "Laminectomy L3-L4", "Discectomie L5-S1", "ACDF C5-6", "Arthrodèse L4-S1", "Microdisc L4/5", "Kyphoplasty T12"]


@SETTINGS
@given(st.sampled_from(PROCEDURES), st.sampled_from(sorted(UNITS)), st.integers(min_value=1, max_value=11), st.booleans())
def test_generated_time_expressions_map_to_the_right_interval(procedure, pattern, n, before):
    expr = pattern.format(n=n)
    phrase = f"{expr} {procedure}" if before and not expr.endswith("ago") and not expr.startswith("il y a") else f"{procedure} {expr}"
    out = RB.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": phrase + ", routine control"}}))
    want = n * UNITS[pattern]
    assert out.postop_interval_hours is not None, phrase
    assert abs(out.postop_interval_hours - want) <= max(1, want * 0.01), (phrase, out.postop_interval_hours, want)
    expected_course = "early" if want <= 7 * 24 else None
    if expected_course:
        assert out.course.startswith("early"), (phrase, out.course)
    else:
        assert "early" not in out.course, (phrase, out.course)


@SETTINGS
@given(st.sampled_from(PROCEDURES), st.sampled_from(["booked for Monday", "prévue la semaine prochaine", "planned next week", "programmée demain"]))
def test_planned_surgery_is_not_postoperative(procedure, when):
    out = RB.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": f"{procedure} {when}. Sciatique L5"}}))
    assert out.context["postoperative"] == "no", out.context
    assert out.postop_interval_hours is None


@SETTINGS
@given(sentences, st.sampled_from(EMERGENCIES + [("", "")]))
def test_mojibake_changes_nothing(parts, cue):
    original = text(parts + ([cue[0]] if cue[0] else []))
    garbled = original.encode("utf-8").decode("latin-1")
    assert run({"ReasonForTheRequestedProcedure": original}) == run({"ReasonForTheRequestedProcedure": garbled})


DAY_WORDS = {"yesterday": 24, "last night": 12, "this morning": 4, "hier soir": 18, "ce matin": 4, "hier": 24,
             "avant-hier": 48, "today": 0, "aujourd'hui": 0}


@SETTINGS
@given(st.sampled_from(PROCEDURES), st.sampled_from(sorted(DAY_WORDS)), st.booleans())
def test_relative_day_words_tied_to_the_procedure_are_early(procedure, word, before):
    phrase = f"{word.capitalize()}, {procedure}" if before else f"{procedure} {word}"
    out = RB.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": phrase + ". Routine control"}}))
    assert out.postop_interval_hours is not None, phrase
    assert abs(out.postop_interval_hours - DAY_WORDS[word]) <= 6, (phrase, out.postop_interval_hours)
    assert out.course.startswith("early")


@SETTINGS
@given(st.sampled_from(PROCEDURES), st.integers(min_value=2000, max_value=2025))
def test_a_year_alone_dates_the_procedure_and_is_late(procedure, year):
    out = RB.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": f"{procedure} ({year}). Back pain"}}))
    assert out.postop_interval_hours is not None and out.postop_interval_hours >= 24 * 300, out.postop_interval_hours
    assert "early" not in out.course

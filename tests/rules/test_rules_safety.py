"""The safety net on its own: every emergency concept raises, whatever is known; it only raises."""

import time
import tracemalloc

import pytest

from rules.casebook import build_study
from rules.engine import Rulebook
from rules.model import Priority

RB = Rulebook.load()
#: The same rulebook with every rule removed: only the safety net is left.
NET_ONLY = Rulebook.load()
NET_ONLY.rules = []


def run(text, rb=RB, **kw):
    return rb.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": text}, **kw}))


EMERGENCIES = [
    "epidural hematoma, lumbar spine",
    "new foot drop, ?epidural haematoma",
    "suspicion d'hématome épidural compressif",
    "unable to pass urine since last night",
    "residual volume 700 ml on bladder scan",
    "can't feel when she needs to go",
    "ne sent plus les fesses",
    "n'urine plus depuis hier",
    "saddle numbness and incontinence",
    "syndrome de la queue de cheval",
    "paraparésie brutale",
    "weak in all 4 limbs",
    "Babinski bilatéral, niveau sensitif T10",
    "?conus infarct, flaccid legs",
    "collapsed, HR 135, BP 80/40, Hb 6.1 after back op",
    "choc hémorragique",
    "neck swelling and stridor after ACDF",
    "new leg weakness after kyphoplasty T12",
]


@pytest.mark.parametrize("text", EMERGENCIES)
def test_every_emergency_is_stat_with_the_net_alone(text):
    out = run(text, NET_ONLY)
    assert out.priority == Priority.STAT, (text, out.explain)
    assert any("Safety net" in e for e in out.explain)


@pytest.mark.parametrize("text", EMERGENCIES)
def test_every_emergency_is_stat_with_the_rulebook(text):
    assert run(text).priority == Priority.STAT


@pytest.mark.parametrize(
    "text",
    [
        "no urinary retention, no saddle anaesthesia",
        "pas d'hématome épidural",
        "h/o cauda equina syndrome in 2015, routine follow-up",
        "ATCD de syndrome de la queue de cheval",
        "if retention develops, call the on-call team",
        "en cas de rétention urinaire, refaire une IRM",
        "dressing applied to prevent bleeding",
        "mother had cauda equina syndrome",
        "CES DOULEURS LOMBAIRES SONT ANCIENNES",
    ],
)
def test_certainly_negated_historical_hypothetical_or_other_person_does_not_raise(text):
    assert run(text, NET_ONLY).priority == Priority.ROUTINE, text


def test_unknown_operation_raises_headline_flag_with_the_missing_context_in_evidence():
    out = run("?haematoma, bilateral leg weakness", NET_ONLY)
    flag = next(f for f in out.flags if f.code == "epidural_haematoma")
    notes = " ".join(e.note or "" for e in flag.evidence)
    assert "operation not recognised" in notes and "time since surgery unknown" in notes
    assert any(e.text == "?haematoma" or (e.text and "haematoma" in e.text) for e in flag.evidence)


def test_never_operated_raises_priority_without_postoperative_flag():
    out = run("Lombosciatique, rétention urinaire, jamais opéré")
    assert out.priority == Priority.STAT
    assert "epidural_haematoma" not in [f.code for f in out.flags]


def test_net_only_raises_never_lowers():
    out = run("contrôle", NET_ONLY, order_priority="STAT")
    assert out.priority == Priority.STAT
    assert run("TLIF J+2, fièvre 39", NET_ONLY).priority == Priority.ROUTINE  # the rules, not the net, do infection
    assert run("TLIF J+2, fièvre 39").priority == Priority.URGENT


def test_late_deficit_is_urgent_not_stat():
    out = run("TLIF 3 years ago, new weakness of the left leg")
    assert out.priority == Priority.URGENT


def test_eight_thousand_letter_word_is_bounded():
    tracemalloc.start()
    start = time.perf_counter()
    run("x" * 8000 + " hematome" + " " + "y" * 8000)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1 and peak < 20e6


def test_64kb_of_text_is_bounded():
    text = ("Arthrodèse L4-S1 J+2, pas de fièvre, radiculalgie L5 gauche nouvelle, ?vis. " * 900)[:65536]
    tracemalloc.start()
    out = run(text)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.priority == Priority.URGENT and peak < 30e6


def test_mojibake_is_repaired():
    out = run("hÃ©matome Ã©pidural aprÃ¨s laminectomie")
    assert out.priority == Priority.STAT


def test_no_pattern_backtracks_catastrophically_on_a_nursing_note():
    """Session 7: a lexicon pattern with a nested lazy repeat ("(?: [^.;|]+?){0,8}?") took 0.45 s on one 135-letter
    nursing note (a start word, "febrile" inside "afebrile", then no end in sight before the full stop) and grows
    exponentially with the clause; the rulebook reads such a note in milliseconds."""
    note = ("Obs: afebrile, wound clean and dry, no ooze, calves soft and non-tender, voiding well, power 5/5, "
            "sensation intact, no headache, temperature settled, head fine when sitting up, legs fine, screws fine")
    run(note)  # warm the caches
    start = time.perf_counter()
    run(note + ". " + note)
    assert time.perf_counter() - start < 0.3

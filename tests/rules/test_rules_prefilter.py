"""rules/prefilter.py: a pattern is skipped only when it cannot match. Checked on regex constructs one by one, and for
every lexicon pattern against the normalised texts of the casebook (a skipped pattern never matches there)."""

from __future__ import annotations

import re

import pytest

from rules.casebook import load_cases
from rules.engine import DEFAULT_DIRECTORY, Rulebook
from rules.prefilter import LiteralSet, required_literals
from rules.text import repair, tokenize


@pytest.mark.parametrize("pattern, literals", [
    (r"epidural h[e]matoma", {"epidural hematoma"}),  # a class of one letter is that letter
    (r"(?:foot|wrist) drop", {" drop"}),
    (r"(?:cauda|queue) equina|ces\b", {"ces", " equina"}),  # each alternative's longest run
    (r"\b(?:new )?weakness", {"weakness"}),
    (r"(?:very )?(?:x|y)", None),  # one letter of a class each: no literal run
    (r"(?i)HEMATOME", {"hematome"}),  # lower-cased: a necessary condition whatever the case flags
    (r"[a-z]+ screw", {" screw"}),
    (r"(?<=post )op", {"op"}),
    (r"a*b?", None),
    (r"(?:retention|globe){1,3}", {"retention", "globe"}),
])
def test_required_literals_of_each_construct(pattern, literals):
    got = required_literals(pattern)
    assert (got if got is None else set(got)) == literals


def test_the_literals_present_in_a_text():
    assert LiteralSet([None, frozenset({"abc"})]).present("xxABCxx") == {"abc"}


def _texts():
    seen = set()
    for case in load_cases(DEFAULT_DIRECTORY / "cases"):
        for value in (case.data.get("fields") or {}).values():
            words = " ".join(t.norm for t in tokenize(repair(str(value))))
            if words not in seen:
                seen.add(words)
                yield words


def test_a_skipped_lexicon_pattern_never_matches_the_casebook_texts():
    matcher = Rulebook.load().matcher
    assert len(matcher.patterns) > 300 and all(lit is not None for lit in matcher.pattern_literals)
    texts = list(_texts())[::3]  # a third of the casebook's fields (about 8,000): the suite's time budget
    skipped = wrong = 0
    for text in texts:
        present = matcher.all_literals.present(text)
        for (name, pattern), literals in zip(matcher.patterns, matcher.pattern_literals):
            if literals.isdisjoint(present):
                skipped += 1
                if pattern.search(text):
                    wrong += 1
    assert wrong == 0
    assert skipped > 0.8 * len(texts) * len(matcher.patterns)  # it does skip: most patterns cannot match most texts

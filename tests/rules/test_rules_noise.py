"""Referrer noise on the blind rounds' STAT texts (session 5): the texts were written blind, the perturbations by the
developers. An emergency must survive what terse notes and systems do to text: no punctuation, lower case (also of
mojibake), dropped articles; one typo in a long word is tolerated in nearly every case (bounded typo tolerance).
The transforms are in casebook_transforms; the cases are read on every core (casebook_pool), the random draws seeded
per case.
"""

from __future__ import annotations

import pytest

import casebook_pool
from casebook_transforms import blind_stat
from rules.casebook import load_cases

N_STAT = sum(1 for c in load_cases(casebook_pool.CASES_DIR) if blind_stat(c))


def test_there_are_blind_stat_cases():
    assert N_STAT > 700


@pytest.mark.parametrize("transform", ["telegraphic", "lower_mojibake"])
def test_every_blind_emergency_survives(transform):
    assert casebook_pool.stat_lost(transform) == []


def test_punctuation_lost_rarely_loses_an_emergency():
    # without its commas a text can really change meaning ("dysphagia, sats fine" -> "dysphagia sats fine"): 0.5 % at most
    lost = casebook_pool.stat_lost("no_punctuation")
    assert len(lost) <= N_STAT // 200, lost


def test_one_typo_in_a_long_word_rarely_loses_an_emergency():
    lost = casebook_pool.stat_lost("typo", seed=1)
    assert len(lost) <= N_STAT // 200, lost  # 0.5 %: a typo inside a regex-only phrase is not corrected

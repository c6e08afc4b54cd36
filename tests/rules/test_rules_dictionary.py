"""A real English or French word is never "corrected" into a lexicon word (session 9, round 56: "New inability to
urinate" was read "instability"); a misspelling still is."""

import pytest

from rules.engine import Rulebook
from rules.text import dictionary_word

MATCHER = Rulebook.load().matcher


@pytest.mark.parametrize("word", ["inability", "female", "riding", "revenir", "seulement", "missing"])
def test_a_dictionary_word_is_never_corrected(word):
    assert dictionary_word(word)
    assert MATCHER.correct(word) in (None, word)


@pytest.mark.parametrize("word", ["hematomme", "decompressn", "retenton"])
def test_a_misspelling_is_still_corrected(word):
    assert not dictionary_word(word)
    assert MATCHER.correct(word) not in (None, word)

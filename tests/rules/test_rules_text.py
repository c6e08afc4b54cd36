"""Clinical text matching: normalisation, negation scope, uncertainty, history, typos."""

import pytest

from rules.engine import Rulebook

MATCHER = Rulebook.load().matcher


def mentions(text):
    return {m.text: m for m in MATCHER.mentions({"value": text, "keyword": "ReasonForTheRequestedProcedure", "tag": "(0040,1002)"})}


def assertion(text, word):
    return mentions(text)[word].assertion


@pytest.mark.parametrize(
    "text, word, expected",
    [
        ("no fever", "fever", "negated"),
        ("pas de fièvre", "fièvre", "negated"),
        ("sans déficit moteur", "déficit moteur", "negated"),
        ("pas de fièvre mais écoulement purulent", "écoulement purulent", "affirmed"),
        ("pas de fièvre, radiculalgie L5", "radiculalgie L5", "affirmed"),  # session 7: the root is part of the mention
        ("pas de fièvre ni écoulement", "écoulement", "negated"),
        ("?haematoma", "haematoma", "uncertain"),
        ("r/o haematoma", "haematoma", "uncertain"),
        ("rule out cauda equina", "cauda equina", "uncertain"),
        ("haematoma ruled out", "haematoma", "negated"),
        ("hématome éliminé", "hématome", "negated"),
        ("éliminer un hématome", "hématome", "uncertain"),
        ("suspicion de TVP", "TVP", "uncertain"),
        ("hématome épidural ?", "hématome épidural", "uncertain"),
        ("cannot exclude haematoma", "haematoma", "uncertain"),
        ("patient afebrile", "afebrile", "negated"),
        ("no fever however wound discharge", "wound discharge", "affirmed"),
        ("fever", "fever", "affirmed"),
    ],
)
def test_assertion(text, word, expected):
    assert assertion(text, word) == expected


def test_negation_scope_stops_after_six_words():
    assert assertion("no change in the treatment plan for this patient, fever", "fever") == "affirmed"
    assert assertion("no one two three four five six fever", "fever") == "affirmed"
    assert assertion("no one two three four five fever", "fever") == "negated"


def test_pseudo_negation_is_a_course_cue_not_a_negation():
    found = mentions("pas d'amélioration de la sciatique")
    assert "inefficacy" == MATCHER.concepts["no_change"]["course"]
    assert "no_change" in found["pas d'amélioration"].concepts
    assert found["sciatique"].assertion == "affirmed"
    assert mentions("no relief of sciatica")["sciatica"].assertion == "affirmed"


def test_history_cue_marks_mention():
    m = mentions("ATCD de syndrome de la queue de cheval")["syndrome de la queue de cheval"]
    assert m.history and not m.raises
    assert not mentions("h/o sciatica")["sciatica"].raises


def test_ces_is_case_sensitive():
    assert "CES" in mentions("POD2, CES")
    assert not mentions("ces douleurs sont attendues")


def test_offsets_point_at_original_text_with_accents_and_ligatures():
    text = "Œdème, l’hématome épidural ? J+2"
    m = mentions(text)["hématome épidural"]
    assert text[m.start : m.end] == "hématome épidural"
    assert m.assertion == "uncertain"


def test_accents_case_and_haem_spelling_are_folded():
    assert mentions("HEMATOME")["HEMATOME"].concepts == mentions("hématome")["hématome"].concepts
    assert "haematoma" in mentions("haematoma")["haematoma"].concepts
    assert "haematoma" in mentions("hematoma")["hematoma"].concepts


def test_small_typos_are_read_but_real_words_are_not():
    m = mentions("fievrre")["fievrre"]
    assert "fever" in m.concepts and m.corrected == "fievre"
    assert "wound" not in mentions("injection")["injection"].concepts
    assert mentions("screw")["screw"].corrected is None

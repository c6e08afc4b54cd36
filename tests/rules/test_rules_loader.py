"""Rule files: validation errors as file:line, duplicate ids, check() and test() commands."""

import shutil
from pathlib import Path

import pytest

from rules import commands
from rules.engine import DEFAULT_DIRECTORY, Rulebook, RulebookError

GOOD_RULE = """
family: extra
rules:
  - id: extra.one
    title: One
    scenario: 7
    reference: 000_9aacee4264ab9a02.txt, Early complications > Infection
    window: [early]
    any_of: [fever]
    flags: [surgical_site_infection]
    priority: URGENT
"""


@pytest.fixture
def ruledir(tmp_path) -> Path:
    for f in DEFAULT_DIRECTORY.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copytree(DEFAULT_DIRECTORY / "cases", tmp_path / "cases")
    return tmp_path


def load_error(ruledir, text) -> RulebookError:
    (ruledir / "zz_extra.yaml").write_text(text)
    with pytest.raises(RulebookError) as info:
        Rulebook.load(ruledir)
    return info.value


def test_default_rulebook_loads_with_a_content_hash(ruledir):
    rb = Rulebook.load()
    assert rb.version.startswith("sha256:") and len(rb.version) == len("sha256:") + 12
    assert Rulebook.load(ruledir).version == rb.version
    (ruledir / "zz_extra.yaml").write_text(GOOD_RULE)
    assert Rulebook.load(ruledir).version != rb.version


def test_yaml_syntax_error_has_file_and_line(ruledir):
    err = load_error(ruledir, GOOD_RULE.replace("    any_of: [fever]", "    any_of: [fever"))
    assert str(err).startswith(f"{ruledir / 'zz_extra.yaml'}:")
    assert err.line in (9, 10, 11)


@pytest.mark.parametrize(
    "old, new, line, words",
    [
        ("flags: [surgical_site_infection]", "flags: [wound_infection]", 10, "unknown flag code 'wound_infection'"),
        ("any_of: [fever]", "any_of: [fevr]", 9, "unknown concept 'fevr'"),
        ("priority: URGENT", "priority: HIGH", 11, "priority must be"),
        ("window: [early]", "window: [erly]", 8, "unknown window"),
        ("any_of: [fever]", "any_of: [fever]\n    none_of: [fever]", 10, "contradictory"),
        ("any_of: [fever]", "anyof: [fever]", 9, "unknown rule key 'anyof'"),
        ("any_of: [fever]", "any_of: [fever]\n    assertion: [negated]", 10, "unknown assertion 'negated'"),
        ("    reference: 000_9aacee4264ab9a02.txt, Early complications > Infection\n", "    reference: my memory\n", 7, "reference"),
    ],
)
def test_invalid_rule_reports_file_line_message(ruledir, old, new, line, words):
    err = load_error(ruledir, GOOD_RULE.replace(old, new))
    assert err.path == str(ruledir / "zz_extra.yaml") and err.line == line and words in err.message
    assert str(err) == f"{ruledir / 'zz_extra.yaml'}:{line}: {err.message}"


def test_unreachable_escalation_and_missing_trigger_rejected(ruledir):
    err = load_error(ruledir, GOOD_RULE + "    escalate:\n      - if_any: [sepsis]\n        priority: ROUTINE\n")
    assert "unreachable escalation" in err.message and err.line == 14
    err = load_error(ruledir, GOOD_RULE.replace("    any_of: [fever]\n", ""))
    assert "no trigger" in err.message and err.line == 4


def test_assertion_filters_any_of(ruledir):
    """A rule's 'assertion' keeps only the any_of mentions so asserted: an uncertain fever does not fire an affirmed-only rule."""
    from rules.casebook import build_study

    (ruledir / "zz_extra.yaml").write_text(GOOD_RULE.replace("any_of: [fever]", "any_of: [fever]\n    assertion: [affirmed]"))
    book = Rulebook.load(ruledir)

    def fired(text):
        study = build_study({"fields": {"ReasonForTheRequestedProcedure": text}, "study_date": "20261110"})
        return "extra.one" in book.evaluate(study).fired_rules

    assert fired("Day 2 after L4-5 TLIF. Fever 39.")
    assert not fired("Day 2 after L4-5 TLIF. ?fever")
    err = load_error(ruledir, GOOD_RULE.replace("    any_of: [fever]\n", "    all_of: [fever]\n    assertion: [affirmed]\n"))
    assert "has no 'any_of'" in err.message


def test_unreachable_windows_rejected(ruledir):
    err = load_error(ruledir, GOOD_RULE + "    interval: {min_days: 30}\n")
    assert "beyond the early window" in err.message and err.line == 12
    err = load_error(ruledir, GOOD_RULE + "    escalate:\n      - if_any: [sepsis]\n        priority: STAT\n        window: [late]\n")
    assert "never overlaps" in err.message and err.line == 12


def test_duplicate_rule_id_rejected(ruledir):
    err = load_error(ruledir, GOOD_RULE.replace("extra.one", "early.infection"))
    assert "duplicate rule id 'early.infection'" in err.message and err.line == 4
    assert "early.yaml" in err.message


def test_check_command(ruledir, capsys):
    assert commands.check(ruledir) == 0
    (ruledir / "zz_extra.yaml").write_text(GOOD_RULE.replace("surgical_site_infection", "nope") + "  - id: bad\n")
    assert commands.check(ruledir) == 1
    out = capsys.readouterr().out
    assert f"{ruledir / 'zz_extra.yaml'}:10: unknown flag code 'nope'" in out
    assert f"{ruledir / 'zz_extra.yaml'}:12:" in out


def _without_blind_rounds(ruledir: Path) -> Path:
    """The blind rounds' cases (most of the suite: `rules test` runs them all in `make test`) are not needed to test the
    command itself: without them it runs in a fraction of the time, every rule still has its developer cases."""
    for f in (ruledir / "cases").glob("blind_round*.yaml"):
        f.unlink()
    return ruledir


def test_test_command_table_and_failures(ruledir, capsys):
    _without_blind_rounds(ruledir)
    assert commands.test(ruledir) == 0
    out = capsys.readouterr().out
    assert "scenario" in out and "total" in out and "FAIL" not in out
    case = ruledir / "cases" / "zz.yaml"
    case.write_text("scenario: 7\ncases:\n  - name: wrong\n    fields: {ReasonForTheRequestedProcedure: 'J2 discectomie, fièvre'}\n"
                    "    expect: {priority: ROUTINE}\n")
    assert commands.test(ruledir) == 1
    assert f"FAIL {case}:3: wrong: priority URGENT, expected ROUTINE" in capsys.readouterr().out


def test_rule_without_case_fails_test_command(ruledir, capsys):
    _without_blind_rounds(ruledir)
    extra = GOOD_RULE.replace("any_of: [fever]", "any_of: [never_in_a_case]")
    extra += "concepts:\n  never_in_a_case:\n    terms: [zzqxv]\n"
    (ruledir / "zz_extra.yaml").write_text(extra)
    assert commands.test(ruledir) == 1
    assert "untested rule: extra.one" in capsys.readouterr().out

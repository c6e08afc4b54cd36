"""Every rule test case in rules/cases/*.yaml, one pytest case each."""

import pytest

from rules.casebook import load_cases, run_case
from rules.engine import DEFAULT_DIRECTORY, Rulebook

RULEBOOK = Rulebook.load()
CASES = load_cases(DEFAULT_DIRECTORY / "cases")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case):
    failures, _ = run_case(RULEBOOK, case)
    assert not failures, f"{case.file}:{case.line}: " + "; ".join(failures)


def test_enough_cases_in_english_and_french_for_every_scenario():
    assert len(CASES) >= 80
    scenarios = {c.scenario for c in CASES}
    assert {str(n) for n in range(1, 22)} <= scenarios


def test_every_rule_fires_in_some_case():
    fired = set()
    for case in CASES:
        fired.update(run_case(RULEBOOK, case)[1].fired_rules)
    assert {r.id for r in RULEBOOK.rules} - fired == set()

"""Every rule test case in rules/cases/*.yaml (17,000+), read once on every core (casebook_pool): each passes, and
every rule fires in some case. `pacs-triage rules test` (run by `make test` first) prints the same per scenario."""

import casebook_pool
from rules.casebook import load_cases
from rules.engine import DEFAULT_DIRECTORY, Rulebook

RULEBOOK = Rulebook.load()
CASES = load_cases(DEFAULT_DIRECTORY / "cases")


def test_every_case_passes():
    out = casebook_pool.outcomes()
    assert len(out) == len(CASES)
    where = {c.name: f"{c.file}:{c.line}" for c in CASES}
    failing = [f"{where[n]} {n}: " + "; ".join(o.failures) for n, o in out.items() if o.failures]
    assert not failing, "\n".join(failing[:20]) + f"\n({len(failing)} failing)"


def test_enough_cases_in_english_and_french_for_every_scenario():
    assert len(CASES) >= 80
    scenarios = {c.scenario for c in CASES}
    assert {str(n) for n in range(1, 22)} <= scenarios


def test_every_rule_fires_in_some_case():
    fired = set()
    for o in casebook_pool.outcomes().values():
        fired.update(o.fired)
    assert {r.id for r in RULEBOOK.rules} - fired == set()

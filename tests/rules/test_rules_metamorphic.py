"""Metamorphic checks over the cases in rules/cases/ (blind rounds included): rewriting the same request must not
change the priority or the flags. Every STAT case is rewritten three ways on average, every other case one way (a fixed
split: casebook_transforms.applies); the casebook is read on every core (casebook_pool).

upper case, accents stripped, UTF-8 read as Latin-1 (mojibake), every clinical attribute merged into one, attributes in
reverse order, unrelated text appended.
"""

import pytest

import casebook_pool
from casebook_transforms import TRANSFORMS


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_rewriting_a_request_changes_nothing(name):
    before = casebook_pool.outcomes()
    after = casebook_pool.rewritten(name)
    assert len(after) > 5000  # half of the STAT cases at least
    changed = [(n, (before[n].priority, list(before[n].codes)), got) for n, got in sorted(after.items())
               if (before[n].priority, before[n].codes) != got]
    assert not changed, changed[:5]

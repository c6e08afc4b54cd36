"""The CT analyser on small subsets of the second to seventh blind phantom families.

The generators were written blind (tests/phantom2_blind/ ... tests/phantom7_blind/); seeds other than the first-sight
seeds 7, 20261127, 20261201, 20261205, 20261207 and 20261306 give four to eight small studies each here, so `make test` covers every
family. The whole families run in `make validate` (bench/validate_ct.py, docs/ct-validation.md).
Checked: no crash, the screws are found (joined to rods, tulips and cages), every unassessed screw has
its reason, no D/E screw read A/B (on family 3 since the low-grade confirmation rule), no false C+ read on
a grade-A screw of family 4 (since session 5: a neighbouring level's canal or the other levels' screws alone
no longer grade D/E); the other false C+ reads on grade-A screws are known gaps and stay strict expected
failures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import validate_ct as vc  # noqa: E402

FAMILIES = {
    "family2": (ROOT / "tests" / "blind_phantom2.py", 11),
    "family3": (ROOT / "tests" / "phantom3_blind" / "spine_phantom3.py", 1),
    # written blind in session 4; its first-sight seed is 20261201, seed 5 is another of its seeds
    "family4": (ROOT / "tests" / "phantom4_blind" / "spine_phantom4.py", 5),
    # written blind in sessions 5 and 6; first-sight seeds 20261205 and 20261207, these are other seeds
    "family5": (ROOT / "tests" / "phantom5_blind" / "spine_phantom5.py", 3),
    "family6": (ROOT / "tests" / "phantom6_blind" / "spine_phantom6.py", 3),
    # written blind in session 26; first-sight seed 20261306 (held-out 20261307), seed 3 is another of its seeds
    "family7": (ROOT / "tests" / "phantom7_blind" / "spine_phantom7.py", 3),
}
N = 4
#: Families whose small studies hold one vertebra (two screws at most): more of them
N_BY_FAMILY = {"family5": 6, "family6": 6, "family7": 8}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    generator, seed = FAMILIES[request.param]
    score, studies, rows = vc.run_family(seed, N_BY_FAMILY.get(request.param, N), None, workers=2, generator=generator,
                                         small=True, log=None)
    return request.param, score, studies, rows


def test_no_analyser_crash(family):
    _, _, studies, _ = family
    assert not [s.get("error") for s in studies if s.get("error")]


def test_screws_are_found(family):
    # Screws joined to rods, tulips, cross-links or cages are separated (metal.extract_shafts); before
    # session 4, 40 of 106 screws of family 3 seed 1 (full studies) were "not found".
    _, _, _, rows = family
    found = [r for r in rows if r["reason"] != "screw not found"]
    assert len(rows) >= 10 and len(found) >= 0.85 * len(rows)


def test_unassessed_screws_have_a_reason(family):
    _, _, studies, rows = family
    assert all(r["reason"] for r in rows if r["got"] == "NA")
    for s in studies:
        summ = s["result"].get("summary") or {}
        if summ.get("screws_not_assessed"):
            assert summ["incomplete"].startswith("CT screw analysis incomplete: ")


#: Known gaps on these subsets (docs/ct-validation.md, session 4); strict: a gap closed must be un-marked.
KNOWN_GAPS = {
    ("family2", "false_c"): "grade-A screws read D/E by a wrong canal outline (seed 11, small 0-3)",
    ("family4", "d_e_as_a_b"): "a grade-D medial screw (5.1 mm) read A (seed 5, small 3, L4 left)",
    ("family5", "false_c"): "a grade-A screw read C or worse (seed 3, small 1, T10 left)",
    ("family7", "false_c"): "a grade-A screw read D 5.6 (seed 3, small 3, S1 right; session 26 first sight)",
}


def _known_gap(request, name: str, what: str) -> None:
    reason = KNOWN_GAPS.get((name, what))
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=f"known gap: {reason}", strict=True))


def test_no_d_e_screw_is_graded_a_or_b(family, request):
    name, _, _, rows = family
    _known_gap(request, name, "d_e_as_a_b")
    wrong = [(r["id"], r["truth_depth"], r["got"]) for r in rows if r["truth_grade"] in "DE" and r["got"] in "AB"]
    assert not wrong


def test_no_false_c_or_worse_on_grade_a(family, request):
    name, _, _, rows = family
    _known_gap(request, name, "false_c")
    assert not [r["id"] for r in rows if r["truth_grade"] == "A" and r["got"] in ("C", "D", "E")]

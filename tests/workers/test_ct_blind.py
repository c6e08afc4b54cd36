"""The CT analyser on a small subset of the independent (blind) phantom family.

tests/blind_phantom.py was written from an anatomy brief by someone who had not
read workers/analysers/; the whole family (200 studies, held-out seed) runs in
`make validate` (bench/validate_ct.py, report in docs/ct-validation.md). Here a
deterministic subset of small studies checks the safety properties: every D/E
canal intrusion is detected, no screw without canal intrusion (grade A) is
flagged C or worse, and nothing is silently skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import validate_ct as vc  # noqa: E402

SEED = 18  # a tuning seed with D/E breaches, not the held-out reporting seed of `make validate`
N = 10


@pytest.fixture(scope="module")
def family():
    score, studies, rows = vc.run_family(SEED, N, None, workers=2, small=True, log=None)
    return score, studies, rows


def test_no_analyser_crash(family):
    _, studies, _ = family
    assert not [s.get("error") for s in studies if s.get("error")]


# Passes since session 4 (screws joined to rods and tulips are found); an expected failure before.
def test_every_d_e_canal_intrusion_is_detected(family):
    _, _, rows = family
    de = [r for r in rows if r["truth_grade"] in "DE"]
    missed = [(r["id"], r["truth_depth"], r["got"], r["reason"]) for r in de if r["got"] not in ("D", "E")]
    assert not missed


def test_no_false_c_or_worse_on_grade_a(family):
    _, _, rows = family
    false = [(r["id"], r["got"], r["depth"]) for r in rows if r["truth_grade"] == "A" and r["got"] in ("C", "D", "E")]
    assert not false


def test_most_screws_are_found_and_graded(family):
    # Found: the screw is reported (graded, or not assessed with its reason). Graded is lower on these
    # coarse small studies (1.3 mm pixels, 2-3 mm slices) because an implausible canal next to a screw
    # is now "not assessed (canal implausible next to the screw)" rather than a possibly false A/B.
    _, _, rows = family
    found = [r for r in rows if r["reason"] != "screw not found"]
    graded = [r for r in rows if r["got"] != "NA"]
    assert len(rows) >= 30 and len(found) >= 0.8 * len(rows) and len(graded) >= 0.6 * len(rows)


def test_no_d_e_canal_intrusion_is_graded_a_or_b(family):
    _, _, rows = family
    wrong = [(r["id"], r["truth_depth"], r["got"], r["depth"]) for r in rows
             if r["truth_grade"] in "DE" and r["got"] in ("A", "B")]
    assert not wrong


def test_unassessed_screws_have_a_reason(family):
    _, studies, rows = family
    assert all(r["reason"] for r in rows if r["got"] == "NA")
    for s in studies:
        summ = s["result"].get("summary") or {}
        if summ.get("screws_not_assessed"):
            assert summ["incomplete"].startswith("CT screw analysis incomplete: ")
            assert len(summ["not_assessed_screws"]) == summ["screws_not_assessed"]


def _study(medial_depths, flags=(), not_assessed=0):
    return {"truth": {"screws": [{"breach_depths_mm": {"medial": d}} for d in medial_depths]},
            "result": {"flags": [{"code": "misplaced_screw", "priority": p} for p in flags],
                       "summary": {"screws_not_assessed": not_assessed}}}


def test_per_study_counts_the_worklist_view():
    """The per-study line of the report: a study with a truth D/E screw counts as raised when any misplaced_screw flag
    is STAT (whichever screw), as "incomplete" when a screw is not assessed; an all-A/B study's flags are over-triage;
    a study with a truth C (and no D/E) is in neither group."""
    ps = vc.per_study([
        _study([5.0, 0.0], flags=["STAT"]),        # D/E, raised
        _study([7.0, 0.0], flags=["URGENT"]),      # D/E, not raised (a C flag only)
        _study([4.5], not_assessed=1),             # D/E, incomplete
        _study([0.0, 1.0], flags=["STAT"]),        # A/B, over-triaged STAT
        _study([0.0], flags=["URGENT"]),           # A/B, URGENT
        _study([0.0, 0.0]),                        # A/B, quiet
        _study([3.0], flags=["STAT"]),             # truth C: neither group
    ])
    assert ps == {"n_de": 3, "stat": 1, "stat_or_incomplete": 2, "n_ab": 3, "ab_stat": 1, "ab_urgent": 1}


def test_peak_memory_is_the_analysing_childs_own_not_its_parents():
    """The per-study peak memory of the report: a child started by a process holding 300 MB reports its own peak, not
    the parent's (ru_maxrss is carried across exec on Linux; session 25 found every cached family-5 study reported at
    the renderer's 2334 MB)."""
    import json as _json
    import subprocess

    code = ("import json, sys; sys.path.insert(0, %r); import numpy as np; from peakmem import peak_rss_mb; "
            "a = np.ones(%d, np.uint8); print(json.dumps(peak_rss_mb()))")
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touched: resident in this (the parent) process
    small = _json.loads(subprocess.run([sys.executable, "-c", code % (str(ROOT / "bench"), 10 << 20)],
                                       capture_output=True, text=True, check=True).stdout)
    big = _json.loads(subprocess.run([sys.executable, "-c", code % (str(ROOT / "bench"), 200 << 20)],
                                     capture_output=True, text=True, check=True).stdout)
    del ballast
    assert small < 150, small  # the interpreter, numpy and 10 MB: not the parent's 300 MB
    assert big - small > 150, (small, big)  # and what the child itself holds does count


def test_false_stat_reads_on_screws_designed_medial_are_counted_apart():
    """Family 4's truth counts a screw only beyond its entry into bone: a screw designed 9 mm medial at a laminectomy
    level, recorded medial 0, read D by the analyser, is listed apart (the headline specificity is unchanged)."""
    def row(i, grade, got, designed):
        return {"id": f"s:{i}", "truth_grade": grade, "truth_depth": 0.0, "got": got, "depth": 5.0, "reason": None,
                "thin": True, "lam": True, "designed_medial_mm": designed}

    assert vc._designed_medial({"designed": {"direction": "medial", "depth_mm": 9.1}}) == 9.1
    assert vc._designed_medial({"designed": {"direction": "lateral", "depth_mm": 5.0}}) is None
    assert vc._designed_medial({}) is None
    s = vc.score([row(0, "A", "D", 9.1), row(1, "A", "E", None), row(2, "A", "A", 8.0), row(3, "B", "C", 2.5)])
    assert s["false_c_designed_medial"] == ["s:0"] and len(s["false_c"]) == 3 and s["spec_ab"] == 0.25

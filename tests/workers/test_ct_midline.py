"""The canal-independent midline check of the CT analyser (workers/analysers/midline.py and its rules).

On the repository's phantom (tests/phantom.py), the check must see the medial breach without the canal;
the rules must never let a screw it puts deep in the canal be read A/B, and must not turn a consistent
screw into a C+ read.
"""

from __future__ import annotations

import pytest

from phantom import PhantomSpec, ScrewSpec, load_study, write_series
from rules.image_policy import ct_policy
from workers.analysers import run_analysers
from workers.analysers.ct_hardware import CTHardwareAnalyser, _midline_block, _midline_clear, _midline_depth

SCREWS = [ScrewSpec(0, "left", medial=5.0), ScrewSpec(0, "right"), ScrewSpec(1, "left"), ScrewSpec(1, "right")]


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("midline")
    write_series(PhantomSpec(screws=SCREWS), out / "ct")
    [res] = run_analysers(load_study(out / "ct"), [CTHardwareAnalyser()])
    by = {}
    for m in res.measurements:
        if m["name"] == "medial_breach_depth":
            by[(m["construct_level"], m["side"])] = m["midline_check"]
    for x in res.summary.get("not_assessed_screws", []):
        by[(x["construct_level"], x["side"])] = x["midline_check"]
    return by


def test_midline_sees_the_medial_screw_without_the_canal(checks):
    breached = checks[(2, "left")]  # construct level 1 is the most cranial; vertebra 0 is caudal
    assert breached["pair_excess_mm"] >= 3.0, breached
    assert breached["level_excess_mm"] >= 3.0, breached
    for key in ((2, "right"), (1, "left"), (1, "right")):
        m = checks[key]
        assert m["offset_mm"] > breached["offset_mm"] + 3.0, (key, m)
        assert m["body_depth_mm"] < 2.0, (key, m)


POL = ct_policy()


def test_a_deep_screw_is_never_read_a_or_b_whatever_the_canal_says():
    near_pair = {"offset_mm": 7.0, "pair_excess_mm": 5.0, "level_excess_mm": 0.0, "body_depth_mm": 1.0}
    near_midline = {"offset_mm": 3.0, "pair_excess_mm": 0.0, "level_excess_mm": 0.0, "body_depth_mm": 1.0}
    inside_body_wall = {"offset_mm": 8.0, "pair_excess_mm": 0.0, "level_excess_mm": 0.0, "body_depth_mm": 5.0}
    for m in (near_pair, near_midline, inside_body_wall):
        block = _midline_block(m, depth=0.0, pol=POL)
        assert block is not None and block[0] == "canal-independent check suggests a medial breach", m
        assert not _midline_clear(m, depth=0.0, alt_depth=0.0, pol=POL)


def test_a_gross_breach_missed_by_the_canal_is_graded_from_the_midline():
    m = {"offset_mm": 2.0, "pair_excess_mm": 0.5, "level_excess_mm": 8.0, "axis_depth_mm": 4.0, "body_depth_mm": 9.0}
    assert _midline_depth(m, POL) == 8.0
    assert _midline_depth(dict(m, offset_mm=9.0), POL) is None  # not near the midline: not graded from it


def test_consistent_screw_is_not_read_c_or_d_and_unknown_stays_unknown():
    consistent = {"offset_mm": 10.0, "pair_excess_mm": 0.5, "level_excess_mm": 0.5, "body_depth_mm": 0.0}
    block = _midline_block(consistent, depth=3.0, pol=POL)
    assert block is not None and block[0] == "canal and midline checks disagree"
    assert _midline_block(consistent, depth=7.0, pol=POL) is None  # E reads stay graded (STAT)
    assert _midline_block(consistent, depth=0.5, pol=POL) is None  # and A/B of a consistent screw too
    assert _midline_clear(consistent, depth=0.5, alt_depth=0.5, pol=POL)
    # a check without the other levels or the body is not a clearance
    assert not _midline_clear(dict(consistent, level_excess_mm=None), depth=0.5, alt_depth=0.5, pol=POL)
    assert not _midline_clear(dict(consistent, body_depth_mm=None), depth=0.5, alt_depth=0.5, pol=POL)
    assert _midline_block({"offset_mm": None}, depth=0.0, pol=POL) is None

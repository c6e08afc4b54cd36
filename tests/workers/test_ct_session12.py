"""Session 12 (issue 10): mechanisms that lost D/E medial breaches on the tuning seeds, fixed as classes.

Synthetic and deterministic: the helpers are fed hand-made canal/volume stand-ins and midline-check records.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from rules.image_policy import ct_policy
from workers.analysers.ct_hardware import _midline_alone_depth, _side_of

POL = ct_policy()


def _vol(px: float = 0.5):
    # columns increase towards patient left (LPS +x), rows towards posterior
    return SimpleNamespace(spacing=(1.0, px, px), row_dir=np.array([1.0, 0.0, 0.0]), col_dir=np.array([0.0, 1.0, 0.0]))


def _canal_at(col_mm: float, px: float = 0.5):
    return SimpleNamespace(roi=(0, 100, 0, 200), centre=(50.0, col_mm / px))


def _part(centre_col_mm: float):
    return SimpleNamespace(centre=np.array([0.0, 30.0, centre_col_mm]))


def test_a_screw_far_from_the_midline_is_sided_by_its_centre_as_before():
    vol, lc = _vol(), _canal_at(50.0)
    assert _side_of(_part(65.0), lc, vol) == ("left", 1)
    assert _side_of(_part(35.0), lc, vol) == ("right", -1)
    # the trajectory does not override a screw well out on its side
    assert _side_of(_part(65.0), lc, vol, np.array([0, 20, 70.0]), np.array([0, 60, 60.0])) == ("left", 1)


def test_a_screw_across_the_midline_is_sided_by_its_entry_or_its_convergence():
    vol, lc = _vol(), _canal_at(50.0)
    # a left screw 9 mm in the canal: centre 1 mm right of the canal centre, entry 8 mm left of it
    entry, tip = np.array([0, 20, 58.0]), np.array([0, 60, 42.0])
    assert _side_of(_part(49.0), lc, vol) == ("right", -1)  # by the centre alone (the old reading): wrong side
    assert _side_of(_part(49.0), lc, vol, entry, tip) == ("left", 1)
    # entering at the midline itself (family 5's screws that enter at the midline): by the direction it converges from
    entry, tip = np.array([0, 20, 50.5]), np.array([0, 60, 42.8])
    assert _side_of(_part(47.0), lc, vol, entry, tip) == ("left", 1)
    entry, tip = np.array([0, 20, 49.5]), np.array([0, 60, 56.0])
    assert _side_of(_part(53.0), lc, vol, entry, tip) == ("right", -1)
    # no lateral travel: the centre decides
    entry, tip = np.array([0, 20, 51.0]), np.array([0, 60, 51.5])
    assert _side_of(_part(51.2), lc, vol, entry, tip) == ("left", 1)


def test_canal_not_found_but_metal_at_the_midline_is_graded_at_least_d():
    # held-out session 8 example: both T12 screws at the midline (1.3 mm past it and 1.8 mm short), no canal found
    m = {"offset_mm": -1.3, "pair_excess_mm": -0.5, "level_excess_mm": None, "axis_depth_mm": None, "body_depth_mm": 11.3}
    d = _midline_alone_depth(m, POL)
    assert d is not None and d >= POL.grade_bounds[2] and POL.grade(d) in ("D", "E")
    # at the midline with only a weak reference: still a D minimum when one reference reaches D
    assert _midline_alone_depth(dict(m, body_depth_mm=4.0), POL) == 4.0


def test_midline_alone_needs_the_metal_near_the_midline_and_a_d_reference():
    base = {"offset_mm": 7.0, "pair_excess_mm": 5.0, "level_excess_mm": 6.0, "axis_depth_mm": None, "body_depth_mm": 5.0}
    assert _midline_alone_depth(base, POL) is None  # not near the midline
    near = dict(base, offset_mm=3.0, pair_excess_mm=1.0, level_excess_mm=1.0, body_depth_mm=2.5)
    assert _midline_alone_depth(near, POL) is None  # no reference puts it a D depth inside (a small body)
    assert _midline_alone_depth({"offset_mm": None}, POL) is None  # no vertebral body: unknown stays unknown


def test_three_canal_independent_measures_grade_a_d_breach_left_unassessed():
    from workers.analysers.ct_hardware import _three_measures_depth

    m = {"offset_mm": 8.1, "pair_excess_mm": 4.2, "level_excess_mm": -0.4, "axis_depth_mm": 9.0, "body_depth_mm": 2.8}
    ped = {"available": True, "depth_mm": 2.2, "profile_mm": [0.0, 0.2, 2.0, 2.8, 2.2, None, 0.0]}
    assert _three_measures_depth(m, ped, POL) == 4.2
    # mirrored depth and the other levels agree, one deep section among clean ones (a short breach)
    m2 = {"offset_mm": 5.9, "pair_excess_mm": None, "level_excess_mm": 9.3, "axis_depth_mm": 7.9, "body_depth_mm": 4.5}
    assert _three_measures_depth(m2, dict(ped, profile_mm=[0.0, 8.4, 0.0]), POL) == 7.9
    # a misplaced pair partner makes the pair excess and axis depth large, but this screw's pedicle is intact
    intact = {"available": True, "depth_mm": 0.0, "profile_mm": [0.0, 0.4, 1.2, 0.0]}
    assert _three_measures_depth(dict(m, pair_excess_mm=7.8, axis_depth_mm=11.1), intact, POL) is None
    assert _three_measures_depth(m, {"available": False}, POL) is None  # unknown is not a measure
    assert _three_measures_depth(dict(m, axis_depth_mm=None), ped, POL) is None
    assert _three_measures_depth(dict(m, pair_excess_mm=3.0), ped, POL) is None  # no expectation reaches D


def test_a_body_wider_than_any_vertebral_body_gives_no_midline_check():
    from workers.analysers import midline as ml

    class P:  # a right screw running front to back, 12 mm right of a body's centre
        centre = np.array([0.0, 60.0, 38.0])
        axis = np.array([0.0, 1.0, 0.0])
        length, diameter = 45.0, 6.0

    vol = SimpleNamespace(spacing=(1.0, 0.5, 0.5), col_dir=np.array([0.0, 1.0, 0.0]))

    def lc(width_mm):
        return SimpleNamespace(roi=(0, 200, 0, 200), reference=None,
                               body=((60.0, 100.0), (1.0, 0.0), (-30.0, 30.0), width_mm / 0.5))

    assert ml.offsets(vol, [P], [1], {1: lc(45.0)})[0]["offset_mm"] == 12.0 - 3.0
    assert ml.offsets(vol, [P], [1], {1: lc(90.0)}) == {}  # body joined by the sacral ala: no check

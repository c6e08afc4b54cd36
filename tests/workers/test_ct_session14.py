"""Session 14 (issue 10): "not assessed (low grade not confirmed)" of screws far out from a confirmed midline.

Synthetic and deterministic: hand-made canal/volume stand-ins and midline-check records, as in test_ct_session12.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from rules.image_policy import ct_policy
from workers.analysers import midline as ml

POL = ct_policy()
PX = 0.5
VOL = SimpleNamespace(spacing=(1.0, PX, PX), col_dir=np.array([0.0, 1.0, 0.0]))


def _screw(lateral_mm: float, diameter: float = 6.0):
    """A screw running front to back, its axis `lateral_mm` from the column of a body centred at column 50 mm."""

    class P:
        centre = np.array([0.0, 60.0, 50.0 + lateral_mm])
        axis = np.array([0.0, 1.0, 0.0])
        length = 45.0

    P.diameter = diameter
    return P


def _level(canal_col_mm: float = 50.0, source: str = "this level", well_defined: int = 10, body_mm: float = 45.0):
    """A 45-mm vertebral body centred at (row 30, column 50 mm), AP axis along the rows; the canal 25 mm behind it."""
    return SimpleNamespace(roi=(0, 200, 0, 200), reference=np.zeros((200, 200), bool), centre=(110.0, canal_col_mm / PX),
                           source=source, well_defined=well_defined,
                           body=((60.0, 100.0), (1.0, 0.0), (-30.0, 30.0), body_mm / PX))


def test_a_screw_far_out_from_a_midline_its_canal_confirms_is_kept_as_far():
    far = _screw(-26.0)  # medial surface 23 mm right of the midline
    offs = ml.offsets(VOL, [far], [1], {1: _level()}, far_max_mm=POL.pedicle_intact_max_offset_mm)
    assert offs[0]["far"] and offs[0]["offset_mm"] == 23.0
    m = ml.excesses(offs, 0)
    assert m["offset_mm"] is None and m["far_offset_mm"] == 23.0  # no usual midline check: only the far record
    # main dropped it (over 18 mm: "wrong body or axis"); without far_max_mm it still is
    assert ml.offsets(VOL, [far], [1], {1: _level()}) == {}


def test_a_far_record_needs_the_levels_own_canal_centre_on_the_bodys_axis():
    far = _screw(-26.0)
    for lc in (_level(canal_col_mm=53.0),  # canal centre 3 mm off the body's axis: a body found rotated or shifted
               _level(source="neighbouring level"),  # another level's canal
               _level(well_defined=1),  # both walls seen on one slice only
               _level(body_mm=90.0)):  # the body joined by the sacral ala
        assert ml.offsets(VOL, [far], [1], {1: lc}, far_max_mm=30.0) == {}
    assert ml.offsets(VOL, [_screw(-36.0)], [1], {1: _level()}, far_max_mm=30.0) == {}  # 33 mm: a wrong midline


def test_far_records_are_no_reference_for_the_other_screws():
    # the left screw's pair lies far out: its pair excess stays unknown (as on main), not 23 - 9 = 14 mm
    left, right = _screw(12.0), _screw(-26.0)
    offs = ml.offsets(VOL, [left, right], [1, 1], {1: _level()}, far_max_mm=30.0)
    assert ml.excesses(offs, 0)["pair_excess_mm"] is None
    assert ml.excesses(offs, 0)["offset_mm"] == 9.0


def test_a_far_screw_confirms_a_low_grade_only_beyond_any_canal_half_width_and_clear_of_every_canal():
    from workers.analysers.ct_hardware import _far_from_midline

    m = {"offset_mm": None, "far_offset_mm": 23.0}
    assert _far_from_midline(m, 0.0, POL)
    assert _far_from_midline(m, 1.9, POL)
    assert not _far_from_midline(m, 2.0, POL)  # a canal reference puts it C+: not confirmed
    assert not _far_from_midline({"offset_mm": None, "far_offset_mm": 19.5}, 0.0, POL)  # within max_half_width_mm
    assert not _far_from_midline({"offset_mm": 9.0}, 0.0, POL)  # the usual check applies


def _sacral_level(canal_col_mm: float = 50.0, body_mm: float = 90.0):
    """A 90-mm "body" (S1 joined by the ala) centred at (row 30, column 50 mm); the level's own canal 50-65 mm
    behind the image origin's row, 40-60 mm across, its centre `canal_col_mm`."""
    ref = np.zeros((200, 200), bool)
    ref[100:131, 80:121] = True
    return SimpleNamespace(roi=(0, 200, 0, 200), reference=ref, centre=(115.0, canal_col_mm / PX), source="this level",
                           well_defined=10, body=((60.0, 100.0), (1.0, 0.0), (-30.0, 30.0), body_mm / PX))


def _oblique(lateral_mm: float, medial_per_mm: float, diameter: float = 6.0):
    """A screw centred at row 60 mm, `lateral_mm` from the midline, converging `medial_per_mm` towards it per mm
    towards anterior (lower rows), its entry posterior and lateral."""
    a = np.array([0.0, 1.0, np.sign(lateral_mm) * medial_per_mm])

    class P:
        centre = np.array([0.0, 60.0, 50.0 + lateral_mm])
        axis = a / np.linalg.norm(a)
        length = 45.0

    P.diameter = diameter
    return P


def test_a_sacral_body_joined_by_the_ala_gives_a_check_over_the_canals_extent_when_the_canal_confirms_it():
    straight = _screw(-14.0)  # 11 mm from the midline along the canal's whole depth
    offs = ml.offsets(VOL, [straight], [1], {1: _sacral_level()}, wide_from_canal=True)
    assert offs[0]["wide"] and offs[0]["offset_mm"] == 11.0
    m = ml.excesses(offs, 0)
    assert m["body_depth_mm"] is None  # a quarter of a 90-mm width is no medial wall
    # main (and without wide_from_canal): no check against a 90-mm body
    assert ml.offsets(VOL, [straight], [1], {1: _sacral_level()}) == {}
    # the canal centre 3 mm off the body's axis: no check
    assert ml.offsets(VOL, [straight], [1], {1: _sacral_level(canal_col_mm=53.0)}, wide_from_canal=True) == {}


def test_the_wide_body_check_takes_the_nearest_approach_to_the_midline_over_the_canals_depth():
    # a right screw whose axis, over the canal's AP extent (10 mm in front of its centre to 5 mm behind), runs from
    # 9 mm to 16.5 mm right of the midline (0.5 mm per mm): its medial surface comes to 6 mm of it
    conv = _oblique(-14.0, 0.5)
    offs = ml.offsets(VOL, [conv], [1], {1: _sacral_level()}, wide_from_canal=True)
    assert offs[0]["side_sign"] == -1 and abs(offs[0]["offset_mm"] - 6.0) < 1e-6
    # one crossing the midline within the canal's depth: its medial surface is in the canal, its side its entry's
    across = _oblique(-4.0, 1.0)
    rec = ml.offsets(VOL, [across], [1], {1: _sacral_level()}, wide_from_canal=True)[0]
    assert rec["offset_mm"] == -3.0 and rec["side_sign"] == -1


def test_a_wide_body_record_is_compared_with_its_pair_only():
    left, right, lumbar = _screw(13.0), _screw(-14.0), _screw(-10.0)
    levels = {1: _sacral_level(), 2: _level()}
    offs = ml.offsets(VOL, [left, right, lumbar], [1, 1, 2], levels, wide_from_canal=True)
    assert ml.excesses(offs, 1)["pair_excess_mm"] == 10.0 - 11.0
    assert ml.excesses(offs, 1)["level_excess_mm"] is None  # not against the lumbar screws' isthmus offsets
    assert ml.excesses(offs, 2)["level_excess_mm"] is None  # and the lumbar screw not against the sacral ones

"""Session 13 (issue 10): siding in the patient's frame, and the three-measure rule's pedicle run.

Synthetic and deterministic: hand-made canal/volume stand-ins and check records, as in test_ct_session12.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from rules.image_policy import ct_policy
from workers.analysers.ct_hardware import _side_and_basis, _side_of

POL = ct_policy()
PX = 0.5


def _vol():
    # columns increase towards patient left (LPS +x), rows towards posterior
    return SimpleNamespace(spacing=(1.0, PX, PX), row_dir=np.array([1.0, 0.0, 0.0]),
                           col_dir=np.array([0.0, 1.0, 0.0]))


def _frame(theta_deg: float):
    """Unit AP axis (towards posterior) and lateral axis (towards increasing columns) of a patient rotated by
    theta about the cranio-caudal axis, as (row, column) vectors."""
    t = np.radians(theta_deg)
    u = np.array([np.cos(t), np.sin(t)])
    perp = np.array([-np.sin(t), np.cos(t)])
    return u, perp


def _at(origin, u, perp, ap, lat):
    """(z, row mm, column mm) of the point `ap` mm posterior and `lat` mm towards the patient's left of `origin`."""
    q = np.asarray(origin, float) + ap * u + lat * perp
    return np.array([0.0, q[0], q[1]])


def _rotated_level(theta_deg: float):
    """A canal centred on the rotated symmetry axis and a 44-mm vertebral body 25 mm anterior of it."""
    u, perp = _frame(theta_deg)
    canal = np.array([50.0, 50.0])  # (row, column) mm
    body = canal - 25.0 * u
    lc = SimpleNamespace(roi=(0, 200, 0, 200), centre=(canal[0] / PX, canal[1] / PX),
                         body=((body[0] / PX, body[1] / PX), (u[0], u[1]), (-40.0, 30.0), 44.0 / PX))
    return lc, canal, u, perp


def test_a_left_screw_converging_across_the_midline_of_a_rotated_patient_is_a_left_screw():
    # patient rotated 15 deg: a left screw entering 1 mm left of the midline and converging 4 mm across it; in
    # the image its entry lies 5.5 mm right of the canal centre and its tip at the centre, so in image columns it
    # runs from right to left (held-out session 12, family 5 study 35 L1 left, reported as a right screw)
    vol = _vol()
    lc, canal, u, perp = _rotated_level(-15.0)
    entry = _at(canal, u, perp, 25.0, 1.0)
    tip = _at(canal, u, perp, -15.0, -4.0)
    part = SimpleNamespace(centre=0.5 * (entry + tip))
    assert entry[2] < tip[2]  # the image trajectory runs towards increasing columns: "from the right"
    assert abs(part.centre[2] - canal[1]) < 6.0 and abs(entry[2] - canal[1]) < 6.0
    assert _side_of(part, lc, vol, entry, tip) == ("left", 1)
    # the mirror image (a right screw, patient rotated the other way) is a right screw
    lc, canal, u, perp = _rotated_level(15.0)
    entry = _at(canal, u, perp, 25.0, -1.0)
    tip = _at(canal, u, perp, -15.0, 4.0)
    part = SimpleNamespace(centre=0.5 * (entry + tip))
    assert entry[2] > tip[2]
    assert _side_of(part, lc, vol, entry, tip) == ("right", -1)


def test_the_level_pair_sides_a_screw_near_the_midline_before_its_trajectory():
    vol = _vol()
    lc, canal, u, perp = _rotated_level(-15.0)
    # a left screw across the midline whose trajectory gives no side (no lateral travel) and whose centre lies right
    entry = _at(canal, u, perp, 25.0, -0.5)
    tip = _at(canal, u, perp, -15.0, -1.0)
    part = SimpleNamespace(centre=0.5 * (entry + tip))
    partner = _at(canal, u, perp, 25.0, -24.0)  # the level's right screw, entering 24 mm right of the midline
    assert _side_of(part, lc, vol, entry, tip, pair_entry=partner) == ("left", 1)
    assert _side_and_basis(part, lc, vol, entry, tip, pair_entry=partner)[2] == "level pair"
    assert _side_and_basis(part, lc, vol, entry, tip)[2] == "part centre"  # no pair, no lateral travel
    # the pair decides even against a trajectory that converges from the other side
    tip = _at(canal, u, perp, -15.0, 3.0)
    part = SimpleNamespace(centre=0.5 * (entry + tip))
    assert _side_of(part, lc, vol, entry, tip, pair_entry=partner) == ("left", 1)
    # a partner whose entry is not clearly on one side of this screw's is no pair: the trajectory decides
    partner = _at(canal, u, perp, 25.0, 3.0)
    assert _side_of(part, lc, vol, entry, tip, pair_entry=partner) == ("right", -1)


def test_a_screw_far_from_the_midline_is_still_sided_by_its_centre():
    vol = _vol()
    lc, canal, u, perp = _rotated_level(-15.0)
    entry = _at(canal, u, perp, 25.0, 22.0)
    tip = _at(canal, u, perp, -15.0, 14.0)
    part = SimpleNamespace(centre=0.5 * (entry + tip))
    partner = _at(canal, u, perp, 25.0, 40.0)  # not used: the screw is not near the midline
    assert _side_of(part, lc, vol, entry, tip, pair_entry=partner) == ("left", 1)


def test_the_three_measure_rule_needs_two_breached_sections_or_one_d_deep():
    from workers.analysers.ct_hardware import _three_measures_depth

    # held-out session 12, family 5 study 15 L4 right (truth B 0.9 mm, read D 4.3): pair and mirrored depth at the
    # D bound, one section at 2.8 mm among 18 at 0
    m = {"offset_mm": 6.0, "pair_excess_mm": 4.3, "level_excess_mm": 1.0, "axis_depth_mm": 4.3, "body_depth_mm": 2.0}
    one = {"available": True, "depth_mm": 0.0, "profile_mm": [0.0] * 9 + [2.8] + [0.0] * 9}
    assert _three_measures_depth(m, one, POL) is None
    # two consecutive sections over 2 mm: graded
    two = dict(one, profile_mm=[0.0] * 9 + [2.8, 2.1] + [0.0] * 8)
    assert _three_measures_depth(m, two, POL) == 4.3
    # two sections over 2 mm that are not consecutive (a gap, or an invalid section between): not a run
    assert _three_measures_depth(m, dict(one, profile_mm=[0.0, 2.8, 0.0, 2.5, 0.0]), POL) is None
    assert _three_measures_depth(m, dict(one, profile_mm=[0.0, 2.8, None, 2.5, 0.0]), POL) is None
    # one section at least the D bound deep (tuning family 4 seed 33 study 9 L4 right, truth E: 8.4 mm among zeros)
    m9 = {"offset_mm": 5.9, "pair_excess_mm": None, "level_excess_mm": 9.3, "axis_depth_mm": 7.9, "body_depth_mm": 4.5}
    deep = dict(one, profile_mm=[0.0] * 6 + [8.4, 0.0, 0.0, 0.0, 2.8])
    assert _three_measures_depth(m9, deep, POL) == 7.9
    assert _three_measures_depth(m9, dict(deep, profile_mm=[0.0] * 6 + [3.9, 0.0, 0.0, 0.0, 2.8]), POL) is None


def test_pedicle_sections_look_medially_from_the_side_the_screw_was_given(monkeypatch):
    from workers.analysers import ct_hardware as ch

    seen = []

    def fake(vol, centre, axis, shaft0, tip_t, diameter, direction, *a, **k):
        seen.append(float(direction[2]))
        return {"available": False, "reason": "test", "depth_mm": None, "sections": 0}

    monkeypatch.setattr(ch.pd, "medial_depth", fake)
    pol = SimpleNamespace(pedicle_enabled=True, pedicle_window_mm=(10.0, 30.0), pedicle_body_margin_mm=None,
                          pedicle_cortex_hu=0, blooming_margin_mm=0, pedicle_margin_mm=0, pedicle_skip_entry_mm=0,
                          pedicle_run_sections=4, pedicle_strip_from_mm=1.0, pedicle_soft_hu=60.0,
                          pedicle_rel_soft_hu=None)
    # a left screw (+ columns) whose part centre lies 4 mm right of the midline (it converges across it)
    part = SimpleNamespace(centre=np.array([0.0, 40.0, 46.0]), diameter=6.0, threshold=2000.0)
    axis = np.array([0.0, -0.9, -0.4])
    ch._pedicle(None, part, axis, -20.0, 20.0, 1, 50.0, pol, near_midline=True)
    ch._pedicle(None, part, axis, -20.0, 20.0, 1, 50.0, pol)  # sided by its centre: as before
    assert seen == [-1.0, 1.0]

"""Session 15 (issue 10): "not assessed (canal implausible next to the screw)" when the level's canal is lopsided.

A lopsided canal (its half on the screw's side larger than the contralateral half: no metal occludes it on the screw's
side) with the pedicle's medial cortex intact and the canal-independent midline check agreeing was left not assessed
because the neighbouring level's canal, shifted here, read 2-4 mm. That canal may no longer block the A/B read on its
own when the own and mirrored canal depths are under the C bound, the screw is symmetric with its pair and the
body-width wall is known. Synthetic and deterministic, as test_ct_session12-14.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from rules.image_policy import ct_policy

POL = ct_policy()
IMPL = ("canal implausible next to the screw", "...")
MID = {"offset_mm": 12.0, "pair_excess_mm": -1.6, "level_excess_mm": -2.6, "axis_depth_mm": -12.2,
       "body_depth_mm": 0.2}  # family 6 seed 31 study 3 L3 left (truth A), rounded


def _ped(prof, off=10.4):
    return {"available": True, "depth_mm": 0.0, "sections": sum(v is not None for v in prof), "profile_mm": prof,
            "min_medial_edge_offset_mm": off}


CLEAN = _ped([0.0] * 8)


def test_a_lopsided_canal_lets_the_intact_pedicle_and_midline_check_read_a_b_despite_the_neighbouring_canal():
    from workers.analysers.ct_hardware import _with_intact_pedicle

    # the neighbouring level's canal, shifted here, reads 2.6 mm; this level's own (lopsided) canal 1.3 mm
    got = _with_intact_pedicle(CLEAN, IMPL, 1.3, 2.6, None, "this level", 1.0, MID, True, POL, own_canal_depth=1.3)
    assert got[0] is None and got[2] == "B" and got[4] <= 0.6
    assert "waived" in got[3] and "midline" in got[3] and "pedicle" in got[3]
    # main's behaviour without a lopsided canal (own_canal_depth not given): not assessed
    assert _with_intact_pedicle(CLEAN, IMPL, 1.3, 2.6, None, "this level", 1.0, MID, True, POL)[0] == IMPL
    # every reference under C: session 6's read, unchanged, and not worded as a waiver
    got = _with_intact_pedicle(CLEAN, IMPL, 0.4, 1.5, None, "this level", 1.0, MID, True, POL, own_canal_depth=0.4)
    assert got[0] is None and "waived" not in got[3]


def test_the_waiver_needs_low_own_canals_a_modest_neighbour_a_symmetric_pair_the_body_wall_and_the_other_checks():
    from workers.analysers.ct_hardware import _lopsided_neighbour_waived, _with_intact_pedicle

    def read(ped=CLEAN, mid=MID, own=1.3, nb=2.6):
        return _with_intact_pedicle(ped, IMPL, min(own, 1.9), max(own, nb), None, "this level", 1.0, mid, True, POL,
                                    own_canal_depth=own)[0]

    assert read() is None
    assert read(own=2.0) == IMPL  # this level's own or mirrored canal at C depth
    assert read(nb=4.0) == IMPL  # the neighbouring canal beyond its misalignment (expected_wall_flag_mm)
    # the pair 11 mm nearer the midline: itself breached (family 4 seed 33 study 2 L4 right, truth C 2.1, whose
    # pair is a truth-D screw), or the midline off; either way no evidence for this screw
    assert read(mid=dict(MID, pair_excess_mm=-11.0)) == IMPL
    assert read(mid=dict(MID, pair_excess_mm=-2.1)) == IMPL
    assert read(mid=dict(MID, pair_excess_mm=None)) is None  # no pair: the other references decide
    assert read(mid=dict(MID, body_depth_mm=None)) == IMPL  # no body-width wall: a construct breached alike unseen
    assert read(mid=dict(MID, level_excess_mm=3.5)) == IMPL  # the midline check must still agree
    assert read(mid={}) == IMPL
    assert read(ped=_ped([0.0] * 7)) == IMPL  # too few sections
    assert read(ped=_ped([0.0, 2.4] + [0.0] * 8)) == IMPL  # one section past the cortex
    assert read(ped=_ped([0.0] * 8, off=4.0)) == IMPL  # metal next to the midline
    assert not _lopsided_neighbour_waived(MID, 2.6, None, POL)  # not lopsided: nothing waived
    assert _lopsided_neighbour_waived(MID, 3.9, 1.9, POL)


def _canal(cols, centre_col):
    ref = np.zeros((20, 60), bool)
    ref[5:15, cols[0]:cols[1]] = True
    return SimpleNamespace(source="this level", reference=ref, centre=(10.0, float(centre_col)), mirrored=(False, False))


def test_lopsided_is_the_canal_lying_on_the_screws_side_not_the_canal_reduced_there():
    # `_screw` recognises the lopsided canal by its reason's wording; the reduced canal on the screw's side (metal in
    # it: the three truth D/E screws among the tuning seeds' 39) is the other wording and is never waived
    from workers.analysers.ct_hardware import _plausibility

    lop = _plausibility(_canal((28, 40), 30), {}, +1, POL)  # 2 columns left of the centre, 10 right: screw right
    assert lop and lop[0].startswith("canal lopsided")
    side = _plausibility(_canal((20, 32), 30), {}, +1, POL)  # 10 columns left, 2 on the screw's (right) side
    assert side and side[0].startswith("canal on the screw's side")

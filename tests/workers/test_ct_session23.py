"""Session 23 (issue 10): a second canal hypothesis, the largest region of CSF density.

The per-slice canal search takes the largest low-density region inside the bone's hull. Where a vertebral body's
cancellous bone reads under the 200-HU bone threshold (osteoporotic bone, 50-150 HU) that region is often the body's
interior, not the canal (session 16). The second hypothesis looks for the canal only among regions whose median density
is under `canal.content_max_hu` (CSF, cord, epidural fat), and each screw is read against both canals; the second may
refine a read within its class or grade a screw the first left not assessed, never lower a class.
Synthetic and deterministic, as test_ct_session12-15.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rules.image_policy import PolicyError, ct_policy, parse

POL = ct_policy()


def _slice():
    """A 120x120 slice at 0.5 mm: a vertebral body ring (cortex 700 HU) around 100-HU cancellous bone (under the bone
    threshold), joined by pedicles to an arch ring around a CSF canal (5 HU), smaller than the body's interior."""
    yy, xx = np.mgrid[0:120, 0:120]
    hu = np.full((120, 120), 40.0)  # muscle
    body = (yy - 35) ** 2 / 26 ** 2 + (xx - 60) ** 2 / 34 ** 2 <= 1
    body_in = (yy - 35) ** 2 / 23 ** 2 + (xx - 60) ** 2 / 31 ** 2 <= 1
    hu[body] = 700.0
    hu[body_in] = 100.0
    arch = (yy - 80) ** 2 / 19 ** 2 + (xx - 60) ** 2 / 19 ** 2 <= 1
    canal = (yy - 80) ** 2 / 15 ** 2 + (xx - 60) ** 2 / 15 ** 2 <= 1
    hu[arch] = 700.0
    hu[canal] = 5.0
    return hu, canal, body_in


def test_the_csf_density_hypothesis_finds_the_canal_where_the_largest_region_is_the_body():
    from workers.analysers.canal import slice_canal

    hu, canal, body_in = _slice()
    bone = hu >= POL.bone_hu
    first, _ = slice_canal(bone, (0.5, 0.5), None, bone)
    assert first is not None and (first & body_in).sum() > 0.9 * first.sum()  # sessions 1-22: the body's interior
    second, walls = slice_canal(bone, (0.5, 0.5), None, bone, hu=hu, content_max_hu=POL.canal_content_max_hu)
    assert second is not None and (second & canal).sum() > 0.9 * second.sum() and walls == (True, True)
    # the canal's content dense too: never the body's interior (here the soft tissue between body and arch, 40 HU)
    dense = np.where(canal, 120.0, hu)
    got = slice_canal(bone, (0.5, 0.5), None, bone, hu=dense, content_max_hu=50.0)[0]
    assert got is not None and not (got & (body_in | canal)).any()
    assert slice_canal(bone, (0.5, 0.5), None, bone, hu=np.where(canal | body_in, 120.0, 60.0),
                       content_max_hu=50.0)[0] is None


def _read(grade, value, against="this level", conf=0.8, source="this level", body=0.0, pair=None):
    return ([{"name": "medial_breach_depth", "grade": grade, "value": value, "measured_against": against,
              "confidence": conf, "canal_source": source,
              "midline_check": {"body_depth_mm": body, "pair_excess_mm": pair}}], "scratch")


NA = ([{"name": "screw_length", "value": 45.0}], "scratch-na")


@pytest.mark.parametrize("first, second, kept", [
    # both graded in one class: the second's depth (not inflated by a body taken for the canal)
    (_read("E", 11.0), _read("D", 5.8), "second"),
    (_read("A", 0.0), _read("B", 1.3), "second"),
    (_read("C", 2.4), _read("C", 3.1), "second"),
    # another class: never moved, up or down
    (_read("D", 4.2), _read("B", 1.0), "first"),
    (_read("C", 2.2), _read("A", 0.0), "first"),
    (_read("B", 1.0, against="this level and the canal-independent midline check"), _read("E", 8.0), "first"),
    # the second not assessed never replaces a grade
    (_read("D", 4.2), NA, "first"),
    # the first not assessed: a C+ read from the second's own, unmirrored canal with confidence >= 0.6
    (NA, _read("D", 4.7, conf=0.64), "second"),
    (NA, _read("E", 8.0, against="canal of construct level 1", conf=0.6, source="neighbouring level"), "first"),
    (NA, _read("E", 8.3, source="this level, one side mirrored", conf=0.31), "first"),
    (NA, _read("C", 2.5, conf=0.5), "first"),
    # ... an A/B read unless the body-width wall puts the screw at C depth
    (NA, _read("A", 0.0, body=-1.5), "second"),
    (NA, _read("B", 1.6, body=3.0), "first"),
    # ... or the screw more than 2 mm nearer the midline than its pair
    (NA, _read("B", 1.5, pair=2.3), "first"),
    (NA, _read("A", 0.0, pair=2.0), "second"),
    (NA, _read("A", 0.0, pair=-12.4), "second"),
    (NA, NA, "first"),
])
def test_the_second_read_refines_within_a_class_or_grades_what_the_first_left_not_assessed(first, second, kept):
    from workers.analysers.ct_hardware import _merged_read

    got = _merged_read([first, second], POL)
    assert got is (first if kept == "first" else second)


def test_a_screw_the_two_canals_side_differently_keeps_the_first_read():
    from workers.analysers.ct_hardware import _merged_read

    first = ([{"name": "screw_length", "side": "right"}] + _read("E", 11.3)[0], "first")
    second = ([{"name": "screw_length", "side": "left"}] + _read("E", 11.6)[0], "second")
    assert _merged_read([first, second], POL) is first
    second[0][0]["side"] = "right"
    assert _merged_read([first, second], POL) is second


def test_the_kept_read_names_both_hypotheses_and_one_hypothesis_is_returned_unchanged():
    from workers.analysers.ct_hardware import _merged_read

    first, second = _read("E", 11.0), _read("D", 5.8)
    got = _merged_read([first, second], POL)
    assert got[0][0]["canal_hypotheses"] == {"kept": "CSF-density region", "other_read": "E 11.0 mm"}
    first, second = _read("D", 4.2), _read("B", 1.0)
    got = _merged_read([first, second], POL)
    assert got[0][0]["canal_hypotheses"] == {"kept": "largest low-density region", "other_read": "B 1.0 mm"}
    only = _read("A", 0.0)
    assert _merged_read([only], POL) is only and "canal_hypotheses" not in only[0][0]


def test_the_threshold_is_policy_with_an_off_switch(tmp_path: Path):
    from rules import image_policy

    shipped = Path(image_policy.__file__).parent / "images" / "ct_hardware.yaml"
    doc = yaml.safe_load(shipped.read_text())
    assert doc["canal"]["content_max_hu"] == 50 and POL.canal_content_max_hu == 50.0
    doc["canal"]["content_max_hu"] = None
    assert parse(doc, tmp_path / "p.yaml").canal_content_max_hu is None
    doc["canal"]["content_max_hu"] = -5
    with pytest.raises(PolicyError, match="content_max_hu"):
        parse(doc, tmp_path / "p.yaml")

"""Session 24 (issue 10): a stimulator lead read as canal content; a STAT read against this level's CSF-density canal
raises an unconfirmed A/B.

Held-out family 4 (seed 20261229) had two truth-D screws read A/B: one against a vertebral body taken for the canal
while the CSF-density canal was cut in two by a spinal cord stimulator's lead (metal, with a blooming rim read as bone,
touching the lamina), the other against a neighbouring level's canal while the CSF-density canal read E.
Synthetic and deterministic, as test_ct_session12-23.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rules.image_policy import ct_policy

POL = ct_policy()


def _volume():
    """8 slices of 120x120 at 0.5 mm: a vertebral body, an arch around a stenotic canal (CSF, 5 HU, 7 mm AP and 30 mm
    wide), and a stimulator lead (3000 HU, a 1 px blooming rim at 800 HU) across the canal's depth at its middle."""
    from workers.analysers.volume import Volume

    yy, xx = np.mgrid[0:120, 0:120]
    hu = np.full((120, 120), 60.0)  # soft tissue, above the CSF-density limit
    body = (yy - 35) ** 2 / 26 ** 2 + (xx - 60) ** 2 / 34 ** 2 <= 1
    hu[body] = 700.0
    hu[(yy - 35) ** 2 / 23 ** 2 + (xx - 60) ** 2 / 31 ** 2 <= 1] = 100.0
    arch = (yy - 75) ** 2 / 11 ** 2 + (xx - 60) ** 2 / 34 ** 2 <= 1
    canal = (yy - 75) ** 2 / 7 ** 2 + (xx - 60) ** 2 / 30 ** 2 <= 1
    hu[arch] = 700.0
    hu[canal] = 5.0
    lead = (abs(yy - 75) <= 7) & (abs(xx - 60) <= 1)
    rim = (abs(yy - 75) <= 8) & (abs(xx - 60) <= 2) & ~lead
    hu[rim & canal] = 800.0
    hu[lead] = 3000.0
    vol = Volume(hu=np.repeat(hu[None], 8, 0).astype(np.int16), z=np.arange(8, dtype=float), pixel_spacing=(0.5, 0.5),
                 origin=np.zeros(3), row_dir=np.array([1.0, 0, 0]), col_dir=np.array([0, 1.0, 0]))
    ys, xs = np.nonzero(lead)
    part = SimpleNamespace(kind="lead", bbox=(slice(0, 8), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)),
                           mask=np.ones((8, ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), bool))
    return vol, canal, part


def test_a_lead_cut_canal_is_found_whole_once_the_lead_reads_as_canal_content():
    from workers.analysers.canal import slice_canal
    from workers.analysers.ct_hardware import LEAD_AS_CONTENT_HU, _leads_as_content

    vol, canal, lead = _volume()
    hu = vol.hu[4].astype(float)
    bone = hu >= POL.bone_hu
    cut, _ = slice_canal(bone, (0.5, 0.5), None, bone, hu=hu, content_max_hu=POL.canal_content_max_hu)
    assert cut is not None and cut.sum() < 0.6 * canal.sum()  # one side of the lead only
    filled = _leads_as_content(vol, [lead])
    assert filled is not vol and filled.hu is not vol.hu and (vol.hu >= 3000).any()  # the original is untouched
    assert not (filled.hu >= POL.bone_hu)[:, 66:85, 56:65][:, canal[66:85, 56:65]].any()  # lead and rim are content
    assert (filled.hu[4][canal & ~(vol.hu[4] < 200)] == LEAD_AS_CONTENT_HU).all()
    fh = filled.hu[4].astype(float)
    whole, _ = slice_canal(fh >= POL.bone_hu, (0.5, 0.5), None, fh >= POL.bone_hu, hu=fh,
                           content_max_hu=POL.canal_content_max_hu)
    assert whole is not None and (whole & canal).sum() > 0.9 * canal.sum()


def test_without_leads_the_volume_is_the_same_object():
    from workers.analysers.ct_hardware import _leads_as_content

    vol, _, _ = _volume()
    assert _leads_as_content(vol, []) is vol


def _read(grade, value, against="this level", conf=0.8, source="this level"):
    return ([{"name": "medial_breach_depth", "grade": grade, "value": value, "measured_against": against,
              "confidence": conf, "canal_source": source, "midline_check": {}}], "scratch")


@pytest.mark.parametrize("first, second, kept", [
    # the two held-out cases: A/B against a body or a neighbour's canal, D/E against this level's CSF-density canal
    (_read("A", 0.0, against="this level and mirrored contralateral canal, canal of construct level 1", conf=0.6),
     _read("D", 5.0, against="mirrored contralateral canal", conf=0.6), "second"),
    (_read("B", 1.4, against="neighbouring level", conf=0.5, source="neighbouring level"),
     _read("E", 8.8, against="canal of construct level 1", conf=0.6), "second"),
    # the first's A/B confirmed by a canal-independent check (a held-out family-5 truth-A screw read E by the second)
    (_read("A", 0.0, against="this level and the canal-independent midline check (medial surface ...)", conf=0.6),
     _read("E", 7.1, against="canal of construct level 2", conf=0.6), "first"),
    # C is not raised so (two tuning-set A/B screws would read C)
    (_read("B", 1.5), _read("C", 2.6), "first"),
    # nor from a weak or borrowed second canal
    (_read("A", 0.0), _read("E", 8.0, conf=0.5), "first"),
    (_read("A", 0.0), _read("E", 8.0, source="neighbouring level"), "first"),
    (_read("A", 0.0), _read("D", 4.4, source="this level, one side mirrored"), "first"),
    # and a class is still never lowered
    (_read("E", 8.0), _read("A", 0.0), "first"),
])
def test_a_stat_read_against_this_levels_canal_raises_an_unconfirmed_a_b(first, second, kept):
    from workers.analysers.ct_hardware import _merged_read

    got = _merged_read([first, second], POL)
    assert got is (first if kept == "first" else second)

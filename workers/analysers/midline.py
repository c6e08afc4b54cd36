"""Canal-independent check of a screw's medial position: the screw against the vertebra's midline.

The canal outline found next to a screw can be wrong (split by the screw, coarse slices, a
laminectomy) in a way that still looks plausible. This check does not use it. Per construct
level, the vertebral body (the bone present on most slices of the level's slab, metal in-painted)
gives the midline (its centre and its antero-posterior axis) and its posterior wall. Just behind
the posterior wall, over the pedicle isthmus, a well-placed screw stays lateral of the medial
pedicle wall; a medial breach brings its metal towards the midline by the breach depth.

For each screw: `medial_offset_mm`, the smallest distance of its metal from the midline in the
zone from the body's posterior wall to `zone_mm` behind it (on the screw's own side). Two
expectations, both canal-independent:

- the pair: the contralateral screw of the same level (a pedicle pair is symmetric about the
  midline): `pair_excess_mm` = contralateral offset - own offset;
- the construct: the median offset of the other levels' screws (adjacent pedicles have similar
  interpedicular distances): `level_excess_mm` = that median - own offset.

An excess of several millimetres means the screw sits nearer the midline than its expected medial
pedicle wall: a low grade read from the canal is then not a negative finding.
"""

from __future__ import annotations

import numpy as np


#: Widest vertebral body (mm) the check accepts (T10-S1 bodies are about 30-55 mm wide; ct_hardware.BODY_WIDTH_MM
#: bounds session 7's fallback body the same way). A wider "body" is the body joined by the sacral ala or the facets
#: (session 12, family 5 tuning seeds: three S1 screws measured against a 75-109 mm "body", two truth-E screws left
#: "not assessed (canal and midline checks disagree)" because their offset was measured at the entry, 15 mm out).
MAX_BODY_WIDTH_MM = 65.0
#: A screw whose medial surface lies beyond `max_offset_mm` of the body's midline is kept as a "far" record (session
#: 14) only when the level's own canal confirms that midline: the canal's centre, from this level's slices with both
#: lateral walls seen (at least `FAR_MIN_WELL_DEFINED`), within this (mm) of the body's antero-posterior axis at the
#: canal's depth. A "far" offset is never used as a pair or a construct reference for other screws; it only lets
#: `ct_hardware` confirm a low grade (`_far_from_midline`). Session 14, tuning seeds: of the screws with a medial
#: surface over 18 mm from the body's midline, those whose canal centre lay 6-12 mm off the body's axis had a body
#: found rotated 28 deg or a canal borrowed from another level; the others' canal centres lay within 1.5 mm.
FAR_CANAL_AGREE_MM = 2.0
FAR_MIN_WELL_DEFINED = 3


def _canal_on_axis(lc, dy: float, dx: float) -> bool:
    """The level's own canal centre (both walls seen on >= FAR_MIN_WELL_DEFINED slices) lies within
    FAR_CANAL_AGREE_MM of the vertebral body's antero-posterior axis, measured across that axis."""
    if (lc.reference is None or lc.centre is None or not str(lc.source).startswith("this level")
            or lc.well_defined < FAR_MIN_WELL_DEFINED or lc.body is None):
        return False
    (by, bx), u = lc.body[0], np.asarray(lc.body[1], float)
    cy, cx = lc.centre
    d = np.array([(cy - by) * dy, (cx - bx) * dx])
    ap = np.array([u[0] * dy, u[1] * dx])
    ap /= np.linalg.norm(ap)
    return abs(float(d @ np.array([-ap[1], ap[0]]))) <= FAR_CANAL_AGREE_MM


def offsets(vol, screws, levels, canals, isthmus_mm: float = 5.0, max_offset_mm: float = 18.0,
            far_max_mm: float | None = None, wide_from_canal: bool = False) -> dict[int, dict]:
    """{screw index: {"offset_mm", "side_sign", "level"}} for screws whose level has a vertebral body.

    offset_mm: distance from the midline of the screw's medial surface where its axis crosses the
    pedicle isthmus (`isthmus_mm` behind the body's posterior wall): axis position minus its radius.
    A screw beyond `max_offset_mm` is left out, or, with `far_max_mm`, kept up to that offset with "far": True
    when the level's own canal centre confirms the body's midline (`_canal_on_axis`; session 14).
    A "body" wider than `MAX_BODY_WIDTH_MM` (the sacral ala joined to it) gives no check, or, with `wide_from_canal`,
    one when the level's own canal confirms its midline: the offset is then the nearest approach of the screw's
    medial surface to the midline over the canal's antero-posterior extent (the body's posterior wall, and so the
    isthmus, is not where it is found), without a body-width expectation, "wide": True (session 14).
    """
    dz, dy, dx = vol.spacing
    pix = 0.5 * (dy + dx)
    post = 1.0 if vol.col_dir[1] > 0 else -1.0  # rows increase towards posterior when col_dir is +y
    out: dict[int, dict] = {}
    for i, (p, lev) in enumerate(zip(screws, levels)):
        lc = canals.get(lev)
        if lc is None or getattr(lc, "body", None) is None:
            continue
        (cy, cx), u, (tmin, tmax), width = lc.body
        wide = width * pix > MAX_BODY_WIDTH_MM
        if wide and not (wide_from_canal and _canal_on_axis(lc, dy, dx)):
            continue  # no vertebral body is that wide: the sacral ala or facets joined it
        u = np.asarray(u, float) * post  # towards posterior
        t_wall = (tmax if post > 0 else -tmin) * pix  # posterior wall of the body along u (mm)
        perp = np.array([-u[1], u[0]])
        if perp[1] < 0:
            perp = -perp  # towards increasing columns
        # the screw axis in the axial plane (mm, relative to the body centre)
        c = np.array([p.centre[1] - (lc.roi[0] + cy) * dy, p.centre[2] - (lc.roi[2] + cx) * dx])
        a = np.array([p.axis[1], p.axis[2]], float)
        ct, at = float(c @ u), float(a @ u)
        if abs(at) < 0.3:  # runs across, not front to back: no isthmus crossing
            continue
        if wide:
            ys, xs = np.nonzero(lc.reference)
            tq = np.column_stack([ys * dy - cy * dy, xs * dx - cx * dx]) @ u  # the canal's AP extent along u (mm)
            s0, s1 = sorted(((float(tq.min()) - ct) / at, (float(tq.max()) - ct) / at))
            s0, s1 = max(s0, -0.5 * p.length), min(s1, 0.5 * p.length)
            if s0 > s1:  # the screw does not reach the canal's depth
                continue
            l0, l1 = float((c + s0 * a) @ perp), float((c + s1 * a) @ perp)
            back = float((c + (0.5 if at > 0 else -0.5) * p.length * a) @ perp)  # the entry end: its own side
            sign = 1 if back > 0 else -1
            lat = (0.0 if l0 * l1 <= 0 else min(abs(l0), abs(l1))) * sign
        else:
            s = (t_wall + isthmus_mm - ct) / at
            if abs(s) > 0.7 * p.length:  # the isthmus is not on this screw
                continue
            lat = float((c + s * a) @ perp)
            sign = 1 if lat > 0 else -1
        far = abs(lat) - 0.5 * p.diameter > max_offset_mm
        if far and (far_max_mm is None or abs(lat) - 0.5 * p.diameter > far_max_mm or not _canal_on_axis(lc, dy, dx)):
            continue  # no pedicle is that far out: wrong body or axis (unless the level's own canal confirms it)
        rec = {"offset_mm": abs(lat) - 0.5 * p.diameter, "side_sign": sign, "level": lev, "half_width_mm": None,
               "body_width_mm": width * pix}
        if far:
            rec["far"] = True
        if wide:
            rec["wide"], rec["body_width_mm"] = True, None
        if lc.reference is not None:  # the canal's contralateral half-width at the isthmus (mirror expectation)
            ys, xs = np.nonzero(lc.reference)
            q = np.column_stack([ys * dy - cy * dy, xs * dx - cx * dx])
            lats = (q @ perp) * -sign  # the interpedicular distance is the canal's widest part
            if len(lats) >= 3 and lats.max() > 0:
                rec["half_width_mm"] = float(lats.max())
        out[i] = rec
    return out


#: Interpedicular half-distance over the vertebral body's width: about a quarter from T10 to S1 (canal
#: 15-30 mm wide for bodies of 35-55 mm); the expected medial pedicle wall when nothing else is known.
HALF_WIDTH_PER_BODY_WIDTH = 0.25


def excesses(offs: dict[int, dict], i: int) -> dict:
    """pair_excess_mm and level_excess_mm of screw i (None when no reference)."""
    me = offs.get(i)
    if me is None or me.get("far"):
        out = {"offset_mm": None, "pair_excess_mm": None, "level_excess_mm": None, "axis_depth_mm": None,
               "body_depth_mm": None}
        if me is not None:  # beyond the usual bound, the midline confirmed by the canal: only this (session 14)
            out["far_offset_mm"] = round(me["offset_mm"], 1)
        return out
    offs = {j: o for j, o in offs.items() if not o.get("far")}  # far records are no reference for other screws
    pair = [o["offset_mm"] for j, o in offs.items()
            if j != i and o["level"] == me["level"] and o["side_sign"] != me["side_sign"]]
    # a wide-body record (measured over the canal's extent, not at the isthmus) is compared with its pair only
    others = [] if me.get("wide") else [o["offset_mm"] for j, o in offs.items()
                                        if o["level"] != me["level"] and not o.get("wide")]
    return {"offset_mm": round(me["offset_mm"], 1),
            "pair_excess_mm": round(max(pair) - me["offset_mm"], 1) if pair else None,
            "level_excess_mm": round(float(np.median(others)) - me["offset_mm"], 1) if others else None,
            "axis_depth_mm": (round(me["half_width_mm"] - me["offset_mm"], 1)
                              if me.get("half_width_mm") is not None else None),
            "body_depth_mm": (None if me.get("body_width_mm") is None
                              else round(HALF_WIDTH_PER_BODY_WIDTH * me["body_width_mm"] - me["offset_mm"], 1))}

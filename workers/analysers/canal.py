"""Spinal canal of one construct level, found without needing a closed ring next to the screw.

Method (per level, on a slab of slices around the level's screws):

1. Metal is an occluder, not bone: metal voxels, dilated by a blooming margin,
   are "unknown". Each unknown voxel takes the bone/not-bone state of the
   nearest known slice above or below it (z in-painting), so the pedicle wall
   a screw has replaced is seen where the screw is not.
2. Each slice's bone (>= 200 HU) is closed by its convex hull, so a posterior
   arch removed by laminectomy does not open the canal; the canal is the
   low-density region inside the hull, between the pedicles, chosen by area
   and position.
3. Slices where both lateral walls of that region are bone (pedicle level) are
   "well defined"; their majority vote is the level's reference canal, carried
   along z: a slice's canal is cut to the reference (slightly dilated), so the
   foramen above or below the pedicle and the screw's own track do not leak
   into it.
4. A level without any well-defined slice borrows the nearest level's
   reference, shifted by the screws' centre, with a lower confidence.

Breach depth of a screw: (a) perpendicular depth beyond the medial pedicle
cortex (distance of the screw's voxels inside the canal to the bone wall on
the screw's side); (b) depth in the canal (distance to any canal wall). Both go
into the evidence with a confidence value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError


BONE_HU = 200
CANAL_AREA_MM2 = (50.0, 900.0)
#: Next to metal, denser than this is metal blooming or partial volume, not bone.
CONTAMINATED_HU = 1000


@dataclass
class LevelCanal:
    """The canal of one level, in the level's ROI (y0:y1, x0:x1) and slab (k0:k1)."""

    roi: tuple[int, int, int, int]  # y0, y1, x0, x1
    k0: int
    k1: int
    bone: np.ndarray  # bool (slab, h, w), metal in-painted from neighbouring slices
    occluded: np.ndarray  # bool (slab, h, w)
    canal: list  # per slab slice: bool (h, w) canal cut to the reference, or None
    reference: np.ndarray | None  # bool (h, w)
    well_defined: int  # slices with both lateral walls closed
    source: str  # "this level" | "neighbouring level" | "none"
    centre: tuple[float, float] | None = None  # (y, x) pixel in the ROI, reference canal centroid
    notes: list[str] = field(default_factory=list)
    known: np.ndarray | None = None  # bool (slab, h, w): seen, or in-painted from a slice close enough
    halves: tuple | None = None  # (low-column half, high-column half) of the reference, before joining
    mirrored: tuple = (False, False)  # whether each half is the mirror of the other side
    axis: np.ndarray | None = None  # (row, col) unit direction of the symmetry axis
    neighbour_ref: np.ndarray | None = None  # the nearest other level's reference, shifted into this ROI
    neighbour_level: int | None = None
    body: tuple | None = None  # ((row, col) centre, (row, col) unit AP axis, (min, max) extent along it, width; px)


def _inpaint_z(bone: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """Each occluded voxel takes the value of the nearest non-occluded voxel along z (same y, x)."""
    nz = bone.shape[0]
    ks = np.arange(nz)[:, None, None]
    known = ~occluded
    below = np.where(known, ks, -1)
    below = np.maximum.accumulate(below, axis=0)  # last known index at or below k
    above = np.where(known, ks, nz)
    above = np.minimum.accumulate(above[::-1], axis=0)[::-1]  # first known index at or above k
    use_below = (below >= 0) & ((above >= nz) | (ks - below <= above - ks))
    src = np.where(use_below, below, np.where(above < nz, above, -1))
    out = bone.copy()
    idx = np.nonzero(occluded & (src >= 0))
    out[idx] = bone[src[idx], idx[1], idx[2]]
    out[occluded & (src < 0)] = False
    return out


def _hull(mask: np.ndarray) -> np.ndarray | None:
    """Filled convex hull of a 2-D mask (None when degenerate)."""
    edge = mask & ~ndi.binary_erosion(mask)
    pts = np.column_stack(np.nonzero(edge)).astype(float)
    if len(pts) < 10:
        return None
    try:
        h = ConvexHull(pts)
    except (QhullError, ValueError):
        return None
    (ya, xa), (yb, xb) = pts.min(axis=0).astype(int), pts.max(axis=0).astype(int) + 1
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(float)
    inside = np.ones(yy.shape, bool)
    for a, b, c in h.equations:  # one half-plane at a time (the same arithmetic as all at once, 6x faster: session 25)
        inside &= yy * a + xx * b + c <= 0.5
    out = np.zeros(mask.shape, bool)
    out[ya:yb, xa:xb] = inside
    return out


def slice_canal(bone: np.ndarray, pixel_mm, centre_x: float | None, seen: np.ndarray | None = None,
                min_part_mm2: float = 30.0, hu: np.ndarray | None = None, content_max_hu: float | None = None):
    """(canal mask, (left wall seen, right wall seen)) of one slice, or (None, (False, False)).

    `bone` is what bounds the canal (metal and unknown count as bounding); `seen` is the bone actually
    seen (not hidden by metal): a wall counts only where it is seen. Columns: left = lower index.
    With `hu` (the slice) and `content_max_hu`, a region whose median density is at or above
    `content_max_hu` is not a candidate: the canal holds CSF, cord and epidural fat, while the
    cancellous bone of a vertebral body reads under the bone threshold in osteoporotic bone and
    would otherwise be the largest low-density region in the hull (session 23).
    """
    return slice_canals(bone, pixel_mm, centre_x, seen, min_part_mm2, hu, (content_max_hu,))[0]


def slice_canals(bone: np.ndarray, pixel_mm, centre_x: float | None, seen: np.ndarray | None = None,
                 min_part_mm2: float = 30.0, hu: np.ndarray | None = None, limits=(None,)) -> list:
    """`slice_canal` for each density limit of `limits` (None: no limit), the candidates found once."""
    none = [(None, (False, False))] * len(limits)
    seen = bone if seen is None else seen
    lab, n = ndi.label(seen)  # the hull of the bone seen: metal (rods, heads) does not widen it
    if n == 0:
        return none
    area = np.bincount(lab.ravel())[1:] * pixel_mm[0] * pixel_mm[1]
    keep = np.nonzero(area >= min_part_mm2)[0] + 1
    if len(keep) == 0:
        return none
    hull = _hull(np.isin(lab, keep))
    if hull is None:
        return none
    cand = hull & ~bone
    clab, m = ndi.label(cand)
    if m == 0:
        return none
    carea = np.bincount(clab.ravel())[1:] * pixel_mm[0] * pixel_mm[1]
    ok = np.nonzero((carea >= CANAL_AREA_MM2[0]) & (carea <= CANAL_AREA_MM2[1]))[0]
    if len(ok) == 0:
        return none
    if centre_x is not None:
        cx = np.array([c[1] for c in ndi.center_of_mass(cand, clab, ok + 1)])
        ok = ok[np.abs(cx - centre_x) * pixel_mm[1] < 15.0]
        if len(ok) == 0:
            return none
    med = None
    out = []
    for limit in limits:
        sel = ok
        if hu is not None and limit is not None:
            if med is None:
                med = np.asarray(ndi.median(hu, clab, ok + 1), float)
            sel = ok[med < limit]
        if len(sel) == 0:
            out.append((None, (False, False)))
            continue
        canal = clab == sel[np.argmax(carea[sel])] + 1
        out.append((canal, _walls_seen(canal, seen)))
    return out


def _walls_seen(canal: np.ndarray, seen: np.ndarray, frac: float = 0.7) -> tuple[bool, bool]:
    """(low-column, high-column) lateral wall of the canal is seen bone over the middle half of its AP extent."""
    rows = np.nonzero(canal.any(axis=1))[0]
    if len(rows) < 3:
        return False, False
    a, b = rows[0], rows[-1]
    hits = [0, 0]
    total = 0
    w = canal.shape[1]
    for r in range(a + (b - a) // 4, b - (b - a) // 4 + 1):
        cols = np.nonzero(canal[r])[0]
        if len(cols) == 0:
            continue
        total += 1
        lo, hi = cols[0], cols[-1]
        hits[0] += bool(lo >= 1 and seen[r, max(lo - 2, 0):lo].any())
        hits[1] += bool(hi + 1 < w and seen[r, hi + 1:hi + 3].any())
    return (total > 0 and hits[0] >= frac * total), (total > 0 and hits[1] >= frac * total)


def _mirror(mask: np.ndarray, c: tuple[float, float], u: np.ndarray) -> np.ndarray:
    """Reflection of a mask across the line through c (row, col) with unit direction u (row, col)."""
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    p = np.stack([yy - c[0], xx - c[1]], axis=-1).astype(float)
    q = 2 * (p @ u)[..., None] * u - p
    qy = np.rint(q[..., 0] + c[0]).astype(int)
    qx = np.rint(q[..., 1] + c[1]).astype(int)
    ok = (qy >= 0) & (qy < mask.shape[0]) & (qx >= 0) & (qx < mask.shape[1])
    out = np.zeros_like(mask)
    out[ok] = mask[qy[ok], qx[ok]]
    return out


def _body_axis(bone: np.ndarray, pixel_mm: float = 0.5):
    """Centre (row, col), AP unit direction (row, col, towards increasing rows) and extent along it (px)
    of the vertebral body, or None.

    Each slice's bone is filled (the cortical shell encloses the trabecular bone, whatever its density),
    averaged over the slab, and opened with a disc of 6 mm radius: the body (a large convex blob) stays,
    the pedicles, laminae and processes (thinner) go. The body is wider than deep, so its minor
    principal axis is the AP (symmetry) axis.
    """
    filled = np.zeros(bone.shape[1:], np.float32)
    step = max(1, bone.shape[0] // 12)  # about a dozen slices are enough for the mean
    for k in range(0, bone.shape[0], step):
        filled += ndi.binary_fill_holes(bone[k])
    n = len(range(0, bone.shape[0], step))
    m = _opened(filled > 0.5 * n, max(2.0, 6.0 / pixel_mm))
    return _body_of_mask(m, pixel_mm)


def _opened(m: np.ndarray, r: float) -> np.ndarray:
    """m opened by a disc of radius r (pixels), with distance transforms (fast)."""
    core = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] > r
    return ndi.distance_transform_edt(~core) <= r if core.any() else core


def _body_of_mask(m: np.ndarray, pixel_mm: float):
    """The largest blob of m as a vertebral body: centre, AP unit axis (its minor principal axis, or the image AP axis
    when it is not clearly wider than deep), AP extent and width; None under 3 cm2."""
    lab, n = ndi.label(m)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    ys, xs = np.nonzero(lab == (np.argmax(sizes) + 1))
    if len(ys) * pixel_mm * pixel_mm < 300:  # under 3 cm2: not a vertebral body
        return None
    c = np.array([ys.mean(), xs.mean()])
    d = np.column_stack([ys - c[0], xs - c[1]])
    w, v = np.linalg.eigh(d.T @ d / len(d))
    u = v[:, 0]  # minor axis
    if w[1] < 1.1 * w[0] or abs(u[0]) < np.cos(np.radians(30)):
        u = np.array([1.0, 0.0])  # not clearly wider than deep: the image AP axis
    u = u / np.linalg.norm(u)
    if u[0] < 0:
        u = -u  # towards increasing rows
    t = d @ u
    w = d @ np.array([-u[1], u[0]])
    return (float(c[0]), float(c[1])), u, (float(t.min()), float(t.max())), float(w.max() - w.min() + 1)


def _body_axis_per_slice(bone: np.ndarray, pixel_mm: float = 0.5):
    """As `_body_axis`, for a slab where that finds no body: each sampled slice's fill counts only where it holds a
    body-sized blob (session 7), and the body is what most of those slices hold."""
    r = max(2.0, 6.0 / pixel_mm)
    filled = np.zeros(bone.shape[1:], np.float32)
    step = max(1, bone.shape[0] // 12)  # about a dozen slices are enough for the mean
    n = 0
    for k in range(0, bone.shape[0], step):
        # A slice counts only where its fill holds a body-sized blob: where the pedicles join the body its
        # cancellous bone (under the bone threshold) connects through the pedicle, around the screw, to the
        # outside, and the fill fails on that slice (session 7: most slices of a level crossed by screws)
        f = _opened(ndi.binary_fill_holes(bone[k]), r)
        if f.sum() * pixel_mm * pixel_mm >= 300:
            filled += f
            n += 1
    if n < max(2, len(range(0, bone.shape[0], step)) // 6):
        return None
    return _body_of_mask(_opened(filled > 0.5 * n, r), pixel_mm)


def _occluded_bone(slab: np.ndarray, metal: np.ndarray, spacing, bone_hu: float, bloom_mm: float):
    """(bone in-painted along z, occluded) of a slab: metal and its blooming are occluders, not bone."""
    dz, dy, dx = spacing
    r = max(1, int(round(bloom_mm / min(dy, dx))))
    st = ndi.generate_binary_structure(2, 1)
    # Partial volume of metal in the neighbouring slices (thick slices) is bright but not bone.
    core = metal | (ndi.binary_dilation(metal, structure=np.ones((3, 3, 3), bool)) & (slab >= CONTAMINATED_HU))
    occ = ndi.binary_dilation(core, structure=st[None], iterations=r)
    rz = int(round(bloom_mm / dz))
    if rz:
        occ = ndi.binary_dilation(occ, structure=np.ones((3, 1, 1), bool), iterations=rz)
    return _inpaint_z((slab >= bone_hu) & ~occ, occ), occ


def body_in_roi(hu: np.ndarray, metal_thr: float, k0: int, k1: int, body_roi, roi, spacing,
                bone_hu: float = BONE_HU, bloom_mm: float = 1.0):
    """The vertebral body (`_body_axis`) found in `body_roi` (a larger window than the canal's `roi`, reaching
    further anterior: the canal's window ends 15 mm in front of the screws' tips and cuts the body, whose
    cortical ring must be closed for its cancellous bone to be filled), in `roi`'s pixel coordinates."""
    y0, y1, x0, x1 = body_roi
    slab = hu[k0:k1, y0:y1, x0:x1]
    bone, _ = _occluded_bone(slab, slab >= metal_thr, spacing, bone_hu, bloom_mm)
    body = _body_axis_per_slice(bone, min(spacing[1], spacing[2]))
    if body is None:
        return None
    (cy, cx), u, ext, width = body
    return (cy + y0 - roi[0], cx + x0 - roi[2]), u, ext, width


def level_canal(hu: np.ndarray, metal: np.ndarray, k0: int, k1: int, roi, spacing, centre_x: float | None,
                bone_hu: float = BONE_HU, bloom_mm: float = 1.0, needed=None, vote_step_mm: float = 1.2,
                fill_mm: float = 0.0, body_fallback=None, limits: tuple | None = None):
    """Canal of one level from the slab hu[k0:k1] within roi; `metal` is the metal mask of that slab/roi.

    Walls count only where they are seen: metal (with its blooming and partial volume) hides them, and a
    value in-painted from a slice more than `fill_mm` away is unknown. The reference canal is voted per
    side from the slices where that side's wall is seen; a side never seen is the mirror of the other
    across the symmetry axis (vertebral body centre to canal centre). With `limits` (a tuple of density
    limits, `slice_canal`'s `content_max_hu`, None for none), one LevelCanal per limit, in a list: the bone,
    occlusion, body and per-slice candidates are computed once for all.
    """
    dz, dy, dx = spacing
    y0, y1, x0, x1 = roi
    slab = hu[k0:k1, y0:y1, x0:x1]
    bone, occ = _occluded_bone(slab, metal, spacing, bone_hu, bloom_mm)
    nfill = int(np.floor(fill_mm / dz + 1e-6))
    known = ~occ
    if nfill:
        known = ~ndi.binary_erosion(occ, structure=np.ones((3, 1, 1), bool), iterations=nfill, border_value=1)
    seen = bone & known
    bounding = bone | ~known
    step = max(1, int(round(vote_step_mm / dz)))
    needed = set(range(bone.shape[0])) if needed is None else set(needed)
    lims = tuple(limits) if limits is not None else (None,)
    per = [[] for _ in lims]  # per limit: per slice (canal, walls)
    for k in range(bone.shape[0]):
        if k % step and k not in needed:  # votes on a subset of slices; every slice a screw crosses
            for p in per:
                p.append((None, (False, False)))
            continue
        for p, r in zip(per, slice_canals(bounding[k], (dy, dx), centre_x, seen[k], hu=slab[k], limits=lims)):
            p.append(r)
    # the body as found in the canal's window (sessions 3-6); where none is found there, `body_fallback()` (session 7:
    # the one found in a larger window, `body_in_roi`)
    body = _body_axis(bone, min(dy, dx))
    if body is None and body_fallback is not None:
        body = body_fallback()
    out = [_voted(roi, k0, k1, bone, occ, known, seen, body, centre_x, [c for c, _ in p], [w for _, w in p])
           for p in per]
    return out if limits is not None else out[0]


def _voted(roi, k0, k1, bone, occ, known, seen, body, centre_x, canals, sides) -> LevelCanal:
    """The level's reference canal voted from its slices' canals (see `level_canal`)."""
    both = [k for k, (c, ok) in enumerate(zip(canals, sides)) if c is not None and ok[0] and ok[1]]
    lows = [k for k, (c, ok) in enumerate(zip(canals, sides)) if c is not None and ok[0]]
    highs = [k for k, (c, ok) in enumerate(zip(canals, sides)) if c is not None and ok[1]]
    lc = LevelCanal(roi, k0, k1, bone, occ, [None] * bone.shape[0], None, len(both), "none", None, known=known)
    lc.body = body
    if not lows and not highs:
        return lc
    cy = float(np.median([np.nonzero(canals[k])[0].mean() for k in (both or lows or highs)]))
    axis = body[1] if body is not None else np.array([1.0, 0.0])
    if both:
        cx = float(np.median([0.5 * (np.nonzero(canals[k])[1].min() + np.nonzero(canals[k])[1].max())
                              for k in both]))
    elif body is not None:  # on the body's symmetry axis, at the canal's AP position
        (by, bx), u = body[0], body[1]
        cx = bx + (cy - by) * (u[1] / u[0])
    elif centre_x is not None:
        cx = float(centre_x)
    else:
        cx = float(np.median([np.nonzero(canals[k])[1].mean() for k in lows or highs]))
    yy, xx = np.mgrid[0:bone.shape[1], 0:bone.shape[2]]
    halves = []
    for ks, sign in ((lows, -1), (highs, 1)):
        if not ks:
            halves.append(None)
            continue
        votes = np.sum([canals[k] for k in ks], axis=0)
        halves.append((votes * 2 >= len(ks)) & ((xx - cx) * sign >= 0))
    notes = []
    mirrored = (halves[0] is None, halves[1] is None)
    if halves[0] is None or halves[1] is None:
        if halves[0] is None:
            halves[0] = _mirror(halves[1], (cy, cx), axis) & (xx <= cx)
        else:
            halves[1] = _mirror(halves[0], (cy, cx), axis) & (xx >= cx)
        notes.append("one lateral wall hidden by metal on every slice: mirrored from the other side")
    ref = _largest(halves[0] | halves[1])
    if not ref.any():
        return lc
    lc.reference = ref
    lc.centre = (cy, cx)
    lc.halves = (halves[0] & ref, halves[1] & ref)
    lc.mirrored = mirrored
    lc.axis = axis
    lc.source = "this level" if not notes else "this level, one side mirrored"
    lc.notes = notes
    lc.canal = [ref & ~seen[k] for k in range(bone.shape[0])]
    return lc


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (np.argmax(sizes) + 1)


def shifted_reference(lc: LevelCanal, other: LevelCanal, shift_px: tuple[int, int]) -> np.ndarray:
    """Another level's reference canal, shifted into this level's ROI."""
    ref = np.zeros(lc.bone.shape[1:], bool)
    oy = other.roi[0] - lc.roi[0] + shift_px[0]
    ox = other.roi[2] - lc.roi[2] + shift_px[1]
    ys, xs = np.nonzero(other.reference)
    ys, xs = ys + oy, xs + ox
    ok = (ys >= 0) & (ys < ref.shape[0]) & (xs >= 0) & (xs < ref.shape[1])
    ref[ys[ok], xs[ok]] = True
    return ref


def borrow(lc: LevelCanal, other: LevelCanal, shift_px: tuple[int, int]) -> None:
    """Use another level's reference canal (shifted into this ROI) when this level has none."""
    ref = shifted_reference(lc, other, shift_px)
    if not ref.any():
        return
    oy = other.roi[0] - lc.roi[0] + shift_px[0]
    ox = other.roi[2] - lc.roi[2] + shift_px[1]
    lc.reference = ref
    cy, cx = other.centre
    lc.centre = (cy + oy, cx + ox)
    lc.source = "neighbouring level"
    known = lc.known if lc.known is not None else np.ones_like(lc.bone)
    lc.canal = [ref & ~(lc.bone[k] & known[k]) for k in range(lc.bone.shape[0])]


def half_areas(lc: LevelCanal) -> tuple[float, float]:
    """Pixel areas of the reference canal's low-column and high-column halves."""
    if lc.reference is None:
        return 0.0, 0.0
    cx = lc.centre[1]
    xx = np.arange(lc.reference.shape[1])[None, :]
    return float((lc.reference & (xx < cx)).sum()), float((lc.reference & (xx >= cx)).sum())


def symmetric_reference(lc: LevelCanal, side_sign: int) -> np.ndarray | None:
    """The canal expected from the contralateral side alone: its half and its mirror onto the screw's side.

    None when the contralateral half was itself mirrored (not seen) or is empty.
    """
    if lc.reference is None or lc.halves is None:
        return None
    contra = 0 if side_sign > 0 else 1
    if lc.mirrored[contra]:
        return None
    half = lc.halves[contra]
    if not half.any():
        return None
    cy, cx = lc.centre
    axis = lc.axis if lc.axis is not None else np.array([1.0, 0.0])
    xx = np.arange(half.shape[1])[None, :]
    mir = _mirror(half, (cy, cx), axis) & ((xx - cx) * side_sign >= 0)
    return _largest(half | mir)


def breach(lc: LevelCanal, ks: np.ndarray, ys: np.ndarray, xs: np.ndarray, side_sign: int, spacing,
           ref: np.ndarray | None = None) -> dict:
    """Depths (mm) of a screw's voxels (slab slice, roi row, roi col) in the level's canal.

    wall_mm: perpendicular depth beyond the medial pedicle wall (distance to the reference canal's
    lateral boundary on the screw's side); canal_mm: depth in the canal (distance to any boundary).
    side_sign: +1 if the screw lies at larger column index than the canal centre, else -1.
    """
    dz, dy, dx = spacing
    px = min(dy, dx)
    own = ref is None
    ref = lc.reference if own else ref
    ok = (ys >= 0) & (ys < ref.shape[0]) & (xs >= 0) & (xs < ref.shape[1]) & (ks >= 0) & (ks < len(lc.canal))
    ks, ys, xs = ks[ok], ys[ok], xs[ok]
    inside = np.zeros(len(ks), bool)
    for k in np.unique(ks):
        sel = ks == k
        if own:
            inside[sel] = lc.canal[k][ys[sel], xs[sel]]
        else:
            seen = lc.bone[k] & (lc.known[k] if lc.known is not None else True)
            inside[sel] = ref[ys[sel], xs[sel]] & ~seen[ys[sel], xs[sel]]
    if not inside.any():
        return {"wall_mm": 0.0, "canal_mm": 0.0, "voxels_in_canal": 0}
    qy, qx = ys[inside], xs[inside]
    dcanal = ndi.distance_transform_edt(ref, sampling=(dy, dx))
    canal_d = float(dcanal[qy, qx].max()) - 0.5 * px
    border = ndi.binary_dilation(ref) & ~ref  # the wall surface just outside the canal
    cx = lc.centre[1]
    cols = np.nonzero(ref)[1]
    half = 0.5 * (cols.max() - cols.min())
    bx = np.arange(ref.shape[1])[None, :]
    wall = border & ((bx - cx) * side_sign > 0.25 * half)
    wall_d = canal_d
    if wall.any():
        dwall = ndi.distance_transform_edt(~wall, sampling=(dy, dx))
        wall_d = float(dwall[qy, qx].max()) - 0.5 * px
    return {"wall_mm": max(wall_d, 0.0), "canal_mm": max(canal_d, 0.0), "voxels_in_canal": int(inside.sum())}


def depth_map(canal: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Depth (mm) of each canal pixel from the canal wall; half a pixel is taken off for the wall position."""
    d = ndi.distance_transform_edt(canal, sampling=pixel_mm)
    return np.where(canal, np.maximum(d - 0.5 * min(pixel_mm), 0.0), 0.0)


def outside_map(envelope: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Distance (mm) of each pixel outside a bone envelope to that envelope."""
    d = ndi.distance_transform_edt(~envelope, sampling=pixel_mm)
    return np.maximum(d - 0.5 * min(pixel_mm), 0.0)


def bone_envelope(bone2d: np.ndarray) -> np.ndarray:
    """Bone with its enclosed marrow and canal: the vertebra's outline in this slice."""
    return ndi.binary_fill_holes(bone2d)



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
    yy, xx = np.mgrid[ya:yb, xa:xb]
    eq = h.equations
    inside = (yy[..., None] * eq[:, 0] + xx[..., None] * eq[:, 1] + eq[:, 2] <= 0.5).all(axis=-1)
    out = np.zeros(mask.shape, bool)
    out[ya:yb, xa:xb] = inside
    return out


def slice_canal(bone: np.ndarray, pixel_mm, centre_x: float | None, min_part_mm2: float = 30.0):
    """(canal mask, lateral walls closed) of one in-painted slice, or (None, False)."""
    lab, n = ndi.label(bone)
    if n == 0:
        return None, False
    area = np.bincount(lab.ravel())[1:] * pixel_mm[0] * pixel_mm[1]
    keep = np.nonzero(area >= min_part_mm2)[0] + 1
    if len(keep) == 0:
        return None, False
    vert = np.isin(lab, keep)
    hull = _hull(vert)
    if hull is None:
        return None, False
    cand = hull & ~bone
    clab, m = ndi.label(cand)
    if m == 0:
        return None, False
    carea = np.bincount(clab.ravel())[1:] * pixel_mm[0] * pixel_mm[1]
    ok = np.nonzero((carea >= CANAL_AREA_MM2[0]) & (carea <= CANAL_AREA_MM2[1]))[0]
    if len(ok) == 0:
        return None, False
    if centre_x is not None:
        cx = np.array([c[1] for c in ndi.center_of_mass(cand, clab, ok + 1)])
        near = ok[np.abs(cx - centre_x) * pixel_mm[1] < 15.0]
        if len(near) == 0:
            return None, False
        ok = near
    best = ok[np.argmax(carea[ok])] + 1
    canal = clab == best
    return canal, _lateral_closed(canal, bone)


def _lateral_closed(canal: np.ndarray, bone: np.ndarray, frac: float = 0.7) -> bool:
    """Both lateral walls of the canal are bone over the middle half of its AP extent."""
    rows = np.nonzero(canal.any(axis=1))[0]
    if len(rows) < 3:
        return False
    a, b = rows[0], rows[-1]
    band = range(a + (b - a) // 4, b - (b - a) // 4 + 1)
    hits = [0, 0]
    total = 0
    w = canal.shape[1]
    for r in band:
        cols = np.nonzero(canal[r])[0]
        if len(cols) == 0:
            continue
        total += 1
        lo, hi = cols[0], cols[-1]
        hits[0] += bool(lo - 1 >= 0 and bone[r, max(lo - 2, 0):lo].any())
        hits[1] += bool(hi + 1 < w and bone[r, hi + 1:hi + 3].any())
    return total > 0 and min(hits) >= frac * total


def level_canal(hu: np.ndarray, metal: np.ndarray, k0: int, k1: int, roi, spacing, centre_x: float | None,
                bone_hu: float = BONE_HU, bloom_mm: float = 1.0, needed=None, vote_step_mm: float = 1.2) -> LevelCanal:
    """Canal of one level from the slab hu[k0:k1] within roi; `metal` is the metal mask of that slab/roi."""
    dz, dy, dx = spacing
    y0, y1, x0, x1 = roi
    slab = hu[k0:k1, y0:y1, x0:x1]
    r = max(1, int(round(bloom_mm / min(dy, dx))))
    st = ndi.generate_binary_structure(2, 1)
    occ = ndi.binary_dilation(metal, structure=st[None], iterations=r)
    rz = max(1, int(np.ceil(bloom_mm / dz)))
    occ = ndi.binary_dilation(occ, structure=np.ones((3, 1, 1), bool), iterations=rz)
    bone = _inpaint_z((slab >= bone_hu) & ~occ, occ)
    canals, closed = [], []
    step = max(1, int(round(vote_step_mm / dz)))
    needed = set(range(bone.shape[0])) if needed is None else set(needed)
    for k in range(bone.shape[0]):
        if k % step and k not in needed:  # votes on a subset of slices; every slice a screw crosses
            canals.append(None)
            closed.append(False)
            continue
        c, ok = slice_canal(bone[k], (dy, dx), centre_x)
        canals.append(c)
        closed.append(ok)
    good = [c for c, ok in zip(canals, closed) if ok and c is not None]
    ref = None
    centre = None
    if good:
        votes = np.sum(good, axis=0)
        ref = votes >= max(1, len(good) / 2)
        ref = _largest(ref)
        if ref.any():
            centre = tuple(float(v) for v in ndi.center_of_mass(ref))
        else:
            ref = None
    lc = LevelCanal(roi, k0, k1, bone, occ, canals, ref, len(good), "this level" if ref is not None else "none", centre)
    if ref is not None:
        lc.canal = _cut(canals, ref, spacing)
    return lc


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (np.argmax(sizes) + 1)


def _cut(canals, ref, spacing, tol_mm: float = 1.0):
    """Each slice's canal cut to the dilated reference; a slice without canal takes the reference."""
    r = max(1, int(round(tol_mm / min(spacing[1], spacing[2]))))
    grown = ndi.binary_dilation(ref, iterations=r)
    return [(c & grown) if c is not None and (c & grown).any() else ref.copy() for c in canals]


def borrow(lc: LevelCanal, other: LevelCanal, shift_px: tuple[int, int]) -> None:
    """Use another level's reference canal (shifted into this ROI) when this level has none."""
    ref = np.zeros(lc.bone.shape[1:], bool)
    oy = other.roi[0] - lc.roi[0] + shift_px[0]
    ox = other.roi[2] - lc.roi[2] + shift_px[1]
    ys, xs = np.nonzero(other.reference)
    ys, xs = ys + oy, xs + ox
    ok = (ys >= 0) & (ys < ref.shape[0]) & (xs >= 0) & (xs < ref.shape[1])
    ref[ys[ok], xs[ok]] = True
    if not ref.any():
        return
    lc.reference = ref
    lc.centre = tuple(float(v) for v in ndi.center_of_mass(ref))
    lc.source = "neighbouring level"
    canals = []
    for k in range(lc.bone.shape[0]):
        c = ref & ~lc.bone[k]
        canals.append(c if c.any() else None)
    lc.canal = _cut(canals, ref, (1.0, 1.0, 1.0), tol_mm=0.0)


def breach(lc: LevelCanal, ks: np.ndarray, ys: np.ndarray, xs: np.ndarray, side_sign: int, spacing) -> dict:
    """Depths (mm) of a screw's voxels (slab slice, roi row, roi col) in the level's canal.

    side_sign: +1 if the screw lies at larger column index than the canal centre, else -1.
    """
    dz, dy, dx = spacing
    px = min(dy, dx)
    wall_d, canal_d = 0.0, 0.0
    wall_k = None
    inside_any = 0
    for k in np.unique(ks):
        c = lc.canal[k] if 0 <= k < len(lc.canal) else None
        if c is None:
            continue
        sel = ks == k
        qy, qx = ys[sel], xs[sel]
        ok = (qy >= 0) & (qy < c.shape[0]) & (qx >= 0) & (qx < c.shape[1])
        qy, qx = qy[ok], qx[ok]
        inside = c[qy, qx]
        if not inside.any():
            continue
        inside_any += int(inside.sum())
        qy, qx = qy[inside], qx[inside]
        dcanal = ndi.distance_transform_edt(c, sampling=(dy, dx))
        canal_d = max(canal_d, float(dcanal[qy, qx].max()) - 0.5 * px)
        # Medial pedicle cortex: bone bordering the canal on the screw's side, lateral half.
        bone = lc.bone[k]
        border = ndi.binary_dilation(c, iterations=2) & bone
        cx = lc.centre[1] if lc.centre is not None else np.nonzero(c)[1].mean()
        cols = np.nonzero(c)[1]
        half = max(1.0, 0.5 * (cols.max() - cols.min()) / 2)
        bx = np.arange(c.shape[1])[None, :]
        wall = border & ((bx - cx) * side_sign > half * 0.5)
        if wall.any():
            dwall = ndi.distance_transform_edt(~wall, sampling=(dy, dx))
            v = float(dwall[qy, qx].max()) - 0.5 * px
            if v > wall_d:
                wall_d, wall_k = v, k
    return {"wall_mm": max(wall_d, 0.0), "canal_mm": max(canal_d, 0.0), "voxels_in_canal": inside_any,
            "wall_slice": wall_k}


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


def gertzbein_robbins(depth_mm: float, bounds=(0.0, 2.0, 4.0, 6.0)) -> str:
    """A no breach; B < 2 mm; C 2-4 mm; D 4-6 mm; E >= 6 mm (bounds: lower limits of B, C, D, E)."""
    b, c, d, e = bounds
    if depth_mm <= b:
        return "A"
    if depth_mm < c:
        return "B"
    if depth_mm < d:
        return "C"
    if depth_mm < e:
        return "D"
    return "E"

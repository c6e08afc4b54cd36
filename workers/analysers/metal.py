"""Metal segmentation: threshold, rods/leads split from screws, PCA geometry.

Threshold: 2,500 HU by default. On saturated 12-bit data (maximum at the
3,071 HU ceiling) the ceiling plateau is metal and the seed threshold is kept
below it. On extended HU scales each component is re-thresholded at half of
its peak above bone (a half-maximum edge), which limits blooming for steel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

SEED_HU = 2500
CEILING_12BIT = 3071
BONE_HU = 400  # background level for the half-maximum edge
#: More metal-density volume than this (cm³) is not implant metal: a whole spinal
#: instrumentation is a few tens of cm³, a hip stem under 200. Such a series (pixel values
#: not in HU, e.g. a missing rescale, or an artefact) is not segmented — its screws are
#: "not assessed" — instead of spending minutes on one part the size of the body.
MAX_METAL_CM3 = 1000.0


@dataclass
class Part:
    kind: str  # screw | rod | lead | plate | other
    mask: np.ndarray  # bool, cropped to bbox
    bbox: tuple[slice, slice, slice]  # into the volume
    centre: np.ndarray  # mm, (z, y, x)
    axis: np.ndarray  # unit vector, (z, y, x)
    length: float  # mm along the axis
    diameter: float  # mm, robust shaft diameter
    widths: tuple[float, float]  # mm, extent along 2nd and 3rd principal axes
    peak_hu: float
    threshold: float


#: Radius (mm) of the neighbourhood whose peak sets a voxel's half-maximum edge on extended HU scales.
LOCAL_PEAK_MM = 3.0


def _local_peak(values: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Maximum of `values` within about `radius_mm` (a box, per axis in voxels)."""
    size = tuple(max(1, 2 * int(round(radius_mm / s)) + 1) for s in spacing)
    return ndi.maximum_filter(values, size=size, mode="nearest")


def metal_threshold(hu: np.ndarray) -> tuple[float | None, bool]:
    """(threshold, saturated); None when no voxel reaches metal density."""
    top = int(hu.max())
    if top < SEED_HU:
        return None, False
    saturated = bool(top <= CEILING_12BIT + 5 and np.count_nonzero(hu >= top) >= 20)
    return (min(SEED_HU, top - 300) if saturated else SEED_HU), saturated


def metal_volume_cm3(hu: np.ndarray, thr: float, spacing) -> float:
    """Volume of the voxels at or above the metal threshold, in cm³."""
    return float(np.count_nonzero(hu >= thr)) * float(spacing[0] * spacing[1] * spacing[2]) / 1000.0


def quick_has_metal(slices: list[np.ndarray], min_voxels: int = 10) -> bool:
    """Pre-check on a few HU slices."""
    return any(np.count_nonzero(s >= SEED_HU) >= min_voxels for s in slices)


def _geometry(coords: np.ndarray):
    """PCA of voxel coordinates (mm): centre, axes (rows), extents."""
    c = coords.mean(axis=0)
    d = coords - c
    w, v = np.linalg.eigh(d.T @ d / max(len(d) - 1, 1))
    axes = v[:, ::-1].T  # principal first
    proj = d @ axes.T
    return c, axes, proj


def describe(mask: np.ndarray, bbox, spacing, z_mm: np.ndarray, peak: float, thr: float) -> Part:
    """Shape of one component; z in mm from the (possibly uneven) slice positions."""
    idx = np.nonzero(mask)
    zz = z_mm[idx[0] + bbox[0].start]
    yy = (idx[1] + bbox[1].start) * spacing[1]
    xx = (idx[2] + bbox[2].start) * spacing[2]
    coords = np.column_stack([zz, yy, xx])
    c, axes, proj = _geometry(coords)
    t = proj[:, 0]
    length = float(t.max() - t.min()) + spacing[2]
    # The shaft diameter from the central 30-70 % of the length: a screw's head (tulip, 11-13 mm wide,
    # up to a quarter of the part) and its tip taper stay out of it.
    mid = (t > t.min() + 0.3 * (t.max() - t.min())) & (t < t.max() - 0.3 * (t.max() - t.min()))
    r = np.hypot(proj[mid, 1], proj[mid, 2]) if mid.any() else np.hypot(proj[:, 1], proj[:, 2])
    diameter = 2.0 * float(np.percentile(r, 90)) + spacing[2]
    widths = tuple(float(np.ptp(proj[:, k])) + spacing[2] for k in (1, 2))
    return Part("other", mask, bbox, c, axes[0], length, diameter, widths, peak, thr)


def classify(p: Part, along_z: bool) -> str:
    """Screw, rod, lead (spinal cord stimulator), plate or other, from size and shape."""
    vertical = abs(p.axis[0]) > 0.7
    if along_z or vertical:
        if p.widths[0] > 10 and p.widths[0] > 3 * max(p.widths[1], 1.0):
            return "plate"
        if p.diameter < 3.2 and p.length > 15:
            return "lead"
        if 3.5 <= p.diameter <= 8.5 and p.length > (20 if along_z else 8):  # or a rod piece cut at a bend
            return "rod"
        return "other"
    if 3.5 <= p.diameter <= 10.0 and 20 <= p.length <= 110:
        return "screw"
    if p.widths[0] > 10 and p.widths[0] > 3 * max(p.widths[1], 1.0):
        return "plate"
    return "other"


def segment(hu: np.ndarray, spacing, z_mm: np.ndarray, min_volume_mm3: float = 20.0):
    """Metal parts of a volume; returns (parts, threshold, saturated)."""
    thr, saturated = metal_threshold(hu)
    if thr is None:
        return [], None, False
    m = hu >= thr
    zs, ys, xs = (np.nonzero(np.any(m, axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    m = m[box]
    sub = hu[box]
    voxel = spacing[0] * spacing[1] * spacing[2]
    # Long structures along z (rods, leads, vertical plates) survive a vertical line opening.
    n = max(3, int(round(18.0 / spacing[0])))
    vertical = ndi.binary_opening(m, structure=np.ones((n, 1, 1), bool))
    # One voxel more, so the rod's rim does not stay attached to the screws.
    vertical = ndi.binary_dilation(vertical, iterations=1) & m
    parts: list[Part] = []
    for group, along_z in ((vertical, True), (m & ~vertical, False)):
        lab, count = ndi.label(group)
        if count == 0:
            continue
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            comp = lab[sl] == i
            if comp.sum() * voxel < min_volume_mm3:
                continue
            vals = sub[sl][comp]
            peak = float(np.percentile(vals, 99))
            t = thr
            if not saturated and peak > 2 * thr:  # extended scale: half-maximum edge
                t = max(thr, 0.5 * (peak + BONE_HU))
                # The edge is taken from the local peak (within ~3 mm), not the part's: a titanium screw
                # (7,000 HU) joined to a cobalt-chrome rod (14,000 HU) keeps its own half-maximum edge.
                local = _local_peak(np.where(comp, sub[sl], thr).astype(np.float32), spacing, LOCAL_PEAK_MM)
                tl = np.maximum(thr, 0.5 * (local + BONE_HU))
                comp = comp & (sub[sl] >= tl)
                if not comp.any():
                    continue
            bbox = tuple(slice(s.start + b.start, s.stop + b.start) for s, b in zip(sl, box))
            p = describe(comp, bbox, spacing, z_mm, peak, t)
            p.kind = classify(p, along_z)
            if not along_z and p.kind == "screw" and p.widths[0] > 25.0:
                # far wider than a screw with its tulip head (13 mm): two converging screws in a V
                pieces = _split_by_axis(p, spacing, z_mm, min_volume_mm3)
                if pieces:
                    parts.extend(pieces)
                    continue
            if p.kind in ("other", "plate") and not along_z:
                pieces = split_touching(p, spacing, z_mm, min_volume_mm3) or extract_shafts(p, spacing, z_mm,
                                                                                            min_volume_mm3)
                if pieces:
                    parts.extend(pieces)
                    continue
            parts.append(p)
    return parts, thr, saturated


def split_touching(p: Part, spacing, z_mm: np.ndarray, min_volume_mm3: float = 20.0,
                   radii_mm=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5)) -> list[Part] | None:
    """Screws touching each other, a rod piece or a plate, split at their narrow junctions.

    The part is eroded (voxels deeper than r from its surface) until it falls apart into pieces of at
    least `min_volume_mm3`; every voxel goes back to its nearest piece. The split is kept only when at
    least one piece has a screw's shape; None otherwise.
    """
    comp = p.mask
    if comp.sum() < 50:
        return None
    sampling = (float(np.median(np.diff(z_mm[p.bbox[0]]))) if p.bbox[0].stop - p.bbox[0].start > 1 else spacing[0],
                spacing[1], spacing[2])
    sampling = (abs(sampling[0]) or spacing[0], sampling[1], sampling[2])
    dist = ndi.distance_transform_edt(np.pad(comp, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    voxel = spacing[0] * spacing[1] * spacing[2]
    for r in radii_mm:
        seeds, n = ndi.label(dist > r)
        if n < 2:
            continue
        sizes = np.bincount(seeds.ravel())[1:]
        big = np.nonzero(sizes * voxel >= min_volume_mm3 / 4)[0] + 1
        if len(big) < 2:
            continue
        keep = np.isin(seeds, big)
        _, (iz, iy, ix) = ndi.distance_transform_edt(~keep, sampling=sampling, return_indices=True)
        owner = np.where(comp, seeds[iz, iy, ix], 0)
        pieces = []
        for lab in big:
            m = owner == lab
            if m.sum() * voxel < min_volume_mm3:
                continue
            pieces.append(_piece(m, p, spacing, z_mm))
        if len(pieces) > 4:  # not a few touching screws (a prosthesis, a plate falling apart), or noisy
            break            # erosion of a V on thick slices: the axis cut below decides
        screws = [q for q in pieces if q.kind == "screw" and q.length >= 25.0]
        if screws and sum(q.mask.sum() for q in screws) >= 0.5 * comp.sum():
            for q in pieces:
                if q.kind == "screw" and q.length < 25.0:
                    q.kind = "other"
            return pieces
    return _split_by_axis(p, spacing, z_mm, min_volume_mm3)


def _piece(m: np.ndarray, p: Part, spacing, z_mm: np.ndarray) -> Part:
    """The sub-part of `p` whose mask (in p's box) is `m`: cropped to its own box, described, classified."""
    zs, ys, xs = (np.nonzero(np.any(m, axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    sub = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    bbox = tuple(slice(b.start + s.start, b.start + s.stop) for s, b in zip(sub, p.bbox))
    q = describe(m[sub], bbox, spacing, z_mm, p.peak_hu, p.threshold)
    q.kind = classify(q, False)
    return q


def _split_by_axis(p: Part, spacing, z_mm: np.ndarray, min_volume_mm3: float) -> list[Part] | None:
    """Two screws converging into one part, cut into two halves; kept only when both are screw-shaped.

    A V in the axial plane (tips touching in the body, heads apart): the part's first principal axis is
    the V's bisector and the screws lie on either side of it, so the cut is along that axis (by the sign
    of the second principal coordinate). Two screws end to end (a long part): cut at the centre across
    the first principal axis.
    """
    if p.length < 40.0 or abs(p.axis[0]) > 0.5:
        return None
    idx = np.nonzero(p.mask)
    zz = z_mm[idx[0] + p.bbox[0].start]
    coords = np.column_stack([zz, (idx[1] + p.bbox[1].start) * spacing[1], (idx[2] + p.bbox[2].start) * spacing[2]])
    c, axes, proj = _geometry(coords)
    voxel = spacing[0] * spacing[1] * spacing[2]
    cuts = []
    if p.widths[0] >= 15.0:  # a V: the two screws on either side of the bisector
        cuts.append(proj[:, 1])
    if p.length >= 50.0:
        cuts.append(proj[:, 0])
    for t in cuts:
        pieces = []
        for sel in (t < 0, t >= 0):
            m = np.zeros_like(p.mask)
            m[idx[0][sel], idx[1][sel], idx[2][sel]] = True
            lab, n = ndi.label(m)
            if n == 0:
                break
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (np.argmax(sizes) + 1)
            if m.sum() * voxel < min_volume_mm3:
                break
            pieces.append(_piece(m, p, spacing, z_mm))
        if len(pieces) == 2 and all(q.kind == "screw" and q.length >= 25.0 for q in pieces):
            return pieces
    return None


def extract_shafts(p: Part, spacing, z_mm: np.ndarray, min_volume_mm3: float = 20.0, max_screws: int = 10,
                   seed: int = 0) -> list[Part] | None:
    """Screw shafts inside a part that joins screws with rods, tulips, cross-links, cement or a cage.

    A screw shaft is a straight cylinder (4.5-7.5 mm, 25-60 mm long) running front to back (within 60 deg of
    the antero-posterior axis in the axial plane, within 50 deg of the axial plane); rods run cranio-caudally
    between the heads, cross-links left to right. Lines are fitted to the part's core voxels (deeper than
    1 mm) by random sampling of point pairs (a fixed seed: deterministic): the line with most core voxels
    within 1.5 mm, refitted to them, is a shaft when its longest unbroken run is >= 20 mm and the metal
    around it is a cylinder (little metal 1.5-4 mm outside the fitted radius; a cage or a tulip is not).
    Each shaft found takes the part's voxels within its radius (+1 mm) and is removed before the next line.
    Returns the pieces (shafts first, then what is left, as "other"), or None when no shaft is found.
    """
    comp = p.mask.copy()
    if comp.sum() < 200:
        return None
    zs = z_mm[p.bbox[0]]
    dz = float(np.median(np.abs(np.diff(zs)))) if len(zs) > 1 else spacing[0]
    sampling = (dz or spacing[0], spacing[1], spacing[2])
    dist = ndi.distance_transform_edt(np.pad(comp, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    idx = np.nonzero(comp)
    allc = np.column_stack([zs[idx[0]], (idx[1] + p.bbox[1].start) * spacing[1], (idx[2] + p.bbox[2].start) * spacing[2]])
    core = dist[idx] >= 1.0
    pts = allc[core]
    if len(pts) < 50:
        return None
    stride = max(1, len(pts) // 12000)
    pts = pts[::stride]
    rng = np.random.default_rng(seed)
    alive = np.ones(len(allc), bool)
    palive = np.ones(len(pts), bool)
    voxel = spacing[0] * spacing[1] * spacing[2]
    shafts = []
    for _ in range(max_screws):
        cand = np.nonzero(palive)[0]
        if len(cand) < 50:
            break
        i = rng.choice(cand, 300)
        j = rng.choice(cand, 300)
        d = pts[j] - pts[i]
        n = np.linalg.norm(d, axis=1)
        ok = (n >= 15.0) & (n <= 70.0)
        d, i, n = d[ok], i[ok], n[ok]
        if not len(d):
            break
        d = d / n[:, None]
        inplane = np.hypot(d[:, 1], d[:, 2])
        ok = (np.abs(d[:, 0]) <= np.sin(np.radians(50))) & (np.abs(d[:, 1]) >= np.cos(np.radians(60)) * inplane)
        d, i = d[ok], i[ok]
        if not len(d):
            break
        q = pts[cand]
        best, best_n = None, 0
        for k in range(0, len(d), 64):  # batches: (points x candidates) distances to the lines
            a, c = d[k:k + 64], pts[i[k:k + 64]]
            rel = q[:, None, :] - c[None, :, :]
            t = np.einsum("pkc,kc->pk", rel, a)
            r2 = np.einsum("pkc,pkc->pk", rel, rel) - t * t
            cnt = (r2 <= 1.5 ** 2).sum(axis=0)
            m = int(np.argmax(cnt))
            if cnt[m] > best_n:
                best_n, best = int(cnt[m]), (c[m], a[m])
        if best is None or best_n < 30:
            break
        c, a = best
        for _refit in range(2):
            rel = q - c
            t = rel @ a
            r = np.linalg.norm(rel - t[:, None] * a, axis=1)
            inl = q[r <= 2.0]
            if len(inl) < 10:
                break
            c = inl.mean(axis=0)
            w, v = np.linalg.eigh(np.cov((inl - c).T))
            a = v[:, -1]
        rel = q - c
        t = rel @ a
        r = np.linalg.norm(rel - t[:, None] * a, axis=1)
        ts = np.sort(t[r <= 1.5])
        if len(ts) < 10:
            palive[cand[r <= 1.5]] = False
            continue
        gaps = np.nonzero(np.diff(ts) > 3.0)[0]
        starts = np.concatenate([[0], gaps + 1])
        stops = np.concatenate([gaps, [len(ts) - 1]])
        g = int(np.argmax(ts[stops] - ts[starts]))
        t0, t1 = float(ts[starts[g]]), float(ts[stops[g]])
        vertical = abs(a[0]) > np.sin(np.radians(50))
        inplane = np.hypot(a[1], a[2])
        across = abs(a[1]) < np.cos(np.radians(60)) * inplane
        # the metal around the line: radius, and how much lies 1.5-4 mm outside it (a cylinder has little)
        relv = allc - c
        tv = relv @ a
        rv = np.linalg.norm(relv - tv[:, None] * a, axis=1)
        span = alive & (tv >= t0 + 3.0) & (tv <= t1 - 3.0)
        near = span & (rv <= 6.0)
        good = t1 - t0 >= 20.0 and not vertical and not across and near.sum() >= 20
        if good:
            radius = float(np.percentile(rv[near & (rv <= 4.5)], 90)) if (near & (rv <= 4.5)).any() else 0.0
            shell = span & (rv > radius + 1.5) & (rv <= radius + 4.0)
            body = span & (rv <= radius + 0.5)
            good = 1.5 <= radius <= 4.5 and shell.sum() <= 0.35 * max(body.sum(), 1)
        if not good:
            palive[cand[(r <= 2.5) & (t >= t0 - 1) & (t <= t1 + 1)]] = False
            continue
        take = alive & (tv >= t0 - 4.0) & (tv <= t1 + 4.0) & (rv <= radius + 1.0)
        if take.sum() * voxel < min_volume_mm3:
            palive[cand[(r <= 2.5) & (t >= t0 - 1) & (t <= t1 + 1)]] = False
            continue
        m = np.zeros_like(comp)
        m[idx[0][take], idx[1][take], idx[2][take]] = True
        alive &= ~take
        relp = pts - c
        tp = relp @ a
        rp = np.linalg.norm(relp - tp[:, None] * a, axis=1)
        palive &= ~((tp >= t0 - 4.0) & (tp <= t1 + 4.0) & (rp <= radius + 1.5))
        q = _piece(m, p, spacing, z_mm)
        if q.kind != "screw":
            continue
        shafts.append(q)
    if not shafts:
        return None
    rest = np.zeros_like(comp)
    rest[idx[0][alive], idx[1][alive], idx[2][alive]] = True
    out = list(shafts)
    if rest.sum() * voxel >= min_volume_mm3:
        lab, n = ndi.label(rest)
        for k in range(1, n + 1):
            mk = lab == k
            if mk.sum() * voxel >= min_volume_mm3:
                r = _piece(mk, p, spacing, z_mm)
                if r.kind == "screw":  # leftovers of a shaft (its tulip, a piece cut off): not a screw
                    r.kind = "other"
                out.append(r)
    return out


def shaft_span(tproj: np.ndarray, radial: np.ndarray, diameter: float, bin_mm: float = 1.0) -> tuple[float, float]:
    """(start, end) along the axis of a screw's shaft, without its head (polyaxial tulip, 11-13 mm wide).

    tproj: the voxels' positions along the axis (mm, increasing towards the tip); radial: their distances from
    the axis (mm). From the head end (lowest t), bins whose metal reaches further than the shaft radius + 1.5 mm
    are the head; the shaft starts after the last of them within the first half of the part.
    """
    lo, hi = float(tproj.min()), float(tproj.max())
    if hi - lo < 4 * bin_mm:
        return lo, hi
    nb = int(np.ceil((hi - lo) / bin_mm))
    b = np.minimum(((tproj - lo) / bin_mm).astype(int), nb - 1)
    reach = np.zeros(nb)
    np.maximum.at(reach, b, radial)
    wide = np.nonzero(reach[: nb // 2] > 0.5 * diameter + 1.5)[0]
    start = lo + (wide[-1] + 1) * bin_mm if len(wide) else lo
    return start, hi

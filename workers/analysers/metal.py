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
                comp = comp & (sub[sl] >= t)
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
                pieces = split_touching(p, spacing, z_mm, min_volume_mm3)
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

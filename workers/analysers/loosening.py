"""Lucent halo around a screw from radial HU profiles perpendicular to its axis.

Profiles start on the axis at stations over the anterior (tip) part of the
screw, 16 directions each. The halo runs from the metal edge to where HU
climbs back to half the local bone level. Medians over directions resist
streak artefacts, which are directional.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

HALO_FLAG_MM = 2.0
ANGLES = 16
STEP = 0.25
R_MAX = 12.0


def _basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, ref)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def profiles(vol, centre, axis, tip_t: float, length: float, metal_hu: float):
    """(stations, angles, radii) HU samples over the tip 40 % of the screw."""
    e1, e2 = _basis(axis)
    ts = tip_t - np.arange(2.0, max(0.4 * length, 3.0), 1.5)  # skip the tip cap
    phi = np.linspace(0, 2 * np.pi, ANGLES, endpoint=False)
    r = np.arange(0, R_MAX, STEP)
    dirs = np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2  # (A, 3)
    pts = (centre + ts[:, None, None, None] * axis
           + r[None, None, :, None] * dirs[None, :, None, :])  # (S, A, R, 3) mm (z, y, x)
    dz, dy, dx = vol.spacing
    coords = np.stack([vol.z_index(pts[..., 0]), pts[..., 1] / dy, pts[..., 2] / dx])
    hu = ndi.map_coordinates(vol.hu, coords.reshape(3, -1), order=1, mode="nearest").reshape(pts.shape[:3])
    return hu.astype(np.float32), r


def halo(vol, centre, axis, tip_t: float, length: float, metal_hu: float) -> dict:
    """Halo width (mm), margin description and the numbers behind them."""
    hu, r = profiles(vol, centre, axis, tip_t, length, metal_hu)
    widths = np.zeros(hu.shape[:2])
    edges = np.full(hu.shape[:2], np.nan)
    rims = np.zeros(hu.shape[:2], bool)
    baseline = []
    for s in range(hu.shape[0]):
        st = hu[s]
        outside = st < metal_hu
        r0 = np.where(outside.any(axis=1), np.argmax(outside, axis=1), len(r) - 1)  # metal edge index
        far = np.concatenate([st[a, r0[a] + int(6 / STEP): r0[a] + int(9 / STEP)] for a in range(len(st))])
        far = far[(far > 100) & (far < 1500)]
        if far.size < 10:
            continue  # not in bone here (outside the vertebra or in the disc)
        bone = float(np.median(far))
        baseline.append(bone)
        thr = 0.5 * bone
        for a in range(len(st)):
            prof = st[a, r0[a]:]
            low = prof < thr
            first = int(np.argmax(low)) if low.any() else None
            if first is None or first * STEP > 1.5:
                continue
            back = prof[first:] >= thr
            if not back.any():
                widths[s, a] = np.nan  # never back in bone: soft tissue or disc, not a halo
                continue
            end = first + int(np.argmax(back))
            widths[s, a] = end * STEP
            lucent = float(prof[first:end].mean()) if end > first else float(prof[first])
            seg = prof[first:end + int(3 / STEP)]
            lo, hi = lucent + 0.25 * (bone - lucent), lucent + 0.75 * (bone - lucent)
            i25 = np.argmax(seg >= lo) if (seg >= lo).any() else len(seg)
            i75 = np.argmax(seg >= hi) if (seg >= hi).any() else len(seg)
            edges[s, a] = max(i75 - i25, 0) * STEP
            rims[s, a] = prof[end:end + int(1.5 / STEP)].max(initial=-1e9) > bone + 250
    if not baseline:
        return {"assessed": False, "reason": "no bone around the screw tip (profiles outside bone)"}
    if not np.isfinite(widths).any():
        return {"assessed": False, "reason": "no bone around the screw tip"}
    station = np.nanmedian(widths[np.isfinite(widths).any(axis=1)], axis=1)
    width = float(np.median(station))
    pos = widths[np.isfinite(widths) & (widths > 0)]  # bright streaks hide the halo in some directions: judge shape where it is seen
    cv = float(pos.std() / pos.mean()) if pos.size >= 4 else 0.0
    edge = float(np.nanmedian(edges)) if np.isfinite(edges).any() else None
    return {
        "assessed": True,
        "width_mm": round(width, 2),
        "max_station_mm": round(float(station.max()), 2),
        "irregularity_cv": round(cv, 2),
        "edge_mm": None if edge is None else round(edge, 2),
        "sclerotic_rim": bool(rims.mean() > 0.5),
        "bone_hu": round(float(np.median(baseline))),
    }


def margin(h: dict) -> tuple[str, bool]:
    """(description, suspect infection)."""
    ill = h.get("edge_mm") is not None and h["edge_mm"] > 1.5
    irregular = h["irregularity_cv"] > 0.25
    if (irregular or ill) and h["width_mm"] > HALO_FLAG_MM:
        kind = " and ".join(k for k, on in (("irregular", irregular), ("ill-defined", ill)) if on)
        return f"wide {kind} margin: suspect infection", True
    rim = "thin regular sclerotic rim" if h["sclerotic_rim"] else "regular margin"
    return f"{rim}: mechanical loosening pattern", False

"""Canal-independent breach measure: the screw against its own pedicle, in sections across the screw axis.

The canal outline next to a screw is often wrong (split by the screw, open ring after laminectomy, thick
slices); this measure does not use it. Along the screw's shaft, every millimetre, the image is resampled in
the plane perpendicular to the screw axis (u: the in-plane direction towards the vertebral midline, i.e.
medial; v: about cranio-caudal). In that plane the pedicle is a ring of cortical bone around the metal:

- metal is an occluder: bone is what is dense (>= `cortex_hu`) and more than `bloom_mm` away from metal;
- the pedicle's outline is the convex hull of that bone; where the screw has broken through the medial
  cortex, the hull's chord between the cortex seen above and below the screw is the medial wall;
- metal outside the hull, displaced from it mainly medially (u), is beyond the medial cortex: its distance
  to the hull is the breach depth in that section.

A section counts only when bone is seen lateral of the metal and above or below it (the screw is in the
vertebra there, not in the soft tissue before its entry); the first `skip_entry_mm` of the shaft (entry
through the posterior elements) and the tip taper are left out. The depth of the screw is the largest
depth of `run` consecutive sections (their minimum; policy: 4), so one noisy section cannot make a breach, and
only sections in `window_mm` (from the entry; policy: 10-28 mm, the pedicle) give it. Fewer
than `min_sections` sections: not available (unknown, never negative).

Bright streaks next to metal can look like bone and pull the hull medially (a breach under-read); dense
bone across a narrow canal within `margin_mm` can do the same. The measure is therefore one of two: the
analyser compares it with the canal depth and never reads A/B when either shows a D/E breach.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def sections(vol, centre, axis, t0: float, t1: float, medial: np.ndarray, half_mm: float, step_mm: float = 0.4,
             dt_mm: float = 1.0):
    """HU sampled on planes across the axis at t0..t1 (mm from `centre`): (t values, (nt, nu, nv) HU, u, v)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    u = np.asarray(medial, float)
    u = u - (u @ a) * a
    u /= np.linalg.norm(u)
    w = np.cross(a, u)
    ts = np.arange(t0, t1 + 1e-6, dt_mm)
    g = np.arange(-half_mm, half_mm + 1e-6, step_mm)
    T, U, V = np.meshgrid(ts, g, g, indexing="ij")
    pts = (np.asarray(centre, float)[None, None, None, :] + T[..., None] * a + U[..., None] * u + V[..., None] * w)
    dz, dy, dx = vol.spacing
    zi = vol.z_index(pts[..., 0])
    coords = np.stack([zi, pts[..., 1] / dy, pts[..., 2] / dx])
    hu = ndi.map_coordinates(vol.hu, coords.reshape(3, -1), order=1, mode="constant", cval=-1000.0)
    return ts, hu.reshape(T.shape).astype(np.float32), g


def medial_depth(vol, centre, axis, t_entry: float, t_tip: float, diameter: float, medial: np.ndarray,
                 metal_hu: float, cortex_hu: float = 350.0, bloom_mm: float = 1.0, margin_mm: float = 6.0,
                 skip_entry_mm: float = 5.0, skip_tip_mm: float = 3.0, step_mm: float = 0.4, band_mm: float = 2.5,
                 strip_mm: float = 2.0, soft_hu: float = 60.0,
                 min_sections: int = 4, window_mm: tuple[float, float] | None = None, run: int = 3,
                 strip_from_mm: float | None = None, rel_soft_hu: float | None = None, rel_from_mm: float = 3.0,
                 rel_max_hu: float = 150.0) -> dict:
    """Breach depth (mm) beyond the pedicle's medial cortex from sections across the screw axis.

    `window_mm` (from, to), mm from the entry: only sections in this stretch (the pedicle, between the posterior
    elements and the vertebral body) are computed and give the depth. In the vertebral body, dark beam-hardening
    bands between converging screw tips look like the canal's soft tissue.

    Returns {"available", "depth_mm", "sections", "profile_mm" (per valid section), "t_mm" (of the deepest
    section from the entry), "reason" (when not available)}.
    """
    r = 0.5 * diameter
    half = r + margin_mm
    t0, t1 = t_entry + skip_entry_mm, t_tip - skip_tip_mm
    if window_mm is not None:  # only the window's sections are computed (time: ~0.1 s per screw for a whole shaft)
        t0 = t_entry + max(skip_entry_mm, window_mm[0])
        t1 = min(t1, t_entry + window_mm[1])
    if t1 - t0 < 3.0:
        return {"available": False, "reason": "shaft too short for sections", "depth_mm": None, "sections": 0}
    ts, hu, g = sections(vol, centre, axis, t0, t1, medial, half, step_mm)
    n = len(g)
    uu, vv = np.meshgrid(g, g, indexing="ij")  # u along axis 1 of a section (medial +), v along axis 2
    disk = uu ** 2 + vv ** 2 <= half ** 2
    rb = max(1, int(round(bloom_mm / step_mm)))
    depths = np.full(len(ts), np.nan)
    core = np.abs(vv) <= 0.5 * r  # rows through the middle of the screw
    for k in range(len(ts)):
        s = hu[k]
        metal = s >= metal_hu
        mid = metal & core
        if not mid.any():
            continue
        near = ndi.binary_dilation(metal, iterations=rb)
        bone = (s >= cortex_hu) & ~near & disk
        lab, nl = ndi.label(bone)  # small specks (noise, streak fragments) are not cortex
        if nl:
            sizes = np.bincount(lab.ravel())
            bone &= sizes[lab] >= 4
        u_edge = float(uu[mid].max())  # the metal's medial surface
        u_lat = float(uu[mid].min())
        # the screw is in the vertebra here: bone lateral of it
        if not (bone & (uu < u_lat - bloom_mm) & (np.abs(vv) <= r + 2.0)).any():
            continue
        # medial of the metal: bone (the screw is enclosed there) or the canal's soft tissue (fat, dura)
        s0 = bloom_mm if strip_from_mm is None else strip_from_mm
        strip = core & (uu > u_edge + s0) & (uu <= u_edge + s0 + strip_mm) & disk
        if not strip.any():
            continue
        if (bone & strip).any() or float(np.median(s[strip])) >= soft_hu:
            # wide blooming (extended HU scales) lifts the strip next to the metal over soft_hu: then soft tissue is
            # a far strip (rel_from_mm beyond the metal) at most rel_max_hu and rel_soft_hu below the same strip
            # lateral of the metal (the pedicle's bone, blooming alike on both sides)
            soft = False
            if rel_soft_hu is not None:
                far = core & (uu > u_edge + rel_from_mm) & (uu <= u_edge + rel_from_mm + strip_mm) & disk
                lat = core & (uu < u_lat - rel_from_mm) & (uu >= u_lat - rel_from_mm - strip_mm) & disk
                if far.any() and lat.any():
                    mf, ml = float(np.median(s[far])), float(np.median(s[lat]))
                    soft = mf <= rel_max_hu and ml - mf >= rel_soft_hu
            if not soft:
                depths[k] = 0.0
                continue
        # the medial cortex above and below the screw, on the near side of the canal (not across it)
        walls = []
        for sgn in (1, -1):
            band = bone & (sgn * vv >= r + bloom_mm) & (sgn * vv <= r + bloom_mm + band_mm) & (uu <= u_edge + 1.0)
            if band.any():
                walls.append(float(uu[band].max()))
        if not walls:
            continue
        depths[k] = max(0.0, u_edge - float(np.mean(walls)))
    profile = depths.copy()
    valid = ~np.isnan(depths)
    nvalid = int(valid.sum())
    if nvalid < min_sections:
        return {"available": False, "reason": f"pedicle seen around the screw on {nvalid} sections (< {min_sections})",
                "depth_mm": None, "sections": nvalid}
    # deepest run of `run` consecutive valid sections (their minimum); no such run: the deepest section
    runs = [(float(depths[k:k + run].min()), k + run // 2) for k in range(len(ts) - run + 1)
            if not np.isnan(depths[k:k + run]).any()]
    best, best_k = max(runs) if runs else (float(np.nanmax(depths)), int(np.nanargmax(depths)))
    return {"available": True, "depth_mm": round(best, 2), "sections": nvalid,
            "t_mm": round(float(ts[best_k] - t_entry), 1), "profile_from_mm": round(float(ts[0] - t_entry), 1),
            "window_mm": list(window_mm) if window_mm is not None else None,
            "profile_mm": [None if np.isnan(x) else round(float(x), 1) for x in profile]}

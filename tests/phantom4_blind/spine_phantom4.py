"""spine_phantom4 -- independent synthetic post-operative spine CT phantom (family 4).

Analytic anatomy (signed-distance primitives per vertebra, in each vertebra's local frame),
pedicle screws placed with controlled mal-positions, metal artefacts from a non-linear
(beam-hardening + photon-starvation) sinogram error reconstructed by FBP, quantum noise,
12-bit or extended HU storage.  Truth (breach depth per direction) is *measured* on a fine
screw-aligned grid with a Euclidean distance transform of the rendered bone shape.

Coordinates: DICOM LPS, +x patient left, +y posterior, +z superior, mm.
Vertebra local frame (u, v, w): u = patient left, v = posterior, w = superior; origin = body centre.

API: family(seed, n, small=False), compute_truth(params), write_study(params, directory).
Only numpy, scipy and pydicom are used.
"""
from __future__ import annotations

import json
import math
import os
import hashlib

import numpy as np
from scipy import ndimage, sparse

__all__ = ["family", "compute_truth", "write_study", "render_volume"]

VERSION = "4.0"

# --------------------------------------------------------------------------------------------
# anatomy tables (typical adult values, mm / degrees)
# --------------------------------------------------------------------------------------------
LEVELS = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
#            bw   bd   H    W     Hp   theta  ca   cw   disc_below  Lped  Ltp  Lsp
BASE = {
    "T10": (33., 27., 21., 5.5, 13.5, 4., 15., 17.5, 5.5, 10., 14., 32.),
    "T11": (35., 28., 22., 7.0, 15.5, 4., 16., 18.5, 6.5, 10., 12., 30.),
    "T12": (37., 29., 23., 7.5, 15.5, 6., 16., 20.5, 7.5, 10., 10., 28.),
    "L1":  (41., 30., 24., 8.0, 15.0, 8., 17., 22.0, 8.5, 11., 16., 28.),
    "L2":  (43., 31., 25., 8.5, 15.0, 10., 17., 22.5, 9.5, 11., 20., 28.),
    "L3":  (45., 32., 26., 9.5, 14.5, 12., 16., 23.5, 10.5, 11., 24., 28.),
    "L4":  (47., 33., 26., 10.5, 14., 15., 16., 24.0, 11.0, 10., 20., 26.),
    "L5":  (49., 33., 25., 11.5, 13., 24., 17., 26.0, 10.5, 9., 17., 22.),
    "S1":  (48., 34., 22., 12.0, 14., 30., 15., 29.0, 0.0, 8., 0., 14.),
}

HU = dict(air=-1000., fat=-100., muscle=50., soft=35., blood=42., csf=8., epifat=-90.,
          annulus=88., nucleus=62., peek=330., ti=7000., cocr=11500., steel=14000.,
          tantalum=20000., pmma=2300., pt=20000., lead_poly=250., scar=55.)

# --------------------------------------------------------------------------------------------
# small geometry helpers
# --------------------------------------------------------------------------------------------

def rot_matrix(ax_deg, ay_deg, az_deg):
    """R = Rz(az) @ Ry(ay) @ Rx(ax); columns are local axes expressed in world."""
    ax, ay, az = np.radians([ax_deg, ay_deg, az_deg])
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _ell2(x, y, a, b):
    """approximate signed distance to an axis-aligned ellipse (exact zero set)."""
    return (np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * min(a, b)


def _ell3(x, y, z, a, b, c):
    return (np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2) - 1.0) * min(a, b, c)


def _seg_dist2d(x, y, p0, p1):
    """distance in a plane from (x,y) to segment p0-p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    L2 = dx * dx + dy * dy
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / L2, 0.0, 1.0)
    return np.sqrt((x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2)


def _capsule(P, a, b, r):
    """signed distance from points P (...,3) to a capsule a-b radius r."""
    a = np.asarray(a, float)
    ab = np.asarray(b, float) - a
    L2 = float(ab @ ab)
    ap = P - a
    t = np.clip((ap @ ab) / L2, 0.0, 1.0)
    d = ap - t[..., None] * ab
    return np.sqrt(np.einsum("...i,...i->...", d, d)) - r


def _cyl(P, a, d, t0, t1, r):
    """signed distance (approx) to a finite cylinder along unit d through a, t in [t0,t1]."""
    ap = P - np.asarray(a, float)
    t = ap @ np.asarray(d, float)
    rad = ap - t[..., None] * np.asarray(d, float)
    rho = np.sqrt(np.einsum("...i,...i->...", rad, rad))
    return np.maximum(rho - r, np.maximum(t0 - t, t - t1))


# --------------------------------------------------------------------------------------------
# vertebra model
# --------------------------------------------------------------------------------------------

def vert_derived(V):
    """derived local-frame landmarks of a vertebra dict (pure function of V)."""
    bw, bd, H = V["body_w"], V["body_d"], V["body_h"]
    a, b = bw / 2.0, bd / 2.0
    vpw = b - 3.0                     # flat posterior wall
    W, Hp, th = V["ped_w"], V["ped_h"], math.radians(V["ped_angle"])
    ca, cw = V["canal_ap"], V["canal_w"]
    wp = H / 2.0 - Hp / 2.0 - 1.0     # pedicle centre height (upper half of body)
    if V["level"] == "S1":
        wp = H / 2.0 - Hp / 2.0 - 2.0
    Lp = V["ped_len"]
    Li = 0.45 * Lp
    out = dict(a=a, b=b, vpw=vpw, wp=wp, Li=Li)
    for side in (-1, 1):
        key = "L" if side > 0 else "R"
        e_post = np.array([side * math.sin(th), math.cos(th), 0.0])
        n_lat = np.array([side * math.cos(th), -math.sin(th), 0.0])
        I = np.array([side * (cw / 2.0 + W / 2.0), vpw + Li, wp])
        J = I + (Lp - Li) * e_post
        e_post, n_lat, I, J = (tuple(float(x) for x in q) for q in (e_post, n_lat, I, J))
        out[key] = dict(e_post=e_post, n_lat=n_lat, I=I, J=J)
    return out


def _to_local(V, P):
    c = np.asarray(V["center"], np.float64)
    R = np.asarray(V["R"], np.float64)
    dt = P.dtype if P.dtype in (np.float32, np.float64) else np.float64
    x = P[..., 0] - dt.type(c[0])
    y = P[..., 1] - dt.type(c[1])
    z = P[..., 2] - dt.type(c[2])
    R = R.astype(dt)
    u = x * R[0, 0] + y * R[1, 0] + z * R[2, 0]
    v = x * R[0, 1] + y * R[1, 1] + z * R[2, 1]
    w = x * R[0, 2] + y * R[1, 2] + z * R[2, 2]
    return u, v, w


def _cap2(u, v, w, a, b, r):
    """capsule distance with endpoints given as 3-tuples (floats)."""
    abx, aby, abz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    L2 = abx * abx + aby * aby + abz * abz
    px, py, pz = u - a[0], v - a[1], w - a[2]
    t = np.clip((px * abx + py * aby + pz * abz) * (1.0 / L2), 0.0, 1.0)
    return np.sqrt((px - t * abx) ** 2 + (py - t * aby) ** 2 + (pz - t * abz) ** 2) - r


def vert_sdf(V, P, with_body=False):
    """signed distance (approximate, exact zero set) of the whole vertebra; P world (...,3)."""
    u, v, w = _to_local(V, P)
    D = vert_derived(V)
    a, b, vpw, wp = D["a"], D["b"], D["vpw"], D["wp"]
    H, W, Hp = V["body_h"], V["ped_w"], V["ped_h"]
    lvl = V["level"]
    lam = V["laminectomy"]
    # body: ellipse with flat posterior wall, slight waist
    waist = 1.0 - 0.06 * np.clip(1.0 - (2.0 * w / H) ** 2, 0, 1)
    sb = np.maximum(_ell2(u / waist, v / waist, a, b) * waist, v - vpw)
    hb = H / 2.0
    if lvl == "S1":                      # sacrum continues downward, tapering
        sh = np.where(w > 0, w - hb, -w - (hb + 30.0))
        sb = np.maximum(sb, v - vpw - 0.25 * np.clip(-w - hb, 0, None))
    else:
        sh = np.abs(w) - hb
    body = np.maximum(sb, sh)
    s = body
    for side in (-1, 1):
        L = D["L" if side > 0 else "R"]
        I, J, ep, nl = L["I"], L["J"], L["e_post"], L["n_lat"]
        ru, rv, rw = u - I[0], v - I[1], w - I[2]
        ts = ru * ep[0] + rv * ep[1]
        pl = ru * nl[0] + rv * nl[1]
        ped = np.maximum(_ell2(pl, rw, W / 2.0, Hp / 2.0),
                         np.maximum(-(D["Li"] + 11.0) - ts, ts - (V["ped_len"] - D["Li"] + 3.0)))
        s = np.minimum(s, ped)
        Jc = (J[0] + side * 1.0, J[1] + 3.5, J[2])
        s = np.minimum(s, _ell3(u - Jc[0], v - Jc[1], w - Jc[2], W / 2.0 + 3.5, 7.0, Hp / 2.0 + 2.0))
        if lvl == "S1":   # sacral ala: broad wing
            s = np.minimum(s, _ell3(u - side * (a + 4.0), v - (vpw - 4.0), w - (wp - 6.0), 18.0, 14.0, 16.0))
        else:
            tip = (J[0] + side * (V["tp_len"] + W / 2.0), J[1] + V["tp_back"], J[2])
            s = np.minimum(s, _cap2(u, v, w, J, tip, 4.0 if lvl != "L5" else 6.0))
        sap_c = (J[0] + side * 1.5, J[1] + 5.0, J[2] + Hp / 2.0 + 5.0)
        s = np.minimum(s, _ell3(u - sap_c[0], v - sap_c[1], w - sap_c[2], 4.5, 6.5, 8.5))
        if not lam:
            if V["canal_type"] == "trefoil":
                fb_c = (side * (V["canal_w"] / 2.0 - 1.0), vpw + 0.8 * V["canal_ap"], wp + 2.0)
                s = np.minimum(s, _ell3(u - fb_c[0], v - fb_c[1], w - fb_c[2], 4.0, 5.0, 8.0))
            iap_c = (side * (V["canal_w"] / 2.0 + 1.0), J[1] + 7.0, -H / 2.0 - 3.0)
            s = np.minimum(s, _ell3(u - iap_c[0], v - iap_c[1], w - iap_c[2], 4.5, 5.5, 9.0))
            Jl = (J[0] - side * 1.5, J[1] + 3.0)
            tl = V["lam_t"]
            M = (0.0, vpw + V["canal_ap"] + tl / 2.0)
            lamd = np.maximum(_seg_dist2d(u, v - 0.12 * (wp - w), Jl, M) - tl / 2.0,
                              np.maximum(w - (wp + Hp / 2.0 + 2.0), -H / 2.0 - 7.0 - w))
            s = np.minimum(s, lamd)
        else:
            Jl = (J[0] - side * 1.5, J[1] + 3.0)
            stump = (J[0] - side * 3.5, J[1] + 5.0)
            st = np.maximum(_seg_dist2d(u, v, Jl, stump) - 2.5, np.abs(w - wp) - Hp / 2.0)
            s = np.minimum(s, st)
    if not lam:
        tl = V["lam_t"]
        Mv = vpw + V["canal_ap"] + tl / 2.0
        Lsp = V["sp_len"]
        slope = 0.55 if lvl.startswith("T") else 0.15
        wc = -0.15 * H - slope * np.clip(v - Mv, 0, None)
        sp = np.maximum(np.maximum(np.abs(u) - V["sp_t"] / 2.0, np.abs(w - wc) - V["sp_h"] / 2.0),
                        np.maximum(Mv - 2.0 - v, v - (Mv + Lsp)))
        s = np.minimum(s, sp)
    if with_body:
        return s, body
    return s


def vert_local_bbox(V):
    H = V["body_h"]
    reach = V["canal_w"] / 2.0 + V["ped_w"] + V["tp_len"] + 12.0
    if V["level"] == "S1":
        reach = V["body_w"] / 2.0 + 26.0
    lo = np.array([-reach, -V["body_d"] / 2.0 - 2.0, -H / 2.0 - (34.0 if V["level"] == "S1" else 18.0)])
    hi = np.array([reach, V["body_d"] / 2.0 + V["canal_ap"] + V["sp_len"] + 14.0, H / 2.0 + 18.0])
    return lo, hi


def world_aabb(center, R, lo, hi):
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    W = corners @ np.asarray(R).T + np.asarray(center)
    return W.min(0), W.max(0)


# --------------------------------------------------------------------------------------------
# screws
# --------------------------------------------------------------------------------------------

def screw_radius_profile(S, t):
    """outer thread-envelope radius along the axis coordinate t (0 = tip, increasing backwards)."""
    r = S["diameter"] / 2.0
    cone = 4.0
    return np.where(t < cone, r * (0.35 + 0.65 * np.clip(t / cone, 0, 1)), r)


def screw_sdf(S, P, threads=True):
    """signed distance to the screw shank (tip .. back end), approximately, with threads."""
    tip = np.asarray(S["tip"], float)
    d = np.asarray(S["dir"], float)          # unit, pointing from head to tip
    rel = P - tip
    t = -(rel @ d)                            # 0 at tip, positive backwards
    radv = rel + t[..., None] * d
    rho = np.sqrt(np.einsum("...i,...i->...", radv, radv))
    r_env = screw_radius_profile(S, t)
    if threads:
        # helical thread: core 70 % of outer radius; phase from the angle around the axis
        e1 = np.cross(d, [0.0, 0.0, 1.0])
        if np.linalg.norm(e1) < 1e-6:
            e1 = np.array([1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        ang = np.arctan2(radv @ e2, radv @ e1)
        pitch = S.get("pitch", 2.8)
        ph = np.mod(t / pitch + ang / (2 * np.pi), 1.0)
        tri = 1.0 - np.abs(2.0 * ph - 1.0)        # 0..1
        r_here = r_env * (0.72 + 0.28 * np.clip(1.6 * tri, 0, 1))
    else:
        r_here = r_env
    return np.maximum(rho - r_here, np.maximum(-t, t - S["shank_len"]))


def screw_head_geom(S):
    tip = np.asarray(S["tip"], float)
    d = np.asarray(S["dir"], float)
    back = tip - S["shank_len"] * d
    head_c = back - 7.0 * d       # tulip centre (rod sits here)
    return back, head_c


# --------------------------------------------------------------------------------------------
# family
# --------------------------------------------------------------------------------------------

def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _choice(rng, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def _build_spine(rng, levels, small):
    """vertebra dicts along a lordotic/scoliotic curve; returns list ordered superior->inferior."""
    n = len(levels)
    # global posture
    pat_rot = _u(rng, -15, 15) if rng.random() < 0.6 else _u(rng, -4, 4)
    scol = _u(rng, 5, 15) * (1 if rng.random() < 0.5 else -1) if rng.random() < 0.35 else 0.0
    lord = _u(rng, 0.6, 1.3)
    out = []
    # lordosis angles (sagittal tilt of each vertebra, positive ax = top leans posterior)
    sag_base = {"T10": -6, "T11": -4, "T12": -2, "L1": 0, "L2": 3, "L3": 6, "L4": 10, "L5": 16, "S1": 32}
    size = _u(rng, 0.9, 1.1)
    verts = []
    for k, lv in enumerate(levels):
        bw, bd, H, W, Hp, th, ca, cw, disc, Lp, Ltp, Lsp = BASE[lv]
        V = dict(level=lv)
        V["body_w"] = bw * size * _u(rng, 0.95, 1.05)
        V["body_d"] = bd * size * _u(rng, 0.95, 1.05)
        V["body_h"] = H * size * _u(rng, 0.92, 1.06)
        V["ped_w"] = float(np.clip(W * _u(rng, 0.75, 1.2), 5.0, 12.0))
        V["ped_h"] = float(np.clip(Hp * _u(rng, 0.8, 1.2), 10.0, 18.0))
        V["ped_angle"] = float(np.clip(th + _u(rng, -4, 4), 0.0, 32.0))
        V["ped_len"] = Lp * _u(rng, 0.85, 1.2)
        V["tp_len"] = Ltp * _u(rng, 0.8, 1.2)
        V["tp_back"] = 7.0 if lv.startswith("T") else -1.0
        V["sp_len"] = Lsp * _u(rng, 0.85, 1.15)
        V["sp_t"] = _u(rng, 5.0, 8.0)
        V["sp_h"] = _u(rng, 11.0, 18.0)
        V["lam_t"] = _u(rng, 5.0, 8.0)
        V["disc_below"] = disc * _u(rng, 0.8, 1.15)
        V["canal_w"] = cw * _u(rng, 0.9, 1.1)
        V["canal_ap"] = ca
        V["canal_type"] = "round"
        V["laminectomy"] = False
        V["cortex_t"] = _u(rng, 0.8, 1.4)
        verts.append(V)
    # short pedicles sometimes
    if rng.random() < 0.2:
        for V in verts:
            V["ped_len"] *= 0.7
            V["short_pedicle"] = True
    # canal: shape and stenosis per study with per-level jitter
    ctype = "trefoil" if rng.random() < 0.45 else "round"
    sten = rng.random() < 0.35
    for V in verts:
        V["canal_type"] = ctype if V["level"] != "S1" else "round"
        ap = V["canal_ap"] * _u(rng, 0.9, 1.25)
        if sten and V["level"] in ("L2", "L3", "L4", "L5"):
            ap = _u(rng, 10.0, 12.5)
        V["canal_ap"] = float(np.clip(ap, 10.0, 22.0))
    # chain the vertebrae from the most inferior upwards
    z = 0.0
    cur = np.array([0.0, 0.0, 0.0])
    span = max(n - 1, 1)
    centers = [None] * n
    angs = [None] * n
    for j in range(n - 1, -1, -1):
        V = verts[j]
        lv = V["level"]
        ax = sag_base[lv] * lord + _u(rng, -2, 2)
        frac = (n - 1 - j) / span
        ay = scol * math.sin(math.pi * frac) * 0.9 + _u(rng, -1.5, 1.5) * (1 if scol else 0.3)
        az = pat_rot + 0.5 * scol * math.sin(math.pi * frac) + _u(rng, -1, 1)
        R = rot_matrix(ax, ay, az)
        if j == n - 1:
            c = cur
        else:
            lower = verts[j + 1]
            Rl = np.asarray(lower["R"])
            gap = lower["body_h"] / 2.0 + verts[j]["disc_below"]
            top_low = np.asarray(lower["center"]) + Rl @ np.array([0, 0, lower["body_h"] / 2.0 + (0 if lower["level"] != "S1" else 0.0)])
            # disc midplane direction: average of the two normals
            nrm = Rl[:, 2] + R[:, 2]
            nrm /= np.linalg.norm(nrm)
            c = top_low + V["disc_below"] * nrm + R @ np.array([0, 0, V["body_h"] / 2.0])
            # slight translation (listhesis) noise
            c = c + R @ np.array([_u(rng, -1.5, 1.5), _u(rng, -1.5, 1.5), 0.0])
            del gap
        V["center"] = [float(x) for x in c]
        V["R"] = [[float(x) for x in row] for row in R]
        V["angles"] = [float(ax), float(ay), float(az)]
    posture = dict(patient_rotation_deg=float(pat_rot), scoliosis_deg=float(scol), lordosis_factor=float(lord),
                   stenosis=bool(sten), canal_type=ctype)
    return verts, posture


def _first_entry(V, origin, d, t_max=90.0, step=0.05):
    ts = np.arange(0.0, t_max, step)
    P = np.asarray(origin)[None, :] + ts[:, None] * np.asarray(d)[None, :]
    s = vert_sdf(V, P)
    inside = np.nonzero(s < 0)[0]
    if len(inside) == 0:
        return None, None
    return float(ts[inside[0]]), s


def _anterior_exit(V, entry, d, step=0.1):
    ts = np.arange(0.0, 90.0, step)
    P = np.asarray(entry)[None, :] + ts[:, None] * np.asarray(d)[None, :]
    s, body = vert_sdf(V, P, with_body=True)
    inb = np.nonzero(body < 0)[0]
    if len(inb) == 0:
        return 45.0
    return float(ts[inb[-1]])


def _make_screw(rng, V, side, target, diameter, small):
    """build a screw dict with a designed mal-position. target = (direction, depth_mm)."""
    D = vert_derived(V)
    key = "L" if side > 0 else "R"
    L = D[key]
    c = np.asarray(V["center"])
    R = np.asarray(V["R"])
    I, ep, nl = np.array(L["I"]), np.array(L["e_post"]), np.array(L["n_lat"])
    nw = np.array([0.0, 0.0, 1.0])
    W, Hp = V["ped_w"], V["ped_h"]
    r = diameter / 2.0
    direction, depth = target
    # nominal local axis, slight freedom inside the pedicle
    dconv = _u(rng, -3, 3)
    dtilt = _u(rng, -6, 6)
    d_loc = -ep
    # rotate by dconv about w and tilt about n_lat
    def rot_about(vec, axis, deg):
        axis = axis / np.linalg.norm(axis)
        th = math.radians(deg)
        return (vec * math.cos(th) + np.cross(axis, vec) * math.sin(th) + axis * (axis @ vec) * (1 - math.cos(th)))
    d_loc = rot_about(d_loc, nw, side * dconv)
    d_loc = rot_about(d_loc, nl, dtilt)
    d_loc /= np.linalg.norm(d_loc)
    p0 = I.copy()
    dist_JI = V["ped_len"] - D["Li"] + 8.0         # approx isthmus-to-entry distance
    tip_in_canal = False
    if direction in ("medial", "lateral", "superior", "inferior"):
        if direction in ("medial", "lateral"):
            n = -nl if direction == "medial" else nl
            margin = W / 2.0 - r
        else:
            n = nw if direction == "superior" else -nw
            margin = Hp / 2.0 - r
        s = margin + depth
        if depth <= 0:
            s = min(s, 0.0) if margin < 0 else _u(rng, -0.4, 0.4) * max(margin, 0)
        f = _u(rng, 0.35, 1.0)
        max_ang = 10.0
        if direction == "medial" and depth >= 6.0 and rng.random() < 0.3:
            f = _u(rng, 0.0, 0.2)         # mostly angular -> tip may lie in the canal
            tip_in_canal = True
            max_ang = 30.0
        if s > 0 and (1 - f) * s / dist_JI > math.tan(math.radians(max_ang)):
            f = 1.0 - math.tan(math.radians(max_ang)) * dist_JI / s
        p0 = p0 + s * n
        # rotate about the entry side: the isthmus is displaced by s, the entry only by f*s
        d_loc = d_loc + ((1 - f) * s / dist_JI) * n
        d_loc /= np.linalg.norm(d_loc)
    else:
        # central / anterior: small random offset inside the pedicle
        p0 = p0 + _u(rng, -0.3, 0.3) * max(W / 2.0 - r, 0) * nl + _u(rng, -0.3, 0.3) * max(Hp / 2.0 - r, 0) * nw
    # axis passes through pw (local, at isthmus shifted); origin 45 mm posterior along axis
    d_w = R @ d_loc
    pw_world = c + R @ p0
    origin = pw_world - 45.0 * d_w
    te, _ = _first_entry(V, origin, d_w, t_max=80.0)
    if te is None:
        te = 45.0 - dist_JI
    entry = origin + te * d_w
    ant = _anterior_exit(V, entry, d_w)
    if direction == "anterior" and depth > 0:
        length = ant + depth + 1.0
    else:
        length = ant - _u(rng, 3.0, 10.0)
    if tip_in_canal:
        # place tip in the canal if the axis crosses it: find first non-bone run after the isthmus
        ts = np.arange(dist_JI - 6.0, 75.0, 0.25)
        P = entry[None, :] + ts[:, None] * d_w[None, :]
        sv = vert_sdf(V, P)
        Q = (P - c) @ R
        canal = (sv > 1.5) & (np.abs(Q[:, 0]) < V["canal_w"] / 2.0) & (Q[:, 1] > D["vpw"]) & \
                (Q[:, 1] < D["vpw"] + V["canal_ap"])
        idx = np.nonzero(canal)[0]
        if len(idx):
            length = float(ts[idx[len(idx) // 2]]) + 2.0
        else:
            tip_in_canal = False
    lmin = 25.0 if tip_in_canal else (30.0 if V["level"].startswith("T") else 35.0)
    length = float(np.clip(length, lmin, 55.0))
    length = round(length / 5.0) * 5.0 if rng.random() < 0.5 and not tip_in_canal and direction != "anterior" else length
    length = float(np.clip(length, lmin, 55.0))
    tip = entry + length * d_w
    back = entry - 2.0 * d_w
    shank_len = float(np.linalg.norm(tip - back))
    conv = math.degrees(math.atan2(-side * d_w[0], -d_w[1]))
    tilt = math.degrees(math.asin(np.clip(d_w[2], -1, 1)))
    return dict(id=f"{V['level']}-{'left' if side > 0 else 'right'}", level=V["level"],
                side="left" if side > 0 else "right", diameter=float(diameter), length=float(length),
                tip=[float(x) for x in tip], dir=[float(x) for x in d_w], shank_len=shank_len,
                axis_origin=[float(x) for x in origin], pitch=_u(rng, 2.5, 3.0),
                design=dict(direction=direction, depth_mm=float(depth), tip_in_canal_intended=tip_in_canal),
                convergence_deg=float(conv), tilt_deg=float(tilt), cement=False)


def _screw_targets(rng):
    """sample a designed breach (direction, depth)."""
    x = rng.random()
    if x < 0.47:
        return ("medial", _u(rng, 4.3, 10.0))            # D/E medial into the canal
    if x < 0.53:
        return ("medial", _u(rng, 2.2, 3.6))
    if x < 0.58:
        return ("medial", _u(rng, 0.5, 1.7))
    if x < 0.72:
        return ("lateral", _choice(rng, [_u(rng, 0.5, 1.7), _u(rng, 2.2, 3.6), _u(rng, 4.3, 5.6), _u(rng, 6.5, 9.0)]))
    if x < 0.80:
        return (_choice(rng, ["superior", "inferior"]), _choice(rng, [_u(rng, 0.5, 1.7), _u(rng, 2.2, 3.6), _u(rng, 4.3, 6.5)]))
    if x < 0.83:
        return ("anterior", _choice(rng, [_u(rng, 0.6, 1.7), _u(rng, 2.2, 3.6)]))
    return ("none", 0.0)


def family(seed: int, n: int, small: bool = False) -> list:
    return [_one_study(int(seed), i, bool(small)) for i in range(int(n))]


def _one_study(seed, idx, small):
    rng = np.random.default_rng([seed, idx, 4, 1 if small else 0])
    # --- construct extent
    lowest = _choice(rng, ["T12", "L1", "L2", "L3", "L4", "L5", "S1"], p=[0.04, 0.05, 0.07, 0.12, 0.22, 0.2, 0.3])
    li = LEVELS.index(lowest)
    nlev = int(rng.choice([2, 2, 3, 3, 4, 5])) if not small else int(rng.choice([2, 2, 3]))
    top = max(0, li - nlev + 1)
    inst = LEVELS[top:li + 1]
    if len(inst) < 2:
        inst = LEVELS[li - 1:li + 1]
        top = li - 1
    cov_top = max(0, top - 1)
    cov_bot = min(len(LEVELS) - 1, li + 1)
    levels = LEVELS[cov_top:cov_bot + 1]
    verts, posture = _build_spine(rng, levels, small)
    vmap = {V["level"]: V for V in verts}
    # --- surgical options
    lam_levels = []
    if rng.random() < 0.42:
        cands = [l for l in inst if l != "S1"]
        k = int(rng.integers(1, min(2, len(cands)) + 1))
        start = int(rng.integers(0, len(cands) - k + 1))
        lam_levels = cands[start:start + k]
    for l in lam_levels:
        vmap[l]["laminectomy"] = True
    unilateral = rng.random() < 0.12
    uni_side = 1 if rng.random() < 0.5 else -1
    cement_levels = []
    if rng.random() < 0.15:
        cement_levels = [l for l in inst if l != "S1"][:int(rng.integers(1, 3))]
        for l in cement_levels:
            pass
    screws = []
    for lv in inst:
        V = vmap[lv]
        for side in ((uni_side,) if unilateral else (1, -1)):
            if not unilateral and rng.random() < 0.03:
                continue
            target = _screw_targets(rng)
            W = V["ped_w"]
            if rng.random() < 0.12:
                dia = float(np.clip(W + _u(rng, 0.3, 2.5), 4.5, 7.5))      # thicker than the pedicle
                if dia <= W:
                    dia = 7.5
                if target[0] in ("medial", "lateral"):
                    target = (target[0], max(target[1], 0.0))
            else:
                dia = float(np.clip(round((W * _u(rng, 0.55, 0.85)) * 2) / 2.0, 4.5, 7.5))
            if lv == "S1":
                dia = float(max(dia, _choice(rng, [6.5, 7.0, 7.5])))
            S = _make_screw(rng, V, side, target, dia, small)
            S["cement"] = lv in cement_levels
            screws.append(S)
    # --- hardware
    hw = dict(rods=[], crosslinks=[], cages=[], hip=None, scs=None)
    for side in ("left", "right"):
        ss = [S for S in screws if S["side"] == side]
        if len(ss) >= 2:
            pts = [screw_head_geom(S)[1].tolist() for S in ss]
            hw["rods"].append(dict(side=side, points=pts, radius=_choice(rng, [2.75, 3.0, 3.0, 3.25]),
                                   material=_choice(rng, ["ti", "ti", "cocr"])))
    if len(hw["rods"]) == 2 and len(inst) >= 3 and rng.random() < 0.4:
        hw["crosslinks"].append(dict(frac=_u(rng, 0.35, 0.65), arch=not any(vmap[l]["laminectomy"] for l in inst[1:-1])))
    if rng.random() < 0.45:
        pairs = [(inst[k], inst[k + 1]) for k in range(len(inst) - 1)]
        ncage = int(rng.integers(1, min(2, len(pairs)) + 1))
        for k in rng.choice(len(pairs), size=ncage, replace=False):
            hw["cages"].append(dict(upper=pairs[int(k)][0], lower=pairs[int(k)][1],
                                    kind=_choice(rng, ["tlif", "plif"]), side=_choice(rng, [-1, 1]),
                                    angle=_u(rng, 20, 40)))
    if rng.random() < 0.1:
        hw["hip"] = dict(side=_choice(rng, [-1, 1]))
    if rng.random() < 0.1:
        hw["scs"] = dict(offset=_u(rng, -2, 2))
    # --- acquisition
    if small:
        px = round(_u(rng, 1.0, 1.5), 3)
        matrix = 128
        thk = _choice(rng, [1.5, 2.0, 2.5, 3.0])
    else:
        px = round(_u(rng, 0.3, 0.9), 3)
        matrix = 512
        thk = _choice(rng, [0.6, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
    spacing = thk if rng.random() < 0.75 else round(thk * _u(rng, 0.5, 0.9), 3)
    # z coverage: instrumented levels plus margins
    zs = []
    for lv in inst:
        V = vmap[lv]
        zc = V["center"][2]
        zs += [zc - V["body_h"] / 2.0 - 6.0, zc + V["body_h"] / 2.0 + 6.0]
    for S in screws:
        zs += [S["tip"][2], screw_head_geom(S)[1][2]]
    z0, z1 = min(zs) - _u(rng, 3, 12), max(zs) + _u(rng, 3, 12)
    max_slices = 100 if small else 300
    nsl = int(math.ceil((z1 - z0) / spacing)) + 1
    if nsl > max_slices:
        spacing = (z1 - z0) / (max_slices - 1)
        if spacing > thk:
            thk = round(spacing, 3)
        spacing = round(spacing + 1e-3, 3)
        nsl = int(math.ceil((z1 - z0) / spacing)) + 1
        nsl = min(nsl, max_slices)
    # FOV centre near the canal of the middle instrumented vertebra
    mid = vmap[inst[len(inst) // 2]]
    fc = np.asarray(mid["center"]) + np.asarray(mid["R"]) @ np.array([0.0, 10.0, 0.0])
    fov = px * matrix
    cx = float(fc[0] + _u(rng, -0.08, 0.08) * fov * 0.3)
    cy = float(fc[1] + _u(rng, -0.08, 0.08) * fov * 0.3 + (0.0 if fov < 250 else -0.12 * fov))
    sat12 = rng.random() < 0.5
    ext_scale = None if sat12 else _choice(rng, ["int16", "int16", "x10"])
    body = dict(a=_u(rng, 140, 185), b=_u(rng, 100, 135), fat=_u(rng, 12, 40),
                back_fat=_u(rng, 10, 35), gas=int(rng.integers(0, 5)))
    p = dict(version=VERSION, seed=seed, index=idx, small=small,
             study_id=f"P4-{seed}-{idx}{'-s' if small else ''}",
             levels=levels, instrumented_levels=inst, laminectomy_levels=lam_levels,
             cement_levels=cement_levels, unilateral=unilateral,
             vertebrae=verts, posture=posture, screws=screws, hardware=hw, body=body,
             acq=dict(matrix=matrix, pixel_mm=px, thickness_mm=thk, spacing_mm=spacing, n_slices=nsl,
                      z_top=float(z1), fov_center=[cx, cy], sat12=sat12, ext_scale=ext_scale,
                      noise_hu=_u(rng, 12, 35), psf_mm=_u(rng, 0.3, 0.55), kvp=_choice(rng, [100, 120, 120, 140]),
                      metal_bh=_u(rng, 0.6, 1.4), metal_starv=_u(rng, 0.5, 1.5)),
             bone=dict(cortex_hu=_u(rng, 850, 1400), canc_hu=_u(rng, 110, 280) if not cement_levels else _u(rng, 70, 140)),
             artefact_seed=int(rng.integers(0, 2**31 - 1)))
    return json.loads(json.dumps(p))


# --------------------------------------------------------------------------------------------
# truth
# --------------------------------------------------------------------------------------------

GRID_H = 0.3
MARGIN = 10.5
SKIP_ENTRY_MM = 3.0


def _grade(depth):
    if depth <= 0.0:
        return "A"
    if depth < 2.0:
        return "B"
    if depth < 4.0:
        return "C"
    if depth < 6.0:
        return "D"
    return "E"


def _measure_screw(S, V, h=GRID_H):
    d = np.asarray(S["dir"], float)
    tip = np.asarray(S["tip"], float)
    origin = np.asarray(S["axis_origin"], float)
    te, _ = _first_entry(V, origin, d, t_max=float(np.linalg.norm(tip - origin)) + 1.0, step=0.05)
    if te is None:
        entry = tip - S["shank_len"] * d
    else:
        entry = origin + te * d
    r = S["diameter"] / 2.0
    e1 = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    L_in = float((tip - entry) @ d)
    t_lo = -1.5
    ts = np.arange(t_lo, L_in + h, h)                     # from entry along the axis
    m = r + MARGIN
    ab = np.arange(-m, m + h / 2, h)
    T, A, B = np.meshgrid(ts, ab, ab, indexing="ij")
    P = (entry + T[..., None] * d + A[..., None] * e1 + B[..., None] * e2).astype(np.float32)
    bone = vert_sdf(V, P) < 0
    # screw envelope (outer thread), only beyond the entry point
    t_from_tip = L_in - T
    r_env = screw_radius_profile(S, t_from_tip)
    rho = np.sqrt(A ** 2 + B ** 2)
    scr = (rho <= r_env) & (T >= SKIP_ENTRY_MM) & (T <= L_in)
    out = scr & ~bone
    if np.any(out):
        # crop along the axis to the breached stretch +- margin (bone farther away cannot be nearest)
        kt = np.nonzero(out.any(axis=(1, 2)))[0]
        pad = int(math.ceil((MARGIN + r) / h)) + 1
        k0, k1 = max(kt[0] - pad, 0), min(kt[-1] + pad + 1, out.shape[0])
        P, bone, out, T = P[k0:k1], bone[k0:k1], out[k0:k1], T[k0:k1]
        dist, inds = ndimage.distance_transform_edt(~bone, sampling=h, return_indices=True)
    depths = dict(medial=0.0, lateral=0.0, superior=0.0, inferior=0.0, anterior=0.0)
    side = 1.0 if S["side"] == "left" else -1.0
    R = np.asarray(V["R"])
    c = np.asarray(V["center"])
    Dv = vert_derived(V)
    tip_in_canal = False
    if np.any(out):
        idx = np.nonzero(out)
        dd = dist[idx]
        Pn = P[inds[0][idx], inds[1][idx], inds[2][idx]]
        Po = P[idx].astype(np.float64)
        Pn = Pn.astype(np.float64)
        disp = (Po - Pn) @ R                       # local frame displacement from nearest bone
        Ql = (Po - c) @ R
        in_canal = (np.abs(Ql[:, 0]) < V["canal_w"] / 2.0 + 0.5) & (Ql[:, 1] > Dv["vpw"] - 0.5) & \
                   (Ql[:, 1] < Dv["vpw"] + V["canal_ap"] + 1.5) & (np.abs(Ql[:, 2]) < V["body_h"] / 2.0 + 6)
        comp = np.stack([-side * disp[:, 0], side * disp[:, 0], disp[:, 2], -disp[:, 2], -disp[:, 1], disp[:, 1]], 1)
        cls = np.argmax(comp, 1)
        cls = np.where(in_canal, 0, cls)
        names = ["medial", "lateral", "superior", "inferior", "anterior", "posterior"]
        for k, nm in enumerate(names[:5]):
            sel = cls == k
            if np.any(sel):
                depths[nm] = float(np.round(dd[sel].max(), 2))
    # tip in canal?
    Ql = (tip - c) @ R
    stip = float(vert_sdf(V, tip[None, :])[0])
    if stip > 0 and abs(Ql[0]) < V["canal_w"] / 2.0 and Dv["vpw"] < Ql[1] < Dv["vpw"] + V["canal_ap"] + 1.0:
        tip_in_canal = True
    return entry, depths, tip_in_canal


def _measure_index(args):
    p, i = args
    S = p["screws"][i]
    V = next(V for V in p["vertebrae"] if V["level"] == S["level"])
    return _measure_screw(S, V)


def compute_truth(params, _measurements=None) -> dict:
    p = params
    vmap = {V["level"]: V for V in p["vertebrae"]}
    screws = []
    for i, S in enumerate(p["screws"]):
        V = vmap[S["level"]]
        if _measurements is not None:
            entry, depths, tic = _measurements[i]
        else:
            entry, depths, tic = _measure_screw(S, V)
        dirn = max(depths, key=lambda k: depths[k])
        dep = depths[dirn]
        if dep <= 0:
            dirn = "none"
            dep = 0.0
        screws.append(dict(
            id=S["id"], level=S["level"], side=S["side"],
            entry_lps_mm=[round(float(x), 3) for x in entry],
            tip_lps_mm=[round(float(x), 3) for x in S["tip"]],
            diameter_mm=S["diameter"], length_mm=round(float(np.linalg.norm(np.asarray(S["tip"]) - entry)), 2),
            breach_depths_mm=depths, breach_direction=dirn, breach_depth_mm=dep, grade=_grade(dep),
            at_laminectomy_level=S["level"] in p["laminectomy_levels"], cement_augmented=bool(S["cement"]),
            tip_in_canal=bool(tic), pedicle_width_mm=round(vmap[S["level"]]["ped_w"], 2),
            pedicle_height_mm=round(vmap[S["level"]]["ped_h"], 2),
            screw_wider_than_pedicle=bool(S["diameter"] > vmap[S["level"]]["ped_w"]),
            convergence_deg=round(S["convergence_deg"], 2), craniocaudal_tilt_deg=round(S["tilt_deg"], 2),
            designed=S["design"]))
    acq = p["acq"]
    return dict(
        study_id=p["study_id"], generator="spine_phantom4 " + VERSION,
        slice_thickness_mm=acq["thickness_mm"], spacing_between_slices_mm=acq["spacing_mm"],
        pixel_spacing_mm=[acq["pixel_mm"], acq["pixel_mm"]], matrix=acq["matrix"], n_slices=acq["n_slices"],
        laminectomy_levels=list(p["laminectomy_levels"]), instrumented_levels=list(p["instrumented_levels"]),
        levels_in_volume=list(p["levels"]), screws=screws,
        hu_12bit_saturated=bool(acq["sat12"]),
        hardware=dict(rods=len(p["hardware"]["rods"]), crosslinks=len(p["hardware"]["crosslinks"]),
                      cages=[f"{c['upper']}-{c['lower']}:{c['kind']}" for c in p["hardware"]["cages"]],
                      hip_prosthesis=p["hardware"]["hip"] is not None,
                      spinal_cord_stimulator=p["hardware"]["scs"] is not None),
        cement_levels=list(p["cement_levels"]), unilateral=bool(p["unilateral"]),
        posture=p["posture"],
        canal={V["level"]: dict(type=V["canal_type"], ap_mm=round(V["canal_ap"], 2), width_mm=round(V["canal_w"], 2))
               for V in p["vertebrae"]},
    )


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

def _occ(sdf, h):
    return np.clip(0.5 - sdf / h, 0.0, 1.0)


_PROJ_CACHE = {}


def _projector(N, nang):
    key = (N, nang)
    if key in _PROJ_CACHE:
        return _PROJ_CACHE[key]
    nb = int(math.ceil(N * 1.42)) + 2
    c = (N - 1) / 2.0
    ys, xs = np.mgrid[0:N, 0:N]
    xs = (xs - c).ravel()
    ys = (ys - c).ravel()
    th = np.pi * np.arange(nang) / nang
    s = xs[None, :] * np.cos(th)[:, None] + ys[None, :] * np.sin(th)[:, None] + (nb - 1) / 2.0
    i0 = np.floor(s).astype(np.int64)
    f = (s - i0).astype(np.float32)
    base = (np.arange(nang) * nb)[:, None]
    pix = np.broadcast_to(np.arange(N * N)[None, :], s.shape)
    rows = np.concatenate([(base + i0).ravel(), (base + i0 + 1).ravel()])
    cols = np.concatenate([pix.ravel(), pix.ravel()])
    vals = np.concatenate([(1 - f).ravel(), f.ravel()])
    A = sparse.csr_matrix((vals, (rows, cols)), shape=(nang * nb, N * N))
    # ramp filter (Ram-Lak with Hann window)
    freqs = np.fft.rfftfreq(2 * nb)
    ramp = 2 * np.abs(freqs) * (0.5 + 0.5 * np.cos(np.pi * freqs / freqs.max()))
    _PROJ_CACHE[key] = (A, A.T.tocsr(), nb, ramp.astype(np.float32))
    return _PROJ_CACHE[key]


def _metal_artefacts(Mstack, px_art, p_acq, rng):
    """Mstack: (N*N, ns) metal excess attenuation (water-eq per mm). returns HU error (N*N, ns)."""
    N2, ns = Mstack.shape
    N = int(round(math.sqrt(N2)))
    nang = 120 if N > 128 or px_art < 0.9 else 96
    A, AT, nb, ramp = _projector(N, nang)
    P = (A @ Mstack) * px_art                      # line integrals, mm water-eq excess
    P = P.reshape(nang, nb, ns)
    bh = 8e-3 * p_acq["metal_bh"]
    err = -bh * P ** 2 / (1.0 + P / 120.0)          # beam hardening (saturating)
    # photon starvation: noise growing exponentially with metal path
    sig = 0.004 * p_acq["metal_starv"] * (np.exp(np.clip(P, 0, 250) / 45.0) - 1.0)
    err = err + sig * rng.standard_normal(P.shape).astype(np.float32)
    F = np.fft.rfft(err, n=2 * nb, axis=1) * ramp[None, :, None]
    filt = np.fft.irfft(F, axis=1)[:, :nb, :].astype(np.float32)
    rec = (AT @ filt.reshape(nang * nb, ns)) * (math.pi / (2 * nang)) / px_art
    return 1000.0 * rec                           # water-eq -> HU


def _texture(shape_seed, n=256):
    rng = np.random.default_rng(shape_seed)
    t = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 1.3, mode="wrap")
    t /= t.std()
    return t


def _interp_track(zq, zs, vals):
    o = np.argsort(zs)
    zs = np.asarray(zs)[o]
    vals = np.asarray(vals)[o]
    return np.stack([np.interp(zq, zs, vals[:, k]) for k in range(vals.shape[1])], -1)


class _Scene:
    def __init__(self, p):
        self.p = p
        self.verts = p["vertebrae"]
        self.vmap = {V["level"]: V for V in self.verts}
        a = p["acq"]
        self.N = a["matrix"]
        self.px = a["pixel_mm"]
        cx, cy = a["fov_center"]
        self.x0 = cx - (self.N - 1) / 2.0 * self.px
        self.y0 = cy - (self.N - 1) / 2.0 * self.px
        self.xs = self.x0 + self.px * np.arange(self.N)
        self.ys = self.y0 + self.px * np.arange(self.N)
        self.zs = a["z_top"] - a["spacing_mm"] * np.arange(a["n_slices"])   # superior -> inferior
        self.bone = p["bone"]
        # vertebra boxes
        self.vbox = []
        for V in self.verts:
            lo, hi = vert_local_bbox(V)
            self.vbox.append(world_aabb(V["center"], V["R"], lo, hi))
        # canal / spine track for soft tissue
        zc, vals = [], []
        for V in self.verts:
            D = vert_derived(V)
            R = np.asarray(V["R"])
            cc = np.asarray(V["center"]) + R @ np.array([0.0, D["vpw"] + V["canal_ap"] / 2.0, D["wp"]])
            bc = np.asarray(V["center"])
            zc.append(cc[2])
            vals.append([cc[0], cc[1], V["canal_w"] / 2.0, V["canal_ap"] / 2.0, bc[0], bc[1], V["body_w"] / 2.0,
                         V["body_d"] / 2.0, V["angles"][2]])
        self.track_z = zc
        self.track_v = vals
        # discs
        self.discs = []
        for k in range(len(self.verts) - 1):
            U, L = self.verts[k], self.verts[k + 1]
            Ru, Rl = np.asarray(U["R"]), np.asarray(L["R"])
            pu = np.asarray(U["center"]) - Ru @ np.array([0, 0, U["body_h"] / 2.0])
            pl = np.asarray(L["center"]) + Rl @ np.array([0, 0, L["body_h"] / 2.0])
            ang = (np.asarray(U["angles"]) + np.asarray(L["angles"])) / 2.0
            R = rot_matrix(*ang)
            h = float(np.linalg.norm(pu - pl))
            self.discs.append(dict(center=(pu + pl) / 2.0, R=R, h=h, a=(U["body_w"] + L["body_w"]) / 4.0 + 1.0,
                                   b=(U["body_d"] + L["body_d"]) / 4.0 + 1.0, upper=U["level"], lower=L["level"],
                                   vpw=(U["body_d"] + L["body_d"]) / 4.0 - 3.0 + 1.5))
        self.screws = p["screws"]
        self.hw = p["hardware"]
        self.tex = _texture(p["artefact_seed"] + 7)
        self._bg = {}
        # metal segments: list of (kind, params, HU, bbox)
        self.metal = []
        for S in self.screws:
            tip = np.asarray(S["tip"])
            d = np.asarray(S["dir"])
            back, head_c = screw_head_geom(S)
            r = S["diameter"] / 2.0
            lo = np.minimum(tip, back) - r - 1
            hi = np.maximum(tip, back) + r + 1
            self.metal.append(("screw", S, HU["ti"], (lo, hi)))
            hd = dict(a=back, d=-d, t0=0.5, t1=14.0, r=5.5)
            e = back - 14.0 * d
            self.metal.append(("cyl", hd, HU["ti"], (np.minimum(back, e) - 6.5, np.maximum(back, e) + 6.5)))
        for rod in self.hw["rods"]:
            pts = np.asarray(rod["points"], float)
            o = np.argsort(-pts[:, 2])
            pts = pts[o]
            ext0 = pts[0] + 6.0 * (pts[0] - pts[1]) / np.linalg.norm(pts[0] - pts[1])
            ext1 = pts[-1] + 6.0 * (pts[-1] - pts[-2]) / np.linalg.norm(pts[-1] - pts[-2])
            chain = [ext0] + list(pts) + [ext1]
            for a_, b_ in zip(chain[:-1], chain[1:]):
                self.metal.append(("caps", dict(a=a_, b=b_, r=rod["radius"]), HU[rod["material"]],
                                   (np.minimum(a_, b_) - 4, np.maximum(a_, b_) + 4)))
        if self.hw["crosslinks"] and len(self.hw["rods"]) == 2:
            cl = self.hw["crosslinks"][0]
            ends = []
            for rod in self.hw["rods"]:
                pts = np.asarray(rod["points"], float)
                pts = pts[np.argsort(-pts[:, 2])]
                zq = pts[0, 2] + cl["frac"] * (pts[-1, 2] - pts[0, 2])
                ends.append(np.array([np.interp(zq, pts[::-1, 2], pts[::-1, 0]), np.interp(zq, pts[::-1, 2], pts[::-1, 1]), zq]) + np.array([0, 4.0, 0]))
            mid = (ends[0] + ends[1]) / 2.0 + np.array([0, 9.0 if cl["arch"] else 1.0, 0])
            for a_, b_ in ((ends[0], mid), (mid, ends[1])):
                self.metal.append(("caps", dict(a=a_, b=b_, r=2.3), HU["ti"], (np.minimum(a_, b_) - 4, np.maximum(a_, b_) + 4)))
            for e in ends:
                self.metal.append(("caps", dict(a=e + np.array([0, 0, -5.0]), b=e + np.array([0, 0, 5.0]), r=4.0), HU["ti"],
                                   (e - 10, e + 10)))
        # cages (PEEK + tantalum markers)
        self.cages = []
        for cg in self.hw["cages"]:
            Dk = next(D for D in self.discs if D["upper"] == cg["upper"] and D["lower"] == cg["lower"])
            R = Dk["R"]
            boxes = []
            if cg["kind"] == "plif":
                for sd in (-1, 1):
                    boxes.append((np.array([sd * 9.0, 0.0, 0.0]), 0.0, np.array([5.0, 12.0, Dk["h"] / 2.0])))
            else:
                boxes.append((np.array([cg["side"] * 3.0, -2.0, 0.0]), cg["side"] * cg["angle"], np.array([5.5, 15.0, Dk["h"] / 2.0])))
            self.cages.append(dict(disc=Dk, boxes=boxes))
            for (off, ang, half) in boxes:
                Rb = R @ rot_matrix(0, 0, ang)
                for m in (-1, 1):
                    pm = Dk["center"] + Rb @ (off + np.array([0, m * (half[1] - 1.5), 0]))
                    a_ = pm + Rb @ np.array([0, 0, -half[2] * 0.8])
                    b_ = pm + Rb @ np.array([0, 0, half[2] * 0.8])
                    self.metal.append(("caps", dict(a=a_, b=b_, r=0.5), HU["tantalum"], (np.minimum(a_, b_) - 2, np.maximum(a_, b_) + 2)))
        # hip prosthesis at the inferior end of the volume
        if self.hw["hip"] is not None:
            sd = self.hw["hip"]["side"]
            zb = self.zs[-1]
            fov = self.N * self.px
            hx = float(np.clip(a["fov_center"][0] + sd * min(100.0, 0.5 * fov - 25.0), -110, 110))
            V0 = self.verts[-1]
            hc = np.array([hx, V0["center"][1] - 25.0, zb + 8.0])
            self.hip = hc
            self.metal.append(("sphere", dict(c=hc, r=14.0), HU["cocr"], (hc - 16, hc + 16)))
            self.metal.append(("shell", dict(c=hc, r0=22.0, r1=26.0, n=np.array([-sd * 0.5, 0.0, 0.87])), HU["ti"], (hc - 28, hc + 28)))
            neck_e = hc + np.array([sd * 35.0, 5.0, -30.0])
            self.metal.append(("caps", dict(a=hc, b=neck_e, r=7.0), HU["steel"], (np.minimum(hc, neck_e) - 8, np.maximum(hc, neck_e) + 8)))
        # spinal cord stimulator lead: dorsal epidural midline at the top of the volume
        if self.hw["scs"] is not None:
            ztop = self.zs[0] + 5.0
            zbot = self.zs[0] - min(70.0, 0.6 * (self.zs[0] - self.zs[-1]))
            zq = np.linspace(ztop, zbot, 12)
            tr = _interp_track(zq, self.track_z, self.track_v)
            pts = np.stack([tr[:, 0] + self.hw["scs"]["offset"], tr[:, 1] + tr[:, 3] * 0.6, zq], 1)
            for a_, b_ in zip(pts[:-1], pts[1:]):
                self.metal.append(("caps", dict(a=a_, b=b_, r=0.65), HU["lead_poly"], (np.minimum(a_, b_) - 2, np.maximum(a_, b_) + 2)))
            # 8 contacts along the lower part
            for k in range(8):
                zc = zbot + 4.0 + k * 5.0
                c0 = np.array([np.interp(zc, zq[::-1], pts[::-1, 0]), np.interp(zc, zq[::-1], pts[::-1, 1]), zc])
                a_, b_ = c0 - [0, 0, 1.5], c0 + [0, 0, 1.5]
                self.metal.append(("caps", dict(a=a_, b=b_, r=0.7), HU["pt"], (c0 - 3, c0 + 3)))
        self.cement = []
        for S in self.screws:
            if S["cement"]:
                tip = np.asarray(S["tip"])
                d = np.asarray(S["dir"])
                c = tip - 9.0 * d
                self.cement.append((S, c, d))

    # --------------------------------------------------------------------------------------
    def _idx(self, lo, hi, axis_vals):
        i0 = int(np.searchsorted(axis_vals, lo, "left"))
        i1 = int(np.searchsorted(axis_vals, hi, "right"))
        return max(i0, 0), min(i1, len(axis_vals))

    def _paint_ell(self, sl, cx, cy, ea, eb, hu, mask_fn=None):
        h = self.px
        x0, x1 = self._idx(cx - ea - 2 * h, cx + ea + 2 * h, self.xs)
        y0, y1 = self._idx(cy - eb - 2 * h, cy + eb + 2 * h, self.ys)
        if x1 <= x0 or y1 <= y0:
            return
        xx = (self.xs[x0:x1] - cx).astype(np.float32)[None, :]
        yy = (self.ys[y0:y1] - cy).astype(np.float32)[:, None]
        o = _occ(_ell2(xx, yy, ea, eb), h)
        sub = sl[y0:y1, x0:x1]
        sl[y0:y1, x0:x1] = sub + (hu - sub) * o

    def _sdf_c2f(self, V, P, band):
        """vertebra sdf evaluated exactly only in a band around the surface (coarse elsewhere)."""
        c = max(1, int(round(1.5 / self.px)))
        if c == 1:
            return vert_sdf(V, P).astype(np.float32)
        nk, ny, nx = P.shape[:3]
        sc = vert_sdf(V, P[:, ::c, ::c]).astype(np.float32)
        up = np.repeat(np.repeat(sc, c, axis=1), c, axis=2)[:, :ny, :nx]
        m = np.abs(up) < band
        if np.any(m):
            up[m] = vert_sdf(V, P[m]).astype(np.float32)
        return up

    def _background(self, z):
        key = int(round(z / 4.0))
        if key in self._bg:
            return self._bg[key]
        zq = key * 4.0
        N, h = self.N, self.px
        tr = _interp_track(np.array([zq]), self.track_z, self.track_v)[0]
        ccx, ccy, cw2, ca2, bx, by, bw2, bd2, az = tr
        body = self.p["body"]
        rot = np.radians(self.p["posture"]["patient_rotation_deg"]) * 0.8
        cr, sr = math.cos(rot), math.sin(rot)
        sl = np.full((N, N), HU["air"], np.float32)
        X = self.xs.astype(np.float32)[None, :]
        Y = self.ys.astype(np.float32)[:, None]
        back = ccy + ca2 + 55.0 + body["back_fat"]
        bcy = back - body["b"]
        bcx = ccx
        xr = (X - bcx) * cr + (Y - bcy) * sr
        yr = -(X - bcx) * sr + (Y - bcy) * cr
        sb = _ell2(xr, yr, body["a"], body["b"])
        ob = _occ(sb, h)
        sl += (HU["fat"] - sl) * ob
        si = _ell2(xr, yr + 8.0, body["a"] - body["fat"], body["b"] - body["fat"] * 0.8 - 8.0)
        oi = _occ(si, h)
        sl += (HU["soft"] - sl) * oi
        # bowel gas
        g_rng = np.random.default_rng(self.p["artefact_seed"])
        for gi in range(body["gas"]):
            gx = bcx + g_rng.uniform(-0.6, 0.6) * body["a"]
            gy = bcy - g_rng.uniform(0.2, 0.7) * body["b"]
            gz = self.zs[-1] + g_rng.uniform(0, 1) * (self.zs[0] - self.zs[-1])
            gr = g_rng.uniform(6, 16)
            dz = abs(zq - gz)
            if dz < gr:
                rr = math.sqrt(gr * gr - dz * dz)
                self._paint_ell(sl, gx, gy, rr, rr * 0.8, -950.0)
        for sd in (-1, 1):
            self._paint_ell(sl, ccx + sd * 30.0 * cr, ccy + 38.0 + sd * 30.0 * sr, 26.0, 30.0, HU["muscle"])
            if bd2 > 14.5:
                self._paint_ell(sl, bx + sd * (bw2 + 14.0), by + 2.0, 16.0, 18.0, HU["muscle"] - 5)
        self._paint_ell(sl, bx, by + 25.0, bw2 + 12.0, bd2 + 45.0, 45.0)
        self._paint_ell(sl, bx + 14.0, by - bd2 - 13.0, 10.5, 10.5, HU["blood"])
        self._paint_ell(sl, bx - 22.0, by - bd2 - 10.0, 12.0, 8.0, HU["blood"])
        # table (patient supine; posterior = +y)
        ty = back + 4.0 + 0.0008 * (X - bcx) ** 2
        dy = Y - ty
        inx = np.abs(X - bcx) < 220
        sl[(dy > 0) & (dy < 3.0) & inx] = 200.0
        sl[(dy >= 3.0) & (dy < 40.0) & inx] = -900.0
        sl[(dy >= 40.0) & (dy < 43.0) & inx] = 200.0
        if len(self._bg) > 64:
            self._bg.clear()
        self._bg[key] = sl
        return sl

    def render_planes(self, zp):
        """true HU (no blur/noise) and metal excess map for planes at world z values zp."""
        nz = len(zp)
        N = self.N
        h = self.px
        img = np.empty((nz, N, N), np.float32)
        metal = np.zeros((nz, N, N), np.float32)
        tr = _interp_track(zp, self.track_z, self.track_v)     # (nz, 9)
        for k in range(nz):
            ccx, ccy, cw2, ca2 = tr[k][:4]
            img[k] = self._background(zp[k])
            sl = img[k]
            # canal contents: epidural fat and dural sac
            self._paint_ell(sl, ccx, ccy, cw2 + 0.5, ca2 + 1.0, HU["epifat"])
            self._paint_ell(sl, ccx, ccy + 0.3, max(min(cw2 - 2.5, 8.5), 3.0), max(min(ca2 - 1.5, 7.5), 2.5), HU["csf"])
        Z = np.asarray(zp, float)[:, None, None]
        # discs
        for Dk in self.discs:
            zlo, zhi = Dk["center"][2] - 40, Dk["center"][2] + 40
            ks = np.nonzero((Z[:, 0, 0] > zlo) & (Z[:, 0, 0] < zhi))[0]
            if len(ks) == 0:
                continue
            x0, x1 = self._idx(Dk["center"][0] - 40, Dk["center"][0] + 40, self.xs)
            y0, y1 = self._idx(Dk["center"][1] - 40, Dk["center"][1] + 40, self.ys)
            if x1 <= x0 or y1 <= y0:
                continue
            P = np.stack(np.broadcast_arrays(self.xs[None, None, x0:x1], self.ys[None, y0:y1, None], Z[ks]), -1)
            Q = (P - Dk["center"]) @ Dk["R"]
            sxy = np.maximum(_ell2(Q[..., 0], Q[..., 1], Dk["a"], Dk["b"]), Q[..., 1] - Dk["vpw"])
            sd_ = np.maximum(sxy, np.abs(Q[..., 2]) - Dk["h"] / 2.0 - 1.0)
            od = _occ(sd_, h)
            nuc = _occ(np.maximum(_ell2(Q[..., 0], Q[..., 1], Dk["a"] * 0.55, Dk["b"] * 0.5), np.abs(Q[..., 2]) - Dk["h"] / 2.0), h)
            val = HU["annulus"] * (1 - nuc) + HU["nucleus"] * nuc
            sub = img[ks, y0:y1, x0:x1]
            img[ks, y0:y1, x0:x1] = sub * (1 - od) + val * od
        # cages (PEEK), painted over the disc
        for cg in self.cages:
            Dk = cg["disc"]
            ks = np.nonzero(np.abs(Z[:, 0, 0] - Dk["center"][2]) < 30)[0]
            if len(ks) == 0:
                continue
            x0, x1 = self._idx(Dk["center"][0] - 35, Dk["center"][0] + 35, self.xs)
            y0, y1 = self._idx(Dk["center"][1] - 35, Dk["center"][1] + 35, self.ys)
            if x1 <= x0 or y1 <= y0:
                continue
            P = np.stack(np.broadcast_arrays(self.xs[None, None, x0:x1], self.ys[None, y0:y1, None], Z[ks]), -1)
            for (off, ang, half) in cg["boxes"]:
                Rb = Dk["R"] @ rot_matrix(0, 0, ang)
                Q = (P - (Dk["center"] + Dk["R"] @ off)) @ Rb
                sb_ = np.max(np.abs(Q) - half, axis=-1)
                oc = _occ(sb_, h)
                sub = img[ks, y0:y1, x0:x1]
                img[ks, y0:y1, x0:x1] = sub * (1 - oc) + HU["peek"] * oc
        # vertebrae
        ctx = self.bone["cortex_hu"]
        can = self.bone["canc_hu"]
        for V, (lo, hi) in zip(self.verts, self.vbox):
            ks = np.nonzero((Z[:, 0, 0] >= lo[2]) & (Z[:, 0, 0] <= hi[2]))[0]
            if len(ks) == 0:
                continue
            x0, x1 = self._idx(lo[0], hi[0], self.xs)
            y0, y1 = self._idx(lo[1], hi[1], self.ys)
            if x1 <= x0 or y1 <= y0:
                continue
            P = np.stack(np.broadcast_arrays(self.xs[None, None, x0:x1].astype(np.float32),
                                             self.ys[None, y0:y1, None].astype(np.float32),
                                             Z[ks].astype(np.float32)), -1)
            s = self._sdf_c2f(V, P, V["cortex_t"] + h + 4.0)
            oo = _occ(s, h)
            oi = _occ(s + V["cortex_t"], h)
            # trabecular texture
            zq = np.floor(P[..., 2] / 1.5).astype(np.int64)
            ti = (np.floor(P[..., 0] / 0.5).astype(np.int64) + 31 * zq) % 256
            tj = (np.floor(P[..., 1] / 0.5).astype(np.int64) + 17 * zq) % 256
            tx = self.tex[ti, tj]
            canv = can + 45.0 * tx
            val = oi * canv + (oo - oi) * ctx
            sub = img[ks, y0:y1, x0:x1]
            img[ks, y0:y1, x0:x1] = sub * (1 - oo) + val
        # cement (inside the vertebral body around the distal screw)
        for (S, c, d) in self.cement:
            V = self.vmap[S["level"]]
            ks = np.nonzero(np.abs(Z[:, 0, 0] - c[2]) < 14)[0]
            if len(ks) == 0:
                continue
            x0, x1 = self._idx(c[0] - 14, c[0] + 14, self.xs)
            y0, y1 = self._idx(c[1] - 14, c[1] + 14, self.ys)
            if x1 <= x0 or y1 <= y0:
                continue
            P = np.stack(np.broadcast_arrays(self.xs[None, None, x0:x1], self.ys[None, y0:y1, None], Z[ks]), -1)
            rel = P - c
            t = rel @ d
            rad = rel - t[..., None] * d
            rho = np.sqrt(np.einsum("...i,...i->...", rad, rad))
            sc = (np.sqrt((t / 11.0) ** 2 + (rho / 7.0) ** 2) - 1) * 7.0
            _, sbody = vert_sdf(V, P, with_body=True)
            sc = np.maximum(sc, sbody + 1.5)
            oc = _occ(sc, h)
            sub = img[ks, y0:y1, x0:x1]
            img[ks, y0:y1, x0:x1] = sub * (1 - oc) + HU["pmma"] * oc
            metal[ks, y0:y1, x0:x1] += oc * (HU["pmma"] / 1000.0)
        # metal
        for kind, g, hu, (lo, hi) in self.metal:
            ks = np.nonzero((Z[:, 0, 0] >= lo[2]) & (Z[:, 0, 0] <= hi[2]))[0]
            if len(ks) == 0:
                continue
            x0, x1 = self._idx(lo[0], hi[0], self.xs)
            y0, y1 = self._idx(lo[1], hi[1], self.ys)
            if x1 <= x0 or y1 <= y0:
                continue
            P = np.stack(np.broadcast_arrays(self.xs[None, None, x0:x1], self.ys[None, y0:y1, None], Z[ks]), -1)
            if kind == "screw":
                s = screw_sdf(g, P, threads=h < 0.8)
            elif kind == "cyl":
                s = _cyl(P, g["a"], g["d"], g["t0"], g["t1"], g["r"])
            elif kind == "caps":
                s = _capsule(P, g["a"], g["b"], g["r"])
            elif kind == "sphere":
                s = np.sqrt(np.einsum("...i,...i->...", P - g["c"], P - g["c"])) - g["r"]
            elif kind == "shell":
                rr = np.sqrt(np.einsum("...i,...i->...", P - g["c"], P - g["c"]))
                s = np.maximum(np.maximum(g["r0"] - rr, rr - g["r1"]), -((P - g["c"]) @ g["n"]))
            else:
                continue
            om = _occ(s, h)
            sub = img[ks, y0:y1, x0:x1]
            img[ks, y0:y1, x0:x1] = sub * (1 - om) + hu * om
            msub = metal[ks, y0:y1, x0:x1]
            metal[ks, y0:y1, x0:x1] = msub * (1 - om) + om * (hu / 1000.0)
        return img, metal


_UP_CACHE = {}


def _upsampler(Na, fac):
    key = (Na, fac)
    if key not in _UP_CACHE:
        N = Na * fac
        src = (np.arange(N) + 0.5) / fac - 0.5
        i0 = np.clip(np.floor(src).astype(int), 0, Na - 1)
        i1 = np.clip(i0 + 1, 0, Na - 1)
        f = np.clip(src - np.floor(src), 0, 1)
        U = np.zeros((N, Na), np.float32)
        U[np.arange(N), i0] += (1 - f)
        U[np.arange(N), i1] += f
        _UP_CACHE[key] = U
    return _UP_CACHE[key]


def render_volume(p, chunk=24, callback=None):
    """renders the study; yields (k0, hu_slices[k0:k0+n]) chunks of final (noisy, artefacted) HU."""
    sc = _Scene(p)
    a = p["acq"]
    N = sc.N
    thk = a["thickness_mm"]
    nsub = max(1, int(math.ceil(thk / 1.0 - 1e-6)))
    offs = (np.arange(nsub) + 0.5) / nsub * thk - thk / 2.0
    rng = np.random.default_rng(p["artefact_seed"])
    Na = min(128, N)
    fac = N // Na
    px_art = sc.px * fac
    psf_px = a["psf_mm"] / sc.px
    nsl = len(sc.zs)
    for k0 in range(0, nsl, chunk):
        zc = sc.zs[k0:k0 + chunk]
        zp = (zc[:, None] + offs[None, :]).ravel()
        img, metal = sc.render_planes(zp)
        n = len(zc)
        img = img.reshape(n, nsub, N, N).mean(1)
        metal = metal.reshape(n, nsub, N, N).mean(1)
        if psf_px > 0.15:
            img = ndimage.gaussian_filter(img, (0, psf_px, psf_px), mode="nearest")
        # metal artefacts (only slices containing metal)
        has = metal.reshape(n, -1).max(1) > 0.05
        if np.any(has):
            ms = metal[has]
            if fac > 1:
                ms = ms.reshape(ms.shape[0], Na, fac, Na, fac).mean((2, 4))
            err = _metal_artefacts(ms.reshape(ms.shape[0], -1).T.astype(np.float32), px_art, a, rng)
            err = err.T.reshape(-1, Na, Na)
            if fac > 1:
                U = _upsampler(Na, fac)
                err = np.matmul(np.matmul(U, err.astype(np.float32)), U.T)
            # keep the metal itself intact-ish: artefact applies mostly outside metal
            img[has] += err * (1.0 - np.clip(metal[has] / 3.0, 0, 1))
        # quantum noise (correlated), stronger for thin slices and near metal
        sig = a["noise_hu"] * math.sqrt(1.0 / max(thk, 0.5))
        nz = rng.standard_normal(img.shape, dtype=np.float32)
        nz[:, 1:-1, :] = 0.25 * nz[:, :-2, :] + 0.5 * nz[:, 1:-1, :] + 0.25 * nz[:, 2:, :]
        nz[:, :, 1:-1] = 0.25 * nz[:, :, :-2] + 0.5 * nz[:, :, 1:-1] + 0.25 * nz[:, :, 2:]
        nz *= sig / 0.375
        img += nz
        yield k0, img


def _hu_to_stored(hu, acq):
    hu = np.maximum(hu, -1024.0)
    if acq["sat12"]:
        st = np.clip(np.rint(hu + 1024.0), 0, 4095)
        return st.astype(np.int16), 1.0, -1024.0
    if acq["ext_scale"] == "x10":
        st = np.clip(np.rint((hu + 10240.0) / 10.0), -32768, 32767)
        return st.astype(np.int16), 10.0, -10240.0
    st = np.clip(np.rint(hu + 1024.0), -32768, 32767)
    return st.astype(np.int16), 1.0, -1024.0


def _uid(p, *parts):
    from pydicom.uid import generate_uid
    return generate_uid(prefix="1.2.826.0.1.3680043.8.498.", entropy_srcs=[VERSION, p["study_id"], str(p["seed"]), str(p["index"])] + [str(x) for x in parts])


def write_study(params, directory) -> dict:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    p = params
    os.makedirs(directory, exist_ok=True)
    a = p["acq"]
    # the truth measurement runs in forked workers while the main process renders (2 cores)
    pool = None
    try:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(2 if a["matrix"] <= 256 else 1)
        job = pool.map_async(_measure_index, [(p, i) for i in range(len(p["screws"]))], chunksize=1)
    except Exception:
        pool = None
    a = p["acq"]
    N = a["matrix"]
    sc_x0 = a["fov_center"][0] - (N - 1) / 2.0 * a["pixel_mm"]
    sc_y0 = a["fov_center"][1] - (N - 1) / 2.0 * a["pixel_mm"]
    study_uid, series_uid, for_uid = _uid(p, "study"), _uid(p, "series"), _uid(p, "for")
    zs = a["z_top"] - a["spacing_mm"] * np.arange(a["n_slices"])
    h = int(hashlib.md5(p["study_id"].encode()).hexdigest()[:6], 16)
    pid = f"SYN4{h:07d}"
    for k0, hu in render_volume(p):
        for j in range(hu.shape[0]):
            k = k0 + j
            st, slope, inter = _hu_to_stored(hu[j], a)
            sop = _uid(p, "sop", k)
            fm = FileMetaDataset()
            fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            fm.MediaStorageSOPInstanceUID = sop
            fm.TransferSyntaxUID = ExplicitVRLittleEndian
            fm.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
            ds = Dataset()
            ds.file_meta = fm
            ds.SOPClassUID = fm.MediaStorageSOPClassUID
            ds.SOPInstanceUID = sop
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = for_uid
            ds.Modality = "CT"
            ds.Manufacturer = "SYNTHETIC"
            ds.ManufacturerModelName = "spine_phantom4"
            ds.PatientID = pid
            ds.PatientName = f"PHANTOM^FOUR^{p['index']}"
            ds.PatientSex = "O"
            ds.PatientBirthDate = ""
            ds.StudyDate = "20261126"
            ds.SeriesDate = "20261126"
            ds.StudyTime = "120000"
            ds.AccessionNumber = f"A4{h:08d}"[:16]
            ds.StudyID = str(p["index"])
            ds.StudyDescription = "CT LUMBAR SPINE POST OP" if any(l.startswith("L") or l == "S1" for l in p["instrumented_levels"]) else "CT THORACOLUMBAR SPINE POST OP"
            ds.SeriesDescription = f"AX BONE {a['thickness_mm']}mm"
            ds.BodyPartExamined = "LSPINE" if ds.StudyDescription.startswith("CT LUMBAR") else "TLSPINE"
            ds.SeriesNumber = 2
            ds.InstanceNumber = k + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.KVP = a["kvp"]
            ds.ConvolutionKernel = "BONE"
            ds.PatientPosition = "FFS"
            ds.SliceThickness = a["thickness_mm"]
            ds.SpacingBetweenSlices = a["spacing_mm"]
            ds.ImagePositionPatient = [round(sc_x0, 4), round(sc_y0, 4), round(float(zs[k]), 4)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.SliceLocation = round(float(zs[k]), 4)
            ds.PixelSpacing = [a["pixel_mm"], a["pixel_mm"]]
            ds.Rows = N
            ds.Columns = N
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16   # 12-bit studies: values clipped to 0..4095 (HU -1024..3071)
            ds.HighBit = ds.BitsStored - 1
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = inter
            ds.RescaleSlope = slope
            ds.RescaleType = "HU"
            ds.WindowCenter = 500
            ds.WindowWidth = 2500
            ds.PixelData = st.tobytes()
            ds.save_as(os.path.join(directory, f"IM{k + 1:04d}.dcm"), enforce_file_format=True)
    if pool is not None:
        try:
            truth = compute_truth(p, _measurements=job.get())
        finally:
            pool.close()
            pool.join()
    else:
        truth = compute_truth(p)
    with open(os.path.join(directory, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    return truth


if __name__ == "__main__":
    import sys
    import time
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 20261201
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    out = sys.argv[3] if len(sys.argv) > 3 else "/tmp/p4"
    for i, prm in enumerate(family(seed, n)):
        t = time.time()
        tr = write_study(prm, os.path.join(out, f"study{i:03d}"))
        print(i, prm["acq"]["n_slices"], round(time.time() - t, 1), [(s["id"], s["grade"], s["breach_direction"], s["breach_depth_mm"]) for s in tr["screws"]])

"""Family 7 synthetic post-operative spine CT phantom (written blind, session 26).

family(seed, n, small) -> list of JSON-serialisable parameter dicts
write_study(params, directory) -> truth dict (writes IM0001.dcm ... and truth.json)

All geometry is analytic (signed-distance primitives in per-vertebra local frames);
the breach truth is computed from that geometry, never from the rendered image.
Local vertebra frame: origin = centre of the posterior wall of the vertebral body at
mid-height; u = patient left, v = posterior, w = superior (before the vertebra rotation).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time

import numpy as np
from scipy import ndimage

LEVELS = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
# level: body width, body AP depth, body height, disc below (posterior height), pedicle W, pedicle H,
#        pedicle convergence (deg), interpedicular distance, canal AP, sagittal tilt (deg, + = lordotic)
ANAT = {
    "T10": (34, 27, 21.0, 5.0, 6.5, 15.5, 5, 17.0, 15.0, -7),
    "T11": (36, 28, 22.0, 5.5, 7.5, 16.5, 3, 18.0, 15.5, -6),
    "T12": (39, 29, 23.0, 6.5, 8.0, 16.0, 5, 20.0, 16.0, -5),
    "L1": (42, 30, 24.5, 7.5, 7.5, 15.0, 9, 22.0, 17.0, -3),
    "L2": (44, 31, 25.0, 8.0, 8.0, 15.0, 11, 23.0, 16.5, 0),
    "L3": (46, 32, 25.5, 8.5, 9.5, 14.5, 13, 24.0, 16.0, 4),
    "L4": (48, 33, 25.5, 8.5, 10.5, 13.5, 16, 25.0, 16.0, 9),
    "L5": (50, 33, 25.0, 8.0, 11.5, 12.5, 21, 27.0, 16.5, 16),
    "S1": (50, 34, 27.0, 0.0, 11.5, 13.5, 24, 28.0, 14.0, 30),
}
SECTORS = ("medial", "lateral", "inferior", "superior")
HU_TI, HU_COCR, HU_SS, HU_TA, HU_PTIR = 8000.0, 22000.0, 17000.0, 30000.0, 26000.0


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _f(x):
    return float(round(float(x), 4))


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float)


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], float)


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)


def _ell2(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse (semi-axes a, b)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _box(x, y, z, hx, hy, hz, r=0.0):
    qx = np.abs(x) - (hx - r)
    qy = np.abs(y) - (hy - r)
    qz = np.abs(z) - (hz - r)
    out = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    return out + np.minimum(np.maximum(np.maximum(qx, qy), qz), 0) - r


def _rrect(m, s, a, b, rc):
    """Rounded rectangle (half sizes a, b; corner radius rc) signed distance in 2D."""
    qx = np.abs(m) - (a - rc)
    qy = np.abs(s) - (b - rc)
    return np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - rc


def _seg_dist(px, py, pz, a, b):
    """Distance from points to segment a-b (3-vectors)."""
    ab = b - a
    L2 = float(ab @ ab) + 1e-12
    h = ((px - a[0]) * ab[0] + (py - a[1]) * ab[1] + (pz - a[2]) * ab[2]) / L2
    h = np.clip(h, 0.0, 1.0)
    dx = px - a[0] - ab[0] * h
    dy = py - a[1] - ab[1] * h
    dz = pz - a[2] - ab[2] * h
    return np.sqrt(dx * dx + dy * dy + dz * dz)


def _perp_basis(d):
    d = d / np.linalg.norm(d)
    ref = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return e1, e2


def _uid(root: int, *parts) -> str:
    h = hashlib.sha256(("%d|" % root + "|".join(str(p) for p in parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:15], "big"))


# ----------------------------------------------------------------------------------------------
# parameter family
# ----------------------------------------------------------------------------------------------
def family(seed: int, n: int, small: bool = False) -> list[dict]:
    return [_draw(np.random.default_rng([int(seed), i, 7, int(small)]), int(seed), i, bool(small)) for i in range(n)]


def _draw(rng, seed, i, small):
    U = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    p = {"family": 7, "seed": seed, "index": i, "small": small}
    p["uid_root"] = int.from_bytes(hashlib.sha256(f"p7|{seed}|{i}|{int(small)}".encode()).digest()[:12], "big")
    p["noise_seed"] = int(rng.integers(0, 2**31 - 1))
    # ---------------- construct ----------------
    no_metal = (not small) and rng.random() < 0.08
    if small:
        nlev = 1
    else:
        nlev = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.22, 0.18]))
    start_w = np.array([4, 4, 5, 6, 7, 9, 12, 14, 12], float)[: len(LEVELS) - nlev + 1]
    start = int(rng.choice(len(start_w), p=start_w / start_w.sum()))
    inst = LEVELS[start:start + nlev]
    lo = max(0, start - 1)
    hi = min(len(LEVELS), start + nlev + 1)
    if small:
        lo, hi = max(0, start - 1), min(len(LEVELS), start + 2)
    rendered = LEVELS[lo:hi]
    p["levels"] = rendered
    p["instrumented"] = [] if no_metal else inst
    bilateral = rng.random() > (0.0 if no_metal else 0.12)
    p["unilateral_side"] = None if bilateral else str(rng.choice(["left", "right"]))
    p["rod"] = bool((not no_metal) and rng.random() < 0.88)
    p["rod_material"] = str(rng.choice(["Ti", "CoCr"], p=[0.65, 0.35]))
    p["rod_diameter"] = float(rng.choice([5.5, 6.0]))
    p["screw_material"] = str(rng.choice(["Ti", "SS"], p=[0.85, 0.15]))
    p["crosslink"] = bool(p["rod"] and bilateral and nlev >= 2 and rng.random() < 0.3)
    # ---------------- anatomy ----------------
    osteo = rng.random() < 0.22
    degen = rng.random() < 0.45
    p["osteoporotic"] = bool(osteo)
    p["degenerative"] = bool(degen)
    verts = []
    for L in rendered:
        bw, bd, bh, disc, pw, ph, conv, ipd, ap, sag = ANAT[L]
        sc = U(0.9, 1.1)
        v = {"level": L,
             "bw": _f(bw * sc), "bd": _f(bd * U(0.92, 1.08)), "bh": _f(bh * U(0.92, 1.08)),
             "disc_below": _f(disc * U(0.7, 1.25) * (0.75 if degen else 1.0)),
             "pw": _f(np.clip(pw * U(0.75, 1.2), 5.0, 12.0)), "ph": _f(np.clip(ph * U(0.85, 1.15), 10.0, 18.0)),
             "conv": _f(np.clip(conv + U(-4, 4), 0.0, 25.0)), "ipd": _f(ipd * U(0.9, 1.12)),
             "ap": _f(np.clip(ap * U(0.72, 1.3), 10.0, 22.0)), "sag": _f(sag + U(-5, 5)),
             "canal": str(rng.choice(["round", "trefoil"], p=[0.75, 0.25] if L[0] == "T" or L in ("L1", "L2") else [0.35, 0.65])),
             "lam_t": _f(U(4.5, 7.5)), "sp_len": _f(U(20, 32)), "tp_len": _f(U(12, 24) if L[0] == "L" else U(10, 16)),
             "tc_body": _f(U(0.35, 0.6) if osteo else U(0.6, 1.2)), "tc_ped": _f(U(0.7, 1.2) if osteo else U(1.0, 2.2)),
             "tc_post": _f(U(0.6, 1.0) if osteo else U(1.0, 2.0)),
             "canc_hu": _f(U(45, 115) if osteo else U(150, 270)), "cort_hu": _f(U(550, 900) if osteo else U(900, 1500)),
             "osteophyte": _f(U(1.5, 5.0) if (degen and rng.random() < 0.6) else 0.0),
             "facet_hyp": _f(U(1.0, 3.5) if (degen and rng.random() < 0.6) else 0.0),
             "lf_t": _f(U(4.0, 7.0) if degen else U(2.0, 3.5)),
             "disc_bulge": _f(U(1.0, 4.0) if degen else U(0.0, 1.2)),
             "vacuum": bool(degen and rng.random() < 0.35),
             "laminectomy": False}
        v["lc"] = _f(min(v["ap"] * U(0.5, 0.65), U(8.0, 11.0)))
        verts.append(v)
    # laminectomies: some instrumented levels, occasionally a non-instrumented one
    for v in verts:
        if v["level"] == "S1":
            continue
        if v["level"] in p["instrumented"] and rng.random() < 0.28:
            v["laminectomy"] = True
        elif no_metal and rng.random() < 0.3:
            v["laminectomy"] = True
    p["vertebrae"] = verts
    # alignment
    p["patient_roll"] = _f(U(-4, 4) if rng.random() < 0.7 else U(-15, 15))
    p["patient_yaw"] = _f(U(-2, 2) if rng.random() < 0.8 else U(-6, 6))
    p["scoliosis"] = _f(0.0 if rng.random() < 0.6 else U(-15, 15))
    p["scoliosis_phase"] = _f(U(0, 2 * math.pi))
    p["lordosis_scale"] = _f(U(0.6, 1.1))
    # ---------------- screws ----------------
    screws = []
    for L in p["instrumented"]:
        vv = next(v for v in verts if v["level"] == L)
        sides = ["left", "right"] if bilateral else [p["unilateral_side"]]
        for side in sides:
            r = rng.random()
            if r < 0.30:
                tgt = "none"
            elif r < 0.68:
                tgt = "medial"
            elif r < 0.82:
                tgt = "lateral"
            elif r < 0.94:
                tgt = "inferior"
            else:
                tgt = "superior"
            if L == "S1" and tgt == "lateral":
                tgt = "medial"
            if tgt == "none":
                depth = 0.0
            elif rng.random() < 0.45:
                depth = float(rng.choice([2.0, 4.0, 6.0])) + U(-0.45, 0.45)
            elif tgt == "medial" and rng.random() < 0.6:
                depth = U(4.0, 10.0)
            else:
                depth = U(0.3, 10.0 if tgt in ("medial", "lateral") else 7.0)
            if L[0] == "T":
                dia = float(rng.choice([4.5, 5.0, 5.5, 6.0]))
            elif L == "S1":
                dia = float(rng.choice([6.5, 7.0, 7.5]))
            else:
                dia = float(rng.choice([5.5, 6.0, 6.5, 7.0, 7.5]))
            if tgt == "none":
                dia = min(dia, max(4.5, math.floor((vv["pw"] - 0.8) * 2) / 2))
            screws.append({"level": L, "side": side, "diameter": dia, "target": tgt, "target_depth": _f(depth),
                           "conv_err": _f(U(-6, 6) if tgt != "none" else U(-2, 2)),
                           "tilt": _f(np.clip(rng.normal(0, 6), -15, 15) if tgt not in ("inferior", "superior") else U(-15, 15)),
                           "cross_off": _f(U(-0.3, 0.3)), "tip_frac": _f(U(0.6, 0.85)), "back": _f(U(9.0, 14.0)),
                           "cement": bool(osteo and rng.random() < 0.5 or rng.random() < 0.05),
                           "pitch": _f(U(2.2, 3.0)), "core_frac": _f(U(0.68, 0.78))})
    p["screws"] = screws
    # cages
    cages = []
    for a, b in zip(p["instrumented"][:-1], p["instrumented"][1:]):
        if rng.random() < 0.45:
            cages.append({"lower": b, "upper": a, "type": str(rng.choice(["TLIF", "PLIF", "Ti"], p=[0.5, 0.25, 0.25])),
                          "side": str(rng.choice(["left", "right"])), "angle": _f(U(20, 40))})
    p["cages"] = cages
    # extras
    p["scs_lead"] = bool((not small) and rng.random() < 0.12)
    p["hip"] = bool((not small) and rendered[-1] in ("L5", "S1") and rng.random() < 0.2)
    p["hip_side"] = str(rng.choice(["left", "right"]))
    p["fragment"] = bool(rng.random() < 0.12)
    p["fragment_pos"] = [_f(U(-45, 45)), _f(U(25, 60)), _f(U(-0.4, 0.4))]
    p["gas_pockets"] = [[_f(U(-110, 110)), _f(U(-150, -60)), _f(U(0, 1)), _f(U(6, 22))] for _ in range(int(rng.integers(2, 8)))]
    # body habitus
    p["torso_a"] = _f(U(140, 195))
    p["torso_b"] = _f(U(95, 135))
    p["post_d"] = _f(U(55, 95))
    p["fat_t"] = _f(U(8, 40))
    p["torso_dx"] = _f(U(-10, 10))
    # ---------------- scanner ----------------
    if small:
        p["matrix"] = 160
        p["pixel_mm"] = _f(U(0.7, 0.9))
        p["slice_thickness"] = float(rng.choice([1.0, 1.25, 1.5, 2.0]))
    else:
        p["matrix"] = 512
        p["pixel_mm"] = _f(U(0.3, 0.9) if not p["hip"] else U(0.62, 0.9))
        p["slice_thickness"] = float(rng.choice([0.6, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0],
                                                p=[0.12, 0.1, 0.12, 0.22, 0.14, 0.12, 0.1, 0.08]))
    p["spacing"] = _f(p["slice_thickness"] * (1.0 if (small or rng.random() < 0.65) else float(rng.choice([0.5, 0.8]))))
    est_range = 35.0 * nlev + 50.0 + (60.0 if p["hip"] else 0.0)
    if est_range / p["spacing"] > 330:   # keep full studies within the render budget
        p["spacing"] = float(p["slice_thickness"])
    p["kernel"] = str(rng.choice(["bone", "soft"], p=[0.75, 0.25]))
    p["kernel_name"] = str(rng.choice(["BONE", "B70s", "Br64", "YC"] if p["kernel"] == "bone" else ["STANDARD", "B30f", "Br40", "FC08"]))
    p["noise_hu"] = _f(U(25, 70) if p["kernel"] == "bone" else U(8, 22))
    p["streak_strength"] = _f(U(0.4, 1.3))
    p["bloom_mm"] = _f(U(0.45, 1.0))
    p["fov_dx"] = _f(U(-4, 4) if small else (U(-10, 10) if rng.random() < 0.65 else U(-40, 40)))
    p["fov_dy"] = _f(U(-4, 4) if small else (U(-10, 10) if rng.random() < 0.65 else U(-35, 35)))
    p["partial_construct"] = bool((not small) and nlev >= 2 and rng.random() < 0.15)
    p["pixel_format"] = str(rng.choice(["u12", "s12", "uext", "sext", "uext2"], p=[0.3, 0.15, 0.25, 0.22, 0.08]))
    p["transfer_syntax"] = str(rng.choice(["explicit", "rle", "implicit"], p=[0.6, 0.2, 0.2]))
    p["position"] = str(rng.choice(["HFS", "FFS", "HFP"], p=[0.8, 0.13, 0.07]))
    p["descending"] = bool(rng.random() < 0.6)
    p["table"] = bool(rng.random() < 0.7)
    p["body_part"] = "LSPINE" if any(L[0] in "LS" for L in rendered) else "TSPINE"
    if rng.random() < 0.3:
        p["body_part"] = "SPINE"
    p["study_date"] = "2026%02d%02d" % (int(rng.integers(1, 12)), int(rng.integers(1, 28)))
    return p


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
class Vert:
    def __init__(self, d):
        self.d = d
        for k, v in d.items():
            setattr(self, k, v)
        self.A = self.bw / 2.0
        self.B = self.bd / 1.8
        self.vc = -0.8 * self.B
        self.a = self.pw / 2.0
        self.b = self.ph / 2.0
        self.rc = 0.85 * min(self.a, self.b)
        self.th = math.radians(self.conv)
        self.w_p = self.bh / 2.0 - self.b - 1.5
        self.hw = self.ipd / 2.0 + self.lc * math.tan(self.th)
        self.R = np.eye(3)
        self.c = np.zeros(3)

    # pedicle frame (local)
    def ped(self, side):
        s = 1.0 if side == "left" else -1.0
        P0 = np.array([s * (self.ipd / 2.0 + self.a / math.cos(self.th)), 0.0, self.w_p])
        adir = np.array([s * math.sin(self.th), math.cos(self.th), 0.0])
        nlat = np.array([s * math.cos(self.th), -math.sin(self.th), 0.0])
        return P0, adir, nlat

    def to_world(self, pl):
        return self.R @ np.asarray(pl, float) + self.c

    def to_local(self, pw):
        return self.R.T @ (np.asarray(pw, float) - self.c)


def build_geometry(p):
    verts = [Vert(d) for d in p["vertebrae"]]
    n = len(verts)
    ls = p["lordosis_scale"]
    Rg = _rz(math.radians(p["patient_roll"])) @ _rx(math.radians(p["patient_yaw"]))
    # stack from the lowest vertebra upward
    Rs = []
    for j, v in enumerate(verts):
        ph = p["scoliosis_phase"] + 0.9 * j
        cor = math.radians(p["scoliosis"] * math.sin(ph))
        axr = math.radians(0.6 * p["scoliosis"] * math.cos(ph))
        sag = math.radians(v.sag * ls if v.level != "S1" else v.sag * (0.7 + 0.3 * ls))
        Rs.append(_rz(axr) @ _ry(cor) @ _rx(sag))
    pos = [None] * n
    pos[n - 1] = np.zeros(3)
    for j in range(n - 2, -1, -1):
        lower, upper = verts[j + 1], verts[j]
        Rm = Rs[j + 1] + Rs[j]
        uu, _, vt = np.linalg.svd(Rm)
        Rm = uu @ vt
        pos[j] = pos[j + 1] + Rs[j + 1] @ np.array([0, 0, lower.bh / 2]) + Rm @ np.array([0, 0, upper.disc_below]) \
            + Rs[j] @ np.array([0, 0, upper.bh / 2])
    centre = 0.5 * (pos[0] + pos[-1])
    for j, v in enumerate(verts):
        v.R = Rg @ Rs[j]
        v.c = Rg @ (pos[j] - centre)
    return verts, Rg


# ---------------- breach truth (analytic) ----------------
def _envelope_points(E, T, r, taper, dt, dpsi, v_bounds=None, vert=None):
    d = T - E
    L = float(np.linalg.norm(d))
    d = d / L
    e1, e2 = _perp_basis(d)
    psi = np.arange(0, 2 * math.pi, dpsi)
    cp, sp = np.cos(psi), np.sin(psi)
    t = np.arange(0.0, L + 1e-9, dt)
    if t[-1] < L:
        t = np.append(t, L)
    rr = np.where(t > L - taper, r * (0.35 + 0.65 * (L - t) / taper), r)
    pts = E[None, None, :] + t[:, None, None] * d[None, None, :] + rr[:, None, None] * (
        cp[None, :, None] * e1[None, None, :] + sp[None, :, None] * e2[None, None, :])
    pts = pts.reshape(-1, 3)
    extra = []
    if v_bounds is not None:
        # exact boundary curves where the envelope cylinder crosses the planes v = const (local frame)
        psi2 = np.arange(0, 2 * math.pi, dpsi / 4)
        off = r * (np.cos(psi2)[:, None] * e1[None, :] + np.sin(psi2)[:, None] * e2[None, :])
        for vb in v_bounds:
            if abs(d[1]) < 1e-9:
                continue
            tt = (vb - E[1] - off[:, 1]) / d[1]
            ok = (tt >= 0) & (tt <= L - taper)
            extra.append(E[None, :] + tt[ok, None] * d[None, :] + off[ok])
    if extra:
        pts = np.concatenate([pts] + extra, axis=0)
    return pts


def breach_depths(vert: Vert, side, E_l, T_l, r, taper=6.0, fine=True):
    """Per-sector depth (mm) of the screw's outer thread envelope beyond the outer pedicle cortex.

    E_l, T_l are in the vertebra's local frame.  Only envelope points in the pedicle isthmus slab
    0 <= v <= lc (between the posterior wall of the body and the start of the posterior arch) count;
    in that slab the pedicle is the only bone, so outside-the-pedicle means outside bone.
    """
    P0, adir, nlat = vert.ped(side)
    dt, dpsi = (0.1, math.radians(1.0)) if fine else (0.3, math.radians(4.0))
    pts = _envelope_points(np.asarray(E_l, float), np.asarray(T_l, float), r, taper, dt, dpsi,
                           v_bounds=(0.0, vert.lc))
    v = pts[:, 1]
    pts = pts[(v >= -1e-9) & (v <= vert.lc + 1e-9)]
    out = {k: 0.0 for k in SECTORS}
    if len(pts) == 0:
        return out
    rel = pts - P0
    m = rel @ nlat            # + lateral
    s = rel[:, 2]             # + superior
    qx = np.maximum(np.abs(m) - (vert.a - vert.rc), 0.0)
    qy = np.maximum(np.abs(s) - (vert.b - vert.rc), 0.0)
    dist = np.sqrt(qx * qx + qy * qy) - vert.rc
    outside = dist > 0
    horiz = qx >= qy
    for name, sel in (("medial", horiz & (m < 0)), ("lateral", horiz & (m > 0)),
                      ("inferior", ~horiz & (s < 0)), ("superior", ~horiz & (s > 0))):
        sel = sel & outside
        if sel.any():
            out[name] = float(dist[sel].max())
    return out


def _screw_local(vert, side, dm, ds, conv_err, tilt, tip_frac, back):
    P0, adir, nlat = vert.ped(side)
    s = 1.0 if side == "left" else -1.0
    tQ = (vert.lc / 2.0) / math.cos(vert.th)
    Q = P0 + adir * tQ + nlat * dm + np.array([0, 0, ds])
    cs = min(max(vert.th + math.radians(conv_err), 0.0), math.radians(27.0))
    tau = math.radians(tilt)
    d = np.array([-s * math.sin(cs) * math.cos(tau), -math.cos(cs) * math.cos(tau), math.sin(tau)])
    body_depth = 1.8 * vert.B
    Lf = (tip_frac * body_depth + (Q[1] - 0.0)) / (math.cos(cs) * math.cos(tau))
    Lb = (vert.lc + back - Q[1]) / (math.cos(cs) * math.cos(tau))
    return Q - d * Lb, Q + d * Lf


def plan_screws(p, verts):
    """Solve each planned screw's offset so that its target sector depth is met; return screws."""
    byname = {v.level: v for v in verts}
    out = []
    for sp in p["screws"]:
        v = byname[sp["level"]]
        r = sp["diameter"] / 2.0
        tgt, D = sp["target"], sp["target_depth"]
        conv_err, tilt = sp["conv_err"], sp["tilt"]
        h_room = max(v.b - r, 0.0)
        ds0 = sp["cross_off"] * h_room
        args = (conv_err, tilt, sp["tip_frac"], sp["back"])

        def depth_for(dm, ds, coarse=True):
            E, T = _screw_local(v, sp["side"], dm, ds, *args)
            return breach_depths(v, sp["side"], E, T, r, fine=not coarse)

        dm, ds = 0.0, ds0
        if tgt in ("medial", "lateral"):
            sgn = -1.0 if tgt == "medial" else 1.0
            lo, hi = -sgn * 15.0, sgn * 30.0  # lo: far on the other side (depth 0), hi: far out
            f = lambda x: depth_for(x, ds)[tgt] - D  # noqa: E731
            for _ in range(32):
                mid = 0.5 * (lo + hi)
                if f(mid) > 0:
                    hi = mid
                else:
                    lo = mid
            dm = 0.5 * (lo + hi)
        elif tgt in ("inferior", "superior"):
            sgn = -1.0 if tgt == "inferior" else 1.0
            dm = sp["cross_off"] * max(v.a - r, 0.0)
            lo, hi = -sgn * 15.0, sgn * 30.0
            f = lambda x: depth_for(dm, x)[tgt] - D  # noqa: E731
            for _ in range(32):
                mid = 0.5 * (lo + hi)
                if f(mid) > 0:
                    hi = mid
                else:
                    lo = mid
            ds = 0.5 * (lo + hi)
        else:
            dep = depth_for(0.0, ds0)
            if max(dep.values()) > 0:
                ds = 0.0
                args = (0.0, 0.0, sp["tip_frac"], sp["back"])
        E, T = _screw_local(v, sp["side"], dm, ds, *args)
        dep = breach_depths(v, sp["side"], E, T, r, fine=True)
        out.append({"plan": sp, "vert": v, "E_l": E, "T_l": T, "r": r, "depths": dep,
                    "E": v.to_world(E), "T": v.to_world(T)})
    return out


def truth_from(p, screws, px, thick, zmin, zmax, xy_bounds):
    tr = {"slice_thickness_mm": float(thick), "pixel_mm": float(px),
          "laminectomy_levels": [v["level"] for v in p["vertebrae"] if v["laminectomy"]], "screws": []}
    for sc in screws:
        lo = min(sc["E"][2], sc["T"][2]) - sc["r"]
        hi = max(sc["E"][2], sc["T"][2]) + sc["r"]
        inside = lo >= zmin and hi <= zmax
        for P in (sc["E"], sc["T"]):
            inside &= xy_bounds[0] <= P[0] <= xy_bounds[1] and xy_bounds[2] <= P[1] <= xy_bounds[3]
        if not inside:
            continue
        dep = {k: round(float(sc["depths"][k]), 3) for k in SECTORS}
        best = max(SECTORS, key=lambda k: dep[k])
        sp = sc["plan"]
        tr["screws"].append({
            "id": sp["level"] + ("L" if sp["side"] == "left" else "R"), "level": sp["level"], "side": sp["side"],
            "entry_lps_mm": [round(float(x), 3) for x in sc["E"]], "tip_lps_mm": [round(float(x), 3) for x in sc["T"]],
            "diameter_mm": float(sp["diameter"]),
            "breach_direction": best if dep[best] > 0 else "none",
            "breach_depth_mm": dep[best] if dep[best] > 0 else 0.0,
            "breach_depths_mm": dep,
            "at_laminectomy_level": bool(sc["vert"].laminectomy)})
    return tr


# ----------------------------------------------------------------------------------------------
# rendering primitives
# ----------------------------------------------------------------------------------------------
class Slab:
    def __init__(self, xs, ys, zs):
        self.xs, self.ys, self.zs = xs, ys, zs

    def sub(self, bb):
        """bb = (x0,x1,y0,y1,z0,z1) world. Returns index slices and coordinate arrays (broadcastable)."""
        def rng(arr, a, b):
            step = arr[1] - arr[0] if len(arr) > 1 else 1.0
            if step > 0:
                i0 = int(np.searchsorted(arr, a - 1e-6))
                i1 = int(np.searchsorted(arr, b + 1e-6))
            else:
                i0 = int(np.searchsorted(-arr, -b - 1e-6))
                i1 = int(np.searchsorted(-arr, -a + 1e-6))
            return i0, i1
        ix = rng(self.xs, bb[0], bb[1])
        iy = rng(self.ys, bb[2], bb[3])
        iz = rng(self.zs, bb[4], bb[5])
        if ix[1] <= ix[0] or iy[1] <= iy[0] or iz[1] <= iz[0]:
            return None
        sl = (slice(*iz), slice(*iy), slice(*ix))
        X = self.xs[ix[0]:ix[1]][None, None, :]
        Y = self.ys[iy[0]:iy[1]][None, :, None]
        Z = self.zs[iz[0]:iz[1]][:, None, None]
        return sl, X, Y, Z


def _local(R, c, X, Y, Z):
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    u = R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz
    v = R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz
    w = R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz
    return u, v, w


def _world_bb(R, c, lb):
    corners = np.array([[x, y, z] for x in lb[0:2] for y in lb[2:4] for z in lb[4:6]], float)
    wc = corners @ R.T + c
    mn, mx = wc.min(0), wc.max(0)
    return (mn[0], mx[0], mn[1], mx[1], mn[2], mx[2])


def _occ(sdf, delta):
    return np.clip(0.5 - sdf / delta, 0.0, 1.0)


class Scene:
    """Collects analytic objects; renders them into a slab."""

    def __init__(self, p, verts, screws, Rg):
        self.p, self.verts, self.screws, self.Rg = p, verts, screws, Rg
        self.rng = np.random.default_rng(p["noise_seed"])
        self.tex = ndimage.gaussian_filter(self.rng.standard_normal((48, 48, 48)).astype(np.float32), 0.9, mode="wrap")
        self.tex /= self.tex.std() + 1e-6
        self.metal = []      # (bb, fn(X,Y,Z)->sdf, hu)
        self.dense = []      # non-metal dense (cement, cages, graft): (bb, fn, hu)
        self._build_vertebra_parts()
        self._build_metal()

    # ---------------- vertebra bone ----------------
    def _build_vertebra_parts(self):
        self.vparts = []
        for v in self.verts:
            parts = []
            A, B, vc, bh = v.A, v.B, v.vc, v.bh
            tcb, tcp, tce = v.tc_body, v.tc_ped, v.tc_post
            ext_low = 22.0 if v.level == "S1" else 0.0

            def body(u, w_, x, A=A, B=B, vc=vc, bh=bh, ext_low=ext_low):
                h = bh / 2.0
                zz = np.clip(x / h, -1, 1)
                sc = 1.0 - 0.05 * (1 - zz * zz)
                if ext_low:
                    sc = np.where(x < -h, 1.0 - 0.45 * np.clip((-x - h) / ext_low, 0, 1), sc)
                d = _ell2(u, w_ - vc, A * sc, B * sc)
                d = np.maximum(d, w_)
                return np.maximum(d, np.maximum(x - h, -h - ext_low - x))
            parts.append(((-A - 1, A + 1, -1.8 * B - 1, 0.5, -bh / 2 - 1 - ext_low, bh / 2 + 1), body, tcb))
            if v.osteophyte > 0:
                o = v.osteophyte

                def osteo(u, w_, x, A=A, B=B, vc=vc, bh=bh, o=o):
                    d = _ell2(u, w_ - vc, A + o, B + o * 0.8)
                    d = np.maximum(d, w_ + 3.0 - (w_ - w_))
                    rim = np.abs(np.abs(x) - (bh / 2 - 1.0)) - 1.6
                    return np.maximum(np.maximum(d, rim), -_ell2(u, w_ - vc, A - 2, B - 2))
                parts.append(((-A - o - 1, A + o + 1, -1.8 * B - o - 1, 0, -bh / 2 - 3, bh / 2 + 3), osteo, tcb))
            for side in ("left", "right"):
                s = 1.0 if side == "left" else -1.0
                P0, adir, nlat = v.ped(side)
                t1 = v.lc / math.cos(v.th) + 8.0

                def ped(u, w_, x, P0=P0, adir=adir, nlat=nlat, t1=t1, v=v):
                    ru, rv, rw = u - P0[0], w_ - P0[1], x - P0[2]
                    t = ru * adir[0] + rv * adir[1]
                    m = ru * nlat[0] + rv * nlat[1]
                    d = _rrect(m, rw, v.a, v.b, v.rc)
                    return np.maximum(d, np.maximum(-8.0 - t, t - t1))
                cs = [P0 + adir * t + nlat * mm for t in (-8.0, t1) for mm in (-v.a, v.a)]
                us = [c_[0] for c_ in cs]
                vs = [c_[1] for c_ in cs]
                parts.append(((min(us) - 1, max(us) + 1, min(vs) - 1, max(vs) + 1, v.w_p - v.b - 1, v.w_p + v.b + 1), ped, tcp))
                tf = v.lc / math.cos(v.th) + 4.0
                F = P0 + adir * tf
                uf, vf = F[0], F[1]
                lc = v.lc

                def mass(u, w_, x, uf=uf, vf=vf, lc=lc, v=v):
                    d = _box(u - uf, w_ - vf, x - v.w_p, 5.5, 6.0, v.b + 1.5, 1.5)
                    return np.maximum(d, lc - w_)
                parts.append(((uf - 7, uf + 7, lc - 1, vf + 7, v.w_p - v.b - 3, v.w_p + v.b + 3), mass, tce))
                hyp = v.facet_hyp
                su, sv, sw = uf + s * (2.5 - hyp / 2), vf + 1.0, v.w_p + v.b + 5.0

                def sap(u, w_, x, su=su, sv=sv, sw=sw, hyp=hyp, lc=lc):
                    d = _box(u - su, w_ - sv, x - sw, 3.0 + hyp / 2, 5.0 + hyp / 3, 7.5, 1.0)
                    return np.maximum(d, lc + 0.5 - w_)
                parts.append(((su - 5 - hyp, su + 5 + hyp, lc, sv + 7 + hyp, sw - 9, sw + 9), sap, tce))
                iu, iv, iw = uf - s * 5.5, vf + 5.0, v.w_p - v.b - 6.0

                def iap(u, w_, x, iu=iu, iv=iv, iw=iw, lc=lc):
                    d = _box(u - iu, w_ - iv, x - iw, 2.8, 4.5, 8.0, 1.0)
                    return np.maximum(d, lc + 0.5 - w_)
                parts.append(((iu - 4, iu + 4, iv - 6, iv + 6, iw - 9, iw + 9), iap, tce))
                if v.level != "S1":
                    tu, tv = uf + s * (4.0 + v.tp_len / 2), vf - 0.5 + (2.0 if v.level[0] == "T" else 0.0)

                    def tp(u, w_, x, tu=tu, tv=tv, v=v, lc=lc):
                        d = _box(u - tu, w_ - tv, x - v.w_p, v.tp_len / 2 + 2, 2.6, 4.5, 1.5)
                        return np.maximum(d, lc + 0.5 - w_)
                    parts.append(((tu - v.tp_len / 2 - 3, tu + v.tp_len / 2 + 3, tv - 4, tv + 4, v.w_p - 6, v.w_p + 6), tp, tce))
                else:
                    # sacral ala: lateral to the body, anterior to the pedicle slab
                    au = s * (A * 0.55 + 20.0)

                    def ala(u, w_, x, au=au, A=A, B=B):
                        d = _box(u - au, w_ + 0.45 * B, x + 6.0, 20.0, 0.45 * B + 0.2, 14.0, 3.0)
                        return np.maximum(d, w_ + 0.5)
                    parts.append(((au - 21, au + 21, -0.9 * B - 2, 0, -22, 10), ala, tcb))
                    iu2 = s * (A * 0.55 + 44.0)

                    def ilium(u, w_, x, iu2=iu2, s=s):
                        d = _box(u - iu2 - s * 0.12 * x, w_ - 8.0, x + 12.0, 6.0, 17.0, 30.0, 3.0)
                        return d
                    parts.append(((iu2 - 12, iu2 + 12, -10, 26, -45, 20), ilium, tcb))
            # posterior arch (laminae)
            lc, ap, lt, hw = v.lc, v.ap, v.lam_t, v.hw
            lam = v.laminectomy
            tref = v.canal == "trefoil"

            def roof(u, w_, v=v):
                return self._roof_sdf(v, u, w_)

            def arch(u, w_, x, v=v, lc=lc, ap=ap, lt=lt, hw=hw, lam=lam):
                d = _ell2(u, w_ - lc, hw + lt, ap - lc + lt)
                d = np.maximum(d, -self._roof_sdf(v, u, w_))
                d = np.maximum(d, lc - w_)
                d = np.maximum(d, np.abs(x - (v.w_p - 4.0)) - (v.b + 5.0))
                if lam:
                    d = np.maximum(d, hw * 0.85 - np.abs(u))
                return d
            parts.append(((-hw - lt - 1, hw + lt + 1, lc - 1, ap + lt + 1, v.w_p - v.b - 10, v.w_p + v.b + 2), arch, tce))
            if not lam and v.level != "S1":
                beta = math.radians(35.0 if v.level[0] == "T" else 12.0)
                sl = v.sp_len
                cv = ap + lt - 3 + sl / 2 * math.cos(beta)
                cw = v.w_p - 5.0 - sl / 2 * math.sin(beta)

                def spin(u, w_, x, beta=beta, sl=sl, cv=cv, cw=cw):
                    a1 = (w_ - cv) * math.cos(beta) - (x - cw) * math.sin(beta)
                    a2 = (w_ - cv) * math.sin(beta) + (x - cw) * math.cos(beta)
                    return _box(u, a1, a2, 3.2, sl / 2 + 1, 7.5, 2.0)
                ext = sl / 2 + 10
                parts.append(((-4.5, 4.5, cv - ext, cv + ext, cw - ext, cw + ext), spin, tce))
            self.vparts.append(parts)

    @staticmethod
    def _roof_sdf(v, u, w_):
        lc, ap = v.lc, v.ap
        if v.canal == "trefoil":
            hwt = v.hw * 0.62
            n = math.hypot(1.0 / hwt, 1.0 / (ap - lc))
            d = (np.abs(u) / hwt + (w_ - lc) / (ap - lc) - 1.0) / n
        else:
            d = _ell2(u, w_ - lc, v.hw, ap - lc)
        return np.where(w_ < lc, -10.0, d) if isinstance(d, np.ndarray) else d

    def canal_sdf(self, v, u, w_):
        out = -w_
        for side in ("left", "right"):
            P0, adir, nlat = v.ped(side)
            m = (u - P0[0]) * nlat[0] + (w_ - P0[1]) * nlat[1]
            out = np.maximum(out, m + v.a)
        return np.maximum(out, self._roof_sdf(v, u, w_))

    # ---------------- metal ----------------
    def _build_metal(self):
        p = self.p
        mat = {"Ti": HU_TI, "SS": HU_SS, "CoCr": HU_COCR}
        shu = mat[p["screw_material"]]
        heads = {"left": [], "right": []}
        for sc in self.screws:
            E, T, r = sc["E"], sc["T"], sc["r"]
            sp = sc["plan"]
            d = (T - E) / np.linalg.norm(T - E)
            L = float(np.linalg.norm(T - E))
            e1, e2 = _perp_basis(d)
            rc = r * sp["core_frac"]
            pitch = sp["pitch"]
            taper = 6.0

            def screw_fn(X, Y, Z, E=E, d=d, e1=e1, e2=e2, L=L, r=r, rc=rc, pitch=pitch, taper=taper):
                px, py, pz = X - E[0], Y - E[1], Z - E[2]
                t = px * d[0] + py * d[1] + pz * d[2]
                a1 = px * e1[0] + py * e1[1] + pz * e1[2]
                a2 = px * e2[0] + py * e2[1] + pz * e2[2]
                rho = np.sqrt(a1 * a1 + a2 * a2)
                ph = np.arctan2(a2, a1) / (2 * math.pi)
                fr = np.mod(t / pitch - ph, 1.0)
                prof = np.clip((0.5 - np.abs(fr - 0.5)) * 4.0 - 0.3, 0.0, 1.0)
                thr = np.where(t < 2.0, r * 0.98, rc + (r - rc) * prof)
                tap = np.clip((L - t) / taper, 0.0, 1.0)
                rad = np.where(t > L - taper, thr * (0.35 + 0.65 * tap), thr)
                return np.maximum(rho - rad, np.maximum(-t, t - L))
            bb = self._seg_bb(E, T, r + 1)
            self.metal.append((bb, screw_fn, shu))
            # polyaxial head (tulip) along -d
            hdir = -d
            rod_pt = E + hdir * 8.5
            heads[sp["side"]].append((rod_pt, E, hdir))
            if sp["cement"]:
                cr = np.random.default_rng([p["uid_root"] % (2**32), LEVELS.index(sp["level"]), int(sp["side"] == "left")])
                blobs = []
                for k in range(4):
                    c = E + d * (L * cr.uniform(0.5, 0.95)) + cr.normal(0, 1.5, 3)
                    blobs.append((c, cr.uniform(3.0, 6.0)))

                def cem(X, Y, Z, blobs=blobs):
                    out = None
                    for c, rr in blobs:
                        dd = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) - rr
                        out = dd if out is None else np.minimum(out, dd)
                    return out
                cs = np.array([b[0] for b in blobs])
                bb = (cs[:, 0].min() - 7, cs[:, 0].max() + 7, cs[:, 1].min() - 7, cs[:, 1].max() + 7, cs[:, 2].min() - 7, cs[:, 2].max() + 7)
                self.dense.append((bb, cem, float(cr.uniform(1700, 3200))))
        # rods
        rod_hu = mat[p["rod_material"]]
        rr = p["rod_diameter"] / 2
        self.rod_dirs = {}
        for side, hs in heads.items():
            if not hs:
                continue
            hs.sort(key=lambda h: h[0][2])
            pts = [h[0] for h in hs]
            if p["rod"] and len(pts) >= 2:
                pts = np.array(pts)
                t0 = pts[1] - pts[0]
                t1 = pts[-1] - pts[-2]
                ext_lo = 6.0
                P = np.vstack([pts[0] - t0 / np.linalg.norm(t0) * ext_lo, pts, pts[-1] + t1 / np.linalg.norm(t1) * 6.0])
                curve = self._catmull(P, 8)
                for a_, b_ in zip(curve[:-1], curve[1:]):
                    self.metal.append((self._seg_bb(a_, b_, rr + 1), (lambda X, Y, Z, a_=a_, b_=b_: _seg_dist(X, Y, Z, a_, b_) - rr), rod_hu))
                for h in hs:
                    k = int(np.argmin([np.linalg.norm(c_ - h[0]) for c_ in curve]))
                    tg = curve[min(k + 1, len(curve) - 1)] - curve[max(k - 1, 0)]
                    self.rod_dirs[tuple(np.round(h[0], 3))] = tg / (np.linalg.norm(tg) + 1e-9)
            elif p["rod"] and len(pts) == 1:
                pass
            for h in hs:
                self._add_tulip(h, p["rod"] and len(hs) >= 2)
        if p["crosslink"] and heads["left"] and heads["right"]:
            zl = np.array([h[0] for h in heads["left"]])
            zr = np.array([h[0] for h in heads["right"]])
            a_ = zl.mean(0)
            b_ = zr.mean(0)
            mid = 0.5 * (a_ + b_) + self.Rg @ np.array([0, 7.0, 0])
            for s0, s1 in ((a_, mid), (mid, b_)):
                self.metal.append((self._seg_bb(s0, s1, 3.5), (lambda X, Y, Z, s0=s0, s1=s1: _seg_dist(X, Y, Z, s0, s1) - 2.5), HU_TI))
        self._add_cages()
        self._add_extras()

    @staticmethod
    def _catmull(P, nseg):
        P = np.asarray(P)
        out = [P[0]]
        for i in range(len(P) - 1):
            p0 = P[max(i - 1, 0)]
            p1, p2 = P[i], P[i + 1]
            p3 = P[min(i + 2, len(P) - 1)]
            for k in range(1, nseg + 1):
                t = k / nseg
                out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
        return np.array(out)

    @staticmethod
    def _seg_bb(a, b, r):
        return (min(a[0], b[0]) - r, max(a[0], b[0]) + r, min(a[1], b[1]) - r, max(a[1], b[1]) + r, min(a[2], b[2]) - r, max(a[2], b[2]) + r)

    def _add_tulip(self, h, with_rod):
        rod_pt, E, hd = h
        rd = self.rod_dirs.get(tuple(np.round(rod_pt, 3)))
        if rd is None:
            rd = np.array([0, 0, 1.0])
        b1 = rd - hd * (rd @ hd)
        b1 /= np.linalg.norm(b1) + 1e-9
        b2 = np.cross(hd, b1)
        base = E + hd * 0.5

        def tulip(X, Y, Z, base=base, hd=hd, b1=b1, b2=b2, with_rod=with_rod):
            px, py, pz = X - base[0], Y - base[1], Z - base[2]
            a = px * hd[0] + py * hd[1] + pz * hd[2]
            c1 = px * b1[0] + py * b1[1] + pz * b1[2]
            c2 = px * b2[0] + py * b2[1] + pz * b2[2]
            rho = np.sqrt(c1 * c1 + c2 * c2)
            ball = np.sqrt((a - 3.0) ** 2 + rho ** 2) - 4.2
            cup = np.maximum(rho - 6.2, np.maximum(1.5 - a, a - 14.5))
            inner = np.maximum(rho - 4.4, np.maximum(5.0 - a, a - 15.0))   # hollow core
            sl_ = np.maximum(np.abs(c2) - 2.9, np.maximum(5.0 - a, a - 15.0))  # U-slot
            d = np.maximum(cup, -np.minimum(inner, sl_))
            d = np.minimum(d, ball)
            if with_rod:
                setscrew = np.maximum(rho - 4.4, np.maximum(11.3 - a, a - 14.5))
                d = np.minimum(d, setscrew)
            return d
        tip = base + hd * 15.0
        self.metal.append((self._seg_bb(base, tip, 7.0), tulip, HU_TI))

    def _disc_frame(self, lower, upper):
        top = lower.to_world([0, 0, lower.bh / 2])
        bot = upper.to_world([0, 0, -upper.bh / 2])
        Rm = lower.R + upper.R
        uu, _, vt = np.linalg.svd(Rm)
        Rm = uu @ vt
        c = 0.5 * (top + bot)
        h = float(np.linalg.norm(bot - top))
        return Rm, c, h

    def _add_cages(self):
        byname = {v.level: v for v in self.verts}
        for cg in self.p["cages"]:
            lower, upper = byname.get(cg["lower"]), byname.get(cg["upper"])
            if lower is None or upper is None:
                continue
            Rm, c, h = self._disc_frame(lower, upper)
            B = 0.5 * (lower.B + upper.B)
            hh = h / 2 + 0.6
            boxes = []
            if cg["type"] == "PLIF":
                for s in (1, -1):
                    boxes.append((np.array([s * 9.0, -0.9 * B, 0]), 0.0, 4.5, 12.0))
            else:
                s = 1 if cg["side"] == "left" else -1
                boxes.append((np.array([s * 3.0, -0.95 * B, 0]), s * math.radians(cg["angle"]), 5.5, 15.0))
            for (bc, ang, hx, hy) in boxes:
                Rb = Rm @ _rz(ang)
                cw = Rm @ bc + c

                def cage_sdf(X, Y, Z, Rb=Rb, cw=cw, hx=hx, hy=hy):
                    u, v_, w = _local(Rb, cw, X, Y, Z)
                    return _box(u, v_, w, hx, hy, hh, 1.0)

                def graft_sdf(X, Y, Z, Rb=Rb, cw=cw, hx=hx, hy=hy):
                    u, v_, w = _local(Rb, cw, X, Y, Z)
                    return _box(u, v_, w, hx - 1.6, hy - 4.0, hh + 0.3, 0.5)
                bb = _world_bb(Rb, cw, (-hx - 1, hx + 1, -hy - 1, hy + 1, -hh - 1, hh + 1))
                if cg["type"] == "Ti":
                    self.metal.append((bb, cage_sdf, 5200.0))  # porous titanium: lower effective density
                else:
                    self.dense.append((bb, cage_sdf, 320.0))
                    for my in (-hy + 1.2, hy - 1.2):
                        a_ = Rb @ np.array([0, my, -hh + 1.0]) + cw
                        b_ = Rb @ np.array([0, my, hh - 1.0]) + cw
                        self.metal.append((self._seg_bb(a_, b_, 1.5), (lambda X, Y, Z, a_=a_, b_=b_: _seg_dist(X, Y, Z, a_, b_) - 0.5), HU_TA))
                self.dense.append((bb, graft_sdf, 480.0))

    def _add_extras(self):
        p = self.p
        verts = self.verts
        if p["scs_lead"]:
            top = verts[0]
            pts = []
            for v in verts[:2]:
                for w_ in (v.bh / 2 + 8, 0.0, -v.bh / 2):
                    pts.append(v.to_world([0.8, v.ap - 2.2, w_]))
            pts.insert(0, top.to_world([0.8, top.ap - 2.2, top.bh / 2 + 60]))
            pts = np.array(pts)
            low = verts[min(1, len(verts) - 1)]
            exitp = low.to_world([3.0, low.ap + 30.0, -low.bh / 2 - 12])
            pts = np.vstack([pts, exitp, exitp + np.array([0, 5.0, -80.0])])
            for a_, b_ in zip(pts[:-1], pts[1:]):
                self.dense.append((self._seg_bb(a_, b_, 2.0), (lambda X, Y, Z, a_=a_, b_=b_: _seg_dist(X, Y, Z, a_, b_) - 0.65), 150.0))
                self.metal.append((self._seg_bb(a_, b_, 1.0), (lambda X, Y, Z, a_=a_, b_=b_: _seg_dist(X, Y, Z, a_, b_) - 0.22), 12000.0))
            d = pts[2] - pts[1]
            d /= np.linalg.norm(d)
            for k in range(8):
                a_ = pts[1] + d * (k * 5.5)
                b_ = a_ + d * 3.0
                self.metal.append((self._seg_bb(a_, b_, 1.5), (lambda X, Y, Z, a_=a_, b_=b_: _seg_dist(X, Y, Z, a_, b_) - 0.68), HU_PTIR))
        if p["hip"]:
            s1 = verts[-1]
            s = 1.0 if p["hip_side"] == "left" else -1.0
            hc = s1.c + self.Rg @ np.array([s * 95.0, -30.0, -s1.bh / 2 - 42.0])
            self.hip_c = hc

            def head(X, Y, Z, hc=hc):
                return np.sqrt((X - hc[0]) ** 2 + (Y - hc[1]) ** 2 + (Z - hc[2]) ** 2) - 14.0

            def cup(X, Y, Z, hc=hc, s=s):
                rr = np.sqrt((X - hc[0]) ** 2 + (Y - hc[1]) ** 2 + (Z - hc[2]) ** 2)
                d = np.maximum(rr - 25.0, 15.0 - rr)
                return np.maximum(d, -((Z - hc[2]) * 0.8 + s * (hc[0] - X) * 0.6))
            self.metal.append(((hc[0] - 15, hc[0] + 15, hc[1] - 15, hc[1] + 15, hc[2] - 15, hc[2] + 15), head, HU_COCR))
            self.metal.append(((hc[0] - 26, hc[0] + 26, hc[1] - 26, hc[1] + 26, hc[2] - 26, hc[2] + 26), cup, HU_TI))

            def acet(X, Y, Z, hc=hc):
                rr = np.sqrt((X - hc[0]) ** 2 + (Y - hc[1]) ** 2 + (Z - hc[2]) ** 2)
                return np.maximum(rr - 36.0, 24.0 - rr)
            self.dense.append(((hc[0] - 37, hc[0] + 37, hc[1] - 37, hc[1] + 37, hc[2] - 37, hc[2] + 37), acet, 650.0))
        if p["fragment"] and self.screws:
            c0 = np.mean([sc["E"] for sc in self.screws], axis=0)
            fp = p["fragment_pos"]
            fc = c0 + self.Rg @ np.array([fp[0], fp[1] - 10.0, fp[2] * 40.0])
            rr = 0.8 + abs(fp[2]) * 4.0

            def frag(X, Y, Z, fc=fc, rr=rr):
                return np.sqrt(((X - fc[0]) / 1.6) ** 2 + (Y - fc[1]) ** 2 + ((Z - fc[2]) / 0.8) ** 2) - rr
            self.metal.append(((fc[0] - 3 * rr - 2, fc[0] + 3 * rr + 2, fc[1] - rr - 2, fc[1] + rr + 2, fc[2] - rr - 2, fc[2] + rr + 2), frag, HU_SS))

    # ---------------- bounding box of everything dense ----------------
    def all_bbs(self):
        bbs = []
        for v, parts in zip(self.verts, self.vparts):
            for lb, fn, tc in parts:
                bbs.append(_world_bb(v.R, v.c, lb))
        bbs += [m[0] for m in self.metal] + [m[0] for m in self.dense]
        return bbs

    # ---------------- render a slab ----------------
    def render(self, slab: Slab, A, Fm, Hm, delta):
        self._render_discs(slab, A, delta)
        self._render_canal(slab, A, delta)
        self._render_bone(slab, A, delta)
        for bb, fn, hu in self.dense:
            r = slab.sub(bb)
            if r is None:
                continue
            sl, X, Y, Z = r
            f = _occ(fn(X, Y, Z), delta)
            A[sl] = A[sl] * (1 - f) + f * hu
        for bb, fn, hu in self.metal:
            r = slab.sub(bb)
            if r is None:
                continue
            sl, X, Y, Z = r
            f = _occ(fn(X, Y, Z), delta)
            cur = Fm[sl]
            upd = f > cur
            Hm[sl] = np.where(upd, f * hu, Hm[sl])
            Fm[sl] = np.maximum(cur, f)

    def _render_discs(self, slab, A, delta):
        for j in range(len(self.verts) - 1):
            upper, lower = self.verts[j], self.verts[j + 1]
            if upper.disc_below <= 0:
                continue
            Rm, c, h = self._disc_frame(lower, upper)
            Am, Bm = 0.5 * (lower.A + upper.A), 0.5 * (lower.B + upper.B)
            vc = -0.8 * Bm
            bulge = upper.disc_bulge
            cage_here = any(cg["lower"] == lower.level and cg["upper"] == upper.level for cg in self.p["cages"])
            lb = (-Am - 2, Am + 2, -1.8 * Bm - 2, bulge + 2, -h / 2 - 2, h / 2 + 2)
            r = slab.sub(_world_bb(Rm, c, lb))
            if r is None:
                continue
            sl, X, Y, Z = r
            u, v, w = _local(Rm, c, X, Y, Z)
            d = _ell2(u, v - vc, Am + 0.5, Bm + 0.5)
            d = np.maximum(d, v - bulge * np.clip(1 - (u / (0.6 * Am)) ** 2, 0, 1))
            d = np.maximum(d, np.abs(w) - h / 2 - 1.0)
            f = _occ(d, delta)
            nuc = _ell2(u, v - vc, 0.55 * Am, 0.5 * Bm)
            hu = np.where(nuc < 0, 68.0, 92.0)
            if upper.vacuum and not cage_here:
                gas = _ell2(u - 0.2 * Am, v - vc, 0.3 * Am, 0.18 * Bm)
                gas = np.maximum(gas, np.abs(w) - max(h / 2 - 1.5, 0.5))
                hu = np.where(gas < 0, -750.0, hu)
            if cage_here:
                hu = np.full_like(d, 70.0)
            A[sl] = A[sl] * (1 - f) + f * hu

    def _render_canal(self, slab, A, delta):
        nv = len(self.verts)
        for j, v in enumerate(self.verts):
            up = v.bh / 2 + (self.verts[j - 1].disc_below / 2 if j > 0 else 12.0)
            dn = -v.bh / 2 - (v.disc_below / 2 if v.disc_below > 0 else 12.0)
            lb = (-v.hw - 14, v.hw + 14, -2, v.ap + 2 + (35 if v.laminectomy else 0), dn, up)
            r = slab.sub(_world_bb(v.R, v.c, lb))
            if r is None:
                continue
            sl, X, Y, Z = r
            u, w_, x = _local(v.R, v.c, X, Y, Z)
            inseg = (x >= dn) & (x < up)
            can = self.canal_sdf(v, u, w_)
            roof = self._roof_sdf(v, u, w_)
            hu = np.full(can.shape, -95.0, np.float32)
            f = np.where(inseg, _occ(can, delta), 0.0)
            if not v.laminectomy:
                lfz = (roof > -v.lf_t) & (w_ > v.lc - 1)
                hu = np.where(lfz, 62.0, hu)
            # thecal sac
            sa = min(v.hw - 1.5, 7.5 + 0.1 * v.ap)
            sb = max(v.ap / 2 - 1.8, 3.5)
            sc = v.ap / 2 + 0.3
            sac = np.maximum(_ell2(u, w_ - sc, sa, sb), can + 1.2)
            fs = _occ(sac, delta)
            hu = hu * (1 - fs) + fs * 9.0
            lvl = LEVELS.index(v.level)
            if lvl <= LEVELS.index("L1"):
                ca = 4.6 if lvl < 3 else 3.2
                cord = _ell2(u, w_ - sc + 0.6, ca, ca * 0.75)
                fc = _occ(cord, delta)
                hu = hu * (1 - fc) + fc * 34.0
            else:
                rr = np.random.default_rng(lvl)
                for k in range(10):
                    ang = rr.uniform(0.2, math.pi - 0.2)
                    rad = rr.uniform(0.3, 0.8)
                    cx_, cy_ = math.cos(ang) * sa * rad, sc + math.sin(ang) * sb * rad * 0.9
                    dd = np.sqrt((u - cx_) ** 2 + (w_ - cy_) ** 2) - rr.uniform(0.6, 1.1)
                    fr = _occ(dd, delta)
                    hu = hu * (1 - fr) + fr * 30.0
            A[sl] = A[sl] * (1 - f) + f * hu
            # dorsal root ganglia / exiting roots below the pedicles
            for side in ("left", "right"):
                P0, adir, nlat = v.ped(side)
                gc = P0 + adir * (v.lc * 0.4) + nlat * (v.a + 2.5) + np.array([0, 0, -v.b - 4.0])
                dd = np.sqrt(((u - gc[0]) / 1.3) ** 2 + ((w_ - gc[1]) / 1.0) ** 2 + ((x - gc[2]) / 1.5) ** 2) - 3.0
                fr = _occ(dd, delta)
                A[sl] = A[sl] * (1 - fr) + fr * 42.0
            if v.laminectomy:
                scar = np.maximum(np.maximum(np.abs(u) - v.hw * 0.85, v.ap - 1.5 - w_), np.maximum(w_ - v.ap - 28.0, np.abs(x - v.w_p + 3) - v.bh / 2 - 2))
                fr = _occ(scar, 2.5)
                A[sl] = A[sl] * (1 - fr) + fr * (28.0 + 10 * self.tex[0, 0, 0])

    def _render_bone(self, slab, A, delta):
        for v, parts in zip(self.verts, self.vparts):
            wbb = np.array([_world_bb(v.R, v.c, lb) for lb, _, _ in parts])
            vb = (wbb[:, 0].min(), wbb[:, 1].max(), wbb[:, 2].min(), wbb[:, 3].max(), wbb[:, 4].min(), wbb[:, 5].max())
            r = slab.sub(vb)
            if r is None:
                continue
            sl, X, Y, Z = r
            shp = (Z.shape[0], Y.shape[1], X.shape[2])
            S = np.full(shp, 50.0, np.float32)
            Tc = np.full(shp, 1.0, np.float32)
            for (lb, fn, tc), bb in zip(parts, wbb):
                rr = slab.sub(tuple(bb))
                if rr is None:
                    continue
                sl2, X2, Y2, Z2 = rr
                loc = (slice(sl2[0].start - sl[0].start, sl2[0].stop - sl[0].start),
                       slice(sl2[1].start - sl[1].start, sl2[1].stop - sl[1].start),
                       slice(sl2[2].start - sl[2].start, sl2[2].stop - sl[2].start))
                u, w_, x = _local(v.R, v.c, X2, Y2, Z2)
                d = fn(u, w_, x).astype(np.float32)
                cur = S[loc]
                Tc[loc] = np.where(d < cur, tc, Tc[loc])
                S[loc] = np.minimum(cur, d)
            f_out = _occ(S, delta)
            if not f_out.any():
                continue
            f_in = _occ(S + Tc, delta)
            # trabecular texture
            ix = (np.floor(X[0, 0] / 0.55).astype(int) % 48)
            iy = (np.floor(Y[0, :, 0] / 0.55).astype(int) % 48)
            iz = (np.floor(Z[:, 0, 0] / 0.55).astype(int) % 48)
            tex = self.tex[iz[:, None, None], iy[None, :, None], ix[None, None, :]]
            canc = v.canc_hu + tex * (0.22 * v.canc_hu + 15.0)
            hu = canc * f_in + v.cort_hu * (f_out - f_in)
            A[sl] = A[sl] * (1 - f_out) + hu


# ----------------------------------------------------------------------------------------------
# soft tissue (2D per output slice)
# ----------------------------------------------------------------------------------------------
def _soft_slice(p, anch, z, xs, ys, roll):
    X = xs[None, :]
    Y = ys[:, None]
    ax, ay, bw, bd, lvl = anch
    c, s = math.cos(roll), math.sin(roll)
    xr = c * (X - ax) + s * (Y - ay)
    yr = -s * (X - ax) + c * (Y - ay)
    ta, tb, pd = p["torso_a"], p["torso_b"], p["post_d"]
    ty = pd - tb
    tx = p["torso_dx"]
    img = np.full((len(ys), len(xs)), -1000.0, np.float32)
    torso = np.maximum(_ell2(xr - tx, yr - ty, ta, tb), yr - pd + 3.0)
    img = np.where(torso < 0, -95.0, img)
    ft = p["fat_t"]
    inner = np.maximum(_ell2(xr - tx, yr - ty, ta - ft, tb - ft * 0.8), yr - pd + ft * 0.8)
    img = np.where(inner < 0, 42.0, img)
    visc = np.maximum(_ell2(xr - tx, yr - ty + 10, ta - ft - 14, tb - ft - 18), yr + bd * 0.5)
    thor = lvl < 2.5
    img = np.where(visc < 0, 28.0 if not thor else 55.0, img)
    # mesenteric/retroperitoneal fat patches
    img = np.where((visc < 0) & (np.abs(xr) > bw / 2 + 8) & (yr > -bd - 25) & (yr < -5), -80.0, img)
    if thor or lvl < 4:
        # lungs (bases) posterolateral at thoracic levels, shrinking caudally
        k = max(0.0, min(1.0, (3.5 - lvl) / 3.0))
        if k > 0:
            for sg in (-1, 1):
                lung = _ell2(xr - sg * (bw / 2 + 40), yr + 5, 45 * k + 5, 55 * k + 5)
                img = np.where((lung < 0) & (visc < 0), -860.0, img)
    if lvl >= 2.5:
        for sg in (-1, 1):  # psoas
            g = min(1.0, (lvl - 2.5) / 4.0)
            ps = _ell2(xr - sg * (bw / 2 + 8 + 6 * g), yr + bd * 0.55, 6 + 12 * g, 7 + 10 * g)
            img = np.where(ps < 0, 48.0, img)
        if lvl < 6:
            for sg in (-1, 1):  # kidneys
                kd = _ell2(xr - sg * (bw / 2 + 45), yr + 5, 24, 18)
                img = np.where((kd < 0) & (visc < 0), 33.0, img)
    # great vessels
    ao = np.sqrt((xr - 14) ** 2 + (yr + bd + 13) ** 2) - (11.0 if lvl < 7 else 7.0)
    img = np.where(ao < 0, 40.0, img)
    ivc = _ell2(xr + 20, yr + bd + 12, 12, 8)
    img = np.where(ivc < 0, 36.0, img)
    # paraspinal muscles
    for sg in (-1, 1):
        pm = _ell2(xr - sg * 24, yr - 38, 22, 26)
        img = np.where((pm < 0) & (torso < -4), 52.0, img)
    # bowel gas
    for gx, gy, gz, gr in p["gas_pockets"]:
        dz = (z - (gz - 0.5) * 200.0)
        if abs(dz) < gr:
            rr = math.sqrt(gr * gr - dz * dz)
            gb = np.sqrt((xr - gx) ** 2 + (yr - gy) ** 2) - rr
            img = np.where((gb < 0) & (visc < 0), -900.0, img)
    if p["table"]:
        if p["position"] == "HFP":   # prone: table under the anterior abdomen
            yt = -(pd - 2 * tb) + 8.0
            sgn = -1.0
        else:
            yt = pd + 8.0
            sgn = 1.0
        prof = sgn * (Y - ay) - yt + 0.0009 * (X - ax) ** 2
        img = np.where((np.abs(prof) < 9.0) & (np.abs(X - ax) < 240), -880.0, img)
        img = np.where((np.abs(np.abs(prof) - 9.0) < 1.0) & (np.abs(X - ax) < 240), 180.0, img)
    return img


# ----------------------------------------------------------------------------------------------
# artefacts
# ----------------------------------------------------------------------------------------------
def _streaks(metal2d, px, strength, rng):
    """Analytic metal streaks for one axial slice. metal2d = occupancy-weighted metal HU excess."""
    mask = metal2d > 1500.0
    if not mask.any():
        return None, None
    ds = 3
    lab, n = ndimage.label(mask)
    if n == 0:
        return None, None
    objs = ndimage.find_objects(lab)
    H, W = metal2d.shape
    yy = (np.arange(0, H, ds) + 0.5 * (ds - 1))[:, None] * px
    xx = (np.arange(0, W, ds) + 0.5 * (ds - 1))[None, :] * px
    out = np.zeros((yy.shape[0], xx.shape[1]), np.float32)
    comps = []
    for k, ob in enumerate(objs):
        m = lab[ob] == (k + 1)
        area = m.sum() * px * px
        if area < 0.8:
            continue
        cy, cx = ndimage.center_of_mass(m)
        cy = (cy + ob[0].start) * px
        cx = (cx + ob[1].start) * px
        hu = float(metal2d[ob][m].mean())
        comps.append((cx, cy, area, hu, m, ob))
    if not comps:
        return None, None
    comps.sort(key=lambda c_: -c_[2] * c_[3])
    comps = comps[:6]
    nmod = np.zeros_like(out)
    for i, (cx, cy, area, hu, m, ob) in enumerate(comps):
        st = min(25.0, strength * math.sqrt(area) * (hu / 8000.0) ** 0.7)
        # principal axis
        ys_, xs_ = np.nonzero(m)
        if len(xs_) > 3:
            cov = np.cov(np.vstack([xs_, ys_]))
            ev, evec = np.linalg.eigh(cov)
            ang0 = math.atan2(evec[1, 1], evec[0, 1])
        else:
            ang0 = 0.0
        dx, dy = xx - cx, yy - cy
        r = np.sqrt(dx * dx + dy * dy)
        dec = 1.0 / (1.0 + r / 40.0)
        nmod += min(st / 6.0, 2.5) * np.exp(-(r / 25.0) ** 2)
        angs = [ang0, ang0 + math.pi / 2] + list(rng.uniform(0, math.pi, 3))
        for k, a in enumerate(angs):
            dist = np.abs(dx * math.sin(a) - dy * math.cos(a))
            amp = (-35.0 if k == 0 else rng.choice([-1, 1]) * 22.0) * st
            out += amp * np.exp(-(dist / (0.8 + 0.12 * math.sqrt(area))) ** 2) * dec
        # fine photon-starvation streaks
        nfine = 4
        a_f = rng.uniform(0, math.pi, nfine)
        for a in a_f:
            dist = np.abs(dx * math.sin(a) - dy * math.cos(a))
            out += rng.normal(0, 12.0) * st * np.exp(-(dist / 0.6) ** 2) * dec
        # dark band between objects
        for j in range(i + 1, len(comps)):
            cx2, cy2, area2, hu2 = comps[j][:4]
            st2 = min(25.0, strength * math.sqrt(area2) * (hu2 / 8000.0) ** 0.7)
            L = math.hypot(cx2 - cx, cy2 - cy)
            if L < 1:
                continue
            ex, ey = (cx2 - cx) / L, (cy2 - cy) / L
            along = dx * ex + dy * ey
            perp = np.abs(-dx * ey + dy * ex)
            wdt = 0.35 * (math.sqrt(area) + math.sqrt(area2)) + 1.0
            ins = np.exp(-np.maximum(np.maximum(-along, along - L), 0) / 60.0)
            out += -28.0 * math.sqrt(st * st2) * np.exp(-(perp / wdt) ** 2) * ins
    def up(a):
        f_ = ndimage.zoom(a, ds, order=1)[:H, :W]
        if f_.shape != (H, W):
            f_ = np.pad(f_, ((0, H - f_.shape[0]), (0, W - f_.shape[1])), mode="edge")
        return f_
    full = up(out)
    full[mask] = 0.0
    return full, 1.0 + np.minimum(up(nmod), 2.5)


# ----------------------------------------------------------------------------------------------
# study writer
# ----------------------------------------------------------------------------------------------
def _layout(p, verts, scene):
    """Decide field of view and slice positions."""
    N = p["matrix"]
    px = p["pixel_mm"]
    thick = p["slice_thickness"]
    sp = p["spacing"]
    inst = [v for v in verts if v.level in p["instrumented"]] or (verts[1:-1] if len(verts) > 2 else verts)
    zs_top = [v.to_world([0, 0, v.bh / 2])[2] for v in inst]
    zs_bot = [v.to_world([0, 0, -v.bh / 2])[2] for v in inst]
    for sc in scene.screws:
        for P in (sc["E"], sc["T"]):
            zs_top.append(P[2] + sc["r"] + 2.0)
            zs_bot.append(P[2] - sc["r"] - 2.0)
    rng = np.random.default_rng(p["noise_seed"] + 11)
    z_hi = max(zs_top) + rng.uniform(3, 15)
    z_lo = min(zs_bot) - rng.uniform(3, 15)
    if p["small"]:
        maxr = 59 * sp
        if z_hi - z_lo > maxr:
            need_hi, need_lo = max(zs_top) - 1.0, min(zs_bot) + 1.0
            mid = 0.5 * (need_hi + need_lo)
            z_lo, z_hi = mid - maxr / 2, mid + maxr / 2
    if p["partial_construct"] and len(inst) >= 2:
        # cut the FOV above the lowest instrumented level's screws (they are outside; the rod leaves the FOV)
        low, up = inst[-1].level, inst[-2].level
        lowz = [max(sc["E"][2], sc["T"][2]) + sc["r"] for sc in scene.screws if sc["plan"]["level"] == low]
        upz = [min(sc["E"][2], sc["T"][2]) - sc["r"] for sc in scene.screws if sc["plan"]["level"] == up]
        if lowz and upz and max(lowz) + 2.0 < min(upz) - 1.0:
            z_lo = 0.5 * (max(lowz) + 2.0 + min(upz) - 1.0)
    if p.get("hip") and hasattr(scene, "hip_c") and not p["small"]:
        z_lo = min(z_lo, scene.hip_c[2] + 8.0)
    nz = int(math.floor((z_hi - z_lo) / sp)) + 1
    if p["small"]:
        nz = min(nz, 60)
    zpos = z_lo + sp * np.arange(nz)
    # in-plane: centre on the canal of the middle vertebra + offset
    mid = verts[len(verts) // 2]
    cxy = mid.to_world([0, 5.0, 0])
    cx = cxy[0] + p["fov_dx"]
    cy = cxy[1] + p["fov_dy"]
    if p.get("hip") and hasattr(scene, "hip_c"):
        cx = 0.5 * (cx + scene.hip_c[0]) * 0.7 + 0.3 * cx
    x0 = cx - (N - 1) / 2 * px
    y0 = cy - (N - 1) / 2 * px
    xs = x0 + px * np.arange(N)
    ys = y0 + px * np.arange(N)
    return xs, ys, zpos


def _anchor_fn(verts):
    zc = np.array([v.c[2] for v in verts])
    order = np.argsort(zc)
    zc = zc[order]
    xa = np.array([v.c[0] for v in verts])[order]
    ya = np.array([v.c[1] for v in verts])[order]
    bw = np.array([v.bw for v in verts])[order]
    bd = np.array([v.bd for v in verts])[order]
    lv = np.array([LEVELS.index(v.level) for v in verts], float)[order]

    def f(z):
        return (float(np.interp(z, zc, xa)), float(np.interp(z, zc, ya)), float(np.interp(z, zc, bw)),
                float(np.interp(z, zc, bd)), float(np.interp(z, zc, lv)))
    return f


def render_volume(p, verts, screws, Rg, scene=None):
    t0 = time.time()
    if scene is None:
        scene = Scene(p, verts, screws, Rg)
    xs, ys, zpos = _layout(p, verts, scene)
    N = len(xs)
    px = p["pixel_mm"]
    thick = p["slice_thickness"]
    nz = len(zpos)
    ksub = max(1, int(round(thick / 0.55)))
    dzf = thick / ksub
    delta = max(px, dzf) * 0.95
    rng = np.random.default_rng(p["noise_seed"])
    # ROI in-plane (union of object boxes)
    bbs = np.array(scene.all_bbs())
    rx0 = max(0, int(np.searchsorted(xs, bbs[:, 0].min() - 3)))
    rx1 = min(N, int(np.searchsorted(xs, bbs[:, 1].max() + 3)))
    ry0 = max(0, int(np.searchsorted(ys, bbs[:, 2].min() - 3)))
    ry1 = min(N, int(np.searchsorted(ys, bbs[:, 3].max() + 3)))
    anch = _anchor_fn(verts)
    roll = math.radians(p["patient_roll"])
    vol = np.empty((nz, N, N), np.float32)
    sig_k = (0.35 if p["kernel"] == "bone" else 0.7) / px
    sig_b = math.hypot(p["bloom_mm"], 0.35) / px
    slab_n = 24
    soft_cache = {}
    for k0 in range(0, nz, slab_n):
        k1 = min(nz, k0 + slab_n)
        zf_lo = zpos[k0] - thick / 2
        nf = int(round((zpos[k1 - 1] - zpos[k0]) / dzf)) + ksub + 1
        zf = zf_lo + dzf * (np.arange(nf) + 0.5)
        soft = []
        for z in zpos[k0:k1]:
            zq = round(z / 2.0) * 2.0
            if zq not in soft_cache:
                soft_cache.clear()
                soft_cache[zq] = _soft_slice(p, anch(zq), zq, xs, ys, roll)
            soft.append(soft_cache[zq])
        if rx1 > rx0 and ry1 > ry0:
            slab = Slab(xs[rx0:rx1], ys[ry0:ry1], zf)
            A = np.empty((nf, ry1 - ry0, rx1 - rx0), np.float32)
            for j, z in enumerate(zf):
                kk = min(max(int(round((z - zpos[k0]) / p["spacing"])), 0), k1 - k0 - 1)
                A[j] = soft[kk][ry0:ry1, rx0:rx1]
            Fm = np.zeros_like(A)
            Hm = np.zeros_like(A)
            scene.render(slab, A, Fm, Hm, delta)
            Ex = Hm - A * Fm
            if Fm.any():
                Ex = ndimage.gaussian_filter1d(Ex, p["bloom_mm"] / dzf, axis=0, mode="nearest")
        for kk, k in enumerate(range(k0, k1)):
            img = soft[kk]
            ex2 = None
            if rx1 > rx0 and ry1 > ry0:
                wts = np.clip(np.minimum(zf + dzf / 2, zpos[k] + thick / 2) - np.maximum(zf - dzf / 2, zpos[k] - thick / 2), 0, None)
                idx = np.nonzero(wts > 1e-6)[0]
                wts = wts[idx] / wts[idx].sum()
                a_ = A[idx[0]] * wts[0]
                e_ = Ex[idx[0]] * wts[0]
                for w8, j8 in zip(wts[1:], idx[1:]):
                    a_ += A[j8] * w8
                    e_ += Ex[j8] * w8
                img = img.copy()
                img[ry0:ry1, rx0:rx1] = a_
                if np.abs(e_).max() > 1.0:
                    ex2 = np.zeros((N, N), np.float32)
                    ex2[ry0:ry1, rx0:rx1] = e_
            out = ndimage.gaussian_filter(img, sig_k, truncate=3.0)
            if p["kernel"] == "bone":
                out = out + 0.35 * (out - ndimage.gaussian_filter(out, 1.0 / px, truncate=3.0))
            nm = 1.0
            if ex2 is not None:
                r0, r1 = max(ry0 - 8, 0), min(ry1 + 8, N)
                c0, c1 = max(rx0 - 8, 0), min(rx1 + 8, N)
                out[r0:r1, c0:c1] += ndimage.gaussian_filter(ex2[r0:r1, c0:c1], sig_b, truncate=3.0)
                st, nmod = _streaks(ex2, px, p["streak_strength"], rng)
                if st is not None:
                    out += st
                    nm = nmod
            nse = rng.standard_normal((N, N)).astype(np.float32)
            if p["kernel"] == "bone":
                nse = nse - 0.6 * ndimage.gaussian_filter(nse, 1.5)
                nse = ndimage.gaussian_filter(nse, 0.6)
            else:
                nse = ndimage.gaussian_filter(nse, 1.3)
            nse *= p["noise_hu"] / (nse.std() + 1e-6)
            out += nse * nm * np.where(img < -900, 0.4, 1.0)
            vol[k] = out
    return vol, xs, ys, zpos, time.time() - t0, scene


def _encode_pixels(vol, fmt):
    """HU float volume -> stored integer array + tags."""
    if fmt in ("u12", "s12"):
        hu = np.clip(np.rint(vol), -1024, 3071)
    else:
        hu = np.clip(np.rint(vol), -1024, 30500)
    if fmt == "u12":
        return (hu + 1024).astype(np.uint16), dict(BitsStored=12, HighBit=11, PixelRepresentation=0, RescaleIntercept=-1024, RescaleSlope=1)
    if fmt == "s12":
        return hu.astype(np.int16), dict(BitsStored=16, HighBit=15, PixelRepresentation=1, RescaleIntercept=0, RescaleSlope=1)
    if fmt == "uext":
        return (hu + 1024).astype(np.uint16), dict(BitsStored=16, HighBit=15, PixelRepresentation=0, RescaleIntercept=-1024, RescaleSlope=1)
    if fmt == "sext":
        return hu.astype(np.int16), dict(BitsStored=16, HighBit=15, PixelRepresentation=1, RescaleIntercept=0, RescaleSlope=1)
    # uext2: slope 2
    return np.rint((hu + 8192) / 2.0).astype(np.uint16), dict(BitsStored=16, HighBit=15, PixelRepresentation=0, RescaleIntercept=-8192, RescaleSlope=2)


def write_study(params: dict, directory: str) -> dict:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

    p = params
    t0 = time.time()
    os.makedirs(directory, exist_ok=True)
    verts, Rg = build_geometry(p)
    screws = plan_screws(p, verts)
    vol, xs, ys, zpos, _, scene = render_volume(p, verts, screws, Rg)
    px = p["pixel_mm"]
    thick = p["slice_thickness"]
    stored, tags = _encode_pixels(vol, p["pixel_format"])
    del vol
    zmin, zmax = zpos.min() - thick / 2, zpos.max() + thick / 2
    truth = truth_from(p, screws, px, thick, zmin, zmax, (xs[0], xs[-1], ys[0], ys[-1]))
    # flip for prone orientation
    prone = p["position"] == "HFP"
    if prone:
        stored = stored[:, ::-1, ::-1]
        iop = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        ipp_xy = (xs[-1], ys[-1])
    else:
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ipp_xy = (xs[0], ys[0])
    order = np.argsort(-zpos) if p["descending"] else np.argsort(zpos)
    root = p["uid_root"]
    study_uid = _uid(root, "study")
    series_uid = _uid(root, "series")
    for_uid = _uid(root, "for")
    ts = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian, "rle": RLELossless}[p["transfer_syntax"]]
    for inst, k in enumerate(order, start=1):
        sop = _uid(root, "sop", inst)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ExplicitVRLittleEndian if ts == RLELossless else ts
        fm.ImplementationClassUID = "2.25.61234567890123456789012345678907"
        ds = Dataset()
        ds.file_meta = fm
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = sop
        ds.StudyDate = p["study_date"]
        ds.SeriesDate = p["study_date"]
        ds.AcquisitionDate = p["study_date"]
        ds.ContentDate = p["study_date"]
        ds.StudyTime = "101500"
        ds.SeriesTime = "101730"
        ds.AccessionNumber = "P7%08d" % (root % 10**8)
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC"
        ds.ManufacturerModelName = "PHANTOM7"
        ds.InstitutionName = "SYNTHETIC TEST SITE"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT SPINE POSTOP"
        ds.SeriesDescription = "Spine %s %.2fmm %s" % (p["kernel"], thick, p["kernel_name"])
        ds.PatientName = "PHANTOM7^S%d_%d%s" % (p["seed"], p["index"], "S" if p["small"] else "")
        ds.PatientID = "P7-%d-%d%s" % (p["seed"], p["index"], "S" if p["small"] else "")
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = p["body_part"]
        ds.SliceThickness = thick
        ds.SpacingBetweenSlices = p["spacing"]
        ds.KVP = 120
        ds.ConvolutionKernel = p["kernel_name"]
        ds.PatientPosition = p["position"]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = inst
        z = float(zpos[k])
        ds.ImagePositionPatient = [round(float(ipp_xy[0]), 4), round(float(ipp_xy[1]), 4), round(z, 4)]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = round(z, 4)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = stored.shape[1]
        ds.Columns = stored.shape[2]
        ds.PixelSpacing = [px, px]
        ds.BitsAllocated = 16
        for kk, vv in tags.items():
            setattr(ds, kk, vv)
        ds.RescaleType = "HU"
        if p["kernel"] == "bone":
            ds.WindowCenter, ds.WindowWidth = 500, 2000
        else:
            ds.WindowCenter, ds.WindowWidth = 40, 400
        arr = np.ascontiguousarray(stored[k])
        ds.PixelData = arr.tobytes()
        if ts == RLELossless:
            ds.compress(RLELossless, arr)
        pydicom.dcmwrite(os.path.join(directory, "IM%04d.dcm" % inst), ds, enforce_file_format=True)
    with open(os.path.join(directory, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=1)
    return truth

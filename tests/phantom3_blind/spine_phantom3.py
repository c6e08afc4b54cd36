"""spine_phantom3 -- independent synthetic postoperative thoraco-lumbar spine CT phantom.

Public API
----------
family(seed, n, small=False) -> list[dict]
    n deterministic, JSON-serialisable study parameter dicts.
compute_truth(params) -> dict
    geometry only (screw placement + breach measurement), no image.
write_study(params, directory) -> dict
    renders the CT, writes one DICOM file per axial slice + truth.json, returns the truth dict.

Coordinates: DICOM patient LPS (x -> patient left, y -> posterior, z -> superior), mm.
Vertebral local frame: u (patient left), v (posterior), w (superior), origin at the body centre.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["family", "write_study", "compute_truth", "LEVELS", "grade_from_depth"]

GENERATOR = "spine_phantom3"
VERSION = "1.0"

# cranial -> caudal
LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
INSTRUMENTABLE = LEVELS[1:]

# Approximate adult morphometry (mm / deg).  W,D,H body width/depth/height; PW,PH pedicle
# isthmus outer width/height; alpha transverse (medial) pedicle angle; CW,CD canal width/depth;
# disc = disc height below; LT lamina thickness; SL spinous length; ss spinous downward slope;
# TPL transverse process length; tpa TP posterior angulation; fj facet joint angle from the
# sagittal plane; phi = sagittal inclination of the superior endplate (+ = faces anteriorly).
ANAT = {
    "T9":  dict(W=33, D=27, H=21, PW=5.5, PH=13, alpha=6, CW=16, CD=15, disc=5, LT=6.0, SL=33, ss=45, TPL=17, tpa=35, fj=72, phi=-17),
    "T10": dict(W=35, D=28, H=22, PW=6.2, PH=14, alpha=6, CW=17, CD=15, disc=6, LT=6.0, SL=31, ss=40, TPL=15, tpa=30, fj=70, phi=-16),
    "T11": dict(W=37, D=29, H=23, PW=7.2, PH=16, alpha=6, CW=18, CD=16, disc=7, LT=6.5, SL=30, ss=30, TPL=9, tpa=25, fj=55, phi=-14),
    "T12": dict(W=40, D=30, H=24, PW=7.6, PH=16, alpha=8, CW=20, CD=16, disc=8, LT=7.0, SL=30, ss=20, TPL=7, tpa=20, fj=35, phi=-11),
    "L1":  dict(W=42, D=31, H=25, PW=8.2, PH=15, alpha=10, CW=22, CD=17, disc=9, LT=7.0, SL=30, ss=12, TPL=16, tpa=15, fj=30, phi=-8),
    "L2":  dict(W=44, D=32, H=26, PW=8.8, PH=15, alpha=12, CW=23, CD=16, disc=10, LT=7.0, SL=31, ss=10, TPL=21, tpa=12, fj=35, phi=-4),
    "L3":  dict(W=46, D=33, H=27, PW=10.2, PH=14.5, alpha=14, CW=23, CD=15, disc=11, LT=7.5, SL=31, ss=8, TPL=25, tpa=10, fj=40, phi=3),
    "L4":  dict(W=48, D=34, H=27, PW=12.5, PH=14, alpha=18, CW=23, CD=15, disc=11, LT=7.5, SL=29, ss=6, TPL=21, tpa=12, fj=45, phi=12),
    "L5":  dict(W=50, D=34, H=26, PW=16.0, PH=14, alpha=25, CW=25, CD=15, disc=11, LT=7.5, SL=24, ss=5, TPL=16, tpa=20, fj=50, phi=24),
    "S1":  dict(W=50, D=35, H=28, PW=18.0, PH=20, alpha=28, CW=28, CD=12, disc=0, LT=4.0, SL=10, ss=20, TPL=0, tpa=0, fj=50, phi=40),
}

GRADE_EDGES = [(0.0, "A"), (2.0, "B"), (4.0, "C"), (6.0, "D")]
DIRECTIONS = ["medial", "lateral", "superior", "inferior", "anterior"]

HU_TI = 7000.0
HU_COCR = 14000.0
HU_TA = 16000.0


def grade_from_depth(d: float) -> str:
    if d <= 0.0:
        return "A"
    if d < 2.0:
        return "B"
    if d < 4.0:
        return "C"
    if d < 6.0:
        return "D"
    return "E"


# ----------------------------------------------------------------------------------------
# small geometry helpers
# ----------------------------------------------------------------------------------------

def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float)


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], float)


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)


def _unit(v):
    v = np.asarray(v, float)
    return v / max(1e-12, float(np.linalg.norm(v)))


def _perp_basis(d):
    d = _unit(d)
    a = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _unit(np.cross(d, a))
    e2 = np.cross(d, e1)
    return e1, e2


def _ell2(x, y, a, b):
    """approximate signed distance to an axis-aligned ellipse (good near the boundary)."""
    ia = 1.0 / a
    ib = 1.0 / b
    xa = x * ia
    yb = y * ib
    k0 = np.sqrt(xa * xa + yb * yb)
    xa *= ia
    yb *= ib
    k1 = np.sqrt(xa * xa + yb * yb)
    k1 += 1e-7
    m = np.minimum(a, b) * 1e-7
    f = k0 - 1.0
    k0 += m
    f *= k0
    f /= k1
    return f


def _ell3(x, y, z, a, b, c):
    xa, yb, zc = x / a, y / b, z / c
    k0 = np.sqrt(xa * xa + yb * yb + zc * zc)
    k1 = np.sqrt((xa / a) ** 2 + (yb / b) ** 2 + (zc / c) ** 2)
    ratio = np.where(k1 > 1e-9, k0 / np.maximum(k1, 1e-9), min(a, b, c))
    return (k0 - 1.0) * ratio


def _sell3(x, y, a, b):
    """approximate SDF of a superellipse |x/a|^3+|y/b|^3=1 (flat sided vertebral body)."""
    ax_ = np.abs(x) / a
    by_ = np.abs(y) / b
    s = ax_ * ax_ * ax_ + by_ * by_ * by_
    r = np.cbrt(s)
    r2 = np.maximum(r * r, 1e-9)
    gx = ax_ * ax_ / a / r2
    gy = by_ * by_ / b / r2
    g = np.sqrt(gx * gx + gy * gy)
    return np.where(g > 1e-6, (r - 1.0) / np.maximum(g, 1e-6), -np.minimum(a, b))


def _box(x, y, z, hx, hy, hz, r=0.0):
    qx = np.abs(x) - (hx - r)
    qy = np.abs(y) - (hy - r)
    qz = np.abs(z) - (hz - r)
    out = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    ins = np.minimum(np.maximum(np.maximum(qx, qy), qz), 0)
    return out + ins - r


def _seg_dist(x, y, z, a, b):
    ab = b - a
    l2 = float(ab @ ab)
    dx, dy, dz = x - a[0], y - a[1], z - a[2]
    t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / max(l2, 1e-9), 0.0, 1.0)
    ex = dx - t * ab[0]
    ey = dy - t * ab[1]
    ez = dz - t * ab[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez)


# ----------------------------------------------------------------------------------------
# Bone objects: a frame (R local->patient/world rotation, c centre) and parts in local coords
# ----------------------------------------------------------------------------------------

class Part:
    __slots__ = ("name", "lo", "hi", "fn", "carve")

    def __init__(self, name, lo, hi, fn, carve=True):
        self.name, self.lo, self.hi, self.fn, self.carve = name, np.asarray(lo, float), np.asarray(hi, float), fn, carve


class BoneObject:
    """union of parts (approx. SDFs in a local frame), optionally carved by a canal ellipse."""

    def __init__(self, name, R, c, parts, canal=None, tc=1.0, cort=1500.0, canc=180.0, texture=60.0):
        self.name, self.R, self.c = name, np.asarray(R, float), np.asarray(c, float)
        self.parts = parts
        self.canal = canal  # (vC, CWh, CDh) or None
        self.tc, self.cort, self.canc, self.texture = tc, cort, canc, texture

    def sdf_local(self, u, v, w, exclude=(), cull=False):
        fc = None
        fn_ = None
        if cull:
            qlo = np.array([np.min(u), np.min(v), np.min(w)])
            qhi = np.array([np.max(u), np.max(v), np.max(w)])
        for p in self.parts:
            if p.name in exclude:
                continue
            if cull and (np.any(p.lo > qhi) or np.any(p.hi < qlo)):
                continue
            f = p.fn(u, v, w)
            if p.carve:
                fc = f if fc is None else np.minimum(fc, f)
            else:
                fn_ = f if fn_ is None else np.minimum(fn_, f)
        if fc is not None and self.canal is not None:
            vC, a, b = self.canal
            fc = np.maximum(fc, -_ell2(u, v - vC, a, b))
        if fc is None:
            return fn_
        if fn_ is None:
            return fc
        return np.minimum(fc, fn_)

    def world_bbox(self, lo, hi):
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        wc = corners @ self.R.T + self.c
        return wc.min(0), wc.max(0)


def _seg_part(name, a, b, r, carve=False):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    lo = np.minimum(a, b) - r - 0.5
    hi = np.maximum(a, b) + r + 0.5
    return Part(name, lo, hi, lambda u, v, w, a=a, b=b, r=r: _seg_dist(u, v, w, a, b) - r, carve)


def _make_vertebra(V):
    """build the parts of a vertebra from the resolved per-level dict V (local frame)."""
    W, D, H = V["W"], V["D"], V["H"]
    PW, PH = V["PW"], V["PH"]
    al = math.radians(V["alpha"])
    CWh, CDh = V["CW"] / 2.0, V["CD"] / 2.0
    vC, v_i, uP, wP = V["vC"], V["v_i"], V["uP"], V["wP"]
    Lpost, Lant = V["Lpost"], V["Lant"]
    LT, SL = V["LT"], V["SL"]
    sacrum = V["level"] == "S1"
    parts = []

    def body(u, v, w, W=W, D=D, H=H):
        wn = np.minimum((w / (H / 2.0)) ** 2, 1.0)
        waist = 1.0 - 0.05 * (1.0 - wn)
        fxy = 0.5 * (_sell3(u, v, W / 2.0 * waist, D / 2.0 * waist) + _ell2(u, v, W / 2.0 * waist, D / 2.0 * waist))
        rn = np.minimum((u / (W / 2.0)) ** 2 + (v / (D / 2.0)) ** 2, 1.0)
        fz = np.abs(w) - (H / 2.0 - 0.9 * (1.0 - rn))
        return np.maximum(np.maximum(fxy, fz), v - (D / 2.0 - 1.5))

    parts.append(Part("body", [-W / 2 - 1, -D / 2 - 1, -H / 2 - 1], [W / 2 + 1, D / 2 + 1, H / 2 + 1], body))
    if sacrum:
        # fused S2 segment and the lateral masses (alae)
        s2c = np.array([0.0, 3.0, -H / 2.0 - 13.0])
        parts.append(Part("s2", s2c - [21, 15, 14], s2c + [21, 15, 14],
                          lambda u, v, w, c=s2c: _ell3(u - c[0], v - c[1], w - c[2], 20.0, 14.0, 13.0)))
        for s in (-1, 1):
            ac = np.array([s * 33.0, 7.0, -9.0])
            parts.append(Part("ala", ac - [17, 18, 19], ac + [17, 18, 19],
                              lambda u, v, w, c=ac: _ell3(u - c[0], v - c[1], w - c[2], 16.0, 17.0, 18.0)))
            ac2 = np.array([s * 24.0, 6.0, -H / 2.0 - 14.0])
            parts.append(Part("ala2", ac2 - [13, 13, 12], ac2 + [13, 13, 12],
                              lambda u, v, w, c=ac2: _ell3(u - c[0], v - c[1], w - c[2], 12.0, 12.0, 11.0)))

    # pedicles (not carved by the canal: their medial cortex *is* the canal wall)
    for s in (-1, 1):
        P = np.array([s * uP, v_i, wP])
        a = np.array([-s * math.sin(al), -math.cos(al), 0.0])  # anterior-medial
        e1 = np.array([s * math.cos(al), -math.sin(al), 0.0])  # lateral
        r = max(PW, PH) * 0.75 + 1

        def ped(u, v, w, P=P, a=a, e1=e1):
            du, dv, dw = u - P[0], v - P[1], w - P[2]
            t = du * a[0] + dv * a[1]
            x1 = du * e1[0] + dv * e1[1]
            fl = 1.0 + 0.22 * np.minimum((t / 8.0) ** 2, 2.5)
            f = _ell2(x1, dw, PW / 2.0 * fl, PH / 2.0 * (1.0 + 0.08 * np.minimum((t / 8.0) ** 2, 2.5)))
            return np.maximum(f, np.maximum(t - Lant, -Lpost - t))

        ends = [P + a * Lant, P - a * Lpost]
        lo = np.min(ends, 0) - r
        hi = np.max(ends, 0) + r
        parts.append(Part("pedicle", lo, hi, ped, carve=False))

    # lamina (shingled posterior arch)
    if not V.get("laminectomy"):
        hwL = uP + 1.0
        dL = CDh + LT
        wLc = -2.0
        hL = H / 2.0 - 1.0 if not sacrum else H / 2.0 + 4.0

        def lam(u, v, w):
            dv = v - vC
            f = _ell2(u, dv, hwL, dL)
            f = np.maximum(f, -(dv + 0.3 * CDh))
            wl = w + 0.35 * dv
            return np.maximum(f, np.abs(wl - wLc) - hL)

        parts.append(Part("lamina", [-hwL - 1, vC - 0.4 * CDh, -H / 2 - 14], [hwL + 1, vC + dL + 1, H / 2 + 6], lam))
        # spinous process
        sg = math.radians(V["ss"])
        S0 = np.array([0.0, vC + CDh + LT - 3.0, wLc - 0.35 * (CDh + LT)])
        ds = np.array([0.0, math.cos(sg), -math.sin(sg)])
        dn = np.array([0.0, math.sin(sg), math.cos(sg)])
        hs = 8.5 if V["level"][0] == "L" else (5.0 if not sacrum else 6.0)
        hx = 3.2 if V["level"][0] == "L" else 2.6

        def spin(u, v, w, S0=S0, ds=ds, dn=dn, hs=hs, hx=hx):
            dv, dw = v - S0[1], w - S0[2]
            t = dv * ds[1] + dw * ds[2]
            y2 = dv * dn[1] + dw * dn[2]
            return _box(u, t - SL / 2.0, y2, hx, SL / 2.0, hs * (1.0 + 0.15 * np.clip(t / SL, 0, 1)), r=1.8)

        e = [S0, S0 + ds * SL]
        lo = np.min(e, 0) - [hx + 1, hs * 1.3 + 2, hs * 1.3 + 2]
        hi = np.max(e, 0) + [hx + 1, hs * 1.3 + 2, hs * 1.3 + 2]
        lo[0], hi[0] = -hx - 1, hx + 1
        parts.append(Part("spinous", lo, hi, spin))

    # transverse processes
    if V["TPL"] > 0:
        ta = math.radians(V["tpa"])
        for s in (-1, 1):
            T0 = np.array([s * (uP + PW * 0.15), v_i + 6.0, wP])
            dT = np.array([s * math.cos(ta), math.sin(ta), 0.0])
            nT = np.array([-s * math.sin(ta), math.cos(ta), 0.0])
            hz = 5.5 if V["level"] != "L5" else 8.0
            L = V["TPL"]

            def tp(u, v, w, T0=T0, dT=dT, nT=nT, hz=hz, L=L):
                du, dv = u - T0[0], v - T0[1]
                t = du * dT[0] + dv * dT[1]
                y2 = du * nT[0] + dv * nT[1]
                return _box(t - L / 2.0, y2, w - T0[2], L / 2.0, 3.6, hz * (1.0 - 0.3 * np.clip(t / L, 0, 1)), r=2.2)

            e = [T0, T0 + dT * L]
            lo = np.min(e, 0) - [5, 5, hz + 1]
            hi = np.max(e, 0) + [5, 5, hz + 1]
            parts.append(Part("tp", lo, hi, tp))

    # articular processes: SAP (towards the joint above) and IAP (towards the joint below)
    for key, name in (("sap", "sap"), ("iap", "iap")):
        for s in (-1, 1):
            J = V.get(f"{key}_{s}")
            if J is None:
                continue
            if key == "iap" and V.get("laminectomy") and V.get("facetectomy"):
                continue
            J = np.asarray(J, float)
            th = math.radians(V["fj"])
            dj = np.array([s * math.sin(th), math.cos(th), 0.0])   # along the joint line
            nj = np.array([s * math.cos(th), -math.sin(th), 0.0])  # towards SAP side (antero-lateral)
            sign = 1.0 if key == "sap" else -1.0
            ctr = J + sign * nj * 3.4
            if key == "sap":
                wlo, whi = wP, J[2] + 7.5
            else:
                wlo, whi = J[2] - 7.5, -H / 2.0 + 3.0
            wc, hh = (wlo + whi) / 2.0, max(3.0, (whi - wlo) / 2.0)

            def art(u, v, w, ctr=ctr, dj=dj, nj=nj, wc=wc, hh=hh):
                du, dv = u - ctr[0], v - ctr[1]
                a_ = du * dj[0] + dv * dj[1]
                b_ = du * nj[0] + dv * nj[1]
                return _box(a_, b_, w - wc, 7.0, 2.6, hh, r=2.0)

            lo = np.array([ctr[0] - 9, ctr[1] - 9, wc - hh - 1])
            hi = np.array([ctr[0] + 9, ctr[1] + 9, wc + hh + 1])
            parts.append(Part(name, lo, hi, art))

    tc = 1.0 if V["level"][0] != "T" else 0.9
    return parts, (vC, CWh, CDh), tc


# ----------------------------------------------------------------------------------------
# study sampling
# ----------------------------------------------------------------------------------------

CONSTRUCTS = [
    (["L4", "L5"], 12), (["L4", "L5", "S1"], 9), (["L5", "S1"], 7), (["L3", "L4", "L5"], 7),
    (["L3", "L4", "L5", "S1"], 4), (["L2", "L3", "L4"], 3), (["L3", "L4"], 4), (["L2", "L3", "L4", "L5"], 2),
    (["L1", "L2", "L3"], 2), (["T12", "L1", "L2"], 3), (["T11", "T12", "L1", "L2"], 2),
    (["T10", "T11", "T12", "L1"], 2), (["T10", "T11", "T12", "L1", "L2"], 1), (["T12", "L1"], 1),
]
SMALL_CONSTRUCTS = [(["L4", "L5"], 5), (["L5", "S1"], 3), (["L3", "L4"], 2), (["T12", "L1"], 1), (["T10", "T11"], 1)]

SCREW_DIAM = {"T10": (4.5, 5.5), "T11": (4.5, 5.5), "T12": (5.0, 6.0), "L1": (5.0, 6.5), "L2": (5.5, 6.5),
              "L3": (6.0, 7.0), "L4": (6.0, 7.0), "L5": (6.5, 7.5), "S1": (6.5, 7.5)}

GRADE_P = {"A": 0.47, "B": 0.18, "C": 0.15, "D": 0.10, "E": 0.10}
DIR_P = {
    "B": {"medial": 0.35, "lateral": 0.35, "superior": 0.1, "inferior": 0.1, "anterior": 0.1},
    "C": {"medial": 0.45, "lateral": 0.33, "inferior": 0.1, "superior": 0.06, "anterior": 0.06},
    "D": {"medial": 0.72, "lateral": 0.23, "inferior": 0.05},
    "E": {"medial": 0.78, "lateral": 0.18, "inferior": 0.04},
}
DEPTH_RANGE = {"B": (0.4, 1.6), "C": (2.35, 3.65), "D": (4.35, 5.65), "E": (6.35, 8.8)}


def _choice(rng, d):
    keys = list(d.keys())
    p = np.array([d[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _sample_study(seed, i, small):
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(i), 3 if not small else 4])
    cons = SMALL_CONSTRUCTS if small else CONSTRUCTS
    levels = list(cons[int(rng.choice(len(cons), p=np.array([c[1] for c in cons], float) / sum(c[1] for c in cons)))][0])

    # ---------------- acquisition
    if small:
        matrix = 128
        ps = float(rng.uniform(0.78, 1.0))
        thk = float(rng.choice([1.0, 1.25, 1.5, 2.0]))
        kernel_sharp = bool(rng.random() < 0.7)
    else:
        matrix = 512
        r = rng.random()
        ps = float(rng.uniform(0.3, 0.5) if r < 0.55 else (rng.uniform(0.5, 0.7) if r < 0.82 else rng.uniform(0.7, 0.9)))
        thk = float(rng.choice([0.6, 0.625, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                               p=np.array([10, 8, 8, 6, 16, 8, 8, 12, 6, 8], float) / 90.0))
        kernel_sharp = bool(rng.random() < 0.7)
    ps = round(ps, 4)
    if kernel_sharp:
        kernel = str(rng.choice(["BONE", "B70f", "Br64", "YB", "FC30"]))
        noise = float(rng.uniform(35, 95))
        psf = float(rng.uniform(0.32, 0.45))
        edge = float(rng.uniform(0.25, 0.6))
    else:
        kernel = str(rng.choice(["STANDARD", "B30f", "Br40", "FC08"]))
        noise = float(rng.uniform(10, 30))
        psf = float(rng.uniform(0.55, 0.8))
        edge = 0.0
    acq = dict(
        matrix=matrix, pixel_spacing_mm=ps, slice_thickness_mm=thk, kernel=kernel, kernel_sharp=kernel_sharp,
        noise_hu_sd=round(noise, 1), psf_sigma_mm=round(psf, 3), edge_enhance=round(edge, 3),
        bloom_sigma_mm=round(float(rng.uniform(0.35, 0.9)), 3),
        streak_strength=round(float(rng.uniform(0.5, 1.6) * (0.35 if rng.random() < 0.2 else 1.0)), 3),
        hu_clip_12bit=bool(rng.random() < 0.25),
        rescale_intercept=float(rng.choice([-1024.0, 0.0, -2048.0], p=[0.7, 0.2, 0.1])),
        rescale_slope=1.0,
        kvp=float(rng.choice([100, 120, 120, 140])),
        fov_offset_frac=[float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))],
        fov_mode="off-centre" if rng.random() < 0.35 else "centred",
        margin_frac=[float(rng.uniform(0.45, 0.85)), float(rng.uniform(0.45, 0.85))],
        patient_position=str(rng.choice(["HFS", "FFS"], p=[0.7, 0.3])),
        max_slices=int(60 if small else 330),
        contrast_iv=bool(rng.random() < 0.15),
    )
    acq["mar"] = bool(acq["streak_strength"] < 0.6)

    # ---------------- patient
    osteo = bool(rng.random() < 0.25)
    roll = float(rng.uniform(-3, 3)) if rng.random() < 0.7 else float(rng.choice([-1, 1]) * rng.uniform(5, 14))
    scol = float(rng.uniform(4, 12)) if rng.random() < 0.3 else float(rng.uniform(0, 3))
    patient = dict(
        sex=str(rng.choice(["M", "F"])), age=int(rng.integers(28, 86)),
        roll_deg=round(roll, 2), scale=round(float(rng.uniform(0.9, 1.1)), 3),
        body_half_width=round(float(rng.uniform(135, 190)), 1), body_half_ap=round(float(rng.uniform(95, 135)), 1),
        fat_mm=round(float(rng.uniform(8, 40)), 1), fat_infiltration=round(float(rng.uniform(0.05, 0.5)), 2),
        osteoporotic=osteo, canc_hu=round(float(rng.uniform(60, 120) if osteo else rng.uniform(140, 240)), 1),
        cort_hu=round(float(rng.uniform(1150, 1450) if osteo else rng.uniform(1400, 1800)), 1),
        lordosis_scale=round(float(rng.uniform(0.7, 1.25)), 3),
        scoliosis_deg=round(scol, 2), scoliosis_phase=round(float(rng.uniform(0, 2 * math.pi)), 3),
        scoliosis_rot_coupling=round(float(rng.uniform(0.3, 1.0)), 3),
        mattress_mm=round(float(rng.choice([0.0, rng.uniform(15, 45)])), 1),
        level_jitter={lv: [round(float(rng.uniform(0.88, 1.12)), 3), round(float(rng.uniform(-2.5, 2.5)), 2),
                           round(float(rng.uniform(-1.5, 1.5)), 2)] for lv in LEVELS},
        bowel_seed=int(rng.integers(0, 2 ** 31 - 1)),
    )

    # ---------------- surgery
    lam = []
    if rng.random() < 0.38:
        cand = [lv for lv in levels if lv != "S1"]
        lam.append(str(rng.choice(cand)))
        if rng.random() < 0.2:
            j = LEVELS.index(lam[0])
            nb = LEVELS[j - 1] if LEVELS[j - 1] in levels else (LEVELS[j + 1] if LEVELS[j + 1] in levels and LEVELS[j + 1] != "S1" else None)
            if nb:
                lam.append(nb)
    unilateral = None
    if rng.random() < 0.07:
        unilateral = str(rng.choice(["left", "right"]))
    missing = None
    if rng.random() < 0.13:
        missing = [str(rng.choice(levels)), str(rng.choice(["left", "right"]))]
    screw_mat = "cobalt-chrome" if rng.random() < 0.15 else "titanium"
    cement_study = bool(rng.random() < (0.35 if osteo else 0.05))
    cement_all = bool(rng.random() < 0.5)
    screws = []
    for lv in levels:
        for side in ("left", "right"):
            if unilateral and side != unilateral:
                continue
            if missing and missing[0] == lv and missing[1] == side and not unilateral:
                continue
            g = _choice(rng, GRADE_P)
            if g == "A":
                direction, depth = "none", 0.0
            else:
                direction = _choice(rng, DIR_P[g])
                lo, hi = DEPTH_RANGE[g]
                if direction != "medial" and g == "E":
                    hi = 7.5
                depth = float(rng.uniform(lo, hi))
            dlo, dhi = SCREW_DIAM[lv]
            diam = float(np.round(rng.uniform(dlo, dhi) * 2) / 2)
            cem = cement_study and (cement_all or lv in (levels[0], levels[-1]))
            screws.append(dict(level=lv, side=side, target_grade=g, target_direction=direction,
                               target_depth_mm=round(depth, 3), diameter_mm=diam, material=screw_mat,
                               cement=bool(cem), conv_jitter_deg=round(float(rng.uniform(-2.5, 2.5)), 2),
                               sag_jitter_deg=round(float(rng.uniform(-3, 3)), 2),
                               depth_pref=round(float(rng.uniform(0.0, 1.0)), 3)))
    cages = []
    for a, b in zip(levels[:-1], levels[1:]):
        if rng.random() < (0.45 if a[0] == "L" else 0.1):
            cages.append(dict(disc=f"{a}-{b}", type=str(rng.choice(["TLIF", "PLIF", "TI-TLIF"], p=[0.6, 0.3, 0.1])),
                              side=str(rng.choice(["left", "right"])), angle_deg=round(float(rng.uniform(25, 45)), 1)))
    surgery = dict(
        instrumented_levels=levels, laminectomy_levels=lam, unilateral=unilateral, missing_screw=missing,
        screws=screws, rod_material="cobalt-chrome" if rng.random() < 0.3 else "titanium",
        rod_diameter_mm=float(rng.choice([5.5, 5.5, 6.0, 6.35, 4.75])),
        crosslink=bool(rng.random() < (0.3 if len(levels) >= 3 else 0.1)) and not unilateral,
        cages=cages, days_postop=int(rng.integers(1, 10) if rng.random() < 0.5 else rng.integers(30, 1500)),
        staples=bool(rng.random() < 0.35), drain=bool(rng.random() < 0.2),
        posterolateral_graft=bool(rng.random() < 0.4),
    )
    return dict(
        generator=GENERATOR, version=VERSION, study_id=f"ph3-{int(seed)}-{int(i):03d}{'s' if small else ''}",
        seed=int(seed), index=int(i), small=bool(small), study_seed=int(rng.integers(0, 2 ** 31 - 1)),
        acquisition=acq, patient=patient, surgery=surgery,
    )


def family(seed: int, n: int, small: bool = False) -> list:
    """n deterministic study parameter dicts (JSON-serialisable) for seed."""
    return [_sample_study(seed, i, small) for i in range(int(n))]


# ----------------------------------------------------------------------------------------
# anatomy construction
# ----------------------------------------------------------------------------------------

class Anatomy:
    pass


def _build_anatomy(params):
    P = params["patient"]
    S = params["surgery"]
    A = Anatomy()
    sc = P["scale"]
    verts = {}
    for lv in LEVELS:
        base = dict(ANAT[lv])
        jit = P["level_jitter"][lv]
        V = dict(base)
        V["level"] = lv
        for k in ("W", "D", "H", "CW", "CD", "LT", "SL", "TPL"):
            V[k] = base[k] * sc
        V["disc"] = base["disc"] * sc
        V["PW"] = base["PW"] * sc * jit[0]
        V["PH"] = base["PH"] * sc
        V["alpha"] = base["alpha"] + jit[1]
        V["phi"] = base["phi"]
        V["laminectomy"] = lv in S["laminectomy_levels"]
        V["facetectomy"] = False
        CWh, CDh = V["CW"] / 2.0, V["CD"] / 2.0
        V["vC"] = V["D"] / 2.0 - 1.5 + CDh
        V["v_i"] = V["vC"] - 0.15 * V["CD"]
        hw_i = CWh * math.sqrt(1 - 0.09)
        V["uP"] = hw_i + V["PW"] / 2.0 + 0.5
        V["wP"] = 0.12 * V["H"] if lv != "S1" else 0.0
        V["Lpost"] = 11.0 if lv != "S1" else 8.0
        V["Lant"] = 12.0
        verts[lv] = V
    # sagittal/coronal/axial orientation, chain from S1 upwards
    ls = P["lordosis_scale"]
    n = len(LEVELS)
    c = np.zeros(3)
    Rs = {}
    cs = {}
    phi_ref = ANAT["L3"]["phi"]
    for k in range(n - 1, -1, -1):
        lv = LEVELS[k]
        V = verts[lv]
        phi = math.radians(phi_ref + (ANAT[lv]["phi"] - phi_ref) * ls)
        frac = (n - 1 - k) / (n - 1)
        psi = math.radians(P["scoliosis_deg"] * math.sin(2 * math.pi * frac * 1.2 + P["scoliosis_phase"]))
        rho = math.radians(P["scoliosis_deg"] * P["scoliosis_rot_coupling"] *
                           math.cos(2 * math.pi * frac * 1.2 + P["scoliosis_phase"]) + P["level_jitter"][lv][2])
        R = _ry(psi) @ _rx(phi) @ _rz(rho)
        Rs[lv] = R
    cs = {}
    for k in range(n - 1, -1, -1):
        lv = LEVELS[k]
        if k == n - 1:
            cs[lv] = np.zeros(3)
            continue
        lo = LEVELS[k + 1]
        nd = _unit(Rs[lo][:, 2] + Rs[lv][:, 2])
        cs[lv] = cs[lo] + Rs[lo][:, 2] * verts[lo]["H"] / 2.0 + nd * verts[lv]["disc"] + Rs[lv][:, 2] * verts[lv]["H"] / 2.0
    # centre laterally, place posterior skin plane
    mean_x = np.mean([cs[lv][0] for lv in LEVELS[3:]])
    for lv in LEVELS:
        cs[lv] = cs[lv] - np.array([mean_x, 0, 0])
    # posterior-most point of each vertebra (approx spinous tip) -> skin distance
    tips = []
    for lv in LEVELS:
        V = verts[lv]
        sg = math.radians(V["ss"])
        tipl = np.array([0.0, V["vC"] + V["CD"] / 2 + V["LT"] - 3 + V["SL"] * math.cos(sg), -2 - V["SL"] * math.sin(sg)])
        tips.append((Rs[lv] @ tipl + cs[lv])[1])
    fat = P["fat_mm"]
    yskin = max(tips) + fat * 0.8 + 6.0
    # patient frame: body centre at origin (x=0), skin plane at +B - flatten
    B = P["body_half_ap"]
    flat = 18.0
    shift_y = (B - flat) - yskin
    for lv in LEVELS:
        cs[lv] = cs[lv] + np.array([0.0, shift_y, 0.0])
    A.yskin_p = B - flat
    # world transform: roll about body centre, then translation
    rng = np.random.default_rng(params["study_seed"])
    roll = math.radians(P["roll_deg"])
    A.Rroll = _rz(roll)
    A.T = np.array([float(rng.uniform(-15, 15)), float(rng.uniform(-40, 10)), float(rng.uniform(-420, -120))])
    A.T[2] -= cs["L3"][2]
    A.verts = verts
    A.R = {lv: A.Rroll @ Rs[lv] for lv in LEVELS}
    A.c = {lv: A.Rroll @ cs[lv] + A.T for lv in LEVELS}
    A.R_p = Rs
    A.c_p = cs
    # facet joint centres (patient coords) between neighbours
    for k in range(n - 1):
        up, lo = LEVELS[k], LEVELS[k + 1]
        Vu, Vl = verts[up], verts[lo]
        for s in (-1, 1):
            Ju = np.array([s * (Vu["uP"] - 0.5), Vu["v_i"] + 9.5, -Vu["H"] / 2 - Vu["disc"] * 0.5])
            Jl = np.array([s * (Vl["uP"] - 0.5), Vl["v_i"] + 9.5, Vl["H"] / 2 + Vu["disc"] * 0.5])
            Jp = 0.5 * ((Rs[up] @ Ju + cs[up]) + (Rs[lo] @ Jl + cs[lo]))
            Vu[f"iap_{s}"] = list(Rs[up].T @ (Jp - cs[up]))
            Vl[f"sap_{s}"] = list(Rs[lo].T @ (Jp - cs[lo]))
    # S1 needs no IAP; T9 gets an SAP pointing up (approximate)
    for s in (-1, 1):
        V = verts["T9"]
        V[f"sap_{s}"] = [s * (V["uP"] - 0.5), V["v_i"] + 9.5, V["H"] / 2 + V["disc"] * 0.5]
    # bone objects
    A.bones = {}
    canc = P["canc_hu"]
    cort = P["cort_hu"]
    for lv in LEVELS:
        parts, canal, tc = _make_vertebra(verts[lv])
        A.bones[lv] = BoneObject(lv, A.R[lv], A.c[lv], parts, canal, tc=tc, cort=cort, canc=canc)
    return A


def _ref_sdf(A, lv, u, v, w, cull=False):
    """reference bone for breach measurement = the rendered vertebra itself."""
    f = A.bones[lv].sdf_local(u, v, w, cull=cull)
    if f is None:
        return np.full(np.shape(u), 1e3)
    return f


# ----------------------------------------------------------------------------------------
# screw placement and truthful breach measurement
# ----------------------------------------------------------------------------------------

def _screw_surface(E, d, L, R, t_min=0.0, step=0.5, nang=24):
    e1, e2 = _perp_basis(d)
    ts = np.arange(t_min, L + 1e-6, step)
    taper = 4.0
    rad = np.where(ts > L - taper, np.maximum(R * (L - ts) / taper, 0.6), R)
    ang = np.linspace(0, 2 * math.pi, nang, endpoint=False)
    ca, sa = np.cos(ang), np.sin(ang)
    pts = (E[None, None, :] + ts[:, None, None] * d[None, None, :]
           + rad[:, None, None] * (ca[None, :, None] * e1[None, None, :] + sa[None, :, None] * e2[None, None, :]))
    tip = E + d * L
    pts = np.concatenate([pts.reshape(-1, 3), tip[None, :]], 0)
    tt = np.concatenate([np.repeat(ts, nang), [L]])
    return pts, tt


def _bone_entry(A, lv, axis_p, d):
    """first point (from posterior) where the axis enters the bone of this vertebra."""
    ts = np.arange(-40.0, 30.0, 0.1)
    pts = axis_p[None, :] + ts[:, None] * d[None, :]
    f = _ref_sdf(A, lv, pts[:, 0], pts[:, 1], pts[:, 2])
    inside = np.nonzero(f < 0)[0]
    if len(inside) == 0:
        return axis_p
    return pts[inside[0]]


def _anterior_exit(A, lv, E, d):
    """distance along d from E to the anterior exit of the vertebral body."""
    ts = np.arange(5.0, 95.0, 0.1)
    pts = E[None, :] + ts[:, None] * d[None, :]
    f = _ref_sdf(A, lv, pts[:, 0], pts[:, 1], pts[:, 2])
    ins = f < 0
    # last inside point of the first long inside run that reaches the body
    idx = np.nonzero(ins)[0]
    if len(idx) == 0:
        return 40.0
    # walk until we leave bone for > 2 mm
    last = idx[0]
    for j in idx:
        if ts[j] - ts[last] > 2.0:
            break
        last = j
    return float(ts[last])


def _trajectory(A, lv, side, sc, gamma, direction):
    V = A.verts[lv]
    s = 1.0 if side == "left" else -1.0
    al = math.radians(V["alpha"] + sc["conv_jitter_deg"])
    sag = math.radians(sc["sag_jitter_deg"] + (12.0 if lv == "S1" else 0.0))
    P = np.array([s * V["uP"], V["v_i"], V["wP"]])
    d = np.array([-s * math.sin(al) * math.cos(sag), -math.cos(al) * math.cos(sag), math.sin(sag)])
    shift = np.zeros(3)
    extra_in = 0.0
    if direction == "medial":
        ang = math.radians(22.0) * gamma
        d = _rz(-s * ang) @ d
        shift = np.array([-s * 4.5 * gamma, 0.0, 0.0])
    elif direction == "lateral":
        ang = math.radians(9.0) * gamma
        d = _rz(s * ang) @ d
        shift = np.array([s * 7.0 * gamma, 0.0, 0.0])
    elif direction in ("superior", "inferior"):
        sg = 1.0 if direction == "superior" else -1.0
        k = _unit(np.cross(d, [0, 0, 1.0]))
        th = sg * math.radians(25.0) * gamma
        d = d * math.cos(th) + np.cross(k, d) * math.sin(th)
        shift = np.array([0.0, 0.0, sg * 3.5 * gamma])
    elif direction == "anterior":
        extra_in = 16.0 * gamma
    d = _unit(d)
    axis_p = P + shift
    E = _bone_entry(A, lv, axis_p, d)
    return E, d, extra_in


def _analytic_depth(A, lv, E, d, L, R):
    pts, tt = _screw_surface(E, d, L, R, t_min=3.0, step=0.6, nang=16)
    f = _ref_sdf(A, lv, pts[:, 0], pts[:, 1], pts[:, 2])
    return float(max(0.0, f.max()))


def _measure_breach(A, lv, side, E, d, L, R, h=0.25):
    """EDT-based truthful breach depth per direction, computed from the rendered implicit bone."""
    V = A.verts[lv]
    s = 1.0 if side == "left" else -1.0
    pts, tt = _screw_surface(E, d, L, R, t_min=0.0, step=0.25, nang=48)
    f = _ref_sdf(A, lv, pts[:, 0], pts[:, 1], pts[:, 2])
    out = (f > -0.05) & (tt >= 1.0)
    res = {k: 0.0 for k in DIRECTIONS}
    if not np.any(out):
        return res
    q = pts[out]
    est = float(max(0.0, f[out].max()))
    m = est * 1.25 + 2.0
    lo = q.min(0) - m
    hi = q.max(0) + m
    h = max(h, float(np.prod(hi - lo) / 4.0e5) ** (1.0 / 3.0))
    shape = np.ceil((hi - lo) / h).astype(int) + 1
    gu = (lo[0] + h * np.arange(shape[0]))[:, None, None]
    gv = (lo[1] + h * np.arange(shape[1]))[None, :, None]
    gw = (lo[2] + h * np.arange(shape[2]))[None, None, :]
    U, Vv, Wg = np.broadcast_arrays(gu, gv, gw)
    bone = _ref_sdf(A, lv, U, Vv, Wg, cull=True) < 0
    if not bone.any():
        return res
    dist, ind = ndimage.distance_transform_edt(~bone, sampling=h, return_indices=True)
    idx = (q - lo) / h
    dq = ndimage.map_coordinates(dist, idx.T, order=1, mode="nearest") - 0.5 * h
    ii = np.clip(np.round(idx).astype(int), 0, shape - 1)
    near = np.stack([ind[k][ii[:, 0], ii[:, 1], ii[:, 2]] for k in range(3)], 1) * h + lo
    disp = q - near
    CWh, CDh, vC = V["CW"] / 2.0, V["CD"] / 2.0, V["vC"]
    in_canal = (np.abs(q[:, 0]) < CWh + 2.0) & (q[:, 1] > vC - CDh - 2.0) & (q[:, 1] < vC + CDh + 2.0)
    names = ["medial", "lateral", "superior", "inferior", "anterior", "posterior"]
    comp = np.stack([-s * disp[:, 0], s * disp[:, 0], disp[:, 2], -disp[:, 2], -disp[:, 1], disp[:, 1]], 1)
    cls = np.argmax(comp, 1)
    # posterior displacement: inside the canal -> medial, elsewhere (proximal shaft) -> ignored
    cls = np.where((cls == 5) & in_canal, 0, cls)
    relabel = in_canal & np.isin(cls, [2, 3, 4]) & (comp[:, 0] > 0.3 * np.maximum(dq, 1e-6))
    cls = np.where(relabel, 0, cls)
    valid = (dq > 0.02) & (cls != 5)
    for k in range(5):
        sel = valid & (cls == k)
        if np.any(sel):
            res[names[k]] = float(dq[sel].max())
    return {k: round(v, 2) for k, v in res.items()}


def _place_screw(A, sc):
    lv, side = sc["level"], sc["side"]
    R = sc["diameter_mm"] / 2.0
    V = A.verts[lv]
    direction = sc["target_direction"]
    tgrade = sc["target_grade"]
    sc = dict(sc)
    if tgrade == "A":
        R = min(R, max(2.25, (V["PW"] - 1.3) / 2.0))
        R = math.floor(R * 4 + 1e-6) / 4.0
    E0, d0, _ = _trajectory(A, lv, side, sc, 0.0, "none")
    avail = _anterior_exit(A, lv, E0, d0)
    lengths = [35.0, 40.0, 45.0, 50.0, 55.0]
    okl = [x for x in lengths if x <= avail - 2.5]
    if not okl:
        L = 35.0
    else:
        L = okl[-1] if sc["depth_pref"] > 0.35 or len(okl) == 1 else okl[-2]

    def build(gamma):
        E, d, extra = _trajectory(A, lv, side, sc, gamma, direction)
        if extra > 0:
            E = E + d * extra
        return E, d

    target = sc["target_depth_mm"]
    gamma = 0.0
    if tgrade == "A":
        # shrink jitter / diameter until the screw is fully contained (it may stay B if impossible)
        for k in range(6):
            E, d = build(0.0)
            depths = _measure_breach(A, lv, side, E, d, L, R)
            if max(depths.values()) <= 0.0:
                break
            sc["conv_jitter_deg"] *= 0.5
            sc["sag_jitter_deg"] *= 0.5
            if k >= 1:
                R = max(2.25, R - 0.25)
            if k >= 3 and L > 35.0:
                L -= 5.0
    else:
        goal = target
        for _ in range(3):
            lo_g, hi_g = 0.0, 1.0
            while _analytic_depth(A, lv, *build(hi_g), L, R) < goal and hi_g < 2.2:
                hi_g += 0.4
            for _ in range(20):
                mid = 0.5 * (lo_g + hi_g)
                if _analytic_depth(A, lv, *build(mid), L, R) < goal:
                    lo_g = mid
                else:
                    hi_g = mid
            gamma = 0.5 * (lo_g + hi_g)
            E, d = build(gamma)
            depths = _measure_breach(A, lv, side, E, d, L, R)
            meas = max(depths.values())
            if grade_from_depth(meas) == tgrade and abs(meas - target) < 0.6:
                break
            goal = max(0.2, goal + (target - meas))
    meas = max(depths.values())
    bdir = max(depths, key=depths.get) if meas > 0 else "none"
    return dict(E_local=E, d_local=d, L=L, R=R, gamma=gamma, depths=depths, max_depth=meas,
                grade=grade_from_depth(meas), direction=bdir, avail=avail)


def _to_world(A, lv, p):
    return A.R[lv] @ np.asarray(p, float) + A.c[lv]


def _dir_world(A, lv, d):
    return A.R[lv] @ np.asarray(d, float)


def _plan(params):
    """anatomy + implants + truth (no image)."""
    A = _build_anatomy(params)
    S = params["surgery"]
    placed = []
    for sc in S["screws"]:
        pl = _place_screw(A, sc)
        lv = sc["level"]
        V = A.verts[lv]
        Ew = _to_world(A, lv, pl["E_local"])
        dw = _dir_world(A, lv, pl["d_local"])
        tipw = Ew + dw * pl["L"]
        # tulip axis: between screw axis reversed and the vertebra's posterior direction
        post = A.R[lv][:, 1]
        dt = _unit(-dw * 0.55 + post * 0.45)
        head = Ew - dw * 3.0
        saddle = head + dt * 8.0
        placed.append(dict(sc=sc, pl=pl, Ew=Ew, dw=dw, tipw=tipw, head=head, dt=dt, saddle=saddle))
    A.placed = placed
    return A


def _truth_from_plan(params, A, extra=None):
    S = params["surgery"]
    acq = params["acquisition"]
    screws = []
    for P_ in A.placed:
        sc, pl = P_["sc"], P_["pl"]
        lv = sc["level"]
        screws.append({
            "id": f"{lv}-{sc['side']}", "level": lv, "side": sc["side"],
            "entry_lps_mm": [round(float(x), 3) for x in P_["Ew"]],
            "tip_lps_mm": [round(float(x), 3) for x in P_["tipw"]],
            "breach_direction": pl["direction"],
            "breach_depths_mm": {k: float(v) for k, v in pl["depths"].items()},
            "max_breach_mm": round(float(pl["max_depth"]), 2),
            "grade": pl["grade"],
            "at_laminectomy_level": lv in S["laminectomy_levels"],
            "diameter_mm": round(2 * pl["R"], 2), "length_mm": pl["L"], "material": sc["material"],
            "cement_augmented": bool(sc["cement"]),
            "pedicle_isthmus_width_mm": round(float(A.verts[lv]["PW"]), 2),
            "pedicle_medial_angle_deg": round(float(A.verts[lv]["alpha"]), 2),
            "target_grade": sc["target_grade"], "target_direction": sc["target_direction"],
        })
    counts = {g: 0 for g in "ABCDE"}
    for s_ in screws:
        counts[s_["grade"]] += 1
    levels = []
    for lv in LEVELS:
        V = A.verts[lv]
        levels.append({"level": lv, "body_centre_lps_mm": [round(float(x), 2) for x in A.c[lv]],
                       "pedicle_width_mm": round(V["PW"], 2), "pedicle_medial_angle_deg": round(V["alpha"], 2),
                       "canal_width_mm": round(V["CW"], 2), "canal_depth_mm": round(V["CD"], 2),
                       "laminectomy": bool(V["laminectomy"])})
    t = {
        "generator": GENERATOR, "version": VERSION, "study_id": params["study_id"],
        "slice_thickness_mm": float(acq["slice_thickness_mm"]),
        "pixel_spacing_mm": float(acq["pixel_spacing_mm"]),
        "kernel": acq["kernel"], "noise_hu_sd": acq["noise_hu_sd"], "hu_clip_12bit": acq["hu_clip_12bit"],
        "instrumented_levels": S["instrumented_levels"], "laminectomy_levels": S["laminectomy_levels"],
        "unilateral": S["unilateral"], "missing_screw": S["missing_screw"],
        "patient_roll_deg": params["patient"]["roll_deg"], "osteoporotic": params["patient"]["osteoporotic"],
        "screws": screws, "grade_counts": counts, "levels": levels,
        "breach_definition": "max distance of the screw thread envelope (outer diameter, tapered tip) "
                             "outside the rendered bone of its own vertebra (outer cortical surface), "
                             "Euclidean distance transform at 0.25 mm; direction = dominant component of "
                             "the displacement from the nearest bone point in the vertebral frame",
    }
    if extra:
        t.update(extra)
    return t


def compute_truth(params: dict) -> dict:
    A = _plan(params)
    return _truth_from_plan(params, A)


# ----------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------

F32 = np.float32


def _occ(f, h):
    o = np.multiply(f, -1.0 / h, dtype=F32)
    o += 0.5
    np.clip(o, 0.0, 1.0, out=o)
    return o


def _paint(dst, occ, val):
    """dst += (val - dst) * occ  (in place)."""
    tmp = np.subtract(val, dst, dtype=F32)
    tmp *= occ
    dst += tmp


class Slab:
    def __init__(self, xs, ys, zs, h):
        self.xs, self.ys, self.zs, self.h = xs, ys, zs, h
        self.x0, self.dx = float(xs[0]), float(xs[1] - xs[0])
        self.y0, self.dy = float(ys[0]), float(ys[1] - ys[0])
        self.nz, self.ny, self.nx = len(zs), len(ys), len(xs)
        self.hu = None
        self.mocc = np.zeros((self.nz, self.ny, self.nx), F32)
        self.mhu = np.zeros((self.nz, self.ny, self.nx), F32)
        self.tex = None

    def rng(self, lo, hi):
        i0 = max(0, int(math.ceil((lo[0] - self.x0) / self.dx)))
        i1 = min(self.nx, int(math.floor((hi[0] - self.x0) / self.dx)) + 1)
        j0 = max(0, int(math.ceil((lo[1] - self.y0) / self.dy)))
        j1 = min(self.ny, int(math.floor((hi[1] - self.y0) / self.dy)) + 1)
        k0 = int(np.searchsorted(self.zs, lo[2], "left"))
        k1 = int(np.searchsorted(self.zs, hi[2], "right"))
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            return None
        return (slice(k0, k1), slice(j0, j1), slice(i0, i1))

    def world(self, sl):
        X = self.xs[sl[2]][None, None, :].astype(F32)
        Y = self.ys[sl[1]][None, :, None].astype(F32)
        Z = self.zs[sl[0]][:, None, None].astype(F32)
        return X, Y, Z

    def local(self, sl, R, c):
        X, Y, Z = self.world(sl)
        X = X - F32(c[0])
        Y = Y - F32(c[1])
        Z = Z - F32(c[2])
        out = []
        for k in range(3):
            a = R[:, k].astype(F32)
            out.append((a[0] * X + a[1] * Y) + a[2] * Z)
        return out


def _composite_bone(slab, bone, exclude=(), value_override=None):
    los, his = [], []
    pb = []
    for p in bone.parts:
        if p.name in exclude:
            continue
        lo, hi = bone.world_bbox(p.lo, p.hi)
        pb.append((p, lo, hi))
        los.append(lo)
        his.append(hi)
    if not pb:
        return
    blk = slab.rng(np.min(los, 0), np.max(his, 0))
    if blk is None:
        return
    u, v, w = slab.local(blk, bone.R, bone.c)
    shape = u.shape
    fc = np.full(shape, 1e3, F32)
    fn_ = np.full(shape, 1e3, F32)
    any_c = any_n = False
    for p, lo, hi in pb:
        s = slab.rng(lo, hi)
        if s is None:
            continue
        rel = tuple(slice(max(a.start, b.start) - b.start, min(a.stop, b.stop) - b.start) for a, b in zip(s, blk))
        if any(r.stop <= r.start for r in rel):
            continue
        f = p.fn(u[rel], v[rel], w[rel]).astype(F32, copy=False)
        if p.carve:
            np.minimum(fc[rel], f, out=fc[rel])
            any_c = True
        else:
            np.minimum(fn_[rel], f, out=fn_[rel])
            any_n = True
    if not (any_c or any_n):
        return
    if any_c and bone.canal is not None:
        vC, a, b = bone.canal
        np.maximum(fc, -_ell2(u, v - vC, a, b).astype(F32), out=fc)
    f = np.minimum(fc, fn_)
    h = slab.h
    oo = _occ(f, h)
    if not oo.any():
        return
    dst = slab.hu[blk]
    if value_override is not None:
        _paint(dst, oo, value_override)
        return
    oi = _occ(f + F32(bone.tc), h)
    canc = F32(bone.canc) + F32(bone.texture) * slab.tex[blk]
    val = F32(bone.cort) + (canc - F32(bone.cort)) * oi
    _paint(dst, oo, val)


def _composite_fn(slab, lo, hi, fn, value, target="hu", local=None, mode="paint"):
    """generic implicit object in world coords (or local frame (R,c))."""
    s = slab.rng(lo, hi)
    if s is None:
        return
    if local is None:
        X, Y, Z = slab.world(s)
        f = fn(X, Y, Z)
    else:
        u, v, w = slab.local(s, local[0], local[1])
        f = fn(u, v, w)
    o = _occ(np.asarray(f, F32), slab.h if target == "hu" else slab.h * 0.8)
    if not o.any():
        return
    if target == "hu":
        val = value(s) if callable(value) else value
        _paint(slab.hu[s], o, val)
    else:
        np.maximum(slab.mocc[s], o, out=slab.mocc[s])
        np.maximum(slab.mhu[s], o * F32(value), out=slab.mhu[s])


class _Interp:
    """spine quantities interpolated along patient z."""

    def __init__(self, A):
        zs, rows = [], []
        for k, lv in enumerate(LEVELS):
            V = A.verts[lv]
            R, c = A.R_p[lv], A.c_p[lv]
            canal = c + R @ np.array([0.0, V["vC"], 0.0])
            tilt = math.acos(max(0.2, abs(R[2, 2])))
            zs.append(c[2])
            rows.append([c[0], c[1], canal[0], canal[1], V["W"], V["D"], V["CW"] / 2, V["CD"] / 2,
                         1.0 / math.cos(tilt), float(k), V["uP"], V["H"]])
        o = np.argsort(zs)
        self.z = np.array(zs)[o]
        self.rows = np.array(rows)[o]

    def __call__(self, z):
        z = np.atleast_1d(z)
        return [np.interp(z, self.z, self.rows[:, j]) for j in range(self.rows.shape[1])]


def _texture(seed, sig):
    r = np.random.default_rng(seed)
    t = r.standard_normal((64, 64, 64)).astype(F32)
    t = ndimage.gaussian_filter(t, sig, mode="wrap")
    t /= t.std() + 1e-6
    return t


def _plane_wave_field(zs, Xp, Yp, seed, n=7, scale=28.0):
    r = np.random.default_rng(seed)
    f = np.zeros((len(zs),) + Xp.shape, F32)
    for _ in range(n):
        th = r.uniform(0, 2 * math.pi)
        ph = r.uniform(-0.6, 0.6)
        k = 2 * math.pi / (scale * r.uniform(0.7, 1.4))
        kx, ky, kz = k * math.cos(th) * math.cos(ph), k * math.sin(th) * math.cos(ph), k * math.sin(ph)
        a = (kx * Xp + ky * Yp).astype(F32)
        b = (kz * np.asarray(zs) + r.uniform(0, 2 * math.pi)).astype(F32)
        f += np.sin(a)[None] * np.cos(b)[:, None, None] + np.cos(a)[None] * np.sin(b)[:, None, None]
    f *= F32(1.0 / math.sqrt(n / 2.0))
    return f


def _background(slab, A, params, geo):
    """2D-per-slice soft tissues (body, fat, muscles, viscera, canal contents) + table."""
    P = params["patient"]
    S = params["surgery"]
    h = slab.h
    Xp, Yp = geo["Xp"], geo["Yp"]
    zp = slab.zs - A.T[2]
    nz = len(zp)
    N = Xp.shape[0]
    bx, by, cx, cy, W, D, CWh, CDh, elong, lvf, uP, Hh = [a.astype(F32)[:, None, None] for a in geo["interp"](zp)]
    hu = np.empty((nz,) + Xp.shape, F32)
    hu[:] = geo["table"]
    tex = slab.tex
    Rr, T = A.Rroll, A.T
    x0, dx = slab.x0, slab.dx
    y0, dy = slab.y0, slab.dy

    def window(xc, yc, ax, ay):
        xc = np.atleast_1d(xc)
        yc = np.atleast_1d(yc)
        ax = np.atleast_1d(ax)
        ay = np.atleast_1d(ay)
        lo = np.array([float((xc - ax).min()), float((yc - ay).min())])
        hi = np.array([float((xc + ax).max()), float((yc + ay).max())])
        cs = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]])
        wc = cs @ Rr[:2, :2].T + T[:2]
        i0 = max(0, int((wc[:, 0].min() - x0) / dx) - 1)
        i1 = min(N, int((wc[:, 0].max() - x0) / dx) + 2)
        j0 = max(0, int((wc[:, 1].min() - y0) / dy) - 1)
        j1 = min(N, int((wc[:, 1].max() - y0) / dy) + 2)
        if i1 <= i0 or j1 <= j0:
            return None
        return (slice(None), slice(j0, j1), slice(i0, i1))

    def ell(xc, yc, a, b, val, gate=None, extra=None, off=0.0, weight=None, absval=False):
        """paint an ellipse (per-slice params) inside its window; val may be scalar or full-slab array."""
        if gate is not None and not np.any(gate):
            return None
        w_ = window(xc, yc, np.max(a) + 3, np.max(b) + 3)
        if w_ is None:
            return None
        X = Xp[w_[1:]][None]
        Y = Yp[w_[1:]][None]
        f = _ell2(X - xc, Y - yc, a, b)
        if absval:
            f = np.abs(f)
        if off:
            f = f + off
        if extra is not None:
            f = np.maximum(f, extra(w_, X, Y))
        o = _occ(f, h)
        if gate is not None:
            o *= gate
        if weight is not None:
            o *= weight
        v = val[w_] if isinstance(val, np.ndarray) and val.ndim == 3 and val.shape[1] == N else val
        _paint(hu[w_], o, v)
        return f

    # body outline (flattened on the table in world y)
    waist = 1.0 - 0.06 * np.clip(1.0 - np.abs(lvf - 6.0) / 3.0, 0, 1)
    a_b = F32(P["body_half_width"]) * waist * (1.0 + 0.08 * np.clip(lvf - 7.5, 0, 2))
    b_b = F32(P["body_half_ap"]) * np.ones_like(waist)
    fb = _ell2(Xp[None], Yp[None], a_b, b_b).astype(F32)
    np.maximum(fb, geo["Yw"][None] - F32(geo["yskin_w"]), out=fb)
    _paint(hu, _occ(fb, h), F32(35.0))
    fat_val = F32(-100.0) + F32(9.0) * tex
    _paint(hu, _occ(fb + 2.5, h), fat_val)
    fatmm = F32(P["fat_mm"]) * (1.0 + 0.7 * np.clip(-Yp[None] / b_b, 0, 1))
    fi = F32(P["fat_infiltration"])
    tex2 = geo["tex2"](slab)
    musc = F32(48.0) + F32(6.0) * tex - fi * F32(150.0) * np.clip((tex2 - 0.7) * 1.5, 0, 1)
    fbm = fb + fatmm
    _paint(hu, _occ(fbm, h), musc)
    # abdominal cavity / viscera
    ypost = by - D / 2 - 5.0 + 0.004 * (Xp[None] - bx) ** 2
    np.minimum(ypost, cy - 5.0, out=ypost)
    inset = F32(P["fat_mm"]) + 12.0
    w_ = window(0.0, -8.0, np.max(a_b), np.max(b_b))
    fcav = np.full(hu.shape, 1e3, F32)
    Xw_, Yw_ = Xp[w_[1:]][None], Yp[w_[1:]][None]
    fc_ = _ell2(Xw_, Yw_ + 8.0, a_b - inset, b_b - inset + 8.0)
    np.maximum(fc_, Yw_ - ypost[w_], out=fc_)
    np.maximum(fc_, fbm[w_] + 10.0, out=fc_)
    fcav[w_] = fc_
    ocav = _occ(fcav, h)
    if ocav.any():
        bowel = geo["bowel"](slab)
        bw = np.clip((bowel - 0.1) * 3.0, 0, 1)
        gas = np.clip((bowel - 1.15) * 4.0, 0, 1) * bw
        visc = F32(-95.0) + F32(130.0) * bw + F32(8.0) * tex
        visc += (F32(-900.0) - visc) * gas
        _paint(hu, ocav, visc)
    # liver (right = -x), spleen (left), lungs at the thoraco-lumbar junction
    iT12 = LEVELS.index("T12")
    wl = np.clip((LEVELS.index("L2") + 0.3 - lvf) / 1.5, 0, 1)
    ell(bx - 70.0, by - 25.0, 100.0 * wl + 1e-3, 85.0 * wl + 1e-3, F32(58.0) + F32(5.0) * tex, gate=wl > 0,
        extra=lambda w_, X, Y: fcav[w_])
    wsp = np.clip((iT12 + 0.8 - lvf) / 1.5, 0, 1)
    ell(bx + 80.0, by + 8.0, 38.0 * wsp + 1e-3, 50.0 * wsp + 1e-3, F32(48.0) + F32(5.0) * tex, gate=wsp > 0,
        extra=lambda w_, X, Y: fbm[w_] + 8.0)
    # retroperitoneum: kidneys, psoas, quadratus lumborum, vessels
    iL1, iL3, iL5 = LEVELS.index("L1"), LEVELS.index("L3"), LEVELS.index("L5")
    wk = np.clip(1.0 - np.abs(lvf - (iL1 + 1.0)) / 1.6, 0, 1)
    for s in (-1.0, 1.0):
        kx, ky = bx + s * 72.0, by + 10.0
        ell(kx, ky, 40.0 * wk + 1e-3, 33.0 * wk + 1e-3, F32(-92.0), gate=wk > 0)
        ell(kx, ky, 28.0 * wk + 1e-3, 22.0 * wk + 1e-3, F32(150.0 if params["acquisition"]["contrast_iv"] else 32.0), gate=wk > 0)
        ell(kx - s * 12.0, ky - 3.0, 8.0 * wk + 1e-3, 9.0 * wk + 1e-3, F32(-80.0), gate=wk > 0)
        wp = np.clip((lvf - iL1 + 0.3) / 1.0, 0, 1)
        pa = (9.0 + (lvf - iL1) * 3.8) * wp + 1e-3
        pb = (9.0 + (lvf - iL1) * 2.8) * wp + 1e-3
        px = bx + s * (W / 2 + pa * 0.55)
        ell(px, by - 3.0, pa, pb, F32(-90.0), gate=wp > 0, off=-2.0)
        ell(px, by - 3.0, pa, pb, F32(47.0) + F32(5.0) * tex, gate=wp > 0)
        wq = np.clip(1.0 - np.abs(lvf - (iL3 - 0.5)) / 2.2, 0, 1)
        qx = bx + s * (W / 2 + 42.0)
        ell(qx, cy + 2.0, 17.0 * wq + 1e-3, 8.0 * wq + 1e-3, F32(-85.0), gate=wq > 0, off=-1.5)
        ell(qx, cy + 2.0, 17.0 * wq + 1e-3, 8.0 * wq + 1e-3, F32(46.0) + F32(5.0) * tex, gate=wq > 0)
    ao = F32(230.0 if params["acquisition"]["contrast_iv"] else 42.0)
    abif = (lvf < iL5 - 0.6).astype(F32)
    ell(bx + 13.0, by - D / 2 - 13.0, 11.0, 11.0, ao, gate=abif)
    ell(bx - 19.0, by - D / 2 - 11.0, 13.0, 9.0, ao * 0.7 + 12.0)
    for s in (-1.0, 1.0):
        ell(bx + s * 22.0, by - D / 2 - 9.0, 6.0, 6.0, ao, gate=1.0 - abif)
    # paraspinal fat septa (multifidus / longissimus / iliocostalis) and midline fat
    for s in (-1.0, 1.0):
        ell(cx + s * 17.0, cy + 34.0, 13.0, 24.0, F32(-70.0), absval=True, off=-0.6, weight=0.8,
            extra=lambda w_, X, Y: (cy - Y))
        ell(cx + s * 46.0, cy + 26.0, 24.0, 22.0, F32(-70.0), absval=True, off=-0.5, weight=0.6,
            extra=lambda w_, X, Y: (cy - Y))
    ell(cx, cy + 60.0, 2.0, 30.0, F32(-60.0), weight=0.8, extra=lambda w_, X, Y: np.maximum(cy + 30.0 - Y, fbm[w_]))
    wlu = np.clip((iT12 + 0.1 - lvf) / 1.2, 0, 1)
    for s in (-1.0, 1.0):
        ell(bx + s * (W / 2 + 42.0), by + 6.0, 34.0 * wlu + 1e-3, 28.0 * wlu + 1e-3, F32(-840.0) + F32(25.0) * tex,
            gate=wlu > 0, extra=lambda w_, X, Y: fbm[w_] + 10.0)
    # postoperative surgical bed (midline), laminectomy defects
    days = S["days_postop"]
    zb0, zb1 = geo["bed_z"]
    inb = ((zp[:, None, None] > zb0) & (zp[:, None, None] < zb1)).astype(F32)
    if inb.any():
        if days < 60:
            bed_val = F32(30.0 if days < 14 else 40.0) + F32(10.0) * tex
            if days < 14:
                g = np.clip((tex2 - 1.6) * 3.0, 0, 1)
                bed_val = bed_val + (F32(-850.0) - bed_val) * g

            def bed_extra(w_, X, Y):
                wbed = 5.0 + 0.22 * np.clip(Y - cy, 0, None)
                return np.maximum(np.abs(X - cx) - wbed + 40.0, np.maximum(cy + CDh + 2.0 - Y, fb[w_] + 1.5))

            ell(cx, cy + 60.0, 40.0, 80.0, bed_val, extra=bed_extra, off=-1e3, gate=inb,
                weight=F32(0.85) if days < 14 else F32(0.6))
        else:
            ell(cx, cy + 60.0, 3.0, 80.0, F32(50.0), gate=inb, weight=0.5,
                extra=lambda w_, X, Y: np.maximum(cy + CDh + 6.0 - Y, fb[w_] + 1.0))
    for lz0, lz1 in geo["lam_z"]:
        inl = ((zp[:, None, None] > lz0) & (zp[:, None, None] < lz1)).astype(F32)
        ell(cx, cy + CDh + 10.0, CWh + 5.0, 13.0, F32(22.0 if days < 30 else 38.0) + F32(6.0) * tex, gate=inl)
    # spinal canal: ligamentum flavum, epidural fat, dural sac
    ell(cx, cy, uP + 1.0, (CDh + 3.5) * elong, F32(62.0), extra=lambda w_, X, Y: cy - Y)
    ell(cx, cy, uP - 0.5, (CDh + 0.5) * elong, F32(-88.0) + F32(6.0) * tex)
    iS1 = LEVELS.index("S1")
    sacw = np.clip(1.0 - (lvf - (iS1 - 0.6)) / 0.9, 0.0, 1.0)
    ell(cx, cy - 0.8, 0.74 * CWh * sacw + 1e-3, 0.72 * CDh * elong * sacw + 1e-3, F32(9.0) + F32(3.0) * tex,
        gate=(sacw > 0.05))
    slab.hu = hu


def _disc_objects(A, params):
    """intervertebral discs (wedge between endplates) as implicit objects in the upper vertebra frame."""
    objs = []
    for k in range(len(LEVELS) - 1):
        up, lo = LEVELS[k], LEVELS[k + 1]
        Vu, Vl = A.verts[up], A.verts[lo]
        Ru, cu, Rl, cl = A.R[up], A.c[up], A.R[lo], A.c[lo]
        # plane of lower's superior endplate expressed in upper frame
        nl = Ru.T @ Rl[:, 2]
        pl = Ru.T @ (cl + Rl[:, 2] * (Vl["H"] / 2 - 0.8) - cu)
        pu_w = -Vu["H"] / 2 + 0.8
        a_ = (Vu["W"] + Vl["W"]) / 4 + 1.0
        b_ = (Vu["D"] + Vl["D"]) / 4 + 0.8
        zc = 0.5 * (pl[2] + pu_w)

        def fn(u, v, w, nl=nl, pl=pl, pu_w=pu_w, a_=a_, b_=b_):
            f = _sell3(u, v, a_, b_)
            above = (u - pl[0]) * nl[0] + (v - pl[1]) * nl[1] + (w - pl[2]) * nl[2]
            f = np.maximum(f, -above)
            return np.maximum(f, w - pu_w)

        lo_ = np.array([-a_ - 2, -b_ - 2, pl[2] - 14])
        hi_ = np.array([a_ + 2, b_ + 2, pu_w + 2])
        objs.append((up, lo, Ru, cu, lo_, hi_, fn, zc))
    return objs


def _metal_objects(A, params):
    """list of (world lo, world hi, fn(X,Y,Z)->sdf, HU) for screws, rods, cross-links, markers, staples."""
    S = params["surgery"]
    objs = []
    rng = np.random.default_rng(params["study_seed"] + 7)
    hu_screw = {"titanium": HU_TI, "cobalt-chrome": HU_COCR}
    for P_ in A.placed:
        sc, pl = P_["sc"], P_["pl"]
        E, d, L, R = P_["Ew"], P_["dw"], pl["L"], pl["R"]
        head, dt = P_["head"], P_["dt"]
        e1, e2 = _perp_basis(d)
        Rc = R - min(0.9, 0.16 * R * 2 / 2.0 + 0.3)
        pitch = float(rng.uniform(2.4, 3.0))

        def fn(X, Y, Z, E=E, d=d, L=L, R=R, Rc=Rc, e1=e1, e2=e2, head=head, dt=dt, pitch=pitch):
            dx, dy, dz = X - F32(E[0]), Y - F32(E[1]), Z - F32(E[2])
            t = dx * F32(d[0]) + dy * F32(d[1]) + dz * F32(d[2])
            q1 = dx * F32(e1[0]) + dy * F32(e1[1]) + dz * F32(e1[2])
            q2 = dx * F32(e2[0]) + dy * F32(e2[1]) + dz * F32(e2[2])
            rho = np.sqrt(q1 * q1 + q2 * q2)
            ph = np.mod(t / F32(pitch) + np.arctan2(q2, q1) * F32(1 / (2 * math.pi)), F32(1.0))
            thr = F32(Rc) + F32(R - Rc) * np.abs(F32(2.0) * ph - F32(1.0))
            taper = np.clip((F32(L) - t) / F32(4.0), 0.15, 1.0) * F32(R)
            f = np.maximum(rho - np.minimum(thr, taper), np.maximum(-t - 3.0, t - F32(L)))
            hx, hy, hz = X - F32(head[0]), Y - F32(head[1]), Z - F32(head[2])
            f = np.minimum(f, np.sqrt(hx * hx + hy * hy + hz * hz) - F32(4.4))
            tt = hx * F32(dt[0]) + hy * F32(dt[1]) + hz * F32(dt[2])
            rr = np.sqrt(np.maximum(hx * hx + hy * hy + hz * hz - tt * tt, 0))
            ftul = np.maximum(rr - F32(5.6), np.maximum(-tt - 1.0, tt - F32(13.5)))
            return np.minimum(f, ftul)

        pts = np.array([E - d * 4, E + d * L, head + dt * 14, head - dt * 2])
        objs.append((pts.min(0) - 7, pts.max(0) + 7, fn, hu_screw[sc["material"]]))
    # rods
    rods = []
    rr = S["rod_diameter_mm"] / 2.0
    hu_rod = hu_screw[S["rod_material"]]
    for side in ("left", "right"):
        sad = [P_["saddle"] for P_ in A.placed if P_["sc"]["side"] == side]
        if len(sad) < 2:
            continue
        sad = sorted(sad, key=lambda p: p[2])
        pts = np.array(sad)
        t0 = _unit(pts[0] - pts[1])
        t1 = _unit(pts[-1] - pts[-2])
        ext0 = float(rng.uniform(4, 10))
        ext1 = float(rng.uniform(4, 10))
        ctrl = np.vstack([pts[0] + t0 * ext0, pts, pts[-1] + t1 * ext1])
        # Catmull-Rom through control points
        dense = []
        P = np.vstack([ctrl[0] * 2 - ctrl[1], ctrl, ctrl[-1] * 2 - ctrl[-2]])
        for i in range(1, len(P) - 2):
            p0, p1, p2, p3 = P[i - 1], P[i], P[i + 1], P[i + 2]
            nseg = max(2, int(np.linalg.norm(p2 - p1) / 4.0))
            for s_ in np.linspace(0, 1, nseg, endpoint=False):
                s2, s3 = s_ * s_, s_ * s_ * s_
                dense.append(0.5 * ((2 * p1) + (-p0 + p2) * s_ + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s2 + (-p0 + 3 * p1 - 3 * p2 + p3) * s3))
        dense.append(ctrl[-1])
        dense = np.array(dense)
        rods.append(dict(side=side, points=dense))
        for a, b in zip(dense[:-1], dense[1:]):
            objs.append((np.minimum(a, b) - rr - 1, np.maximum(a, b) + rr + 1,
                         lambda X, Y, Z, a=a, b=b: _seg_dist(X, Y, Z, a, b) - F32(rr), hu_rod))
    A.rods = rods
    # cross-link
    A.crosslinks = []
    if S["crosslink"] and len(rods) == 2:
        zl = [r["points"][:, 2] for r in rods]
        zc = 0.5 * (max(zl[0].min(), zl[1].min()) + min(zl[0].max(), zl[1].max()))
        pl_ = []
        for r in rods:
            p = r["points"]
            pl_.append(np.array([np.interp(zc, p[:, 2], p[:, 0]), np.interp(zc, p[:, 2], p[:, 1]), zc]))
        lvmid = A.placed[len(A.placed) // 2]["sc"]["level"]
        post = A.R[lvmid][:, 1]
        mid = 0.5 * (pl_[0] + pl_[1]) + post * 9.0
        segs = [(pl_[0], mid), (mid, pl_[1])]
        for a, b in segs:
            objs.append((np.minimum(a, b) - 4, np.maximum(a, b) + 4,
                         lambda X, Y, Z, a=a, b=b: _seg_dist(X, Y, Z, a, b) - F32(2.6), hu_rod))
        for p in pl_:
            objs.append((p - 7, p + 7, lambda X, Y, Z, p=p: np.sqrt((X - F32(p[0])) ** 2 + (Y - F32(p[1])) ** 2 + (Z - F32(p[2])) ** 2) - F32(5.2), hu_rod))
        A.crosslinks.append([[round(float(x), 2) for x in pl_[0]], [round(float(x), 2) for x in pl_[1]]])
    # cage markers (tantalum) and titanium cages are added in _cage_objects
    # skin staples
    if S["staples"] and S["days_postop"] < 16:
        zs_ = sorted(P_["Ew"][2] for P_ in A.placed)
        z0, z1 = zs_[0] - 25, zs_[-1] + 25
        lvm = A.placed[0]["sc"]["level"]
        for zz in np.arange(z0, z1, float(rng.uniform(9, 13))):
            zp = zz - A.T[2]
            it = A.interp(np.array([zp]))
            cxp = float(it[2][0])
            pxy = A.Rroll @ np.array([cxp, A.yskin_p - 1.0, zp]) + A.T
            a = pxy + np.array([-4.0, 0, 0])
            b = pxy + np.array([4.0, 0, 0])
            for p_, q_ in ((a, b), (a, a + np.array([0, -4.0, 0])), (b, b + np.array([0, -4.0, 0]))):
                objs.append((np.minimum(p_, q_) - 2, np.maximum(p_, q_) + 2,
                             lambda X, Y, Z, p_=p_, q_=q_: _seg_dist(X, Y, Z, p_, q_) - F32(0.45), 9000.0))
    return objs


def _cage_objects(A, params):
    """(world lo/hi, local frame, fn, value, kind) for interbody cages (PEEK + Ta markers or Ti)."""
    out = []
    rng = np.random.default_rng(params["study_seed"] + 11)
    for cg in params["surgery"]["cages"]:
        up, lo = cg["disc"].split("-")
        Vu, Vl = A.verts[up], A.verts[lo]
        Ru, cu = A.R[up], A.c[up]
        # disc centre in upper frame
        pl = A.R[up].T @ (A.c[lo] + A.R[lo][:, 2] * (Vl["H"] / 2) - cu)
        wc = 0.5 * (pl[2] + (-Vu["H"] / 2))
        hgt = max(5.0, (-Vu["H"] / 2) - pl[2] - 1.2)
        s = 1.0 if cg["side"] == "left" else -1.0
        boxes = []
        if cg["type"] in ("TLIF", "TI-TLIF"):
            ang = math.radians(cg["angle_deg"]) * s
            boxes.append((np.array([s * 1.5, -3.0, wc]), ang, 15.0, 5.5, hgt / 2))
        else:
            for s2 in (-1, 1):
                boxes.append((np.array([s2 * 9.0, -1.0, wc]), math.radians(s2 * 6.0), 12.5, 4.8, hgt / 2))
        for (c0, ang, hl, hw, hh) in boxes:
            ca, sa = math.cos(ang), math.sin(ang)

            def fb(u, v, w, c0=c0, ca=ca, sa=sa, hl=hl, hw=hw, hh=hh):
                du, dv = u - c0[0], v - c0[1]
                a_ = du * sa + dv * ca   # along the long axis (AP-ish)
                b_ = du * ca - dv * sa
                return _box(b_, a_, w - c0[2], hw, hl, hh, r=1.5)

            def fi(u, v, w, c0=c0, ca=ca, sa=sa, hl=hl, hw=hw, hh=hh):
                du, dv = u - c0[0], v - c0[1]
                a_ = du * sa + dv * ca
                b_ = du * ca - dv * sa
                return _box(b_, a_, w - c0[2], hw - 1.8, hl - 3.0, hh + 1.0, r=0.5)

            lo_ = c0 - [hl + 3, hl + 3, hh + 2]
            hi_ = c0 + [hl + 3, hl + 3, hh + 2]
            out.append(("cage", Ru, cu, lo_, hi_, fb, fi, cg["type"]))
            # tantalum markers at both ends of the long axis (PEEK cages)
            if cg["type"] != "TI-TLIF":
                for sgn in (-1, 1):
                    mc = c0 + np.array([sa, ca, 0.0]) * sgn * (hl - 1.5)
                    a = Ru @ (mc - [0, 0, min(2.0, hh - 0.5)]) + cu
                    b = Ru @ (mc + [0, 0, min(2.0, hh - 0.5)]) + cu
                    out.append(("marker", a, b))
    return out


def _fbp_setup(n, ds_mm, nang=72):
    ang = np.linspace(0, math.pi, nang, endpoint=False)
    nb = int(math.ceil(n * 1.45)) + 4
    c = (np.arange(n) - (n - 1) / 2.0) * ds_mm
    Xc, Yc = np.meshgrid(c, c)
    s = (Xc.ravel()[None, :] * np.cos(ang)[:, None] + Yc.ravel()[None, :] * np.sin(ang)[:, None]) / ds_mm + nb / 2.0
    i0 = np.floor(s).astype(np.int32)
    fr = (s - i0).astype(F32)
    flat = (i0 + (np.arange(nang) * nb)[:, None]).astype(np.int64)
    # Ram-Lak kernel with Hann apodisation in the frequency domain
    npad = int(2 ** math.ceil(math.log2(2 * nb)))
    fr_ = np.fft.rfftfreq(npad)
    ramp = np.abs(fr_) * (0.5 + 0.5 * np.cos(np.pi * fr_ / 0.5))
    return dict(ang=ang, nb=nb, Xc=Xc.ravel(), Yc=Yc.ravel(), flat=flat, fr=fr, npad=npad, ramp=ramp, n=n, ds=ds_mm)


def _streaks(mslice, fb, rng, beta, sigma_ps):
    """beam-hardening + photon-starvation streaks from a coarse metal path-density image (mm Ti per mm)."""
    w = mslice.ravel()
    idx = np.nonzero(w > 1e-3)[0]
    if len(idx) == 0:
        return None
    ww = w[idx] * fb["ds"]  # mm of Ti along a ray crossing this coarse pixel
    nang, nb = len(fb["ang"]), fb["nb"]
    s = (fb["Xc"][idx][None, :] * np.cos(fb["ang"])[:, None] + fb["Yc"][idx][None, :] * np.sin(fb["ang"])[:, None]) / fb["ds"] + nb / 2.0
    i0 = np.floor(s).astype(np.int64)
    fr = s - i0
    base = (np.arange(nang) * nb)[:, None]
    p = np.bincount((i0 + base).ravel(), weights=(ww[None, :] * (1 - fr)).ravel(), minlength=nang * nb)
    p += np.bincount((i0 + 1 + base).ravel(), weights=(ww[None, :] * fr).ravel(), minlength=nang * nb)
    p = p.reshape(nang, nb)
    e = -beta * p * p / (1.0 + p / 8.0) + sigma_ps * np.sqrt(p) * p * 0.25 * rng.standard_normal(p.shape)
    E = np.fft.rfft(e, n=fb["npad"], axis=1) * fb["ramp"][None, :]
    q = np.fft.irfft(E, n=fb["npad"], axis=1)[:, :nb].astype(F32).ravel()
    img = q[fb["flat"]] * (1 - fb["fr"]) + q[np.minimum(fb["flat"] + 1, q.size - 1)] * fb["fr"]
    return img.sum(0).reshape(fb["n"], fb["n"]) * F32(math.pi / nang)


def _mtf(ny, nx, dx, sig, edge, extra=0.0):
    ky = np.fft.fftfreq(ny, dx)[:, None]
    kx = np.fft.rfftfreq(nx, dx)[None, :]
    k2 = kx * kx + ky * ky
    H = np.exp(-2 * math.pi ** 2 * (sig ** 2 + extra ** 2) * k2)
    if edge > 0:
        H = H * (1 + edge * (1 - np.exp(-2 * math.pi ** 2 * 1.1 ** 2 * k2)))
    return H.astype(F32), np.sqrt(k2)


def _noise_shape(ny, nx, dx, sig, edge):
    # NPS ~ |k| * MTF^2 (filtered back-projection); amplitude = sqrt(NPS)
    ky = np.fft.fftfreq(ny, dx)[:, None]
    kxf = np.fft.fftfreq(nx, dx)[None, :]
    k = np.sqrt(kxf ** 2 + ky ** 2)
    H = np.exp(-2 * math.pi ** 2 * sig ** 2 * k * k) * (1 + edge * (1 - np.exp(-2 * math.pi ** 2 * 1.1 ** 2 * k * k)))
    S = np.sqrt(k / k.max() + 0.02) * H
    norm = math.sqrt(float(np.mean(S * S)))
    kx = np.fft.rfftfreq(nx, dx)[None, :]
    kr = np.sqrt(kx ** 2 + ky ** 2)
    Hr = np.exp(-2 * math.pi ** 2 * sig ** 2 * kr * kr) * (1 + edge * (1 - np.exp(-2 * math.pi ** 2 * 1.1 ** 2 * kr * kr)))
    return (np.sqrt(kr / k.max() + 0.02) * Hr / norm).astype(F32)


def _extra_bones(A, params):
    """ribs (T9-T12) and iliac wings as BoneObjects."""
    P = params["patient"]
    out = []
    rib_end = {"T9": 2.5, "T10": 2.3, "T11": 1.55, "T12": 1.05}
    for lv, th1 in rib_end.items():
        V = A.verts[lv]
        parts = []
        for s in (-1, 1):
            P0 = np.array([s * (V["uP"] + max(V["TPL"], 6.0) * 0.9 + 2.0), V["v_i"] + 8.0, V["wP"]])
            Ar = V["uP"] + V["TPL"] + 92.0
            Br = 95.0
            th0 = math.asin(min(0.95, abs(P0[0]) / Ar))
            yc = P0[1] - Br * math.cos(th0)
            ths = np.arange(th0, th1, 0.14)
            pts = [np.array([s * Ar * math.sin(t), yc + Br * math.cos(t), V["wP"] - 26.0 * (t - th0) / (math.pi / 2)]) for t in ths]
            head = np.array([s * (V["W"] / 2 - 1.0), V["D"] / 2 - 6.0, V["wP"] + 2.0])
            parts.append(_seg_part("ribneck", head, pts[0], 3.6))
            rr = 4.6 if lv != "T12" else 4.0
            for a, b in zip(pts[:-1], pts[1:]):
                parts.append(_seg_part("rib", a, b, rr))
        out.append(BoneObject("ribs_" + lv, A.R[lv], A.c[lv], parts, None, tc=1.0, cort=P["cort_hu"] * 0.85,
                              canc=P["canc_hu"] + 60.0, texture=40.0))
    # ilium, frame: roll only, centred on S1
    c = A.c["S1"]
    parts = []
    for s in (-1, 1):
        vo, ao, bo = -15.0, 73.0, 60.0

        def il(u, v, w, s=s, vo=vo, ao=ao, bo=bo):
            th = 7.0 + 8.0 * np.clip((v - vo) / bo, 0, 1)
            fo = _ell2(u, v - vo, ao, bo)
            fi = _ell2(u, v - vo, ao - th, bo - th)
            f = np.maximum(fo, -fi)
            f = np.maximum(f, (vo - 32.0) - v)
            f = np.maximum(f, 45.0 - s * u)
            return np.maximum(f, np.abs(w - 0.0) - 40.0)

        parts.append(Part("ilium", [s * 45 if s > 0 else -ao - 2, vo - 34, -42], [ao + 2 if s > 0 else -45, vo + bo + 2, 42], il, carve=False))
    out.append(BoneObject("ilium", A.Rroll, c, parts, None, tc=1.2, cort=P["cort_hu"] * 0.9, canc=P["canc_hu"] + 40.0, texture=50.0))
    return out


def _up2(a):
    """2x bilinear (pixel-centre aligned) upsampling over the last two axes."""
    def ax(x, axis):
        n = x.shape[axis]
        x0 = np.take(x, np.r_[0, np.arange(n - 1)], axis=axis)
        x1 = np.take(x, np.r_[np.arange(1, n), n - 1], axis=axis)
        ev = 0.75 * x + 0.25 * x0
        od = 0.75 * x + 0.25 * x1
        out = np.stack([ev, od], axis=axis + 1)
        shp = list(x.shape)
        shp[axis] = 2 * n
        return out.reshape(shp).astype(F32, copy=False)
    return ax(ax(a, a.ndim - 2), a.ndim - 1)


def _fov_and_z(params, A):
    acq = params["acquisition"]
    S = params["surgery"]
    N, ps, thk = acq["matrix"], acq["pixel_spacing_mm"], acq["slice_thickness_mm"]
    lvs = S["instrumented_levels"]
    top, bot = lvs[0], lvs[-1]
    it, ib = LEVELS.index(top), LEVELS.index(bot)
    Vt, Vb = A.verts[top], A.verts[bot]
    zt = A.c[top][2] + Vt["H"] / 2 + Vt["disc"] + 0.45 * A.verts[LEVELS[it - 1]]["H"]
    if bot != "S1":
        zb = A.c[bot][2] - Vb["H"] / 2 - Vb["disc"] - 0.45 * A.verts[LEVELS[ib + 1]]["H"]
    else:
        zb = A.c[bot][2] - Vb["H"] / 2 - 24.0
    mpts = []
    for P_ in A.placed:
        mpts += [P_["Ew"], P_["tipw"], P_["head"] + P_["dt"] * 14]
    mpts = np.array(mpts)
    mz0, mz1 = mpts[:, 2].min() - 9.0, mpts[:, 2].max() + 9.0
    zt, zb = max(zt, mz1), min(zb, mz0)
    maxs = acq["max_slices"] if not params["small"] else 90
    n = int(math.ceil((zt - zb) / thk))
    if n > maxs:
        need = int(math.ceil((mz1 - mz0) / thk))
        n = max(need, maxs)
        zc = 0.5 * (mz0 + mz1) if need >= maxs else 0.5 * (zt + zb)
        zb = zc - n * thk / 2.0
        zt = zb + n * thk
        if zb > mz0 or zt < mz1:
            zb = mz0
    zs = zb + thk * (np.arange(n) + 0.5)
    # in-plane centre
    zm = 0.5 * (zb + zt)
    it_ = A.interp(np.array([zm - A.T[2]]))
    bxp, byp, cxp, cyp = (float(v[0]) for v in it_[:4])
    body = A.Rroll @ np.array([bxp, byp, zm - A.T[2]]) + A.T
    canal = A.Rroll @ np.array([cxp, cyp, zm - A.T[2]]) + A.T
    FOV = N * ps
    rng = np.random.default_rng(params["study_seed"] + 3)
    if ps >= 0.65 and not params["small"]:
        c0 = A.T[:2] + np.array([0.0, -10.0]) + rng.uniform(-12, 12, 2)
    else:
        c0 = 0.5 * (body[:2] + canal[:2]) + rng.uniform(-3, 3, 2)
    ext = np.vstack([mpts[:, :2], body[None, :2] + [0, -25.0]])
    if acq["fov_mode"] == "off-centre":
        for ax in range(2):
            lo = ext[:, ax].min() - c0[ax]
            hi = ext[:, ax].max() - c0[ax]
            room_pos = FOV / 2 - 6 - hi
            room_neg = FOV / 2 - 6 + lo
            f = acq["fov_offset_frac"][ax]
            sh = f * max(0.0, room_neg if f < 0 else room_pos) * 0.9
            c0[ax] -= sh
    # guarantee all metal inside
    for ax in range(2):
        lo = ext[:, ax].min()
        hi = ext[:, ax].max()
        if hi - lo < FOV - 8:
            c0[ax] = min(max(c0[ax], hi + 4 - FOV / 2), lo - 4 + FOV / 2)
        else:
            c0[ax] = 0.5 * (lo + hi)
    xs = c0[0] + (np.arange(N) - (N - 1) / 2.0) * ps
    ys = c0[1] + (np.arange(N) - (N - 1) / 2.0) * ps
    return xs, ys, zs


def _render(params, A):
    acq = params["acquisition"]
    P = params["patient"]
    S = params["surgery"]
    N, ps, thk = acq["matrix"], acq["pixel_spacing_mm"], acq["slice_thickness_mm"]
    xs, ys, zs = _fov_and_z(params, A)
    nz = len(zs)
    m = max(1, int(math.ceil(thk / 1.0 - 1e-6)))
    h = float(max(ps, min(thk / m, 1.0)) * 0.9)
    # background (soft tissue) grid: 2x coarser in-plane for fine pixels, coarser z sampling
    g = 2 if (ps < 0.5 and N % 2 == 0) else 1
    Nc_b = N // g
    xs_b = xs.reshape(Nc_b, g).mean(1)
    ys_b = ys.reshape(Nc_b, g).mean(1)
    ps_b = ps * g
    h_b = float(max(ps_b, min(thk / m, 1.0)) * 0.9)
    bz = max(thk / m, min(1.5, 2.0 * thk))
    X2, Y2 = np.meshgrid(xs_b - A.T[0], ys_b - A.T[1])
    Rr = A.Rroll
    Xp = (Rr[0, 0] * X2 + Rr[1, 0] * Y2).astype(F32)
    Yp = (Rr[0, 1] * X2 + Rr[1, 1] * Y2).astype(F32)
    Yw = np.repeat(ys_b[:, None], Nc_b, 1).astype(F32)
    yskin_w = A.yskin_p + A.T[1]
    # table and mattress (world, constant along z)
    Xw = np.repeat(xs_b[None, :], Nc_b, 0).astype(F32)
    ytab = yskin_w + P["mattress_mm"] + 0.0
    ytop = ytab + 0.0009 * Xw ** 2
    table = np.full((Nc_b, Nc_b), -1000.0, F32)
    hh = h_b
    if P["mattress_mm"] > 0:
        _paint(table, _occ(np.maximum(np.maximum(yskin_w - 5 - Yw, Yw - ytop), np.abs(Xw) - 250.0), hh), F32(-780.0))
    fb_ = np.maximum(np.maximum(ytop - Yw, Yw - (ytop + 42.0)), np.abs(Xw) - 235.0)
    _paint(table, _occ(fb_, hh), F32(-930.0))
    for y0_, y1_ in ((0.0, 3.0), (39.0, 42.0)):
        f_ = np.maximum(np.maximum(ytop + y0_ - Yw, Yw - (ytop + y1_)), np.abs(Xw) - 235.0)
        _paint(table, _occ(f_, hh), F32(240.0))
    # textures
    rs = np.random.default_rng(params["study_seed"] + 21)
    T1 = _texture(int(rs.integers(1 << 30)), (max(0.6, 0.45 / ps), max(0.6, 0.45 / ps), 0.8))
    T2 = _texture(int(rs.integers(1 << 30)), (max(1.0, 2.0 / ps), max(1.0, 2.0 / ps), 2.0))
    tzs = 0.6
    ii_f = np.arange(N) % 64
    ii_b = (np.arange(Nc_b) * g) % 64

    def texs(T, zs_, ii):
        kk = np.floor(zs_ / tzs).astype(int) % 64
        t = np.take(T, kk, axis=0)
        t = np.take(t, ii, axis=1)
        return np.take(t, ii, axis=2)

    lam_z = []
    for lv in S["laminectomy_levels"]:
        cz = A.c_p[lv][2]
        Hh = A.verts[lv]["H"]
        lam_z.append((cz - Hh / 2 - 6.0, cz + Hh / 2 - 3.0))
    zl = [P_["Ew"][2] - A.T[2] for P_ in A.placed]
    bed_z = (min(zl) - 20.0, max(zl) + 20.0)
    bowel_seed = P["bowel_seed"]

    geo = dict(Xp=Xp, Yp=Yp, Yw=Yw, yskin_w=yskin_w, table=table, interp=A.interp,
               tex2=lambda sl: texs(T2, sl.zs, ii_b),
               bowel=lambda sl: _plane_wave_field(sl.zs - A.T[2], Xp, Yp, bowel_seed, n=5, scale=30.0),
               lam_z=lam_z, bed_z=bed_z)

    class _BG:
        pass

    def background(zr):
        zi = np.round(zr / bz).astype(np.int64)
        uq, inv = np.unique(zi, return_inverse=True)
        bg = _BG()
        bg.xs, bg.ys, bg.zs, bg.h = xs_b, ys_b, uq * bz, h_b
        bg.x0, bg.dx, bg.y0, bg.dy = float(xs_b[0]), float(ps_b), float(ys_b[0]), float(ps_b)
        bg.tex = texs(T1, bg.zs, ii_b)
        _background(bg, A, params, geo)
        hu_ = bg.hu
        if g == 2:
            hu_ = _up2(hu_)
        return hu_[inv.ravel()]

    # objects
    discs = _disc_objects(A, params)
    fused = set()
    for a, b in zip(S["instrumented_levels"][:-1], S["instrumented_levels"][1:]):
        fused.add(a)
    bones = [A.bones[lv] for lv in LEVELS] + _extra_bones(A, params)
    cages = _cage_objects(A, params)
    metals = _metal_objects(A, params)
    for c_ in cages:
        if c_[0] == "marker":
            a, b = c_[1], c_[2]
            metals.append((np.minimum(a, b) - 2, np.maximum(a, b) + 2,
                           lambda X, Y, Z, a=a, b=b: _seg_dist(X, Y, Z, a, b) - F32(0.5), HU_TA))
    # graft between transverse processes
    grafts = []
    if S["posterolateral_graft"]:
        lvs = S["instrumented_levels"]
        for a, b in zip(lvs[:-1], lvs[1:]):
            for s in (-1, 1):
                pa = _to_world(A, a, [s * (A.verts[a]["uP"] + 10.0), A.verts[a]["v_i"] + 6.0, A.verts[a]["wP"]])
                pb = _to_world(A, b, [s * (A.verts[b]["uP"] + 10.0), A.verts[b]["v_i"] + 6.0, A.verts[b]["wP"] if b != "S1" else 5.0])
                grafts.append((pa, pb))
    # cement
    cements = []
    for P_ in A.placed:
        if not P_["sc"]["cement"]:
            continue
        lv = P_["sc"]["level"]
        pl = P_["pl"]
        E, d, L = pl["E_local"], pl["d_local"], pl["L"]
        rr_ = np.random.default_rng(params["study_seed"] + int(1000 * abs(E[0])))
        blobs = [(E + d * L * f_, float(rr_.uniform(4.5, 7.5)), float(rr_.uniform(4, 6.5))) for f_ in (0.62, 0.78, 0.92)]
        body_fn = A.bones[lv].parts[0].fn
        cements.append((lv, blobs, body_fn))

    # acquisition / reconstruction model
    rng = np.random.default_rng(params["study_seed"] + 99)
    H, _ = _mtf(N, N, ps, acq["psf_sigma_mm"], acq["edge_enhance"])
    Hb, _ = _mtf(N, N, ps, acq["psf_sigma_mm"], acq["edge_enhance"], extra=acq["bloom_sigma_mm"])
    Sn = _noise_shape(N, N, ps, acq["psf_sigma_mm"], acq["edge_enhance"]) * F32(acq["noise_hu_sd"] * N / math.sqrt(2.0))
    sb_px = acq["bloom_sigma_mm"] / ps
    st_every = max(1, int(round(1.2 / thk)))
    last_st = [None, -100]
    f_c = max(1, N // 128)
    nc = N // f_c
    fb = _fbp_setup(nc, ps * f_c)
    # bilinear upsampling matrix coarse -> fine (pixel-centre aligned)
    pos = (np.arange(N) + 0.5) / f_c - 0.5
    i0_ = np.clip(np.floor(pos).astype(int), 0, nc - 1)
    i1_ = np.clip(i0_ + 1, 0, nc - 1)
    fr_ = np.clip(pos - np.floor(pos), 0, 1)
    Up = np.zeros((N, nc), F32)
    Up[np.arange(N), i0_] += (1 - fr_)
    Up[np.arange(N), i1_] += fr_
    kvp_f = {100: 1.3, 120: 1.0, 140: 0.8}.get(int(acq["kvp"]), 1.0)
    beta = 1.0 * acq["streak_strength"] * kvp_f
    sig_ps = 0.6 * acq["streak_strength"] * kvp_f
    out = np.empty((nz, N, N), np.int16)
    slope, icpt = acq["rescale_slope"], acq["rescale_intercept"]
    hmax = 3071.0 if acq["hu_clip_12bit"] else min(30000.0, 32767 * slope + icpt)
    K = max(1, 8 // m)
    for k0 in range(0, nz, K):
        zo = zs[k0:k0 + K]
        kk = len(zo)
        zr = (zo[:, None] + ((np.arange(m) + 0.5) / m - 0.5)[None, :] * thk).ravel()
        slab = Slab(xs, ys, zr, h)
        slab.tex = texs(T1, zr, ii_f)
        slab.hu = background(zr)
        for (up, lo, Ru, cu, lo_, hi_, fn, zc) in discs:
            wlo, whi = A.bones[up].world_bbox(lo_, hi_)
            _composite_fn(slab, wlo, whi, fn, (lambda s_: F32(88.0) + F32(7.0) * slab.tex[s_]), local=(Ru, cu))
        for c_ in cages:
            if c_[0] != "cage":
                continue
            _, Ru, cu, lo_, hi_, fbx, fix, typ = c_
            corners = np.array([[x, y, z] for x in (lo_[0], hi_[0]) for y in (lo_[1], hi_[1]) for z in (lo_[2], hi_[2])]) @ Ru.T + cu
            wlo, whi = corners.min(0), corners.max(0)
            if typ == "TI-TLIF":
                _composite_fn(slab, wlo, whi, lambda u, v, w, fbx=fbx, fix=fix: np.maximum(fbx(u, v, w), -fix(u, v, w)),
                              4500.0, target="metal", local=(Ru, cu))
            else:
                _composite_fn(slab, wlo, whi, fbx, F32(330.0), local=(Ru, cu))
            _composite_fn(slab, wlo, whi, fix, (lambda s_: F32(520.0) + F32(140.0) * slab.tex[s_]), local=(Ru, cu))
        for bo in bones:
            _composite_bone(slab, bo)
        for pa, pb in grafts:
            lo_ = np.minimum(pa, pb) - 9
            hi_ = np.maximum(pa, pb) + 9
            _composite_fn(slab, lo_, hi_, lambda X, Y, Z, pa=pa, pb=pb: _seg_dist(X, Y, Z, pa, pb) - F32(6.5),
                          (lambda s_: F32(380.0) + F32(260.0) * np.clip(slab.tex[s_], -1.2, 2.0)))
        for lv, blobs, body_fn in cements:
            R_, c_ = A.R[lv], A.c[lv]

            def cfn(u, v, w, blobs=blobs, body_fn=body_fn):
                f = None
                for (cc, ra, rb) in blobs:
                    g = _ell3(u - cc[0], v - cc[1], w - cc[2], ra, rb, rb)
                    f = g if f is None else np.minimum(f, g)
                return np.maximum(f, body_fn(u, v, w) + 1.0)

            pts = np.array([b[0] for b in blobs])
            lo_l, hi_l = pts.min(0) - 9, pts.max(0) + 9
            wlo, whi = A.bones[lv].world_bbox(lo_l, hi_l)
            _composite_fn(slab, wlo, whi, cfn, (lambda s_: F32(1750.0) + F32(180.0) * slab.tex[s_]), local=(R_, c_))
        for (lo_, hi_, fn, hu_) in metals:
            _composite_fn(slab, lo_, hi_, fn, hu_, target="metal")
        tissue = slab.hu
        tissue *= (1.0 - slab.mocc)
        metal = slab.mhu
        if m > 1:
            tissue = tissue.reshape(kk, m, N, N).mean(1)
            metal = metal.reshape(kk, m, N, N).mean(1)
        has_metal = bool(metal.max() > 0)
        if has_metal:
            # blooming: extra blur of the metal only (inside its bounding window)
            nzm = np.nonzero(metal.max(0) > 0)
            pad = int(4 * sb_px) + 2
            j0, j1 = max(0, nzm[0].min() - pad), min(N, nzm[0].max() + pad + 1)
            i0, i1 = max(0, nzm[1].min() - pad), min(N, nzm[1].max() + pad + 1)
            tissue[:, j0:j1, i0:i1] += ndimage.gaussian_filter(metal[:, j0:j1, i0:i1], (0, sb_px, sb_px), mode="constant")
        Ft = sfft.rfft2(tissue, workers=2)
        Ft *= H
        # coloured quantum noise generated directly in the frequency domain
        re = rng.standard_normal(Ft.shape, dtype=F32)
        im = rng.standard_normal(Ft.shape, dtype=F32)
        Fn = (re + 1j * im).astype(np.complex64)
        Fn *= Sn
        Ft += Fn
        img = sfft.irfft2(Ft, s=(N, N), workers=2).astype(F32)
        if has_metal and acq["streak_strength"] > 0:
            dens = metal.reshape(kk, nc, f_c, nc, f_c).mean((2, 4)) / F32(HU_TI)
            st = np.zeros((kk, nc, nc), F32)
            for j in range(kk):
                gk = k0 + j
                if last_st[0] is not None and gk - last_st[1] < st_every:
                    st[j] = last_st[0]
                    continue
                r_ = _streaks(dens[j], fb, rng, beta, sig_ps)
                if r_ is not None:
                    st[j] = r_
                    last_st[0], last_st[1] = st[j], gk
            while st.shape[-1] < N:
                st = _up2(st)
            st *= F32(750.0)
            np.clip(st, -900.0, 900.0, out=st)
            st *= 1.0 - np.clip(metal * F32(1.5 / HU_TI), 0.0, 1.0)
            img += st
        np.clip(img, -1024.0, hmax, out=img)
        img -= F32(icpt)
        if slope != 1.0:
            img /= F32(slope)
        np.rint(img, out=img)
        out[k0:k0 + kk] = img.astype(np.int16)
    return out, xs, ys, zs


# ----------------------------------------------------------------------------------------
# DICOM writing
# ----------------------------------------------------------------------------------------

def _uid(*parts):
    from pydicom.uid import generate_uid
    return generate_uid(prefix="1.2.826.0.1.3680043.10.543.", entropy_srcs=[GENERATOR] + [str(p) for p in parts])


def _write_dicom(params, vol, xs, ys, zs, directory):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    acq = params["acquisition"]
    P = params["patient"]
    sid = params["study_id"]
    study_uid = _uid(sid, "study")
    series_uid = _uid(sid, "series")
    for_uid = _uid(sid, "for")
    ct_class = "1.2.840.10008.5.1.4.1.1.2"
    nz = len(zs)
    ps = acq["pixel_spacing_mm"]
    lvls = params["surgery"]["instrumented_levels"]
    body_part = "LSPINE" if all(l[0] in "LS" for l in lvls) else "TLSPINE"
    days = params["surgery"]["days_postop"]
    base_date = 20250101
    order = np.argsort(-zs)  # instance 1 = most superior
    paths = []
    for inst, k in enumerate(order, start=1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ct_class
        sop = _uid(sid, "sop", int(k))
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.543.1"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = ct_class
        ds.SOPInstanceUID = sop
        ds.StudyDate = str(base_date + (params["index"] % 28))
        ds.SeriesDate = ds.StudyDate
        ds.ContentDate = ds.StudyDate
        ds.StudyTime = "101500"
        ds.SeriesTime = "101700"
        ds.ContentTime = "101700"
        ds.AccessionNumber = f"A{abs(hash(sid)) % 10 ** 8:08d}"[:16]
        ds.Modality = "CT"
        ds.Manufacturer = "PHANTOM3"
        ds.ManufacturerModelName = "spine_phantom3"
        ds.InstitutionName = "Synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT LUMBAR SPINE POSTOP"
        ds.SeriesDescription = f"Spine {acq['slice_thickness_mm']}mm {acq['kernel']}" + (" MAR" if acq["mar"] else "")
        ds.PatientName = f"PHANTOM3^{sid}"
        ds.PatientID = sid
        ds.PatientBirthDate = ""
        ds.PatientSex = P["sex"]
        ds.PatientAge = f"{P['age']:03d}Y"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = f"{acq['slice_thickness_mm']:.3f}".rstrip("0").rstrip(".")
        ds.SpacingBetweenSlices = ds.SliceThickness
        ds.KVP = str(int(acq["kvp"]))
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = f"{ps * acq['matrix']:.2f}"
        ds.ConvolutionKernel = acq["kernel"]
        ds.PatientPosition = acq["patient_position"]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = "3"
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(inst)
        ds.ImagePositionPatient = [f"{xs[0]:.4f}", f"{ys[0]:.4f}", f"{zs[k]:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{zs[k]:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = int(vol.shape[1])
        ds.Columns = int(vol.shape[2])
        ds.PixelSpacing = [f"{ps:.6f}".rstrip("0"), f"{ps:.6f}".rstrip("0")]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "500"
        ds.WindowWidth = "2000"
        ds.RescaleIntercept = str(int(acq["rescale_intercept"]))
        ds.RescaleSlope = str(acq["rescale_slope"])
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(vol[k]).tobytes()
        ds["PixelData"].VR = "OW"
        p = os.path.join(directory, f"IM{inst:05d}.dcm")
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return dict(study_uid=study_uid, series_uid=series_uid, n_files=len(paths))


def write_study(params: dict, directory: str) -> dict:
    """render the study, write a DICOM series + truth.json into directory, return the truth dict."""
    t0 = time.time()
    os.makedirs(directory, exist_ok=True)
    A = _plan(params)
    A.interp = _Interp(A)
    vol, xs, ys, zs = _render(params, A)
    info = _write_dicom(params, vol, xs, ys, zs, directory)
    acq = params["acquisition"]
    extra = {
        "matrix": int(acq["matrix"]), "n_slices": int(len(zs)),
        "z_range_mm": [round(float(zs.min()), 3), round(float(zs.max()), 3)],
        "fov_centre_lps_mm": [round(float(xs.mean()), 3), round(float(ys.mean()), 3)],
        "fov_mode": acq["fov_mode"], "rescale_intercept": acq["rescale_intercept"], "mar": acq["mar"],
        "rods": [{"side": r["side"], "material": params["surgery"]["rod_material"],
                  "diameter_mm": params["surgery"]["rod_diameter_mm"],
                  "points_lps_mm": [[round(float(x), 2) for x in p] for p in r["points"][::3]]} for r in A.rods],
        "crosslinks": A.crosslinks,
        "cages": params["surgery"]["cages"],
        "days_postop": params["surgery"]["days_postop"],
        "study_instance_uid": info["study_uid"], "series_instance_uid": info["series_uid"],
        "render_seconds": round(time.time() - t0, 2),
    }
    truth = _truth_from_plan(params, A, extra)
    with open(os.path.join(directory, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=1)
    return truth

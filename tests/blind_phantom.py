# ---------------------------------------------------------------------------------------------
# tests/blind_phantom.py -- copied UNCHANGED (below this header) from /work/blind/phantom/spine_phantom.py
# (generator version 1.0, sha256 of the original file
#  6fd6e8c911bfed4645bc3b12f9a45bc430d8acd4b8e783e1a16c10701705b3cf), copied on 2026-11-26.
# Written BLIND by a colleague from an anatomy brief (the domain guide, section 6, and general
# anatomy) without reading workers/analysers/: it is the independent phantom family of issue 10.
# Its README (conventions, truth format) is summarised in docs/ct-validation.md.
# Do not tune this file to the analyser; regenerate the copy only from its author's version.
# ---------------------------------------------------------------------------------------------
#!/usr/bin/env python3
"""spine_phantom.py -- blind synthetic post-operative thoraco-lumbar spine CT phantom.

Self-contained (numpy, scipy, pydicom >= 3, stdlib).  See README.md for the
coordinate conventions and the truth.json format.

Public API
----------
family(seed, n, small=False) -> list[dict]       deterministic parameter sets
make_study(params) -> (list[pydicom.Dataset], dict truth)
write_study(params, directory) -> dict truth      writes IM*.dcm + truth.json
render_volume(params, clean=False) -> (volume_HU float32 [nz,ny,nx], grid dict, scene)
CLI:  python spine_phantom.py OUTDIR --seed 1 --n 200 [--small] [--workers N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
from scipy import ndimage
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

GENERATOR_VERSION = "1.0"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

ALL_LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]
INSTRUMENTABLE = ALL_LEVELS[1:10]            # T10 .. S1

# name: body height h, body width bw, body depth bd, disc below, pedicle W, pedicle H,
#       convergence, sagittal tilt alpha (lordosis, deg), transverse process length,
#       spinous process length, spinous caudal angle, TP backward angle
_BASE = {
    "T9":  (21.0, 34.0, 27.0, 5.0, 5.5, 12.0, 5.0, -7.0, 18.0, 32.0, 32.0, 30.0),
    "T10": (22.0, 36.0, 28.0, 5.5, 6.0, 13.5, 5.0, -6.0, 18.0, 32.0, 28.0, 28.0),
    "T11": (23.0, 38.0, 29.0, 6.0, 7.0, 15.0, 6.0, -4.0, 12.0, 30.0, 18.0, 20.0),
    "T12": (24.0, 40.0, 30.0, 7.0, 7.5, 15.5, 7.0, -3.0, 8.0, 30.0, 10.0, 10.0),
    "L1":  (25.0, 42.0, 31.0, 8.0, 7.5, 15.0, 8.0, -2.0, 14.0, 30.0, 5.0, 5.0),
    "L2":  (26.0, 44.0, 32.0, 9.0, 8.0, 15.0, 10.0, 0.0, 18.0, 31.0, 3.0, 5.0),
    "L3":  (27.0, 46.0, 33.0, 10.0, 9.0, 14.5, 12.0, 2.0, 22.0, 31.0, 0.0, 5.0),
    "L4":  (27.0, 48.0, 34.0, 10.0, 10.0, 14.0, 15.0, 6.0, 19.0, 29.0, 0.0, 5.0),
    "L5":  (26.0, 50.0, 34.0, 11.0, 11.5, 13.5, 20.0, 12.0, 16.0, 24.0, 0.0, 5.0),
    "S1":  (28.0, 50.0, 33.0, 11.0, 11.5, 16.0, 24.0, 30.0, 0.0, 12.0, 0.0, 0.0),
    "S2":  (22.0, 40.0, 26.0, 0.6, 9.0, 12.0, 20.0, 40.0, 0.0, 10.0, 0.0, 0.0),
}
_PSOAS_R = {"T9": 0, "T10": 0, "T11": 0, "T12": 4, "L1": 7, "L2": 11, "L3": 15,
            "L4": 19, "L5": 21, "S1": 0, "S2": 0}

MATERIAL_HU = {"Ti": (4000.0, 8000.0), "steel": (12000.0, 18000.0),
               "CoCr": (14000.0, 22000.0), "PtIr": (15000.0, 25000.0)}

PIXEL_ENCODINGS = {
    # name: (BitsStored, PixelRepresentation, RescaleIntercept, stored dtype)
    "u12": (12, 0, -1024.0, np.uint16),      # HU -1024 .. 3071 (saturating)
    "s16": (16, 1, 0.0, np.int16),           # HU -32768 .. 32767 (extended)
    "u16_1024": (16, 0, -1024.0, np.uint16),  # HU -1024 .. 64511 (extended)
    "u16_8192": (16, 0, -8192.0, np.uint16),  # HU -8192 .. 57343 (extended)
}


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------
def _rad(d):
    return float(d) * math.pi / 180.0


def _R_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _R_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _R_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _frame_z(d, hint=(0.0, 0.0, 1.0)):
    """Rotation matrix whose third column is unit(d)."""
    e3 = _unit(d)
    h = np.asarray(hint, float)
    if abs(float(np.dot(h, e3))) > 0.95:
        h = np.array([1.0, 0, 0]) if abs(e3[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = _unit(np.cross(h, e3))
    e2 = np.cross(e3, e1)
    return np.column_stack([e1, e2, e3])


def _r(x, nd=4):
    return float(round(float(x), nd))


def _rl(v, nd=4):
    return [_r(a, nd) for a in v]


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o


def params_hash(params):
    s = json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(s.encode()).hexdigest()


def _uid(*parts):
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def gr_grade(depth_mm):
    """Gertzbein-Robbins grade from breach depth (mm)."""
    d = float(depth_mm)
    if d <= 0.0:
        return "A"
    if d < 2.0:
        return "B"
    if d < 4.0:
        return "C"
    if d < 6.0:
        return "D"
    return "E"


# ----------------------------------------------------------------------------
# analytic shapes.  f(X,Y,Z) returns a 1-Lipschitz signed bound (mm), < 0 inside
# ----------------------------------------------------------------------------
class Shape:
    def aabb(self):
        raise NotImplementedError

    def f(self, X, Y, Z):
        raise NotImplementedError

    def offset(self, t):
        raise NotImplementedError


class _Framed(Shape):
    def __init__(self, R, c):
        self.R = np.asarray(R, float)
        self.c = np.asarray(c, float)
        self._rm = [[float(self.R[i, j]) for j in range(3)] for i in range(3)]
        self._cc = [float(x) for x in self.c]

    def _loc(self, X, Y, Z):
        r = self._rm
        dx = X - self._cc[0]
        dy = Y - self._cc[1]
        dz = Z - self._cc[2]
        return (r[0][0] * dx + r[1][0] * dy + r[2][0] * dz,
                r[0][1] * dx + r[1][1] * dy + r[2][1] * dz,
                r[0][2] * dx + r[1][2] * dy + r[2][2] * dz)

    def half_extents(self):
        raise NotImplementedError

    def aabb(self):
        w = np.abs(self.R) @ np.asarray(self.half_extents(), float)
        return self.c - w, self.c + w


def _gauge2(lx, ly, a, b, p):
    if p == 2.0:
        return np.sqrt((lx * (1.0 / a)) ** 2 + (ly * (1.0 / b)) ** 2)
    return (np.abs(lx * (1.0 / a)) ** p + np.abs(ly * (1.0 / b)) ** p) ** (1.0 / p)


class SuperEllipsoid(_Framed):
    def __init__(self, R, c, a, b, cz, p=2.0, q=2.0):
        super().__init__(R, c)
        self.a, self.b, self.cz = float(a), float(b), float(cz)
        self.p, self.q = float(p), float(q)
        assert self.p >= 2.0 and self.q >= 2.0
        self.rin = min(self.a, self.b, self.cz)

    def half_extents(self):
        return (self.a, self.b, self.cz)

    def f(self, X, Y, Z):
        lx, ly, lz = self._loc(X, Y, Z)
        if self.p == 2.0 and self.q == 2.0:
            rho = np.sqrt((lx * (1.0 / self.a)) ** 2 + (ly * (1.0 / self.b)) ** 2
                          + (lz * (1.0 / self.cz)) ** 2)
        else:
            s = _gauge2(lx, ly, self.a, self.b, self.p)
            rho = (s ** self.q + np.abs(lz * (1.0 / self.cz)) ** self.q) ** (1.0 / self.q)
        return (rho - 1.0) * self.rin

    def offset(self, t):
        return SuperEllipsoid(self.R, self.c, max(self.a - t, 0.2), max(self.b - t, 0.2),
                              max(self.cz - t, 0.2), self.p, self.q)


class SuperCylinder(_Framed):
    """Superelliptic cross-section (a along local x, b along local y), |z| <= hz."""

    def __init__(self, R, c, a, b, hz, p=2.0):
        super().__init__(R, c)
        self.a, self.b, self.hz, self.p = float(a), float(b), float(hz), float(p)
        assert self.p >= 2.0
        self.rin = min(self.a, self.b)

    def half_extents(self):
        return (self.a, self.b, self.hz)

    def f(self, X, Y, Z):
        lx, ly, lz = self._loc(X, Y, Z)
        g = _gauge2(lx, ly, self.a, self.b, self.p)
        return np.maximum((g - 1.0) * self.rin, np.abs(lz) - self.hz)

    def offset(self, t):
        return SuperCylinder(self.R, self.c, max(self.a - t, 0.2), max(self.b - t, 0.2),
                             max(self.hz - t, 0.2), self.p)


class Capsule(Shape):
    def __init__(self, p0, p1, r):
        self.p0 = np.asarray(p0, float)
        self.p1 = np.asarray(p1, float)
        self.r = float(r)
        d = self.p1 - self.p0
        self._p = [float(x) for x in self.p0]
        self._d = [float(x) for x in d]
        self._L2 = max(float(d @ d), 1e-12)

    def aabb(self):
        return np.minimum(self.p0, self.p1) - self.r, np.maximum(self.p0, self.p1) + self.r

    def f(self, X, Y, Z):
        px, py, pz = self._p
        dx, dy, dz = self._d
        ax, ay, az = X - px, Y - py, Z - pz
        t = np.clip((ax * dx + ay * dy + az * dz) * (1.0 / self._L2), 0.0, 1.0)
        return np.sqrt((ax - t * dx) ** 2 + (ay - t * dy) ** 2 + (az - t * dz) ** 2) - self.r

    def offset(self, t):
        return Capsule(self.p0, self.p1, max(self.r - t, 0.1))


class HalfSpace(Shape):
    """inside where n . P <= d"""

    def __init__(self, n, d):
        self.n = _unit(n)
        self.d = float(d)
        self._n = [float(x) for x in self.n]

    @staticmethod
    def through(point, outward):
        n = _unit(outward)
        return HalfSpace(n, float(n @ np.asarray(point, float)))

    def aabb(self):
        return None

    def f(self, X, Y, Z):
        return self._n[0] * X + self._n[1] * Y + self._n[2] * Z - self.d

    def offset(self, t):
        return HalfSpace(self.n, self.d - t)


def _bb_union(bbs):
    bbs = [b for b in bbs if b is not None]
    if not bbs:
        return None
    return (np.min([b[0] for b in bbs], axis=0), np.max([b[1] for b in bbs], axis=0))


class Union(Shape):
    def __init__(self, children):
        self.ch = list(children)

    def aabb(self):
        bbs = [c.aabb() for c in self.ch]
        if any(b is None for b in bbs):
            return None
        return _bb_union(bbs)

    def f(self, X, Y, Z):
        out = self.ch[0].f(X, Y, Z)
        for c in self.ch[1:]:
            out = np.minimum(out, c.f(X, Y, Z))
        return out

    def offset(self, t):
        return Union([c.offset(t) for c in self.ch])


class Intersect(Shape):
    def __init__(self, children):
        self.ch = list(children)

    def aabb(self):
        bbs = [c.aabb() for c in self.ch if c.aabb() is not None]
        if not bbs:
            return None
        lo = np.max([b[0] for b in bbs], axis=0)
        hi = np.min([b[1] for b in bbs], axis=0)
        return lo, np.maximum(hi, lo)

    def f(self, X, Y, Z):
        out = self.ch[0].f(X, Y, Z)
        for c in self.ch[1:]:
            out = np.maximum(out, c.f(X, Y, Z))
        return out

    def offset(self, t):
        return Intersect([c.offset(t) for c in self.ch])


class Subtract(Shape):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def aabb(self):
        return self.a.aabb()

    def f(self, X, Y, Z):
        return np.maximum(self.a.f(X, Y, Z), -self.b.f(X, Y, Z))

    def offset(self, t):
        return Subtract(self.a.offset(t), self.b.offset(-t))


class ScrewShape(_Framed):
    """Threaded pedicle screw shank: entry at local z=-L/2, tip at +L/2."""

    def __init__(self, entry, d, L, R, core, pitch, tip_len):
        d = _unit(d)
        super().__init__(_frame_z(d), np.asarray(entry, float) + d * L / 2.0)
        self.L, self.Ro, self.core = float(L), float(R), float(core)
        self.pitch, self.tip_len = float(pitch), float(tip_len)

    def half_extents(self):
        return (self.Ro, self.Ro, self.L / 2.0)

    def f(self, X, Y, Z):
        lx, ly, lz = self._loc(X, Y, Z)
        zz = lz + self.L / 2.0
        rho = np.sqrt(lx * lx + ly * ly)
        th = np.arctan2(ly, lx)
        ph = np.mod(zz * (1.0 / self.pitch) - th * (1.0 / (2 * math.pi)), 1.0)
        tri = 1.0 - np.abs(2.0 * ph - 1.0)
        r = self.core + (self.Ro - self.core) * tri
        r = r * np.clip((self.L - zz) * (1.0 / self.tip_len), 0.12, 1.0)
        return 0.5 * np.maximum(np.maximum(rho - r, -zz), zz - self.L)


def _screw_radius_profile(t, L, R, tip_len):
    return R * np.clip((L - t) / tip_len, 0.12, 1.0)


class Frame:
    def __init__(self, O, R):
        self.O = np.asarray(O, float)
        self.R = np.asarray(R, float)

    def p(self, v):
        return self.O + self.R @ np.asarray(v, float)

    def vec(self, v):
        return self.R @ np.asarray(v, float)

    def rot(self, Rl):
        return self.R @ np.asarray(Rl, float)

    def inv(self, P):
        return self.R.T @ (np.asarray(P, float) - self.O)


_ID = Frame(np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------
# grid + painter (narrow-band super-sampled partial volume)
# ----------------------------------------------------------------------------
class _Grid:
    def __init__(self, nx, ny, px, x0, y0, ztop, nz, sp, thick):
        self.nx, self.ny, self.nz = int(nx), int(ny), int(nz)
        self.px, self.x0, self.y0 = float(px), float(x0), float(y0)
        self.ztop, self.sp, self.thick = float(ztop), float(sp), float(thick)
        self.x = x0 + np.arange(nx) * px
        self.y = y0 + np.arange(ny) * px
        self.z = ztop - np.arange(nz) * sp
        self.xf = self.x.astype(np.float32)
        self.yf = self.y.astype(np.float32)
        self.zf = self.z.astype(np.float32)


class _Painter:
    def __init__(self, g, n_xy=3):
        self.g = g
        px, th = g.px, g.thick
        self.hd = 0.5 * math.sqrt(2 * px * px + th * th) + 1e-3
        nzs = int(min(8, max(2, math.ceil(1.5 * th / px))))
        o = ((np.arange(n_xy) + 0.5) / n_xy - 0.5) * px
        oz = ((np.arange(nzs) + 0.5) / nzs - 0.5) * th
        OX, OY, OZ = np.meshgrid(o, o, oz, indexing="ij")
        self.sub = [a.ravel().astype(np.float32) for a in (OX, OY, OZ)]
        OX2, OY2 = np.meshgrid(o, o, indexing="ij")
        self.sub2 = [OX2.ravel().astype(np.float32), OY2.ravel().astype(np.float32)]
        self.hd2 = 0.5 * math.sqrt(2.0) * px + 1e-3

    def box(self, shape):
        g = self.g
        bb = shape.aabb()
        if bb is None:
            return (0, g.nz, 0, g.ny, 0, g.nx)
        lo, hi = bb
        j0 = max(0, int(math.floor((lo[0] - g.x0) / g.px)) - 1)
        j1 = min(g.nx, int(math.ceil((hi[0] - g.x0) / g.px)) + 2)
        i0 = max(0, int(math.floor((lo[1] - g.y0) / g.px)) - 1)
        i1 = min(g.ny, int(math.ceil((hi[1] - g.y0) / g.px)) + 2)
        k0 = max(0, int(math.floor((g.ztop - hi[2] - 0.5 * g.thick) / g.sp)) - 1)
        k1 = min(g.nz, int(math.ceil((g.ztop - lo[2] + 0.5 * g.thick) / g.sp)) + 2)
        if j0 >= j1 or i0 >= i1 or k0 >= k1:
            return None
        return (k0, k1, i0, i1, j0, j1)

    def occ(self, shape, k0, k1, i0, i1, j0, j1):
        g = self.g
        xv, yv, zv = g.xf[j0:j1], g.yf[i0:i1], g.zf[k0:k1]
        F = shape.f(xv[None, None, :], yv[None, :, None], zv[:, None, None])
        F = np.broadcast_to(F, (k1 - k0, i1 - i0, j1 - j0))
        occ = (F < 0).astype(np.float32)
        kk, ii, jj = np.nonzero(np.abs(F) <= self.hd)
        if kk.size:
            ns = self.sub[0].size
            step = max(1, 400000 // ns)
            vals = np.empty(kk.size, np.float32)
            for s in range(0, kk.size, step):
                sl = slice(s, s + step)
                xs = xv[jj[sl]][:, None] + self.sub[0][None, :]
                ys = yv[ii[sl]][:, None] + self.sub[1][None, :]
                zs = zv[kk[sl]][:, None] + self.sub[2][None, :]
                vals[sl] = (shape.f(xs, ys, zs) < 0).mean(axis=1)
            occ[kk, ii, jj] = vals
        return occ

    def paint(self, V, shape, value):
        b = self.box(shape)
        if b is None:
            return None
        k0, k1, i0, i1, j0, j1 = b
        per = (i1 - i0) * (j1 - j0)
        kstep = max(1, 1500000 // max(per, 1))
        val = np.float32(value)
        for ka in range(k0, k1, kstep):
            kb = min(k1, ka + kstep)
            o = self.occ(shape, ka, kb, i0, i1, j0, j1)
            sub = V[ka:kb, i0:i1, j0:j1]
            sub += o * (val - sub)
        return b

    def paint2d(self, img, shape, value, z):
        g = self.g
        xv, yv = g.xf, g.yf
        zf = np.float32(z)
        F = shape.f(xv[None, :], yv[:, None], zf)
        F = np.broadcast_to(F, (g.ny, g.nx))
        occ = (F < 0).astype(np.float32)
        ii, jj = np.nonzero(np.abs(F) <= self.hd2)
        if ii.size:
            xs = xv[jj][:, None] + self.sub2[0][None, :]
            ys = yv[ii][:, None] + self.sub2[1][None, :]
            occ[ii, jj] = (shape.f(xs, ys, zf) < 0).mean(axis=1)
        img += occ * (np.float32(value) - img)


# ----------------------------------------------------------------------------
# parameter family
# ----------------------------------------------------------------------------
def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _sample_study(seed, i, small=False):
    rng = np.random.default_rng([int(seed), int(i), 7919])
    sid = "PH%d_%04d" % (int(seed), int(i))

    construct = str(rng.choice(["none", "single_level", "unilateral", "bilateral_rods",
                                "bilateral_no_rods"], p=[0.10, 0.12, 0.12, 0.56, 0.10]))
    extra = str(rng.choice(["none", "hip", "scs"], p=[0.82, 0.09, 0.09]))
    if construct == "single_level":
        nlev = 1
    elif construct == "bilateral_rods":
        nlev = int(rng.choice([2, 3], p=[0.55, 0.45]))
    else:
        nlev = int(rng.choice([1, 2, 3]))
    # choose top instrumented index in INSTRUMENTABLE (0=T10 .. 8=S1)
    if extra == "hip":
        bottom = int(rng.choice([6, 7, 8]))
        bottom = max(bottom, nlev - 1)
        top = bottom - nlev + 1
    elif extra == "scs":
        top = int(rng.integers(0, 4))
        top = min(top, 9 - nlev)
    else:
        w = np.array([1, 1, 2, 3, 3, 4, 6, 8, 6], float)[: 9 - nlev + 1]
        top = int(rng.choice(np.arange(len(w)), p=w / w.sum()))
    instr = INSTRUMENTABLE[top: top + nlev]
    i_top = ALL_LEVELS.index(instr[0])
    i_bot = ALL_LEVELS.index(instr[-1])
    lo = i_bot + 1
    if extra == "hip":
        lo = max(lo, ALL_LEVELS.index("S2"))
    model = ALL_LEVELS[i_top - 1: lo + 1]

    # ---- global anatomy ----
    scale = _u(rng, 0.9, 1.1)
    lord = _u(rng, 0.4, 1.05)
    canal_shape = "round"
    lowest = ALL_LEVELS.index(instr[-1])
    if rng.random() < (0.45 if lowest >= ALL_LEVELS.index("L4") else 0.2):
        canal_shape = "trefoil"
    cap_study = _u(rng, 10.0, 22.0)
    cw_base = _u(rng, 19.0, 26.0)
    sW, sH = _u(rng, -2.0, 2.0), _u(rng, -2.0, 2.0)
    conv_off = _u(rng, -6.0, 6.0)
    tilt_study = _u(rng, -10.0, 10.0)
    ped_frac = _u(rng, 0.45, 0.65)
    ped_wfrac = _u(rng, 0.08, 0.2)
    t_lam = _u(rng, 4.5, 7.5)
    cort_body = _u(rng, 0.7, 1.2)
    cort_post = _u(rng, 1.0, 1.6)

    levels = {}
    for nm in model:
        h, bw, bd, disc, pw, ph, conv, alpha, tpl, spl, spa, tpa = _BASE[nm]
        thor = nm.startswith("T")
        sac = nm.startswith("S")
        cap = float(np.clip(cap_study + rng.normal(0, 0.8) - (2.0 if sac else 0.0), 10.0, 22.0))
        if thor:
            cw = float(np.clip(cap * _u(rng, 1.0, 1.15) + 2.0, 15.0, 22.0))
            shp = "round"
        else:
            cw = float(np.clip(cw_base + 0.3 * (cap - 15.0) + rng.normal(0, 0.8)
                               + (2.0 if sac else 0.0), 16.0, 30.0))
            shp = canal_shape if nm in ("L3", "L4", "L5", "S1", "S2") else "round"
        ped = {}
        for side in ("L", "R"):
            ped[side] = {
                "width_mm": _r(np.clip(pw + sW + rng.normal(0, 0.5), 5.0, 12.0), 3),
                "height_mm": _r(np.clip(ph + sH + rng.normal(0, 0.6), 10.0, 18.0), 3),
                "convergence_deg": _r(np.clip(conv + conv_off + rng.normal(0, 2.0), 0.0, 25.0), 3),
                "tilt_deg": _r(np.clip(tilt_study + rng.normal(0, 2.5), -15.0, 15.0), 3),
            }
        # keep left/right widths similar
        ped["R"]["width_mm"] = _r(np.clip(0.5 * (ped["R"]["width_mm"] + ped["L"]["width_mm"])
                                          + rng.normal(0, 0.3), 5.0, 12.0), 3)
        hs = h * scale * _u(rng, 0.96, 1.04)
        levels[nm] = {
            "h": _r(hs), "bw": _r(bw * scale * _u(rng, 0.96, 1.04)),
            "bd": _r(bd * scale * _u(rng, 0.96, 1.04)),
            "disc_below": _r(disc * _u(rng, 0.75, 1.2) if disc > 1 else disc),
            "alpha_deg": _r(alpha * lord + rng.normal(0, 1.5)),
            "canal_ap": _r(cap), "canal_w": _r(cw), "canal_shape": shp,
            "ped_frac": _r(ped_frac + rng.normal(0, 0.03)),
            "ped_wfrac": _r(ped_wfrac), "t_lam": _r(t_lam), "cort_body": _r(cort_body),
            "cort_post": _r(cort_post),
            "tp_len": _r(tpl * _u(rng, 0.85, 1.15)), "tp_angle_deg": _r(tpa),
            "sp_len": _r(spl * _u(rng, 0.85, 1.15)), "sp_angle_deg": _r(spa + rng.normal(0, 3)),
            "sp_height": _r((0.45 if thor else 0.55) * hs * _u(rng, 0.85, 1.15)),
            "paraspinal_a": _r(_u(rng, 14.0, 22.0)), "paraspinal_b": _r(_u(rng, 17.0, 25.0)),
            "psoas_r": _r(_PSOAS_R[nm] * _u(rng, 0.8, 1.2)),
            "pedicles": ped, "laminectomy": False,
        }
    for k, nm in enumerate(model):
        levels[nm]["disc_above"] = levels[model[k - 1]]["disc_below"] if k > 0 else 8.0

    # ---- construct / screws ----
    sides = []
    if construct in ("single_level", "bilateral_rods", "bilateral_no_rods"):
        sides = ["L", "R"]
    elif construct == "unilateral":
        sides = [str(rng.choice(["L", "R"]))]
    rods = construct == "bilateral_rods" or (construct == "unilateral" and nlev >= 2
                                            and rng.random() < 0.5)
    screw_mat = str(rng.choice(["Ti", "steel", "CoCr"], p=[0.8, 0.12, 0.08]))
    rod_mat = screw_mat if rng.random() < 0.7 else "CoCr"
    p_breach = 0.0 if rng.random() < 0.4 else _u(rng, 0.2, 0.7)
    cement = construct != "none" and rng.random() < 0.12
    screws = []
    for nm in (instr if construct != "none" else []):
        for side in sides:
            pd = levels[nm]["pedicles"][side]
            W = pd["width_mm"]
            allowed = [d for d in (4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5) if d <= W - 0.5] or [4.5]
            if W < 5.0 + 1e-9 and allowed == [4.5]:
                pd["width_mm"] = max(W, 5.0)
            wts = np.linspace(1.0, 2.0, len(allowed))
            dia = float(rng.choice(allowed, p=wts / wts.sum()))
            if rng.random() < 0.15:
                dia = float(rng.choice([4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5]))
                dia = min(dia, max(4.5, W - 0.3))
            length = _r(_u(rng, 35.0, 55.0), 2)
            br = {"direction": "none", "depth_mm": 0.0, "mode": "none"}
            if rng.random() < p_breach:
                dirs, pw_ = (["medial", "inferior"], [0.65, 0.35]) if nm == "S1" else \
                    (["medial", "lateral", "inferior"], [0.45, 0.35, 0.20])
                dirn = str(rng.choice(dirs, p=pw_))
                g = str(rng.choice(["B", "C", "D", "E"]))
                lo_, hi_ = {"B": (0.25, 1.95), "C": (2.05, 3.95), "D": (4.05, 5.95),
                            "E": (6.05, 10.0)}[g]
                depth = _r(_u(rng, lo_, hi_), 3)
                mode = "pivot" if (depth <= 5.0 and rng.random() < 0.35) else "shift"
                br = {"direction": dirn, "depth_mm": depth, "mode": mode}
            screws.append({
                "level": nm, "side": side, "diameter_mm": dia, "length_mm": length,
                "material": screw_mat, "breach": br,
                "jitter": [_r(_u(rng, -0.35, 0.35)), _r(_u(rng, -0.35, 0.35))],
                "cement": bool(cement and rng.random() < 0.75),
                "head_len": _r(_u(rng, 12.0, 15.0)), "head_r": _r(_u(rng, 5.5, 6.5)),
                "pitch": _r(_u(rng, 2.4, 3.0)), "core_ratio": _r(_u(rng, 0.68, 0.78)),
            })
    if cement and screws and not any(s["cement"] for s in screws):
        screws[0]["cement"] = True

    lam_levels = []
    if rng.random() < (0.25 if construct != "none" else 0.10):
        cand = [n for n in instr if n != "S1"]
        if cand:
            k = int(rng.integers(0, len(cand)))
            lam_levels = cand[k: k + int(rng.choice([1, 2]))]
    for nm in lam_levels:
        levels[nm]["laminectomy"] = True

    vac = None
    if rng.random() < 0.08:
        pairs = [model[k] for k in range(1, len(model)) if model[k] not in ("S1", "S2")]
        if pairs:
            vac = str(rng.choice(pairs))   # disc below level `vac`'s upper neighbour = above vac

    # ---- extras ----
    hip = None
    scs = None
    if extra == "hip":
        hip = {"side": str(rng.choice(["L", "R"])), "lateral_mm": _r(_u(rng, 82, 100)),
               "anterior_mm": _r(_u(rng, 15, 45)), "below_mm": _r(_u(rng, 35, 55)),
               "cup_r": _r(_u(rng, 24, 28)), "cup_t": _r(_u(rng, 3, 5)),
               "head_r": _r(_u(rng, 14, 16)), "cup_material": "Ti",
               "head_material": str(rng.choice(["CoCr", "steel"]))}
    if extra == "scs":
        tip_choices = [n for n in model if n in ("T10", "T11", "T12", "L1")]
        scs = {"n_leads": int(rng.choice([1, 2], p=[0.6, 0.4])),
               "tip_level": str(rng.choice(tip_choices)) if tip_choices else model[0],
               "tip_frac": _r(_u(rng, -0.3, 0.4)), "offset_mm": _r(_u(rng, -2.5, 2.5)),
               "n_contacts": int(rng.choice([4, 8]))}

    # ---- pose / acquisition ----
    rot = rng.normal(0, 2.0) if rng.random() < 0.5 else _u(rng, -15, 15)
    tilt = rng.normal(0, 2.0) if rng.random() < 0.5 else _u(rng, -15, 15)
    pose = {"axial_rotation_deg": _r(np.clip(rot, -15, 15)),
            "coronal_tilt_deg": _r(np.clip(tilt, -15, 15)),
            "spine_origin_lps": [_r(_u(rng, -40, 40)), _r(_u(rng, 30, 110)),
                                 _r(_u(rng, -700, 100))],
            "fov_offset_mm": [_r(_u(rng, -22, 22)), _r(_u(rng, -22, 22))]}
    if small:
        thick = float(rng.choice([1.5, 2.0, 2.5, 3.0]))
        px = _r(_u(rng, 0.75, 1.0)) if hip is None else 1.3
        matrix = 160 if hip is None else 192
    else:
        thick = float(rng.choice([0.6, 0.625, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                                 p=[.14, .1, .12, .06, .14, .1, .1, .09, .07, .08]))
        px = _r(_u(rng, 0.3, 0.9)) if hip is None else _r(_u(rng, 0.6, 0.9))
        matrix = 512
    spacing = thick
    if rng.random() < 0.25 and thick >= 1.0:
        spacing = thick * float(rng.choice([0.5, 0.8]))
    enc = "u12" if rng.random() < 0.6 else str(rng.choice(["s16", "u16_1024", "u16_8192"]))
    kernel = "bone" if rng.random() < 0.8 else "soft"
    acq = {"slice_thickness_mm": thick, "spacing_mm": _r(spacing), "pixel_mm": px,
           "matrix": matrix, "encoding": enc, "rle": bool(rng.random() < 0.3),
           "kernel": kernel,
           "psf_sigma_mm": _r(_u(rng, 0.25, 0.4) if kernel == "bone" else _u(rng, 0.55, 0.8)),
           "noise_sd": _r(_u(rng, 12, 45) if kernel == "bone" else _u(rng, 5, 18)),
           "margin_top_mm": _r(_u(rng, 8, 20)), "margin_bottom_mm": _r(_u(rng, 8, 20))}
    has_metal = bool(screws) or hip is not None or scs is not None
    mar = bool(has_metal and rng.random() < 0.25)
    art = {"streaks": has_metal, "beam_hardening": bool(has_metal and rng.random() < 0.85),
           "blooming": has_metal, "mar": mar,
           "streak_strength": _r(_u(rng, 0.3, 1.5) * (0.3 if mar else 1.0)),
           "bloom_sigma_mm": _r(_u(rng, 0.3, 1.0)), "bloom_beta": _r(_u(rng, 0.3, 0.8))}
    hu = {"cortical": _r(_u(rng, 700, 1500), 1), "cancellous": _r(_u(rng, 150, 300), 1),
          "disc": _r(_u(rng, 70, 95), 1), "muscle": _r(_u(rng, 40, 60), 1),
          "fat": _r(_u(rng, -110, -80), 1), "csf": _r(_u(rng, 0, 20), 1),
          "cord": _r(_u(rng, 25, 40), 1), "scar": _r(_u(rng, 30, 60), 1),
          "viscera": _r(_u(rng, 20, 40), 1), "blood": _r(_u(rng, 35, 50), 1),
          "cement": _r(_u(rng, 800, 2000), 1), "air": -1000.0, "gas": _r(_u(rng, -950, -700), 1),
          "screw": _r(_u(rng, *MATERIAL_HU[screw_mat]), 1),
          "rod": _r(_u(rng, *MATERIAL_HU[rod_mat]), 1)}
    body = {"A": _r(_u(rng, 135, 185)), "B": _r(_u(rng, 95, 140)),
            "subcut_mm": _r(_u(rng, 8, 40)), "wall_mm": _r(_u(rng, 6, 14)),
            "n_gas": int(rng.integers(0, 6)), "gas_seed": int(rng.integers(0, 2**31 - 1))}
    if hip is not None:
        body["A"] = max(body["A"], _r(hip["lateral_mm"] + 48))

    return {
        "generator_version": GENERATOR_VERSION, "study_id": sid, "family_seed": int(seed),
        "index": int(i), "small": bool(small), "construct": construct,
        "instrumented_levels": list(instr), "model_levels": list(model), "levels": levels,
        "screws": screws, "rods": bool(rods and len(screws) > 0), "rod_material": rod_mat,
        "rod_diameter_mm": float(rng.choice([5.5, 6.0, 6.35])),
        "laminectomy_levels": lam_levels, "disc_vacuum_below": vac,
        "hip_prosthesis": hip, "scs_lead": scs, "pose": pose, "acq": acq, "artefacts": art,
        "hu": hu, "body": body, "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def family(seed: int, n: int, small: bool = False) -> list:
    """n deterministic parameter sets; study i depends only on (seed, i)."""
    return [_sample_study(seed, i, small) for i in range(int(n))]


# ----------------------------------------------------------------------------
# anatomy
# ----------------------------------------------------------------------------
def _canal_shape(L, F, hz):
    v0 = L["bd"] / 2.0
    cap, cw = L["canal_ap"], L["canal_w"]
    vC, bC = v0 + 0.42 * cap, 0.58 * cap
    main = SuperCylinder(F.R, F.p([0, vC, 0]), cw / 2.0, bC, hz, p=2.2)
    if L["canal_shape"] != "trefoil":
        return main
    apex = np.array([0.0, v0 + cap + 1.0, 0.0])
    parts = [main]
    for sg in (1.0, -1.0):
        n = np.array([sg * (0.7 * cap + 1.0), cw / 2.0, 0.0])
        parts.append(HalfSpace.through(F.p(apex), F.vec(n)))
    tri = Intersect(parts)
    lobes = [SuperCylinder(F.R, F.p([sg * cw * 0.34, v0 + 0.2 * cap, 0]), cw * 0.2,
                           0.24 * cap, hz, p=2.0) for sg in (1.0, -1.0)]
    return Union([tri] + lobes)


def _halfwidth(shape, v, w=0.0, umax=40.0):
    u = np.arange(0.0, umax, 0.01)
    f = shape.f(u, np.full_like(u, v), np.full_like(u, w))
    inside = np.nonzero(f < 0)[0]
    return float(u[inside[-1]]) if inside.size else 0.0


class _Level:
    """All geometry of one vertebra in its own frame."""

    def __init__(self, name, L, F, hu):
        self.name, self.L, self.F = name, L, F
        self.thor = name.startswith("T")
        self.sac = name.startswith("S")
        h, bd = L["h"], L["bd"]
        self.h, self.bd = h, bd
        self.v0 = bd / 2.0
        cap = L["canal_ap"]
        self.v_cut = self.v0 + max(L["ped_frac"] * cap, 7.5)
        self.v_mid = 0.5 * (self.v0 + self.v_cut)
        self.hz_c = h / 2.0 + max(L["disc_below"], L["disc_above"]) + 2.0
        # local (identity-frame) canal for measurements
        Cl = _canal_shape(L, _ID, self.hz_c)
        self.hw_mid = _halfwidth(Cl, self.v_mid)
        self.hw_cut = _halfwidth(Cl, self.v_cut)
        self.hw_max = max(_halfwidth(Cl, self.v0 + f * cap) for f in (0.2, 0.35, 0.5, 0.65))
        self.C = _canal_shape(L, F, self.hz_c)
        self.ped = {}
        for side, sg in (("L", 1.0), ("R", -1.0)):
            p = L["pedicles"][side]
            W, H = p["width_mm"], p["height_mm"]
            g, tau = _rad(p["convergence_deg"]), _rad(p["tilt_deg"])
            d = np.array([-sg * math.sin(g) * math.cos(tau), -math.cos(g) * math.cos(tau),
                          math.sin(tau)])
            m = np.array([-sg * math.cos(g), math.sin(g), 0.0])
            c = np.cross(d, m)
            if c[2] < 0:
                c = -c
            c = _unit(c)
            w_p = min(L["ped_wfrac"] * h, h / 2.0 - H / 2.0 + 1.5)
            w_p = max(w_p, -1.0)
            u_p = sg * (self.hw_mid - 0.6 + (W / 2.0) / math.cos(g))
            P0 = np.array([u_p, self.v_mid, w_p])
            cg = math.cos(g) * math.cos(tau)
            s_post = -((self.v_cut - self.v_mid) / cg + 5.0)
            s_ant = (self.v_mid - self.v0) / cg + 10.0
            self.ped[side] = dict(sg=sg, W=W, H=H, g=g, tau=tau, d=d, m=m, c=c, P0=P0,
                                  w_p=w_p, s_post=s_post, s_ant=s_ant)
        # make sure body is wide enough to contain the pedicle roots
        need = max(abs(self.ped[s]["P0"][0]) + self.ped[s]["W"] / 2.0 + 4.0 for s in "LR")
        self.bw = max(L["bw"], 2.0 * need)

    # ---- shapes in world coordinates ----
    def body_shape(self):
        F = self.F
        sc = SuperCylinder(F.R, F.p([0, 0, 0]), self.bw / 2.0, self.bd / 2.0 + 3.0,
                           self.h / 2.0, p=2.6)
        cut = HalfSpace.through(F.p([0, self.v0, 0]), F.vec([0, 1, 0]))
        return Intersect([sc, cut])

    def pedicle_shape(self, side):
        P = self.ped[side]
        F = self.F
        Rl = np.column_stack([P["m"], P["c"], P["d"]])
        cen = P["P0"] + P["d"] * 0.5 * (P["s_ant"] + P["s_post"])
        return SuperCylinder(F.rot(Rl), F.p(cen), P["W"] / 2.0, P["H"] / 2.0,
                             0.5 * (P["s_ant"] - P["s_post"]), p=2.0)

    def junction_point(self, side):
        P = self.ped[side]
        cg = math.cos(P["g"]) * math.cos(P["tau"])
        return P["P0"] - P["d"] * ((self.v_cut - self.v_mid + 2.5) / cg)

    def posterior_parts(self, include_arch=True):
        """list of (outer_shape, cortical_thickness) for posterior elements"""
        F, L = self.F, self.L
        parts = []
        cap = L["canal_ap"]
        tl = L["t_lam"]
        ct = L["cort_post"]
        for side in ("L", "R"):
            P = self.ped[side]
            sg = P["sg"]
            parts.append((self.pedicle_shape(side), ct))
            J = self.junction_point(side)
            jb = SuperEllipsoid(F.R, F.p(J), P["W"] / 2.0 / math.cos(P["g"]) + 2.5, 4.5,
                                P["H"] / 2.0 + 1.5, p=2.5, q=2.5)
            parts.append((Subtract(jb, self.C), ct))
            # transverse process
            if L["tp_len"] > 1.0:
                a = _rad(L["tp_angle_deg"])
                dirv = np.array([sg * math.cos(a), math.sin(a), 0.0])
                cen = J + dirv * (P["W"] / 2.0 + L["tp_len"] / 2.0)
                tp = SuperEllipsoid(F.rot(_R_z(sg * a)), F.p(cen), L["tp_len"] / 2.0 + 2.5,
                                    3.3, 5.0 if not self.thor else 4.5, p=2.5, q=2.5)
                parts.append((tp, ct))
            # superior articular process (not for S2)
            if self.name != "S2":
                parts.append((Subtract(self.sap_shape(side), self.C), ct))
        if include_arch:
            parts.append((self.arch_shape(), ct))
            parts.append((self.spinous_shape(), ct))
        return parts

    def facet_joint_local(self, side, upper):
        """joint centre of this level's SAP (upper=True) in local coords"""
        sg = 1.0 if side == "L" else -1.0
        return np.array([sg * (self.hw_cut + 3.0), self.v_cut + 5.0,
                         self.h / 2.0 + self.L["disc_above"] / 2.0])

    def _facet_R(self, sg):
        n3 = np.array([-sg, 1.0, 0.0]) / math.sqrt(2.0)
        t3 = np.array([sg, 1.0, 0.0]) / math.sqrt(2.0)
        return np.column_stack([n3, t3, [0, 0, 1.0]]), n3

    def sap_shape(self, side):
        sg = 1.0 if side == "L" else -1.0
        J = self.facet_joint_local(side, True)
        Rf, n3 = self._facet_R(sg)
        w_lo = self.ped[side]["w_p"]
        w_hi = J[2] + 6.0
        cen = J - n3 * (0.75 + 2.6)
        cen[2] = 0.5 * (w_lo + w_hi)
        return SuperEllipsoid(self.F.rot(Rf), self.F.p(cen), 2.6, 6.5, 0.5 * (w_hi - w_lo),
                              p=2.5, q=2.5)

    def iap_shape(self, side, lower):
        """inferior articular process articulating with `lower` level's SAP"""
        sg = 1.0 if side == "L" else -1.0
        if lower is not None and lower.name != "S2":
            Jw = lower.F.p(lower.facet_joint_local(side, True))
            J = self.F.inv(Jw)
            Rf_l, n3l = lower._facet_R(sg)
            n3 = self.F.inv(self.F.O + lower.F.vec(n3l))
        else:
            J = np.array([sg * (self.hw_cut + 3.0), self.v_cut + 5.0,
                          -self.h / 2.0 - self.L["disc_below"] / 2.0])
            _, n3 = self._facet_R(sg)
        Rf, _ = self._facet_R(sg)
        w_lo = J[2] - 6.0
        w_hi = -self.h / 2.0 + 9.0
        cen = J + n3 * (0.75 + 2.4)
        cen[2] = 0.5 * (w_lo + w_hi)
        shp = SuperEllipsoid(self.F.rot(Rf), self.F.p(cen), 2.4, 6.0, 0.5 * (w_hi - w_lo),
                             p=2.5, q=2.5)
        return Subtract(shp, self.C)

    def _arch_outer(self):
        F, L = self.F, self.L
        cap, tl = L["canal_ap"], L["t_lam"]
        vC, bC = self.v0 + 0.42 * cap, 0.58 * cap
        w_arch = -0.12 * self.h
        O = SuperCylinder(F.R, F.p([0, vC, w_arch]), self.hw_max + tl + 0.5, bC + tl,
                          0.425 * self.h, p=2.2)
        cut = HalfSpace.through(F.p([0, self.v_cut - 1.5, 0]), F.vec([0, -1, 0]))
        return Intersect([O, cut])

    def arch_shape(self):
        return Subtract(self._arch_outer(), self.C)

    def spinous_shape(self):
        F, L = self.F, self.L
        cap, tl = L["canal_ap"], L["t_lam"]
        b = _rad(L["sp_angle_deg"])
        base = np.array([0.0, self.v0 + cap + 0.5 * tl, -0.12 * self.h])
        dirv = np.array([0.0, math.cos(b), -math.sin(b)])
        Lsp = L["sp_len"]
        cen = base + dirv * (Lsp / 2.0 - 2.0)
        sp = SuperEllipsoid(F.rot(_R_x(-b)), F.p(cen), 3.2 if not self.sac else 2.5,
                            Lsp / 2.0, L["sp_height"] / 2.0, p=2.5, q=2.5)
        return Subtract(sp, self.C)

    def spinous_tip(self):
        L = self.L
        b = _rad(L["sp_angle_deg"])
        base = np.array([0.0, self.v0 + L["canal_ap"] + 0.5 * L["t_lam"], -0.12 * self.h])
        return self.F.p(base + np.array([0.0, math.cos(b), -math.sin(b)]) * (L["sp_len"] - 2.0))

    def tp_tip_local(self, side):
        P = self.ped[side]
        sg = P["sg"]
        a = _rad(self.L["tp_angle_deg"])
        dirv = np.array([sg * math.cos(a), math.sin(a), 0.0])
        return self.junction_point(side) + dirv * (P["W"] / 2.0 + self.L["tp_len"] + 2.0)


# ----------------------------------------------------------------------------
# breach geometry (analytic truth)
# ----------------------------------------------------------------------------
def _ellipse_dist(y0, y1, e0, e1):
    """distance of exterior points (y0,y1) to ellipse x0^2/e0^2+x1^2/e1^2=1,
    returns (dist, n0, n1) with (n0,n1) unit outward direction from the closest point."""
    s0, s1 = np.sign(y0), np.sign(y1)
    a0, a1 = np.abs(y0), np.abs(y1)
    lo = np.zeros_like(a0)
    hi = np.sqrt(e0 * e0 * a0 * a0 + e1 * e1 * a1 * a1)
    for _ in range(60):
        t = 0.5 * (lo + hi)
        F = (e0 * a0 / (t + e0 * e0)) ** 2 + (e1 * a1 / (t + e1 * e1)) ** 2 - 1.0
        pos = F > 0
        lo = np.where(pos, t, lo)
        hi = np.where(pos, hi, t)
    t = 0.5 * (lo + hi)
    x0 = e0 * e0 * a0 / (t + e0 * e0)
    x1 = e1 * e1 * a1 / (t + e1 * e1)
    d0, d1 = a0 - x0, a1 - x1
    dist = np.sqrt(d0 * d0 + d1 * d1)
    # outward normal direction at closest point (gradient of the implicit function)
    g0, g1 = x0 / (e0 * e0), x1 / (e1 * e1)
    gn = np.sqrt(g0 * g0 + g1 * g1) + 1e-30
    return dist, s0 * g0 / gn, s1 * g1 / gn


def _breach_depths(lev, side, entry, d, L, R, tip_len, dt=0.05, nphi=240):
    """Max perpendicular depth (mm) of the screw's outer surface beyond the pedicle
    outer cortex, within the pedicle free segment v0 <= v <= v_cut (level frame),
    per direction sector (medial/lateral/superior/inferior).  Everything in the
    level-local frame."""
    P = lev.ped[side]
    d = _unit(d)
    e1 = _unit(np.cross(d, [0.0, 0.0, 1.0]) if abs(d[2]) < 0.95 else np.cross(d, [1.0, 0, 0]))
    e2 = np.cross(d, e1)
    # axis v(t) = entry_v + t d_v : find t-range where |v - band| <= R
    lo_v, hi_v = lev.v0 - R - 0.5, lev.v_cut + R + 0.5
    if abs(d[1]) > 1e-9:
        t_a, t_b = sorted([(lo_v - entry[1]) / d[1], (hi_v - entry[1]) / d[1]])
    else:
        t_a, t_b = 0.0, L
    t_a, t_b = max(0.0, t_a), min(L, t_b)
    out = {"medial": 0.0, "lateral": 0.0, "superior": 0.0, "inferior": 0.0}
    if t_b <= t_a:
        return out
    t = np.arange(t_a, t_b + 1e-9, dt)
    phi = np.arange(nphi) * (2 * math.pi / nphi)
    r = _screw_radius_profile(t, L, R, tip_len)
    cph, sph = np.cos(phi), np.sin(phi)
    pts = (entry[None, None, :] + t[:, None, None] * d[None, None, :]
           + r[:, None, None] * (cph[None, :, None] * e1[None, None, :]
                                 + sph[None, :, None] * e2[None, None, :]))
    pts = pts.reshape(-1, 3)
    v = pts[:, 1]
    sel = (v >= lev.v0) & (v <= lev.v_cut)
    pts = pts[sel]
    if pts.size == 0:
        return out
    q = pts - P["P0"][None, :]
    xm = q @ P["m"]
    yc = q @ P["c"]
    a, b = P["W"] / 2.0, P["H"] / 2.0
    outside = (xm / a) ** 2 + (yc / b) ** 2 > 1.0 + 1e-12
    if not outside.any():
        return out
    dist, nm_, nc_ = _ellipse_dist(xm[outside], yc[outside], a, b)
    cls = {"medial": nm_ >= np.abs(nc_), "lateral": -nm_ >= np.abs(nc_),
           "superior": (nc_ > np.abs(nm_)), "inferior": (-nc_ > np.abs(nm_))}
    for k, msk in cls.items():
        if msk.any():
            out[k] = float(dist[msk].max())
    return out


def _maxdepth(bd):
    k = max(bd, key=lambda x: bd[x])
    return bd[k], (k if bd[k] > 0 else "none")


# ----------------------------------------------------------------------------
# scene construction
# ----------------------------------------------------------------------------
def _march_exit(shapes, start, direction, smax, step=0.05):
    """first distance s>=0 along start+s*dir where point is outside all shapes"""
    s = np.arange(0.0, smax, step)
    pts = start[None, :] + s[:, None] * direction[None, :]
    inside = np.zeros(s.size, bool)
    for sh in shapes:
        inside |= sh.f(pts[:, 0], pts[:, 1], pts[:, 2]) < 0
    idx = np.nonzero(~inside)[0]
    return float(s[idx[0]]) if idx.size else float(smax)


def _build_scene(P):
    hu = P["hu"]
    pose = P["pose"]
    Rpose = _R_z(_rad(pose["axial_rotation_deg"])) @ _R_y(_rad(pose["coronal_tilt_deg"]))
    Rax = _R_z(_rad(pose["axial_rotation_deg"]))
    T = np.array(pose["spine_origin_lps"], float)
    names = P["model_levels"]
    LV = P["levels"]
    cen, Rl = {}, {}
    order = names[::-1]
    for k, nm in enumerate(order):
        L = LV[nm]
        R = _R_x(_rad(L["alpha_deg"]))
        if k == 0:
            c = np.zeros(3)
        else:
            pn = order[k - 1]
            Lp = LV[pn]
            Rd = _R_x(_rad(0.5 * (Lp["alpha_deg"] + L["alpha_deg"])))
            c = (cen[pn] + Rl[pn] @ np.array([0, 0, Lp["h"] / 2.0])
                 + Rd @ np.array([0, 0, L["disc_below"]]) + R @ np.array([0, 0, L["h"] / 2.0]))
        cen[nm], Rl[nm] = c, R
    mid = np.mean([cen[n] for n in P["instrumented_levels"]], axis=0)
    levs = {}
    for nm in names:
        F = Frame(T + Rpose @ (cen[nm] - mid), Rpose @ Rl[nm])
        levs[nm] = _Level(nm, LV[nm], F, hu)
    lam = set(P["laminectomy_levels"])

    z_inv = []    # (shape, value)   z-invariant, painted in 2D
    soft = []     # (shape, value)
    canal = []
    discs = []
    shells, cores = [], []
    cement = []
    metal = []    # (shape, value, tag)
    info = {"levels": levs, "screws": [], "objects": [], "rods": []}

    # ---------- body outline ----------
    Bd = P["body"]
    midn = P["instrumented_levels"][len(P["instrumented_levels"]) // 2]
    Lm = levs[midn]
    v_back = (Lm.v0 + Lm.L["canal_ap"] + Lm.L["t_lam"] + 0.7 * Lm.L["sp_len"]
              + Bd["subcut_mm"] + 6.0)
    A, B = Bd["A"], Bd["B"]
    bc = T + Rax @ np.array([0.0, v_back - B, 0.0])
    big = 1.0e5
    outer = SuperCylinder(Rax, bc, A, B, big, p=2.3)
    sub = Bd["subcut_mm"]
    wall = SuperCylinder(Rax, bc, A - sub, B - sub, big, p=2.3)
    visc = SuperCylinder(Rax, bc, A - sub - Bd["wall_mm"], B - sub - Bd["wall_mm"], big, p=2.3)
    y_back = bc[1] + B * 1.02
    table = Intersect([HalfSpace([0, -1, 0], -(y_back + 4.0)), HalfSpace([0, 1, 0], y_back + 12.0),
                       HalfSpace([1, 0, 0], T[0] + 230.0), HalfSpace([-1, 0, 0], -(T[0] - 230.0))])
    z_inv += [(outer, hu["fat"]), (wall, hu["muscle"]), (visc, hu["viscera"]), (table, -250.0)]
    info["body_center"] = bc

    # bowel gas (anterior, away from the spine)
    grng = np.random.default_rng(Bd["gas_seed"])
    for _ in range(Bd["n_gas"]):
        vv = -Lm.bd / 2.0 - _u(grng, 60, max(61.0, 2 * B - 90 - v_back + B))
        uu = _u(grng, -0.5, 0.5) * (A - 60)
        ww = _u(grng, -40, 40)
        r = _u(grng, 5, 16)
        gc = T + Rax @ np.array([uu, vv, ww])
        soft.append((SuperEllipsoid(Rax, gc, r, r * _u(grng, 0.6, 1.0), r * _u(grng, 0.7, 1.3)),
                     hu["gas"]))

    # ---------- per-level soft tissues, canal, discs, bones ----------
    for k, nm in enumerate(names):
        lv = levs[nm]
        L, F = lv.L, lv.F
        hz = lv.h / 2.0 + 0.5 * max(L["disc_above"], L["disc_below"]) + 1.0
        cap = L["canal_ap"]
        # retroperitoneal / paravertebral fat envelope
        soft.append((SuperCylinder(F.R, F.p([0, -2.0, 0]), lv.bw / 2.0 + 32.0,
                                   lv.bd / 2.0 + 22.0, hz, p=2.2), hu["fat"]))
        # psoas
        rp = L["psoas_r"]
        if rp > 1.0:
            for sg in (1.0, -1.0):
                soft.append((SuperCylinder(F.R, F.p([sg * (lv.bw / 2.0 + 0.5 * rp), -0.1 * lv.bd, 0]),
                                           rp, 0.85 * rp, hz), hu["muscle"]))
        # paraspinal muscles
        pa, pb = L["paraspinal_a"], L["paraspinal_b"]
        if lv.sac:
            pa, pb = 0.7 * pa, 0.5 * pb
        for sg in (1.0, -1.0):
            soft.append((SuperCylinder(F.R, F.p([sg * (lv.hw_max + L["t_lam"] + 0.8 * pa),
                                                 lv.v0 + cap + L["t_lam"] + 0.55 * pb, 0]),
                                       pa, pb, hz, p=2.3), hu["muscle"]))
            if not lv.thor and not lv.sac and L["tp_len"] > 1:
                soft.append((SuperCylinder(F.R, F.p([sg * (lv.bw / 2.0 + L["tp_len"] + 12.0),
                                                     lv.v0 + 4.0, 0]), 11.0, 8.0, hz),
                             hu["muscle"]))
        # great vessels
        if ALL_LEVELS.index(nm) < ALL_LEVELS.index("L4"):
            soft.append((SuperCylinder(F.R, F.p([11.0, -lv.bd / 2.0 - 15.0, 0]), 10.0, 10.0, hz),
                         hu["blood"]))
            soft.append((SuperCylinder(F.R, F.p([-18.0, -lv.bd / 2.0 - 12.0, 0]), 11.0, 7.5, hz),
                         hu["blood"]))
        elif not lv.sac:
            for sg in (1.0, -1.0):
                soft.append((SuperCylinder(F.R, F.p([sg * 20.0, -lv.bd / 2.0 - 10.0, 0]), 6.5, 6.5,
                                           hz), hu["blood"]))
        # ---- canal ----
        hb = lv.hz_c
        fat_box = SuperCylinder(F.R, F.p([0, 0.5 * (lv.v0 + lv.v_cut) + 0.5, 0]),
                                lv.hw_max + max(lv.ped["L"]["W"], lv.ped["R"]["W"]) + 7.0,
                                0.5 * (lv.v_cut - lv.v0) + 2.5, lv.h / 2.0 + 0.5 * max(
                                    L["disc_above"], L["disc_below"]) + 1.0, p=6.0)
        canal.append((fat_box, hu["fat"]))
        canal.append((lv.C, hu["fat"]))
        if nm != "S2":
            sa = max(3.0, min(0.5 * L["canal_w"] - 2.5, 9.0))
            if L["canal_shape"] == "trefoil":
                sa = max(3.0, min(0.3 * L["canal_w"], 8.0))
            sb = max(3.0, cap / 2.0 - 1.5)
            sac_c = [0, lv.v0 + 0.45 * cap, 0]
            canal.append((SuperCylinder(F.R, F.p(sac_c), sa, sb, hb), hu["csf"]))
            if lv.thor or nm == "L1":
                cord = SuperCylinder(F.R, F.p(sac_c), min(4.5, sa - 0.8), min(3.6, sb - 0.8),
                                     hb if nm != "L1" else lv.h / 2.0)
                if nm == "L1":
                    cord = SuperCylinder(F.R, F.p([0, lv.v0 + 0.45 * cap, lv.h / 4.0]),
                                         min(4.0, sa - 0.8), min(3.2, sb - 0.8), lv.h / 4.0 + 6.0)
                canal.append((cord, hu["cord"]))
            # exiting nerve roots beneath the pedicles
            for side in ("L", "R"):
                Pp = lv.ped[side]
                sg = Pp["sg"]
                a0 = [sg * (sa - 1.0), lv.v0 + 0.4 * cap, Pp["w_p"] - Pp["H"] / 2.0 + 1.0]
                a1 = [sg * (lv.hw_mid + Pp["W"] + 6.0), lv.v_mid + 1.0,
                      Pp["w_p"] - Pp["H"] / 2.0 - 7.0]
                canal.append((Capsule(F.p(a0), F.p(a1), 2.2), hu["cord"]))
        # ---- disc below this level ----
        if k + 1 < len(names):
            lo_n = names[k + 1]
            lvb = levs[lo_n]
            Fa, Fb = lv.F, lvb.F
            fused = (nm == "S1")
            top_pl = Fa.p([0, 0, -lv.h / 2.0])
            bot_pl = Fb.p([0, 0, lvb.h / 2.0])
            Rd = Frame(0.5 * (top_pl + bot_pl), Rpose @ _R_x(_rad(0.5 * (L["alpha_deg"]
                                                                         + lvb.L["alpha_deg"]))))
            dsc = Intersect([
                SuperCylinder(Rd.R, Rd.O, 0.5 * (lv.bw + lvb.bw) / 2.0 + 0.8,
                              0.5 * (lv.bd + lvb.bd) / 2.0 + 3.5, L["disc_below"] + 25.0, p=2.6),
                HalfSpace.through(Fa.p([0, 0, -lv.h / 2.0 + 0.5]), Fa.vec([0, 0, 1])),
                HalfSpace.through(Fb.p([0, 0, lvb.h / 2.0 - 0.5]), Fb.vec([0, 0, -1])),
                HalfSpace.through(Rd.O + Rd.R @ np.array([0, 0.5 * (lv.bd + lvb.bd) / 2.0 + 1.0, 0]),
                                  Rd.R @ np.array([0, 1.0, 0]))])
            discs.append((dsc, hu["cancellous"] if fused else hu["disc"]))
            if nm == "S1" or lo_n == "S2" and nm == "S1":
                pass
            if P.get("disc_vacuum_below") == nm:
                discs.append((SuperEllipsoid(Rd.R, Rd.O + Rd.R @ np.array([0, -3.0, 0]), 9.0, 6.0,
                                             max(0.8, 0.3 * L["disc_below"])), hu["gas"]))
        # ---- bones ----
        body = lv.body_shape()
        shells.append((body, L["cort_body"]))
        lam_here = nm in lam
        for shp, t in lv.posterior_parts(include_arch=not lam_here):
            shells.append((shp, t))
        if lam_here:
            scar = Union([Subtract(lv._arch_outer().offset(-1.0), lv.C),
                          lv.spinous_shape().a if isinstance(lv.spinous_shape(), Subtract)
                          else lv.spinous_shape()])
            canal.append((Subtract(scar, lv.C), hu["scar"]))
        if nm not in ("S1", "S2"):
            lower = levs[names[k + 1]] if k + 1 < len(names) else None
            for side in ("L", "R"):
                shells.append((lv.iap_shape(side, lower), L["cort_post"]))
        if lv.sac:
            for sg in (1.0, -1.0):
                ala = SuperEllipsoid(F.R, F.p([sg * (lv.bw / 2.0 + (14.0 if nm == "S1" else 8.0)),
                                               0.1 * lv.bd, -1.0]),
                                     22.0 if nm == "S1" else 15.0, 0.32 * lv.bd + 3.0,
                                     lv.h / 2.0 + 1.0, p=2.5, q=2.5)
                shells.append((ala, L["cort_body"]))
                il = SuperEllipsoid(F.rot(_R_z(sg * _rad(-20.0))),
                                    F.p([sg * (lv.bw / 2.0 + 46.0), lv.v0 + 2.0, 0.0]),
                                    7.0, 26.0, lv.h / 2.0 + 3.0, p=2.5, q=2.5)
                shells.append((il, 1.5))
        if lv.thor:
            for side in ("L", "R"):
                sg = lv.ped[side]["sg"]
                head = SuperEllipsoid(F.R, F.p([sg * (lv.bw / 2.0 + 1.0), lv.v0 - 6.0,
                                                lv.h / 2.0 + L["disc_above"] / 2.0]), 4.5, 4.5, 4.5)
                shells.append((head, 1.0))
                t0 = lv.tp_tip_local(side)
                wp = lv.ped[side]["w_p"]
                pts = [t0 + np.array([sg * 2.0, 1.0, -1.0]),
                       np.array([sg * (lv.bw / 2.0 + 42.0), lv.v0 + 12.0, wp - 8.0]),
                       np.array([sg * (lv.bw / 2.0 + 75.0), lv.v0 - 12.0, wp - 20.0]),
                       np.array([sg * (lv.bw / 2.0 + 92.0), lv.v0 - 50.0, wp - 32.0])]
                nseg = {"T9": 3, "T10": 3, "T11": 2, "T12": 1}[nm]
                for a_, b_ in zip(pts[:nseg], pts[1:nseg + 1]):
                    shells.append((Capsule(F.p(a_), F.p(b_), 5.0), 1.0))

    # ---------- screws ----------
    scr_hu = hu["screw"]
    heads = {"L": [], "R": []}
    for si, S in enumerate(P["screws"]):
        lv = levs[S["level"]]
        side = S["side"]
        Pp = lv.ped[side]
        F = lv.F
        Rr = S["diameter_mm"] / 2.0
        tip_len = max(3.0, 1.6 * Rr)
        d0 = Pp["d"].copy()
        # nominal entry: where the pedicle axis leaves the posterior bone
        post = [sh for sh, _ in lv.posterior_parts(include_arch=not (S["level"] in lam))]
        post_loc = [_to_local_shape(sh, F) for sh in post]
        s_exit = _march_exit(post_loc, Pp["P0"], -d0, 60.0)
        entry0 = Pp["P0"] - d0 * s_exit
        # length clamp inside the vertebral body (keep 3 mm from anterior cortex)
        body_loc = _to_local_shape(lv.body_shape().offset(L_cort(lv)), F)
        sb_in = _march_enter(body_loc, entry0, d0, 120.0)
        sb_out = sb_in + _march_exit([body_loc], entry0 + d0 * sb_in, d0, 120.0)
        Lmax = sb_out - 3.0
        Lsc = float(min(S["length_mm"], max(20.0, Lmax)))
        # breach / jitter
        br = S["breach"]
        m, cc = Pp["m"], Pp["c"]
        entry, dvec, mode_used = entry0.copy(), d0.copy(), "none"
        if br["direction"] == "none":
            clear_m = max(0.0, Pp["W"] / 2.0 - Rr)
            clear_c = max(0.0, Pp["H"] / 2.0 - Rr)
            e_try = entry0 + m * S["jitter"][0] * clear_m + cc * S["jitter"][1] * clear_c
            bdp = _breach_depths(lv, side, e_try, d0, Lsc, Rr, tip_len)
            if _maxdepth(bdp)[0] == 0.0:
                entry = e_try
        else:
            e_dir = {"medial": m, "lateral": -m, "inferior": -cc}[br["direction"]]
            target = br["depth_mm"]
            done = False
            if br["mode"] == "pivot":
                def fdep(psi):
                    dd = _unit(math.cos(psi) * d0 + math.sin(psi) * e_dir)
                    return _maxdepth(_breach_depths(lv, side, entry0, dd, Lsc, Rr, tip_len,
                                                    dt=0.1, nphi=180))[0]
                hi = _rad(35.0)
                if fdep(hi) > target:
                    lo = 0.0
                    for _ in range(30):
                        mid_ = 0.5 * (lo + hi)
                        if fdep(mid_) > target:
                            hi = mid_
                        else:
                            lo = mid_
                    psi = 0.5 * (lo + hi)
                    dvec = _unit(math.cos(psi) * d0 + math.sin(psi) * e_dir)
                    mode_used = "pivot"
                    done = True
            if not done:
                def fdep(dl):
                    return _maxdepth(_breach_depths(lv, side, entry0 + dl * e_dir, d0, Lsc, Rr,
                                                    tip_len, dt=0.1, nphi=180))[0]
                lo, hi = 0.0, 4.0
                while fdep(hi) < target and hi < 80:
                    lo, hi = hi, hi * 2
                for _ in range(32):
                    mid_ = 0.5 * (lo + hi)
                    if fdep(mid_) > target:
                        hi = mid_
                    else:
                        lo = mid_
                entry = entry0 + 0.5 * (lo + hi) * e_dir
                mode_used = "shift"
        bdp = _breach_depths(lv, side, entry, dvec, Lsc, Rr, tip_len, dt=0.02, nphi=720)
        depth, dirn = _maxdepth(bdp)
        depth = _r(depth, 3)
        if depth <= 0:
            dirn = "none"
        # world geometry
        ew = F.p(entry)
        dw = F.vec(dvec)
        tipw = ew + dw * Lsc
        core = Rr * S["core_ratio"]
        metal.append((ScrewShape(ew, dw, Lsc, Rr, core, S["pitch"], tip_len), scr_hu, "screw"))
        hl, hr = S["head_len"], S["head_r"]
        hc = ew - dw * (hl / 2.0 - 1.0)
        metal.append((SuperCylinder(_frame_z(dw), hc, hr, hr, hl / 2.0), scr_hu, "head"))
        rod_pt = ew - dw * (0.6 * hl)
        heads[side].append((ALL_LEVELS.index(S["level"]), rod_pt))
        # cement
        if S["cement"]:
            blobs = []
            crng = np.random.default_rng([P["noise_seed"], si, 11])
            for _ in range(3):
                tt = _u(crng, 0.6, 0.95) * Lsc
                cpt = ew + dw * tt + _unit(crng.normal(size=3)) * _u(crng, 0, 3)
                rr = _u(crng, 4.0, 7.5)
                blobs.append(SuperEllipsoid(np.eye(3), cpt, rr, rr * _u(crng, 0.7, 1.0),
                                            rr * _u(crng, 0.7, 1.0)))
            cement.append((Intersect([Union(blobs), lv.body_shape().offset(L_cort(lv))]),
                           hu["cement"]))
        # tip location
        tip_loc = _classify_point(tipw, lv, levs, names)
        info["screws"].append(dict(
            id="%s_%s" % (S["level"], side), level=S["level"], side=side, entry=ew, tip=tipw,
            head_end=ew - dw * hl, head_center=hc, axis=dw, diameter=S["diameter_mm"],
            length=Lsc, length_requested=S["length_mm"], material=S["material"], hu=scr_hu,
            breach_direction=dirn, breach_depth=depth, breach_depths=bdp,
            breach_requested=br, breach_mode=mode_used if br["direction"] != "none" else "none",
            at_laminectomy=S["level"] in lam, cement=S["cement"], tip_location=tip_loc,
            pedicle=dict(width=Pp["W"], height=Pp["H"], center=F.p(Pp["P0"]), axis=F.vec(Pp["d"]),
                         medial=F.vec(Pp["m"]), cranial=F.vec(Pp["c"]),
                         convergence_deg=math.degrees(Pp["g"]), tilt_deg=math.degrees(Pp["tau"]),
                         v0=lv.v0, v_cut=lv.v_cut)))
    # ---------- rods ----------
    if P["rods"]:
        rr = P["rod_diameter_mm"] / 2.0
        for side in ("L", "R"):
            pts = [p for _, p in sorted(heads[side], key=lambda x: x[0])]
            if len(pts) < 2:
                continue
            ext0 = pts[0] + _unit(pts[0] - pts[1]) * 7.0
            ext1 = pts[-1] + _unit(pts[-1] - pts[-2]) * 7.0
            chain = [ext0] + pts + [ext1]
            caps = [Capsule(a, b, rr) for a, b in zip(chain[:-1], chain[1:])]
            metal.append((Union(caps), hu["rod"], "rod"))
            info["rods"].append(dict(side=side, points=chain, diameter=2 * rr,
                                     material=P["rod_material"], hu=hu["rod"]))
    # ---------- hip prosthesis ----------
    hp = P.get("hip_prosthesis")
    if hp:
        bot = levs[P["instrumented_levels"][-1]]
        sg = 1.0 if hp["side"] == "L" else -1.0
        base = bot.F.p([0, 0, -bot.h / 2.0])
        Cc = base + Rpose @ np.array([sg * hp["lateral_mm"], -bot.bd / 2.0 - hp["anterior_mm"],
                                      -hp["below_mm"]])
        Ro, tc, rh = hp["cup_r"], hp["cup_t"], hp["head_r"]
        n_open = _unit(Rpose @ np.array([sg * 0.6, -0.35, -0.7]))
        dome = HalfSpace.through(Cc, n_open)
        eye = np.eye(3)
        acet = Intersect([SuperEllipsoid(eye, Cc, Ro + 9, Ro + 9, Ro + 9), dome])
        shells.append((acet, 2.0))
        neck_dir = _unit(Rpose @ np.array([sg * 0.55, -0.15, -0.82]))
        neck_end = Cc + neck_dir * 38.0
        stem_end = neck_end + _unit(Rpose @ np.array([sg * 0.05, 0.0, -1.0])) * 110.0
        shells.append((Capsule(neck_end, stem_end, 15.0), 3.0))
        shells.append((SuperEllipsoid(eye, Cc, rh + 1.0, rh + 1.0, rh + 1.0), 1.0))
        cup_hu = _mat_hu(P, "Ti", 1)
        head_hu = _mat_hu(P, hp["head_material"], 2)
        liner = Intersect([Subtract(SuperEllipsoid(eye, Cc, Ro - tc, Ro - tc, Ro - tc),
                                    SuperEllipsoid(eye, Cc, rh, rh, rh)), dome])
        cores_extra = [(liner, -60.0)]
        cup = Intersect([Subtract(SuperEllipsoid(eye, Cc, Ro, Ro, Ro),
                                  SuperEllipsoid(eye, Cc, Ro - tc, Ro - tc, Ro - tc)), dome])
        metal.append((cup, cup_hu, "hip_cup"))
        metal.append((SuperEllipsoid(eye, Cc, rh, rh, rh), head_hu, "hip_head"))
        metal.append((Capsule(Cc + neck_dir * (0.8 * rh), neck_end, 6.0), cup_hu, "hip_stem"))
        metal.append((Capsule(neck_end, stem_end, 8.0), cup_hu, "hip_stem"))
        info["objects"].append(dict(type="hip_prosthesis", side=hp["side"], cup_center=Cc,
                                    cup_radius=Ro, head_radius=rh, neck_end=neck_end,
                                    stem_end=stem_end, cup_material="Ti", cup_hu=cup_hu,
                                    head_material=hp["head_material"], head_hu=head_hu))
        info["hip_liner"] = cores_extra
    # ---------- spinal cord stimulator lead ----------
    sc = P.get("scs_lead")
    if sc:
        tl = levs[sc["tip_level"]]
        tip_w = tl.F.p([sc["offset_mm"], tl.v0 + tl.L["canal_ap"] - 2.4, sc["tip_frac"] * tl.h])
        path = []
        for nm in names:
            lv = levs[nm]
            for wf in (0.5, 0.0, -0.5):
                pt = lv.F.p([sc["offset_mm"], lv.v0 + lv.L["canal_ap"] - 2.4, wf * lv.h])
                path.append(pt)
            if nm == sc["tip_level"]:
                break
        path = [p for p in path if p[2] > tip_w[2] + 0.5]
        top_ext = path[0] + _unit(path[0] - path[1]) * 200.0 if len(path) > 1 else \
            tip_w + np.array([0, 0, 200.0])
        path = [top_ext] + path + [tip_w]
        lead_hu = _r(2200.0 + 600.0 * (P["noise_seed"] % 7) / 7.0)
        c_hu = _mat_hu(P, "PtIr", 3)
        nl = sc["n_leads"]
        for li in range(nl):
            off = (li - (nl - 1) / 2.0) * 2.6
            shift = levs[sc["tip_level"]].F.vec([off, 0, 0])
            pp = [p + shift for p in path]
            metal.append((Union([Capsule(a, b, 0.65) for a, b in zip(pp[:-1], pp[1:])]),
                          lead_hu, "scs_lead"))
            # contacts along the distal end
            tipp = pp[-1]
            back = _unit(pp[-2] - pp[-1])
            cons = []
            for ci in range(sc["n_contacts"]):
                a = tipp + back * (1.0 + ci * 4.0)
                cons.append(Capsule(a, a + back * 3.0, 0.7))
            metal.append((Union(cons), c_hu, "scs_contact"))
            info["objects"].append(dict(type="scs_lead", lead_index=li, tip=tipp,
                                        path=pp[1:], diameter=1.3, n_contacts=sc["n_contacts"],
                                        lead_hu=lead_hu, contact_hu=c_hu,
                                        tip_level=sc["tip_level"]))
    info.update(z_inv=z_inv, soft=soft, canal=canal, discs=discs, shells=shells,
                cement=cement, metal=metal, Rpose=Rpose, T=T)
    return info


def L_cort(lv):
    return lv.L["cort_body"]


def _mat_hu(P, mat, k):
    rng = np.random.default_rng([P["noise_seed"], 97, k])
    return _r(_u(rng, *MATERIAL_HU[mat]), 1)


class _LocalWrap(Shape):
    """evaluate a world shape at level-local coordinates"""

    def __init__(self, shape, F):
        self.s, self.F = shape, F

    def f(self, X, Y, Z):
        R, O = self.F.R, self.F.O
        Xw = O[0] + R[0, 0] * X + R[0, 1] * Y + R[0, 2] * Z
        Yw = O[1] + R[1, 0] * X + R[1, 1] * Y + R[1, 2] * Z
        Zw = O[2] + R[2, 0] * X + R[2, 1] * Y + R[2, 2] * Z
        return self.s.f(Xw, Yw, Zw)


def _to_local_shape(shape, F):
    return _LocalWrap(shape, F)


def _march_enter(shape, start, direction, smax, step=0.05):
    s = np.arange(0.0, smax, step)
    pts = start[None, :] + s[:, None] * direction[None, :]
    inside = shape.f(pts[:, 0], pts[:, 1], pts[:, 2]) < 0
    idx = np.nonzero(inside)[0]
    return float(s[idx[0]]) if idx.size else float(smax)


def _classify_point(pw, lv, levs, names):
    x, y, z = (np.array([pw[0]]), np.array([pw[1]]), np.array([pw[2]]))
    for nm in names:
        L = levs[nm]
        if L.body_shape().f(x, y, z)[0] < 0:
            return "body" if nm == lv.name else "body_other_level"
    for nm in names:
        if levs[nm].C.f(x, y, z)[0] < 0:
            return "canal"
    # disc: between bodies, inside footprint
    for k, nm in enumerate(names[:-1]):
        a, b = levs[nm], levs[names[k + 1]]
        la = a.F.inv(pw)
        lb = b.F.inv(pw)
        if la[2] < -a.h / 2.0 and lb[2] > b.h / 2.0 and abs(la[0]) < a.bw / 2.0 and \
                abs(la[1]) < a.bd / 2.0 + 2.0:
            return "disc"
    return "outside_body"


# ----------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------
def _plan_grid(P, S):
    A = P["acq"]
    pose = P["pose"]
    levs = S["levels"]
    instr = P["instrumented_levels"]
    zs = []
    for nm in (instr[0], instr[-1]):
        lv = levs[nm]
        lo, hi = lv.body_shape().aabb()
        zs += [lo[2], hi[2]]
    for s in S["screws"]:
        zs += [s["entry"][2], s["tip"][2], s["head_end"][2]]
    z_top = max(zs) + A["margin_top_mm"]
    z_bot = min(zs) - A["margin_bottom_mm"]
    for o in S["objects"]:
        if o["type"] == "hip_prosthesis":
            z_bot = min(z_bot, o["cup_center"][2] - 4.0)
    sp = A["spacing_mm"]
    nz = int(math.floor((z_top - z_bot) / sp)) + 1
    # FOV
    px, nmat = A["pixel_mm"], A["matrix"]
    half = 0.5 * (nmat - 1) * px
    midlv = levs[instr[len(instr) // 2]]
    cc = midlv.F.p([0, midlv.v0 + midlv.L["canal_ap"] / 2.0, 0])
    want = cc[:2] + np.array(pose["fov_offset_mm"])
    key = []
    for nm in instr:
        lv = levs[nm]
        lo, hi = lv.body_shape().aabb()
        key += [lo, hi]
        key.append(lv.spinous_tip())
    for s in S["screws"]:
        key += [s["entry"], s["tip"], s["head_end"]]
    for o in S["objects"]:
        if o["type"] == "hip_prosthesis":
            key += [o["cup_center"] - o["cup_radius"], o["cup_center"] + o["cup_radius"]]
    key = np.array(key)
    m = 6.0
    center = np.zeros(2)
    for ax in range(2):
        lo_, hi_ = key[:, ax].min() - m, key[:, ax].max() + m
        a_, b_ = hi_ - half, lo_ + half
        if a_ <= b_:
            center[ax] = min(max(want[ax], a_), b_)
        else:
            center[ax] = 0.5 * (lo_ + hi_)
    center = np.round(center, 3)
    x0 = center[0] - half
    y0 = center[1] - half
    g = _Grid(nmat, nmat, px, x0, y0, round(z_top, 3), nz, sp, A["slice_thickness_mm"])
    return g, center


def _streaks(V, Mocc, E, box, g, P, rng_angles):
    art = P["artefacts"]
    k0, k1, i0, i1, j0, j1 = box
    Sst = art["streak_strength"]
    px = g.px
    f = 2 if g.nx > 300 else 1
    nyc, nxc = (g.ny + f - 1) // f, (g.nx + f - 1) // f
    yc = ((np.arange(nyc) * f + (f - 1) / 2.0) * px).astype(np.float32)
    xc = ((np.arange(nxc) * f + (f - 1) / 2.0) * px).astype(np.float32)
    X = xc[None, :]
    Y = yc[:, None]
    st8 = np.ones((3, 3), bool)
    for kk in range(k1 - k0):
        mk = Mocc[kk] > 0.5
        if not mk.any():
            continue
        lab, n = ndimage.label(mk, structure=st8)
        idx = np.arange(1, n + 1)
        area = np.asarray(ndimage.sum(mk, lab, idx)) * px * px
        q = np.asarray(ndimage.sum(np.maximum(E[kk], 0) * mk, lab, idx)) * px * px / 1000.0
        cms = ndimage.center_of_mass(mk, lab, idx)
        comps = []
        for c_i in range(n):
            if area[c_i] < 0.8:
                continue
            cy = (i0 + cms[c_i][0]) * px
            cx = (j0 + cms[c_i][1]) * px
            ys_, xs_ = np.nonzero(lab == c_i + 1)
            maj = None
            if ys_.size > 4:
                cov = np.cov(np.vstack([xs_, ys_]).astype(float))
                w_, v_ = np.linalg.eigh(cov)
                if w_[1] > 4.0 * max(w_[0], 0.25):
                    maj = v_[:, 1]
            comps.append((q[c_i], cx, cy, area[c_i], maj))
        if not comps:
            continue
        comps.sort(key=lambda c: -c[0])
        comps = comps[:5]
        field = np.zeros((nyc, nxc), np.float32)
        if art["beam_hardening"] and len(comps) > 1:
            for a in range(len(comps)):
                for b in range(a + 1, len(comps)):
                    qa, ax_, ay_, ara, _ = comps[a]
                    qb, bx_, by_, arb, _ = comps[b]
                    Lab = math.hypot(bx_ - ax_, by_ - ay_)
                    if Lab < 4.0:
                        continue
                    Ap = min(1000.0, Sst * 220.0 * math.sqrt(qa * qb) / 400.0)
                    if Ap < 3:
                        continue
                    ux, uy = (bx_ - ax_) / Lab, (by_ - ay_) / Lab
                    t = ((X - ax_) * ux + (Y - ay_) * uy) / Lab
                    dp = np.abs(-(X - ax_) * uy + (Y - ay_) * ux)
                    along = np.where(t < 0, -t * Lab, np.where(t > 1, (t - 1) * Lab, 0.0))
                    sg_ = 1.0 + 0.5 * math.sqrt(min(ara, arb) / math.pi)
                    env = np.exp(-along / 30.0)
                    field -= (Ap * np.exp(-(dp / sg_) ** 2) * env).astype(np.float32)
                    field += (0.3 * Ap * np.exp(-((dp - 2.2 * sg_) / sg_) ** 2) * env).astype(
                        np.float32)
        if art["streaks"]:
            for r_, (qq, cx, cy, ar, maj) in enumerate(comps):
                Ar = min(1500.0, Sst * 70.0 * (max(qq, 0.0) / 400.0) ** 0.6)
                if Ar < 2:
                    continue
                r0 = math.sqrt(ar / math.pi)
                dx, dy = X - cx, Y - cy
                rr = np.sqrt(dx * dx + dy * dy)
                decay = 12.0 / (np.maximum(rr - r0, 0) + 12.0)
                wl = 0.7 + 0.3 * f * px
                angs = rng_angles[r_ % len(rng_angles)] + 0.004 * (k0 + kk)
                for ai, ang in enumerate(angs):
                    sgn = 1.0 if ai % 2 == 0 else -1.0
                    dd = np.abs(dx * math.sin(ang) - dy * math.cos(ang))
                    field += (sgn * Ar * np.maximum(0.0, 1.0 - dd / wl) * decay).astype(np.float32)
                if maj is not None:
                    dd = np.abs(dx * maj[1] - dy * maj[0])
                    field -= (1.2 * Ar * np.maximum(0.0, 1.0 - dd / (1.5 + f * px)) * decay).astype(
                        np.float32)
        if f > 1:
            field = ndimage.zoom(field, f, order=1)[: g.ny, : g.nx]
            if field.shape != (g.ny, g.nx):
                fz = np.zeros((g.ny, g.nx), np.float32)
                fz[: field.shape[0], : field.shape[1]] = field
                field = fz
        mfull = np.zeros((g.ny, g.nx), np.float32)
        mfull[i0:i1, j0:j1] = Mocc[kk]
        V[k0 + kk] += field * (1.0 - mfull)


def render_volume(params, clean=False, return_scene=False):
    """Returns (V [nz,ny,nx] float32 HU, grid, scene).  clean=True: no PSF, noise,
    blooming or streaks (pure partial-volume geometry)."""
    P = params
    S = _build_scene(P)
    g, center = _plan_grid(P, S)
    pt = _Painter(g)
    hu = P["hu"]
    img = np.full((g.ny, g.nx), np.float32(hu["air"]), np.float32)
    zmid = float(g.z[g.nz // 2])
    for shp, val in S["z_inv"]:
        pt.paint2d(img, shp, val, zmid)
    V = np.empty((g.nz, g.ny, g.nx), np.float32)
    V[:] = img[None]
    for shp, val in S["soft"]:
        pt.paint(V, shp, val)
    for shp, val in S["canal"]:
        pt.paint(V, shp, val)
    for shp, val in S["discs"]:
        pt.paint(V, shp, val)
    for shp, t in S["shells"]:
        pt.paint(V, shp, hu["cortical"])
    for shp, t in S["shells"]:
        pt.paint(V, shp.offset(t), hu["cancellous"])
    for shp, val in S.get("hip_liner", []):
        pt.paint(V, shp, val)
    for shp, val in S["cement"]:
        pt.paint(V, shp, val)
    # metal, with tracking of its excess over the underlying tissue
    mbox = None
    boxes = [pt.box(s) for s, _, _ in S["metal"]]
    boxes = [b for b in boxes if b is not None]
    Mocc = E = None
    if boxes:
        bb = np.array(boxes)
        mbox = (int(bb[:, 0].min()), int(bb[:, 1].max()), int(bb[:, 2].min()),
                int(bb[:, 3].max()), int(bb[:, 4].min()), int(bb[:, 5].max()))
        k0, k1, i0, i1, j0, j1 = mbox
        before = V[k0:k1, i0:i1, j0:j1].copy()
        Mocc = np.zeros_like(before)
        for shp, val, tag in S["metal"]:
            b = pt.box(shp)
            if b is None:
                continue
            o = _occ_into(pt, shp, b)
            a0, a1, b0, b1, c0, c1 = b
            sl = (slice(a0, a1), slice(b0, b1), slice(c0, c1))
            slm = (slice(a0 - k0, a1 - k0), slice(b0 - i0, b1 - i0), slice(c0 - j0, c1 - j0))
            V[sl] += o * (np.float32(val) - V[sl])
            Mocc[slm] = Mocc[slm] + o * (1.0 - Mocc[slm])
        E = V[k0:k1, i0:i1, j0:j1] - before
        del before
    S["grid"] = g
    S["fov_center"] = center
    S["metal_box"] = mbox
    if clean:
        S["Mocc"] = Mocc
        return (V, g, S) if return_scene else (V, g)
    art = P["artefacts"]
    A = P["acq"]
    rng = np.random.default_rng([P["noise_seed"], 1])
    if mbox is not None and art["blooming"]:
        k0, k1, i0, i1, j0, j1 = mbox
        sgb = art["bloom_sigma_mm"] / g.px
        pad = int(math.ceil(4 * sgb)) + 1
        a0, a1 = max(0, i0 - pad), min(g.ny, i1 + pad)
        b0, b1 = max(0, j0 - pad), min(g.nx, j1 + pad)
        Ep = np.zeros((k1 - k0, a1 - a0, b1 - b0), np.float32)
        Ep[:, i0 - a0: i1 - a0, j0 - b0: j1 - b0] = E
        Bl = ndimage.gaussian_filter(Ep, sigma=(0, sgb, sgb), truncate=3.0)
        V[k0:k1, a0:a1, b0:b1] += np.float32(art["bloom_beta"]) * Bl
        del Ep, Bl
    # system PSF (in-plane)
    ps = A["psf_sigma_mm"] / g.px
    ndimage.gaussian_filter(V, sigma=(0, ps, ps), output=V, truncate=3.0)
    if mbox is not None and (art["streaks"] or art["beam_hardening"]):
        angles = [np.sort(rng.uniform(0, math.pi, 6)) for _ in range(5)]
        _streaks(V, Mocc, E, mbox, g, P, angles)
    # correlated noise
    sc = 0.7
    for k in range(g.nz):
        nse = rng.standard_normal((g.ny, g.nx), dtype=np.float32)
        nse = ndimage.gaussian_filter(nse, sc, truncate=3.0)
        V[k] += nse * np.float32(A["noise_sd"] * 2.0 * math.sqrt(math.pi) * sc)
    return (V, g, S) if return_scene else (V, g)


def _occ_into(pt, shp, b):
    k0, k1, i0, i1, j0, j1 = b
    out = np.empty((k1 - k0, i1 - i0, j1 - j0), np.float32)
    per = (i1 - i0) * (j1 - j0)
    kstep = max(1, 1500000 // max(per, 1))
    for ka in range(k0, k1, kstep):
        kb = min(k1, ka + kstep)
        out[ka - k0: kb - k0] = pt.occ(shp, ka, kb, i0, i1, j0, j1)
    return out


# ----------------------------------------------------------------------------
# DICOM + truth
# ----------------------------------------------------------------------------
def _truth(P, S, g, enc_info, uids):
    screws = []
    for s in S["screws"]:
        ped = s["pedicle"]
        screws.append({
            "id": s["id"], "level": s["level"], "side": s["side"],
            "entry_lps": _rl(s["entry"]), "tip_lps": _rl(s["tip"]),
            "head_end_lps": _rl(s["head_end"]), "head_center_lps": _rl(s["head_center"]),
            "axis_unit_lps": _rl(s["axis"], 6),
            "diameter_mm": s["diameter"], "length_mm": _r(s["length"], 3),
            "length_requested_mm": s["length_requested"],
            "material": s["material"], "hu_true": s["hu"],
            "breach_direction": s["breach_direction"], "breach_depth_mm": s["breach_depth"],
            "gr_grade": gr_grade(s["breach_depth"]),
            "breach_depths_mm": {k: _r(v, 3) for k, v in s["breach_depths"].items()},
            "breach_requested": s["breach_requested"], "breach_mode": s["breach_mode"],
            "in_canal": bool(s["breach_depths"]["medial"] > 0),
            "at_laminectomy_level": bool(s["at_laminectomy"]), "cement": bool(s["cement"]),
            "tip_location": s["tip_location"],
            "pedicle": {"width_mm": ped["width"], "height_mm": ped["height"],
                        "center_lps": _rl(ped["center"]), "axis_unit_lps": _rl(ped["axis"], 6),
                        "medial_unit_lps": _rl(ped["medial"], 6),
                        "cranial_unit_lps": _rl(ped["cranial"], 6),
                        "convergence_deg": _r(ped["convergence_deg"], 3),
                        "tilt_deg": _r(ped["tilt_deg"], 3)},
        })
    objs = []
    for o in S["objects"]:
        oo = {}
        for k, v in o.items():
            if isinstance(v, np.ndarray):
                oo[k + ("_lps" if k in ("cup_center", "neck_end", "stem_end", "tip") else "")] = _rl(v)
            elif k == "path":
                oo["path_lps"] = [_rl(p) for p in v]
            else:
                oo[k] = v
        objs.append(oo)
    for r in S["rods"]:
        objs.append({"type": "rod", "side": r["side"], "points_lps": [_rl(p) for p in r["points"]],
                     "diameter_mm": r["diameter"], "material": r["material"], "hu_true": r["hu"]})
    levs = S["levels"]
    verts = []
    for nm in P["model_levels"]:
        lv = levs[nm]
        verts.append({"level": nm, "body_center_lps": _rl(lv.F.p([0, 0, 0])),
                      "superior_endplate_center_lps": _rl(lv.F.p([0, 0, lv.h / 2.0])),
                      "inferior_endplate_center_lps": _rl(lv.F.p([0, 0, -lv.h / 2.0])),
                      "canal_center_lps": _rl(lv.F.p([0, lv.v0 + lv.L["canal_ap"] / 2.0, 0])),
                      "axis_superior_unit_lps": _rl(lv.F.vec([0, 0, 1.0]), 6),
                      "canal_ap_mm": lv.L["canal_ap"], "canal_width_mm": lv.L["canal_w"],
                      "canal_shape": lv.L["canal_shape"],
                      "pedicle_width_mm": {k: lv.ped[k]["W"] for k in "LR"},
                      "pedicle_height_mm": {k: lv.ped[k]["H"] for k in "LR"},
                      "laminectomy": nm in P["laminectomy_levels"],
                      "in_fov": bool(g.z[-1] - 1 <= lv.F.O[2] <= g.z[0] + 1)})
    has_metal = bool(S["metal"])
    hip = any(o["type"] == "hip_prosthesis" for o in S["objects"])
    scs = any(o["type"] == "scs_lead" for o in S["objects"])
    art = P["artefacts"]
    grades = [x["gr_grade"] for x in screws]
    A = P["acq"]
    return {
        "generator": "spine_phantom.py", "generator_version": GENERATOR_VERSION,
        "study_id": P["study_id"], "params_sha256": params_hash(P),
        "coordinates": "DICOM patient LPS (x->patient left, y->posterior, z->head), mm",
        "dicom": {"study_instance_uid": uids["study"], "series_instance_uid": uids["series"],
                  "frame_of_reference_uid": uids["for"], "n_slices": g.nz, "rows": g.ny,
                  "columns": g.nx, "bits_stored": enc_info[0],
                  "pixel_representation": enc_info[1], "rescale_intercept": enc_info[2],
                  "rescale_slope": 1.0, "hu_max_representable": enc_info[3],
                  "transfer_syntax": "RLELossless" if A["rle"] else "ExplicitVRLittleEndian",
                  "slice_order": "instance 1 = most superior (z decreasing)"},
        "slice_thickness_mm": A["slice_thickness_mm"], "slice_spacing_mm": A["spacing_mm"],
        "pixel_spacing_mm": A["pixel_mm"], "matrix": A["matrix"],
        "fov_center_lps": _rl(S["fov_center"]), "z_range_lps": [_r(g.z[-1]), _r(g.z[0])],
        "kernel": A["kernel"], "noise_sd_hu": A["noise_sd"],
        "has_metal": has_metal, "n_screws": len(screws), "construct": P["construct"],
        "instrumented_levels": P["instrumented_levels"],
        "laminectomy_levels": P["laminectomy_levels"],
        "levels_in_fov": [v["level"] for v in verts if v["in_fov"]],
        "any_breach": any(x["breach_direction"] != "none" for x in screws),
        "worst_grade": max(grades) if grades else None,
        "flags": {"metal": has_metal, "streaks": bool(has_metal and art["streaks"]),
                  "beam_hardening": bool(has_metal and art["beam_hardening"]),
                  "blooming": bool(has_metal and art["blooming"]), "mar": bool(art["mar"]),
                  "noise": True, "extended_hu": enc_info[0] == 16,
                  "metal_saturated_12bit": bool(has_metal and enc_info[0] == 12),
                  "rle": bool(A["rle"]), "rods": bool(S["rods"]),
                  "laminectomy": bool(P["laminectomy_levels"]),
                  "cement": any(x["cement"] for x in screws), "hip_prosthesis": hip,
                  "scs_lead": scs, "disc_vacuum": P.get("disc_vacuum_below") is not None,
                  "canal_shape": sorted({v["canal_shape"] for v in verts}),
                  "patient_rotation_deg": P["pose"]["axial_rotation_deg"],
                  "scoliosis_tilt_deg": P["pose"]["coronal_tilt_deg"],
                  "off_centre_mm": _rl(np.array(P["pose"]["spine_origin_lps"][:2])
                                       - np.array(S["fov_center"]))},
        "screws": screws, "other_metal": objs, "vertebrae": verts, "params": P,
    }


def make_study(params):
    """-> (list of pydicom.Dataset (one per axial slice, uncompressed), truth dict)"""
    P = _jsonable(params)
    V, g, S = render_volume(P, clean=False, return_scene=True)
    A = P["acq"]
    bits, pr, icpt, dt = PIXEL_ENCODINGS[A["encoding"]]
    if pr == 0:
        smin, smax = 0, (1 << bits) - 1
    else:
        smin, smax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    hu_lo = max(smin + icpt, -1024.0)
    hu_hi = smax + icpt
    ph = params_hash(P)
    uids = {"study": _uid(ph, "study"), "series": _uid(ph, "series"), "for": _uid(ph, "for")}
    truth = _truth(P, S, g, (bits, pr, icpt, hu_hi), uids)
    HU = np.clip(np.rint(V), hu_lo, hu_hi)
    stored = (HU - icpt).astype(dt)
    del V, HU
    dsets = []
    for k in range(g.nz):
        sop = _uid(ph, "sop", k)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        fm.ImplementationVersionName = "SPINEPHANTOM10"
        ds = Dataset()
        ds.file_meta = fm
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = "20261121"
        ds.SeriesDate = "20261121"
        ds.ContentDate = "20261121"
        ds.StudyTime = "101500"
        ds.SeriesTime = "101500"
        ds.ContentTime = "101500"
        ds.AccessionNumber = P["study_id"][:16]
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC"
        ds.ManufacturerModelName = "spine_phantom.py"
        ds.StudyDescription = "CT LUMBAR SPINE"
        ds.SeriesDescription = "SPINE %s %.2fmm" % (A["kernel"].upper(), A["slice_thickness_mm"])
        ds.PatientName = "PHANTOM^" + P["study_id"]
        ds.PatientID = "PHANTOM"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "SPINE"
        ds.ReasonForTheRequestedProcedure = "CT lumbar spine control"
        ds.SliceThickness = "%g" % A["slice_thickness_mm"]
        ds.SpacingBetweenSlices = "%g" % A["spacing_mm"]
        ds.KVP = "120"
        ds.ConvolutionKernel = "B70s" if A["kernel"] == "bone" else "B30s"
        ds.ReconstructionDiameter = "%.3f" % (g.nx * g.px)
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = uids["study"]
        ds.SeriesInstanceUID = uids["series"]
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = ["%.4f" % g.x0, "%.4f" % g.y0, "%.4f" % g.z[k]]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = uids["for"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = "%.4f" % g.z[k]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = g.ny
        ds.Columns = g.nx
        ds.PixelSpacing = ["%.6g" % g.px, "%.6g" % g.px]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = pr
        ds.WindowCenter = "400"
        ds.WindowWidth = "1800"
        ds.RescaleIntercept = "%g" % icpt
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        dsets.append(ds)
    return dsets, truth


def write_study(params, directory):
    os.makedirs(directory, exist_ok=True)
    dsets, truth = make_study(params)
    rle = bool(params["acq"]["rle"])
    for k, ds in enumerate(dsets):
        if rle:
            ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        ds.save_as(os.path.join(directory, "IM%04d.dcm" % (k + 1)), enforce_file_format=True)
    with open(os.path.join(directory, "truth.json"), "w") as fh:
        json.dump(_jsonable(truth), fh, indent=1, sort_keys=True)
    return truth


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------
def _job(args):
    params, outdir = args
    t0 = time.time()
    tr = write_study(params, os.path.join(outdir, params["study_id"]))
    return params["study_id"], time.time() - t0, tr["dicom"]["n_slices"], \
        [s["gr_grade"] for s in tr["screws"]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--only", type=str, default="", help="comma separated study indices")
    a = ap.parse_args(argv)
    fam = family(a.seed, a.n, small=a.small)
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "family.json"), "w") as fh:
        json.dump(_jsonable(fam), fh, indent=1, sort_keys=True)
    if a.only:
        keep = {int(x) for x in a.only.split(",")}
        fam = [p for p in fam if p["index"] in keep]
    jobs = [(p, a.outdir) for p in fam]
    t0 = time.time()
    if a.workers > 1:
        from multiprocessing import Pool
        with Pool(a.workers) as pool:
            it = pool.imap_unordered(_job, jobs)
            for sid, dt, nz, gr in it:
                print("%s  %5.1fs  %4d slices  grades=%s" % (sid, dt, nz, "".join(gr)), flush=True)
    else:
        for j in jobs:
            sid, dt, nz, gr = _job(j)
            print("%s  %5.1fs  %4d slices  grades=%s" % (sid, dt, nz, "".join(gr)), flush=True)
    print("total %.1fs" % (time.time() - t0))


if __name__ == "__main__":
    main()

"""spine_phantom5 -- synthetic post-operative thoraco-lumbar spine CT phantom (family 5).

Independent generator written from anatomy knowledge only.  Each vertebra is built in its own
frame (u = patient left, v = posterior, w = superior, origin at the body centre) from 2-D signed
distance rasters (body, pedicle band + ring, posterior arch, spinous, transverse process/rib,
sacral ala, ilium) extruded over height ranges; the bony canal is a separate 2-D raster (round or
trefoil) subtracted from the bone.  Pedicle-screw breach depths are measured on this geometry
(canal SDF at 0.1 mm, dense sampling of the screw's outer thread envelope).

API:  family(seed, n, small=False) -> list[dict];  write_study(params, directory) -> truth dict.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
from scipy import ndimage, sparse

FAMILY_ID = 5
LEVELS = ['T9', 'T10', 'T11', 'T12', 'L1', 'L2', 'L3', 'L4', 'L5', 'S1', 'S2']
INSTRUMENTABLE = LEVELS[1:10]  # T10..S1
# body half-width, body half-depth (AP), body height, disc height *below*, pedicle width range,
# pedicle height mean, anatomical pedicle convergence (deg), mean sagittal tilt (deg, + = endplate
# facing anterior, lordosis)
ANAT = {
    'T9': (16.0, 12.5, 20.0, 5.5, (5.0, 6.5), 15.5, 4, -9),
    'T10': (17.0, 13.0, 21.0, 6.0, (5.0, 7.0), 16.0, 5, -8),
    'T11': (18.0, 14.0, 22.0, 7.0, (5.5, 8.0), 16.5, 5, -5),
    'T12': (19.0, 14.5, 23.0, 8.0, (6.0, 9.0), 16.5, 7, -2),
    'L1': (20.0, 15.0, 24.0, 9.0, (6.0, 9.5), 15.5, 10, 0),
    'L2': (21.0, 16.0, 25.0, 10.0, (6.5, 10.0), 15.0, 12, 3),
    'L3': (22.0, 16.5, 26.0, 11.0, (7.5, 11.0), 14.5, 15, 6),
    'L4': (23.0, 17.0, 26.0, 11.0, (8.0, 12.0), 14.0, 18, 10),
    'L5': (24.0, 17.0, 25.0, 10.0, (9.0, 12.0), 13.0, 22, 17),
    'S1': (23.0, 16.0, 24.0, 2.0, (10.0, 12.0), 13.0, 24, 28),
    'S2': (19.0, 13.0, 20.0, 0.0, (9.0, 11.0), 12.0, 20, 35),
}
RES = 0.25         # mm, component rasters
CRES = 0.1         # mm, canal raster (truth-critical)
BREACH_EPS = 0.1   # mm, depths below this are reported as 0


# ----------------------------------------------------------------------------- helpers
def _rot(ax, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if ax == 'x':
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if ax == 'y':
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _uid(key):
    h = int(hashlib.sha256(key.encode()).hexdigest()[:30], 16)
    return '2.25.%d' % h


def _sdf_from_mask(mask, h):
    if not mask.any():
        return np.full(mask.shape, 1e3, np.float32)
    out = ndimage.distance_transform_edt(~mask)
    inn = ndimage.distance_transform_edt(mask)
    return (np.where(mask, -(inn - 0.5), out - 0.5) * h).astype(np.float32)


class Raster:
    """2-D signed distance raster in (u, v) local mm coordinates, cropped to the shape + margin.
    Outside the crop the distance is reported as `far` (a lower bound)."""

    def __init__(self, u0, v0, h, sdf=None, mask=None, margin=16.0):
        self.h = h
        if mask is not None:
            rr = np.nonzero(mask.any(1))[0]
            cc = np.nonzero(mask.any(0))[0]
            if len(rr) == 0:
                rr = cc = np.array([0])
            m = int(margin / h)
            i0, i1 = max(0, rr[0] - m), min(mask.shape[0], rr[-1] + m + 1)
            j0, j1 = max(0, cc[0] - m), min(mask.shape[1], cc[-1] + m + 1)
            sdf = _sdf_from_mask(mask[i0:i1, j0:j1], h)
            u0, v0 = u0 + j0 * h, v0 + i0 * h
        self.u0, self.v0, self.sdf = u0, v0, sdf
        self.far = float(margin)
        self.n0, self.n1 = sdf.shape

    def __call__(self, u, v):
        ci = (np.asarray(v, np.float32) - self.v0) / self.h
        cj = (np.asarray(u, np.float32) - self.u0) / self.h
        ins = (ci >= 0) & (ci <= self.n0 - 1.001) & (cj >= 0) & (cj <= self.n1 - 1.001)
        if ins.all():
            return _bilinear(self.sdf, ci, cj)
        out = np.full(ci.shape, self.far, np.float32)
        if ins.any():
            out[ins] = _bilinear(self.sdf, ci[ins], cj[ins])
        return out


def _bilinear(a, ci, cj):
    """Fast bilinear interpolation of 2-D array a at fractional indices (clamped)."""
    n0, n1 = a.shape
    ci = np.clip(ci, 0, n0 - 1.0001)
    cj = np.clip(cj, 0, n1 - 1.0001)
    i = ci.astype(np.int32)
    j = cj.astype(np.int32)
    fi = (ci - i).astype(np.float32)
    fj = (cj - j).astype(np.float32)
    fl = a.ravel()
    k = i * n1 + j
    a00 = fl[k]
    a01 = fl[k + 1]
    a10 = fl[k + n1]
    a11 = fl[k + n1 + 1]
    top = a00 + (a01 - a00) * fj
    bot = a10 + (a11 - a10) * fj
    return top + (bot - top) * fi


def _trilinear(a, c0, c1, c2):
    n0, n1, n2 = a.shape
    c0 = np.clip(c0, 0, n0 - 1.0001)
    c1 = np.clip(c1, 0, n1 - 1.0001)
    c2 = np.clip(c2, 0, n2 - 1.0001)
    i, j, k = c0.astype(np.int32), c1.astype(np.int32), c2.astype(np.int32)
    f0, f1, f2 = (c0 - i).astype(np.float32), (c1 - j).astype(np.float32), (c2 - k).astype(np.float32)
    fl = a.ravel()
    s1, s0 = n2, n1 * n2
    b = i * s0 + j * s1 + k
    c00 = fl[b] + (fl[b + 1] - fl[b]) * f2
    c01 = fl[b + s1] + (fl[b + s1 + 1] - fl[b + s1]) * f2
    c10 = fl[b + s0] + (fl[b + s0 + 1] - fl[b + s0]) * f2
    c11 = fl[b + s0 + s1] + (fl[b + s0 + s1 + 1] - fl[b + s0 + s1]) * f2
    c0_ = c00 + (c01 - c00) * f1
    c1_ = c10 + (c11 - c10) * f1
    return c0_ + (c1_ - c0_) * f0


def _grid(u0, u1, v0, v1, h):
    us = np.arange(u0, u1 + h / 2, h)
    vs = np.arange(v0, v1 + h / 2, h)
    V, U = np.meshgrid(vs, us, indexing='ij')
    return U, V


# ----------------------------------------------------------------------------- vertebra
class Vertebra:
    def __init__(self, p, R, t, render_rng_seed):
        self.p = p
        self.name = p['level']
        self.R = np.asarray(R, float)
        self.t = np.asarray(t, float)
        bw, bd, bh = p['bw'], p['bd'], p['bh']
        self.bw, self.bd, self.bh = bw, bd, bh
        self.ph = p['ph']
        self.wp = max(0.0, bh / 2 - self.ph / 2 - 1.0)
        self.vbp = 0.82 * bd
        cw, cap = p['canal_w'], p['canal_ap']
        # ---- canal raster (fine)
        m = 4.0
        U, V = _grid(-cw / 2 - m, cw / 2 + m, -cap / 2 - m, cap / 2 + m, CRES)
        if p['canal_shape'] == 'trefoil':
            x, y = U / (cw / 2), V / (cap / 2)
            th = np.arctan2(y, x)
            r = np.hypot(x, y)
            rr = (1 + 0.22 * np.cos(3 * (th - np.pi / 2))) / 1.10
            cm = r <= rr
        else:
            cm = (U / (cw / 2)) ** 2 + (V / (cap / 2)) ** 2 <= 1
        ant = -V[cm].min()
        self.vc = self.vbp + ant - 0.4
        vc = self.vc
        self.canal = Raster(-cw / 2 - m, vc - cap / 2 - m, CRES, mask=cm, margin=30.0)
        # distance (inside the canal) to the ipsilateral lateral wall = medial pedicle cortex
        er = ndimage.binary_erosion(cm)
        bnd = cm & ~er
        half = float(np.abs(U[cm]).max())
        self.wall = {}
        for side in (1, -1):
            wset = bnd & (side * U >= 0.4 * half)
            dwall = ndimage.distance_transform_edt(~wset) * CRES + 0.5 * CRES
            self.wall[side] = Raster(-cw / 2 - m, vc - cap / 2 - m, CRES, sdf=np.maximum(dwall, 0).astype(np.float32))
        rows = np.abs(V[:, 0]) <= cap / 4
        self.cw_mid = float(np.abs(U[rows][cm[rows]]).max())
        self.cap = cap
        self.cw = cw
        self.cpost = vc + V[cm].max()   # posterior canal margin (v)
        # ---- component rasters
        spl = p['spinous_len']
        umax = bw + (38 if self.name in ('S1', 'S2') else 0) + (80 if self.name == 'S1' and p.get('ilium') else 0)
        umax = max(umax, self.cw_mid + 14 + p['tp_len'], bw + 8) + 6
        if self.name in ('T9', 'T10', 'T11', 'T12'):
            umax = max(umax, 80)
        u0, u1 = -umax, umax
        v0, v1 = -bd - 6, self.cpost + spl + 8
        U, V = _grid(u0, u1, v0, v1, RES)
        self.bbox_local = (u0, u1, v0, v1)
        canal_s = self.canal(U, V)
        comps = []
        # body
        conc = 1.5 * (1 - np.clip((U / bw) ** 2, 0, 1))
        body = ((U / bw) ** 2 + (V / bd) ** 2 <= 1) & (V <= self.vbp - conc)
        comps.append(('body', body, (-bh / 2, bh / 2)))
        # pedicle bands + ring
        al = math.radians(p['alpha'])
        self.alpha = p['alpha']
        ped = np.zeros_like(body)
        self.u_pc = {}
        for side, pw in ((1, p['pw_left']), (-1, p['pw_right'])):
            upc = self.cw_mid + pw / (2 * math.cos(al))
            self.u_pc[side] = upc
            # axis through (side*upc, vc) direction (side*sin al, cos al) (posterior -> lateral)
            du, dv = side * math.sin(al), math.cos(al)
            dist = np.abs((U - side * upc) * dv - (V - vc) * du)
            band = (dist <= pw / 2) & (V >= self.vbp - 8) & (V <= self.cpost + 3)
            ped |= band
        tr = min(3.0, 0.6 * min(p['pw_left'], p['pw_right']))
        ring = (canal_s <= tr) & (V >= self.vbp - 1.5)
        if p['laminectomy']:
            ring &= V <= vc + 0.15 * cap
        ped |= ring
        # solid bridge between the ring/pedicles and the back of the body (no seam)
        ped |= (np.abs(U) <= self.cw_mid + tr) & (V >= self.vbp - 6) & (V <= vc)
        comps.append(('ped', ped, (self.wp - self.ph / 2, self.wp + self.ph / 2)))
        # posterior arch: lateral masses (facets) + lamina
        post = np.zeros_like(body)
        for side in (1, -1):
            pw = p['pw_left'] if side == 1 else p['pw_right']
            cu = side * (self.u_pc[side] + 1.5 + (2.0 if p['laminectomy'] else 0.0))
            cv = self.cpost + 1.0
            post |= ((U - cu) / (pw / 2 + 4.0)) ** 2 + ((V - cv) / 6.0) ** 2 <= 1
        if not p['laminectomy']:
            post |= (canal_s <= 5.0) & (V >= vc + 0.2 * cap) & (np.abs(U) <= self.cw_mid + 8)
        comps.append(('post', post, (self.wp - self.ph / 2 - 8.0, self.wp + self.ph / 2 + 7.0)))
        # spinous process
        if not p['laminectomy'] and self.name not in ('S2',):
            sw = p['spinous_w']
            sp = (np.abs(U) <= sw / 2) & (V >= self.cpost - 3) & (V <= self.cpost + spl)
            sp |= (U / (sw / 2 + 1.0)) ** 2 + ((V - self.cpost - spl) / 4.0) ** 2 <= 1
            comps.append(('spinous', sp, None))
        # transverse processes (lumbar/thoracic) or ala (sacrum)
        tp = np.zeros_like(body)
        thor = self.name.startswith('T')
        if self.name in ('S1', 'S2'):
            aw = bw + (32 if self.name == 'S1' else 24)
            tp |= ((U / aw) ** 2 + ((V - (vc - 2)) / (bd * 0.9)) ** 2 <= 1) & (V >= -bd * 0.55)
            comps.append(('ala', tp, (-bh / 2, bh / 2 + 1.0)))
        else:
            for side in (1, -1):
                a = math.radians(30 if thor else 8)
                ub = side * self.u_pc[side]
                vb = vc + 2.0
                L = p['tp_len']
                du, dv = side * math.cos(a), math.sin(a)
                s = (U - ub) * du + (V - vb) * dv
                d = np.abs((U - ub) * dv - (V - vb) * du)
                tp |= (s >= 0) & (s <= L) & (d <= 3.5 - 1.0 * np.clip(s / L, 0, 1))
            comps.append(('tp', tp, (self.wp - 5.0, self.wp + 5.0)))
            if thor:  # ribs: arc band, descending laterally
                rib = np.zeros_like(body)
                for side in (1, -1):
                    cu, cv = side * 10.0, -bd - 5.0
                    Rr = 72.0
                    r = np.hypot(U - cu, V - cv)
                    ang = np.degrees(np.arctan2(V - cv, side * (U - cu)))
                    rib |= (np.abs(r - Rr) <= 4.5) & (ang > -10) & (ang < 70)
                    # costovertebral neck
                    s = (U - side * (bw - 2)) * side
                    rib |= (s >= 0) & (s <= 20) & (np.abs(V - (vc - 3)) <= 3.5)
                comps.append(('rib', rib, 'rib'))
        self.ilium = bool(p.get('ilium') and self.name == 'S1')
        if self.ilium:
            il = np.zeros_like(body)
            aw = bw + 32
            for side in (1, -1):
                pts = [(aw - 6, vc + 42, 9.0), (aw + 6, vc + 12, 10.0), (aw + 22, vc - 22, 5.0), (aw + 40, vc - 55, 2.5)]
                for (ua, va, ta), (ub, vb, tb) in zip(pts[:-1], pts[1:]):
                    ua, ub = side * ua, side * ub
                    dx, dy = ub - ua, vb - va
                    l2 = dx * dx + dy * dy
                    t = np.clip(((U - ua) * dx + (V - va) * dy) / l2, 0, 1)
                    dd = np.hypot(U - ua - t * dx, V - va - t * dy)
                    il |= dd <= ta + (tb - ta) * t
            comps.append(('ilium', il, (-bh / 2 - 25, bh / 2 + 45)))
        self.comps = []
        for name, mask, wr in comps:
            self.comps.append((name, Raster(u0, v0, RES, mask=mask, margin=30.0), wr))
        self.cdict = {c[0]: c for c in self.comps}
        allm = np.zeros_like(body)
        for name, mask, wr in comps:
            allm |= mask
        self.union = Raster(u0, v0, RES, mask=allm, margin=6.0)
        # height bands: union of the fixed-height components -> seamless interior depth
        fixed = [(n, mk, wr) for n, mk, wr in comps if isinstance(wr, tuple)]
        self.fixed = [n for n, _, _ in fixed]
        self.extra = [n for n, _, wr in comps if not isinstance(wr, tuple)]
        self.bw_ = np.array(sorted(set(x for _, _, wr in fixed for x in wr)))
        self.band_r = []
        for b in range(len(self.bw_) - 1):
            wc = 0.5 * (self.bw_[b] + self.bw_[b + 1])
            mk = np.zeros_like(body)
            for _, m_, wr in fixed:
                if wr[0] <= wc <= wr[1]:
                    mk |= m_
            self.band_r.append(Raster(u0, v0, RES, mask=mk, margin=4.0))
        # trabecular texture (local frame, 1 mm)
        rng = np.random.default_rng(render_rng_seed)
        self.wlo = -bh / 2 - (26.0 if self.ilium else 12.0)
        self.whi = bh / 2 + (46.0 if self.ilium else 12.0)
        shp = (int((self.whi - self.wlo)) + 2, int((v1 - v0) / 1.0) + 2, int((u1 - u0) / 1.0) + 2)
        tex = ndimage.gaussian_filter(rng.standard_normal(shp).astype(np.float32), 0.9)
        self.tex = tex / (tex.std() + 1e-6)
        self.tex0 = (self.wlo, v0, u0)
        self.w_canal = (-bh / 2 - p['disc_below'] / 2, bh / 2 + p['disc_above'] / 2)
        self.wb = self.world_bbox()

    # -- frame transforms
    def to_local(self, P):
        return (P - self.t) @ self.R  # rows: R^T (p - t)

    def local_xyz(self, X, Y, z):
        """Fast float32 world->local for flat X, Y arrays at scalar (or array) z."""
        R = self.R.astype(np.float32)
        dx = X - np.float32(self.t[0])
        dy = Y - np.float32(self.t[1])
        dz = np.float32(z - self.t[2]) if np.isscalar(z) else (z - self.t[2]).astype(np.float32)
        u = R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz
        v = R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz
        w = R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz
        return u, v, w

    def to_world(self, L):
        return L @ self.R.T + self.t

    def comp_sdf(self, name, u, v, w):
        _, ras, wr = self.cdict[name]
        s2 = ras(u, v)
        if wr is None:  # spinous: w-range depends on v
            thor = self.name.startswith('T')
            k = 0.75 if thor else 0.3
            hs = 5.0 if thor else 8.0
            c = self.wp - 2.0 - k * np.clip(v - self.cpost, 0, None)
            dw = np.abs(w - c) - hs
        elif wr == 'rib':
            c = self.wp - 0.35 * np.clip(np.abs(u) - self.bw, 0, None)
            dw = np.abs(w - c) - 5.0
        else:
            dw = np.maximum(wr[0] - w, w - wr[1])
        return np.maximum(s2, dw), s2, dw

    def bone_sdf(self, u, v, w, canal_s=None):
        bf = None
        for name in self.fixed:
            s_, _, _ = self.comp_sdf(name, u, v, w)
            bf = s_ if bf is None else np.minimum(bf, s_)
        inside = np.nonzero(bf < 0)[0]
        if len(inside):
            ui, vi, wi = u[inside], v[inside], w[inside]
            nb = len(self.band_r)
            M = np.stack([R_(ui, vi) for R_ in self.band_r])
            bi = np.clip(np.searchsorted(self.bw_, wi) - 1, 0, nb - 1)
            ar = np.arange(len(ui))
            In = M < 0
            T = np.full(M.shape, np.nan, np.float32)
            Bt = np.full(M.shape, np.nan, np.float32)
            T[nb - 1] = np.where(In[nb - 1], self.bw_[nb], np.nan)
            for b in range(nb - 2, -1, -1):
                T[b] = np.where(In[b], np.where(In[b + 1], T[b + 1], self.bw_[b + 1]), np.nan)
            Bt[0] = np.where(In[0], self.bw_[0], np.nan)
            for b in range(1, nb):
                Bt[b] = np.where(In[b], np.where(In[b - 1], Bt[b - 1], self.bw_[b]), np.nan)
            sip = M[bi, ar]
            up = T[bi, ar] - wi
            dn = wi - Bt[bi, ar]
            depth = np.minimum(-sip, np.minimum(up, dn))
            ok = (sip < 0) & np.isfinite(depth)
            bf[inside[ok]] = np.minimum(bf[inside[ok]], -depth[ok])
        b = bf
        for name in self.extra:
            s_, _, _ = self.comp_sdf(name, u, v, w)
            b = np.minimum(b, s_)
        if canal_s is None:
            canal_s = self.canal(u, v)
        return np.maximum(b, -canal_s)

    def texture(self, u, v, w):
        return _trilinear(self.tex, w - self.tex0[0], v - self.tex0[1], u - self.tex0[2])

    def world_bbox(self):
        u0, u1, v0, v1 = self.bbox_local
        cs = np.array([[a, b, c] for a in (u0, u1) for b in (v0, v1) for c in (self.wlo, self.whi)])
        W = self.to_world(cs)
        return W.min(0), W.max(0)


# ----------------------------------------------------------------------------- screws
def _perp_basis(d):
    a = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(d, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return e1, e2


def _screw_samples(entry, d, L, R, taper=4.0):
    """Dense samples of the solid outer thread envelope (local frame)."""
    e1, e2 = _perp_basis(d)
    s = np.arange(0.0, L + 1e-6, 0.2)
    env = R * np.clip(0.35 + 0.65 * (L - s) / taper, 0.35, 1.0)
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    pts = []
    for frac, na in ((1.0, 36), (0.6, 18), (0.0, 1)):
        a = ang[::36 // na] if na > 1 else np.array([0.0])
        rr = env[:, None] * frac
        P = (entry[None, None, :] + s[:, None, None] * d[None, None, :]
             + (rr * np.cos(a)[None, :])[..., None] * e1 + (rr * np.sin(a)[None, :])[..., None] * e2)
        pts.append(P.reshape(-1, 3))
    return np.concatenate(pts)


def measure_breach(V, side, entry, d, L, R):
    """Breach depths (mm) of the screw envelope against vertebra V's pedicle / canal."""
    P = _screw_samples(entry, d, L, R)
    u, v, w = P[:, 0], P[:, 1], P[:, 2]
    cs = V.canal(u, v)
    res = {'medial': 0.0, 'lateral': 0.0, 'inferior': 0.0, 'superior': 0.0}
    inlev = (w >= V.w_canal[0]) & (w <= V.w_canal[1])
    inc = (cs < 0) & inlev
    if inc.any():
        res['medial'] = float(V.wall[side](u[inc], v[inc]).max())
    bone = V.bone_sdf(u, v, w, cs)
    out = (bone > 0) & ~inc
    # pedicle segment
    pseg = out & (v >= V.vbp - 2.0) & (v <= V.cpost)
    if pseg.any():
        _, s2, dw = V.comp_sdf('ped', u[pseg], v[pseg], w[pseg])
        ip = np.clip(s2, 0, None)
        vert = np.clip(dw, 0, None)
        lat_side = (u[pseg] * side) > V.cw_mid
        wl = w[pseg] - V.wp
        m_lat = (ip >= vert) & lat_side
        if m_lat.any():
            res['lateral'] = max(res['lateral'], float(ip[m_lat].max()))
        m_v = vert > ip
        mi = m_v & (wl < 0)
        ms = m_v & (wl > 0)
        if mi.any():
            res['inferior'] = float(vert[mi].max())
        if ms.any():
            res['superior'] = float(vert[ms].max())
    # body segment: lateral wall
    bseg = out & (v < V.vbp - 2.0) & (np.abs(w) <= V.bh / 2) & ((u * side) > 0)
    if bseg.any():
        s2 = V.cdict['body'][1](u[bseg], v[bseg])
        res['lateral'] = max(res['lateral'], float(np.clip(s2, 0, None).max()))
    for k in res:
        res[k] = round(res[k], 2) if res[k] >= BREACH_EPS else 0.0
    return res


def _axis(V, side, theta, phi, du, dw):
    """Screw axis through the pedicle isthmus (+offsets).  Returns point, direction (local)."""
    th, ph = math.radians(theta), math.radians(phi)
    d = np.array([-side * math.sin(th) * math.cos(ph), -math.cos(th) * math.cos(ph), math.sin(ph)])
    c0 = np.array([side * (V.u_pc[side] + du), V.vc, V.wp + dw])
    return c0, d


def _entry_tip(V, c0, d, L):
    # walk backwards from the isthmus to the posterior bone surface
    s = np.arange(0.0, -45.0, -0.25)
    P = c0[None, :] + s[:, None] * d[None, :]
    b = V.bone_sdf(P[:, 0], P[:, 1], P[:, 2])
    se = None
    inside = b <= 0
    for i in range(len(s)):
        if P[i, 1] > V.cpost and not inside[i]:
            se = s[i]
            break
    if se is None:
        # fallback: plane through posterior lateral mass
        se = -(V.cpost + 6.0 - c0[1]) / max(1e-3, -d[1])
    entry = c0 + (se + 0.5) * d
    # clamp length: tip >= 2.5 mm inside the vertebral body
    s2 = np.arange(0.0, 90.0, 0.25)
    Q = entry[None, :] + s2[:, None] * d[None, :]
    bs = V.comp_sdf('body', Q[:, 0], Q[:, 1], Q[:, 2])[0]
    ok = np.where(bs <= -2.5)[0]
    Lmax = s2[ok[-1]] if len(ok) else L
    # first contiguous in-body run must be kept (do not go through and out)
    if len(ok):
        run_end = ok[0]
        while run_end + 1 < len(s2) and bs[run_end + 1] <= -2.5:
            run_end += 1
        Lmax = s2[run_end]
    L = float(min(L, max(Lmax, 20.0)))
    return entry, L


def place_screw(V, sc):
    """Solve the axis offset reaching the target breach; return geometry + measured truth."""
    side = 1 if sc['side'] == 'left' else -1
    R = sc['diameter'] / 2
    target, D = sc['target'], sc['target_depth']
    theta, phi = sc['convergence'], sc['tilt']

    def geom(du, dw):
        c0, d = _axis(V, side, theta, phi, du, dw)
        entry, L = _entry_tip(V, c0, d, sc['length'])
        return entry, d, L

    def depths(du, dw):
        e, d, L = geom(du, dw)
        return measure_breach(V, side, e, d, L, R)

    if target == 'none':
        # a well-placed screw: search a small offset; if the pedicle is too tight, the surgeon
        # downsizes the screw (0.5 mm steps, >= 4.5 mm)
        while True:
            best = None
            for du in (0.0, -0.4, 0.4, -0.8, 0.8, -1.2, 1.2):
                for dw in (0.0, -1.0, 1.0, -2.0, 2.0):
                    br = depths(du, dw)
                    tot = sum(br.values())
                    if best is None or tot < best[0] - 1e-9:
                        best = (tot, du, dw)
                    if tot == 0:
                        break
                if best[0] == 0:
                    break
            if best[0] == 0 or R <= 2.25 + 1e-9:
                break
            R -= 0.25
        du, dw = best[1], best[2]
    else:
        if target == 'medial':
            f = lambda x: depths(-x, 0.0)['medial']
            xmax = V.cw_mid + 6.0
        elif target == 'lateral':
            f = lambda x: depths(x, 0.0)['lateral']
            xmax = 16.0
        else:
            f = lambda x: depths(0.0, -x)['inferior']
            xmax = V.ph / 2 + 10.0
        lo, hi = -3.0, xmax
        if f(lo) >= D:
            hi = lo
        if f(hi) <= D:
            x = hi
        else:
            for _ in range(22):
                mid = 0.5 * (lo + hi)
                if f(mid) < D:
                    lo = mid
                else:
                    hi = mid
            x = 0.5 * (lo + hi)
        du, dw = {'medial': (-x, 0.0), 'lateral': (x, 0.0), 'inferior': (0.0, -x)}[target]
    entry, d, L = geom(du, dw)
    br = measure_breach(V, side, entry, d, L, R)
    return entry, d, L, br, 2 * R


# ----------------------------------------------------------------------------- parameters
def _choice(rng, items, p):
    return items[int(rng.choice(len(items), p=np.asarray(p) / np.sum(p)))]


def _sample(seed, i, small):
    rng = np.random.default_rng([int(seed), int(i), FAMILY_ID, int(small)])
    P = {'family': FAMILY_ID, 'seed': int(seed), 'index': int(i), 'small': bool(small),
         'render_seed': int(rng.integers(0, 2 ** 31 - 1))}
    # ---- levels
    if small:
        ninst = 1
    else:
        ninst = _choice(rng, [1, 2, 3, 4], [0.05, 0.5, 0.3, 0.15])
    starts = list(range(1, 10 - ninst + 1))
    # lumbar constructs are commoner
    wts = np.array([1.0 if LEVELS[s].startswith('T') else 3.0 for s in starts])
    s0 = starts[int(rng.choice(len(starts), p=wts / wts.sum()))]
    inst = LEVELS[s0:s0 + ninst]
    ren = LEVELS[max(0, s0 - 1):min(len(LEVELS), s0 + ninst + 1)]
    P['instrumented_levels'] = inst
    P['rendered_levels'] = ren
    osteo = bool(rng.random() < 0.25)
    P['osteoporosis'] = osteo
    P['ilium'] = True
    lam_levels = []
    if rng.random() < 0.35:
        k = 1 if rng.random() < 0.7 or ninst < 2 else 2
        j = int(rng.integers(0, ninst - k + 1)) if ninst >= k else 0
        lam_levels = inst[j:j + k]
    P['laminectomy_levels'] = lam_levels
    # scoliosis / rotation
    scol = float(rng.uniform(0, 15)) if rng.random() < 0.3 else float(rng.uniform(0, 3))
    protz = float(np.clip(rng.normal(0, 4), -15, 15)) if rng.random() < 0.8 else float(rng.uniform(-15, 15))
    P['patient_rotation_deg'] = protz
    P['patient_tilt_deg'] = float(rng.normal(0, 2))
    P['scoliosis_deg'] = scol
    lordo = float(rng.uniform(0.4, 1.2))
    verts = []
    nren = len(ren)
    ph_sign = 1 if rng.random() < 0.5 else -1
    shape_pref = rng.random()
    for k, lv in enumerate(ren):
        bw, bd, bh, disc, pwr, phm, alpha, sag = ANAT[lv]
        sc = float(rng.uniform(0.9, 1.12))
        v = {'level': lv}
        v['bw'] = bw * sc
        v['bd'] = bd * sc * float(rng.uniform(0.95, 1.05))
        v['bh'] = bh * float(rng.uniform(0.9, 1.1)) * (0.93 if osteo and rng.random() < 0.3 else 1.0)
        v['disc_below'] = disc * float(rng.uniform(0.6, 1.15)) if disc > 0 else 0.0
        pw = float(rng.uniform(*pwr))
        v['pw_left'] = float(np.clip(pw + rng.normal(0, 0.4), 5, 12))
        v['pw_right'] = float(np.clip(pw + rng.normal(0, 0.4), 5, 12))
        v['ph'] = float(np.clip(phm + rng.normal(0, 1.5), 10, 18))
        v['ph'] = min(v['ph'], v['bh'] - 3)
        v['alpha'] = float(np.clip(alpha + rng.normal(0, 3), 0, 28))
        ap = float(rng.uniform(10, 22))
        if lv.startswith('T'):
            ap = float(rng.uniform(10, 17))
            cwid = ap * float(rng.uniform(1.0, 1.2))
        else:
            cwid = ap * float(rng.uniform(1.15, 1.6))
        v['canal_ap'] = ap
        v['canal_w'] = float(np.clip(cwid, 12, 28))
        lum_low = lv in ('L4', 'L5', 'S1')
        v['canal_shape'] = 'trefoil' if rng.random() < (0.6 if lum_low else 0.25) * (1.3 if shape_pref > 0.5 else 0.7) else 'round'
        v['laminectomy'] = lv in lam_levels
        v['spinous_len'] = float(rng.uniform(22, 32)) if not lv.startswith('T') else float(rng.uniform(30, 40))
        v['spinous_w'] = float(rng.uniform(4.5, 8))
        v['tp_len'] = float(rng.uniform(14, 26)) if not lv.startswith('T') else float(rng.uniform(14, 18))
        if lv == 'L3':
            v['tp_len'] += 5
        v['ilium'] = True
        v['sag_deg'] = float(sag * lordo + rng.normal(0, 2))
        v['cor_deg'] = float(scol * math.sin(math.pi * (k + 0.5) / nren) * ph_sign + rng.normal(0, 0.7))
        v['axrot_deg'] = float(0.5 * v['cor_deg'] + rng.normal(0, 1.0))
        v['cortex_hu'] = float(rng.uniform(800, 1500)) * (0.8 if osteo else 1.0)
        v['cancellous_hu'] = float(rng.uniform(60, 120)) if osteo else float(rng.uniform(130, 300))
        v['cortex_mm'] = float(rng.uniform(0.7, 1.3)) * (0.8 if osteo else 1.0)
        v['disc_hu'] = float(rng.uniform(65, 100))
        v['vacuum_disc'] = bool(rng.random() < 0.15)
        verts.append(v)
    for k in range(nren):
        verts[k]['disc_above'] = verts[k + 1]['disc_below'] if k + 1 < nren else 8.0
    if verts[0]['disc_below'] == 0:
        verts[0]['disc_below'] = 2.0
    P['vertebrae'] = verts
    # ---- construct
    unilateral = bool(rng.random() < 0.1)
    uni_side = 'left' if rng.random() < 0.5 else 'right'
    screws = []
    for lv in inst:
        vp = verts[ren.index(lv)]
        for side in ('left', 'right'):
            if unilateral and side != uni_side:
                continue
            pw = vp['pw_left'] if side == 'left' else vp['pw_right']
            tgt = _choice(rng, ['medial', 'lateral', 'inferior', 'none'], [0.40, 0.15, 0.10, 0.35])
            if tgt == 'inferior' and lv == 'S1':   # S1 pedicle sits in the ala: no foramen below
                tgt = 'medial'
            if tgt == 'medial':
                D = float(rng.uniform(0.3, 10.0))
            elif tgt == 'lateral':
                D = float(rng.uniform(0.5, 9.0))
            elif tgt == 'inferior':
                D = float(rng.uniform(0.5, 7.0))
            else:
                D = 0.0
            dia = 0.8 * pw + rng.normal(0, 0.5)
            if rng.random() < 0.15:
                dia = rng.uniform(4.5, 7.5)
            if tgt == 'none':
                dia = min(dia, pw - 1.0)
            dia = float(np.clip(round(dia * 2) / 2, 4.5, 7.5))
            a = vp['alpha']
            if tgt == 'medial':
                conv = a + rng.uniform(0, 8)
            elif tgt == 'lateral':
                conv = a - rng.uniform(0, 8)
            else:
                conv = a + rng.normal(0, 1.5)
            conv = float(np.clip(conv, 0, 25))
            tilt = float(rng.uniform(-6, 6)) if tgt in ('none', 'medial', 'lateral') else float(rng.uniform(-15, -3))
            if tgt != 'none' and rng.random() < 0.3:
                tilt = float(rng.uniform(-15, 15)) if tgt != 'inferior' else tilt
            length = float(rng.choice([30, 35, 40, 45, 50, 55]))
            sc = {'id': lv + ('L' if side == 'left' else 'R'), 'level': lv, 'side': side,
                  'target': tgt, 'target_depth': D, 'diameter': dia, 'convergence': conv,
                  'tilt': tilt, 'length': length, 'pitch': float(rng.uniform(2.2, 3.0)),
                  'cement': False, 'halo_mm': float(rng.uniform(0.8, 2.5)) if rng.random() < 0.12 else 0.0}
            screws.append(sc)
    if osteo and rng.random() < 0.6:
        for sc in screws:
            if rng.random() < 0.6:
                sc['cement'] = True
    elif rng.random() < 0.08 and screws:
        screws[int(rng.integers(len(screws)))]['cement'] = True
    P['screws'] = screws
    P['metal'] = _choice(rng, ['titanium', 'cocr_rods'], [0.7, 0.3])
    P['crosslink'] = bool(len(inst) >= 2 and not unilateral and rng.random() < 0.4)
    cages = []
    for k in range(len(inst) - 1):
        if rng.random() < 0.3:
            cages.append({'above': inst[k + 1], 'below': inst[k],
                          'type': _choice(rng, ['tlif', 'plif'], [0.6, 0.4]),
                          'material': _choice(rng, ['peek', 'titanium'], [0.8, 0.2]),
                          'side': 1 if rng.random() < 0.5 else -1,
                          'angle': float(rng.uniform(25, 45))})
    P['cages'] = cages
    thor_in = any(l in ('T9', 'T10', 'T11', 'T12', 'L1') for l in ren)
    P['scs_lead'] = bool(thor_in and rng.random() < 0.3 and not small)
    P['scs_leads'] = int(rng.integers(1, 3))
    P['hip_prosthesis'] = bool(ren[-1] in ('S1', 'S2') and rng.random() < 0.35 and not small)
    P['hip_side'] = 'left' if rng.random() < 0.5 else 'right'
    # ---- acquisition
    if small:
        P['rows'] = P['cols'] = 160
        P['pixel_mm'] = float(np.round(rng.uniform(0.4, 0.8), 3))
        P['slice_thickness_mm'] = float(rng.choice([0.6, 0.75, 1.0, 1.25]))
    else:
        P['rows'] = P['cols'] = 512
        P['pixel_mm'] = float(np.round(rng.uniform(0.3, 0.9), 3))
        P['slice_thickness_mm'] = float(rng.choice([0.6, 0.625, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                                                   p=[.1, .1, .15, .05, .25, .1, .08, .07, .05, .05]))
    P['spacing_mm'] = P['slice_thickness_mm'] if rng.random() < 0.8 else float(np.round(P['slice_thickness_mm'] * 0.8, 3))
    P['extended_hu'] = bool(rng.random() < 0.5)
    P['noise_hu'] = float(rng.uniform(8, 30))
    P['psf_mm'] = float(rng.uniform(0.3, 0.6))
    P['streak_strength'] = float(rng.uniform(0.5, 1.6))
    P['starvation'] = float(rng.uniform(0.5, 1.5))
    P['body_ax'] = float(rng.uniform(130, 185))
    P['body_ay'] = float(rng.uniform(95, 135))
    P['subcut_mm'] = float(rng.uniform(8, 40))
    P['spine_depth_extra'] = float(rng.uniform(6, 22))
    P['muscle_fat'] = float(rng.uniform(0, 0.5))
    P['table_z_mm'] = float(rng.uniform(-900, -300))
    P['days_since_surgery'] = int(rng.integers(1, 400))
    return P


def family(seed, n, small=False):
    return [_sample(seed, i, small) for i in range(n)]


# ----------------------------------------------------------------------------- scene build
class Scene:
    def __init__(self, P):
        self.P = P
        rs = P['render_seed']
        verts = P['vertebrae']
        Rp = _rot('z', P['patient_rotation_deg']) @ _rot('x', P['patient_tilt_deg'])
        # chain vertebrae from the lowest upward (LPS: z superior)
        Rs, ts = [], []
        cur = np.array([0.0, 0.0, 0.0])
        for k, vp in enumerate(verts):
            R = _rot('z', vp['axrot_deg']) @ _rot('y', vp['cor_deg']) @ _rot('x', -vp['sag_deg'])
            # note: rot x by -sag so that + sag makes the superior endplate face anterior (-y)
            if k == 0:
                t = cur
            else:
                Rm = Rs[-1]
                up0 = Rm @ np.array([0, 0, verts[k - 1]['bh'] / 2 + vp['disc_below'] / 2])
                up1 = R @ np.array([0, 0, vp['disc_below'] / 2 + vp['bh'] / 2])
                t = ts[-1] + up0 + up1
            Rs.append(R)
            ts.append(t)
        ts = np.array(ts)
        # centre: vertebral body centres about y = spine_y, middle instrumented level at z = zc
        inst = P['instrumented_levels']
        names = [v['level'] for v in verts]
        mid = np.mean([ts[names.index(l)] for l in inst], axis=0)
        vm = verts[names.index(inst[len(inst) // 2])]
        sy = P['body_ay'] - P['subcut_mm'] - P['spine_depth_extra'] - (0.82 * vm['bd'] + vm['canal_ap'] + vm['spinous_len'])
        self.post_mid = 0.82 * vm['bd'] + vm['canal_ap'] + 0.5 * vm['spinous_len']
        self.post_half = 0.5 * vm['spinous_len'] + 0.5 * vm['canal_ap'] + 6
        ts = ts - mid + np.array([0.0, sy, P['table_z_mm']])
        self.spine_y = sy
        self.verts = []
        for k, vp in enumerate(verts):
            R = Rp @ Rs[k]
            t = Rp @ (ts[k] - np.array([0, 0, P['table_z_mm']])) + np.array([0, 0, P['table_z_mm']])
            self.verts.append(Vertebra(vp, R, t, rs + 101 * k))
        self.Rp = Rp
        self.vmap = {v.name: v for v in self.verts}
        # ---- screws
        self.screws = []
        truth_screws = []
        for sc in P['screws']:
            V = self.vmap[sc['level']]
            entry, d, L, br, dia = place_screw(V, sc)
            ew = V.to_world(entry[None])[0]
            dw_ = V.R @ d
            tip = ew + L * dw_
            main = 'none'
            if max(br.values()) > 0:
                main = max(br, key=lambda k: br[k])
            truth_screws.append({'id': sc['id'], 'level': sc['level'], 'side': sc['side'],
                                 'entry_lps_mm': [round(float(x), 3) for x in ew],
                                 'tip_lps_mm': [round(float(x), 3) for x in tip],
                                 'diameter_mm': dia,
                                 'breach_direction': main,
                                 'breach_depth_mm': br[main] if main != 'none' else 0.0,
                                 'breach_depths_mm': br,
                                 'at_laminectomy_level': sc['level'] in P['laminectomy_levels']})
            self.screws.append({'sc': sc, 'entry': ew, 'd': dw_, 'L': L, 'R': dia / 2,
                                'V': V, 'entry_local': entry, 'd_local': d})
        self.truth = {'slice_thickness_mm': P['slice_thickness_mm'], 'pixel_mm': P['pixel_mm'],
                      'laminectomy_levels': list(P['laminectomy_levels']), 'screws': truth_screws}
        self._build_hardware()

    # ---------------------------------------------------------------- hardware primitives
    def _build_hardware(self):
        P = self.P
        rods = {}
        dense = P['metal'] == 'cocr_rods'
        self.caps = []   # capsules: (a, b, radius, density, hu)
        self.tulips = []
        for s in self.screws:
            head = s['entry'] - 9.0 * s['d']
            s['head'] = head
            rods.setdefault(s['sc']['side'], []).append(head)
        self.rod_polys = []
        for side, pts in rods.items():
            if len(pts) < 2:
                continue
            pts = sorted(pts, key=lambda p: p[2])
            pts = np.array(pts)
            # smooth polyline (Catmull-Rom) with end extensions
            ext0 = pts[0] - 7.0 * (pts[1] - pts[0]) / np.linalg.norm(pts[1] - pts[0])
            ext1 = pts[-1] + 7.0 * (pts[-1] - pts[-2]) / np.linalg.norm(pts[-1] - pts[-2])
            ctrl = np.vstack([ext0, pts, ext1])
            poly = [ctrl[0]]
            for i in range(len(ctrl) - 1):
                p0 = ctrl[max(i - 1, 0)]
                p1, p2 = ctrl[i], ctrl[i + 1]
                p3 = ctrl[min(i + 2, len(ctrl) - 1)]
                for tt in np.linspace(0, 1, 7)[1:]:
                    t2, t3 = tt * tt, tt * tt * tt
                    q = 0.5 * ((2 * p1) + (-p0 + p2) * tt + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                               + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
                    poly.append(q)
            poly = np.array(poly)
            rr = 2.75
            for i in range(len(poly) - 1):
                self.caps.append((poly[i], poly[i + 1], rr, 2.2 if dense else 1.0, 'rod'))
            self.rod_polys.append((side, poly))
        if P['crosslink'] and len(self.rod_polys) == 2:
            zs = [s['head'][2] for s in self.screws]
            zm = 0.5 * (min(zs) + max(zs))
            ends = []
            for side, poly in self.rod_polys:
                i = int(np.argmin(np.abs(poly[:, 2] - zm)))
                ends.append(poly[i])
            a, b = ends
            mid = 0.5 * (a + b) + self.Rp @ np.array([0, 7.0, 0])
            self.caps.append((a, mid, 2.3, 1.0, 'xlink'))
            self.caps.append((mid, b, 2.3, 1.0, 'xlink'))
            self.caps.append((a, a + 1e-3, 4.5, 1.0, 'xlink'))
            self.caps.append((b, b + 1e-3, 4.5, 1.0, 'xlink'))
        # SCS lead(s): dorsal epidural, thoracic levels
        self.leads = []
        if P['scs_lead']:
            for li in range(P['scs_leads']):
                pts = []
                for V in self.verts[::-1]:
                    if V.name not in ('T9', 'T10', 'T11', 'T12', 'L1'):
                        continue
                    uo = (li - (P['scs_leads'] - 1) / 2) * 3.2
                    for w in (V.bh / 2 + 3, 0.0, -V.bh / 2 - 2):
                        pts.append(V.to_world(np.array([[uo, V.cpost - 2.2, w]]))[0])
                if len(pts) >= 2:
                    self.leads.append(np.array(pts))
        for poly in self.leads:
            n = len(poly)
            for i in range(n - 1):
                # contacts on the caudal third: platinum
                tip_part = i >= n - 3
                self.caps.append((poly[i], poly[i + 1], 0.65, 3.0 if tip_part else 0.25, 'lead'))
        # hip prosthesis
        self.hip = None
        if P['hip_prosthesis']:
            V = self.verts[-1]
            sd = 1 if P['hip_side'] == 'left' else -1
            c = V.to_world(np.array([[0.0, 0.0, -V.bh / 2]]))[0] + np.array([sd * 95.0, -25.0, -20.0])
            self.hip = c
        # cages
        self.cage_objs = []
        for cg in P['cages']:
            Vb = self.vmap[cg['below']]
            wmid = Vb.bh / 2 + Vb.p['disc_above'] / 2
            hgt = Vb.p['disc_above']
            boxes = []
            if cg['type'] == 'tlif':
                a = math.radians(cg['angle']) * cg['side']
                boxes.append((np.array([cg['side'] * 3.0, -2.0, wmid]), a, 14.0, 5.0, hgt / 2))
            else:
                for sd in (1, -1):
                    boxes.append((np.array([sd * 9.0, -1.0, wmid]), math.radians(4) * sd, 12.0, 5.0, hgt / 2))
            self.cage_objs.append((Vb, boxes, cg['material']))

    # ---------------------------------------------------------------- geometry extent
    def z_range(self):
        inst = self.P['instrumented_levels']
        Vs = [self.vmap[l] for l in inst]
        lo = min(V.to_world(np.array([[0, 0, -V.bh / 2]]))[0][2] for V in Vs)
        hi = max(V.to_world(np.array([[0, 0, V.bh / 2]]))[0][2] for V in Vs)
        Vlo, Vhi = Vs[0], Vs[-1]
        lo -= Vlo.p['disc_below'] + 0.35 * Vlo.bh
        hi += Vhi.p['disc_above'] + 0.35 * Vhi.bh
        for s in self.screws:
            lo = min(lo, s['entry'][2] - 6, (s['entry'] + s['L'] * s['d'])[2] - 6)
            hi = max(hi, s['entry'][2] + 6, (s['entry'] + s['L'] * s['d'])[2] + 6)
        if self.P['small']:
            c = 0.5 * (lo + hi)
            half = min(0.5 * (hi - lo), 0.5 * 59 * self.P['spacing_mm'])
            lo, hi = c - half, c + half
        return lo, hi


# ----------------------------------------------------------------------------- projector (FBP)
_PROJ = {}


def _projector(G, A):
    key = (G, A)
    if key in _PROJ:
        return _PROJ[key]
    nb = int(math.ceil(G * math.sqrt(2))) + 4
    c = (np.arange(G) - (G - 1) / 2).astype(np.float32)
    Y, X = np.meshgrid(c, c, indexing='ij')
    X, Y = X.ravel(), Y.ravel()
    th = np.linspace(0, np.pi, A, endpoint=False)
    cs = np.cos(th).astype(np.float32)
    sn = np.sin(th).astype(np.float32)
    tb = X[:, None] * cs[None, :] + Y[:, None] * sn[None, :] + (nb - 1) / 2
    i0 = np.floor(tb).astype(np.int32)
    wt = tb - i0
    base = (np.arange(A, dtype=np.int32) * nb)[None, :]
    ind = np.empty((G * G, A, 2), np.int32)
    ind[:, :, 0] = base + i0
    ind[:, :, 1] = base + i0 + 1
    dat = np.empty((G * G, A, 2), np.float32)
    dat[:, :, 0] = 1 - wt
    dat[:, :, 1] = wt
    del tb, i0, wt
    indptr = np.arange(0, G * G * 2 * A + 1, 2 * A, dtype=np.int64)
    B = sparse.csr_matrix((dat.ravel(), ind.ravel(), indptr), shape=(G * G, A * nb))
    # ramp filter with Hann window
    npad = 1 << int(math.ceil(math.log2(2 * nb)))
    f = np.fft.rfftfreq(npad)
    H = (np.abs(f) * (0.5 + 0.5 * np.cos(np.pi * f / 0.5))).astype(np.float32)
    _PROJ[key] = (B, nb, th, npad, H)
    return _PROJ[key]


def _fbp(B, sino, nb, A, npad, H):
    """sino: (A, nb, K) in value*pixel units -> images (G*G, K)."""
    Fs = np.fft.rfft(sino, n=npad, axis=1)
    q = np.fft.irfft(Fs * H[None, :, None], n=npad, axis=1)[:, :nb, :]
    q = q.reshape(A * nb, -1).astype(np.float32)
    return (B @ q) * (np.pi / A)


# ----------------------------------------------------------------------------- rendering
def _capsule_dist(X, Y, Z, a, b):
    ab = b - a
    L2 = float(ab @ ab) + 1e-12
    t = np.clip(((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / L2, 0, 1)
    return np.sqrt((X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2)


class Renderer:
    def __init__(self, scene):
        self.S = scene
        P = scene.P
        self.P = P
        self.rows = P['rows']
        self.px = P['pixel_mm']
        fov = self.rows * self.px
        rng = np.random.default_rng(P['render_seed'] + 7)
        self.rng = rng
        inst = [scene.vmap[l] for l in P['instrumented_levels']]
        cx = float(np.mean([V.t[0] for V in inst]))
        cy = float(np.mean([V.to_world(np.array([[0, V.vc, 0]]))[0][1] for V in inst]))
        if P['small']:
            xc, yc = cx, cy + 5
        else:
            f = float(np.clip((fov - 170) / 200, 0, 1))
            xc = cx * (1 - 0.5 * f)
            yc = (cy + 10) * (1 - f) + (0.3 * cy) * f
        self.x0 = xc - (self.rows - 1) / 2 * self.px
        self.y0 = yc - (self.rows - 1) / 2 * self.px
        xs = self.x0 + np.arange(self.rows) * self.px
        ys = self.y0 + np.arange(self.rows) * self.px
        self.X, self.Y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))   # [row, col]
        # vertebra z-centres for level coordinate
        zc = np.array([V.t[2] for V in scene.verts])
        self.lev_z = zc
        self.lev_idx = np.array([LEVELS.index(V.name) for V in scene.verts], float)
        self.lev_x = np.array([V.t[0] for V in scene.verts])
        self.lev_y = np.array([V.t[1] for V in scene.verts])
        # coarse bowel / fat texture (8 mm), z over study
        zlo, zhi = scene.z_range()
        self.tz0 = zlo - 20
        nz = int((zhi - zlo + 40) / 8) + 2
        self.btex = ndimage.gaussian_filter(rng.standard_normal((nz, 70, 70)), (0.8, 1.0, 1.0))
        self.btex /= self.btex.std()
        self.ftex = ndimage.gaussian_filter(rng.standard_normal((nz, 140, 140)), (0.6, 0.8, 0.8))
        self.ftex /= self.ftex.std()
        # materials
        ext = P['extended_hu']
        self.hu_ti = float(rng.uniform(7000, 12000)) if ext else 9000.0
        self.hu_cocr = float(rng.uniform(15000, 24000))
        self.hu_pt = 26000.0
        self.hu_cement = float(rng.uniform(1700, 2600))
        self.muscle_hu = float(rng.uniform(40, 58))
        self.fat_hu = float(rng.uniform(-115, -85))
        self.csf_hu = float(rng.uniform(2, 15))
        self.postop_hu = float(rng.uniform(15, 45))
        self.bg_cache = {}

    # ---------------------------------------------------------------- level coordinate
    def lev(self, z):
        o = np.argsort(self.lev_z)
        return float(np.interp(z, self.lev_z[o], self.lev_idx[o], left=self.lev_idx[o][0] - (self.lev_z[o][0] - z) / 33,
                               right=self.lev_idx[o][-1] - (z - self.lev_z[o][-1]) / 33))

    def spine_xy(self, z):
        o = np.argsort(self.lev_z)
        return (float(np.interp(z, self.lev_z[o], self.lev_x[o])),
                float(np.interp(z, self.lev_z[o], self.lev_y[o])))

    def _tex2(self, vol, z, X, Y, res, half):
        k = (z - self.tz0) / 8.0
        k = float(np.clip(k, 0, vol.shape[0] - 1.001))
        i = int(k)
        f = k - i
        sl = (vol[i] * (1 - f) + vol[i + 1] * f).astype(np.float32)
        return _bilinear(sl, (Y + half) / res, (X + half) / res)

    # ---------------------------------------------------------------- background soft tissue
    def background(self, z):
        key = round(z / 1.0)
        if key in self.bg_cache:
            return self.bg_cache[key]
        P = self.P
        X, Y = self.X, self.Y
        a = math.radians(P['patient_rotation_deg'])
        ca, sa = math.cos(a), math.sin(a)
        Xr = ca * X + sa * Y
        Yr = -sa * X + ca * Y
        sx, sy = self.spine_xy(z)
        sxr, syr = ca * sx + sa * sy, -sa * sx + ca * sy
        lv = self.lev(z)
        img = np.full(X.shape, -1000.0, np.float32)
        # table (not rotated)
        ty = P['body_ay'] + 8.0
        tr = np.hypot(X / 1.0, (Y - ty - 260) / 1.0)
        img[(tr > 258) & (tr < 264) & (np.abs(X) < 230)] = 150.0
        img[(tr >= 264) & (tr < 280) & (np.abs(X) < 225)] = -900.0
        ax, ay = P['body_ax'], P['body_ay']
        # flatten the back
        yb = np.minimum(Yr, ay * 0.92 + 0.08 * Yr)
        e = (Xr / ax) ** 2 + (yb / ay) ** 2
        body = e <= 1
        sc = P['subcut_mm']
        e2 = (Xr / (ax - sc)) ** 2 + (yb / (ay - sc * 0.8)) ** 2
        inner = e2 <= 1
        ft = self._tex2(self.ftex, z, X, Y, 4.0, 280.0)
        img[body] = self.fat_hu + 8 * ft[body]
        # skin
        img[body & (e > (1 - 2.5 / ax) ** 2)] = 40.0
        # deep compartment: abdominal wall muscle ring + viscera
        img[inner] = self.muscle_hu
        e3 = (Xr / (ax - sc - 12)) ** 2 + (yb / (ay - sc * 0.8 - 10)) ** 2
        visc = e3 <= 1
        bt = self._tex2(self.btex, z, X, Y, 8.0, 280.0)
        vis = np.where(bt > 1.3, -950.0, np.where(bt < -0.6, -95.0, 32.0 + 8 * bt)).astype(np.float32)
        # retroperitoneal fat around the spine
        rp = ((Xr - sxr) / 75) ** 2 + ((Yr - syr - 5) / 45) ** 2 <= 1
        vis = np.where(rp, self.fat_hu + 10 * ft, vis)
        img[visc] = vis[visc]
        dx, dy = Xr - sxr, Yr - syr
        # lungs (posterior recesses) above ~T12/L1
        lf = float(np.clip((self.LEVI('L1') - lv) / 2.0, 0, 1))
        if lf > 0:
            for sd in (1, -1):
                m = ((dx - sd * 62) / (40 * lf + 5)) ** 2 + ((dy - 20) / (55 * lf + 5)) ** 2 <= 1
                img[m & visc] = -860.0
        # liver (right = -x), spleen (left)
        if lv < self.LEVI('L2') + 0.3:
            m = ((dx + 75) / 65) ** 2 + ((dy + 35) / 55) ** 2 <= 1
            img[m & visc & (img > -700)] = 58.0
        if lv < self.LEVI('L1'):
            m = ((dx - 85) / 35) ** 2 + ((dy - 5) / 40) ** 2 <= 1
            img[m & visc & (img > -700)] = 48.0
        # kidneys
        if self.LEVI('T12') - 0.3 < lv < self.LEVI('L3') + 0.3:
            for sd in (1, -1):
                ang = math.radians(30 * sd)
                u = (dx - sd * 62) * math.cos(ang) + (dy - 5) * math.sin(ang)
                v = -(dx - sd * 62) * math.sin(ang) + (dy - 5) * math.cos(ang)
                m = (u / 22) ** 2 + (v / 35) ** 2 <= 1
                img[m] = 32.0
                img[(u / 8) ** 2 + (v / 14) ** 2 <= 1] = -60.0
        # aorta / IVC (anterior to spine), iliac vessels below L4
        if lv < self.LEVI('L4') + 0.4:
            img[((dx - 12) ** 2 + (dy + 38) ** 2) <= 11 ** 2] = 42.0
            img[((dx + 18) / 13) ** 2 + ((dy + 34) / 9) ** 2 <= 1] = 38.0
        else:
            for sd in (1, -1):
                img[((dx - sd * 28) ** 2 + (dy + 35) ** 2) <= 7 ** 2] = 42.0
        # muscles: psoas (lumbar), paraspinal, quadratus lumborum
        mf = P['muscle_fat']
        psz = float(np.clip(lv - self.LEVI('T12'), 0, 6))
        for sd in (1, -1):
            if psz > 0:
                m = ((dx - sd * (21 + 4.2 * psz)) / (5 + 2.6 * psz)) ** 2 + ((dy + 1) / (6 + 2.2 * psz)) ** 2 <= 1
                img[m] = self.muscle_hu - 5
            m = ((dx - sd * 30) / 25) ** 2 + ((dy - self.S.post_mid) / self.S.post_half) ** 2 <= 1
            mm = m & body
            img[mm] = (self.muscle_hu + np.where(ft[mm] > 1.2 - 2 * mf, self.fat_hu - self.muscle_hu, 0)).astype(np.float32)
            if self.LEVI('L1') <= lv <= self.LEVI('L5'):
                m = ((dx - sd * 62) / 16) ** 2 + ((dy - 18) / 9) ** 2 <= 1
                img[m] = self.muscle_hu
        self.bg_cache[key] = img
        if len(self.bg_cache) > 8:
            self.bg_cache.pop(next(iter(self.bg_cache)))
        return img

    @staticmethod
    def LEVI(name):
        return float(LEVELS.index(name))

    # ---------------------------------------------------------------- spine
    def _window(self, lo, hi, margin=2.0):
        c0 = int(max(0, math.floor((lo[0] - margin - self.x0) / self.px)))
        c1 = int(min(self.rows, math.ceil((hi[0] + margin - self.x0) / self.px) + 1))
        r0 = int(max(0, math.floor((lo[1] - margin - self.y0) / self.px)))
        r1 = int(min(self.rows, math.ceil((hi[1] + margin - self.y0) / self.px) + 1))
        if c1 <= c0 or r1 <= r0:
            return None
        return r0, r1, c0, c1

    def spine_layer(self, img, z):
        """Composite canal contents, discs and bone at height z into img (in place)."""
        S = self.S
        px = self.px
        act = []
        for k, V in enumerate(S.verts):
            lo, hi = V.wb
            if lo[2] - 1 <= z <= hi[2] + 1:
                act.append(k)
        if not act:
            return
        lo = np.min([S.verts[k].wb[0] for k in act], axis=0)
        hi = np.max([S.verts[k].wb[1] for k in act], axis=0)
        win = self._window(lo, hi)
        if win is None:
            return
        r0, r1, c0, c1 = win
        X = self.X[r0:r1, c0:c1]
        Y = self.Y[r0:r1, c0:c1]
        Xf, Yf = X.ravel(), Y.ravel()
        sub = img[r0:r1, c0:c1].ravel().copy()
        bone = np.full(X.size, 1e3, np.float32)
        bhu = np.zeros(X.size, np.float32)
        for k in act:
            V = S.verts[k]
            u_, v_, w_ = V.local_xyz(Xf, Yf, z)
            un = V.union(u_, v_)
            sel = un < px + 1.5
            if V.p['laminectomy']:
                sel |= (np.abs(u_) < V.cw_mid + 5) & (v_ > V.vc) & (v_ < V.cpost + 28)
            ix = np.nonzero(sel & (w_ > V.wlo) & (w_ < V.whi))[0]
            if len(ix) == 0:
                continue
            u, v, w = u_[ix], v_[ix], w_[ix]
            ss = sub[ix]
            cs = V.canal(u, v)
            own = (w >= V.w_canal[0]) & (w < V.w_canal[1])
            # ---- canal contents
            inc = own & (cs < 0.5 * px)
            if inc.any():
                fc = np.clip(0.5 - cs[inc] / px, 0, 1)
                uu, vv, ww = u[inc], v[inc], w[inc]
                val = np.full(uu.shape, self.fat_hu, np.float32)
                vsc = V.vc + 0.06 * V.cap
                sa = min(V.cw_mid * 0.78, 9.5)
                sb = V.cap / 2 * 0.72
                sac = (uu / sa) ** 2 + ((vv - vsc) / sb) ** 2 <= 1
                val[sac] = self.csf_hu
                li = LEVELS.index(V.name)
                if li <= LEVELS.index('L1'):
                    kk = 1.0 if li < LEVELS.index('L1') else float(np.clip(0.5 + ww.mean() / V.bh, 0.3, 1))
                    cord = (uu / (4.6 * kk)) ** 2 + ((vv - vsc + 0.3) / (3.6 * kk)) ** 2 <= 1
                    val[cord] = 36.0
                else:
                    for ru, rv in ((-1.6, .45), (1.6, .45), (-3.6, .3), (3.6, .3), (-5.4, .05), (5.4, .05),
                                   (0, .62), (-2.4, -.1), (2.4, -.1)):
                        m = (uu - ru * sa / 7) ** 2 + (vv - vsc - rv * sb) ** 2 <= 0.8 ** 2
                        val[m & sac] = 32.0
                if not V.p['laminectomy']:
                    fl = (cs[inc] > -2.6) & (vv > V.vc + 0.05 * V.cap) & ~sac
                    val[fl] = 58.0
                ss[inc] = ss[inc] * (1 - fc) + val * fc
            # ---- laminectomy bed
            if V.p['laminectomy']:
                m = own & (v > V.vc + 0.3 * V.cap) & (v < V.cpost + 28) & (np.abs(u) < V.cw_mid + 5) & (cs >= 0)
                if m.any():
                    tx = V.texture(u[m], v[m], w[m])
                    ss[m] = np.where(tx > 2.2, -800.0, self.postop_hu + 6 * tx)
            # ---- disc above (between V and the next vertebra)
            if k + 1 < len(S.verts):
                Vu = S.verts[k + 1]
                m = (w > V.bh / 2 - 1.0) & (w < V.bh / 2 + V.p['disc_above'] + 2.0)
                if m.any():
                    idx = np.where(m)[0]
                    lu, lv, lw = Vu.local_xyz(Xf[ix[idx]], Yf[ix[idx]], z)
                    m2 = lw < -Vu.bh / 2 + 1.0
                    idx = idx[m2]
                    if len(idx):
                        sb1 = V.cdict['body'][1](u[idx], v[idx])
                        sb2 = Vu.cdict['body'][1](lu[m2], lv[m2])
                        sd = np.maximum(sb1, sb2) - 1.0
                        fd = np.clip(0.5 - sd / px, 0, 1)
                        rr = (u[idx] / V.bw) ** 2 + ((v[idx] + 1) / V.bd) ** 2
                        dh = V.p['disc_hu'] if V.p['disc_above'] > 3 else 260.0
                        val = np.where(rr < 0.35, dh - 12, dh + 10).astype(np.float32)
                        if V.p['vacuum_disc'] and V.p['disc_above'] > 3:
                            vac = ((u[idx] / (0.35 * V.bw)) ** 2 + ((v[idx] + 0.2 * V.bd) / (0.15 * V.bd)) ** 2 <= 1)
                            val[vac] = -700.0
                        ss[idx] = ss[idx] * (1 - fd) + val * fd
            sub[ix] = ss
            # ---- bone
            b = V.bone_sdf(u, v, w, cs)
            bsub = bone[ix]
            better = b < bsub
            if better.any():
                jb = ix[better]
                bone[jb] = b[better]
                depth = -b[better]
                ct = V.p['cortex_mm']
                cw = np.clip((ct - depth) / 0.5 + 0.5, 0, 1)
                tex = V.texture(u[better], v[better], w[better])
                canc = V.p['cancellous_hu'] + 45 * tex
                bhu[jb] = canc * (1 - cw) + (V.p['cortex_hu'] + 60 * tex) * cw
        fb = np.clip(0.5 - bone / px, 0, 1)
        sub = sub * (1 - fb) + bhu * fb
        img[r0:r1, c0:c1] = sub.reshape(X.shape)

    # ---------------------------------------------------------------- hardware
    def hardware_layer(self, img, dens, z):
        S = self.S
        px = self.px
        P = self.P
        hu_scr = self.hu_ti
        hu_rod = self.hu_cocr if P['metal'] == 'cocr_rods' else self.hu_ti

        def win_for(lo, hi):
            if z < lo[2] - 1 or z > hi[2] + 1:
                return None
            return self._window(lo, hi, 3.0)

        def put(win, f, hu, dd):
            r0, r1, c0, c1 = win
            sl = img[r0:r1, c0:c1]
            img[r0:r1, c0:c1] = sl * (1 - f) + hu * f
            dens[r0:r1, c0:c1] = np.maximum(dens[r0:r1, c0:c1], f * dd)

        for s in S.screws:
            e, d, L, R = s['entry'], s['d'], s['L'], s['R']
            pts = np.array([e - 18 * d, e + L * d])
            lo, hi = pts.min(0) - 8, pts.max(0) + 8
            win = win_for(lo, hi)
            if win is None:
                continue
            r0, r1, c0, c1 = win
            X = self.X[r0:r1, c0:c1]
            Y = self.Y[r0:r1, c0:c1]
            qx, qy, qz = X - e[0], Y - e[1], z - e[2]
            sx = qx * d[0] + qy * d[1] + qz * d[2]
            rx, ry, rz = qx - sx * d[0], qy - sx * d[1], qz - sx * d[2]
            r = np.sqrt(rx * rx + ry * ry + rz * rz)
            # cement
            if s['sc']['cement']:
                c = e + (L - 11) * d
                cx_, cy_, cz_ = X - c[0], Y - c[1], z - c[2]
                sa = cx_ * d[0] + cy_ * d[1] + cz_ * d[2]
                rr = np.sqrt(np.maximum(cx_ ** 2 + cy_ ** 2 + cz_ ** 2 - sa ** 2, 0))
                e2 = (sa / 10.0) ** 2 + (rr / 6.5) ** 2
                V = s['V']
                Pw = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], 1)
                Lc = V.to_local(Pw)
                tx = V.texture(Lc[:, 0], Lc[:, 1], Lc[:, 2]).reshape(X.shape)
                inb = (V.comp_sdf('body', Lc[:, 0], Lc[:, 1], Lc[:, 2])[0] < -0.5).reshape(X.shape)
                m = (e2 < 1 + 0.35 * tx) & inb
                if m.any():
                    f = m.astype(np.float32)
                    put(win, f, self.hu_cement + 150 * tx, 0.25)
            if s['sc'].get('halo_mm', 0) > 0 and not s['sc']['cement']:
                # loosening halo: lucent rim around the threaded part inside bone
                hr = R + s['sc']['halo_mm'] * (0.6 + 0.4 * np.clip(sx / L, 0, 1))
                fh = np.clip(0.5 - (r - hr) / px, 0, 1) * ((sx > 2) & (sx < L + 1.5))
                if fh.max() > 0:
                    r0, r1, c0, c1 = win
                    sl = img[r0:r1, c0:c1]
                    img[r0:r1, c0:c1] = np.where(sl > 150, sl * (1 - fh) + 20.0 * fh, sl)
            e1, e2v = _perp_basis(d)
            phi = np.arctan2(rx * e2v[0] + ry * e2v[1] + rz * e2v[2], rx * e1[0] + ry * e1[1] + rz * e1[2])
            pitch = s['sc']['pitch']
            fr = np.mod(sx / pitch - phi / (2 * np.pi), 1.0)
            tri = np.clip(1.7 * (1 - 2 * np.abs(fr - 0.5)), 0, 1)
            Rc = 0.72 * R
            rout = Rc + (R - Rc) * tri
            env = R * np.clip(0.35 + 0.65 * (L - sx) / 4.0, 0.35, 1.0)
            rout = np.minimum(rout, env)
            f = np.clip(0.5 - (r - rout) / px, 0, 1) * np.clip(0.5 + np.minimum(sx, L - sx) / px, 0, 1)
            # neck
            fn = np.clip(0.5 - (r - 0.8 * Rc) / px, 0, 1) * ((sx > -4) & (sx <= 0))
            # tulip (polyaxial head): base, U-ring arms, set screw
            fb = np.clip(0.5 - (r - 5.8) / px, 0, 1) * ((sx > -6.5) & (sx <= -3.5))
            ring = np.clip(0.5 - (r - 6.0) / px, 0, 1) * np.clip(0.5 + (r - 3.2) / px, 0, 1) * ((sx > -16.5) & (sx <= -6.5))
            fs = np.clip(0.5 - (r - 3.2) / px, 0, 1) * ((sx > -16.5) & (sx <= -12.5))
            ff = np.maximum.reduce([f, fn, fb, ring, fs])
            if ff.max() > 0:
                put(win, ff, hu_scr, 1.0)
        # capsules: rods, cross-links, leads
        for a, b, rad, dd, kind in S.caps:
            lo = np.minimum(a, b) - rad - 1
            hi = np.maximum(a, b) + rad + 1
            win = win_for(lo, hi)
            if win is None:
                continue
            r0, r1, c0, c1 = win
            X = self.X[r0:r1, c0:c1]
            Y = self.Y[r0:r1, c0:c1]
            dist = _capsule_dist(X, Y, z, a, b)
            f = np.clip(0.5 - (dist - rad) / px, 0, 1)
            if f.max() <= 0:
                continue
            if kind == 'lead':
                hu = self.hu_pt if dd > 1 else 2200.0
            elif kind == 'rod':
                hu = hu_rod
            else:
                hu = self.hu_ti
            put(win, f, hu, dd)
        # cages
        for Vb, boxes, mat in S.cage_objs:
            for (c, ang, hl, hw, hh) in boxes:
                cw = Vb.to_world(c[None])[0]
                rad = math.hypot(hl, hw) + hh + 2
                win = win_for(cw - rad, cw + rad)
                if win is None:
                    continue
                r0, r1, c0, c1 = win
                X = self.X[r0:r1, c0:c1]
                Y = self.Y[r0:r1, c0:c1]
                Pw = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], 1)
                Lc = Vb.to_local(Pw) - c
                ca, sa = math.cos(ang), math.sin(ang)
                bu = ca * Lc[:, 0] + sa * Lc[:, 1]
                bv = -sa * Lc[:, 0] + ca * Lc[:, 1]
                # banana-ish: long axis along bv
                q = np.maximum.reduce([np.abs(bu) - hw, np.abs(bv) - hl, np.abs(Lc[:, 2]) - hh]).reshape(X.shape)
                fo = np.clip(0.5 - q / px, 0, 1)
                if fo.max() <= 0:
                    continue
                if mat == 'peek':
                    inner = np.maximum.reduce([np.abs(bu) - hw + 1.8, np.abs(bv) - hl + 1.8, np.abs(Lc[:, 2]) - hh - 1]).reshape(X.shape)
                    tx = Vb.texture(Lc[:, 0], Lc[:, 1], Lc[:, 2]).reshape(X.shape)
                    val = np.where(inner < 0, 420 + 90 * tx, 310.0)
                    r0_, r1_, c0_, c1_ = win
                    sl = img[r0:r1, c0:c1]
                    img[r0:r1, c0:c1] = sl * (1 - fo) + val * fo
                    # tantalum markers at both ends
                    for endv in (-hl + 1.5, hl - 1.5):
                        dm = np.sqrt((bu) ** 2 + (bv - endv) ** 2).reshape(X.shape)
                        fm = np.clip(0.5 - (dm - 0.5) / px, 0, 1) * (np.abs(Lc[:, 2]).reshape(X.shape) < hh - 0.5)
                        if fm.max() > 0:
                            put(win, fm, self.hu_pt * 0.8, 3.0)
                else:
                    put(win, fo * 0.7, self.hu_ti * 0.6, 0.6)
        # hip prosthesis
        if S.hip is not None:
            c = S.hip
            win = win_for(c - 60, c + 60)
            if win is not None:
                r0, r1, c0, c1 = win
                X = self.X[r0:r1, c0:c1]
                Y = self.Y[r0:r1, c0:c1]
                dist = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (z - c[2]) ** 2)
                sd = 1 if P['hip_side'] == 'left' else -1
                # acetabular bone ring
                fbn = np.clip(0.5 - (dist - 36) / px, 0, 1) * np.clip(0.5 + (dist - 27) / px, 0, 1)
                fbn *= ((X - c[0]) * sd < 8)
                sl = img[r0:r1, c0:c1]
                img[r0:r1, c0:c1] = sl * (1 - fbn) + 700.0 * fbn
                fh = np.clip(0.5 - (dist - 22) / px, 0, 1)
                fc = np.clip(0.5 - (dist - 27) / px, 0, 1) * np.clip(0.5 + (dist - 23.5) / px, 0, 1) * ((X - c[0]) * sd < 4)
                neck_b = c + np.array([sd * 30.0, 0.0, -38.0])
                dn = _capsule_dist(X, Y, z, c, neck_b)
                fnk = np.clip(0.5 - (dn - 7.5) / px, 0, 1)
                put(win, np.maximum(fh, fnk), self.hu_cocr, 2.2)
                put(win, fc, self.hu_ti, 1.0)

    # ---------------------------------------------------------------- metal artefacts (FBP)
    def artefacts(self, dens_list, thick):
        """dens_list: list of metal density images (rows, rows).  Returns error images (HU)."""
        P = self.P
        rows = self.rows
        G = rows // 2 if rows >= 320 else rows
        fct = rows // G
        gpx = self.px * fct
        A = 180 if G >= 200 else 120
        B, nb, th, npad, H = _projector(G, A)
        K = len(dens_list)
        out = [None] * K
        idx = [i for i in range(K) if dens_list[i].max() > 0.05]
        if not idx:
            return out
        rng = np.random.default_rng([P['render_seed'], 99, int(round(thick * 1000)), len(dens_list), int(dens_list[idx[0]].sum())])
        sinos = np.zeros((A * nb, len(idx)), np.float32)
        for j, i in enumerate(idx):
            m = dens_list[i]
            if fct > 1:
                m = m.reshape(G, fct, G, fct).mean((1, 3))
            m = m.ravel()
            nz = np.nonzero(m > 1e-3)[0]
            sinos[:, j] = B[nz].T @ m[nz]
        pm = sinos * gpx  # mm of metal-equivalent along each ray
        k_bh = 110.0 * P["streak_strength"]
        lam = 6.0 / P["starvation"]
        E = -k_bh * pm ** 2 / (1.0 + pm / 12.0)
        E += (P["noise_hu"] * 4.0) * (np.exp(np.minimum(pm / lam, 6.0)) - 1.0) * rng.standard_normal(pm.shape).astype(np.float32) * math.sqrt(1.0 / max(thick, 0.5))
        E /= gpx
        imgs = _fbp(B, E.reshape(A, nb, -1), nb, A, npad, H)
        for j, i in enumerate(idx):
            im = imgs[:, j].reshape(G, G)
            if fct > 1:
                im = ndimage.zoom(im, fct, order=1)
            out[i] = im
        return out


# ----------------------------------------------------------------------------- DICOM
def _write_dicom(path, P, hu, z, inst_no, nslices, uids, pos, ext_signed):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    CT = '1.2.840.10008.5.1.4.1.1.2'
    sop = _uid('%s/sop/%d' % (uids['key'], inst_no))
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CT
    fm.MediaStorageSOPInstanceUID = sop
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = '1.2.826.0.1.3680043.10.543.5'
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uids['study']
    ds.SeriesInstanceUID = uids['series']
    ds.FrameOfReferenceUID = uids['for']
    ds.Modality = 'CT'
    ds.Manufacturer = 'SYNTHETIC'
    ds.ManufacturerModelName = 'spine_phantom5'
    ds.BodyPartExamined = 'LSPINE'
    ds.StudyDescription = 'CT LUMBAR SPINE POST OP'
    ds.SeriesDescription = 'AXIAL BONE %.2gmm' % P['slice_thickness_mm']
    ds.ImageType = ['ORIGINAL', 'PRIMARY', 'AXIAL']
    ds.PatientID = 'PH5-%d-%04d' % (P['seed'], P['index'])
    ds.PatientName = 'PHANTOM5^S%d^I%d' % (P['seed'], P['index'])
    ds.PatientBirthDate = '19%02d0101' % (40 + P['index'] % 45)
    ds.PatientSex = 'O'
    ds.StudyDate = '2026%02d%02d' % (1 + P['index'] % 12, 1 + P['index'] % 28)
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = '101500'
    ds.SeriesTime = '101500'
    ds.AccessionNumber = 'A5%06d' % (P['index'] + 1000 * (P['seed'] % 1000))
    ds.StudyID = '1'
    ds.SeriesNumber = 2
    ds.InstanceNumber = inst_no
    ds.KVP = '120'
    ds.ConvolutionKernel = 'BONE'
    ds.PatientPosition = 'FFS'
    ds.ImagePositionPatient = [round(float(pos[0]), 4), round(float(pos[1]), 4), round(float(z), 4)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(float(z), 4)
    ds.PixelSpacing = [P['pixel_mm'], P['pixel_mm']]
    ds.SliceThickness = P['slice_thickness_mm']
    ds.SpacingBetweenSlices = P['spacing_mm']
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.BitsAllocated = 16
    ds.RescaleSlope = 1
    ds.RescaleType = 'HU'
    ds.WindowCenter = 500
    ds.WindowWidth = 2500
    if not P['extended_hu']:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = -1024
        arr = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.uint16)
    elif ext_signed:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleIntercept = 0
        arr = np.clip(np.rint(hu), -1024, 32767).astype(np.int16)
    else:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
        ds.RescaleIntercept = -1024
        arr = (np.clip(np.rint(hu), -1024, 64511) + 1024).astype(np.uint16)
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_study(params, directory):
    P = params
    os.makedirs(directory, exist_ok=True)
    for f in os.listdir(directory):   # stale slices of an earlier study in the same folder
        if f.startswith('IM') and f.endswith('.dcm'):
            os.remove(os.path.join(directory, f))
    scene = Scene(P)
    R = Renderer(scene)
    zlo, zhi = scene.z_range()
    sp = P['spacing_mm']
    T = P['slice_thickness_mm']
    n = int(math.floor((zhi - zlo) / sp)) + 1
    if P['small']:
        n = min(n, 60)
    n = min(n, 600)
    zs = zhi - np.arange(n) * sp          # IM0001 = most superior
    nsub = max(1, int(math.ceil(T / 0.9)))
    offs = (np.arange(nsub) + 0.5) / nsub * T - T / 2
    key = 'phantom5/%d/%d/%d' % (P['seed'], P['index'], int(P['small']))
    uids = {'key': key, 'study': _uid(key + '/study'), 'series': _uid(key + '/series'),
            'for': _uid(key + '/for')}
    rngn = np.random.default_rng([P['render_seed'], 3])
    ext_signed = bool(rngn.random() < 0.5)
    sig_px = P['psf_mm'] / P['pixel_mm']
    noise_sd = P['noise_hu'] * math.sqrt(1.0 / max(T, 0.5))
    batch = 24
    for b0 in range(0, n, batch):
        imgs, dens = [], []
        for j in range(b0, min(n, b0 + batch)):
            z = zs[j]
            acc = None
            dacc = np.zeros((R.rows, R.rows), np.float32)
            bg = R.background(z)
            for o in offs:
                im = bg.copy()
                R.spine_layer(im, z + o)
                d = np.zeros((R.rows, R.rows), np.float32)
                R.hardware_layer(im, d, z + o)
                acc = im if acc is None else acc + im
                dacc += d
            im = acc / nsub
            imgs.append(ndimage.gaussian_filter(im, sig_px))
            dens.append(dacc / nsub)
        errs = R.artefacts(dens, T)
        for jj, j in enumerate(range(b0, min(n, b0 + batch))):
            im = imgs[jj]
            nz = rngn.standard_normal(im.shape).astype(np.float32)
            nz = ndimage.gaussian_filter(nz, 0.7)
            nz *= noise_sd / 0.4
            im = im + nz
            if errs[jj] is not None:
                pre = imgs[jj]
                im = im + errs[jj]
                # metal keeps a high value inside (artefacts modulate but do not erase it)
                im = np.where(dens[jj] > 0.5, np.maximum(im, 0.55 * pre), im)
            _write_dicom(os.path.join(directory, 'IM%04d.dcm' % (j + 1)), P, im, zs[j], j + 1, n, uids,
                         (R.x0, R.y0), ext_signed)
    truth = scene.truth
    with open(os.path.join(directory, 'truth.json'), 'w') as f:
        json.dump(truth, f, indent=1)
    return truth

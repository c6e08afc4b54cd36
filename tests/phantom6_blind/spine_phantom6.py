"""Blind CT phantom family 6: randomised synthetic post-operative spine CT with analytic truth.

API
---
family(seed, n, small=False) -> list[dict]     JSON-serialisable study parameters
write_study(params, directory) -> dict          writes IM0001.dcm ... + truth.json, returns truth

Coordinates: DICOM LPS mm (x = patient left, y = posterior, z = superior).
Each vertebra has a local frame (u = left, v = posterior, w = superior) with its origin at the
centre of the vertebral body; local = R^T (p - c).
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
from scipy import ndimage

LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]
INSTRUMENTABLE = LEVELS[1:10]  # T10..S1

# level: body width, body depth, body height, pedicle W range, H range, pedicle angle (deg),
#        canal AP nominal, interpedicular width nominal, disc height below (to next lower)
LEVEL_TABLE = {
    "T9": (34, 28, 21, (5, 7), (11, 14), 5, 15, 17, 5.5),
    "T10": (36, 29, 22, (5, 8), (12, 16), 5, 15, 17.5, 6),
    "T11": (38, 30, 23, (6, 9), (13, 17), 3, 15, 18.5, 7),
    "T12": (40, 31, 24, (6, 9), (13, 17), 3, 15, 19.5, 8),
    "L1": (42, 32, 25, (6, 9), (13, 17), 10, 16, 21.5, 9),
    "L2": (44, 33, 26, (6, 10), (13, 17), 12, 16, 22.5, 10),
    "L3": (46, 34, 27, (7, 11), (12, 16), 14, 16, 23.5, 10.5),
    "L4": (48, 35, 27, (8, 12), (11, 15), 17, 16, 24.5, 11),
    "L5": (50, 36, 26, (9, 12), (10, 14), 25, 17, 26, 10),
    "S1": (52, 36, 27, (10, 12), (12, 18), 25, 15, 28, 0),
    "S2": (44, 30, 22, (8, 11), (10, 14), 20, 12, 24, 0),
}

GR_BOUNDS = (2.0, 4.0, 6.0)
BREACH_DIRS = ("medial", "lateral", "inferior", "superior")


# ----------------------------------------------------------------------------------------------
# small geometry helpers
# ----------------------------------------------------------------------------------------------

def sd_ellipse(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse (exact zero set)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = k0 * (k0 - 1.0) / k1
    return np.where(k1 > 1e-9, d, -min(a, b))


def ellipse_nearest(px, py, a, b, iters=5):
    """Exact (iterative) nearest point on ellipse x^2/a^2 + y^2/b^2 = 1 (vectorised)."""
    sx, sy = np.sign(px), np.sign(py)
    sx[sx == 0] = 1
    sy[sy == 0] = 1
    px, py = np.abs(px), np.abs(py)
    tx = np.full_like(px, 0.70710678)
    ty = np.full_like(px, 0.70710678)
    for _ in range(iters):
        x, y = a * tx, b * ty
        ex = (a * a - b * b) * tx ** 3 / a
        ey = (b * b - a * a) * ty ** 3 / b
        rx, ry = x - ex, y - ey
        qx, qy = px - ex, py - ey
        r = np.hypot(rx, ry)
        q = np.hypot(qx, qy) + 1e-12
        tx = np.clip((qx * r / q + ex) / a, 0, 1)
        ty = np.clip((qy * r / q + ey) / b, 0, 1)
        t = np.hypot(tx, ty) + 1e-12
        tx, ty = tx / t, ty / t
    return sx * a * tx, sy * b * ty


def sd_capsule2(x, y, ax, ay, bx, by, r):
    dx, dy = bx - ax, by - ay
    L2 = dx * dx + dy * dy
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / L2, 0, 1)
    return np.hypot(x - ax - t * dx, y - ay - t * dy) - r


def sd_capsule3(x, y, z, A, B, r):
    d = np.subtract(B, A)
    L2 = float(d @ d)
    t = np.clip(((x - A[0]) * d[0] + (y - A[1]) * d[1] + (z - A[2]) * d[2]) / L2, 0, 1)
    return np.sqrt((x - A[0] - t * d[0]) ** 2 + (y - A[1] - t * d[1]) ** 2 + (z - A[2] - t * d[2]) ** 2) - r


def soft(sd, w):
    return np.clip(0.5 - sd / w, 0.0, 1.0)


def uid_from(*parts):
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return "2.25." + str(int(h[:30], 16))


# ----------------------------------------------------------------------------------------------
# vertebra model (local coordinates)
# ----------------------------------------------------------------------------------------------

class Vertebra:
    def __init__(self, p):
        self.p = p
        self.name = p["level"]
        self.c = np.array(p["center"], float)
        self.R = np.array(p["R"], float)  # columns u, v, w in global
        for k in ("bw", "bd", "bh", "pw", "ph", "pl", "alpha", "cap", "cw", "tc", "c0", "wp",
                  "tl", "sp_len", "tp_len"):
            setattr(self, k, float(p[k]))
        self.a_b, self.b_b = self.bw / 2, self.bd / 2
        self.rc = 12.0
        self.lamx = p["laminectomy"]
        self.sacral = self.name.startswith("S")
        self.thoracic = self.name.startswith("T")
        self.v_canal_front = self.b_b - self.c0
        self.v_L = self.v_canal_front + self.cap          # lamina inner surface at midline
        self.pu = self.cw / 2 + self.pw / 2               # pedicle centre |u|
        self.v_pil = self.b_b + self.pl + 3.0
        self.trefoil = p["canal_shape"] == "trefoil"
        self._ped = {s: self._pedicle_frame(s) for s in (1, -1)}
        self.parts = self._build_parts()

    # -- frames ---------------------------------------------------------------------------
    def to_local(self, pts):
        return (np.asarray(pts) - self.c) @ self.R

    def to_global(self, pts):
        return np.asarray(pts) @ self.R.T + self.c

    def _pedicle_frame(self, s):
        al = math.radians(self.alpha)
        d = np.array([-s * math.sin(al), -math.cos(al), 0.0])       # anterior along axis
        m = np.array([-s * math.cos(al), math.sin(al), 0.0])        # medial
        sup = np.array([0.0, 0.0, 1.0])
        # pedicle segment: anterior end where the medial wall meets the body, posterior end pl behind
        centre_v = self.b_b + self.pl / 2
        pc = np.array([s * self.pu, centre_v, self.wp])
        # find anterior end: walk along axis from pc until the medial wall point is inside the body foot
        a_ant = 0.0
        for a in np.arange(0, 30, 0.05):
            q = pc + a * d + (self.pw / 2) * m
            if self.sd_foot(np.array([q[0]]), np.array([q[1]]))[0] <= 0:
                a_ant = a
                break
        # posterior end: where the axis reaches v = b_b + pl (junction with lamina / articular pillar)
        a_post = -(self.pl / 2) / math.cos(al)
        return dict(pc=pc, d=d, m=m, s=sup, a_ant=a_ant, a_post=a_post)

    # -- component signed distances -------------------------------------------------------
    def sd_foot(self, u, v):
        e = sd_ellipse(u, v, self.a_b, self.b_b)
        cav = self.rc - np.hypot(u, v - (self.b_b + self.rc - self.c0))
        return np.maximum(e, cav)

    def _build_parts(self):
        P = []
        bh2 = self.bh / 2
        ab, bb = self.a_b, self.b_b
        P.append(("body", (-ab - 1, ab + 1, -bb - 1, bb + 1, -bh2 - 1, bh2 + 1), self._sd_body))
        for s in (1, -1):
            f = self._ped[s]
            pc = f["pc"]
            ext = max(self.pw, self.ph) / 2 + 1
            box = (pc[0] - 20, pc[0] + 20, pc[1] - 20, pc[1] + 20, pc[2] - ext, pc[2] + ext)
            P.append(("ped", box, (lambda u, v, w, s=s: self._sd_ped(u, v, w, s))))
            # superior articular process (rises above body), inferior articular process (hangs below)
            cx = s * (self.pu + 2.0)
            top = bh2 + self.p["disc_above"] + 6
            bot = self.wp - self.ph / 2
            P.append(("sap", (cx - 6, cx + 6, self.v_pil - 6, self.v_pil + 6, bot - 1, top + 1),
                      (lambda u, v, w, cx=cx, top=top, bot=bot:
                       np.maximum(sd_ellipse(u - cx, v - self.v_pil, 4.5, 4.5), np.maximum(w - top, bot - w)))))
            ix = s * (self.pu - (4.0 if self.trefoil else 3.0))
            iv = self.v_pil + 7.0
            itop = self.wp
            ibot = -bh2 - self.p["disc_below"] - 5
            P.append(("iap", (ix - 5, ix + 5, iv - 5, iv + 5, ibot - 1, itop + 1),
                      (lambda u, v, w, ix=ix, iv=iv, itop=itop, ibot=ibot:
                       np.maximum(sd_ellipse(u - ix, v - iv, 4.0, 4.0), np.maximum(w - itop, ibot - w)))))
            # transverse process
            tpa = np.array([s * (self.pu + 2), self.b_b + self.pl + 1, self.wp])
            tpb = np.array([s * (self.pu + 2 + self.tp_len), self.b_b + self.pl + (8 if self.thoracic else -2),
                            self.wp - 2])
            rtp = 4.5 if self.thoracic else 3.5
            lo, hi = np.minimum(tpa, tpb) - rtp - 1, np.maximum(tpa, tpb) + rtp + 1
            P.append(("tp", (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]),
                      (lambda u, v, w, A=tpa, B=tpb, r=rtp: sd_capsule3(u, v, w, A, B, r))))
            if self.thoracic:
                r0 = np.array([s * (ab - 3), bb * 0.5, bh2 - 4])
                r1 = np.array([s * (self.pu + 2 + self.tp_len - 2), self.b_b + self.pl + 10, bh2 - 8])
                rl = 40 if self.name == "T12" else 75
                r2 = np.array([s * (self.pu + rl), self.b_b - 5, bh2 - 30])
                rr = 5.0
                for A, B in ((r0, r1), (r1, r2)):
                    lo, hi = np.minimum(A, B) - rr - 1, np.maximum(A, B) + rr + 1
                    P.append(("rib", (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]),
                              (lambda u, v, w, A=A, B=B, r=rr: sd_capsule3(u, v, w, A, B, r))))
            if self.sacral:
                cen = np.array([s * (ab + 10), bb * 0.1 + 6, -2.0])
                rad = np.array([20.0, 20.0, bh2 + 6])
                lo, hi = cen - rad - 1, cen + rad + 1
                P.append(("ala", (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]),
                          (lambda u, v, w, cen=cen, rad=rad:
                           (np.sqrt(((u - cen[0]) / rad[0]) ** 2 + ((v - cen[1]) / rad[1]) ** 2
                                    + ((w - cen[2]) / rad[2]) ** 2) - 1) * rad.min())))
            if not self.lamx:
                A, B, M = self._lamina_pts(s)
                r = self.tl / 2
                ltop, lbot = self.wp + self.ph / 2 - 1, -bh2 - 0.7 * self.p["disc_below"] - 2
                pts = np.array([A, B, M])
                lo, hi = pts.min(0) - r - 1, pts.max(0) + r + 1
                P.append(("lam", (lo[0], hi[0], lo[1], hi[1], lbot - 1, ltop + 1),
                          (lambda u, v, w, A=A, B=B, M=M, r=r, ltop=ltop, lbot=lbot:
                           np.maximum(np.minimum(sd_capsule2(u, v, A[0], A[1], M[0], M[1], r),
                                                 sd_capsule2(u, v, M[0], M[1], B[0], B[1], r)),
                                      np.maximum(w - ltop, lbot - w)))))
        if not self.lamx:
            v0 = self.v_L + self.tl / 2
            v1 = v0 + self.sp_len
            t2 = 3.5 if not self.thoracic else 3.0
            wt0 = self.wp + self.ph / 2 - 3
            wb0 = -bh2 - 5
            slope = 0.55 if self.thoracic else 0.25
            P.append(("spin", (-t2 - 1, t2 + 1, v0 - 4, v1 + 1, wb0 - slope * self.sp_len - 3, wt0 + 1),
                      (lambda u, v, w, v0=v0, v1=v1, t2=t2, wt0=wt0, wb0=wb0, slope=slope:
                       np.maximum.reduce([np.abs(u) - t2, v0 - 3 - v, v - v1,
                                          w - (wt0 - slope * (v - v0)), (wb0 - slope * (v - v0)) - w]))))
        return P

    def _lamina_pts(self, s):
        A = np.array([s * (self.pu - self.pw / 2 + 1.0), self.b_b + self.pl + 1.5])
        B = np.array([0.0, self.v_L + self.tl / 2])
        M = (A + B) / 2
        if not self.trefoil:  # arched lamina -> round canal
            n = np.array([A[1] - B[1], B[0] - A[0]])
            n = n / np.linalg.norm(n)
            if n @ (M - np.array([0, self.v_canal_front + self.cap / 2])) < 0:
                n = -n
            M = M + 2.5 * n
        return A, B, M

    def _sd_body(self, u, v, w):
        return np.maximum(self.sd_foot(u, v), np.abs(w) - self.bh / 2)

    def ped_coords(self, u, v, w, s):
        f = self._ped[s]
        du, dv, dw = u - f["pc"][0], v - f["pc"][1], w - f["pc"][2]
        a = du * f["d"][0] + dv * f["d"][1]
        m = du * f["m"][0] + dv * f["m"][1]
        return a, m, dw

    def _sd_ped(self, u, v, w, s):
        f = self._ped[s]
        a, m, ss = self.ped_coords(u, v, w, s)
        return np.maximum(sd_ellipse(m, ss, self.pw / 2, self.ph / 2),
                          np.maximum(a - (f["a_ant"] + 6), (f["a_post"] - 4) - a))

    def bone_sd(self, u, v, w):
        out = np.full(np.shape(u), 1e3)
        for _, _, fn in self.parts:
            out = np.minimum(out, fn(u, v, w))
        return out


# ----------------------------------------------------------------------------------------------
# screws: envelope + truth
# ----------------------------------------------------------------------------------------------

def screw_radius_profile(t, L, r):
    return np.where(t <= L - 4.0, r, r * (0.4 + 0.6 * np.clip((L - t) / 4.0, 0, 1)))


def screw_axis_local(vert: Vertebra, sc):
    s = 1 if sc["side"] == "left" else -1
    th, ph = math.radians(sc["conv_deg"]), math.radians(sc["tilt_deg"])
    d = np.array([-s * math.cos(ph) * math.sin(th), -math.cos(ph) * math.cos(th), math.sin(ph)])
    f = vert._ped[s]
    q = f["pc"] + sc["off_m"] * f["m"] + sc["off_s"] * f["s"]
    v_entry = vert.v_pil + 2.0
    tb = (v_entry - q[1]) / (math.cos(ph) * math.cos(th))
    E = q - tb * d
    T = E + sc["length"] * d
    return E, T, d


def _envelope_points(E, d, L, r, step):
    n_t = int(math.ceil(L / step)) + 1
    t = np.linspace(0, L, n_t)
    n_a = max(16, int(math.ceil(2 * math.pi * r / step)))
    ang = np.linspace(0, 2 * math.pi, n_a, endpoint=False)
    e1 = np.cross(d, [0, 0, 1.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(d, [1.0, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    rr = screw_radius_profile(t, L, r)
    pts = (E[None, None, :] + t[:, None, None] * d[None, None, :]
           + rr[:, None, None] * (np.cos(ang)[None, :, None] * e1 + np.sin(ang)[None, :, None] * e2))
    pts = pts.reshape(-1, 3)
    tip = E + L * d  # tip cap centre (cone end)
    return np.vstack([pts, tip[None, :]])


class FootEDT:
    """Raster (0.05 mm) signed distance outside the body footprint, for body-exit depths."""

    def __init__(self, vert: Vertebra, res=0.05):
        self.res = res
        self.u0, self.v0 = -vert.a_b - 12, -vert.b_b - 12
        nu = int((2 * vert.a_b + 24) / res) + 1
        nv = int((2 * vert.b_b + 24) / res) + 1
        uu = self.u0 + np.arange(nu) * res
        vv = self.v0 + np.arange(nv) * res
        inside = vert.sd_foot(uu[:, None], vv[None, :]) <= 0
        self.dout = ndimage.distance_transform_edt(~inside) * res
        self.gu, self.gv = np.gradient(self.dout)

    def lookup(self, u, v):
        iu = (u - self.u0) / self.res
        iv = (v - self.v0) / self.res
        c = np.vstack([iu, iv])
        d = ndimage.map_coordinates(self.dout, c, order=1, mode="nearest")
        gu = ndimage.map_coordinates(self.gu, c, order=1, mode="nearest")
        gv = ndimage.map_coordinates(self.gv, c, order=1, mode="nearest")
        return d, gu, gv


def breach_depths(vert: Vertebra, sc, step=0.05, edt=None):
    """Depth (mm) by which the outer thread envelope goes beyond the pedicle's outer cortical
    surface (pedicle segment) or the vertebral body's outer surface (anterior to it), by sector."""
    s = 1 if sc["side"] == "left" else -1
    E, T, d = screw_axis_local(vert, sc)
    r = sc["diameter"] / 2
    pts = _envelope_points(E, d, sc["length"], r, step)
    u, v, w = pts[:, 0], pts[:, 1], pts[:, 2]
    f = vert._ped[s]
    a, m, ss = vert.ped_coords(u, v, w, s)
    out = {k: 0.0 for k in BREACH_DIRS}
    out["anterior"] = 0.0
    outside = vert.bone_sd(u, v, w) > 0
    seg = (a >= f["a_post"]) & (a <= f["a_ant"]) & outside
    if seg.any():
        mm, sv = m[seg], ss[seg]
        A, B = vert.pw / 2, vert.ph / 2
        qx, qy = ellipse_nearest(mm.copy(), sv.copy(), A, B)
        dist = np.hypot(mm - qx, sv - qy)
        nx, ny = qx / A ** 2, qy / B ** 2
        sec = np.where(np.abs(nx) >= np.abs(ny), np.where(nx > 0, 0, 1), np.where(ny < 0, 2, 3))
        for k, name in enumerate(BREACH_DIRS):
            sel = sec == k
            if sel.any():
                out[name] = max(out[name], float(dist[sel].max()))
    ant = (a > f["a_ant"]) & outside
    if ant.any():
        if edt is None:
            edt = getattr(vert, "_edt", None)
            if edt is None:
                edt = vert._edt = FootEDT(vert)
        ua, va, wa = u[ant], v[ant], w[ant]
        dfoot, gu, gv = edt.lookup(ua, va)
        dw = np.maximum(np.abs(wa) - vert.bh / 2, 0)
        dist = np.sqrt(dfoot ** 2 + dw ** 2)
        infoot = dfoot <= 1e-9
        secname = np.where(infoot, np.where(wa > 0, 3, 2),
                           np.where(np.abs(gu) >= np.abs(gv), np.where(gu * s > 0, 1, 0),
                                    np.where(gv > 0, np.where(m[ant] > 0, 0, 1), 4)))
        # just anterior to the segment the pedicle tube still merges into the body: take the
        # nearer of the two surfaces there
        near = a[ant] <= f["a_ant"] + 6
        if near.any():
            A, B = vert.pw / 2, vert.ph / 2
            mm, sv = m[ant][near], ss[ant][near]
            qx, qy = ellipse_nearest(mm.copy(), sv.copy(), A, B)
            dp = np.hypot(mm - qx, sv - qy)
            nx, ny = qx / A ** 2, qy / B ** 2
            sp = np.where(np.abs(nx) >= np.abs(ny), np.where(nx > 0, 0, 1), np.where(ny < 0, 2, 3))
            take = dp < dist[near]
            dn, sn = dist[near], secname[near]
            dn[take], sn[take] = dp[take], sp[take]
            dist[near], secname[near] = dn, sn
        names = list(BREACH_DIRS) + ["anterior"]
        for k in range(5):
            sel = (secname == k) & (dist > 0)
            if sel.any():
                out[names[k]] = max(out[names[k]], float(dist[sel].max()))
    return out


# ----------------------------------------------------------------------------------------------
# parameter family
# ----------------------------------------------------------------------------------------------

def _frames(levels_geo, spine, z_base):
    """Stack vertebrae bottom-up along a curved (scoliosis/lordosis) column."""
    A_s, k_s, ph_s = spine["scol_amp"], spine["scol_k"], spine["scol_phase"]
    B_l, k_l, ph_l = spine["lord_amp"], spine["lord_k"], spine["lord_phase"]
    psi, rs = spine["psi_deg"], spine["rot_scol_deg"]

    def xy(z):
        return (A_s * math.sin(k_s * z + ph_s), B_l * math.sin(k_l * z + ph_l))

    def dxy(z):
        return (A_s * k_s * math.cos(k_s * z + ph_s), B_l * k_l * math.cos(k_l * z + ph_l))

    z = z_base
    out = []
    for g in reversed(levels_geo):  # bottom first
        zc = z + g["bh"] / 2
        x, y = xy(zc)
        dx, dy = dxy(zc)
        wv = np.array([dx, dy, 1.0])
        wv /= np.linalg.norm(wv)
        rot = math.radians(psi + rs * math.sin(k_s * zc + ph_s))
        u0 = np.array([math.cos(rot), math.sin(rot), 0.0])
        uv = u0 - (u0 @ wv) * wv
        uv /= np.linalg.norm(uv)
        vv = np.cross(wv, uv)
        R = np.stack([uv, vv, wv], axis=1)
        g["center"] = [x, y, zc]
        g["R"] = R.tolist()
        out.append(g)
        z = zc + g["bh"] / 2 + g["disc_above"]
    return list(reversed(out))


def _pick_depth(rng, direction):
    if direction == "medial":
        if rng.random() < 0.22:
            d = rng.uniform(0.4, 3.95)
        else:
            d = rng.uniform(4.0, 10.0)
    else:
        d = rng.uniform(0.4, 10.0) if direction != "superior" else rng.uniform(0.4, 6.0)
    if rng.random() < 0.35:
        b = rng.choice([2.0, 4.0, 6.0]) if direction == "medial" else rng.choice([2.0, 4.0])
        d = b + rng.choice([-1, 1]) * rng.uniform(0.03, 0.15)
    return float(d)


def _solve_offset(vert, sc, direction, depth, step=0.2):
    key = {"medial": ("off_m", 1), "lateral": ("off_m", -1), "inferior": ("off_s", -1),
           "superior": ("off_s", 1)}[direction]

    def f(x):
        sc[key[0]] = key[1] * x
        return breach_depths(vert, sc, step=step)[direction]

    lo, hi = -8.0, 16.0
    if f(lo) > depth:
        return f(lo)
    if f(hi) < depth:
        return f(hi)
    for _ in range(26):
        mid = (lo + hi) / 2
        if f(mid) < depth:
            lo = mid
        else:
            hi = mid
        if hi - lo < 0.004:
            break
    return f(hi)


def _screws_collide(vert, s1, s2):
    E1, T1, _ = screw_axis_local(vert, s1)
    E2, T2, _ = screw_axis_local(vert, s2)
    t = np.linspace(0, 1, 200)[:, None]
    p1 = E1 + t * (T1 - E1)
    p2 = E2 + t * (T2 - E2)
    d = np.sqrt(((p1[:, None, :] - p2[None, :, :]) ** 2).sum(-1)).min()
    return d < (s1["diameter"] + s2["diameter"]) / 2 + 0.5


def _make_vertebra_params(rng, lv, osteo, canal_shape):
    bw, bd, bh, (w0, w1), (h0, h1), alpha, cap, cw, disc = LEVEL_TABLE[lv]
    sc = rng.uniform(0.92, 1.08)
    g = dict(level=lv, bw=bw * sc, bd=bd * sc, bh=bh * rng.uniform(0.93, 1.07))
    g["pw"] = float(np.clip(rng.uniform(w0 - 0.5, w1 + 0.5), 5.0, 12.0))
    g["ph"] = float(np.clip(rng.uniform(h0 - 0.5, h1 + 0.5), 10.0, 18.0))
    g["alpha"] = float(np.clip(alpha + rng.normal(0, 3), 0, 30))
    g["cap"] = float(np.clip(cap + rng.normal(0, 2.5), 10.0, 22.0))
    g["cw"] = float(cw * rng.uniform(0.9, 1.12))
    g["pl"] = float(min(rng.uniform(7.0, 11.0), g["cap"] - 1.0))
    g["tc"] = float(rng.uniform(0.5, 0.8) if osteo else rng.uniform(0.9, 1.8))
    g["c0"] = float(rng.uniform(1.0, 3.0))
    g["wp"] = float(g["bh"] / 2 - g["ph"] / 2 - rng.uniform(0.5, 2.5))
    g["tl"] = float(rng.uniform(5.0, 7.5))
    g["sp_len"] = float(rng.uniform(22, 34) if not lv.startswith("S") else rng.uniform(8, 14))
    g["tp_len"] = float({"T": 22, "L": 20, "S": 6}[lv[0]] * rng.uniform(0.7, 1.2))
    if lv == "L3":
        g["tp_len"] *= 1.25
    g["canal_shape"] = canal_shape
    g["disc_below"] = float(disc * rng.uniform(0.6, 1.15)) if disc > 0 else 0.0
    g["vacuum_disc"] = bool(rng.random() < 0.1)
    g["hu_cancellous"] = float(rng.uniform(70, 135) if osteo else rng.uniform(150, 280))
    g["hu_cortex"] = float(rng.uniform(600, 900) if osteo else rng.uniform(850, 1400))
    g["laminectomy"] = False
    return g


def family(seed, n, small=False):
    return [_study_params(seed, i, small) for i in range(n)]


def _study_params(seed, i, small):
    rng = np.random.default_rng([int(seed), int(i), 6, int(small)])
    P = dict(family=6, seed=int(seed), index=int(i), small=bool(small))
    # ---- levels
    if small:
        n_ins = 1
    else:
        n_ins = int(rng.choice([1, 2, 3], p=[0.15, 0.55, 0.30]))
    lo_i = int(rng.integers(1, 10 - n_ins + 1))  # index into LEVELS of top instrumented (T10=1)
    ins = LEVELS[lo_i:lo_i + n_ins]
    vol_levels = LEVELS[lo_i - 1:lo_i + n_ins + 1]
    osteo = bool(rng.random() < 0.25)
    canal_shape = str(rng.choice(["round", "trefoil"]))
    geo = [_make_vertebra_params(rng, lv, osteo, canal_shape) for lv in vol_levels]
    for k, g in enumerate(geo):
        if g["level"] in ("S1", "S2"):
            g["disc_below"] = 0.0  # sacrum: fused segments
        g["disc_above"] = geo[k - 1]["disc_below"] if k > 0 else (
            float(LEVEL_TABLE[LEVELS[lo_i - 2]][8]) if lo_i >= 2 else 6.0)
    # ---- spine shape / pose
    scol = rng.random() < 0.3
    tilt = math.radians(rng.uniform(3, 15)) if scol else math.radians(rng.uniform(0, 2))
    lam = rng.uniform(300, 500)
    k_s = 2 * math.pi / lam
    psi = float(np.clip(rng.normal(0, 5), -15, 15))
    rot_s = float(rng.uniform(0, 15 - abs(psi)) * (1 if scol else 0.2))
    spine = dict(scol_amp=math.tan(tilt) / k_s, scol_k=k_s, scol_phase=rng.uniform(0, 2 * math.pi),
                 lord_amp=math.tan(math.radians(rng.uniform(2, 12))) / (2 * math.pi / 600),
                 lord_k=2 * math.pi / 600, lord_phase=rng.uniform(0, 2 * math.pi),
                 psi_deg=psi, rot_scol_deg=rot_s)
    z_base = float(rng.uniform(-250, 50))
    geo = _frames(geo, spine, z_base)
    # laminectomy
    lamx = []
    if rng.random() < 0.3:
        cands = ins + ([vol_levels[0]] if rng.random() < 0.2 else [])
        nl = int(rng.integers(1, min(2, len(cands)) + 1))
        lamx = sorted(rng.choice(cands, nl, replace=False).tolist(), key=LEVELS.index)
    for g in geo:
        g["laminectomy"] = g["level"] in lamx
    P["levels"] = vol_levels
    P["instrumented"] = ins
    P["laminectomy_levels"] = lamx
    P["vertebrae"] = geo
    P["spine"] = spine
    P["osteoporotic"] = osteo
    # ---- acquisition
    if small:
        P["rows"] = 160
        P["pixel_mm"] = float(rng.uniform(0.6, 0.9))
        thick = float(rng.choice([0.8, 1.0, 1.25, 1.5, 2.0], p=[0.25, 0.3, 0.2, 0.15, 0.1]))
        spacing = thick
    else:
        P["rows"] = 512
        P["pixel_mm"] = float(rng.uniform(0.3, 0.9))
        thick = float(rng.choice([0.6, 0.625, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                                 p=[0.1, 0.08, 0.1, 0.1, 0.2, 0.1, 0.12, 0.08, 0.06, 0.06]))
        spacing = thick if rng.random() < 0.75 else float(max(0.5, round(thick * rng.uniform(0.5, 0.8), 2)))
    P["slice_thickness_mm"] = thick
    P["spacing_mm"] = spacing
    # ---- construct
    unilateral = bool(rng.random() < 0.15)
    uni_side = str(rng.choice(["left", "right"]))
    screw_d_choices = np.array([4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5])
    vmap = {g["level"]: g for g in geo}
    screws = []
    for lv in ins:
        vert = Vertebra(vmap[lv])
        for side in ("left", "right"):
            if unilateral and side != uni_side:
                continue
            if not small and n_ins >= 2 and rng.random() < 0.04:
                continue  # skipped screw
            u = rng.random()
            if lv == "S1":
                direction = "none" if u < 0.65 else ("medial" if u < 0.9 else "inferior")
            else:
                direction = ("none" if u < 0.58 else "medial" if u < 0.84 else "lateral" if u < 0.92
                             else "inferior" if u < 0.98 else "superior")
            fits = screw_d_choices[screw_d_choices <= vert.pw - 0.6]
            if direction == "none" or len(fits) == 0 or rng.random() < 0.8:
                pool = fits if len(fits) else screw_d_choices[:1]
            else:
                pool = screw_d_choices
            dia = float(rng.choice(pool))
            al = vert.alpha
            if direction == "medial":
                conv = al + rng.uniform(0, 8)
            elif direction == "lateral":
                conv = al - rng.uniform(0, 6)
            else:
                conv = al + rng.normal(0, 2)
            conv = float(np.clip(conv, 0, 25))
            tilt_d = float(np.clip(rng.normal(0, 4), -15, 15))
            if direction in ("inferior", "superior"):
                tilt_d = float(np.clip((-1 if direction == "inferior" else 1) * rng.uniform(2, 15), -15, 15))
            sc = dict(id=f"{lv}{side[0].upper()}", level=lv, side=side, diameter=dia, conv_deg=conv,
                      tilt_deg=tilt_d, off_m=0.0, off_s=0.0, length=0.0, target=direction)
            # length: tip ~ 75-90 % of body depth, standard sizes
            E, _, d = screw_axis_local(vert, dict(sc, length=1.0))
            v_tip = -vert.b_b * rng.uniform(0.45, 0.8)
            L = (E[1] - v_tip) / max(0.3, -d[1])
            sc["length"] = float(np.clip(round(L / 5) * 5, 30, 60))
            if direction == "none":
                sc["off_m"] = float(rng.normal(0, 0.3))
                sc["off_s"] = float(rng.normal(0, 0.5))
            for _ in range(40):
                if direction != "none":
                    sc["target_depth"] = _pick_depth(rng, direction) if "target_depth" not in sc else sc["target_depth"]
                    _solve_offset(vert, sc, direction, sc["target_depth"])
                bd = breach_depths(vert, sc, step=0.25)
                bad_ant = bd["anterior"] > 0
                bad_none = direction == "none" and max(bd[k] for k in BREACH_DIRS) > 0
                bad_end = direction in ("medial", "lateral") and (bd["superior"] > 1.0 or bd["inferior"] > 1.0)
                if bad_ant or bad_end:
                    sc["length"] -= 2.5
                    if sc["length"] < 25:
                        sc["length"] = 25.0
                        sc["tilt_deg"] *= 0.5
                    continue
                if bad_none:
                    sc["off_m"] *= 0.5
                    sc["off_s"] *= 0.5
                    sc["conv_deg"] = 0.5 * sc["conv_deg"] + 0.5 * float(np.clip(al, 0, 25))
                    sc["tilt_deg"] *= 0.6
                    if sc["diameter"] > 4.5 and abs(sc["off_m"]) < 0.05:
                        sc["diameter"] -= 0.5
                    continue
                break
            sc["cement"] = False
            # two screws of one vertebra must not intersect: fall back to a centred placement
            for other in screws:
                if other["level"] == lv and _screws_collide(vert, other, sc):
                    sc.update(target="none", off_m=0.0, off_s=0.0, conv_deg=float(np.clip(al, 0, 25)),
                              tilt_deg=0.0, diameter=float(min(sc["diameter"], max(4.5, vert.pw - 1.0))))
                    sc.pop("target_depth", None)
                    while _screws_collide(vert, other, sc) and sc["length"] > 25:
                        sc["length"] -= 5.0
            screws.append(sc)
    if osteo and rng.random() < 0.45 or rng.random() < 0.05:
        for sc in screws:
            sc["cement"] = bool(rng.random() < 0.8)
    P["screws"] = screws
    P["tulip"] = dict(radius=float(rng.uniform(5.2, 6.5)), height=float(rng.uniform(11, 15)))
    P["rod_radius"] = float(rng.choice([2.75, 3.0, 3.175]))
    P["metal_hu"] = float(rng.uniform(5000, 9000))
    P["rod_hu"] = float(rng.uniform(5000, 14000))
    # ---- distractors
    P["hip"] = None
    P["lead"] = None
    fov_half = P["rows"] * P["pixel_mm"] / 2
    if not small and rng.random() < 0.1 and fov_half > 150:
        P["hip"] = dict(side=str(rng.choice(["left", "right"])), dx=float(rng.uniform(90, 110)),
                        dy=float(rng.uniform(-40, -15)), dz=float(rng.uniform(5, 40)),
                        r=float(rng.uniform(20, 26)), hu=float(rng.uniform(15000, 25000)))
    if rng.random() < 0.12:
        P["lead"] = dict(du=float(rng.uniform(-3, 3)), contacts=int(rng.choice([4, 8])),
                         pitch=float(rng.uniform(4, 7)), top_frac=float(rng.uniform(0.6, 1.0)),
                         hu=float(rng.uniform(2000, 4000)), contact_hu=float(rng.uniform(12000, 25000)))
    # ---- soft tissue / image quality
    P["torso"] = dict(half_w=float(rng.uniform(130, 190)), half_d=float(rng.uniform(95, 140)),
                      subq=float(rng.uniform(8, 45)), seed=int(rng.integers(1 << 30)))
    P["noise_hu"] = float(rng.uniform(6, 40))
    P["psf_mm"] = float(rng.uniform(0.5, 1.3))  # FWHM
    P["streak_amp"] = float(rng.uniform(0.2, 1.5))
    P["clip12"] = bool(rng.random() < 0.5)
    P["storage"] = "u12" if P["clip12"] else str(rng.choice(["s16", "u16off", "s16scaled"], p=[0.5, 0.3, 0.2]))
    P["rle"] = bool(rng.random() < 0.2)
    P["slice_order"] = "sup_to_inf" if rng.random() < 0.7 else "inf_to_sup"
    P["kernel"] = str(rng.choice(["BONE", "B70f", "YC", "STANDARD", "Br64"]))
    return json.loads(json.dumps(P))


# ----------------------------------------------------------------------------------------------
# truth
# ----------------------------------------------------------------------------------------------

def compute_truth(P):
    verts = {g["level"]: Vertebra(g) for g in P["vertebrae"]}
    edts = {}
    screws = []
    for sc in P["screws"]:
        v = verts[sc["level"]]
        if sc["level"] not in edts:
            edts[sc["level"]] = FootEDT(v)
        bd = breach_depths(v, sc, step=0.05, edt=edts[sc["level"]])
        depths = {k: round(float(bd[k]), 2) for k in BREACH_DIRS}
        main = max(BREACH_DIRS, key=lambda k: depths[k])
        if depths[main] <= 0:
            main = "none"
        E, T, _ = screw_axis_local(v, sc)
        screws.append({"id": sc["id"], "level": sc["level"], "side": sc["side"],
                       "entry_lps_mm": [round(float(x), 3) for x in v.to_global(E)],
                       "tip_lps_mm": [round(float(x), 3) for x in v.to_global(T)],
                       "diameter_mm": float(sc["diameter"]),
                       "breach_direction": main,
                       "breach_depth_mm": depths[main] if main != "none" else 0.0,
                       "breach_depths_mm": depths,
                       "at_laminectomy_level": sc["level"] in P["laminectomy_levels"]})
    return {"slice_thickness_mm": float(P["slice_thickness_mm"]), "pixel_mm": float(P["pixel_mm"]),
            "laminectomy_levels": list(P["laminectomy_levels"]), "screws": screws}


def gr_grade(depth):
    if depth <= 0:
        return "A"
    return "B" if depth < 2 else "C" if depth < 4 else "D" if depth < 6 else "E"


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------

class Renderer:
    def __init__(self, P):
        self.P = P
        self.verts = [Vertebra(g) for g in P["vertebrae"]]
        self.vmap = {v.name: v for v in self.verts}
        self.n = P["rows"]
        self.px = P["pixel_mm"]
        zs = np.array([v.c[2] for v in self.verts])
        self.zc_sorted = np.argsort(zs)
        cx = np.mean([v.c[0] for v in self.verts])
        cy = np.mean([v.c[1] for v in self.verts])
        if P["small"]:
            vi = self.vmap[P["instrumented"][0]]
            cyl = vi.to_global([0, vi.b_b + 8, 0])
            cx, cy = cyl[0], cyl[1]
        else:
            cy = cy + 22
        fov = self.n * self.px
        self.x0 = cx - fov / 2 + self.px / 2
        self.y0 = cy - fov / 2 + self.px / 2
        self.xs = self.x0 + np.arange(self.n) * self.px
        self.ys = self.y0 + np.arange(self.n) * self.px
        self._slices()
        self._metal_objects()
        self._soft_objects()

    # -- slice positions
    def _slices(self):
        P = self.P
        if P["small"]:
            v = self.vmap[P["instrumented"][0]]
            half = v.bh / 2 + 7
            n = min(60, int(2 * half / P["spacing_mm"]) + 1)
            zc = v.c[2]
        else:
            top = self.verts[0]
            bot = self.verts[-1]
            ztop = top.c[2] + top.bh / 2 + 3
            zbot = bot.c[2] - bot.bh / 2 - 3
            n = int((ztop - zbot) / P["spacing_mm"]) + 1
            if n > 400:
                n = 400
            zc = (ztop + zbot) / 2
        self.nz = n
        z = zc + (np.arange(n) - (n - 1) / 2) * P["spacing_mm"]
        self.z = z[::-1] if P["slice_order"] == "sup_to_inf" else z

    # -- metal
    def _metal_objects(self):
        P = self.P
        objs = []  # (kind, params)
        tul = P["tulip"]
        rodpts = {"left": [], "right": []}
        self.screw_geo = []
        for sc in P["screws"]:
            v = self.vmap[sc["level"]]
            E, T, d = screw_axis_local(v, sc)
            Eg, Tg = v.to_global(E), v.to_global(T)
            dg = v.R @ d
            self.screw_geo.append((sc, Eg, Tg, dg))
            objs.append(("screw", dict(E=Eg, d=dg, L=sc["length"], r=sc["diameter"] / 2, pitch=2.6)))
            # tulip axis: between screw axis and posterior direction (polyaxial)
            post = v.R @ np.array([0, 1.0, 0])
            ax = -dg + post
            ax /= np.linalg.norm(ax)
            A = Eg + 0.5 * ax
            B = Eg + (tul["height"]) * ax
            objs.append(("cyl", dict(A=A, B=B, r=tul["radius"], hu=P["metal_hu"])))
            rodpts[sc["side"]].append(Eg + 0.55 * tul["height"] * ax)
            if sc.get("cement"):
                c = v.to_global(E + d * (sc["length"] - 9))
                self.cement = getattr(self, "cement", []) + [(sc["level"], c, np.array([7.0, 7.0, 8.0]))]
        for side, pts in rodpts.items():
            if not pts:
                continue
            pts = sorted(pts, key=lambda p: -p[2])
            if len(pts) == 1:
                p = pts[0]
                pts = [p + np.array([0, 0, 9.0]), p - np.array([0, 0, 9.0])]
            else:
                d0 = pts[0] - pts[1]
                d1 = pts[-1] - pts[-2]
                pts = [pts[0] + 6 * d0 / np.linalg.norm(d0)] + pts + [pts[-1] + 6 * d1 / np.linalg.norm(d1)]
            for a, b in zip(pts[:-1], pts[1:]):
                objs.append(("cyl", dict(A=a, B=b, r=P["rod_radius"], hu=P["rod_hu"], caps=True)))
        if P["lead"]:
            L = P["lead"]
            cps = []
            for v in self.verts:
                cps.append(v.to_global([L["du"], v.v_L - 3.0, 0.0]))
            top = self.verts[0]
            cps = [top.to_global([L["du"], top.v_L - 3.0, top.bh + 20])] + cps
            bot = self.verts[-1]
            cps.append(bot.to_global([L["du"], bot.v_L - 3.0, -bot.bh - 10]))
            for a, b in zip(cps[:-1], cps[1:]):
                objs.append(("cyl", dict(A=a, B=b, r=0.65, hu=L["hu"], caps=True)))
            zt = self.z.min() + L["top_frac"] * (self.z.max() - self.z.min())
            for k in range(L["contacts"]):
                zc = zt - k * L["pitch"]
                # point on polyline at height zc
                for a, b in zip(cps[:-1], cps[1:]):
                    if min(a[2], b[2]) <= zc <= max(a[2], b[2]) and a[2] != b[2]:
                        t = (zc - a[2]) / (b[2] - a[2])
                        p = a + t * (b - a)
                        dd = (b - a) / np.linalg.norm(b - a)
                        objs.append(("cyl", dict(A=p - 1.5 * dd, B=p + 1.5 * dd, r=0.7, hu=L["contact_hu"])))
                        break
        if P["hip"]:
            H = P["hip"]
            s = 1 if H["side"] == "left" else -1
            bot = self.verts[-1]
            zlow = self.z.min()
            c = np.array([bot.c[0] + s * H["dx"], bot.c[1] + H["dy"], zlow + H["dz"]])
            objs.append(("sphere", dict(c=c, r=H["r"], hu=H["hu"])))
            objs.append(("shell", dict(c=c, r0=H["r"] + 1.0, r1=H["r"] + 4.0, n=np.array([s * 0.6, 0.0, -0.8]),
                                       hu=H["hu"] * 0.6)))
            nb = c + np.array([s * 28.0, 4.0, -30.0])
            objs.append(("cyl", dict(A=c, B=nb, r=9.0, hu=H["hu"], caps=True)))
            objs.append(("cyl", dict(A=nb, B=nb + np.array([s * 8.0, 0, -120.0]), r=8.0, hu=H["hu"], caps=True)))
        # bounding boxes
        for kind, o in objs:
            if kind in ("screw",):
                a, b = o["E"], o["E"] + o["L"] * o["d"]
                r = o["r"] + 1
            elif kind == "cyl":
                a, b, r = o["A"], o["B"], o["r"] + 1
            else:
                a = b = o["c"]
                r = o.get("r1", o.get("r", 0)) + 1
            o["lo"] = np.minimum(a, b) - r
            o["hi"] = np.maximum(a, b) + r
        self.metal = objs
        if not hasattr(self, "cement"):
            self.cement = []

    # -- soft tissue
    def _soft_objects(self):
        P = self.P
        rng = np.random.default_rng([P["seed"], P["index"], 6, int(P["small"]), 77])
        T = P["torso"]
        self.bowel = []
        zmin, zmax = self.z.min() - 20, self.z.max() + 20
        for _ in range(int(rng.integers(10, 30))):
            self.bowel.append(dict(u=rng.uniform(-0.7, 0.7) * T["half_w"], v=rng.uniform(-1.6, -0.5) * T["half_d"],
                                   z=rng.uniform(zmin, zmax), r=rng.uniform(8, 22), rz=rng.uniform(15, 40),
                                   gas=rng.random() < 0.45, level=rng.uniform(-0.2, 0.6),
                                   hu=rng.uniform(0, 40)))

    def spine_at(self, z):
        zs = np.array([v.c[2] for v in self.verts])
        o = np.argsort(zs)
        zs = zs[o]
        cx = np.interp(z, zs, [self.verts[k].c[0] for k in o])
        cy = np.interp(z, zs, [self.verts[k].c[1] for k in o])
        i = int(np.argmin(np.abs(zs - z)))
        return cx, cy, self.verts[o[i]]

    def soft_slice(self, z):
        P = self.P
        T = P["torso"]
        n = self.n
        X = self.xs[None, :]
        Y = self.ys[:, None]
        cx, cy, vn = self.spine_at(z)
        psi = math.radians(P["spine"]["psi_deg"])
        c, s = math.cos(psi), math.sin(psi)
        U = (X - cx) * c + (Y - cy) * s
        V = -(X - cx) * s + (Y - cy) * c
        img = np.full((n, n), -1000.0, np.float32)
        w = self.px

        def paint(sd, hu):
            f = soft(sd, w)
            np.multiply(img, 1 - f, out=img)
            img[...] += f * hu

        bb = vn.b_b
        skin_v = vn.v_L + vn.tl + vn.sp_len + T["subq"] + 8
        tv = skin_v - T["half_d"]
        paint(sd_ellipse(U, V - tv, T["half_w"], T["half_d"]), -100.0)
        paint(sd_ellipse(U, V - tv, T["half_w"] - T["subq"], T["half_d"] - T["subq"]), 45.0)
        vc_v = -bb - 0.5 * (T["half_d"] - 20)
        paint(sd_ellipse(U, V - vc_v, T["half_w"] - T["subq"] - 14, (T["half_d"] - 20) * 0.62), -85.0)
        for b in self.bowel:
            dz = z - b["z"]
            if abs(dz) >= b["rz"]:
                continue
            r = b["r"] * math.sqrt(1 - (dz / b["rz"]) ** 2)
            sdb = np.hypot(U - b["u"], V - b["v"]) - r
            paint(sdb, 40.0)
            paint(sdb + 1.5, b["hu"])
            if b["gas"]:
                paint(np.maximum(sdb + 1.5, (V - b["v"]) - b["level"] * r), -950.0)
        lv = vn.name
        lidx = LEVELS.index(lv)
        # lungs (posterior costophrenic recesses) at thoracic levels
        if lv in ("T9", "T10", "T11"):
            k = {"T9": 1.0, "T10": 0.75, "T11": 0.45}[lv]
            for sgn in (1, -1):
                paint(sd_ellipse(U - sgn * (vn.a_b + 45), V - (bb - 5), 40 * k + 5, 45 * k + 5), -840.0)
        # kidneys
        if lv in ("T12", "L1", "L2"):
            for sgn in (1, -1):
                paint(sd_ellipse(U - sgn * (vn.a_b + 42), V - (bb * 0.2), 34, 28), -90.0)
                paint(sd_ellipse(U - sgn * (vn.a_b + 44), V - (bb * 0.2), 26, 20), 30.0)
        # psoas
        if lidx >= LEVELS.index("T12") and lidx <= LEVELS.index("S1"):
            k = lidx - LEVELS.index("T12")
            for sgn in (1, -1):
                paint(sd_ellipse(U - sgn * (vn.a_b + 4 + 2.2 * k), V - (-bb * 0.15), 6 + 2.5 * k, 8 + 2.6 * k), 50.0)
        # great vessels
        if lidx <= LEVELS.index("L4"):
            paint(np.hypot(U - 8, V - (-bb - 13)) - 11, 42.0)
            paint(sd_ellipse(U + 16, V - (-bb - 9), 12, 8), 38.0)
        else:
            for sgn in (1, -1):
                paint(np.hypot(U - sgn * 22, V - (-bb - 8)) - 6.5, 42.0)
                paint(np.hypot(U - sgn * 30, V - (-bb - 2)) - 8, 38.0)
        # paraspinal muscles (erector spinae + multifidus)
        for sgn in (1, -1):
            paint(sd_ellipse(U - sgn * (vn.pu + 16), V - (vn.v_L + 16), 24, 24), 52.0)
        # fat layer between muscles and skin posteriorly
        return img

    # -- spine (per sub-slice)
    def _local_grid(self, v, z, box):
        """Return pixel index ranges and local coords for the crop of box (local AABB)."""
        u0, u1, v0, v1, w0, w1 = box
        corners = np.array([[a, b, c] for a in (u0, u1) for b in (v0, v1) for c in (w0, w1)])
        g = v.to_global(corners)
        if z < g[:, 2].min() or z > g[:, 2].max():
            return None
        i0 = max(0, int((g[:, 0].min() - self.x0) / self.px) - 1)
        i1 = min(self.n, int((g[:, 0].max() - self.x0) / self.px) + 2)
        j0 = max(0, int((g[:, 1].min() - self.y0) / self.px) - 1)
        j1 = min(self.n, int((g[:, 1].max() - self.y0) / self.px) + 2)
        if i1 <= i0 or j1 <= j0:
            return None
        X = self.xs[i0:i1][None, :] - v.c[0]
        Y = self.ys[j0:j1][:, None] - v.c[1]
        Z = z - v.c[2]
        R = v.R
        uu = X * R[0, 0] + Y * R[1, 0] + Z * R[2, 0]
        vv = X * R[0, 1] + Y * R[1, 1] + Z * R[2, 1]
        ww = X * R[0, 2] + Y * R[1, 2] + Z * R[2, 2]
        return (j0, j1, i0, i1), uu, vv, ww

    def spine_subslice(self, img, z):
        w = self.px
        # canal contents, flavum, scar
        for v in self.verts:
            ext = v.bh / 2 + max(v.p["disc_above"], v.p["disc_below"]) / 2 + 1.0
            vcc = v.v_canal_front + v.cap / 2
            box = (-v.cw / 2 - 12, v.cw / 2 + 12, v.v_canal_front - 3, v.v_L + v.tl + 30, -ext, ext)
            r = self._local_grid(v, z, box)
            if r is None:
                continue
            (j0, j1, i0, i1), uu, vv, ww = r
            sub = img[j0:j1, i0:i1]
            inw = np.abs(ww) <= ext

            def paint(sd, hu):
                f = soft(sd, w) * inw
                sub[...] = sub * (1 - f) + hu * f

            if v.lamx:
                paint(sd_ellipse(uu, vv - (v.v_L + 10), v.cw / 2 + 6, 16), 38.0)
            paint(sd_ellipse(uu, vv - vcc, v.cw / 2 + 1.5, v.cap / 2 + 0.5), -85.0)
            if v.trefoil:
                for sg in (1, -1):
                    paint(sd_ellipse(uu - sg * v.cw * 0.42, vv - (vcc + v.cap * 0.1), 4.5, 3.0), -85.0)
            # ligamentum flavum (inner side of laminae, spanning interlaminar space)
            if not v.lamx:
                for sg in (1, -1):
                    A, B, M = v._lamina_pts(sg)
                    off = np.array([0, -(v.tl / 2 + 1.3)])
                    fl = np.minimum(sd_capsule2(uu, vv, *(A + off), *(M + off), 1.6),
                                    sd_capsule2(uu, vv, *(M + off), *(B + off), 1.6))
                    paint(fl, 75.0)
            sac_a = min(v.cw / 2 - 1.5, 9.5)
            sac_b = v.cap / 2 - 1.5
            paint(sd_ellipse(uu, vv - (vcc + 0.5), sac_a, sac_b), 8.0)
            if v.thoracic or v.name == "L1":
                rad = 1.0 if v.thoracic else 0.7
                paint(sd_ellipse(uu, vv - (vcc + 0.3), 4.8 * rad, 3.8 * rad), 35.0)
        # discs
        for k in range(len(self.verts) - 1):
            up, lo = self.verts[k], self.verts[k + 1]
            h = lo.p["disc_above"] if lo.p["disc_above"] > 0 else 0.0
            fused = h <= 0
            hh = up.p["disc_below"]
            if hh <= 0 and not fused:
                continue
            dh = max(hh, h, 1.0)
            box = (-lo.a_b - 1, lo.a_b + 1, -lo.b_b - 1, lo.b_b + 1, lo.bh / 2 - 1.5, lo.bh / 2 + dh + 2)
            r = self._local_grid(lo, z, box)
            if r is None:
                continue
            (j0, j1, i0, i1), uu, vv, ww = r
            # coordinates in upper frame
            X = self.xs[i0:i1][None, :]
            Y = self.ys[j0:j1][:, None]
            g = np.stack(np.broadcast_arrays(X, Y, np.full_like(X * Y, z)), -1)
            wu = up.to_local(g)[..., 2]
            sd = np.maximum.reduce([lo.sd_foot(uu, vv) + 0.3, lo.bh / 2 - ww, wu + up.bh / 2])
            f = soft(sd, w)
            sub = img[j0:j1, i0:i1]
            if fused:
                hu = lo.p["hu_cancellous"] + 60
            else:
                rn = np.sqrt((uu / lo.a_b) ** 2 + (vv / lo.b_b) ** 2)
                hu = 65 + 35 * np.clip(rn, 0, 1) ** 2
                if lo.p["vacuum_disc"] or up.p["vacuum_disc"]:
                    gas = soft(sd_ellipse(uu, vv + 3, lo.a_b * 0.35, lo.b_b * 0.25), w)
                    hu = hu * (1 - gas) - 700 * gas
            sub[...] = sub * (1 - f) + hu * f
        # bone
        for v in self.verts:
            parts = []
            for name, box, fn in v.parts:
                r = self._local_grid(v, z, box)
                if r is not None:
                    parts.append((r, fn))
            if not parts:
                continue
            j0 = min(p[0][0][0] for p in parts)
            j1 = max(p[0][0][1] for p in parts)
            i0 = min(p[0][0][2] for p in parts)
            i1 = max(p[0][0][3] for p in parts)
            sd = np.full((j1 - j0, i1 - i0), 1e3)
            for ((a0, a1, b0, b1), uu, vv, ww), fn in parts:
                sl = sd[a0 - j0:a1 - j0, b0 - i0:b1 - i0]
                np.minimum(sl, fn(uu, vv, ww), out=sl)
            fb = soft(sd, w)
            fc = soft(sd + v.tc, w)
            hu_c, hu_k = v.p["hu_cancellous"], v.p["hu_cortex"]
            sub = img[j0:j1, i0:i1]
            bone = hu_k * (fb - fc) + hu_c * fc
            # cement
            for lvl, c, rad in self.cement:
                if lvl != v.name:
                    continue
                X = self.xs[i0:i1][None, :]
                Y = self.ys[j0:j1][:, None]
                e = np.sqrt(((X - c[0]) / rad[0]) ** 2 + ((Y - c[1]) / rad[1]) ** 2 + ((z - c[2]) / rad[2]) ** 2)
                fce = soft((e - 1) * rad.min(), w) * fc
                bone = bone * (1 - fce) + 2300.0 * fce
            sub[...] = sub * (1 - fb) + bone

    def metal_subslice(self, z, mf, mh):
        w = self.px
        for kind, o in self.metal:
            if z < o["lo"][2] or z > o["hi"][2]:
                continue
            i0 = max(0, int((o["lo"][0] - self.x0) / self.px))
            i1 = min(self.n, int((o["hi"][0] - self.x0) / self.px) + 2)
            j0 = max(0, int((o["lo"][1] - self.y0) / self.px))
            j1 = min(self.n, int((o["hi"][1] - self.y0) / self.px) + 2)
            if i1 <= i0 or j1 <= j0:
                continue
            X = self.xs[i0:i1][None, :]
            Y = self.ys[j0:j1][:, None]
            if kind == "screw":
                E, d = o["E"], o["d"]
                dx, dy, dz = X - E[0], Y - E[1], z - E[2]
                t = dx * d[0] + dy * d[1] + dz * d[2]
                px_, py_, pz_ = dx - t * d[0], dy - t * d[1], dz - t * d[2]
                rho = np.sqrt(px_ ** 2 + py_ ** 2 + pz_ ** 2)
                rr = screw_radius_profile(t, o["L"], o["r"])
                e1 = np.cross(d, [0, 0, 1.0])
                e1 = e1 / (np.linalg.norm(e1) + 1e-12)
                e2 = np.cross(d, e1)
                ang = np.arctan2(px_ * e2[0] + py_ * e2[1] + pz_ * e2[2], px_ * e1[0] + py_ * e1[1] + pz_ * e1[2])
                ph = np.mod(t / o["pitch"] - ang / (2 * np.pi), 1.0)
                thread = np.abs(ph - 0.5) * 2  # 0 at crest centre
                rad = np.where(thread < 0.45, rr, 0.72 * rr)
                sd = np.maximum.reduce([rho - rad, -t - 0.5, t - o["L"]])
                hu = self.P["metal_hu"]
            elif kind == "cyl":
                A, B = o["A"], o["B"]
                dvec = B - A
                L = np.linalg.norm(dvec)
                d = dvec / L
                dx, dy, dz = X - A[0], Y - A[1], z - A[2]
                t = dx * d[0] + dy * d[1] + dz * d[2]
                rho = np.sqrt((dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2)
                if o.get("caps"):
                    tc = np.clip(t, 0, L)
                    sd = np.sqrt((dx - tc * d[0]) ** 2 + (dy - tc * d[1]) ** 2 + (dz - tc * d[2]) ** 2) - o["r"]
                else:
                    sd = np.maximum.reduce([rho - o["r"], -t, t - L])
                hu = o["hu"]
            elif kind == "sphere":
                sd = np.sqrt((X - o["c"][0]) ** 2 + (Y - o["c"][1]) ** 2 + (z - o["c"][2]) ** 2) - o["r"]
                hu = o["hu"]
            else:  # shell (acetabular cup)
                dx, dy, dz = X - o["c"][0], Y - o["c"][1], z - o["c"][2]
                rr = np.sqrt(dx * dx + dy * dy + dz * dz)
                nn = o["n"] / np.linalg.norm(o["n"])
                half = -(dx * nn[0] + dy * nn[1] + dz * nn[2])
                sd = np.maximum.reduce([o["r0"] - rr, rr - o["r1"], -half])
                hu = o["hu"]
            f = soft(sd, w)
            sl = mf[j0:j1, i0:i1]
            hs = mh[j0:j1, i0:i1]
            upd = f > sl
            hs[upd] = hu
            np.maximum(sl, f, out=sl)

    # -- artefacts
    def streaks(self, mf, mh, k):
        P = self.P
        mask = mf > 0.5
        if not mask.any():
            return None
        lab, nl = ndimage.label(mask)
        if nl == 0:
            return None
        idx = np.arange(1, nl + 1)
        area = ndimage.sum(mask, lab, idx) * self.px ** 2
        dens = ndimage.mean(mh, lab, idx)
        com = ndimage.center_of_mass(mask, lab, idx)
        keep = [j for j in range(nl) if area[j] > 2.0]
        if not keep:
            return None
        X = self.xs[None, :]
        Y = self.ys[:, None]
        out = np.zeros((self.n, self.n), np.float32)
        rng = np.random.default_rng([P["seed"], P["index"], 6, int(P["small"]), 99, k // 3])
        amp0 = P["streak_amp"]
        cs = [(self.x0 + com[j][1] * self.px, self.y0 + com[j][0] * self.px, area[j], dens[j]) for j in keep]
        cs.sort(key=lambda c: -c[2])
        cs = cs[:8]
        for a in range(len(cs)):
            xa, ya, ar, de = cs[a]
            strength = min(60.0, amp0 * math.sqrt(ar) * (de / 6000.0) ** 0.7)
            # dark bands between metal objects (beam hardening)
            for b in range(a + 1, len(cs)):
                xb, yb, br, db = cs[b]
                L = math.hypot(xb - xa, yb - ya)
                if L < 3:
                    continue
                nx, ny = (xb - xa) / L, (yb - ya) / L
                t = (X - xa) * nx + (Y - ya) * ny
                dperp = np.abs((X - xa) * ny - (Y - ya) * nx)
                wdt = 0.6 * math.sqrt(min(ar, br)) + 1.0
                along = np.exp(-np.maximum(np.maximum(-t, t - L), 0) / 40.0)
                s2 = min(40.0, amp0 * math.sqrt(min(ar, br)) * (min(de, db) / 6000.0) ** 0.7)
                out -= (30.0 * s2 * np.exp(-(dperp / wdt) ** 2) * along).astype(np.float32)
            # radial streaks
            nstreak = int(rng.integers(4, 9))
            for _ in range(nstreak):
                th = rng.uniform(0, math.pi)
                nx, ny = math.cos(th), math.sin(th)
                dperp = np.abs((X - xa) * ny - (Y - ya) * nx)
                dist = np.hypot(X - xa, Y - ya)
                sgn = 1 if rng.random() < 0.5 else -1
                out += (sgn * 20.0 * strength * np.exp(-(dperp / rng.uniform(0.5, 1.5)) ** 2)
                        / (1 + dist / 25.0)).astype(np.float32)
        return out

    def render(self):
        P = self.P
        n = self.n
        th = P["slice_thickness_mm"]
        nsub = max(1, int(math.ceil(th / 0.5)))
        rng = np.random.default_rng([P["seed"], P["index"], 6, int(P["small"]), 1234])
        vol = np.empty((self.nz, n, n), np.float32)
        for k, z in enumerate(self.z):
            soft_img = self.soft_slice(z)
            acc = np.zeros((n, n), np.float32)
            macc = np.zeros((n, n), np.float32)
            mhacc = np.zeros((n, n), np.float32)
            for j in range(nsub):
                zz = z + th * ((j + 0.5) / nsub - 0.5)
                img = soft_img.copy()
                self.spine_subslice(img, zz)
                mf = np.zeros((n, n), np.float32)
                mh = np.zeros((n, n), np.float32)
                self.metal_subslice(zz, mf, mh)
                acc += img * (1 - mf) + mh * mf
                macc += mf
                mhacc = np.maximum(mhacc, mh)
            img = acc / nsub
            mf = macc / nsub
            sig = P["psf_mm"] / self.px / 2.355
            img = ndimage.gaussian_filter(img, sig)
            st = self.streaks(mf, mhacc, k)
            noise = rng.standard_normal((n, n)).astype(np.float32)
            noise = ndimage.gaussian_filter(noise, 0.7)
            noise *= P["noise_hu"] / 0.4
            if st is not None:
                img += st
                noise *= 1 + np.abs(st) / 250.0
            img += noise
            vol[k] = img
        return vol


# ----------------------------------------------------------------------------------------------
# DICOM output
# ----------------------------------------------------------------------------------------------

def _store(vol, P):
    st = P["storage"]
    if st == "u12":
        hu = np.clip(np.rint(vol), -1024, 3071)
        return (hu + 1024).astype(np.uint16), 1.0, -1024.0, 0, 12
    if st == "s16":
        hu = np.clip(np.rint(vol), -1024, 32767)
        return hu.astype(np.int16), 1.0, 0.0, 1, 16
    if st == "u16off":
        hu = np.clip(np.rint(vol), -1024, 64511)
        return (hu + 1024).astype(np.uint16), 1.0, -1024.0, 0, 16
    hu = np.clip(vol, -1024, 2 * 32767 - 1024)
    return np.rint((hu + 1024) / 2.0).astype(np.int16), 2.0, -1024.0, 1, 16


def write_study(params, directory):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    P = params
    os.makedirs(directory, exist_ok=True)
    truth = compute_truth(P)
    R = Renderer(P)
    vol = R.render()
    data, slope, icpt, signed, bits = _store(vol, P)
    key = (P["seed"], P["index"], P["small"])
    study_uid = uid_from("study", *key)
    series_uid = uid_from("series", *key)
    frame_uid = uid_from("frame", *key)
    date = "2024%02d%02d" % (1 + P["index"] % 12, 1 + P["index"] % 28)
    wc, ww = (500, 2000) if P["clip12"] else (700, 3500)
    for k in range(R.nz):
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop = uid_from("sop", *key, k)
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = "2.25.6066066066"
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = fm.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC_PHANTOM6"
        ds.PatientName = "PHANTOM6^%d^%d" % (P["seed"], P["index"])
        ds.PatientID = "P6-%d-%d-%d" % (P["seed"], P["index"], int(P["small"]))
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID = "6"
        ds.AccessionNumber = "A6%06d" % P["index"]
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.StudyDescription = "CT SPINE POSTOP"
        ds.SeriesDescription = "AXIAL BONE %.2fmm" % P["slice_thickness_mm"]
        ds.BodyPartExamined = "SPINE"
        ds.PatientPosition = "FFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.ConvolutionKernel = P["kernel"]
        ds.SliceThickness = "%.3f" % P["slice_thickness_mm"]
        ds.SpacingBetweenSlices = "%.3f" % P["spacing_mm"]
        ds.PixelSpacing = ["%.6f" % R.px, "%.6f" % R.px]
        z = float(R.z[k])
        ds.ImagePositionPatient = ["%.4f" % R.x0, "%.4f" % R.y0, "%.4f" % z]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = "%.4f" % z
        ds.Rows = ds.Columns = R.n
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = signed
        ds.RescaleIntercept = "%g" % icpt
        ds.RescaleSlope = "%g" % slope
        ds.RescaleType = "HU"
        ds.WindowCenter = str(wc)
        ds.WindowWidth = str(ww)
        ds.PixelData = np.ascontiguousarray(data[k]).tobytes()
        if P["rle"]:
            ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        ds.save_as(os.path.join(directory, "IM%04d.dcm" % (k + 1)), enforce_file_format=True)
    with open(os.path.join(directory, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=1)
    return truth

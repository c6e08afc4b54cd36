"""Spine anatomy: level table, pose chain, vertebra / disc / rib SDF op lists.

Vertebra local frame (mm): origin = spinal-canal centre at mid-body height,
u = patient left, v = posterior, w = superior (matches DICOM LPS when the
vertebra is not rotated).  World = t + R @ local.
"""
import numpy as np
from p2_sdf import (rbox, capsule, ellipsoid, ellcyl, custom, ellipse2d, smin,
                    pose_matrix, eval_ops, F32)

LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
# W D H disc_below AP Wc shape pw ph conv Ltp Lsp sp_ang pitch_lo pitch_hi facet_beta
TABLE = {
    "T9":  (34, 27, 20, 5.0, 16, 9.5, 0.0, 5.5, 15, 4, 16, 36, 50, -10, 0, 75),
    "T10": (36, 28, 21, 5.5, 16, 9.7, 0.0, 6.0, 15.5, 4, 15, 36, 45, -10, 0, 75),
    "T11": (38, 29, 22, 6.0, 16, 10.0, 0.0, 7.0, 16, 3, 12, 34, 35, -9, 0, 70),
    "T12": (41, 30, 24, 7.0, 16.5, 10.5, 0.1, 7.5, 15.5, 3, 8, 33, 20, -8, 1, 35),
    "L1":  (43, 32, 25, 9.0, 17, 12.0, 0.2, 7.0, 15, 8, 15, 32, 10, -7, 1, 25),
    "L2":  (45, 33, 26, 10.0, 16, 12.5, 0.3, 8.0, 15, 10, 20, 32, 8, -5, 3, 30),
    "L3":  (47, 34, 27, 11.0, 15.5, 13.0, 0.5, 9.5, 14.5, 13, 25, 32, 6, -2, 6, 35),
    "L4":  (49, 35, 27, 11.0, 15, 13.5, 0.8, 10.5, 14, 16, 20, 30, 5, 2, 11, 45),
    "L5":  (51, 35, 26, 11.0, 15, 14.5, 1.0, 12.0, 14, 22, 18, 26, 5, 5, 14, 50),
    "S1":  (50, 32, 26, 0.0, 13, 15.0, 0.7, 12.0, 16, 25, 0, 14, 40, 12, 22, 50),
}
KEYS = ("W", "D", "H", "disc", "AP", "Wc", "shape", "pw", "ph", "conv", "Ltp", "Lsp",
        "sp_ang", "pitch_lo", "pitch_hi", "beta")
EZ = np.array([0.0, 0.0, 1.0])


def unit(x):
    x = np.asarray(x, float)
    return x / np.linalg.norm(x)


def frame_cols(e1, e2):
    e1 = unit(e1)
    e2 = unit(np.asarray(e2, float) - e1 * (e1 @ e2))
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def canal2d(u, v, AP, Wc, shape):
    oval = ellipse2d(u, v, Wc, AP / 2)
    if shape <= 0:
        return oval
    cen = ellipse2d(u, v - 0.05 * AP, 0.5 * Wc, 0.45 * AP)
    lobe = ellipse2d(np.abs(u) - 0.62 * Wc, v + 0.3 * AP, 0.38 * Wc, 0.2 * AP)
    return (1 - shape) * oval + shape * smin(cen, lobe, 1.5)


def body_consts(a):
    De = 0.55 * a["D"]
    return De, -a["AP"] / 2 + 1 - a["D"] + De     # ellipse half depth, centre v


def body2d(u, v, a, grow=0.0):
    De, vb = body_consts(a)
    e = ellipse2d(u, v - vb, a["W"] / 2 + grow, De + grow)
    return np.maximum(e, v - (-a["AP"] / 2 + 1 + grow))


def body_prim(a, rr=2.0, cc=1.2):
    De, vb = body_consts(a)
    W2, H2 = a["W"] / 2, a["H"] / 2

    def fn(P):
        u, v, w = P
        d2 = body2d(u, v, a) + rr
        rho2 = np.minimum((u / W2) ** 2 + ((v - vb) / De) ** 2, 1.0)
        dz = np.abs(w) - (H2 - rr) + cc * (1.0 - rho2)
        return (np.minimum(np.maximum(d2, dz), 0)
                + np.sqrt(np.maximum(d2, 0) ** 2 + np.maximum(dz, 0) ** 2) - rr)
    return custom(fn, [-W2, vb - De, -H2], [W2, -a["AP"] / 2 + 1, H2])


def pedicle_geom(a, side, conv, tilt):
    """Pedicle as oblique elliptical cylinder. Returns dict with centre c (isthmus),
    axis ax (toward the vertebral body), ew (lateral), eh (~superior), A, B, hl, Wm."""
    s = 1.0 if side == "L" else -1.0
    th, ph = np.radians(conv), np.radians(tilt)
    ax = np.array([-s * np.sin(th) * np.cos(ph), -np.cos(th) * np.cos(ph), np.sin(ph)])
    ew = np.array([s * np.cos(th), -np.sin(th), 0.0])
    eh = -s * np.cross(ew, ax)
    A, B, AP = float(a["pw"]) / 2, float(a["ph"]) / 2, float(a["AP"])
    v_ant, v_post = -AP / 2 - 6, 0.2 * AP + 4
    v_c = (v_ant + v_post) / 2
    uu = np.arange(0, a["Wc"] + 4, 0.005)
    inside = canal2d(uu, np.full_like(uu, v_c), AP, a["Wc"], a["shape"]) <= 0
    Wm = float(uu[np.nonzero(inside)[0].max()]) - 1.0      # pedicle protrudes 1 mm into canal shape
    w_p = max(0.0, a["H"] / 2 - B - 0.5)
    c = np.array([s * (Wm + A * np.cos(th)), v_c - A * np.sin(th), w_p])
    hl = (v_post - v_ant) / 2 / (np.cos(th) * np.cos(ph))
    return dict(s=s, c=c, ax=ax, ew=ew, eh=eh, A=A, B=B, hl=hl, Wm=Wm, w_p=w_p,
                M=np.stack([ew, eh, ax], axis=1))


def joint_point(a, g):
    post = g["c"] - g["hl"] * g["ax"]
    return post, np.array([post[0] + g["s"] * 1.5, post[1] + 2.5])


def vertebra_ops(name, a, peds, above, below, lamx):
    """Op list of one vertebra (its own frame). peds: side->pedicle geom.
    above/below: (anat, peds) of neighbours or None. lamx: laminectomy."""
    ops, k = [("min", body_prim(a), 0.0)], 2.0
    H2, AP = a["H"] / 2, a["AP"]
    thor, sac = name.startswith("T"), name == "S1"
    De, vb = body_consts(a)
    if sac:   # fused S2 block and alae
        ops.append(("min", rbox([0, vb + 3, -H2 - 13], np.eye(3), [a["W"] * 0.33, De * 0.8, 14], 4), 4.0))
        for s in (1, -1):
            ops.append(("min", rbox([s * (a["W"] * 0.3 + 16), vb + 6, -4], np.eye(3), [19, 14, 17], 5), 4.0))
            ops.append(("min", rbox([s * (a["W"] * 0.3 + 12), vb + 8, -H2 - 14], np.eye(3), [14, 12, 13], 4), 4.0))
    h_lam = 16 if sac else (18 if thor else 22)
    w_l = -2.0 if not thor else -3.0
    roof = 2.5 if thor else 6.5
    P2 = np.array([0.0, AP / 2 + 2.5, w_l])
    for side, g in peds.items():
        s = g["s"]
        post, J = joint_point(a, g)
        beta = np.radians(a["beta"])
        df, nf = np.array([s * np.sin(beta), np.cos(beta), 0]), np.array([-s * np.cos(beta), np.sin(beta), 0])
        M = np.stack([df, nf, EZ], axis=1)
        top = H2 + (above[0]["disc"] + 2 if above else 6)
        lo = g["w_p"] - 2
        sc = np.array([J[0], J[1], (top + lo) / 2]) - 2.2 * nf
        ops.append(("min", rbox(sc, M, [7, 2.4, (top - lo) / 2], 1.2), k))
        if below is not None:   # inferior articular process sits posteromedial of the lower SAP
            ab, pb = below
            gb = pb[side]
            _, Jb = joint_point(ab, gb)
            bb = np.radians(ab["beta"])
            nfb = np.array([-s * np.cos(bb), np.sin(bb), 0])
            dfb = np.array([s * np.sin(bb), np.cos(bb), 0])
            lo2, hi2 = -H2 - a["disc"] - 10, -H2 + 6
            ic = np.array([Jb[0], Jb[1], (lo2 + hi2) / 2]) + 2.4 * nfb
            ops.append(("min", rbox(ic, np.stack([dfb, nfb, EZ], 1), [7, 2.4, (hi2 - lo2) / 2], 1.2), k))
            ops.append(("min", capsule([Jb[0] - s * 1, AP / 2 + 2.5 - roof, w_l - 4],
                                       [Jb[0] + 2.4 * nfb[0], Jb[1] + 2.4 * nfb[1], hi2 - 2], 3.0), k))
        if not sac:   # transverse process
            tau = np.radians(35 if thor else 10)
            d = np.array([s * np.cos(tau), np.sin(tau), 0])
            st = np.array([post[0] + s * 2, post[1] - 1, g["w_p"] - 1])
            L = a["Ltp"]
            ops.append(("min", rbox(st + d * L / 2, frame_cols(d, np.cross(EZ, d)),
                                    [L / 2 + 2, 4 if thor else 2.5, 5 if thor else 4.5], 1.5), k))
        if not lamx:
            P1 = np.array([J[0] - s * 1.0, AP / 2 + 2.5 - roof, w_l])
            e1 = unit(P2 - P1)
            M = np.stack([e1, EZ, np.cross(e1, EZ)], 1)
            ops.append(("min", rbox((P1 + P2) / 2, M, [np.linalg.norm(P2 - P1) / 2 + 2, h_lam / 2, 3.0], 1.5), k))
    if not lamx:
        sg = np.radians(a["sp_ang"])
        dsp = np.array([0, np.cos(sg), -np.sin(sg)])
        base = P2 + np.array([0, 2, -1])
        L = a["Lsp"]
        hsp = 9 if thor else (20 if sac else 16)
        ops.append(("min", rbox(base + dsp * L / 2, frame_cols([1, 0, 0], dsp), [3.0, L / 2, hsp / 2], 1.5), k))
        ops.append(("min", ellipsoid(base + dsp * L, np.eye(3), [4, 4, hsp / 2 + 1]), k))
    cw = [-H2 - a["disc"] - 14, H2 + 14]
    Wc = a["Wc"]
    ops.append(("carve", custom(lambda P: canal2d(P[0], P[1], AP, Wc, a["shape"]),
                                [-Wc - 1, -AP / 2 - 1, cw[0]], [Wc + 1, AP / 2 + 1, cw[1]])))
    for side, g in peds.items():
        ops.append(("min", ellcyl(g["c"], g["M"], g["A"], g["B"], g["hl"], 0.0), 1.0))
    return ops


def rib_ops(a, g, floating):
    s, De, vb = g["s"], *body_consts(a)
    post, J = joint_point(a, g)
    tau = np.radians(35)
    tip = np.array([post[0] + s * 2, post[1] - 1, g["w_p"] - 1]) + np.array([s * np.cos(tau), np.sin(tau), 0]) * a["Ltp"]
    pts = [np.array([s * (a["W"] * 0.4 + 2), -a["AP"] / 2 - 5, g["w_p"] - 3]), tip + [0, -6, -1],
           tip + [s * 28, -8, -12], tip + [s * 50, -38, -26]]
    if floating:
        pts = pts[:3]
    return [("min", capsule(pts[i], pts[i + 1], 4.5), 2.0) for i in range(len(pts) - 1)]


def ilium_ops(a, s):
    """Simple ilium: thick posterior part at the sacro-iliac joint plus a thin wing."""
    De, vb = body_consts(a)
    ua = a["W"] * 0.3 + 35                       # lateral edge of the sacral ala
    far = np.array([s * (ua + 62), vb - 48, 5])
    st = np.array([s * (ua + 10), vb + 6, 5])
    d = unit(far - st)
    return [("min", rbox([s * (ua + 11), vb + 24, -6], np.eye(3), [9, 22, 28], 4), 0.0),
            ("min", rbox((st + far) / 2, frame_cols(d, np.cross(EZ, d)), [np.linalg.norm(far - st) / 2, 3.5, 34], 3), 4.0)]


class Spine:
    """Pose chain for all LEVELS plus per-level geometry."""

    def __init__(self, params):
        an, po = params["anat"], params["pose"]
        self.anat = {n: dict(an[n]) for n in LEVELS}
        self.peds = {}
        for n in LEVELS:
            a = self.anat[n]
            self.peds[n] = {sd: pedicle_geom(a, sd, a["conv_" + sd], a["tilt"]) for sd in ("L", "R")}
        G = pose_matrix(po["yaw"], po["roll"], 0.0)
        Rl = {n: pose_matrix(self.anat[n]["yaw"], self.anat[n]["roll"], self.anat[n]["pitch"]) for n in LEVELS}
        B = {"S1": np.zeros(3)}
        for i in range(len(LEVELS) - 2, -1, -1):
            up, lo = LEVELS[i], LEVELS[i + 1]
            nbar = unit(Rl[up][:, 2] + Rl[lo][:, 2])
            B[up] = (B[lo] + Rl[lo] @ [0, 0, self.anat[lo]["H"] / 2] + nbar * self.anat[up]["disc"]
                     + Rl[up] @ [0, 0, self.anat[up]["H"] / 2])
        t = {n: B[n] - Rl[n] @ [0, body_consts(self.anat[n])[1], 0] for n in LEVELS}
        ref = t[po["ref_level"]]
        org = np.array([po["x"], po["y"], po["z"]])
        self.R = {n: G @ Rl[n] for n in LEVELS}
        self.t = {n: org + G @ (t[n] - ref) for n in LEVELS}

    def to_world(self, n, p):
        return self.t[n] + self.R[n] @ np.asarray(p, float)

    def vertebra(self, n, lamx):
        i = LEVELS.index(n)
        above = (self.anat[LEVELS[i - 1]], self.peds[LEVELS[i - 1]]) if i > 0 else None
        below = (self.anat[LEVELS[i + 1]], self.peds[LEVELS[i + 1]]) if i + 1 < len(LEVELS) else None
        return vertebra_ops(n, self.anat[n], self.peds[n], above, below, lamx)

    def sdf_points(self, n, pts_world, lamx=False):
        """Bone SDF of vertebra n at world points (N,3) (for ray marching)."""
        loc = (np.asarray(pts_world, float) - self.t[n]) @ self.R[n]
        return eval_ops((loc[:, 0], loc[:, 1], loc[:, 2]), self.vertebra(n, lamx))

    def disc_ops(self, up):
        """Disc below level `up`, returned in the (R, t) of a mid frame."""
        i = LEVELS.index(up)
        lo = LEVELS[i + 1]
        au, al = self.anat[up], self.anat[lo]
        am = {k: (au[k] + al[k]) / 2 for k in ("W", "D", "AP", "Wc", "shape")}
        Rm = self.R[up] + self.R[lo]
        U_, _, Vt = np.linalg.svd(Rm)
        Rm = U_ @ Vt
        tm = (self.t[up] + self.t[lo]) / 2
        planes = []
        for n, sgn in ((up, 1.0), (lo, -1.0)):
            nw = self.R[n][:, 2]
            pw = self.to_world(n, [0, 0, -sgn * self.anat[n]["H"] / 2])
            planes.append(((Rm.T @ nw * sgn).tolist(), (Rm.T @ (pw - tm)).tolist(), 1.6))

        def fn(P):
            d = body2d(P[0], P[1], am, 0.8)
            for nn, pp, ov in planes:
                d = np.maximum(d, nn[0] * (P[0] - pp[0]) + nn[1] * (P[1] - pp[1]) + nn[2] * (P[2] - pp[2]) - ov)
            return np.maximum(d, -canal2d(P[0], P[1], am["AP"], am["Wc"], am["shape"]))
        hz = np.linalg.norm(self.t[up] - self.t[lo]) / 2
        return Rm, tm, [("min", custom(fn, [-am["W"] / 2 - 2, -am["AP"] / 2 - am["D"] - 2, -hz],
                                        [am["W"] / 2 + 2, -am["AP"] / 2 + 2, hz]), 0.0)]

    def z_profile(self, z):
        """Interpolated canal pose and level parameters at world heights z (array)."""
        zs = np.array([self.t[n][2] for n in LEVELS])[::-1]        # ascending (S1 first)
        names = LEVELS[::-1]
        out = {}
        for j in range(3):
            out["t%d" % j] = np.interp(z, zs, [self.t[n][j] for n in names])
        for i in range(3):
            for j in range(3):
                out["R%d%d" % (i, j)] = np.interp(z, zs, [self.R[n][i, j] for n in names])
        for key in ("W", "D", "AP", "Wc", "shape"):
            out[key] = np.interp(z, zs, [self.anat[n][key] for n in names])
        out["thor"] = np.interp(z, zs, [1.0 if n.startswith("T") else 0.0 for n in names])
        out["cord"] = np.interp(z, zs, [1.0 if (n.startswith("T") or n == "L1") else 0.0 for n in names])
        out["lumbar"] = np.interp(z, zs, [float(i) for i, n in enumerate(names)])  # 0=S1 .. 9=T9
        return out

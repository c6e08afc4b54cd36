"""Implants in world (LPS) coordinates: pedicle screws with tulips, rods, cement,
interbody cage with tantalum markers, spinal-cord-stimulator lead, hip prosthesis.
Each builder returns paint items (prim, HU, tag, is_metal) plus truth records."""
import numpy as np
from p2_sdf import custom, capsule, ellipsoid, rbox
from p2_anatomy import unit, frame_cols, body_consts, LEVELS, EZ
from p2_family import grade


def _fit_offsets(g, r, m, fw, fh):
    A, B = g["A"], g["B"]
    ow, oh = fw * max(0.0, A - r - m) * 0.8, fh * max(0.0, B - r - m) * 0.8
    ph = np.linspace(0, 2 * np.pi, 73)
    for _ in range(30):
        x, y = ow + (r + m) * np.cos(ph), oh + (r + m) * np.sin(ph)
        if np.all((x / A) ** 2 + (y / B) ** 2 <= 1.0):
            return ow, oh
        ow, oh = ow * 0.8, oh * 0.8
    return 0.0, 0.0


def _march(sp, n, p0, d, lamx, t0, t1):
    """Distance along p0 + t*d (vertebra-local) to the first point outside bone."""
    from p2_sdf import eval_ops
    t = np.arange(t0, t1, 0.1)
    q = np.asarray(p0)[None, :] + t[:, None] * np.asarray(d)[None, :]
    out = np.nonzero(eval_ops((q[:, 0], q[:, 1], q[:, 2]), sp.vertebra(n, lamx)) > 0)[0]
    return float(t[out[0]]) if len(out) else float(t1)


def place_screw(sp, sc, lamx):
    n, side = sc["level"], sc["side"]
    g = sp.peds[n][side]
    r, dep, br = sc["diameter"] / 2, sc["depth"], sc["breach"]
    ow = oh = 0.0
    if br == "none":
        ow, oh = _fit_offsets(g, r, sc["margin"], sc["off_w"], sc["off_h"])
    elif br in ("medial", "lateral"):
        ow = (g["A"] + dep - r) * (1 if br == "lateral" else -1)
    else:
        oh = (g["B"] + dep - r) * (1 if br == "superior" else -1)
    off = ow * g["ew"] + oh * g["eh"]
    t_post = _march(sp, n, g["c"], -g["ax"], lamx, 0.0, 45.0)
    t_ant = _march(sp, n, g["c"], g["ax"], lamx, g["hl"], 90.0)
    L = max(25.0, min(sc["length"], t_post + t_ant - 3.0))
    e_loc = g["c"] + off - t_post * g["ax"]
    E, T = sp.to_world(n, e_loc), sp.to_world(n, e_loc + L * g["ax"])
    return dict(E=E, a=unit(T - E), L=L, r=r, T=T, off=(ow, oh))


def screw_prim(E, a, L, r, pitch, set_screw):
    td = float(np.clip(0.12 * 2 * r, 0.6, 1.0))
    core = r - td
    e1 = unit(np.cross(a, [0.0, 0.0, 1.0] if abs(a[2]) < 0.9 else [1.0, 0, 0]))
    e2 = np.cross(a, e1)
    pts = np.array([E - 17.5 * a, E + L * a])
    E, a, e1, e2, L, r, core, td = E.tolist(), a.tolist(), e1.tolist(), e2.tolist(), float(L), float(r), float(core), td

    def fn(P):
        x, y, z = P[0] - E[0], P[1] - E[1], P[2] - E[2]
        s = x * a[0] + y * a[1] + z * a[2]
        q1 = x * e1[0] + y * e1[1] + z * e1[2]
        q2 = x * e2[0] + y * e2[1] + z * e2[2]
        rho = np.sqrt(q1 * q1 + q2 * q2)
        frac = np.mod(s / pitch - np.arctan2(q2, q1) / (2 * np.pi), 1.0)
        rad = (core + td * (1 - np.abs(2 * frac - 1))) * np.clip((L - s) / 6.0, 0.3, 1.0)
        rad = np.where(s < 3.0, core, rad)
        d = np.maximum(np.maximum(rho - rad, -s), s - L)
        d = np.minimum(d, np.sqrt(rho * rho + (s + 2.5) ** 2) - (r + 1.0))           # spherical head
        tul = np.maximum(np.maximum(rho - 6.0, np.abs(s + 10.5) - 6.5), -np.maximum(rho - 3.6, s + 7.0))
        d = np.minimum(d, tul)
        if set_screw:
            d = np.minimum(d, np.maximum(rho - 3.8, np.abs(s + 15.5) - 1.5))
        return d
    return custom(fn, pts.min(0) - 7, pts.max(0) + 7)


def build_implants(sp, p):
    """Returns (paint list, screw truths, other_metal, screw geometry dict)."""
    hu, items, truth, other, geo = p["hu"], [], [], [], {}
    lam = set(p["laminectomy"])
    ti = hu["titanium"]
    rng = np.random.default_rng(p["scan"]["tex_seed"] + 17)
    for k, sc in enumerate(p["screws"]):
        G = place_screw(sp, sc, sc["level"] in lam)
        geo[sc["id"]] = G
        if p["cement"]:
            items.append((ellipsoid(G["T"] - 9 * G["a"], frame_cols(G["a"], EZ),
                                    rng.uniform([6, 5, 5], [9, 7.5, 7.5])), rng.uniform(1500, 2300), "cement", False))
        items.append((screw_prim(G["E"], G["a"], G["L"], G["r"], 2.75, p["rods"] is not None), ti, sc["id"], True))
        truth.append({"id": sc["id"], "level": sc["level"], "side": sc["side"],
                      "entry_mm": [round(float(x), 3) for x in G["E"]],
                      "tip_mm": [round(float(x), 3) for x in G["T"]], "diameter_mm": sc["diameter"],
                      "breach_direction": sc["breach"], "breach_depth_mm": sc["depth"],
                      "grade": grade(sc["depth"]), "laminectomy": sc["level"] in lam})
    if p["cement"]:
        other.append({"kind": "cement", "metal": False})
    if p["rods"]:
        rhu = hu["cocr"] if p["rods"]["material"] == "cocr" else ti
        for side in ("L", "R"):
            ss = sorted([s for s in p["screws"] if s["side"] == side], key=lambda s: LEVELS.index(s["level"]))
            if len(ss) < 2:
                continue
            pts = [geo[s["id"]]["E"] - 10.5 * geo[s["id"]]["a"] for s in ss]
            pts = [pts[0] + 6 * unit(pts[0] - pts[1])] + pts + [pts[-1] + 6 * unit(pts[-1] - pts[-2])]
            for a_, b_ in zip(pts[:-1], pts[1:]):
                items.append((capsule(a_, b_, p["rods"]["diameter"] / 2), rhu, "rod_" + side, True))
            other.append({"kind": "rod", "side": side, "diameter_mm": p["rods"]["diameter"],
                          "material": p["rods"]["material"], "points_mm": [[round(float(x), 2) for x in q] for q in pts]})
    if p["cage"]:
        items_c, rec = cage(sp, p["cage"], hu)
        items += items_c
        other.append(rec)
    if p["scs"]:
        items_s, rec = scs_lead(sp)
        items += items_s
        other.append(rec)
    if p["hip"]:
        items_h, rec = hip(sp, p["hip"], hu)
        items += items_h
        other.append(rec)
    return items, truth, other, geo


def cage(sp, c, hu):
    up = c["upper"]
    lo = LEVELS[LEVELS.index(up) + 1]
    Rm, tm, _ = sp.disc_ops(up)
    am = {k: (sp.anat[up][k] + sp.anat[lo][k]) / 2 for k in ("W", "D", "AP", "disc")}
    hz = am["disc"] / 2 + 0.6
    wall = -am["AP"] / 2 + 1
    s = 1.0 if c["side"] == "L" else -1.0
    items, marks = [], []
    if c["type"] == "TLIF":
        ang = np.radians(35)
        d = np.array([-s * np.cos(ang), -np.sin(ang), 0])   # from posterolateral toward anteromedial
        half = 14.0
        pm = np.array([s * 9.0, wall - c["gap_mm"] - 1.0, 0])
        cen = pm + (half - 1.5) * d
        boxes = [(cen, frame_cols(d, EZ), [half, 5.0, hz])]
        marks = [pm, pm + (2 * half - 3) * d]
    else:
        boxes, half = [], 12.0
        for s2 in (1, -1):
            pm = np.array([s2 * 9.5, wall - c["gap_mm"] - 1.0, 0])
            boxes.append((pm + [0, -(half - 1.5), 0], np.eye(3), [4.5, half, hz]))
            marks += [pm, pm + [0, -(2 * half - 3), 0]]
    for cen, M, hh in boxes:
        items.append((_framed(rbox(cen, M, hh, 1.0), Rm, tm), c["peek_hu"], "cage", False))
        items.append((_framed(rbox(cen, M, [hh[0] - 2.2, hh[1] - 2.2, hh[2] + 0.5], 0.5), Rm, tm), 450.0, "graft", False))
    mw = [Rm @ m + tm for m in marks]
    for m in mw:
        items.append((capsule(m - 1.5 * Rm[:, 2], m + 1.5 * Rm[:, 2], 0.5), 20000.0, "cage_markers", True))
    return items, {"kind": "cage_markers", "cage_type": c["type"], "level": "%s-%s" % (up, lo),
                   "markers_mm": [[round(float(x), 2) for x in m] for m in mw],
                   "posterior_marker_gap_mm": c["gap_mm"]}


def _framed(prim, R, t):
    """Wrap a primitive defined in frame (R, t) so it can be evaluated on world points."""
    from p2_sdf import aabb_world
    lo, hi = aabb_world(prim.lo, prim.hi, R, t)
    R, t = np.asarray(R).tolist(), np.asarray(t).tolist()

    def fn(P):
        d = [P[i] - t[i] for i in range(3)]
        return prim((R[0][0] * d[0] + R[1][0] * d[1] + R[2][0] * d[2],
                     R[0][1] * d[0] + R[1][1] * d[1] + R[2][1] * d[2],
                     R[0][2] * d[0] + R[1][2] * d[1] + R[2][2] * d[2]))
    return custom(fn, lo, hi)


def scs_lead(sp):
    pts = []
    for n in LEVELS[:5]:           # T9..L1 dorsal epidural space
        a = sp.anat[n]
        pts.append(sp.to_world(n, [1.5, a["AP"] / 2 - 2.0, 0]))
    a = sp.anat["L1"]
    pts.append(sp.to_world("L1", [2.5, a["AP"] / 2 + 4, -a["H"] / 2 - a["disc"] / 2]))
    pts.append(sp.to_world("L1", [10, a["AP"] / 2 + 45, -a["H"] / 2 - a["disc"] - 25]))
    items = [(capsule(p0, p1, 0.65), 5000.0, "scs_lead", True) for p0, p1 in zip(pts[:-1], pts[1:])]
    return items, {"kind": "scs_lead", "points_mm": [[round(float(x), 2) for x in q] for q in pts]}


def hip(sp, side, hu):
    s = 1.0 if side == "L" else -1.0
    a = sp.anat["S1"]
    top = sp.to_world("S1", [0, -a["AP"] / 2 - a["D"] / 2, a["H"] / 2])
    hc = top + np.array([s * 90.0, -25.0, -85.0])
    n_open, h = unit([s * 0.7, -0.3, -0.65]).tolist(), hc.tolist()

    def cup(P):
        x, y, z = P[0] - h[0], P[1] - h[1], P[2] - h[2]
        shell = np.abs(np.sqrt(x * x + y * y + z * z) - 24.5) - 1.5
        return np.maximum(shell, x * n_open[0] + y * n_open[1] + z * n_open[2])
    items = [(custom(cup, hc - 27, hc + 27), hu["titanium"], "hip_prosthesis", True),
             (ellipsoid(hc, np.eye(3), [14, 14, 14]), hu["cocr"], "hip_prosthesis", True),
             (capsule(hc, hc + 45 * unit([s * 0.5, -0.1, -0.85]), 6.0), hu["titanium"], "hip_prosthesis", True)]
    return items, {"kind": "hip_prosthesis", "side": side, "center_mm": [round(float(x), 2) for x in hc]}

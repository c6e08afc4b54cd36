"""Volume rendering: soft tissue layer, bone/disc/implant painting with partial
volume, slice-profile averaging, metal streaks, blur, noise."""
import numpy as np
from scipy import ndimage
from p2_sdf import Grid, eval_ops_grid, ellipse2d, F32
from p2_anatomy import Spine, LEVELS, canal2d, body_consts, rib_ops, ilium_ops
from p2_implants import build_implants


def _upsample(a, f, ny, nx):
    """Linear upsampling of (n, nyc, nxc) coarse samples taken every f fine pixels."""
    if f == 1:
        return a[:, :ny, :nx]
    out = a
    for axis, n in ((1, ny), (2, nx)):
        x = np.arange(n) / f
        i0 = np.floor(x).astype(int)
        w = (x - i0).astype(F32)
        sh = [1, 1, 1]
        sh[axis] = n
        w = w.reshape(sh)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out


def soft_layer(sp, p, grid, zc, f, lamz):
    """HU of all soft tissue (incl. canal contents and table) per output slice."""
    hu = p["hu"]
    rng = np.random.default_rng(p["scan"]["tex_seed"] + 1)
    back, ax, ay, subq = rng.uniform(58, 85), rng.uniform(140, 185), rng.uniform(95, 130), rng.uniform(10, 35)
    es_a, es_b = rng.uniform(17, 24), rng.uniform(15, 21)
    th = rng.uniform(0, np.pi, 5)
    kk = rng.uniform(2 * np.pi / 60, 2 * np.pi / 28, 5)
    waves = [(float(k * np.cos(t)), float(k * np.sin(t)), float(rng.uniform(-.06, .06)), float(rng.uniform(0, 6.3)))
             for k, t in zip(kk, th)]
    ps, nz = grid.ps, len(zc)
    nxc, nyc = (grid.nx - 1) // f + 2, (grid.ny - 1) // f + 2
    X = (grid.x0 + np.arange(nxc) * f * ps).astype(F32)[None, None, :]
    Y = (grid.y0 + np.arange(nyc) * f * ps).astype(F32)[None, :, None]
    y_table = float(sp.t[p["pose"]["ref_level"]][1] + back * 0.96)
    sz = max(1, int(round(1.5 / (zc[1] - zc[0]))))       # coarse z stride (~1.5 mm)
    zq = np.append(zc[::sz], zc[-1] + 1e-3)
    coarse = np.empty((len(zq), nyc, nxc), F32)
    for k0 in range(0, len(zq), 16):
        z = zq[k0:k0 + 16]
        pr = {k: v.reshape(-1, 1, 1).astype(F32) for k, v in sp.z_profile(z).items()}
        Z = z.reshape(-1, 1, 1).astype(F32)
        dx, dy, dz = X - pr["t0"], Y - pr["t1"], Z - pr["t2"]
        U = pr["R00"] * dx + pr["R10"] * dy + pr["R20"] * dz
        V = pr["R01"] * dx + pr["R11"] * dy + pr["R21"] * dz
        W, D, AP, Wc, thor, lum = pr["W"], pr["D"], pr["AP"], pr["Wc"], pr["thor"], pr["lumbar"]
        vb = -AP / 2 + 1 - D + 0.55 * D
        C = np.full(U.shape, -1000.0, F32)
        torso = np.maximum(ellipse2d(U, V - back + ay, ax, ay), (Y - y_table) + 0 * U)
        C[torso < 0] = hu["fat"]
        inner = ellipse2d(U, V - back + ay, ax - subq, ay - subq * 0.6)
        C[inner < 0] = hu["muscle"]
        fld = sum(np.cos(a * U + b * V + c * Z + d) for a, b, c, d in waves) * F32(0.6)
        visc = inner < -8
        C[visc] = np.where(fld[visc] > 0.2, 38.0, hu["fat"] + 15)
        C[visc & (fld > 1.35)] = -850.0                                      # bowel gas
        C[(V > vb - D * 0.55 - 15) & (inner < -8)] = hu["fat"] + 5            # retroperitoneal fat
        for s in (1, -1):
            C[ellipse2d(U - s * (14 + es_a), V - (AP / 2 + 6 + es_b), es_a, es_b) < 0] = hu["muscle"] + 3
            rps = np.interp(lum, [0, 1, 2, 3, 4, 5, 6, 7], [17, 20, 19, 16, 12, 8, 3, 0]).astype(F32)
            ps_m = ellipse2d(U - s * (W / 2 + 0.7 * rps), V - vb - 2, rps + 0.1, 1.1 * rps + 0.1) < 0
            C[ps_m & (rps > 1)] = hu["muscle"]
            ql = np.clip(lum - 1, 0, 1) * np.clip(6 - lum, 0, 1)
            C[(ellipse2d(U - s * (W / 2 + 40), V - vb - 22, 14 * ql + 0.1, 8 * ql + 0.1) < 0) & (ql > 0.2)] = hu["muscle"]
            C[(ellipse2d(U - s * (W / 2 + 40), V - vb - 14, 30 * thor + 0.1, 28 * thor + 0.1) < 0) & (thor > 0.3)] = -850.0
        bif = lum < 2.3
        C[(ellipse2d(U - np.where(bif, 22, 10), V - vb + 0.55 * D + 11, 11 - 3 * bif, 11 - 3 * bif) < 0)] = 42.0
        C[(ellipse2d(U + np.where(bif, 22, 20), V - vb + 0.55 * D + 9, 12 - 3 * bif, 9 - 2 * bif) < 0)] = 38.0
        for (za, zb) in lamz:                                                 # laminectomy scar / seroma
            inz = ((Z >= za) & (Z <= zb)) + 0 * U > 0
            C[inz & (ellipse2d(U, V - AP / 2 - 14, 11 + 0 * U, 14 + 0 * U) < 0)] = 25.0
        C[canal2d(U, V, AP, Wc + 1.0, 0.5) < 0] = hu["fat"] + 25             # epidural fat (coarse)
        sac_w = Wc * np.where(lum < 0.5, 0.35, 0.62 + 0.08 * thor)
        sac_h = AP * np.where(lum < 0.5, 0.25, 0.36 + 0.04 * thor)
        C[ellipse2d(U, V - 0.05 * AP, sac_w, sac_h) < 0] = hu["csf"]
        cw = 4.5 * pr["cord"] + 0.05
        C[(ellipse2d(U, V, cw, cw * 0.8) < 0) & (pr["cord"] > 0.3)] = hu["cord"]
        C[np.broadcast_to((Y > y_table + 2) & (Y < y_table + 14), U.shape)] = 120.0
        C[np.broadcast_to((Y > y_table + 4) & (Y < y_table + 12), U.shape)] = -700.0
        coarse[k0:k0 + len(z)] = C
    out = np.empty((nz, grid.ny, grid.nx), F32)
    for k in range(nz):
        j, r = divmod(k, sz)
        w = F32(r / sz) if j + 1 < len(zq) - 1 or r == 0 else F32((zc[k] - zq[j]) / (zq[j + 1] - zq[j]))
        out[k] = _upsample(coarse[j:j + 1] * (1 - w) + coarse[j + 1:j + 2] * w, f, grid.ny, grid.nx)[0]
    return out, y_table


def _texture(grid, box, seed):
    rng = np.random.default_rng(seed)
    X, Y, Z = grid.coords(box)
    t = 0
    for _ in range(4):
        k, ph, a = rng.uniform(0.15, 0.6, 3).tolist(), rng.uniform(0, 6.3, 3).tolist(), rng.uniform(15, 35)
        t = t + F32(a) * (np.cos(k[0] * X + ph[0]) * np.cos(k[1] * Y + ph[1]) * np.cos(k[2] * Z + ph[2]))
    return t


def paint(vol, grid, R, t, ops, hu, mmask=None, bone=None):
    """Paint an SDF object with partial-volume fractions. bone=(cortical, cancellous, t_cortex, seed)."""
    box, acc = eval_ops_grid(grid, R, t, ops)
    if box is None:
        return 0
    sl = tuple(slice(a, b) for a, b in box)
    fo = np.clip(F32(0.5) - acc / F32(grid.ps), 0, 1)
    if not fo.any():
        return 0
    sub = vol[sl]
    if bone is None:
        sub *= 1 - fo
        sub += F32(hu) * fo
    else:
        cort, canc, tc, seed = bone
        fi = np.clip(F32(0.5) - (acc + F32(tc)) / F32(grid.ps), 0, 1)
        sub *= 1 - fo
        sub += F32(cort) * (fo - fi) + (F32(canc) + _texture(grid, box, seed)) * fi
    if mmask is not None:
        mmask[sl] |= fo > 0.5
    return int((fo > 0.5).sum())


def scene_grid(sp, p, geo, other, small):
    sc = p["scan"]
    zs = []
    for n in p["instrumented"]:
        a = sp.anat[n]
        vb = body_consts(a)[1]
        zs += [sp.to_world(n, [0, vb, w])[2] for w in (-a["H"] / 2, a["H"] / 2)]
    z_lo, z_hi = min(zs) - sc["margin_lo"], max(zs) + sc["margin_hi"]
    for o in other:
        if o["kind"] == "hip_prosthesis":
            z_lo = min(z_lo, o["center_mm"][2] + 8)
    st, ps, m = sc["slice_mm"], sc["pixel_mm"], sc["matrix"]
    if small:
        ps, m, st = round(ps * m / 128, 4), 128, round(max(st, (z_hi - z_lo) / 60), 3)
    nz = int(np.clip(np.ceil((z_hi - z_lo) / st), 40, 250))
    nsub = int(np.ceil(st / (1.5 if small else 0.75)))
    z_first = round((z_lo + z_hi) / 2 - (nz - 1) / 2 * st, 3)
    cen = np.mean([sp.t[n] for n in p["instrumented"]], axis=0)
    pts = np.array([q for g in geo.values() for q in (g["E"] - 17.5 * g["a"], g["T"])] or [cen])
    half = m * ps / 2 - 8
    c = []
    for j, d in ((0, sc["fov_dx"]), (1, sc["fov_dy"] - 12)):
        lo_n, hi_n = pts[:, j].max() - half, pts[:, j].min() + half
        c.append(float(np.clip(cen[j] + d, lo_n, hi_n)) if lo_n <= hi_n else float(pts[:, j].mean()))
    x0, y0 = round(c[0] - (m - 1) / 2 * ps, 3), round(c[1] - (m - 1) / 2 * ps, 3)
    grid = Grid(x0, y0, z_first - st / 2 + st / (2 * nsub), ps, st / nsub, m, m, nz * nsub)
    return grid, dict(nz=nz, nsub=nsub, st=st, ps=ps, matrix=m, x0=x0, y0=y0,
                      zc=z_first + st * np.arange(nz))


def add_streaks(img, ms, info, p):
    sc = p["scan"]
    S = sc["streak"] * (0.3 if sc["mar"] else 1.0)
    ps, m = info["ps"], info["matrix"]
    f = max(1, int(round(1.0 / ps)))
    nc = (m - 1) // f + 2
    rng = np.random.default_rng(sc["noise_seed"] + 5)
    ang, amp = rng.uniform(0, np.pi, 8), rng.uniform(-0.6, 1.0, 8)
    sn, cs = np.sin(ang)[:, None, None].astype(F32), np.cos(ang)[:, None, None].astype(F32)
    amp = amp.astype(F32)
    X = (np.arange(nc) * f * ps)[None, :].astype(F32)
    Y = (np.arange(nc) * f * ps)[:, None].astype(F32)
    areas_out = np.zeros(len(img))
    for k in range(len(img)):
        if not ms[k].any():
            continue
        lab, nl = ndimage.label(ms[k])
        idx = np.arange(1, nl + 1)
        ar = ndimage.sum_labels(ms[k], lab, idx) * ps * ps
        cm = ndimage.center_of_mass(ms[k], lab, idx)
        areas_out[k] = ar.sum()
        comps = [((float(cm[i][1] * ps), float(cm[i][0] * ps)), float(ar[i]))
                 for i in np.argsort(-ar)[:6] if ar[i] >= 1.0]
        fld = np.zeros((nc, nc), F32)
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                (pi, ai), (pj, aj) = comps[i], comps[j]
                v = (pj[0] - pi[0], pj[1] - pi[1])
                L = max(float(np.hypot(*v)), 1e-3)
                dx, dy = X - pi[0], Y - pi[1]
                t = (dx * v[0] + dy * v[1]) / L ** 2
                perp = np.abs(dx * v[1] - dy * v[0]) / L
                w = float(np.clip(0.35 * np.sqrt(min(ai, aj)), 1.5, 6.0))
                out = np.maximum(np.maximum(-t, t - 1), 0) * L
                fld += F32(-350 * S * min(1.0, np.sqrt(ai * aj) / 60)) * np.exp(-(perp / w) ** 2 - out / 25)
        for (pc, a) in comps:
            dx, dy = X - pc[0], Y - pc[1]
            r = np.sqrt(dx * dx + dy * dy)
            perp = np.abs(dx * sn - dy * cs)
            rays = (amp[:, None, None] * np.exp(-(perp / 0.9) ** 2)).sum(0) * np.exp(-r / 60)
            fld += F32(250 * S * min(1.0, a / 80)) * rays * (r > np.sqrt(a / np.pi))
        img[k] += _upsample(fld[None], f, m, m)[0]
    return areas_out


def render(p, small=False, clean=False):
    """Returns (HU volume (nz, rows, cols) float32, info, screw truths, other_metal)."""
    sp = Spine(p)
    items, truth, other, geo = build_implants(sp, p)
    grid, info = scene_grid(sp, p, geo, other, small)
    hu, lam = p["hu"], set(p["laminectomy"])
    lamz = []
    for n in lam:
        a = sp.anat[n]
        lamz.append((sp.t[n][2] - a["H"] / 2 - a["disc"], sp.t[n][2] + a["H"] / 2))
    f = max(1, int(round(1.2 / info["ps"])))
    soft, _ = soft_layer(sp, p, grid, info["zc"], f, lamz)
    vol = np.repeat(soft, info["nsub"], axis=0)
    del soft
    mm = np.zeros(vol.shape, bool)
    I3, O3 = np.eye(3), np.zeros(3)
    for i in range(len(LEVELS) - 1):
        Rm, tm, ops = sp.disc_ops(LEVELS[i])
        paint(vol, grid, Rm, tm, ops, hu["disc"])
    for prim, h, tag, metal in items:
        if tag in ("cage", "graft"):
            paint(vol, grid, I3, O3, [("min", prim, 0.0)], h)
    seed = p["scan"]["tex_seed"]
    for i, n in enumerate(LEVELS):
        bone = (hu["cortical"], hu["cancellous"], p["cortex_mm"], seed + i)
        paint(vol, grid, sp.R[n], sp.t[n], sp.vertebra(n, n in lam), None, bone=bone)
        extra = []
        if n in ("T9", "T10", "T11", "T12"):
            extra = [rib_ops(sp.anat[n], sp.peds[n][s], n in ("T11", "T12")) for s in "LR"]
        if n == "S1":
            extra = [ilium_ops(sp.anat[n], s) for s in (1.0, -1.0)]
        for ops in extra:
            paint(vol, grid, sp.R[n], sp.t[n], ops, None, bone=(hu["cortical"], hu["cancellous"] + 40, 1.5, seed + 50 + i))
    counts = {}
    for prim, h, tag, metal in items:
        if tag not in ("cage", "graft"):
            c = paint(vol, grid, I3, O3, [("min", prim, 0.0)], h, mm if metal else None)
            counts[tag] = counts.get(tag, 0) + c
    nz, ns, m = info["nz"], info["nsub"], info["matrix"]
    img = vol.reshape(nz, ns, m, m).mean(1)
    del vol
    ms = mm.reshape(nz, ns, m, m).any(1)
    del mm
    other = [o for o in other if o["kind"] == "rod" and counts.get("rod_" + o["side"], 0) > 0
             or o["kind"] == "cement" or counts.get(o["kind"], 0) > 0]
    info["metal_voxels"] = counts
    info["metal_mask"] = ms
    if not clean:
        sc = p["scan"]
        area = add_streaks(img, ms, info, p)
        sg = sc["psf_mm"] / info["ps"]
        img = ndimage.gaussian_filter(img, (0, sg, sg), truncate=3.0)
        rng = np.random.default_rng(sc["noise_seed"])
        nse = rng.standard_normal(img.shape, dtype=F32)
        nse = ndimage.gaussian_filter(nse, (0, 0.7, 0.7), truncate=3.0)
        k1 = ndimage.gaussian_filter1d(np.eye(1, 15, 7).ravel(), 0.7, truncate=3.0)
        scale = sc["noise_hu"] / float((k1 ** 2).sum()) * (1 + 0.5 * np.minimum(1, area / 300.0))
        img += nse * scale.astype(F32)[:, None, None]
    return img, info, truth, other

"""Randomised, deterministic parameter sets (pure function of seed, index)."""
import numpy as np
from p2_anatomy import LEVELS, TABLE, KEYS

CATALOG = [4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5]
LOW_W = {"T10": 1, "T11": 1, "T12": 2, "L1": 3, "L2": 3, "L3": 4, "L4": 8, "L5": 10, "S1": 10}


def grade(depth):
    if depth <= 0:
        return "A"
    return "B" if depth < 2 else "C" if depth < 4 else "D" if depth < 6 else "E"


def _r(x, nd=3):
    return round(float(x), nd)


def _medial_depth(rng):
    u = rng.random()
    if u < 0.35:
        return rng.uniform(0.5, 2.0)
    if u < 0.6:     # close to a grade boundary, on either side
        return rng.choice([2.0, 4.0, 6.0]) + rng.choice([-1, 1]) * rng.uniform(0.25, 0.9)
    return rng.uniform(0.5, 10.0)


def study_params(seed, i):
    rng = np.random.default_rng([int(seed), int(i), 2026])
    p = {"study_id": "P2S%d-%04d" % (seed, i), "seed": int(seed), "index": int(i)}
    config = str(rng.choice(["none", "single", "unilateral", "bilateral"], p=[.06, .07, .09, .78]))
    scs = bool(rng.random() < 0.05)
    hip = (not scs) and bool(rng.random() < 0.05)
    n = {"none": 2, "single": 1}.get(config) or (int(rng.choice([2, 3])) if config == "unilateral"
                                                  else int(rng.choice([1, 2, 3], p=[.08, .6, .32])))
    cand = [L for L in LOW_W if LEVELS.index(L) - n + 1 >= 1]
    if scs:
        cand = [L for L in cand if L in ("T12", "L1", "L2", "L3")] or ["L2"]
    if hip:
        cand = ["L5", "S1"]
    w = np.array([LOW_W[L] for L in cand], float)
    low = LEVELS.index(str(rng.choice(cand, p=w / w.sum())))
    inst = LEVELS[low - n + 1: low + 1]
    p.update(config=config, instrumented=inst)
    # ---- anatomy
    sc = rng.uniform(0.92, 1.08)
    osteo = rng.random() < 0.15
    p["hu"] = {"fat": _r(rng.uniform(-115, -75), 1), "muscle": _r(rng.uniform(35, 60), 1),
               "cortical": _r(rng.uniform(1100, 1900), 1),
               "cancellous": _r(rng.uniform(60, 130) if osteo else rng.uniform(130, 300), 1),
               "disc": _r(rng.uniform(70, 100), 1), "csf": _r(rng.uniform(0, 15), 1),
               "cord": _r(rng.uniform(28, 40), 1), "titanium": _r(rng.uniform(6000, 9000), 0),
               "cocr": _r(rng.uniform(11000, 16000), 0)}
    cobb = rng.uniform(3, 15) if rng.random() < 0.35 else 0.0
    apex = rng.uniform(low - n - 1, low + 1)
    csign = rng.choice([-1.0, 1.0])
    anat = {}
    for k, L in enumerate(LEVELS):
        b = dict(zip(KEYS, TABLE[L]))
        a = {"W": b["W"] * sc * rng.uniform(.97, 1.03), "D": b["D"] * sc * rng.uniform(.97, 1.03),
             "H": b["H"] * sc * rng.uniform(.96, 1.04), "disc": b["disc"] * rng.uniform(0.7, 1.2),
             "AP": np.clip(b["AP"] + rng.normal(0, 2.5), 10, 22), "Wc": b["Wc"] * rng.uniform(.92, 1.08),
             "shape": 0.0 if L.startswith("T") else np.clip(b["shape"] + rng.uniform(-.2, .2), 0, 1),
             "pw": np.clip(b["pw"] + rng.normal(0, 1.2), 5, 12), "ph": np.clip(b["ph"] + rng.normal(0, 1.3), 10, 18),
             "Ltp": b["Ltp"] * rng.uniform(.8, 1.2), "Lsp": b["Lsp"] * rng.uniform(.85, 1.15),
             "sp_ang": b["sp_ang"] + rng.uniform(-5, 5), "beta": b["beta"] + rng.uniform(-8, 8),
             "pitch": rng.uniform(b["pitch_lo"], b["pitch_hi"]),
             "tilt": 0.0,
             "roll": csign * cobb / 2 * np.clip((apex - k) / 2.5, -1, 1),
             "yaw": csign * 0.5 * cobb * max(0.0, 1 - abs(k - apex) / 4)}
        a["ph"] = min(a["ph"], a["H"] - 3)
        # pedicle (= screw) tilt in the vertebra frame chosen so the cranio-caudal screw
        # tilt in scanner coordinates stays within about +-15 deg despite lordosis
        a["tilt"] = np.clip(rng.uniform(-15, 12) + a["pitch"], -10, 15)
        conv = np.clip(b["conv"] + rng.uniform(-4, 4), 0, 25)
        a["conv_L"], a["conv_R"] = (np.clip(conv + rng.uniform(-2, 2), 0, 25) for _ in range(2))
        anat[L] = {kk: _r(v) for kk, v in a.items()}
    p["anat"] = anat
    p["cortex_mm"] = _r(rng.uniform(0.5, 2.0))
    p["pose"] = {"yaw": _r(np.clip(rng.normal(0, 6), -15, 15)), "roll": _r(rng.normal(0, 1.5)),
                 "ref_level": inst[0], "x": _r(rng.uniform(-40, 40)), "y": _r(rng.uniform(20, 90)),
                 "z": _r(rng.uniform(-250, 50)), "cobb": _r(cobb)}
    # ---- acquisition
    matrix = int(rng.choice([256, 320, 384, 448, 512], p=[.25, .1, .15, .1, .4]))
    st = float(rng.choice([0.6, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]))
    if hip:
        st = max(st, 1.0)
    p["scan"] = {"matrix": matrix,
                 "pixel_mm": _r(rng.uniform(max(0.3, 130 / matrix), min(0.9, 460 / matrix)), 4),
                 "slice_mm": st, "margin_lo": _r(rng.uniform(8, 25)), "margin_hi": _r(rng.uniform(8, 25)),
                 "fov_dx": _r(rng.uniform(-15, 15)), "fov_dy": _r(rng.uniform(-15, 15)),
                 "psf_mm": _r(rng.uniform(0.3, 0.7)), "noise_hu": _r(rng.uniform(8, 40)),
                 "bits": str(rng.choice(["12", "16s", "16u"], p=[.6, .25, .15])),
                 "mar": bool(rng.random() < 0.2), "streak": _r(rng.uniform(0.6, 1.4)),
                 "kernel": str(rng.choice(["B70s", "BONEPLUS", "YB", "Br64", "FC30"])),
                 "kvp": int(rng.choice([100, 120, 140])), "tex_seed": int(rng.integers(1 << 30)),
                 "noise_seed": int(rng.integers(1 << 30))}
    # ---- implants
    screws = []
    if config != "none":
        sides = ["L", "R"] if config == "bilateral" else [str(rng.choice(["L", "R"]))]
        for L in inst:
            pw = anat[L]["pw"]
            for sd in sides:
                r = rng.random()
                if L == "S1":
                    br = "none" if r < 0.6 else "medial"
                else:
                    br = "none" if r < .55 else "medial" if r < .82 else "lateral" if r < .91 else \
                         "inferior" if r < .98 else "superior"
                depth = {"none": 0.0, "medial": 0, "lateral": rng.uniform(0.5, 8),
                         "inferior": rng.uniform(0.5, 6), "superior": rng.uniform(0.5, 4)}[br]
                if br == "medial":
                    depth = _medial_depth(rng)
                m = rng.uniform(0.3, 1.0)
                if br == "none":
                    ok = [c for c in CATALOG if c <= pw - 2 * m]
                    d = float(rng.choice(ok[-3:])) if ok else 4.5
                    m = min(m, (pw - d) / 2)
                else:
                    ok = [c for c in CATALOG if c <= min(7.5, pw + 1.5)]
                    d = float(rng.choice(ok[-4:]))
                screws.append({"id": "%s-%s" % (L, sd), "level": L, "side": sd, "diameter": d,
                               "length": _r(rng.uniform(35, 45) if L.startswith("T") else rng.uniform(35, 55), 1),
                               "breach": br, "depth": _r(depth), "margin": _r(m),
                               "off_w": _r(rng.uniform(-1, 1)), "off_h": _r(rng.uniform(-1, 1))})
        if config == "single":
            screws = screws[:1]
    p["screws"] = screws
    multi = len({s["level"] for s in screws}) >= 2
    p["rods"] = None if not (multi and rng.random() < 0.9) else {
        "diameter": float(rng.choice([5.5, 6.0, 6.35])), "material": str(rng.choice(["titanium", "cocr"], p=[.7, .3]))}
    lam = []
    if (screws and rng.random() < 0.25) or (not screws and rng.random() < 0.3):
        lam = list(inst) if rng.random() < 0.4 else [str(rng.choice(inst))]
    p["laminectomy"] = lam
    p["cement"] = bool(screws and config != "single" and rng.random() < 0.08)
    p["cage"] = None
    if config == "bilateral" and len(inst) >= 2 and rng.random() < 0.4:
        j = int(rng.integers(len(inst) - 1))
        u = rng.random()
        gap = rng.uniform(3, 10) if u < 0.7 else rng.uniform(0.5, 2) if u < 0.9 else rng.uniform(-3, 0)
        p["cage"] = {"upper": inst[j], "type": str(rng.choice(["TLIF", "PLIF"])), "gap_mm": _r(gap),
                     "side": str(rng.choice(["L", "R"])), "peek_hu": _r(rng.uniform(150, 300), 0)}
    p["scs"] = scs
    p["hip"] = str(rng.choice(["L", "R"])) if hip else None
    return p


def family(seed, n):
    return [study_params(seed, i) for i in range(n)]

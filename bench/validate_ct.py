"""Validation of the CT hardware analyser on an independent, randomised phantom family.

The family comes from tests/blind_phantom.py, a generator written blind (from an
anatomy brief, by someone who had not read workers/analysers/). It is generated
deterministically from a seed; each study is written to a temporary folder,
analysed in a fresh process (time and peak memory of that process), matched
screw by screw to the analytic truth (side, then nearest position), and scored:

- per truth grade: how the analyser graded it (confusion matrix, "NA" = not assessed or not found);
- D/E medial breach sensitivity (analyser grade D or E), A/B specificity (no C+ flag);
- Bland-Altman bias and 95 % limits of agreement of the medial depth, slices <= 1.5 mm;
- not-assessed rate with reasons; time and peak memory per study.

    .venv/bin/python bench/validate_ct.py --seed 20261126 --n 200 --report docs/ct-validation.md
    .venv/bin/python bench/validate_ct.py --code /work/baseline ...   # score another copy of the code

Prints the table and the targets; exits 1 when a target is missed (with --strict).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peakmem import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tests" / "blind_phantom.py"
GRADES = "ABCDE"
TARGETS = {"sens_de": 1.0, "spec_ab": 0.95, "bias": 0.5, "loa": 1.5, "na_thin": 0.05, "na_all": 0.15}


def load_generator(path: Path = GENERATOR):
    spec = importlib.util.spec_from_file_location("blind_phantom", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["blind_phantom"] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- child: analyse one study

def child(directory: str) -> None:
    """Analyse one study folder with whatever `workers` is first on sys.path; print one JSON line."""
    from pydicom import dcmread

    try:  # this tree (core/), or an older copy of the code given with --code (agent/)
        from core.headers import summarize
        from core.study import Study
    except ImportError:
        from agent.headers import summarize
        from agent.study import Study
    from workers.analysers.ct_hardware import CTHardwareAnalyser

    files = sorted(Path(directory).rglob("*.dcm"))
    study = Study.from_summaries(summarize(dcmread(p, stop_before_pixels=True), path=p) for p in files)
    t0 = time.perf_counter()
    a = CTHardwareAnalyser()
    res = a.analyse(study) if a.applies(study) else None
    wall = time.perf_counter() - t0
    d = res.to_dict() if res is not None else {"flags": [], "measurements": [], "not_assessed": ["did not apply"]}
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_rss_mb(),
                      "result": d}))


def analyse_dir(directory: Path, code: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # the child's sys.path[0] is bench/: without PYTHONPATH an editable install of another checkout (the venv's) would
    # supply `workers`, and this tree would not be the code scored (session 14)
    env["PYTHONPATH"] = str(code if code is not None else ROOT)
    out = subprocess.run([sys.executable, __file__, "--child", str(directory)], capture_output=True, text=True,
                         env=env, cwd=str(code or ROOT), timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["crash"], "wall_s": None, "peak_rss_mb": None,
                "result": {"flags": [], "measurements": [], "not_assessed": ["analyser crashed"]}}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- matching and scoring

def _num(x, default=None):
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def analyser_screws(result: dict) -> list[dict]:
    """One record per screw the analyser reported: side, position, grade/depth or not-assessed reason."""
    screws: dict[int, dict] = {}
    for m in result.get("measurements") or []:
        if "screw" not in m:
            continue
        s = screws.setdefault(m["screw"], {"screw": m["screw"], "side": m.get("side"), "z_mm": m.get("z_mm"),
                                           "grade": None, "depth": None, "reason": None})
        if m.get("name") == "medial_breach_depth":
            s.update(grade=m.get("grade"), depth=_num(m.get("value")), confidence=m.get("confidence"),
                     wall=m.get("medial_wall_depth_mm"), canal=m.get("canal_depth_mm"),
                     midline=m.get("midline_check"), against=m.get("measured_against"),
                     pedicle=m.get("pedicle_check"))
        for k in ("centre_lps_mm", "tip_lps_mm", "entry_lps_mm"):
            if m.get(k):
                s[k] = m[k]
    for x in (result.get("summary") or {}).get("not_assessed_screws") or []:
        s = screws.setdefault(x["screw"], {"screw": x["screw"], "side": x.get("side"), "z_mm": x.get("z_mm"),
                                           "grade": None, "depth": None})
        s["reason"] = x.get("reason_short") or x.get("reason")
        s["midline"] = x.get("midline_check")
        s["pedicle"] = x.get("pedicle_check")
        for k in ("centre_lps_mm", "tip_lps_mm", "entry_lps_mm"):
            if x.get(k):
                s[k] = x[k]
    for s in screws.values():
        if s["grade"] is None and not s.get("reason"):
            s["reason"] = _reason_from_text(result, s["screw"])
    return list(screws.values())


def _reason_from_text(result: dict, n: int) -> str:
    for r in result.get("not_assessed") or []:
        if r.startswith(f"screw {n} ") and "medial breach not assessed" in r:
            return r.split("medial breach not assessed:", 1)[1].strip().split(" (")[0]
    for r in result.get("not_assessed") or []:
        if "contrast" in r or "CT hardware not assessed" in r:
            return r[:80]
    return "no medial measurement"


SIDES = {"L": "left", "R": "right", "left": "left", "right": "right"}


def _centre(t: dict):
    e = t.get("entry_lps_mm") or t.get("entry_lps")
    p = t.get("tip_lps_mm") or t.get("tip_lps")
    if e and p:
        return [(a + b) / 2 for a, b in zip(e, p)]
    return t.get("centre_lps_mm")


def match(truth_screws: list[dict], found: list[dict], max_mm: float = 20.0) -> list[tuple[dict, dict | None]]:
    """Greedy: same side, nearest centre (3-D when the analyser gives positions, else z)."""
    pairs = []
    for t in truth_screws:
        tc = _centre(t)
        tside = SIDES.get(str(t.get("side")), t.get("side"))
        for f in found:
            if f.get("side") not in (tside, "unknown", None):
                continue
            fc = f.get("centre_lps_mm")
            if fc and tc:
                d = sum((a - b) ** 2 for a, b in zip(fc, tc)) ** 0.5
            elif f.get("z_mm") and tc:
                z0, z1 = sorted(f["z_mm"])
                d = 0.0 if z0 - 3 <= tc[2] <= z1 + 3 else min(abs(tc[2] - z0), abs(tc[2] - z1))
            else:
                continue
            penalty = 0.0 if f.get("side") == tside else 5.0
            pairs.append((d + penalty, id(t), id(f), t, f))
    pairs.sort(key=lambda x: x[0])
    used_t, used_f, out = set(), set(), {}
    for d, it, iff, t, f in pairs:
        if it in used_t or iff in used_f or d > max_mm:
            continue
        used_t.add(it)
        used_f.add(iff)
        out[it] = f
    return [(t, out.get(id(t))) for t in truth_screws]


def truth_medial(t: dict) -> tuple[str, float]:
    """(grade, depth) of the truth screw's intrusion into the canal (its medial breach depth).

    A screw breached laterally or inferiorly without entering the canal counts as A here: the analyser
    grades canal intrusion.
    """
    depths = t.get("breach_depths_mm") or {}
    if "medial" in depths:
        depth = _num(depths.get("medial"), 0.0) or 0.0
    else:
        direction = str(t.get("breach_direction") or "none").lower()
        depth = (_num(t.get("breach_depth_mm"), 0.0) or 0.0) if direction == "medial" else 0.0
    depth = max(depth, 0.0)
    g = "A" if depth <= 0 else "B" if depth < 2 else "C" if depth < 4 else "D" if depth < 6 else "E"
    return g, depth


def score(rows: list[dict]) -> dict:
    """rows: one per truth screw with truth_grade, truth_depth, got (grade or 'NA'), depth, reason, thin, lam."""
    conf = {g: {h: 0 for h in GRADES + "N"} for g in GRADES}
    for r in rows:
        conf[r["truth_grade"]][r["got"] if r["got"] in GRADES else "N"] += 1
    de = [r for r in rows if r["truth_grade"] in "DE"]
    ab = [r for r in rows if r["truth_grade"] in "AB"]
    ab_assessed = [r for r in ab if r["got"] in GRADES]
    false_c = [r for r in ab_assessed if r["got"] not in ("A", "B")]
    sens = sum(r["got"] in ("D", "E") for r in de) / len(de) if de else None
    sens_c = sum(r["got"] in ("C", "D", "E") for r in de) / len(de) if de else None
    spec = sum(r["got"] in ("A", "B") for r in ab_assessed) / len(ab_assessed) if ab_assessed else None
    ba = [r["depth"] - r["truth_depth"] for r in rows
          if r["thin"] and r["truth_grade"] != "A" and r["got"] in GRADES and r["depth"] is not None]
    import statistics as st

    bias = st.mean(ba) if ba else None
    sd = st.stdev(ba) if len(ba) > 1 else None
    thin = [r for r in rows if r["thin"] and not r["lam"]]
    na = lambda rs: (sum(r["got"] == "NA" for r in rs) / len(rs)) if rs else None  # noqa: E731
    reasons: dict[str, int] = {}
    for r in rows:
        if r["got"] == "NA":
            reasons[r["reason"] or "unknown"] = reasons.get(r["reason"] or "unknown", 0) + 1
    return {"n": len(rows), "confusion": conf, "n_de": len(de), "sens_de": sens, "sens_de_c": sens_c,
            "n_ab": len(ab), "n_ab_assessed": len(ab_assessed), "spec_ab": spec, "n_ba": len(ba), "bias": bias,
            "loa": (bias - 1.96 * sd, bias + 1.96 * sd) if sd is not None else None,
            "na_thin": na(thin), "n_thin": len(thin), "na_all": na(rows), "reasons": reasons,
            "missed_de": [r["id"] for r in de if r["got"] not in ("D", "E")],
            "false_c": [r["id"] for r in false_c],
            "false_c_designed_medial": [r["id"] for r in false_c if (r.get("designed_medial_mm") or 0) >= 4.0]}


def per_study(studies: list[dict]) -> dict:
    """The worklist's view, the image alone: a study is raised to STAT when any screw is graded D/E, so a missed D/E
    screw in a study with another D/E screw does not delay the read. Per study: those with a truth D/E medial breach
    raised STAT (misplaced_screw STAT), and STAT or "CT screw analysis incomplete" (a screw not assessed, which the
    worklist entry states and which with an early post-operative neurological complaint gives at least URGENT);
    those whose screws are all truth A/B raised STAT or URGENT by a misplaced_screw flag (over-triage)."""
    pos = stat = stat_or_inc = neg = neg_stat = neg_urgent = 0
    for x in studies:
        res = x.get("result") or {}
        grades = [truth_medial(t)[0] for t in (x.get("truth") or {}).get("screws") or []]
        prios = {f.get("priority") for f in res.get("flags") or [] if f.get("code") == "misplaced_screw"}
        incomplete = bool((res.get("summary") or {}).get("screws_not_assessed"))
        if any(g in "DE" for g in grades):
            pos += 1
            stat += "STAT" in prios
            stat_or_inc += "STAT" in prios or incomplete
        elif grades and all(g in "AB" for g in grades):
            neg += 1
            neg_stat += "STAT" in prios
            neg_urgent += "URGENT" in prios and "STAT" not in prios
    return {"n_de": pos, "stat": stat, "stat_or_incomplete": stat_or_inc, "n_ab": neg, "ab_stat": neg_stat,
            "ab_urgent": neg_urgent}


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f} %"


def verdicts(s: dict) -> dict:
    loa = s["loa"]
    return {
        "D/E medial sensitivity = 100 %": s["sens_de"] is not None and s["sens_de"] >= TARGETS["sens_de"],
        "A/B specificity >= 95 %": s["spec_ab"] is not None and s["spec_ab"] >= TARGETS["spec_ab"],
        "depth bias within +-0.5 mm (slices <= 1.5 mm)": s["bias"] is not None and abs(s["bias"]) <= TARGETS["bias"],
        "limits of agreement within +-1.5 mm": loa is not None and max(abs(loa[0]), abs(loa[1])) <= TARGETS["loa"],
        "not assessed <= 5 % (slices <= 1.5 mm, no laminectomy)": s["na_thin"] is not None and s["na_thin"] <= TARGETS["na_thin"],
        "not assessed <= 15 % overall": s["na_all"] is not None and s["na_all"] <= TARGETS["na_all"],
    }


def table(s: dict, studies: list[dict], title: str) -> str:
    L = [f"### {title}", ""]
    loa = s["loa"]
    L += ["| measure | value | target | met |", "|---|---|---|---|"]
    v = verdicts(s)
    vals = [_pct(s["sens_de"]) + f" ({s['n_de']} screws; flagged >= C: {_pct(s['sens_de_c'])})",
            _pct(s["spec_ab"]) + f" ({s['n_ab_assessed']} assessed of {s['n_ab']})",
            "n/a" if s["bias"] is None else f"{s['bias']:+.2f} mm ({s['n_ba']} breached screws)",
            "n/a" if loa is None else f"{loa[0]:+.2f} to {loa[1]:+.2f} mm",
            _pct(s["na_thin"]) + f" of {s['n_thin']}",
            _pct(s["na_all"]) + f" of {s['n']}"]
    for (name, ok), val in zip(v.items(), vals):
        L.append(f"| {name.split(' = ')[0].split(' >=')[0].split(' within')[0].split(' <=')[0]} | {val} | "
                 f"{name[len(name.split(' = ')[0].split(' >=')[0].split(' within')[0].split(' <=')[0]):].strip()} | "
                 f"{'yes' if ok else '**no**'} |")
    L += ["", "Confusion matrix (rows: truth grade of the medial breach; columns: analyser grade; NA = not assessed"
          " or not found):", "", "| truth \\ analyser | A | B | C | D | E | NA | n |", "|---|---|---|---|---|---|---|---|"]
    for g in GRADES:
        row = s["confusion"][g]
        L.append(f"| {g} | " + " | ".join(str(row[h]) for h in GRADES + "N") + f" | {sum(row.values())} |")
    if s["reasons"]:
        L += ["", "Not assessed, by reason:", ""]
        L += [f"- {k}: {n}" for k, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1])]
    ps = per_study(studies)
    if ps["n_de"] or ps["n_ab"]:
        L += ["", f"Per study (the worklist's view, the image alone): of {ps['n_de']} studies with a truth D/E medial "
              f"breach, {ps['stat']} raised STAT ({_pct(ps['stat'] / ps['n_de'] if ps['n_de'] else None)}) and "
              f"{ps['stat_or_incomplete']} STAT or \"CT screw analysis incomplete\"; of {ps['n_ab']} studies whose "
              f"screws are all truth A/B, {ps['ab_stat']} raised STAT and {ps['ab_urgent']} URGENT by a misplaced_screw "
              "flag."]
    walls = [x["wall_s"] for x in studies if x.get("wall_s") is not None]
    mems = [x["peak_rss_mb"] for x in studies if x.get("peak_rss_mb") is not None]
    if walls:
        walls.sort()
        mems.sort()
        L += ["", f"Time per study (analysis, one process): median {walls[len(walls) // 2]:.2f} s, max {walls[-1]:.2f} s; "
              f"peak memory (VmHWM, whole process): median {mems[len(mems) // 2]:.0f} MB, max {mems[-1]:.0f} MB; "
              f"{len(studies)} studies, {sum(1 for x in studies if x.get('error'))} analyser crash(es)."]
    if s["missed_de"]:
        L += ["", "Missed D/E: " + ", ".join(s["missed_de"][:30])]
    if s["false_c"]:
        L += ["", "A/B graded C or worse: " + ", ".join(s["false_c"][:30])]
    if s.get("false_c_designed_medial"):
        L += ["", f"Of these, {len(s['false_c_designed_medial'])} were designed with a medial breach of 4 mm or more that the "
              "truth records under 2 mm (family 4 measures a screw only beyond its entry into bone: at a laminectomy "
              "level the part crossing the open canal before it is not counted): "
              + ", ".join(s["false_c_designed_medial"][:30])]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- the run

def _study_params_info(gen, params) -> dict:
    """Slice thickness and laminectomy from the parameters, whatever their spelling."""
    d = params if isinstance(params, dict) else getattr(params, "__dict__", {})
    thick = d.get("slice_thickness") or d.get("slice_mm") or d.get("slice_thickness_mm") or d.get("slice_spacing")
    return {"thick": _num(thick), "params": d}


def run_one(generator: str, seed: int, idx: int, small: bool, code: str | None, cache: str | None) -> dict:
    """Generate study `idx` of the family (or reuse it from the cache) and analyse it in a fresh process."""
    tmp = None
    if cache:
        d = Path(cache) / f"{'small' if small else 'full'}-{seed}" / f"{idx:04d}"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="ctval-"))
        d = tmp / "study"
    try:
        if not (d / "truth.json").exists():
            gen = load_generator(Path(generator))
            params = gen.family(seed, idx + 1, small=small)[idx] if small else gen.family(seed, idx + 1)[idx]
            part = d.with_name(d.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            gen.write_study(params, str(part))
            part.rename(d)
        truth = json.loads((d / "truth.json").read_text())
        out = analyse_dir(d, Path(code) if code else None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out["truth"] = truth
    out["index"] = idx
    return out


def _designed_medial(t: dict) -> float | None:
    """The medial breach a truth screw was designed with (family 4's `designed`, "for information only"), else None.
    Family 4's truth measures the screw only beyond its entry into bone (its README, steps 2-3): at a laminectomy level
    a screw designed 8-10 mm medial crosses the open canal before it enters bone and is recorded medial 0 (grade A)."""
    d = t.get("designed") or {}
    return _num(d.get("depth_mm")) if d.get("direction") == "medial" else None


def rows_of(study: dict, sid: str) -> list[dict]:
    truth = study["truth"]
    tscrews = truth.get("screws") or []
    thick = _num(truth.get("slice_thickness_mm", truth.get("slice_thickness")), 1.0)
    found = analyser_screws(study["result"])
    rows = []
    for i, (t, f) in enumerate(match(tscrews, found)):
        g, depth = truth_medial(t)
        lam = bool(t.get("at_laminectomy_level", t.get("laminectomy")))
        got, reason, d = "NA", None, None
        if f is None:
            reason = "screw not found"
        elif f.get("grade") in tuple(GRADES):
            got, d = f["grade"], f.get("depth")
        else:
            reason = f.get("reason") or "not assessed"
        rows.append({"id": f"{sid}/{t.get('id') or t.get('level', '?')}", "truth_grade": g,
                     "truth_depth": depth, "got": got, "depth": d, "reason": reason, "thin": thick <= 1.5, "lam": lam,
                     "direction": t.get("breach_direction"), "slice_mm": thick,
                     "truth_all_depth": _num(t.get("breach_depth_mm"), 0.0), "wall": f and f.get("wall"),
                     "canal": f and f.get("canal"), "confidence": f and f.get("confidence"),
                     "midline": f and f.get("midline"), "against": f and f.get("against"),
                     "pedicle": f and f.get("pedicle"),
                     "level": t.get("level"), "designed_medial_mm": _designed_medial(t)})
    return rows


def run_family(seed: int, n: int, code: Path | None, workers: int = 2, generator: Path = GENERATOR,
               small: bool = False, log=print, cache: Path | None = None) -> tuple[dict, list[dict], list[dict]]:
    from concurrent.futures import ProcessPoolExecutor

    studies: list[dict] = []
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(run_one, str(generator), seed, i, small, str(code) if code else None,
                          str(cache) if cache else None) for i in range(n)]
        for i, f in enumerate(futs):
            studies.append(f.result())
            if log and (i + 1) % 10 == 0:
                log(f"  {i + 1}/{n} studies, {time.time() - t0:.0f} s", flush=True)
    rows = []
    for s in studies:
        rows += rows_of(s, f"{seed}:{s['index']}")
    return score(rows), studies, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--code", type=Path, help="root of another copy of the code to score (e.g. the original)")
    ap.add_argument("--label", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--generator", type=Path, default=GENERATOR)
    ap.add_argument("--json", type=Path, help="write rows and per-study results here")
    ap.add_argument("--report", type=Path, help="write the table into this markdown file between markers")
    ap.add_argument("--section", default="final", help="marker name of the section replaced in --report")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--small", action="store_true", help="the generator's small studies")
    ap.add_argument("--cache", type=Path, help="keep generated studies here and reuse them")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    t0 = time.time()
    s, studies, rows = run_family(args.seed, args.n, args.code, args.workers, args.generator, small=args.small,
                                  cache=args.cache)
    label = args.label or (f"code at {args.code}" if args.code else "this worktree")
    title = (f"{label}: seed {args.seed}, {args.n} studies, {s['n']} truth screws "
             f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {time.time() - t0:.0f} s)")
    text = table(s, studies, title)
    print(text)
    for name, ok in verdicts(s).items():
        print(f"{'MET ' if ok else 'MISS'}  {name}")
    if args.json:
        args.json.write_text(json.dumps({"score": s, "rows": rows, "studies": studies}, default=str, indent=1))
    if args.report:
        write_section(args.report, args.section, text)
    if args.strict and not all(verdicts(s).values()):
        sys.exit(1)


def write_section(path: Path, name: str, text: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    main()

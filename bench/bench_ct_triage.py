"""CT triage time of one study under two code trees, interleaved (not a test).

Writes the load benchmark's CT (dicomgen, BENCH_CT_SLICES 512x512 slices, gradient pixels) or
the bench_ct phantom slab (`--phantom`, screws in steel, analysed in full), optionally a lossless
compressed copy, then runs the CT hardware analyser on it in a fresh subprocess per round (once
to load the rules and policy as a running worker has, then timed), alternating the code trees given (e.g. a checkout of main and this worktree). Prints each round
and the median wall time and stage timings per tree, with the load average.

    .venv/bin/python bench/bench_ct_triage.py --trees /tmp/main-checkout . [--rounds 5] [--ts rle]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(tree: str, directory: str) -> None:
    sys.path[:0] = [tree, str(Path(tree) / "tests")]
    from pydicom import dcmread

    from core.headers import summarize
    from core.study import Study
    from workers.analysers import run_analysers
    from workers.analysers import volume
    from workers.analysers.ct_hardware import CTHardwareAnalyser

    assert Path(volume.__file__).resolve().is_relative_to(Path(tree).resolve()), volume.__file__
    study = Study.from_summaries(
        summarize(dcmread(p, stop_before_pixels=True), path=str(p)) for p in sorted(Path(directory).glob("*.dcm")))
    run_analysers(study, [CTHardwareAnalyser()])  # warm-up: rules and policy load once per worker process
    t0 = time.perf_counter()
    c0 = time.process_time()
    [res] = run_analysers(study, [CTHardwareAnalyser()])
    print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                      "timings": res.timings, "flags": [f.code for f in res.flags],
                      "not_assessed": res.not_assessed}))


def make(d: Path, slices: int, phantom: bool) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if phantom:
        import numpy as np
        from pydicom.uid import generate_uid

        from phantom import PhantomSpec, ScrewSpec, make_volume, write_series

        screws = [ScrewSpec(lev, side) for lev in range(3) for side in ("left", "right")]
        spec = PhantomSpec(shape=(slices, 512, 512), pixel=0.45, slice_spacing=0.6, levels=3, screws=screws,
                           metal="steel")
        z_all = (np.arange(slices) - slices / 2 + 0.5) * spec.slice_spacing
        study, series = generate_uid(), generate_uid()
        for start in range(0, slices, 50):
            z = z_all[start:start + 50]
            vol, _ = make_volume(spec, z)
            write_series(spec, d, vol=vol, z_positions=z, study_uid=study, series_uid=series, start=start)
    else:
        from dicomgen import SeriesSpec, StudySpec, write_study

        write_study(d, StudySpec(accession="BENCH-T", reason="Contrôle post-opératoire",
                                 series=[SeriesSpec("CT", "AX BONE 0.6", slices, rows=512, columns=512)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)], help="code trees to compare (interleaved)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slices", type=int, default=int(os.environ.get("BENCH_CT_SLICES", 300)))
    ap.add_argument("--phantom", action="store_true", help="the screw phantom instead of the load bench CT")
    ap.add_argument("--ts", choices=["rle", "jpegls", "j2k"], help="a lossless compressed copy")
    ap.add_argument("--keep", help="write/reuse the study here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    d = Path(args.keep or tmp.name)
    d.mkdir(parents=True, exist_ok=True)
    if not list(d.glob("*.dcm")):
        make(d, args.slices, args.phantom)
    if args.ts:
        sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
        from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

        from phantom import compress_copy

        src, d = sorted(d.glob("*.dcm")), d / args.ts
        if not list(d.glob("*.dcm")):
            compress_copy(src, d, {"rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}[args.ts])
    for p in d.glob("*.dcm"):  # warm the page cache for every tree alike
        p.read_bytes()
    runs: dict[str, list[dict]] = {t: [] for t in args.trees}
    for n in range(args.rounds):
        for t in args.trees:
            out = subprocess.run([sys.executable, __file__, "--child", t, str(d)], check=True, capture_output=True,
                                 text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            runs[t].append(r)
            print(f"round {n + 1} {t}: {r['wall_s']:.2f} s (CPU {r['cpu_s']:.2f} s) "
                  + " ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())
                  + f"  load {os.getloadavg()[0]:.2f}", flush=True)
    for t, rs in runs.items():
        stages = {k: statistics.median(r["timings"].get(k, 0.0) for r in rs) for k in rs[0]["timings"]}
        print(f"{t}: median of {len(rs)}: {statistics.median(r['wall_s'] for r in rs):.2f} s "
              f"(CPU {statistics.median(r['cpu_s'] for r in rs):.2f} s); "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
              + f"; flags {rs[0]['flags']}, not assessed {rs[0]['not_assessed'][:1]}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()

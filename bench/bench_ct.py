"""Benchmark of the CT hardware analyser on a 512 x 512 x 400 phantom (not a test).

Writes the phantom series to a temporary directory slab by slab, then analyses
it in a fresh subprocess and reports wall time per stage and peak memory
(its peak resident memory, VmHWM). Targets: <= 5 s and <= 1 GB on 2 cores.

    .venv/bin/python bench/bench_ct.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peakmem import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SHAPE = (400, 512, 512)


def make(out: Path) -> None:
    import numpy as np
    from pydicom.uid import generate_uid

    from phantom import PhantomSpec, ScrewSpec, make_volume, write_series

    screws = [ScrewSpec(lev, side) for lev in range(6) for side in ("left", "right")]
    screws[2] = ScrewSpec(1, "left", medial=5.0)
    screws[7] = ScrewSpec(3, "right", medial=3.0)
    screws[10] = ScrewSpec(5, "left", halo=3.5)
    spec = PhantomSpec(shape=SHAPE, pixel=0.45, slice_spacing=0.6, levels=6, screws=screws, metal="steel")
    z_all = (np.arange(SHAPE[0]) - SHAPE[0] / 2 + 0.5) * spec.slice_spacing
    study, series = generate_uid(), generate_uid()
    for start in range(0, SHAPE[0], 50):
        z = z_all[start:start + 50]
        vol, _ = make_volume(spec, z)
        write_series(spec, out, vol=vol, z_positions=z, study_uid=study, series_uid=series, start=start)


def analyse(directory: str) -> None:
    """Child process: analyse the series and print a JSON line."""
    from pydicom import dcmread

    from core.headers import summarize
    from core.study import Study
    from workers.analysers import load_analysers, run_analysers

    # A running worker has imported its analysers and loaded the image policy at start (`workers.actors.warm_up`):
    # the per-study time does not include that (0.7 s of imports, measured apart)
    t0 = time.perf_counter()
    analysers = load_analysers()
    from rules import image_policy

    image_policy.warm_up()
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    study = Study.from_summaries(
        summarize(dcmread(p, stop_before_pixels=True), path=p) for p in sorted(Path(directory).glob("*.dcm")))
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    [res] = run_analysers(study, analysers)
    wall = time.perf_counter() - t0
    print(json.dumps({
        "wall_s": wall, "index_s": t_index, "start_s": t_start, "timings": res.timings,
        "peak_rss_mb": peak_rss_mb(),
        "flags": [(f.code, f.priority.name) for f in res.flags],
        "screws": len([m for m in res.measurements if m["name"] == "medial_breach_depth"]),
        "grades": [m["grade"] for m in res.measurements if m["name"] == "medial_breach_depth"],
        "not_assessed": res.not_assessed,
    }))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="write/reuse the phantom here instead of a temporary directory")
    ap.add_argument("--ts", choices=["rle", "jpegls", "j2k"], help="analyse a lossless compressed copy instead")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        analyse(args.child)
        return
    tmp = None
    if args.keep:
        d = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory()
        d = Path(tmp.name)
    if not list(d.glob("*.dcm")):
        t0 = time.perf_counter()
        make(d)
        print(f"phantom {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} written in {time.perf_counter() - t0:.1f} s")
    if args.ts:
        from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

        from phantom import compress_copy

        src = sorted(d.glob("*.dcm"))
        d = d / args.ts
        if not list(d.glob("*.dcm")):
            compress_copy(src, d, {"rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}[args.ts])
        print(f"transfer syntax: {args.ts} (lossless)")
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    cmd = [sys.executable, __file__, "--child", str(d)]
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 2:
        cmd = ["taskset", "-c", "0,1"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"analysis wall time: {r['wall_s']:.2f} s (target <= 5 s); header index (not analyser): {r['index_s']:.2f} s; "
          f"worker start (imports, image policy; once per worker, not per study): {r['start_s']:.2f} s")
    for k, v in r["timings"].items():
        print(f"  {k:16s} {v:6.2f} s")
    print(f"  {'sum of stages':16s} {sum(r['timings'].values()):6.2f} s")
    print(f"peak memory (VmHWM of the child): {r['peak_rss_mb']:.0f} MB (target <= 1024 MB)")
    print(f"screws measured: {r['screws']}, grades {''.join(r['grades'])}, flags {r['flags']}")
    if r["not_assessed"]:
        print("not assessed:", r["not_assessed"])
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()

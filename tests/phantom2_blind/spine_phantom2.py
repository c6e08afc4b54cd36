"""spine_phantom2: blind synthetic post-operative spine CT phantom generator.

API:  family(seed, n) -> list[dict];  make_study(params) -> (datasets, truth);
      write_study(params, directory);  CLI: python spine_phantom2.py OUTDIR --seed 1 --n 200 [--small]
See README.md for conventions and the truth format.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from p2_family import family as _family          # noqa: E402
from p2_render import render                      # noqa: E402
from p2_dicom import datasets                     # noqa: E402


def family(seed: int, n: int) -> list:
    """n deterministic, JSON-serialisable parameter sets (pure function of seed)."""
    return _family(int(seed), int(n))


def make_study(params: dict):
    """-> (list of pydicom Datasets, one per axial slice, truth dict)."""
    img, info, screws, other = render(params, small=bool(params.get("small", False)))
    ds = datasets(img, info, params)
    truth = {"study_id": params["study_id"], "params": params,
             "has_metal": bool(screws) or any(o.get("metal", True) for o in other),
             "screws": screws, "other_metal": other}
    return ds, truth


def write_study(params: dict, directory: str):
    os.makedirs(directory, exist_ok=True)
    ds, truth = make_study(params)
    for i, d in enumerate(ds):
        d.save_as(os.path.join(directory, "CT%04d.dcm" % (i + 1)), enforce_file_format=True)
    with open(os.path.join(directory, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
    return truth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--small", action="store_true", help="128x128 matrices, <=60 slices (fast tests)")
    a = ap.parse_args(argv)
    for p in family(a.seed, a.n):
        if a.small:
            p = dict(p, small=True)
        t = write_study(p, os.path.join(a.outdir, p["study_id"]))
        print(p["study_id"], len(t["screws"]), "screws", [s["grade"] for s in t["screws"]], flush=True)


if __name__ == "__main__":
    main()

"""Adapter: the second blind phantom family (tests/phantom2_blind/, written by another author who
had read neither the analyser nor the first family) behind the API bench/validate_ct.py loads:
`family(seed, n, small=False)` and `write_study(params, directory)`; the truth gets the slice
thickness at the top level and the screw points under the names the harness reads. The generator itself is unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "phantom2_blind"))

import spine_phantom2 as _gen  # noqa: E402


def family(seed: int, n: int, small: bool = False) -> list[dict]:
    return [dict(p, small=True) if small else p for p in _gen.family(seed, n)]


def make_study(params: dict):
    return _gen.make_study(params)


def write_study(params: dict, directory: str) -> dict:
    truth = _gen.write_study(params, directory)
    truth["slice_thickness_mm"] = params["scan"]["slice_mm"]
    for screw in truth["screws"]:  # the harness's names for the same LPS points
        screw["entry_lps_mm"], screw["tip_lps_mm"] = screw["entry_mm"], screw["tip_mm"]
    (Path(directory) / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return truth

"""The casebook (rules/cases/*.yaml, 17,000+ cases) run on every core, for the tests that read all of it.

The suite has a time budget (about 15 minutes on 2 cores) and the casebook tests were most of it, run one case after
another on one core. Here the cases are split between worker processes (spawned, each loads the rulebook and the
casebook once) and each outcome is kept in the test process, so a case is evaluated once per way of reading it:

- `outcomes()`: every case as written: name -> Outcome (priority, flag codes, fired rules, failures);
- `rewritten(transform)`: the cases a metamorphic transform applies to, rewritten: name -> (priority, flag codes);
- `stat_lost(transform, seed)`: the blind rounds' STAT cases whose text, perturbed by a noise transform (a random
  generator seeded per case by its name and the seed, so the draw does not depend on the split), is no longer STAT.

The transforms themselves live in `casebook_transforms`, importable by the workers.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

CASES_DIR = Path(__file__).resolve().parents[2] / "rules" / "cases"
_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Outcome:
    priority: str
    codes: tuple[str, ...]
    fired: tuple[str, ...]
    failures: tuple[str, ...]


_RB = None
_CASES = None


def _init() -> None:
    global _RB, _CASES
    from rules.casebook import load_cases
    from rules.engine import Rulebook

    _RB = Rulebook.load()
    _CASES = load_cases(CASES_DIR)


def _plain(bounds: tuple[int, int]) -> list[tuple[str, Outcome]]:
    from rules.casebook import run_case

    out = []
    for case in _CASES[bounds[0] : bounds[1]]:
        failures, res = run_case(_RB, case)
        out.append((case.name, Outcome(res.priority.name, tuple(sorted(f.code for f in res.flags)), tuple(res.fired_rules),
                                       tuple(failures))))
    return out


def _rewritten(args: tuple[str, int, int]) -> list[tuple[str, tuple[str, tuple[str, ...]]]]:
    from casebook_transforms import TRANSFORMS, applies
    from rules.casebook import build_study
    from rules.model import Flag

    name, lo, hi = args
    out = []
    for case in _CASES[lo:hi]:
        if not applies(case, name):
            continue
        data = case.data  # evaluated as run_case does (surgery record, priors, image findings), only the text rewritten
        res = _RB.evaluate(build_study({**data, "fields": TRANSFORMS[name](data)}), surgery=data.get("surgery"),
                           priors=data.get("priors"), findings=[Flag.from_dict(f) for f in data.get("findings") or []])
        out.append((case.name, (res.priority.name, tuple(sorted(f.code for f in res.flags)))))
    return out


def _noisy(args: tuple[str, int, int, int]) -> list[str]:
    import random

    from casebook_transforms import NOISE, blind_stat
    from rules.casebook import run_case

    name, seed, lo, hi = args
    lost = []
    for case in _CASES[lo:hi]:
        if not blind_stat(case):
            continue
        rng = random.Random(f"{seed}/{case.name}")
        data = {**case.data, "fields": {k: NOISE[name](str(v), rng) for k, v in (case.data.get("fields") or {}).items()}}
        _, res = run_case(_RB, type(case)(case.scenario, case.name, data, case.file, case.line))
        if res.priority.name != "STAT":
            lost.append(case.name)
    return lost


_POOL = None
_N = None
_CACHE: dict = {}


def _pool():
    global _POOL, _N
    if _POOL is None:
        from rules.casebook import load_cases

        _N = len(load_cases(CASES_DIR))
        _POOL = multiprocessing.get_context("spawn").Pool(_WORKERS, initializer=_init)
    return _POOL


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def outcomes() -> dict[str, Outcome]:
    if "plain" not in _CACHE:
        pool = _pool()
        _CACHE["plain"] = dict(pair for part in pool.map(_plain, _chunks(_N, _WORKERS * 8)) for pair in part)
    return _CACHE["plain"]


def rewritten(name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    pool = _pool()
    return dict(pair for part in pool.map(_rewritten, [(name, lo, hi) for lo, hi in _chunks(_N, _WORKERS * 8)]) for pair in part)


def stat_lost(name: str, seed: int = 0) -> list[str]:
    pool = _pool()
    return sorted(n for part in pool.map(_noisy, [(name, seed, lo, hi) for lo, hi in _chunks(_N, _WORKERS * 8)]) for n in part)

"""Micro-benchmark: mean rule evaluation time per study over the rule test cases.

Run: .venv/bin/python bench/bench_rules.py [rounds]   (target: < 5 ms per study)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.casebook import build_study, load_cases  # noqa: E402
from rules.engine import DEFAULT_DIRECTORY, Rulebook  # noqa: E402


def main(rounds: int = 20) -> None:
    rulebook = Rulebook.load()
    cases = load_cases(DEFAULT_DIRECTORY / "cases")
    studies = [(build_study(c.data), c.data.get("surgery"), c.data.get("priors")) for c in cases]
    for s, surgery, priors in studies:  # warm-up
        rulebook.evaluate(s, surgery=surgery, priors=priors)
    start = time.perf_counter()
    for _ in range(rounds):
        for s, surgery, priors in studies:
            rulebook.evaluate(s, surgery=surgery, priors=priors)
    elapsed = time.perf_counter() - start
    n = rounds * len(studies)
    print(f"rulebook {rulebook.version}: {len(rulebook.rules)} rules, {len(studies)} studies x {rounds} rounds")
    print(f"mean evaluation time per study: {elapsed / n * 1000:.3f} ms (target < 5 ms)")
    start = time.perf_counter()
    Rulebook.load()
    print(f"rulebook load: {(time.perf_counter() - start) * 1000:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)

"""Micro-benchmark of the rules (text reader + rules + safety net), per study.

Run: .venv/bin/python bench/bench_rules.py [rounds]
Reports the median and 95th percentile evaluation time per study over every case in
rules/cases/ (blind rounds included; target: median <= 10 ms), the time and peak memory
(tracemalloc) for a study with 64 KB of request text and for an 8,000-letter word, and the
rulebook load time.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.casebook import build_study, load_cases  # noqa: E402
from rules.engine import DEFAULT_DIRECTORY, Rulebook  # noqa: E402


def _measure(rulebook: Rulebook, fields: dict) -> tuple[float, float]:
    study = build_study({"fields": fields})
    start = time.perf_counter()
    rulebook.evaluate(study)
    elapsed = (time.perf_counter() - start) * 1000
    tracemalloc.start()
    rulebook.evaluate(build_study({"fields": {k: v + " " for k, v in fields.items()}}))  # not the cached text
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return elapsed, peak


def main(rounds: int = 5) -> None:
    start = time.perf_counter()
    rulebook = Rulebook.load()
    load_ms = (time.perf_counter() - start) * 1000
    cases = load_cases(DEFAULT_DIRECTORY / "cases")
    studies = [(build_study(c.data), c.data.get("surgery"), c.data.get("priors")) for c in cases]
    for s, surgery, priors in studies:  # warm-up
        rulebook.evaluate(s, surgery=surgery, priors=priors)
    times: list[float] = []
    for _ in range(rounds):
        for s, surgery, priors in studies:
            t = time.perf_counter()
            rulebook.evaluate(s, surgery=surgery, priors=priors)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"rulebook {rulebook.version}: {len(rulebook.rules)} rules, {len(rulebook.safety_net)} safety-net entries, "
          f"{len(studies)} studies x {rounds} rounds")
    print(f"per study: median {statistics.median(times):.3f} ms, p95 {times[int(len(times) * 0.95)]:.3f} ms, "
          f"max {times[-1]:.3f} ms (target: median <= 10 ms)")
    sentence = "Arthrodèse L4-S1 J+2, pas de fièvre, radiculalgie L5 gauche nouvelle, ?vis. "
    text = (sentence * (65536 // len(sentence) + 1))[:65536]
    keywords = ["ReasonForTheRequestedProcedure", "AdditionalPatientHistory", "RequestedProcedureComments", "StudyComments"]
    fields = {k: text[i * 16384 : (i + 1) * 16384] for i, k in enumerate(keywords)}
    ms, mb = _measure(rulebook, fields)
    print(f"64 KB of request text (4 fields x 16 KB): {ms:.0f} ms, peak {mb:.1f} MB (tracemalloc)")
    ms, mb = _measure(rulebook, {"ReasonForTheRequestedProcedure": "x" * 8000 + " hematome " + "y" * 8000})
    print(f"two 8,000-letter words: {ms:.1f} ms, peak {mb:.2f} MB (tracemalloc)")
    print(f"rulebook load: {load_ms:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)

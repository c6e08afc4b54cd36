"""`pacs-triage rules eval DIR_OR_FILE`: score case files written by someone else.

Reads case YAML in the format of rules/cases/*.yaml (fields, study_date, modality,
order_priority, expect{priority, flags, absent}), tolerating keys the rulebook's own
cases do not use (a file-level or per-case ``scenario``, notes, ids), runs each case
through the rulebook and reports what matters for triage safety:

- priority agreement, STAT sensitivity (expected STAT -> got STAT);
- under-triage (got below expected: the failure that matters) with the list of cases;
- over-triage rate (got above expected);
- must-flag recall (expect.flags raised) and contradicted flags (expect.absent raised);
- a 3x3 confusion matrix of priorities and the per-case misses.

No patient data is printed beyond the case names and the texts the case file holds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rules.casebook import Case, run_case
from rules.engine import Rulebook
from rules.loader import RulebookError, read_yaml
from rules.model import FLAG_CODES, Priority

_ORDER = (Priority.ROUTINE, Priority.URGENT, Priority.STAT)


@dataclass
class CaseResult:
    name: str
    file: str
    line: int
    scenario: str
    expected: Priority | None
    got: Priority
    must: list[str]
    missing: list[str]
    forbidden_raised: list[str]
    flags: list[str]
    course: str
    ms: float
    text: str = ""


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    # ---- figures ----
    def _with_priority(self):
        return [r for r in self.results if r.expected is not None]

    def figures(self) -> dict:
        rs = self._with_priority()
        n = len(self.results)
        agree = sum(r.got == r.expected for r in rs)
        stat = [r for r in rs if r.expected == Priority.STAT]
        stat_hit = sum(r.got == Priority.STAT for r in stat)
        under = [r for r in rs if r.got < r.expected]
        over = [r for r in rs if r.got > r.expected]
        must = sum(len(r.must) for r in self.results)
        found = must - sum(len(r.missing) for r in self.results)
        contradicted = sum(len(r.forbidden_raised) for r in self.results)
        matrix = {e.name: {g.name: 0 for g in _ORDER} for e in _ORDER}
        for r in rs:
            matrix[r.expected.name][r.got.name] += 1
        times = sorted(r.ms for r in self.results)
        return {
            "n": n,
            "with_priority": len(rs),
            "agreement": _ratio(agree, len(rs)),
            "agreement_count": agree,
            "stat_sensitivity": _ratio(stat_hit, len(stat)),
            "stat_hit": stat_hit,
            "stat_expected": len(stat),
            "under_triage": len(under),
            "under_triage_cases": [r.name for r in under],
            "over_triage": len(over),
            "over_triage_rate": _ratio(len(over), len(rs)),
            "over_triage_cases": [r.name for r in over],
            "flag_recall": _ratio(found, must),
            "flags_expected": must,
            "flags_found": found,
            "contradicted_flags": contradicted,
            "contradicted_cases": [r.name for r in self.results if r.forbidden_raised],
            "confusion": matrix,
            "median_ms": times[len(times) // 2] if times else None,
            "max_ms": times[-1] if times else None,
        }

    def misses(self) -> list[CaseResult]:
        return [r for r in self.results if (r.expected is not None and r.got != r.expected) or r.missing or r.forbidden_raised]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def load_eval_cases(path: Path) -> tuple[list[Case], list[str]]:
    """Cases from a file or every *.yaml under a directory; lenient about extra keys."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.y*ml") if p.is_file())
    cases: list[Case] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for f in files:
        doc = read_yaml(f)
        items = doc.get("cases") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            warnings.append(f"{f}: no list of cases, skipped")
            continue
        file_scenario = str(doc.get("scenario", "")) if isinstance(doc, dict) else ""
        for k, item in enumerate(items):
            line = getattr(item, "line", 1)
            if not isinstance(item, dict) or not isinstance(item.get("expect"), dict):
                warnings.append(f"{f}:{line}: case without 'expect', skipped")
                continue
            name = str(item.get("name") or item.get("id") or f"{f.stem}#{k + 1}")
            if name in seen:
                seen[name] += 1
                name = f"{name}#{seen[name]}"
            else:
                seen[name] = 1
            expect = item["expect"]
            for code in list(expect.get("flags") or []) + list(expect.get("absent") or []):
                if code not in FLAG_CODES:
                    warnings.append(f"{f}:{line}: {name}: unknown flag code '{code}'")
            cases.append(Case(str(item.get("scenario", file_scenario)), name, item, str(f), line))
    return cases, warnings


def evaluate(path: Path, rulebook: Rulebook) -> Report:
    cases, warnings = load_eval_cases(path)
    report = Report(warnings=warnings)
    for case in cases:
        data = case.data
        expect = dict(data["expect"])
        expect["flags"] = [c for c in expect.get("flags") or [] if c in FLAG_CODES]
        expect["absent"] = [c for c in expect.get("absent") or [] if c in FLAG_CODES]
        trimmed = {"priority": expect["priority"]} if expect.get("priority") else {}
        run = Case(case.scenario, case.name, {**data, "expect": trimmed}, case.file, case.line)
        try:
            start = time.perf_counter()
            _, out = run_case(rulebook, run)
            ms = (time.perf_counter() - start) * 1000
        except Exception as err:  # a crash on one case is a miss, not the end of the evaluation
            report.warnings.append(f"{case.file}:{case.line}: {case.name}: evaluation failed: {type(err).__name__}")
            continue
        codes = [f.code for f in out.flags]
        expected = None
        if expect.get("priority"):
            try:
                expected = Priority.parse(expect["priority"])
            except KeyError:
                report.warnings.append(f"{case.file}:{case.line}: {case.name}: unknown priority {expect['priority']!r}")
        text = " | ".join(f"{k}: {v}" for k, v in (data.get("fields") or {}).items())
        report.results.append(
            CaseResult(
                name=case.name,
                file=case.file,
                line=case.line,
                scenario=case.scenario,
                expected=expected,
                got=out.priority,
                must=list(expect["flags"]),
                missing=[c for c in expect["flags"] if c not in codes],
                forbidden_raised=[c for c in expect["absent"] if c in codes],
                flags=codes,
                course=out.course,
                ms=ms,
                text=text,
            )
        )
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def render(report: Report, verbose: bool = True) -> str:
    f = report.figures()
    lines = [
        f"cases                      {f['n']}",
        f"priority agreement         {_pct(f['agreement'])} ({f['agreement_count']}/{f['with_priority']})",
        f"STAT sensitivity           {_pct(f['stat_sensitivity'])} ({f['stat_hit']}/{f['stat_expected']})",
        f"under-triage (got < exp.)  {f['under_triage']}",
        f"over-triage (got > exp.)   {f['over_triage']} ({_pct(f['over_triage_rate'])})",
        f"must-flag recall           {_pct(f['flag_recall'])} ({f['flags_found']}/{f['flags_expected']})",
        f"contradicted flags raised  {f['contradicted_flags']}",
        f"median time per study      {f['median_ms']:.2f} ms (max {f['max_ms']:.2f} ms)" if f["median_ms"] is not None else "",
        "",
        "confusion (rows expected, columns got)",
        f"{'':<10}" + "".join(f"{g.name:>9}" for g in _ORDER),
    ]
    for e in _ORDER:
        lines.append(f"{e.name:<10}" + "".join(f"{f['confusion'][e.name][g.name]:>9}" for g in _ORDER))
    under = [r for r in report.results if r.expected is not None and r.got < r.expected]
    if under:
        lines += ["", "UNDER-TRIAGE"]
        lines += [f"  {r.name}: expected {r.expected.name}, got {r.got.name} ({r.file}:{r.line})" for r in under]
    if verbose and report.misses():
        lines += ["", "misses"]
        for r in report.misses():
            parts = []
            if r.expected is not None and r.got != r.expected:
                parts.append(f"priority {r.got.name} (expected {r.expected.name})")
            if r.missing:
                parts.append(f"missing {r.missing}")
            if r.forbidden_raised:
                parts.append(f"contradicted {r.forbidden_raised}")
            lines.append(f"  {r.name}: " + "; ".join(parts) + f"; course {r.course}; flags {r.flags}")
            lines.append(f"      {r.text[:300]}")
    if report.warnings:
        lines += ["", "warnings"] + [f"  {w}" for w in report.warnings]
    return "\n".join(lines)


def main(path: Path | str, as_json: bool = False, rules_dir: Path | str | None = None, verbose: bool = True) -> int:
    """Print the evaluation; 0 when there is no under-triage and no contradicted flag."""
    try:
        rulebook = Rulebook.load(rules_dir)
    except RulebookError as err:
        print(err)
        return 2
    report = evaluate(Path(path), rulebook)
    figures = report.figures()
    try:
        _print(report, figures, as_json, verbose)
    except BrokenPipeError:  # piped into head: not an error
        pass
    return 0 if not figures["under_triage"] and not figures["contradicted_flags"] else 1


def _print(report: Report, figures: dict, as_json: bool, verbose: bool) -> None:
    if as_json:
        out = dict(figures)
        out["misses"] = [
            {"name": r.name, "file": r.file, "line": r.line, "expected": r.expected.name if r.expected is not None else None,
             "got": r.got.name, "missing": r.missing, "contradicted": r.forbidden_raised, "flags": r.flags}
            for r in report.misses()
        ]
        out["warnings"] = report.warnings
        print(json.dumps(out, indent=2))
    else:
        print(render(report, verbose))

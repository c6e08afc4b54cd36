"""`check` and `test` commands for the rulebook; the CLI calls these and exits with their code."""

from __future__ import annotations

from pathlib import Path

from rules.casebook import load_cases, run_case
from rules.engine import DEFAULT_DIRECTORY, Rulebook
from rules import schema
from rules.loader import RulebookError, read, rule_files


def check(directory: Path | str | None = None) -> int:
    """Validate the rule files; print every problem as file:line: message. 0 if valid."""
    directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
    errors = []
    for path in rule_files(directory):  # the JSON Schema first (rules/rule-file.schema.json), then the loader
        try:
            errors += schema.problems(path)
        except RulebookError:
            pass  # a syntax error: the loader reports it with its line
    source = read(directory)
    errors += source.errors
    for err in errors:
        print(err)
    if errors:
        print(f"{len(errors)} problem(s) in {directory}")
        return 1
    print(f"ok: {len(source.rules)} rules, {len(source.concepts)} concepts in {len(source.files)} files")
    return 0


def test(directory: Path | str | None = None, verbose: bool = False) -> int:
    """Run the cases in <directory>/cases/*.yaml and print a per-scenario table. 0 if all pass."""
    directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
    try:
        rulebook = Rulebook.load(directory)
        cases = load_cases(directory / "cases")
    except RulebookError as err:
        print(err)
        return 1
    table: dict[str, list[int]] = {}
    fired: set[str] = set()
    failed = 0
    for case in cases:
        failures, out = run_case(rulebook, case)
        fired.update(out.fired_rules)
        row = table.setdefault(case.scenario, [0, 0, 0])
        row[0] += 1
        row[1 if not failures else 2] += 1
        if failures:
            failed += 1
            print(f"FAIL {case.file}:{case.line}: {case.name}: " + "; ".join(failures))
        elif verbose:
            print(f"ok   {case.name}")
    print(f"{'scenario':<10}{'cases':>7}{'passed':>8}{'failed':>8}")
    for scenario in sorted(table, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)):
        n, ok, bad = table[scenario]
        print(f"{scenario:<10}{n:>7}{ok:>8}{bad:>8}")
    total = sum(r[0] for r in table.values())
    print(f"{'total':<10}{total:>7}{total - failed:>8}{failed:>8}")
    untested = [r.id for r in rulebook.rules if r.id not in fired]
    for rid in untested:
        print(f"untested rule: {rid} (no case makes it fire)")
    return 1 if failed or untested else 0

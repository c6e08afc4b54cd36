"""`pacs-triage rules eval`: figures on a case file written by someone else."""

import json
import subprocess
import sys
from pathlib import Path

from rules.engine import Rulebook
from rules.evaluation import evaluate, load_eval_cases

RB = Rulebook.load()

CASES = """
scenario: blind test set
cases:
  - name: stat_hit
    scenario: cauda equina
    note: extra keys are tolerated
    fields: {ReasonForTheRequestedProcedure: "Discectomie J1, syndrome de la queue de cheval"}
    expect: {priority: STAT, flags: [epidural_haematoma], absent: [misplaced_screw]}
  - name: routine_control
    fields: {ReasonForTheRequestedProcedure: "Contrôle à 1 an d'une arthrodèse, asymptomatique"}
    expect: {priority: ROUTINE, absent: [epidural_haematoma]}
  - name: impossible_under
    fields: {ReasonForTheRequestedProcedure: "Contrôle de routine"}
    expect: {priority: STAT, flags: [cord_compression]}
  - name: over
    order_priority: STAT
    fields: {ReasonForTheRequestedProcedure: "Contrôle de routine"}
    expect: {priority: URGENT, absent: []}
"""


def _write(tmp_path: Path) -> Path:
    p = tmp_path / "cases.yaml"
    p.write_text(CASES)
    return p


def test_figures(tmp_path):
    report = evaluate(_write(tmp_path), RB)
    f = report.figures()
    assert f["n"] == 4
    assert f["agreement_count"] == 2 and f["agreement"] == 0.5
    assert f["stat_expected"] == 2 and f["stat_hit"] == 1 and f["stat_sensitivity"] == 0.5
    assert f["under_triage"] == 1 and f["under_triage_cases"] == ["impossible_under"]
    assert f["over_triage"] == 1 and f["over_triage_rate"] == 0.25
    assert f["flags_expected"] == 2 and f["flags_found"] == 1
    assert f["contradicted_flags"] == 0
    assert f["confusion"]["STAT"]["ROUTINE"] == 1 and f["confusion"]["URGENT"]["STAT"] == 1
    assert {r.name for r in report.misses()} == {"impossible_under", "over"}


def test_scenario_kept_and_folder_read(tmp_path):
    _write(tmp_path)
    cases, warnings = load_eval_cases(tmp_path)
    assert [c.scenario for c in cases][:2] == ["cauda equina", "blind test set"]
    assert not warnings


def test_cli_json_and_exit_code(tmp_path):
    path = _write(tmp_path)
    run = subprocess.run([sys.executable, "-m", "agent.cli", "rules", "eval", str(path), "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # under-triage present
    out = json.loads(run.stdout)
    assert out["under_triage"] == 1 and out["n"] == 4
    # a folder of case files (two of the casebook's, not all 17,000 cases: the suite's time budget)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("blind_round83.yaml", "blind_round84.yaml"):
        (folder / name).write_bytes((Path("rules/cases") / name).read_bytes())
    run = subprocess.run([sys.executable, "-m", "agent.cli", "rules", "eval", str(folder)], capture_output=True, text=True)
    assert run.returncode == 0 and "STAT sensitivity" in run.stdout
    assert int(run.stdout.split("cases", 1)[1].split()[0]) > 300

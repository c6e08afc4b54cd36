"""`make bench` writes its latest table into bench/results.md without erasing the sections written below it.

Before session 26 bench_load.write_results replaced the whole file, so a `make bench` run would have wiped every
earlier session's measurements and their reading (bench/results.md is also where the README points for them).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load as bl  # noqa: E402

HISTORY = "## Session 24 (issue 14)\n\nper instance 2.9 ms\n\n## Session 10\n\nratio 0.22\n"


def test_first_run_goes_under_the_title_and_keeps_the_history():
    out = bl.merged_results(f"{bl.TITLE}\n\n{HISTORY}", "Run A\n\n| a | b | c |\n")
    assert out.startswith(bl.TITLE + "\n\n" + bl.LATEST_BEGIN)
    assert "Run A" in out and out.index("Run A") < out.index("## Session 24")
    assert out.endswith(HISTORY)


def test_a_later_run_replaces_only_the_previous_table():
    first = bl.merged_results(f"{bl.TITLE}\n\n{HISTORY}", "Run A\n")
    second = bl.merged_results(first, "Run B\n")
    assert "Run A" not in second and "Run B" in second
    assert second.count(bl.LATEST_BEGIN) == 1 and second.count(bl.LATEST_END) == 1
    assert second.endswith(HISTORY)


def test_an_empty_or_missing_file_gets_the_title():
    out = bl.merged_results("", "Run A\n")
    assert out.startswith(bl.TITLE) and "Run A" in out and out.endswith(bl.LATEST_END + "\n")


def test_the_repository_file_keeps_its_sessions(tmp_path, monkeypatch):
    f = tmp_path / "results.md"
    f.write_text((ROOT / "bench" / "results.md").read_text())
    before = f.read_text()
    monkeypatch.setattr(bl, "RESULTS", f)
    monkeypatch.setattr(bl, "rows", [("(e) idle", "0.5 %", "<= 1 %")])
    monkeypatch.delenv("BENCH_NO_RESULTS", raising=False)
    bl.write_results("2026-11-29 23:30", 60.0)
    after = f.read_text()
    assert "| (e) idle | 0.5 % | <= 1 % |" in after
    for heading in [line for line in before.splitlines() if line.startswith("## Session")]:
        assert heading in after

"""The audit trail: append-only JSON lines, identifiers and codes only, retention, export."""

from __future__ import annotations

import time

import pytest

from core import audit


def test_records_are_appended_exported_in_order_and_kept_for_the_retention(tmp_path):
    audit.configure(tmp_path)
    try:
        audit.record("received", study="1.2.3", instance="1.2.3.4", bytes=10, calling_aet="CT01")
        audit.record("triaged", study="1.2.3", revision=1, priority="STAT", rulebook="abc", flags=["x"])
        audit.record("replayed", study="1.2.3", kind="pacs", destination="A@h:1", attempts=8)
        with pytest.raises(ValueError):
            audit.record("triaged", study="1.2.3", note="free text is not allowed")
        with pytest.raises(ValueError):
            audit.record("something_else", study="1.2.3")
    finally:
        audit.configure(None)
    recs = list(audit.export(tmp_path))
    assert [r["event"] for r in recs] == ["received", "triaged", "replayed"]
    assert recs[0]["at"] <= recs[1]["at"] <= recs[2]["at"]
    files = list((tmp_path / "audit").rglob("*.jsonl"))
    assert len(files) == 1 and files[0].read_text().count("\n") == 3
    old = tmp_path / "audit" / "20200101"
    old.mkdir()
    (old / "h-1.jsonl").write_text('{"at": 1577836800, "event": "received"}\n')
    assert audit.sweep(tmp_path, retention_days=30) == 1 and not old.exists()
    assert list(audit.export(tmp_path, since=time.time() + 60)) == []

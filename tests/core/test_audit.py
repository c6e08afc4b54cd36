"""The audit trail: append-only JSON lines, identifiers and codes only, retention, export; an
object each process holds (no module state)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core import audit
from core.audit import AuditTrail
from core.config import Config


def test_records_are_appended_exported_in_order_and_kept_for_the_retention(tmp_path):
    trail = AuditTrail(tmp_path)
    trail.record("received", study="1.2.3", instance="1.2.3.4", bytes=10, calling_aet="CT01")
    trail.record("triaged", study="1.2.3", revision=1, priority="STAT", rulebook="abc", flags=["x"])
    trail.record("replayed", study="1.2.3", kind="pacs", destination="A@h:1", attempts=8)
    with pytest.raises(ValueError):
        trail.record("triaged", study="1.2.3", note="free text is not allowed")
    with pytest.raises(ValueError):
        trail.record("something_else", study="1.2.3")
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


def test_two_trails_in_one_process_are_independent(tmp_path):
    """What the module variable could not do: each holder writes where its own configuration says."""
    a, b, off = AuditTrail(tmp_path / "a"), AuditTrail(tmp_path / "b"), AuditTrail(tmp_path / "c", enabled=False)
    a.record("received", study="1.1")
    b.record("triaged", study="2.2")
    off.record("pushed", study="3.3")
    assert [r["study"] for r in audit.export(tmp_path / "a")] == ["1.1"]
    assert [r["study"] for r in audit.export(tmp_path / "b")] == ["2.2"]
    assert not (tmp_path / "c").exists() and not off.enabled


def test_a_disabled_trail_still_refuses_what_no_trail_may_carry(tmp_path):
    with pytest.raises(ValueError):
        AuditTrail(None).record("received", study="1.2", patient_name="DOE^JOHN")


def test_from_config_follows_data_dir_and_the_audit_option(tmp_path):
    on = AuditTrail.from_config(Config(data_dir=tmp_path / "d"))
    assert on.directory == tmp_path / "d" / "audit"
    assert AuditTrail.from_config(Config(data_dir=tmp_path / "d", audit=False)).directory is None


def test_the_module_keeps_no_mutable_state():
    """Only constants at module level: no directory, no lock, no configure(), frozen allow-lists."""
    assert not hasattr(audit, "configure") and not hasattr(audit, "record")
    lock_type = type(threading.Lock())
    state = {name: value for name, value in vars(audit).items() if not name.startswith("__")
             and (value is None or isinstance(value, (list, dict, set, bytearray, Path, lock_type)))}
    assert state == {}, f"module state in core.audit: {state}"
    assert isinstance(audit.EVENTS, frozenset) and isinstance(audit.FIELDS, frozenset)


def test_the_file_stays_open_and_a_new_day_or_process_opens_its_own(tmp_path, monkeypatch):
    """One write per record (no open/close each time); a new day or a forked process (its pid in
    the name) gets its own file, and a failed write opens the file again at the next record."""
    trail = AuditTrail(tmp_path)
    opened = []
    real_open = audit.os.open
    monkeypatch.setattr(audit.os, "open", lambda p, *a: opened.append(Path(p)) or real_open(p, *a))
    for n in range(5):
        trail.record("received", study="1.2.3", instance=f"1.2.3.{n}")
    assert len(opened) == 1
    now = time.time()
    monkeypatch.setattr(audit.time, "time", lambda: now + 86400)
    trail.record("received", study="1.2.3", instance="1.2.3.9")
    assert len(opened) == 2 and opened[1].parent.name != opened[0].parent.name
    monkeypatch.setattr(audit.os, "getpid", lambda: 999999)
    trail.record("received", study="1.2.3", instance="1.2.3.10")
    assert len(opened) == 3 and opened[2].name.endswith("-999999.jsonl")
    real_write = audit.os.write
    monkeypatch.setattr(audit.os, "write", lambda fd, b: (_ for _ in ()).throw(OSError(28, "No space")))
    trail.record("received", study="1.2.3", instance="1.2.3.11")  # not written, never raises
    monkeypatch.setattr(audit.os, "write", real_write)
    trail.record("received", study="1.2.3", instance="1.2.3.12")
    assert len(opened) == 4
    opened[3].unlink()  # removed (or rotated away) while open: the next record goes to a file by that name
    trail.record("received", study="1.2.3", instance="1.2.3.13")
    assert len(opened) == 5 and opened[4] == opened[3]
    trail.close()
    assert [r["instance"] for r in audit.export(tmp_path)] == [f"1.2.3.{n}" for n in (0, 1, 2, 3, 4, 9, 13)]  # 10, 12: in the removed file

"""The worklist entry is typed (core.entry) and its JSON Schema is the published contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from core.config import Config
from core.entry import OFFLINE_KEYS, EntryError, WorklistEntry, json_schema
from dicomgen import postop_three_series, write_study
from rules.casebook import build_study
from rules.engine import Rulebook
from sink_peers import HttpServer
from workers.pipeline import triage
from workers.sinks import webhook

DOCS = Path(__file__).resolve().parents[2] / "docs"


def pipeline_entry(text="POD 1 after L4-L5 fusion, ?epidural haematoma, urinary retention"):
    study = build_study({"fields": {"ReasonForTheRequestedProcedure": text}, "order_priority": "ROUTINE"})
    return triage(study, Rulebook.load(), analyse=False)


def test_published_schemas_are_the_ones_the_code_enforces():
    assert json.loads((DOCS / "worklist-entry.schema.json").read_text()) == json_schema()
    assert json.loads((DOCS / "worklist-entry.offline.schema.json").read_text()) == json_schema(OFFLINE_KEYS)


def test_a_pipeline_entry_follows_the_schema_and_round_trips():
    entry = pipeline_entry()
    jsonschema.validate(entry, json_schema())
    assert entry["priority"] == "STAT" and entry["flags"]
    assert WorklistEntry.from_dict(json.loads(json.dumps(entry))).to_dict() == entry


def test_the_offline_json_record_follows_the_offline_schema(tmp_path):
    write_study(tmp_path, postop_three_series(accession="ACC-9"))
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "triage", str(tmp_path), "--json", "--no-images"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in proc.stdout.splitlines()]
    jsonschema.validate(record, json_schema(OFFLINE_KEYS))


def test_the_webhook_body_follows_the_schema():
    server = HttpServer().start()
    try:
        entry = pipeline_entry()
        entry["revision"] = 1
        webhook.push(entry, server.url, Config())
        [req] = server.requests
        jsonschema.validate(json.loads(req["body"]), json_schema())
    finally:
        server.stop()


@pytest.mark.parametrize("change, message", [
    ({"priority": "HIGH"}, "priority"),
    ({"surprise": 1}, "unknown entry key"),
    ({"series_count": "3"}, "series_count"),
    ({"flags": [{"code": "epidural_haematoma", "priority": "STAT"}]}, "flag without"),
])
def test_an_entry_off_the_schema_is_refused(change, message):
    entry = pipeline_entry()
    entry.update(change)
    with pytest.raises(EntryError, match=message):
        WorklistEntry.from_dict(entry)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(entry, json_schema())


def test_a_missing_key_is_refused():
    entry = pipeline_entry()
    del entry["priority"]
    with pytest.raises(EntryError, match="missing"):
        WorklistEntry.from_dict(entry)

"""The worklist entry: one typed record per study, the one thing every sink and the console read.

`WorklistEntry` is built by the pipeline (`workers.pipeline.build_entry`), merged and stored
by `workers.worklist`, and delivered by the sinks as its JSON form (`to_dict()`).
`from_dict()` validates a stored or received entry: unknown keys, a missing key, a wrong
type or an unknown priority raise `EntryError`. `json_schema()` is the published contract
(`docs/worklist-entry.schema.json`, checked by the tests); `OFFLINE_KEYS` is the subset
printed by `pacs-triage triage --json`.

Versioned: `schema_version` changes when a key is removed or changes meaning; adding a key
does not.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1
PRIORITIES = ("STAT", "URGENT", "ROUTINE")


class EntryError(ValueError):
    """A worklist entry that does not follow the schema."""


@dataclass(kw_only=True)
class WorklistEntry:
    """What pacs-triage suggests for one study. Every flag is suspected and carries its evidence."""

    study_instance_uid: str
    priority: str  # STAT | URGENT | ROUTINE: max(order priority, flags), never lowered across revisions
    order_priority: str | None = None  # the order's own priority, the floor
    flags: list[dict] = field(default_factory=list)  # {code, status: suspected, priority, rule, rules, evidence}
    postop_interval_hours: float | None = None  # null when unknown: unknown is never negative
    course: str | None = None  # early | intermediate | late | None
    recommendations: list[str] = field(default_factory=list)
    explain: list[str] = field(default_factory=list)
    rulebook_version: str | None = None
    priors: list[dict] = field(default_factory=list)
    priors_status: str = "not_configured"  # ok | unavailable | not_configured | not_assessed
    analysers: list[dict] = field(default_factory=list)  # AnalysisResult.to_dict(): flags, measurements, not_assessed
    accession_number: str | None = None
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    modalities: list[str] = field(default_factory=list)
    study_date: str | None = None
    study_time: str | None = None
    study_description: str | None = None
    series_count: int = 0
    instance_count: int = 0
    first_received: float | None = None  # epoch seconds
    last_received: float | None = None
    triaged_at: float | None = None
    revision: int | None = None  # 1, 2, ... per saved change (set by the worklist)
    series: list[dict] = field(default_factory=list)  # {series_instance_uid, modality, description, sop_class_uid, instances}
    headers: dict = field(default_factory=dict)  # patient/study attributes for derived objects (SR, UPS, HL7)
    fingerprint: str | None = None  # what destinations were told (set by the worklist)
    triage_failed: str | None = None  # why triage failed for good: read at the order's priority, not sent to sinks
    order_source: str | None = None  # where the order's text/priority came from: "HL7", "MWL" or None
    closed_at: float | None = None  # epoch seconds the report was signed (the entry left the active worklist)
    closed_by: str | None = None  # e.g. "HL7 ORU^R01 result status F", "UPS workitem COMPLETED"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise EntryError(f"priority {self.priority!r} is not one of {PRIORITIES}")
        if self.order_priority is not None and self.order_priority not in PRIORITIES:
            raise EntryError(f"order_priority {self.order_priority!r} is not one of {PRIORITIES}")
        for f in self.flags:
            missing = {"code", "priority", "evidence"} - set(f)
            if missing:
                raise EntryError(f"flag without {sorted(missing)}")
            if f["priority"] not in PRIORITIES:
                raise EntryError(f"flag {f['code']} has priority {f['priority']!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: "WorklistEntry | dict[str, Any]") -> "WorklistEntry":
        """The entry itself, or its JSON form (as stored in the worklist) read with `from_dict`."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorklistEntry":
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise EntryError(f"unknown entry key(s): {sorted(unknown)}")
        missing = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING
                   and n not in data]
        if missing:
            raise EntryError(f"missing entry key(s): {missing}")
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            if not _conforms(value, hints[name]):
                raise EntryError(f"entry key {name!r}: {type(value).__name__} is not {hints[name]}")
        return cls(**data)


#: The keys of the offline `triage --json` record (a contract: only ever added to).
OFFLINE_KEYS = ("study_instance_uid", "accession_number", "priority", "order_priority", "flags",
                "postop_interval_hours", "course", "priors", "priors_status", "recommendations",
                "rulebook_version", "modalities", "series_count", "instance_count", "analysers")


def _conforms(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _json_type(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [_json_type(h) for h in typing.get_args(hint)]
        return {"anyOf": kinds}
    if hint is type(None):
        return {"type": "null"}
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}
    return {"type": simple[hint]}


_FLAG_SCHEMA = {
    "type": "object",
    "required": ["code", "status", "priority", "rule", "evidence"],
    "properties": {
        "code": {"type": "string"},
        "status": {"const": "suspected"},
        "priority": {"enum": list(PRIORITIES)},
        "rule": {"type": "string"},
        "rules": {"type": "array", "items": {"type": "string"}},
        "evidence": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["source"],
            "properties": {"source": {"type": "string"}, "rule": {"type": ["string", "null"]},
                           "text": {"type": ["string", "null"]}, "start": {"type": ["integer", "null"]},
                           "end": {"type": ["integer", "null"]},
                           "assertion": {"type": ["string", "null"]},
                           "measurement": {"type": ["object", "null"]}, "note": {"type": ["string", "null"]}}}},
    },
}


def json_schema(keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12) of the entry, or of the subset `keys` (e.g. OFFLINE_KEYS)."""
    hints = typing.get_type_hints(WorklistEntry)
    props: dict[str, Any] = {}
    required = []
    for f in fields(WorklistEntry):
        if keys is not None and f.name not in keys:
            continue
        props[f.name] = _json_type(hints[f.name])
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(f.name)
    props["priority"] = {"enum": list(PRIORITIES)}
    if "order_priority" in props:
        props["order_priority"] = {"enum": [*PRIORITIES, None]}
    if "flags" in props:
        props["flags"] = {"type": "array", "items": _FLAG_SCHEMA}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"pacs-triage/worklist-entry/v{SCHEMA_VERSION}" + ("" if keys is None else "/offline"),
        "title": "pacs-triage worklist entry" + ("" if keys is None else " (offline triage --json record)"),
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": props,
    }

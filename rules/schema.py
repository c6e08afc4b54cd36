"""The JSON Schema of a rule file (like Sigma's rule schema): for editors, and the first check of `rules check`.

Built from the loader's own vocabulary (keys, windows, procedures, flag codes, priorities), so the
schema and the loader cannot drift apart; `rules/rule-file.schema.json` is the shipped copy (a
test checks it equals `schema()`). Editors: point yaml-language-server at it, e.g.
`# yaml-language-server: $schema=rule-file.schema.json` at the top of a rule file.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from rules import loader
from rules.loader import RulebookError, read_yaml
from rules.model import FLAG_CODES

SHIPPED = Path(__file__).with_name("rule-file.schema.json")
PRIORITIES = ["STAT", "URGENT", "ROUTINE"]


def _words(values=None) -> dict:
    item = {"type": "string"} if values is None else {"enum": sorted(values)}
    return {"oneOf": [item, {"type": "array", "items": item}]}


def schema() -> dict:
    windows = list(loader.WINDOWS) + ["any"]
    flag = sorted(FLAG_CODES)
    rule = {
        "type": "object",
        "required": ["id", "title", "reference", "scenario", "window"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": loader._ID.pattern},
            "title": {"type": "string"},
            "reference": {"type": "string", "pattern": r"\d{3}_[0-9a-f]{16}\.txt|\[practice\]"},
            "scenario": {"type": ["integer", "string"]},
            "window": _words(windows),
            "postoperative": _words(loader.STATUSES),
            "instrumented": _words(loader.STATUSES),
            "procedure": _words(loader.PROCEDURES),
            **{k: _words() for k in ("any_of", "all_of", "none_of", "acquisition_has", "acquisition_lacks",
                                     "modality", "modality_only", "modality_missing", "recommend")},
            "assertion": _words(["affirmed", "uncertain"]),
            "if_flags": _words(flag),
            "flags": _words(flag),
            "priors_have": _words(loader.PRIOR_ROLES),
            "priors_lack": _words(loader.PRIOR_ROLES),
            "priority": {"enum": PRIORITIES},
            "interval": {"type": "object", "additionalProperties": False,
                         "properties": {"min_days": {"type": ["number", "string"]},
                                        "max_days": {"type": ["number", "string"]},
                                        "unknown": {"enum": ["run", "skip"]}}},
            "escalate": {"type": "array", "items": {
                "type": "object", "required": ["if_any", "priority"], "additionalProperties": False,
                "properties": {"if_any": _words(), "priority": {"enum": PRIORITIES}, "window": _words(windows)}}},
            "observation": {"type": "string"}, "note": {"type": "string"}, "explain": {"type": "string"},
            "unknown_time": {"enum": ["emergency_only", "run"]},
        },
    }
    assert set(rule["properties"]) == set(loader._RULE_KEYS), "schema and loader disagree on rule keys"
    concept = {"type": "object", "additionalProperties": False,
               "properties": {k: {} for k in sorted(loader._CONCEPT_KEYS)}}
    concept["properties"]["course"] = {"enum": list(loader.WINDOWS)}
    safety = {"type": "object", "additionalProperties": False, "required": ["id", "concepts", "priority"],
              "properties": {k: {} for k in sorted(loader._SAFETY_KEYS)}}
    safety["properties"]["priority"] = {"enum": PRIORITIES}
    safety["properties"]["flags"] = _words(flag)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "pacs-triage/rule-file",
        "title": "pacs-triage rule file (rules/*.yaml)",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "family": {"type": "string"},
            "settings": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
            "cues": {"type": "object", "propertyNames": {"enum": list(loader.CUE_KINDS)},
                     "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "known_words": {"type": "array", "items": {"type": "string"}},
            "word_lists": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "concepts": {"type": "object", "additionalProperties": concept},
            "rules": {"type": "array", "items": rule},
            "safety_net": {"type": "array", "items": safety},
            "measurements": {"type": "array", "items": {"type": "object"}},
        },
    }


def _line(doc, path) -> int:
    """The line of the deepest mapping key on `path` (the loader remembers them)."""
    line, node = getattr(doc, "line", 1) or 1, doc
    for part in path:
        if isinstance(node, dict) and part in node:
            line = getattr(node, "lines", {}).get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = getattr(node, "line", line) or line
        else:
            break
    return line


def problems(path: Path) -> list[RulebookError]:
    """Every place a rule file departs from the schema, as file:line errors (like the loader's)."""
    path = Path(path)
    doc = read_yaml(path)
    validator = jsonschema.Draft202012Validator(schema())
    out = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        out.append(RulebookError(path, _line(doc, list(error.absolute_path)), f"schema: {where}: {error.message[:200]}"))
    return out


def write_shipped() -> None:
    SHIPPED.write_text(json.dumps(schema(), indent=2, sort_keys=True) + "\n")

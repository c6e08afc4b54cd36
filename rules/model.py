"""The triage vocabulary shared by the rules, the analysers and the sinks.

Priorities are compared as enums (STAT > URGENT > ROUTINE), never as strings.
Every flag is *suspected*: there is no confirmed and no excluded state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.priority import Priority  # noqa: F401  (re-exported: the rules speak of priorities)


FLAG_FILE = Path(__file__).with_name("policy") / "flags.yaml"


def _flag_vocabulary(path: Path = FLAG_FILE) -> tuple[dict[str, Priority], tuple[str, ...]]:
    """The flag codes with their default priority, and the headline flags, from rules/policy/flags.yaml."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flags = {str(code): Priority.parse(prio) for code, prio in (doc.get("flags") or {}).items()}
    headline = tuple(doc.get("headline") or ())
    if not flags or not set(headline) <= set(flags):
        raise ValueError(f"{path}: 'flags' must list every code and 'headline' only listed codes")
    return flags, headline


#: The flag codes of the domain guide with their default priority (§7), and the flags listed
#: first on every worklist entry: clinical policy, kept in rules/policy/flags.yaml.
DEFAULT_PRIORITIES, HEADLINE_FLAGS = _flag_vocabulary()
FLAG_CODES = frozenset(DEFAULT_PRIORITIES)


@dataclass
class Evidence:
    """Why a flag was raised: where, what text or measurement, which rule."""

    source: str
    rule: str | None = None
    text: str | None = None
    start: int | None = None
    end: int | None = None
    assertion: str | None = None  # affirmed | uncertain | negated
    measurement: dict[str, Any] | None = None  # name, value, unit, threshold
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evidence":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass
class Flag:
    """A suspected condition with its priority and evidence."""

    code: str
    priority: Priority
    rule: str
    evidence: list[Evidence] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rule and self.rule not in self.rules:
            self.rules.insert(0, self.rule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "status": "suspected",
            "priority": self.priority.name,
            "rule": self.rule,
            "rules": list(self.rules),
            "evidence": [e.to_dict() for e in self.evidence],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Flag":
        return cls(
            code=data["code"],
            priority=Priority.parse(data["priority"]),
            rule=data["rule"],
            evidence=[Evidence.from_dict(e) for e in data.get("evidence", [])],
            rules=list(data.get("rules", [])),
        )


def merge_flags(flags: list[Flag]) -> list[Flag]:
    """One flag per code: highest priority, union of evidence and rules.

    Ordered headline flags first, then by priority (highest first), then code.
    """
    merged: dict[str, Flag] = {}
    for f in flags:
        if f.code not in merged:
            merged[f.code] = Flag(f.code, f.priority, f.rule, list(f.evidence), list(f.rules))
            continue
        m = merged[f.code]
        m.priority = max(m.priority, f.priority)
        for r in f.rules:
            if r not in m.rules:
                m.rules.append(r)
        for e in f.evidence:
            if e not in m.evidence:
                m.evidence.append(e)

    def key(f: Flag) -> tuple:
        headline = HEADLINE_FLAGS.index(f.code) if f.code in HEADLINE_FLAGS else len(HEADLINE_FLAGS)
        return (headline, -int(f.priority), f.code)

    return sorted(merged.values(), key=key)

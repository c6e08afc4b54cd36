"""The triage vocabulary shared by the rules, the analysers and the sinks.

Priorities are compared as enums (STAT > URGENT > ROUTINE), never as strings.
Every flag is *suspected*: there is no confirmed and no excluded state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.priority import Priority  # noqa: F401  (re-exported: the rules speak of priorities)


#: The flag codes of the domain guide (shared/domain/postop-spine-triage.md).
FLAG_CODES = frozenset(
    {
        "epidural_haematoma",
        "cord_compression",
        "conus_ischaemia",
        "active_bleeding",
        "misplaced_screw",
        "nerve_root_injury",
        "surgical_site_infection",
        "csf_leak",
        "deep_vein_thrombosis",
        "level_error",
        "insufficient_decompression",
        "recurrent_disc_herniation",
        "arachnoiditis",
        "radiculitis",
        "pseudarthrosis",
        "screw_loosening",
        "hardware_failure",
        "spacer_migration",
        "adjacent_segment_disease",
        "spinal_misalignment",
    }
)

#: Listed first on every worklist entry.
HEADLINE_FLAGS = ("epidural_haematoma", "misplaced_screw", "cord_compression")


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

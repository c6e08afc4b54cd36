"""Our three reading priorities and how an order's priority maps to them (domain guide §1.3).

The mapping of order priority codes (DICOM (0040,1003)/(0040,1009), HL7 v2 tables 0027 and 0485,
FHIR request priorities) is the table `order_priority.yaml` beside this file, each row with its source.
"""

from __future__ import annotations

import re
from enum import IntEnum
from functools import cache
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("order_priority.yaml")


@cache
def order_priority_table() -> tuple[dict[str, "Priority"], tuple[tuple[re.Pattern, "Priority"], ...]]:
    """(code -> priority, (pattern, priority)...) from `order_priority.yaml`, read once, never changed."""
    doc = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    codes = {str(code).upper(): Priority[row["priority"]] for code, row in doc["codes"].items()}
    patterns = tuple((re.compile(row["match"]), Priority[row["priority"]]) for row in doc.get("patterns", []))
    return codes, patterns


class Priority(IntEnum):
    ROUTINE = 0
    URGENT = 1
    STAT = 2

    @classmethod
    def parse(cls, value: "str | Priority") -> "Priority":
        """Our own names only (STAT, URGENT, ROUTINE)."""
        if isinstance(value, Priority):
            return value
        return cls[str(value).strip().upper()]

    @classmethod
    def from_order(cls, value: str | None) -> "Priority | None":
        """Map an order's priority (0040,1003)/(0040,1009)/HL7/FHIR to ours by `order_priority.yaml`:
        S/STAT -> STAT; A/ASAP/HIGH/URGENT -> URGENT; R, P, C, T, PRN, T<unit><n> and any other
        value -> ROUTINE; empty -> None (no priority on the order)."""
        if value is None:
            return None
        text = str(value).strip().upper()
        if not text:
            return None
        codes, patterns = order_priority_table()
        if text in codes:
            return codes[text]
        for pattern, priority in patterns:
            if pattern.fullmatch(text):
                return priority
        return cls.ROUTINE

"""Our three reading priorities and how an order's priority maps to them (domain guide §1.3)."""

from __future__ import annotations

from enum import IntEnum


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
        """Map an order's priority (0040,1003)/(0040,1009)/HL7 to ours.

        STAT -> STAT; HIGH, ASAP, URGENT -> URGENT; any other value -> ROUTINE;
        empty -> None (no priority on the order).
        """
        if value is None:
            return None
        text = str(value).strip().upper()
        if not text:
            return None
        if text in ("STAT", "S"):
            return cls.STAT
        if text in ("HIGH", "ASAP", "URGENT", "A", "EMERGENCY"):
            return cls.URGENT
        return cls.ROUTINE

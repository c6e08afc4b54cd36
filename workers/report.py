"""`pacs-triage report`: did triage help? Time from the last instance received to the signed
report, per suggested priority and per order priority, over closed entries; and how many
studies triage raised above their order's priority. No patient data."""

from __future__ import annotations

import re
from statistics import median
from typing import Any

from rules.model import Priority

PRIORITIES = ("STAT", "URGENT", "ROUTINE")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """'7d', '24h', '90m', '3600s', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise ValueError(f"expected a period such as 7d, 24h or 90m, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "d"]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def _stats(values: list[float]) -> dict[str, Any]:
    return {"studies": len(values), "median_seconds": median(values) if values else None,
            "p90_seconds": percentile(values, 90)}


def summarize(entries: list[dict]) -> dict[str, Any]:
    """Figures over closed entries (each with closed_at and last_received)."""
    by_priority: dict[str, list[float]] = {p: [] for p in PRIORITIES}
    by_order: dict[str, list[float]] = {p: [] for p in (*PRIORITIES, "none")}
    raised = with_order = 0
    for e in entries:
        if e.get("closed_at") is None or not e.get("last_received"):
            continue
        seconds = max(0.0, float(e["closed_at"]) - float(e["last_received"]))
        by_priority[e["priority"]].append(seconds)
        by_order[e.get("order_priority") or "none"].append(seconds)
        if e.get("order_priority"):
            with_order += 1
            if Priority.parse(e["priority"]) > Priority.parse(e["order_priority"]):
                raised += 1
    return {"studies": sum(len(v) for v in by_priority.values()),
            "by_priority": {p: _stats(v) for p, v in by_priority.items()},
            "by_order_priority": {p: _stats(v) for p, v in by_order.items()},
            "with_order": with_order, "raised_above_order": raised}


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def render(figures: dict[str, Any], since: str) -> str:
    lines = [f"Time from last image received to signed report, last {since} "
             f"({figures['studies']} closed stud{'y' if figures['studies'] == 1 else 'ies'})", "",
             f"{'suggested priority':20}  {'studies':>7}  {'median':>9}  {'p90':>9}"]
    for p, s in figures["by_priority"].items():
        lines.append(f"{p:20}  {s['studies']:>7}  {_minutes(s['median_seconds']):>9}  {_minutes(s['p90_seconds']):>9}")
    lines += ["", f"{'order priority':20}  {'studies':>7}  {'median':>9}  {'p90':>9}"]
    for p, s in figures["by_order_priority"].items():
        lines.append(f"{p:20}  {s['studies']:>7}  {_minutes(s['median_seconds']):>9}  {_minutes(s['p90_seconds']):>9}")
    lines += ["", f"raised by triage above their order's priority: {figures['raised_above_order']} "
              f"of {figures['with_order']} stud{'y' if figures['with_order'] == 1 else 'ies'} with an order priority"]
    return "\n".join(lines)

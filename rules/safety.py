"""The safety net: a red-flag layer apart from the rules (rules/safety.yaml).

It looks at every emergency concept in the request and raises the priority unless the
mention is certainly negated, historical, hypothetical/planned or about someone else.
It never lowers anything: the engine takes max(order, rules, safety net). It does not
depend on the procedure being recognised or on the time since surgery being known;
when they are unknown, the evidence says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.model import Evidence, Flag, Priority
from rules.text import Mention


@dataclass
class SafetyResult:
    priority: Priority = Priority.ROUTINE
    flags: list[Flag] = field(default_factory=list)
    fired: list[tuple[str, Priority, list[Mention]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def safety_windows(ctx, early_days: float) -> set[str]:
    """The windows the safety net considers: from the most recent reading, else cues, else unknown."""
    hours = [r.hours for r in ctx.readings]
    if hours:
        h = min(hours)  # the most recent operation: the higher-priority reading
        return {"early"} if h <= early_days * 24 else (set(ctx.cue_windows) - {"early"}) or {"late"}
    cues = set(ctx.cue_windows)
    return cues or {"unknown"}


def assess(entries: list[dict], ctx, early_days: float, version: str = "") -> SafetyResult:
    """Raise priority and headline flags for every current emergency mention."""
    out = SafetyResult()
    windows = safety_windows(ctx, early_days)
    operated = ctx.postoperative != "no"
    for entry in entries:
        cues = [m for c in entry["concepts"] for m in ctx.raising.get(c, ())]
        if not cues:
            continue
        if entry.get("with_any"):
            extra = [m for c in entry["with_any"] for m in ctx.raising.get(c, ())]
            extra += [m for c in entry["with_any"] for m in ctx.seen.get(c, ()) if m not in extra]
            if not extra:
                continue
            cues = cues + [m for m in extra if m not in cues]
        if entry.get("without_any") and any(ctx.raising.get(c) for c in entry["without_any"]):
            continue  # round 13: vasopressors with fever or an infected wound are a septic shock, not a haemorrhagic one
        if entry.get("unless_denied"):
            # session 13 (rounds 102, 105): a protocol's name ("MRI L-spine CES protocol") with the symptoms it is for denied
            # in the text ("No bladder/bowel sx, saddle sensation normal") and none of them affirmed or queried
            if ctx.negated & set(entry["unless_denied"]) and not any(ctx.raising.get(c) for c in entry["unless_denied"]):
                continue
        if entry.get("procedure") and not ctx.procedures & set(entry["procedure"]):
            continue
        if entry.get("windows") and not windows & set(entry["windows"]):
            continue
        if entry.get("postoperative") and ctx.postoperative not in entry["postoperative"]:
            continue
        priority: Priority = entry["priority"]
        out.fired.append((entry["id"], priority, cues))
        out.priority = max(out.priority, priority)
        missing = []
        if ctx.postoperative == "unknown":
            missing.append("operation not recognised in the text")
        elif ctx.postoperative == "no":
            missing.append("not operated or operation only planned: no postoperative flag")
        if "unknown" in windows:
            missing.append("time since surgery unknown")
        note = f"safety net {entry['id']}: {priority.name} whatever is known of the surgery"
        if missing:
            note += " (" + "; ".join(missing) + ")"
        out.notes.append(note + ": " + "; ".join(f"'{m.text}' ({m.status})" for m in cues))
        if not operated:
            continue
        cues = cues[:12]
        for code in entry.get("flags") or []:
            evidence = [
                Evidence(
                    source=f"{m.tag} {m.keyword}".strip(),
                    rule=entry["id"],
                    text=m.text,
                    start=m.start,
                    end=m.end,
                    assertion=m.assertion,
                    measurement=m.measurement,
                    note="; ".join(n for n in (f"read as '{m.corrected}'" if m.corrected else "", "safety net") if n),
                )
                for m in cues
            ]
            evidence.append(Evidence(source="safety_net", rule=entry["id"], note=f"{version}; {priority.name}; {note}; {entry['reference']}"))
            out.flags.append(Flag(code, priority, entry["id"], evidence))
    return out

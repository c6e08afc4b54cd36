"""The rule engine: a study (plus surgery record, priors and image findings) in, an Outcome out.

Deterministic and side-effect free. Every flag carries the rule id and the exact
text that fired it; the priority is the highest of the fired rules and never
below the order's own priority.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rules import context as ctxmod
from rules import safety as safetymod
from rules.measure import Reader
from rules.loader import Rule, RulebookError, content_hash, read
from rules.model import Evidence, Flag, Priority, merge_flags
from rules.text import Matcher, Mention

__all__ = ["Rulebook", "RulebookError", "Outcome"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parent
#: Mentions listed as evidence per rule (a 64 KB text can repeat a word a thousand times).
MAX_EVIDENCE = 12


@dataclass
class Outcome:
    priority: Priority
    order_priority: Priority | None
    flags: list[Flag]
    postop_interval_hours: float | None
    postop_interval_source: str | None
    course: str
    recommendations: list[str]
    explain: list[str]
    rulebook_version: str
    observations: list[dict] = field(default_factory=list)
    fired_rules: list[str] = field(default_factory=list)
    context: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "priority": self.priority.name,
            "order_priority": self.order_priority.name if self.order_priority is not None else None,
            "flags": [f.to_dict() for f in self.flags],
            "postop_interval_hours": self.postop_interval_hours,
            "postop_interval_source": self.postop_interval_source,
            "course": self.course,
            "recommendations": list(self.recommendations),
            "explain": list(self.explain),
            "rulebook_version": self.rulebook_version,
            "observations": list(self.observations),
            "fired_rules": list(self.fired_rules),
            "context": dict(self.context),
        }


@dataclass
class _Run:
    """The rules fired for one reading of the time since surgery."""

    reading: Any
    windows: set[str]
    flags: list[Flag] = field(default_factory=list)
    priority: Priority = Priority.ROUTINE
    fired: list[tuple[Rule, Priority, list[Mention]]] = field(default_factory=list)


class Rulebook:
    """A loaded, validated set of rules with its lexicon and settings."""

    def __init__(self, source, version: str, directory: Path):
        self.directory = directory
        self.version = version
        self.rules: list[Rule] = source.rules
        self.settings: dict = source.settings
        self.matcher = Matcher(source.concepts, source.cues, int(self.settings["NEGATION_SCOPE_TOKENS"]), source.known_words)
        self.matcher.measure = Reader(source.measurements)
        self.safety_net: list[dict] = source.safety
        self.measurements: list[dict] = source.measurements

    @classmethod
    def load(cls, directory: Path | str | None = None) -> "Rulebook":
        """Load every *.yaml in the directory; the first problem raises RulebookError."""
        directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        source = read(directory)
        if source.errors:
            raise source.errors[0]
        return cls(source, content_hash(source.files), directory)

    def evaluate(self, study, surgery=None, priors: list | None = None, findings: Iterable[Flag] = ()) -> Outcome:
        findings = list(findings)
        ctx = ctxmod.build(study, self.matcher, surgery, priors)
        order = [p for p in (Priority.from_order(v) for v in study.order_priorities.values()) if p is not None]
        order_priority = max(order) if order else None
        floor = max([order_priority or Priority.ROUTINE] + [f.priority for f in findings])
        runs = [self._run(ctx, r, priors, findings) for r in (ctx.readings or [None])]
        # The highest priority; on a tie the structured record, then the most recent operation
        # (the order of the text fields must not matter).
        best = max(runs, key=lambda r: (r.priority, r.reading is not None and r.reading.source == "surgery",
                                        -(r.reading.hours if r.reading is not None else 0)))
        if len(runs) > 1:
            note = "conflicting times since surgery: " + "; ".join(r.reading.describe() for r in runs)
            for f in best.flags:
                f.evidence.append(Evidence(source="postop_interval", rule=f.rule, note=note + "; the higher-priority reading was used"))
        net = safetymod.assess(self.safety_net, ctx, float(self.settings["EARLY_WINDOW_DAYS"]), self.version)
        text_flags = best.flags + net.flags
        if ctx.instrumented == "no" or ctxmod.screws_said_absent(ctx):
            # the order's text says there are no screws (guide §2: a hardware flag needs screws or instrumentation): its screw
            # flags are contradicted; the priority they gave stays (only raise)
            text_flags = [f for f in text_flags if f.code not in ("misplaced_screw", "screw_loosening")]
        flags = merge_flags(text_flags + findings)
        priority = max([floor, best.priority, net.priority] + [f.priority for f in flags])
        out = self._outcome(ctx, runs, best, flags, priority, order_priority)
        if net.fired:
            raised = net.priority > max(floor, best.priority)
            out.fired_rules.extend(rid for rid, _, _ in net.fired if rid not in out.fired_rules)
            out.explain.extend(f"Safety net: {n}." for n in net.notes)
            if raised:
                out.explain.append(f"Safety net raised the priority to {net.priority.name}.")
                if not net.flags:
                    out.observations.append({"rule": net.fired[0][0], "note": net.notes[0], "evidence": [m.text for m in net.fired[0][2]]})
        return out

    def _run(self, ctx, reading, priors, findings) -> _Run:
        hours = reading.hours if reading is not None else None
        run = _Run(reading, ctxmod.windows(ctx, hours, float(self.settings["EARLY_WINDOW_DAYS"])))
        codes = {f.code for f in findings}
        for second_pass in (False, True):
            for rule in self.rules:
                if bool(rule.if_flags) != second_pass:
                    continue
                fired = self._match(rule, ctx, run, hours, priors, codes)
                if fired is None:
                    continue
                priority, evidence = fired
                run.fired.append((rule, priority, evidence))
                run.priority = max(run.priority, priority)
                for code in rule.flags:
                    run.flags.append(Flag(code, priority, rule.id, self._evidence(rule, evidence, run, priority)))
            codes |= {f.code for f in run.flags}
        return run

    def _match(self, rule: Rule, ctx, run: _Run, hours, priors, codes) -> tuple[Priority, list[Mention]] | None:
        """The priority and evidence if the rule fires, else None."""
        if "any" not in rule.window and not run.windows & set(rule.window):
            return None
        if ctx.postoperative not in rule.postoperative or ctx.instrumented not in rule.instrumented:
            return None
        if rule.procedure and not ctx.procedures & set(rule.procedure):
            return None
        if rule.if_flags and not codes & set(rule.if_flags):
            return None
        evidence: list[Mention] = []
        if rule.any_of:
            evidence = [m for c in rule.any_of for m in ctx.raising.get(c, ()) if not rule.assertion or m.assertion in rule.assertion]
            if not evidence:
                return None
        for c in rule.all_of:
            if c not in ctx.raising:
                return None
            evidence.extend(ctx.raising[c])
        if any(c in ctx.raising for c in rule.none_of):
            return None
        mods = ctx.modalities
        if rule.modality and not mods & set(rule.modality):
            return None
        if rule.modality_only and not (mods and mods <= set(rule.modality_only)):
            return None
        if mods & set(rule.modality_missing):
            return None
        if any(c not in ctx.acquisition for c in rule.acquisition_has):
            return None
        if rule.acquisition_lacks and all(c in ctx.acquisition for c in rule.acquisition_lacks):
            return None
        if rule.interval_min_days is not None or rule.interval_max_days is not None:
            if hours is None:
                if not rule.interval_unknown_runs:  # interval {unknown: run}: unknown is never negative
                    return None
            elif ((rule.interval_min_days is not None and hours < rule.interval_min_days * 24)
                  or (rule.interval_max_days is not None and hours > rule.interval_max_days * 24)):
                return None
        if rule.priors_have or rule.priors_lack:
            if priors is None:
                return None
            roles = {p.get("role") for p in priors}
            if not roles >= set(rule.priors_have) or roles & set(rule.priors_lack):
                return None
        priority = rule.priority if rule.priority is not None else Priority.ROUTINE
        for esc in rule.escalate:
            if "any" not in esc.window and not run.windows & set(esc.window):
                continue
            cues = [m for c in esc.if_any for m in ctx.raising.get(c, ())]
            if cues and esc.priority > priority:
                priority = esc.priority
                known = {id(m) for m in evidence}
                evidence.extend(m for m in cues if id(m) not in known)
        if (ctxmod.UNKNOWN_TIME in run.windows and rule.window == ["early"] and priority < Priority.STAT
                and not rule.if_flags and rule.unknown_time != "run"):
            return None  # time unknown: an early-only rule counts only as an emergency
        return priority, _unique(evidence)

    def _evidence(self, rule: Rule, mentions: list[Mention], run: _Run, priority: Priority) -> list[Evidence]:
        out = []
        if len(mentions) > MAX_EVIDENCE:
            out.append(Evidence(source="rulebook", rule=rule.id, note=f"{len(mentions)} matching mentions; the first {MAX_EVIDENCE} are listed"))
            mentions = mentions[:MAX_EVIDENCE]
        for m in mentions:
            notes = [rule.note] if rule.note else []
            if m.corrected:
                notes.append(f"read as '{m.corrected}'")
            out.append(
                Evidence(
                    source=f"{m.tag} {m.keyword}".strip(),
                    rule=rule.id,
                    text=m.text,
                    start=m.start,
                    end=m.end,
                    assertion=m.status,
                    measurement=m.measurement,
                    note="; ".join(notes) or None,
                )
            )
        out.append(Evidence(source="rulebook", rule=rule.id, note=f"{self.version}; {priority.name}; {_window_note(run)}"))
        return out

    def _outcome(self, ctx, runs, best: _Run, flags, priority, order_priority) -> Outcome:
        reading = best.reading
        explain: list[str] = []
        if not ctx.clinical_text:
            explain.append("No clinical context: the study carries no clinical indication text; only acquisition descriptions were read.")
        explain.append(f"Course: {_course(best.windows, reading)}; {_window_note(best)}.")
        if len(runs) > 1:
            readings = "; ".join(r.reading.describe() for r in runs)
            explain.append(f"Conflicting times since surgery ({readings}): the reading giving the higher priority was used.")
        explain.extend(f"Time not used: {n}." for n in ctx.time_notes)
        recommendations: list[str] = []
        observations: list[dict] = []
        fired_ids: list[str] = []
        for rule, prio, mentions in best.fired:
            fired_ids.append(rule.id)
            explain.append(f"[{rule.id}] " + rule.explain.format(
                rule=rule.id,
                title=rule.title,
                flags=", ".join(rule.flags) or "no flag",
                matched="; ".join(f"'{m.text}' ({m.assertion}, {m.tag} {m.keyword})" for m in mentions) or "flags already raised",
                window=_course(best.windows, reading),
                interval=f"{reading.hours:g} h since surgery" if reading else "time since surgery unknown",
                priority=prio.name,
            ))
            for rec in rule.recommend:
                if rec not in recommendations:
                    recommendations.append(rec)
            if rule.observation:
                observations.append({"rule": rule.id, "note": rule.observation, "evidence": [m.text for m in mentions]})
        for m in ctx.mentions:
            if m.assertion == "negated":
                explain.append(f"Negated, raises nothing: '{m.text}' ({m.tag} {m.keyword} [{m.start}:{m.end}]).")
            elif m.history and not m.concepts & {"discectomy", "decompression", "fusion", "operated"}:
                explain.append(f"History, raises no flag: '{m.text}' ({m.tag} {m.keyword} [{m.start}:{m.end}]).")
        if order_priority is not None and order_priority >= priority:
            explain.append(f"Order priority {order_priority.name} kept: priority only goes up.")
        if not ctx.clinical_text:
            observations.append({"rule": "context.none", "note": "no clinical context"})
        return Outcome(
            priority=priority,
            order_priority=order_priority,
            flags=flags,
            postop_interval_hours=reading.hours if reading else None,
            postop_interval_source=reading.describe() if reading else None,
            course=_course(best.windows, reading),
            recommendations=recommendations,
            explain=explain,
            rulebook_version=self.version,
            observations=observations,
            fired_rules=fired_ids,
            context={
                "postoperative": ctx.postoperative,
                "procedures": sorted(ctx.procedures),
                "instrumented": ctx.instrumented,
                "clinical_text": ctx.clinical_text,
                "time_conflict": [r.reading.describe() for r in runs] if len(runs) > 1 else [],
            },
        )


def _unique(mentions: list[Mention]) -> list[Mention]:
    out: list[Mention] = []
    seen: set[int] = set()
    for m in mentions:
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def _course(windows: set[str], reading) -> str:
    windows = windows - {ctxmod.UNKNOWN_TIME}
    if reading is None and windows == {"early", "inefficacy", "late"}:
        return "unknown"
    return "+".join(w for w in ("early", "inefficacy", "late") if w in windows)


def _window_note(run: _Run) -> str:
    where = run.reading.describe() if run.reading else "time since surgery unknown"
    return f"window {_course(run.windows, run.reading)} ({where})"

"""Image analyser plug-ins.

An analyser says cheaply (headers only) whether it applies to a study, then
analyses it into suspected flags, measurements and reasons for what it could
not assess. Built-ins are listed in `BUILTIN`; a site adds its own (e.g. a
trained model) through the entry-point group ``pacs_triage.analysers`` whose
objects are analyser instances, classes or factories.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from core.study import Study
from rules.model import Flag

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pacs_triage.analysers"


@dataclass
class AnalysisResult:
    analyser: str
    flags: list[Flag] = field(default_factory=list)  # suspected, with measurement evidence
    measurements: list[dict[str, Any]] = field(default_factory=list)  # every measurement (for the SR)
    not_assessed: list[str] = field(default_factory=list)  # unknown is never negative
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage; stages do not overlap
    notes: list[str] = field(default_factory=list)  # what was done or skipped, no patient data
    #: Per-object completeness, e.g. {"screws_total": M, "screws_not_assessed": N, "not_assessed_screws": [...],
    #: "incomplete": "CT screw analysis incomplete: N of M screws not assessed (reason)"}; empty when not applicable.
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyser": self.analyser,
            "flags": [f.to_dict() for f in self.flags],
            "measurements": [dict(m) for m in self.measurements],
            "not_assessed": list(self.not_assessed),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": list(self.notes),
            "summary": dict(self.summary),
        }


def incomplete_notes(entry) -> list[str]:
    """The analysers' "... analysis incomplete: N of M ... not assessed (reason)" lines of a worklist entry.

    Shared by the worklist entry, the SR, the UPS comment and the HL7 notes, so "not assessed" is never silent.
    """
    out = []
    analysers = entry.get("analysers") if isinstance(entry, dict) else entry.analysers  # JSON form or WorklistEntry
    for a in analysers or []:
        text = (a.get("summary") or {}).get("incomplete") if isinstance(a, dict) else None
        if text and text not in out:
            out.append(str(text))
    return out


@runtime_checkable
class Analyser(Protocol):
    name: str

    def applies(self, study: Study) -> bool:
        """Header-only and cheap (milliseconds)."""
        ...

    def analyse(self, study: Study) -> AnalysisResult: ...


def _builtins(config=None) -> list[Analyser]:
    from workers.analysers.ct_hardware import CTHardwareAnalyser

    return [CTHardwareAnalyser(volume_budget_mb=getattr(config, "ct_volume_budget_mb", None))]


def load_analysers(config=None) -> list[Analyser]:
    """Built-ins (set up from `config`, a core.config.Config), then the site's plug-ins from the entry-point
    group (a broken plug-in is logged and left out)."""
    found: list[Analyser] = _builtins(config)
    names = {a.name for a in found}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Analyser)):
                obj = obj()
            if not isinstance(obj, Analyser):
                raise TypeError("not an Analyser (needs name, applies, analyse)")
        except Exception as exc:
            log.error("analyser plug-in %s could not be loaded: %s", ep.name, exc)
            continue
        if obj.name in names:
            log.warning("analyser plug-in %s ignored: name %s already loaded", ep.name, obj.name)
            continue
        names.add(obj.name)
        found.append(obj)
    return found


def run_analysers(study: Study, analysers: list[Analyser] | None = None) -> list[AnalysisResult]:
    """Run every analyser that applies; one that raises gives a not_assessed result."""
    results = []
    for a in analysers if analysers is not None else load_analysers():
        name = getattr(a, "name", type(a).__name__)
        t0 = time.perf_counter()
        try:
            if not a.applies(study):
                continue
        except Exception as exc:
            log.exception("analyser %s failed in applies()", name)
            results.append(AnalysisResult(name, not_assessed=[f"analyser error in applies(): {type(exc).__name__}"]))
            continue
        try:
            result = a.analyse(study)
        except Exception as exc:  # never crash the pipeline; unknown is not negative
            log.exception("analyser %s failed", name)
            result = AnalysisResult(name, not_assessed=[f"analyser error: {type(exc).__name__}: {exc}"])
        if not result.timings:  # stages are the analyser's to name; the sum is its run time
            result.timings["analyse"] = time.perf_counter() - t0
        results.append(result)
    return results

"""The triage pipeline: headers -> clinical context -> priors -> images -> rules -> worklist entry.

Pure with respect to Redis and the network sinks: the actors (service) and the
`triage` command (offline) both call `triage()`; only what they do with the
entry differs.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from core import metrics
from core.config import Config
from core.entry import OFFLINE_KEYS, WorklistEntry
from core.study import Study
from rules.model import Evidence, Flag
from rules.timing import text_surgery

log = logging.getLogger(__name__)

#: Attributes copied into the entry for derived objects (SR, UPS, HL7).
ENTRY_HEADERS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                 "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                 "StudyDescription", "SpecificCharacterSet")

PriorsLookup = Callable[[Study, dict | None], Any]  # -> workers.priors.PriorsResult
OrderLookup = Callable[[Study], Any]  # -> core.orders.Order | None


def join_order(study: Study, order) -> list[str]:
    """Read the RIS order alongside the header: its texts become text fields named after their
    source (evidence says e.g. "HL7 order OBR-31"), its priority joins the order priorities (the
    floor). An order naming another patient, or cancelled, is not read. Returns explain lines."""
    if order is None:
        return []
    where = f"{order.source} order"
    if not order.same_patient(study.get("PatientID"), study.get("IssuerOfPatientID")):
        metrics.order_patient_mismatch.inc()
        log.warning("study %s: the %s for its accession number names another patient; not read", study.uid, where)
        return [f"{where} not read: it names another patient than the images (same accession number)."]
    if order.status == "cancelled":
        return [f"{where} was cancelled in the RIS ({order.control}); its text and priority were not read."]
    fields = order.text_fields()
    study.text_fields.extend(dict(f, series_uid=None) for f in fields)
    lines = []
    if order.priority:
        study.order_priorities[order.priority_source or where] = order.priority
        lines.append(f"Order priority {order.priority} from {order.priority_source or where}"
                     f" (code {order.priority_code}).")
    if fields:
        lines.append(f"Clinical text read from {where}: " + ", ".join(f["keyword"] for f in fields) + ".")
    metrics.orders_joined.labels(order.source).inc()
    return lines


def run_analysers(study: Study, config: Config | None = None) -> list:
    from workers.analysers import load_analysers, run_analysers as run

    if config is None:
        # A caller that does not pass its configuration: the same sources without command-line flags
        # (defaults < file named by PACS_TRIAGE_CONFIG < environment).
        config = Config.load()
    results = run(study, load_analysers(config))
    for r in results:
        metrics.analyser_duration.labels(r.analyser).observe(sum((r.timings or {}).values()))
    return results


def triage(study: Study, rulebook, *, priors_lookup: PriorsLookup | None = None,
           analyse: bool = True, order_lookup: OrderLookup | None = None,
           config: Config | None = None) -> dict[str, Any]:
    """Triage one study; return its worklist entry (not yet merged with an earlier one)."""
    started = time.monotonic()
    order = order_lookup(study) if order_lookup is not None and study.accession_number else None
    order_notes = join_order(study, order)
    first = rulebook.evaluate(study)
    priors = None
    if priors_lookup is not None:
        priors = priors_lookup(study, text_surgery(study, first.postop_interval_hours))
    analyses = run_analysers(study, config) if analyse else []
    findings: list[Flag] = [f for a in analyses for f in a.flags]
    if priors is not None and priors.status == "ok":
        outcome = rulebook.evaluate(study, surgery=priors.surgery, priors=priors.priors, findings=findings)
    else:
        outcome = rulebook.evaluate(study, findings=findings) if findings else first
    entry = build_entry(study, outcome, priors, analyses)
    if order is not None:
        entry["explain"] = order_notes + entry["explain"]
        if any(n.startswith("Order priority") or n.startswith("Clinical text") for n in order_notes):
            entry["order_source"] = order.source
    metrics.triage_duration.observe(time.monotonic() - started)
    return entry


def build_entry(study: Study, outcome, priors, analyses: list) -> dict[str, Any]:
    """The typed entry (core.entry.WorklistEntry), as the JSON-able dict the worklist and sinks keep."""
    result = outcome.to_dict()
    recommendations = list(result.get("recommendations", []))
    explain = list(result.get("explain", []))
    if priors is not None:
        from workers.priors import comparison_hints

        for hint in comparison_hints(priors, study):
            if hint not in recommendations:
                recommendations.append(hint)
        explain += [f"Priors: {e.note or e.text or e.source}" for e in priors.evidence if isinstance(e, Evidence)]
    for a in analyses:
        explain += [f"{a.analyser}: not assessed — {reason}" for reason in a.not_assessed]
    return WorklistEntry(**{
        "study_instance_uid": study.uid,
        "accession_number": study.accession_number,
        "patient_id": study.get("PatientID"),
        "issuer_of_patient_id": study.get("IssuerOfPatientID"),
        "priority": outcome.priority.name,
        "order_priority": outcome.order_priority.name if outcome.order_priority is not None else None,
        "flags": [f.to_dict() for f in outcome.flags],
        "postop_interval_hours": outcome.postop_interval_hours,
        "course": result.get("course"),
        "priors": priors.priors if priors is not None else [],
        "priors_status": priors.status if priors is not None else "not_configured",
        "recommendations": recommendations,
        "explain": explain,
        "rulebook_version": outcome.rulebook_version,
        "modalities": study.modalities,
        "study_date": study.get("StudyDate"),
        "study_time": study.get("StudyTime"),
        "study_description": study.get("StudyDescription"),
        "series_count": len(study.series),
        "instance_count": study.instance_count,
        "first_received": study.first_received,
        "last_received": study.last_received,
        "triaged_at": time.time(),
        "analysers": [a.to_dict() for a in analyses],
        "series": [
            {
                "series_instance_uid": s.uid,
                "modality": s.modality,
                "description": s.description,
                "sop_class_uid": (s.instances[0].get("SOPClassUID") if s.instances else None),
                "instances": [i["SOPInstanceUID"] for i in s.instances],
            }
            for s in study.series.values()
        ],
        "headers": {k: study.get(k) for k in ENTRY_HEADERS if study.get(k) is not None},
    }).to_dict()


def public_view(entry: dict[str, Any]) -> dict[str, Any]:
    """The JSON Lines record of `pacs-triage triage --json` (the offline contract)."""
    return {k: entry.get(k) for k in OFFLINE_KEYS}

"""Prior-exam comparisons (issue 4): the patient's relevant priors, their roles and the surgery date.

`find_priors` asks the PACS (C-FIND, with retries, a time budget and a cache),
keeps the spine priors, gives each a role and infers the surgery date;
`comparison_hints` turns that into what the radiologist should compare;
`prefetch` C-MOVEs the priors to a reading station. Logs carry UIDs, counts
and statuses only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from core import metrics
from core.config import DicomNode
from core.study import Study
from rules import comparison
from rules.model import Evidence
from rules.timing import SurgeryEstimate, infer_surgery
from workers.association import AssociationFailed, associate
from workers.priors_classify import (
    assign_roles,
    family,
    is_intraoperative,
    parse_datetime,
    regions,
)
from workers.priors_query import QueryError, RedisCache, TTLCache, cache_key, query_studies, same_patient

log = logging.getLogger(__name__)

PUBLIC_KEYS = ("study_instance_uid", "study_date", "study_time", "modalities", "description", "body_part",
               "accession_number", "instances", "role", "roles", "interval_days")
RULE = "priors"

__all__ = ["PriorsResult", "find_priors", "comparison_hints", "prefetch", "TTLCache", "RedisCache"]


@dataclass
class PriorsResult:
    status: str  # ok | unavailable | not_configured
    priors: list[dict] = field(default_factory=list)
    surgery: SurgeryEstimate | None = None
    evidence: list[Evidence] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "priors": [dict(p) for p in self.priors],
            "surgery": self.surgery.to_dict() if self.surgery else None,
            "evidence": [e.to_dict() for e in self.evidence],
            "conflicts": list(self.conflicts),
            "hints": list(self.hints),
        }


#: C-FIND matching characters (PS3.4 C.2.2.2): never sent inside an identifier.
WILDCARDS = frozenset("*?\\")


def find_priors(study: Study, pacs: DicomNode | None, *, calling_aet: str, timeout: float = 10,
                attempts: int = 3, cache=None, text_surgery: dict | None = None, redis=None,
                backoff: float = 0.25) -> PriorsResult:
    """The relevant priors of `study` on `pacs`; never raises and never waits past timeout x attempts.

    `cache` is a TTLCache/RedisCache (or any object with get/set); a `redis` client is wrapped in a
    RedisCache when no cache is given. Only successful answers are cached, so an unavailable PACS is
    asked again at the next triage. `text_surgery` is {"date"|"datetime": ISO, "source": ...}.
    """
    if pacs is None:
        result = PriorsResult("not_configured", evidence=[_ev("priors not assessed: no priors PACS configured",
                                                             "priors", note="not_assessed")])
        result.hints = comparison_hints(result, study)
        return result
    patient_id = str(study.get("PatientID") or "").strip()
    issuer = str(study.get("IssuerOfPatientID") or "").strip() or None
    if not patient_id:
        return _unavailable(study, "the study has no PatientID")
    if any(c in WILDCARDS for c in patient_id + (issuer or "")):
        # "*" or "?" would make a PACS-wide C-FIND answering with other patients' studies.
        log.warning("priors not queried for study %s: PatientID or issuer has C-FIND wildcard characters",
                    study.uid)
        result = PriorsResult("refused", evidence=[_ev(
            "priors not assessed: the PatientID or its issuer contains C-FIND wildcard characters",
            "priors", note="not_assessed")])
        result.hints = comparison_hints(result, study)
        return result
    if cache is None and redis is not None:
        cache = RedisCache(redis)
    key = cache_key(pacs, patient_id, issuer)
    studies = _cache_get(cache, key)
    if studies is None:
        try:
            studies = _query_with_retries(pacs, patient_id, issuer, calling_aet, timeout, attempts, backoff)
        except QueryError as exc:
            log.warning("priors unavailable for study %s: %s", study.uid, exc)
            return _unavailable(study, str(exc))
        _cache_set(cache, key, studies)
    result = classify(study, studies, patient_id, issuer, text_surgery, pacs.aet)
    log.info("priors for study %s: %d answers, %d relevant, surgery date trust %s", study.uid, len(studies),
             len(result.priors), result.surgery.trust if result.surgery else "none")
    return result


def _query_with_retries(pacs, patient_id, issuer, calling_aet, timeout, attempts, backoff) -> list[dict]:
    """Up to `attempts` C-FINDs with exponential backoff, all within timeout x attempts."""
    attempts = max(1, int(attempts))
    deadline = time.monotonic() + timeout * attempts
    last = "no attempt made"
    for i in range(attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        start = time.monotonic()
        try:
            studies = query_studies(pacs, patient_id, issuer, calling_aet=calling_aet,
                                    timeout=min(timeout, remaining))
            metrics.priors_queries.observe(time.monotonic() - start)
            return studies
        except QueryError as exc:
            last = str(exc)
        except Exception as exc:  # a malformed answer or a network error: still only an attempt
            last = f"{type(exc).__name__} during C-FIND"
        metrics.priors_queries.observe(time.monotonic() - start)
        metrics.priors_failures.inc()
        log.info("priors C-FIND attempt %d/%d failed", i + 1, attempts)
        if i + 1 < attempts:
            time.sleep(max(0.0, min(backoff * 2**i, deadline - time.monotonic())))
    raise QueryError(f"{last} (after {attempts} attempt(s))")


def _cache_get(cache, key: str):
    if cache is None:
        return None
    try:
        return cache.get(key)
    except Exception:  # a cache outage only costs a query
        log.warning("priors cache unavailable")
        return None


def _cache_set(cache, key: str, value) -> None:
    if cache is not None:
        try:
            cache.set(key, value)
        except Exception:
            log.warning("priors cache unavailable")


def _ev(text: str, rule: str, source: str = "priors", note: str | None = None) -> Evidence:
    """Evidence whose note, when there is one, starts with a tag (not_assessed, conflict, trust ...)."""
    return Evidence(source=source, rule=f"{RULE}.{rule}" if rule != RULE else RULE, text=text,
                    note=f"{note}: {text}" if note else None)


def _unavailable(study: Study, reason: str) -> PriorsResult:
    result = PriorsResult("unavailable", evidence=[_ev(f"priors unavailable: {reason}", "priors",
                                                       note="not_assessed")])
    result.hints = comparison_hints(result, study)
    return result


def _current(study: Study) -> tuple[datetime | None, set[str], set[str]]:
    """The current study's date, modality families and spine regions."""
    dt = parse_datetime(study.get("StudyDate"), study.get("StudyTime"))
    fams = {family(m) for m in study.modalities}
    body = [s.body_part for s in study.series.values() if s.body_part]
    texts = [study.get("StudyDescription") or ""] + [s.description or "" for s in study.series.values()]
    return dt, fams, regions(body, texts) or set()


def classify(study: Study, studies: list[dict], patient_id: str, issuer: str | None,
             text_surgery: dict | None = None, pacs_aet: str = "PACS") -> PriorsResult:
    """Roles, surgery date, evidence and hints from C-FIND answers (also used on cached answers)."""
    result = PriorsResult("ok")
    kept, dropped = same_patient(studies, patient_id, issuer)
    if dropped:
        result.evidence.append(_ev(f"{dropped} answer(s) ignored: PatientID or IssuerOfPatientID differs",
                                   "identity", source=f"C-FIND {pacs_aet}"))
    current_dt, current_fams, current_regions = _current(study)
    priors: list[dict] = []
    for s in kept:
        if s["study_instance_uid"] == study.uid:
            continue
        p = _prepare(s)
        if current_dt and p["_dt"] and p["_dt"].date() > current_dt.date():
            continue  # later than the current study: not a prior
        if p["_regions"] is None or not (p["_regions"] or p["_intraop"]):
            continue  # another region, or a region we cannot tell and no intraoperative marking
        priors.append(p)
    priors.sort(key=lambda p: (p["_dt"] is None, p["_dt"] or datetime.min))
    surgery, conflicts = infer_surgery(priors, text_surgery, current_dt)
    assign_roles(priors, surgery, current_dt, current_fams, current_regions)
    for p in priors:
        d = p["_dt"]
        p["interval_days"] = (d.date() - current_dt.date()).days if d and current_dt else None
    result.conflicts = conflicts
    if surgery:
        result.surgery = surgery
        result.evidence.append(_ev(f"surgery date {surgery.datetime[:10]} from {surgery.source}",
                                   "surgery_date", source=surgery.evidence_source, note=f"trust {surgery.trust}"))
    else:
        result.evidence.append(_ev("surgery date not found among the PACS priors", "surgery_date",
                                   note="not_assessed"))
    for c in conflicts:
        result.evidence.append(_ev(f"conflict: {c}", "surgery_date", note="conflict"))
    for p in priors:
        if p["role"] != "other_spine":
            result.evidence.append(_ev(f"{' + '.join(p['roles'])} prior {'/'.join(p['modalities'])} of "
                                       f"{_date(p)}", p["role"], source=f"prior study {p['study_instance_uid']}"))
    if surgery and not any("preoperative" in p["roles"] for p in priors):
        result.evidence.append(_ev("no preoperative imaging on PACS", "preoperative", note="not_assessed"))
    elif not surgery:
        result.evidence.append(_ev("preoperative imaging not identified: surgery date unknown", "preoperative",
                                   note="not_assessed"))
    result.priors = [{k: p[k] for k in PUBLIC_KEYS} for p in priors]
    result.hints = comparison_hints(result, study)
    return result


def _prepare(s: dict) -> dict:
    """A C-FIND answer with its modalities, body part and the private fields classification needs."""
    p = dict(s)
    series = s.get("series") or []
    p["modalities"] = sorted(set(s["modalities"]) | {x["Modality"] for x in series if x.get("Modality")})
    body = [s["body_part"]] + [x["BodyPartExamined"] for x in series]
    if not p["body_part"]:
        p["body_part"] = next((b for b in body if b), "")
    p["_texts"] = [s["description"]] + [x.get("SeriesDescription", "") for x in series] + \
                  [x.get("ProtocolName", "") for x in series]
    p["_regions"] = regions([b for b in body if b], [t for t in p["_texts"] if t])
    p["_dt"] = parse_datetime(s["study_date"], s["study_time"])
    p["_intraop"] = p["_regions"] is not None and is_intraoperative(p)
    return p


def _date(p: dict) -> str:
    d = p.get("_dt") or parse_datetime(p.get("study_date"), None)
    return d.date().isoformat() if d else "unknown date"


# ---- comparison hints (guide section 5) ----

def comparison_hints(result: PriorsResult, study: Study) -> list[str]:
    """What to compare with, in the words of rules/policy/comparison.yaml; a missing prior is 'not assessed'."""
    if result.status == "not_configured":
        return [comparison.hint("not_configured")]
    if result.status == "unavailable":
        reason = next((e.text for e in result.evidence if e.text and e.text.startswith("priors unavailable")),
                      "priors unavailable")
        return [comparison.hint("unavailable", reason=f"{reason[0].upper()}{reason[1:]}")]
    hints: list[str] = []
    months = None
    if result.surgery and result.surgery.postop_interval_hours is not None:
        months = result.surgery.postop_interval_hours / 24 / 30.4
    by_role = {}
    for p in result.priors:
        for r in p.get("roles") or [p["role"]]:
            by_role.setdefault(r, []).append(p)
    for p in by_role.get("intraoperative", [])[-1:]:
        hints.append(comparison.hint("intraoperative", modalities=_mods(p), date=_date(p)))
    pre = by_role.get("preoperative", [])
    mri = [p for p in pre if "MR" in p["modalities"]]
    if mri:
        text = comparison.hint("preoperative_mri", date=_date(mri[-1]))
        if months is not None and months > comparison.setting("contrast_unhelpful_after_months"):
            text += comparison.hint("preoperative_mri_late", months=int(months))
        hints.append(text)
    for p in pre:
        if p not in mri:
            hints.append(comparison.hint("preoperative_other", modalities=_mods(p), date=_date(p)))
    if result.surgery and not pre:
        hints.append(comparison.hint("no_preoperative"))
    elif not result.surgery:
        hints.append(comparison.hint("no_surgery_date"))
    for p in by_role.get("postoperative_reference", []):
        if {"CR", "DX"} & set(p["modalities"]):
            hints.append(comparison.hint("postoperative_radiograph", date=_date(p)))
        elif "CT" in p["modalities"]:
            hints.append(comparison.hint("postoperative_ct", date=_date(p)))
        else:
            hints.append(comparison.hint("postoperative_other", modalities=_mods(p), date=_date(p)))
    for p in by_role.get("recent_comparable", []):
        if p["role"] == "recent_comparable":
            hints.append(comparison.hint("recent_comparable", modalities=_mods(p), date=_date(p),
                                         days=p["interval_days"]))
    for c in result.conflicts:
        hints.append(comparison.hint("conflict", conflict=c))
    return hints


def _mods(p: dict) -> str:
    return "/".join(p["modalities"]) or "study"


# ---- prefetch ----

def prefetch(priors: list[dict], pacs: DicomNode, destination_aet: str, *, calling_aet: str,
             timeout: float = 30) -> list[str]:
    """C-MOVE each prior study to `destination_aet`; return the UIDs moved without failure."""
    uids = [p["study_instance_uid"] for p in priors if p.get("study_instance_uid")]
    if not uids:
        return []
    try:
        assoc = associate(pacs, calling_aet=calling_aet, timeout=timeout,
                          contexts=[StudyRootQueryRetrieveInformationModelMove])
    except AssociationFailed as exc:
        log.warning("prefetch: %s", exc)
        return []
    moved = []
    try:
        for uid in uids:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = uid
            final = None
            for status, _ in assoc.send_c_move(ds, destination_aet, StudyRootQueryRetrieveInformationModelMove):
                if status:
                    final = status.Status
            if final == 0x0000:
                moved.append(uid)
            else:
                log.warning("prefetch of study %s ended with status %s", uid,
                            "none" if final is None else f"0x{final:04X}")
        assoc.release()
    finally:
        if assoc.is_alive():
            assoc.abort()
    log.info("prefetch: %d/%d studies moved to %s", len(moved), len(uids), destination_aet)
    return moved

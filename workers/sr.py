"""The worklist entry as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report).

The SR is decision support: every flag is a *suspected* condition, coded as a
qualitative evaluation whose value is SCT 415684004 "Suspected". Our own
concepts use the local coding scheme ``99PACSTRIAGE``.

UIDs are derived from the study UID, so a re-triage (higher ``revision``)
replaces the previous SR at the PACS instead of adding one.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import warnings
from typing import Any

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from core.entry import WorklistEntry

log = logging.getLogger(__name__)

SCHEME = "99PACSTRIAGE"
SERIES_NUMBER = 9901
MANUFACTURER = "pacs-triage"
SERIES_DESCRIPTION = "Triage suggestion (decision support)"
CHARSET = "ISO_IR 192"
DISCLAIMER = (
    "Decision support only: automated triage suggestion by pacs-triage. "
    "Every flag is a suspected condition proposed to prioritise reading; "
    "this document is not a diagnosis and is not a report."
)

SUSPECTED = codes.SCT.Suspected  # 415684004


def local(value: str, meaning: str) -> Code:
    """A concept of our local coding scheme."""
    return Code(value, SCHEME, meaning[:64])


PRIORITY = local("priority", "Suggested reading priority")
FLAG_PRIORITY = local("flag-priority", "Reading priority suggested by flag")
EVIDENCE = local("evidence", "Evidence")
RULES = local("rules", "Rules")
RULEBOOK = local("rulebook", "Rulebook version")
POSTOP = local("postop-interval", "Postoperative interval")
COURSE = local("course", "Postoperative course")
RECOMMENDATION = local("recommendation", "Recommendation")
PRIOR = local("prior", "Prior study")
EXPLAIN = local("explanation", "Explanation")
NOTICE = local("notice", "Decision support notice")
REVISION = local("revision", "Triage revision")
ORDER_PRIORITY = local("order-priority", "Order priority")
INCOMPLETE = local("analysis-incomplete", "Image analysis incomplete")

PRIORITY_CODES = {p: local(p, p) for p in ("STAT", "URGENT", "ROUTINE")}

#: Our unit spellings -> UCUM codes.
UCUM = {
    "mm": "mm", "cm": "cm", "m": "m", "mm2": "mm2", "mm²": "mm2", "cm2": "cm2",
    "mm3": "mm3", "ml": "mL", "mL": "mL", "cm3": "cm3", "%": "%", "percent": "%",
    "deg": "deg", "°": "deg", "degree": "deg", "degrees": "deg", "hu": "[hnsf'U]",
    "HU": "[hnsf'U]", "h": "h", "hour": "h", "hours": "h", "d": "d", "day": "d",
    "days": "d", "s": "s", "ms": "ms", "ratio": "1", "1": "1", "": "1",
}

MODALITY = {
    "MR": Code("MR", "DCM", "Magnetic Resonance"),
    "CT": Code("CT", "DCM", "Computed Tomography"),
    "DX": Code("DX", "DCM", "Digital Radiography"),
    "CR": Code("CR", "DCM", "Computed Radiography"),
    "XA": Code("XA", "DCM", "X-Ray Angiography"),
    "RF": Code("RF", "DCM", "Radio Fluoroscopy"),
}


def sr_uids(study_uid: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of the SR of a study: same study, same UIDs."""
    series = generate_uid(entropy_srcs=[study_uid, "pacs-triage-sr-series"])
    instance = generate_uid(entropy_srcs=[study_uid, "pacs-triage-sr"])
    return series, instance


# -- header hygiene -----------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def _first(value: Any) -> str:
    """One string value: lists give their first item, None gives ''."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return "" if value is None else str(value)


def clean_text(value: Any, limit: int | None = None) -> str:
    """No control characters or backslashes (VM separator); at most `limit` chars."""
    text = _CONTROL.sub(" ", _first(value)).strip()
    return text[:limit].rstrip() if limit else text


def clean_id(value: Any) -> str:
    """An identifier kept as received (no truncation: a shortened ID is another ID)."""
    return clean_text(value)


def clean_person_name(value: Any) -> str:
    """A PN that DICOM allows: <= 3 groups, <= 5 components, <= 64 chars per group.

    Components beyond the fifth are folded into the fifth; nothing is invented.
    """
    text = clean_text(value)
    groups = []
    for group in text.split("=")[:3]:
        parts = [p.strip() for p in group.split("^")]
        if len(parts) > 5:
            parts = parts[:4] + [" ".join(p for p in parts[4:] if p)]
        while len("^".join(parts)) > 64:  # shorten the longest component, keep the others
            i = max(range(len(parts)), key=lambda k: len(parts[k]))
            parts[i] = parts[i][: len(parts[i]) - (len("^".join(parts)) - 64)].rstrip()
        groups.append("^".join(parts).rstrip("^"))
    return "=".join(groups).rstrip("=")


def _clean_as(value: Any, pattern: str, vr) -> str:
    """The value if it has the VR's form and pydicom accepts it, else empty."""
    text = clean_text(value)
    if not re.fullmatch(pattern, text):
        return ""
    try:
        vr(text)
    except ValueError:
        return ""
    return text


def clean_date(value: Any) -> str:
    return _clean_as(value, r"\d{8}", DA)


def clean_time(value: Any) -> str:
    return _clean_as(value, r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", TM)


def clean_sex(value: Any) -> str:
    text = clean_text(value).upper()
    return text if text in ("M", "F", "O") else ""


def patient_study(entry: WorklistEntry) -> dict[str, str]:
    """Patient and study attributes for the SR: empty where unknown or unusable."""
    h = entry.headers or {}

    def pick(keyword: str, entry_key: str | None = None) -> Any:
        value = h.get(keyword)
        if (value is None or value == "") and entry_key:
            value = getattr(entry, entry_key)
        return value

    return {
        "PatientName": clean_person_name(h.get("PatientName")),
        "PatientID": clean_id(pick("PatientID", "patient_id")),
        "IssuerOfPatientID": clean_id(pick("IssuerOfPatientID", "issuer_of_patient_id")),
        "PatientBirthDate": clean_date(h.get("PatientBirthDate")),
        "PatientSex": clean_sex(h.get("PatientSex")),
        "StudyDate": clean_date(pick("StudyDate", "study_date")),
        "StudyTime": clean_time(pick("StudyTime", "study_time")),
        "StudyID": clean_id(h.get("StudyID")),
        "AccessionNumber": clean_id(pick("AccessionNumber", "accession_number")),
        "ReferringPhysicianName": clean_person_name(h.get("ReferringPhysicianName")),
        "StudyDescription": clean_text(pick("StudyDescription", "study_description"), 64),
    }


def evidence_datasets(entry: WorklistEntry) -> list[Dataset]:
    """One minimal dataset per triaged instance, carrying the cleaned patient/study attributes."""
    study_uid = entry.study_instance_uid
    attrs = patient_study(entry)
    out = []
    for series in entry.series:
        for sop_uid in series.get("instances") or []:
            ds = Dataset()
            ds.SpecificCharacterSet = CHARSET
            ds.SOPClassUID = series["sop_class_uid"]
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series["series_instance_uid"]
            ds.Modality = series.get("modality") or "OT"
            for keyword, value in attrs.items():
                if value or keyword not in ("IssuerOfPatientID", "StudyDescription"):
                    setattr(ds, keyword, value)
            out.append(ds)
    if not out:
        raise ValueError("the entry lists no instances to reference")
    # highdicom copies patient/study attributes from the first item, which needs an IOD it knows.
    from highdicom._standard_utils import get_sop_class_iod_map  # private, hence here

    known = get_sop_class_iod_map()
    out.sort(key=lambda ds: ds.SOPClassUID not in known)
    return out


# -- content ---------------------------------------------------------------------

def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value or "-", relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _meaning(code: str) -> str:
    return code.replace("_", " ").replace("-", " ").capitalize()


def flag_concept(code: str) -> Code:
    """The condition of a flag; the value 'Suspected' goes with it, never a bare finding."""
    return local(code, _meaning(code))


def unit_code(unit: Any) -> Code:
    text = clean_text(unit)
    ucum = UCUM.get(text, UCUM.get(text.lower()))
    if ucum is None:
        ucum = text if re.fullmatch(r"[A-Za-z0-9%/.\[\]'^-]{1,16}", text) else "1"
    return Code(ucum, "UCUM", ucum if ucum != "1" else "no units")


def evidence_text(ev: dict) -> str:
    """One evidence item as a line: rule, source, matched text, offsets, assertion, measurement."""
    parts = []
    if ev.get("rule"):
        parts.append(f"rule {ev['rule']}")
    if ev.get("source"):
        parts.append(f"field {ev['source']}")
    if ev.get("text"):
        span = ""
        if ev.get("start") is not None and ev.get("end") is not None:
            span = f" [{ev['start']}-{ev['end']}]"
        parts.append(f"text \u00ab{ev['text']}\u00bb{span}")
    if ev.get("assertion"):
        parts.append(f"assertion {ev['assertion']}")
    m = ev.get("measurement")
    if m:
        line = f"measurement {m.get('name')} = {m.get('value')} {m.get('unit') or ''}".rstrip()
        if m.get("threshold") is not None:
            line += f" (threshold {m['threshold']})"
        parts.append(line)
    if ev.get("note"):
        parts.append(f"note {ev['note']}")
    return "; ".join(parts)


def measurement(m: dict, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement | None:
    """A TID 300 measurement from an evidence measurement, if it has a numeric value."""
    try:
        value = float(m["value"])
    except (KeyError, TypeError, ValueError):
        return None
    name = clean_text(m.get("name")) or "measurement"
    return hd.sr.Measurement(
        name=local(name, _meaning(name)), value=value, unit=unit_code(m.get("unit")),
        algorithm_id=algorithm,
    )


def _describe_prior(prior: Any) -> str:
    if isinstance(prior, dict):
        role = prior.get("role") or "prior"
        when = prior.get("study_date") or "date unknown"
        days = prior.get("interval_days")
        ago = f", {abs(days)} day(s) {'before' if days <= 0 else 'after'}" if isinstance(days, (int, float)) else ""
        mods = "/".join(prior.get("modalities") or []) or "?"
        return (f"{role}: {mods} {prior.get('description') or ''} of {when}{ago} "
                f"(Study Instance UID {prior.get('study_instance_uid', '?')})").replace("  ", " ")
    return str(prior)


def _interval(hours: Any) -> str:
    if hours is None:
        return "not assessed (surgery date unknown)"
    try:
        h = float(hours)
    except (TypeError, ValueError):
        return str(hours)
    return f"{h:g} h (day {int(h // 24)} after surgery)"


def summary_group(entry: WorklistEntry, algorithm, tracking_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    priority = entry.priority
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier="triage summary"),
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(PRIORITY, PRIORITY_CODES[priority])],
    )
    items = group[0].ContentSequence
    items.append(_text(NOTICE, DISCLAIMER))
    items.append(_text(REVISION, str(entry.revision or 1)))
    items.append(_text(RULEBOOK, str(entry.rulebook_version or "unknown")))
    if entry.order_priority:
        items.append(_text(ORDER_PRIORITY, entry.order_priority))
    items.append(_text(POSTOP, _interval(entry.postop_interval_hours)))
    items.append(_text(COURSE, entry.course or "not assessed"))
    from workers.analysers import incomplete_notes

    for line in incomplete_notes(entry):  # not assessed is never silent
        items.append(_text(INCOMPLETE, line))
    for rec in entry.recommendations:
        items.append(_text(RECOMMENDATION, str(rec)))
    for prior in entry.priors:
        items.append(_text(PRIOR, _describe_prior(prior)))
    for line in entry.explain:
        items.append(_text(EXPLAIN, str(line)))
    return group


def flag_group(flag: dict, study_uid: str, algorithm) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    code = flag["code"]
    evidence = flag.get("evidence") or []
    measurements = [
        m for m in (measurement(ev["measurement"], algorithm) for ev in evidence if ev.get("measurement"))
        if m is not None
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[study_uid, "pacs-triage-flag", code]),
            identifier=f"suspected {code}",
        ),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(flag_concept(code), SUSPECTED),
            hd.sr.QualitativeEvaluation(FLAG_PRIORITY, PRIORITY_CODES[str(flag["priority"]).upper()]),
        ],
    )
    items = group[0].ContentSequence
    rules = flag.get("rules") or ([flag["rule"]] if flag.get("rule") else [])
    if rules:
        items.append(_text(RULES, ", ".join(map(str, rules))))
    for ev in evidence:
        items.append(_text(EVIDENCE, evidence_text(ev)))
    return group


def _content_datetime(entry: WorklistEntry) -> datetime.datetime:
    ts = entry.triaged_at
    if ts is None:
        return datetime.datetime.now()
    return datetime.datetime.fromtimestamp(float(ts))


def build_sr(entry: WorklistEntry | dict, key_image: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR of a worklist entry (a pydicom Dataset), ready to send or save.

    `key_image` (workers.keyimage.secondary_capture, sent to the same PACS) is referenced as the
    best illustration of the misplaced_screw finding, and listed in the SR's evidence."""
    entry = WorklistEntry.coerce(entry)
    study_uid = entry.study_instance_uid
    series_uid, sop_uid = sr_uids(study_uid)
    revision = max(1, int(entry.revision or 1))
    version = str(entry.rulebook_version or "unknown")
    algorithm = hd.sr.AlgorithmIdentification(name="pacs-triage rulebook", version=version[:64])

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["pacs-triage-device"]),
            name="pacs-triage", manufacturer_name=MANUFACTURER, model_name="pacs-triage",
        ),
    )
    modalities = entry.modalities or [s.get("modality") for s in entry.series]
    procedures = [MODALITY[m] for m in dict.fromkeys(modalities) if m in MODALITY]
    groups = [summary_group(entry, algorithm, generate_uid(entropy_srcs=[study_uid, "pacs-triage-summary"]))]
    groups += [flag_group(f, study_uid, algorithm) for f in entry.flags]
    if key_image is not None:
        codes_ = [f.get("code") for f in entry.flags]
        target = groups[1 + codes_.index("misplaced_screw")] if "misplaced_screw" in codes_ else groups[0]
        target[0].ContentSequence.append(hd.sr.ImageContentItem(
            name=codes.DCM.BestIllustrationOfFinding, referenced_sop_class_uid=key_image.SOPClassUID,
            referenced_sop_instance_uid=key_image.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=procedures or [Code("OT", "DCM", "Other")],
        imaging_measurements=groups,
    )
    when = _content_datetime(entry)
    with quiet():
        return _sr(entry, report, when, series_uid, sop_uid, revision, key_image)


@contextlib.contextmanager
def quiet():
    """Silence pydicom/highdicom value warnings: their text quotes the value (patient data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _sr(entry, report, when, series_uid, sop_uid, revision, key_image=None) -> hd.sr.Comprehensive3DSR:
    evidence = evidence_datasets(entry)
    if key_image is not None:
        ref = Dataset()
        for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"):
            setattr(ref, kw, getattr(key_image, kw))
        evidence.append(ref)
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=revision,
        manufacturer=MANUFACTURER,
        series_description=SERIES_DESCRIPTION,
        specific_character_set=CHARSET,
        content_date=when.date(),
        content_time=when.time(),
        coding_schemes=[CodingSchemeIdentificationItem(
            designator=SCHEME, name="pacs-triage local codes",
            responsible_organization="pacs-triage",
        )],
    )

"""The RIS order of a study: what the referrer asked and how urgently, kept in Redis.

An `Order` comes from an HL7 v2 order message (ORM^O01 / OMI^O23, parsed by
`parse_order`) received by the agent's MLLP listener, or from a DICOM Modality
Worklist item (`workers.mwl`). The pipeline reads it alongside the DICOM header
text (`workers.pipeline`): its texts become text fields named after their source
("HL7 order OBR-31"), its priority a floor.

`parse_result` reads an ORU^R01: a report with result status F (final) or
C (corrected) closes the study's worklist entry.

Stored by `OrderStore` under a digest of the accession number, with a second index
under a digest of patient identifier + issuer (key names never carry patient data),
both expiring after `order_retention_days`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core import keys
from core.priority import Priority

#: Order control codes (HL7 table 0119) we act on.
NEW = ("NW",)
CHANGE = ("XO", "XX", "SC")
CANCEL = ("CA", "OC", "DC", "CR", "OD")
#: Result status (HL7 table 0123, OBR-25) that means a signed report.
SIGNED = ("F", "C")


class OrderError(ValueError):
    """A message that cannot be used. `code`: HL7 table 0357 error code; `reject`: AR, not AE."""

    def __init__(self, message: str, code: str = "207", reject: bool = False):
        super().__init__(message)
        self.code = code
        self.reject = reject


@dataclass
class Order:
    accession_number: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    priority: str | None = None  # ours: STAT | URGENT | ROUTINE, None when the order has none
    priority_code: str | None = None  # as the RIS wrote it (S, A, R, STAT, HIGH...)
    priority_source: str | None = None  # e.g. "HL7 order TQ1-9", "MWL (0040,1003)"
    texts: list[dict] = field(default_factory=list)  # {"source": "HL7 order", "field": "OBR-31", "value": ...}
    status: str = "active"  # active | cancelled
    control: str | None = None  # the last order control code (NW, XO, CA) or "MWL"
    source: str = "HL7"  # HL7 | MWL
    received_at: float | None = None
    signed_at: float | None = None  # a signed report (ORU^R01 F/C) arrived before the study was triaged
    signed_status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Order":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def same_patient(self, patient_id: str | None, issuer: str | None) -> bool:
        """False only when both sides name a patient and they differ (an unknown issuer matches any)."""
        if not self.patient_id or not patient_id:
            return True
        if self.patient_id.strip() != str(patient_id).strip():
            return False
        if self.issuer_of_patient_id and issuer:
            return self.issuer_of_patient_id.strip() == str(issuer).strip()
        return True

    def text_fields(self) -> list[dict[str, str]]:
        """The order's texts as the pipeline's text fields; the evidence names the source."""
        return [{"keyword": t["field"], "tag": t["source"], "value": t["value"]} for t in self.texts if t.get("value")]


# --- HL7 v2 -------------------------------------------------------------------------------

def message_type(msg) -> tuple[str, str]:
    """(MSH-9.1, MSH-9.2), e.g. ("ORM", "O01")."""
    parts = _components(msg, _raw(msg, "MSH", 9))
    return (parts[0].upper() if parts else "", parts[1].upper() if len(parts) > 1 else "")


def parse_order(msg, now: float | None = None) -> Order:
    """An ORM^O01 or OMI^O23 as an `Order` (its `control` says new, change or cancel)."""
    kind = message_type(msg)
    if kind not in (("ORM", "O01"), ("OMI", "O23")):
        raise OrderError(f"unsupported message type {kind[0]}^{kind[1]}", code="200", reject=True)
    control = _first(msg, "ORC", 1).upper()
    if control not in NEW + CHANGE + CANCEL:
        raise OrderError(f"unsupported order control {control or '(empty)'}", code="103", reject=True)
    accession = accession_number(msg)
    if not accession:
        raise OrderError("no accession number (IPC-1, OBR-18, ORC-3, OBR-3)", code="101")
    patient_id, issuer = patient(msg)
    order = Order(accession_number=accession, patient_id=patient_id, issuer_of_patient_id=issuer,
                  status="cancelled" if control in CANCEL else "active", control=control,
                  source="HL7", received_at=now if now is not None else time.time())
    # TQ1-9 (CWE: the code first), OBR-27 and ORC-7 (TQ: the priority is component 6), OBR-5 (ID).
    for seg, num, comp, path in (("TQ1", 9, 0, "TQ1-9"), ("OBR", 27, 5, "OBR-27"), ("OBR", 5, 0, "OBR-5"),
                                 ("ORC", 7, 5, "ORC-7")):
        comps = _components(msg, _raw(msg, seg, num).split(msg.separators[2])[0])
        code = msg.unescape(comps[comp]).strip() if len(comps) > comp else ""
        if code:
            prio = Priority.from_order(code)
            order.priority = prio.name if prio is not None else None
            order.priority_code, order.priority_source = code, f"HL7 order {path}"
            break
    for seg, num, path in (("OBR", 31, "OBR-31"), ("OBR", 13, "OBR-13"), ("ORC", 16, "ORC-16")):
        text = "; ".join(_texts(msg, _raw(msg, seg, num)))
        if text:
            order.texts.append({"source": "HL7 order", "field": path, "value": text})
    notes = [t for s in _segments(msg, "NTE") for t in _texts(msg, _field(s, 3), coded=False)]
    if notes:
        order.texts.append({"source": "HL7 order", "field": "NTE", "value": " ".join(notes)})
    return order


def parse_result(msg) -> dict[str, Any]:
    """An ORU^R01: accession, patient, result status (OBR-25), observation time."""
    kind = message_type(msg)
    if kind != ("ORU", "R01"):
        raise OrderError(f"unsupported message type {kind[0]}^{kind[1]}", code="200", reject=True)
    accession = accession_number(msg)
    if not accession:
        raise OrderError("no accession number (OBR-18, ORC-3, OBR-3)", code="101")
    patient_id, issuer = patient(msg)
    statuses = [_first(msg, "OBR", 25, s).upper() for s in range(len(_segments(msg, "OBR")))]
    return {"accession_number": accession, "patient_id": patient_id, "issuer_of_patient_id": issuer,
            "status": next((s for s in statuses if s), ""), "signed": any(s in SIGNED for s in statuses)}


def accession_number(msg) -> str:
    """IPC-1 (IHE, OMI), else OBR-18 (IHE placer field 1), else the filler then placer order number."""
    for seg, num in (("IPC", 1), ("OBR", 18), ("ORC", 3), ("OBR", 3), ("ORC", 2), ("OBR", 2)):
        value = _first(msg, seg, num)
        if value:
            return value
    return ""


def patient(msg) -> tuple[str | None, str | None]:
    """PID-3 first repetition: identifier and assigning authority (namespace)."""
    raw = _raw(msg, "PID", 3).split(msg.separators[2])[0]
    comps = _components(msg, raw)
    pid = comps[0] if comps else ""
    issuer = comps[3].split(msg.separators[4])[0] if len(comps) > 3 else ""
    return (msg.unescape(pid) or None, msg.unescape(issuer) or None)


def _segments(msg, name: str) -> list:
    try:
        return list(msg.segments(name))
    except KeyError:
        return []


def _field(segment, num: int) -> str:
    try:
        return str(segment(num))
    except IndexError:
        return ""


def _raw(msg, name: str, num: int, which: int = 0) -> str:
    segments = _segments(msg, name)
    return _field(segments[which], num) if len(segments) > which else ""


def _components(msg, raw: str) -> list[str]:
    return raw.split(msg.separators[3]) if raw else []


def _first(msg, name: str, num: int, which: int = 0) -> str:
    """The first component of the first repetition, unescaped and stripped."""
    raw = _raw(msg, name, num, which).split(msg.separators[2])[0]
    comps = _components(msg, raw)
    return msg.unescape(comps[0]).strip() if comps else ""


def _texts(msg, raw: str, coded: bool = True) -> list[str]:
    """Each repetition's text: a coded element's text (component 2) or its code, or the whole string."""
    out = []
    for rep in raw.split(msg.separators[2]) if raw else []:
        comps = _components(msg, rep)
        if coded and len(comps) > 1:
            value = comps[1] or comps[0]
        else:
            value = msg.separators[3].join(comps) if not coded else (comps[0] if comps else "")
        value = msg.unescape(value).strip()
        if value:
            out.append(value)
    return out


# --- Redis ---------------------------------------------------------------------------------

def digest(*parts: str | None) -> str:
    """A key name for identifiers that must not appear in Redis key names."""
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:32]


class OrderStore:
    """Orders by accession number, and accession numbers by patient identifier + issuer."""

    def __init__(self, client, retention_days: float = 30.0):
        self.redis = client
        self.ttl = int(retention_days * 86400) if retention_days and retention_days > 0 else None

    def get(self, accession: str | None) -> Order | None:
        if not accession:
            return None
        raw = self.redis.get(keys.order(digest(accession)))
        return Order.from_dict(json.loads(raw)) if raw else None

    def save(self, order: Order) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.order(digest(order.accession_number)), json.dumps(order.to_dict()), ex=self.ttl)
        if order.patient_id:
            pkey = keys.patient_orders(digest(order.patient_id, order.issuer_of_patient_id))
            pipe.sadd(pkey, order.accession_number)
            if self.ttl:
                pipe.expire(pkey, self.ttl)
        pipe.execute()

    def for_patient(self, patient_id: str, issuer: str | None) -> list[Order]:
        members = self.redis.smembers(keys.patient_orders(digest(patient_id, issuer)))
        orders = [self.get(m.decode()) for m in sorted(members)]
        return [o for o in orders if o is not None]

    def study_of(self, accession: str | None) -> str | None:
        """The study (UID) triaged under this accession number, if any."""
        if not accession:
            return None
        raw = self.redis.get(keys.accession_study(digest(accession)))
        return raw.decode() if raw else None

    def link_study(self, accession: str | None, study_uid: str) -> None:
        if accession:
            self.redis.set(keys.accession_study(digest(accession)), study_uid, ex=self.ttl)

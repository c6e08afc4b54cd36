"""C-FIND of a patient's studies on the PACS, and a short per-patient cache.

Matching is on PatientID and IssuerOfPatientID, never on the name; the answers
are filtered again here because a PACS may ignore the issuer or wildcards.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from core.config import DicomNode
from workers.association import AssociationFailed, associate

STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ModalitiesInStudy", "StudyDescription",
              "AccessionNumber", "NumberOfStudyRelatedInstances", "BodyPartExamined", "PatientID",
              "IssuerOfPatientID")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesDescription", "BodyPartExamined", "ProtocolName")
MAX_SERIES_QUERIES = 40  # most recent studies whose series are asked for


class QueryError(Exception):
    """The PACS could not be queried; the message names the reason (no patient data)."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split("\\") if v.strip()]


def _identifier(level: str, keys: tuple[str, ...], **values: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for kw in keys:
        setattr(ds, kw, "")
    for kw, v in values.items():
        setattr(ds, kw, v)
    return ds


def _find(assoc, ds: Dataset, deadline: float) -> list[Dataset]:
    out = []
    for status, identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
        if time.monotonic() > deadline:
            assoc.abort()
            raise QueryError("C-FIND exceeded the timeout")
        if not status:
            raise QueryError("C-FIND got no response (timeout or aborted association)")
        code = status.Status
        if code in (0xFF00, 0xFF01):
            if identifier is not None:
                out.append(identifier)
        elif code == 0x0000:
            return out
        else:
            raise QueryError(f"C-FIND failed with status 0x{code:04X}")
    raise QueryError("C-FIND ended without a final status")


def query_studies(pacs: DicomNode, patient_id: str, issuer: str | None, *, calling_aet: str,
                  timeout: float) -> list[dict]:
    """One attempt: the patient's studies with their series, as plain dicts. Raises QueryError."""
    deadline = time.monotonic() + timeout
    try:
        assoc = associate(pacs, calling_aet=calling_aet, timeout=timeout,
                          contexts=[StudyRootQueryRetrieveInformationModelFind])
    except AssociationFailed as exc:
        raise QueryError(str(exc)) from None
    try:
        match = {"PatientID": patient_id}
        if issuer:
            match["IssuerOfPatientID"] = issuer
        studies = [_study(ds) for ds in _find(assoc, _identifier("STUDY", STUDY_KEYS, **match), deadline)]
        studies = [s for s in studies if s["study_instance_uid"]]
        studies.sort(key=lambda s: (s["study_date"], s["study_time"]), reverse=True)
        for s in studies[:MAX_SERIES_QUERIES]:
            ident = _identifier("SERIES", SERIES_KEYS, StudyInstanceUID=s["study_instance_uid"])
            s["series"] = [_series(ds) for ds in _find(assoc, ident, deadline)]
        assoc.release()
    finally:
        if assoc.is_alive():
            assoc.abort()
    return studies


def _study(ds: Dataset) -> dict:
    n = _text(ds.get("NumberOfStudyRelatedInstances"))
    return {
        "study_instance_uid": _text(ds.get("StudyInstanceUID")),
        "study_date": _text(ds.get("StudyDate")),
        "study_time": _text(ds.get("StudyTime")),
        "modalities": _list(ds.get("ModalitiesInStudy")),
        "description": _text(ds.get("StudyDescription")),
        "body_part": _text(ds.get("BodyPartExamined")),
        "accession_number": _text(ds.get("AccessionNumber")),
        "instances": int(n) if n.isdigit() else None,
        "patient_id": _text(ds.get("PatientID")),
        "issuer": _text(ds.get("IssuerOfPatientID")),
        "series": [],
    }


def _series(ds: Dataset) -> dict:
    return {kw: _text(ds.get(kw)) for kw in SERIES_KEYS}


def same_patient(studies: list[dict], patient_id: str, issuer: str | None) -> tuple[list[dict], int]:
    """Studies of exactly this PatientID (and issuer when known); also how many answers were dropped."""
    kept = [s for s in studies
            if s["patient_id"] == patient_id and (not issuer or s["issuer"] == issuer)]
    return kept, len(studies) - len(kept)


def cache_key(pacs: DicomNode, patient_id: str, issuer: str | None) -> str:
    """A hash of the PACS and the patient identity: no identifier is stored in clear."""
    digest = hashlib.sha256(f"{pacs}|{issuer or ''}|{patient_id}".encode()).hexdigest()
    return f"pacs-triage:priors:{digest}"


class TTLCache:
    """In-memory per-process cache with expiry."""

    def __init__(self, ttl: float = 300.0):
        self.ttl = ttl
        self._data: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] < time.monotonic():
                self._data.pop(key, None)
                return None
            return item[1]

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, value)


class RedisCache:
    """Cache shared by every worker, in Redis (JSON values with a TTL)."""

    def __init__(self, client, ttl: float = 300.0):
        self.client = client
        self.ttl = ttl

    def get(self, key: str) -> Any:
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: Any) -> None:
        self.client.set(key, json.dumps(value), px=int(self.ttl * 1000))

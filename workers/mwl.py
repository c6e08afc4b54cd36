"""The order from a DICOM Modality Worklist (C-FIND MWL on AccessionNumber), for sites without an HL7 feed.

`query_order(node, accession)` asks the worklist for the scheduled procedure step(s) of one
accession number and returns a `core.orders.Order` (source "MWL"): its texts are the
Reason for the Requested Procedure, Requested Procedure Description and Comments,
Imaging Service Request Comments, Additional Patient History and the Scheduled
Procedure Step Description; its priority is the Requested Procedure Priority (0040,1003)
(the floor). Several items (one per scheduled step) are merged; the highest priority wins.
"""

from __future__ import annotations

import time

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind

from core.config import DicomNode
from core.orders import Order
from core.priority import Priority
from workers.association import AssociationFailed, association

#: Requested text attributes (keyword -> (tag, where it lives: top level or SPS item)).
TEXTS = (("ReasonForTheRequestedProcedure", "(0040,1002)"), ("RequestedProcedureDescription", "(0032,1060)"),
         ("RequestedProcedureComments", "(0040,1400)"), ("ImagingServiceRequestComments", "(0040,2400)"),
         ("AdditionalPatientHistory", "(0010,21B0)"), ("ReasonForTheImagingServiceRequest", "(0040,2001)"))
SPS_TEXT = ("ScheduledProcedureStepDescription", "(0040,0007)")


class MwlError(Exception):
    """The worklist could not be read (the text names the peer and what happened, no patient data)."""


def build_query(accession: str) -> Dataset:
    ds = Dataset()
    ds.AccessionNumber = accession
    ds.PatientID = ""
    ds.IssuerOfPatientID = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedurePriority = ""
    for kw, _ in TEXTS:
        setattr(ds, kw, "")
    sps = Dataset()
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledStationAETitle = ""
    sps.ScheduledProcedureStepStartDate = ""
    sps.Modality = ""
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def query_order(node: DicomNode | str, accession: str | None, *, calling_aet: str = "PACSTRIAGE",
                timeout: float = 10.0) -> Order | None:
    """The accession's order from the worklist, or None when the worklist has no item for it."""
    if not accession:
        return None
    node = node if isinstance(node, DicomNode) else DicomNode.parse(str(node))
    items: list[Dataset] = []
    try:
        with association(node, calling_aet=calling_aet, timeout=timeout,
                         contexts=[ModalityWorklistInformationFind]) as assoc:
            for status, identifier in assoc.send_c_find(build_query(accession), ModalityWorklistInformationFind):
                code = getattr(status, "Status", None)
                if code is None:
                    raise MwlError(f"{node}: C-FIND got no response (timeout or aborted association)")
                if code in (0xFF00, 0xFF01):
                    if identifier is not None:
                        items.append(identifier)
                    continue
                if code != 0x0000:
                    raise MwlError(f"{node}: C-FIND failed with status 0x{code:04X}")
    except AssociationFailed as exc:
        raise MwlError(str(exc)) from None
    items = [i for i in items if str(i.get("AccessionNumber", "") or "") == accession]
    return order_from_items(accession, items) if items else None


def order_from_items(accession: str, items: list[Dataset]) -> Order:
    first = items[0]
    order = Order(accession_number=accession, patient_id=str(first.get("PatientID", "") or "") or None,
                  issuer_of_patient_id=str(first.get("IssuerOfPatientID", "") or "") or None,
                  source="MWL", control="MWL", received_at=time.time())
    best = None
    seen: set[tuple[str, str]] = set()
    for item in items:
        code = str(item.get("RequestedProcedurePriority", "") or "").strip()
        prio = Priority.from_order(code)
        if prio is not None and (best is None or prio > best[0]):
            best = (prio, code)
        values = [(kw, tag, item.get(kw)) for kw, tag in TEXTS]
        for sps in item.get("ScheduledProcedureStepSequence") or []:
            values.append((SPS_TEXT[0], SPS_TEXT[1], sps.get(SPS_TEXT[0])))
        for kw, tag, value in values:
            text = str(value or "").strip()
            if text and (kw, text) not in seen:
                seen.add((kw, text))
                order.texts.append({"source": f"MWL {tag}", "field": kw, "value": text})
    if best is not None:
        order.priority, order.priority_code = best[0].name, best[1]
        order.priority_source = "MWL (0040,1003) RequestedProcedurePriority"
    return order

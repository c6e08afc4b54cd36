"""DICOM sink: the worklist entry as an SR, sent to a PACS by C-STORE.

The SR's UIDs are derived from the study UID (see `workers.sr`), so a retry
or a re-triage replaces the SR at the PACS. Log lines carry the SR's UIDs and
the destination, never patient data.
"""

from __future__ import annotations

import logging

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.entry import WorklistEntry
from workers.association import AssociationFailed, associate
from workers.sinks import SinkError
from workers.sr import build_sr, quiet

log = logging.getLogger(__name__)

TIMEOUT = 30.0

#: Failure statuses worth retrying: out of resources, processing failure.
RETRYABLE_STATUS = (0x0110, 0x0213)


def _retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or (status & 0xFF00) == 0xA700


def push(entry: WorklistEntry | dict, destination, config) -> str:
    """Build the entry's SR and C-STORE it to `destination` (a DicomNode); return a receipt."""
    try:
        sr = build_sr(WorklistEntry.coerce(entry))
    except (KeyError, TypeError, ValueError) as exc:
        # the exception text may quote header values (patient data): name its type only
        raise SinkError(f"cannot build the SR for this study: {type(exc).__name__}", retryable=False) from exc
    uid = sr.SOPInstanceUID
    try:
        assoc = associate(destination, calling_aet=config.ae_title, timeout=TIMEOUT,
                          contexts=[(sr.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
    except AssociationFailed as exc:
        raise SinkError(f"SR {uid}: {exc}", retryable=not exc.permanent) from None
    try:
        if not assoc.accepted_contexts:
            raise SinkError(f"SR {uid}: {destination} does not accept {sr.SOPClassUID.name}", retryable=False)
        with quiet():  # encoding warnings quote values
            status = assoc.send_c_store(sr)
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or "Status" not in status:
        raise SinkError(f"SR {uid}: no C-STORE response from {destination} (timeout or abort)")
    code = int(status.Status)
    if code != 0x0000 and (code & 0xF000) != 0xB000:
        raise SinkError(f"SR {uid}: C-STORE to {destination} failed with status 0x{code:04X}",
                        retryable=_retryable(code))
    receipt = f"SR {uid} stored at {destination} (0x{code:04X})"
    log.info("%s, revision %s", receipt, sr.InstanceNumber)
    return receipt

"""DICOM sink: the worklist entry as an SR, sent to a PACS by C-STORE.

The SR's UIDs are derived from the study UID (see `workers.sr`), so a retry
or a re-triage replaces the SR at the PACS. Log lines carry the SR's UIDs and
the destination, never patient data.
"""

from __future__ import annotations

import logging

from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from workers.sinks import SinkError
from workers.sr import build_sr, quiet

log = logging.getLogger(__name__)

TIMEOUT = 30.0

#: Failure statuses worth retrying: out of resources, processing failure.
RETRYABLE_STATUS = (0x0110, 0x0213)


def _retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or (status & 0xFF00) == 0xA700


def push(entry: dict, destination, config) -> str:
    """Build the entry's SR and C-STORE it to `destination` (a DicomNode); return a receipt."""
    try:
        sr = build_sr(entry)
    except (KeyError, TypeError, ValueError) as exc:
        # the exception text may quote header values (patient data): name its type only
        raise SinkError(f"cannot build the SR for this study: {type(exc).__name__}", retryable=False) from exc
    uid = sr.SOPInstanceUID
    ae = AE(ae_title=config.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.connection_timeout = TIMEOUT
    ae.add_requested_context(sr.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

    rejection: dict[str, int] = {}

    def on_acse(event) -> None:
        p = event.primitive
        if isinstance(p, A_ASSOCIATE) and p.result in (0x01, 0x02):
            rejection.update(result=p.result, source=p.result_source, reason=p.diagnostic)

    assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet,
                         evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)])
    if not assoc.is_established:
        if assoc.is_rejected:
            permanent = rejection.get("result") == 0x01
            raise SinkError(
                f"SR {uid}: association rejected by {destination} "
                f"({'permanent' if permanent else 'transient'}, source {rejection.get('source')}, "
                f"reason {rejection.get('reason')})",
                retryable=not permanent,
            )
        raise SinkError(f"SR {uid}: no association with {destination} (refused, aborted or timed out)")
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

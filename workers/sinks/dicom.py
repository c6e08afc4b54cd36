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


def key_image(entry: dict, config):
    """The entry's key image as a Secondary Capture (workers.keyimage), or None; never raises.

    The series' stored files are found through the study index of the configured Redis."""
    from workers import keyimage

    m = keyimage.worst_screw(entry)
    if m is None:
        return None
    try:
        from core.index import StudyIndex
        from core.redis_client import client_from_url
        from workers import runtime

        client = client_from_url(runtime.redis_url(config), socket_timeout=5)
        try:
            study = StudyIndex(client).load(entry["study_instance_uid"])
        finally:
            client.close()
        series = study.series.get(m["series_uid"]) if study else None
        if series is None or not series.paths:
            return None
        with quiet():
            return keyimage.secondary_capture(entry, series.paths)
    except Exception as exc:  # the SR goes without it
        log.warning("key image not built for SR of study %s: %s", entry.get("study_instance_uid"),
                    type(exc).__name__)
        return None


def push(entry: WorklistEntry | dict, destination, config) -> str:
    """Build the entry's SR and C-STORE it to `destination` (a DicomNode); return a receipt.

    With a CT screw measurement, the key image goes first as a Secondary Capture and the SR
    references it; if the PACS refuses the image, the SR goes without the reference."""
    try:
        entry = WorklistEntry.coerce(entry)
        sr = build_sr(entry)
    except (KeyError, TypeError, ValueError) as exc:
        # the exception text may quote header values (patient data): name its type only
        raise SinkError(f"cannot build the SR for this study: {type(exc).__name__}", retryable=False) from exc
    uid = sr.SOPInstanceUID
    sc = key_image(entry.to_dict(), config) if getattr(config, "pacs_key_image", True) else None
    contexts = [(sr.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    if sc is not None:
        contexts.append((sc.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    try:
        assoc = associate(destination, calling_aet=config.ae_title, timeout=TIMEOUT, contexts=contexts)
    except AssociationFailed as exc:
        raise SinkError(f"SR {uid}: {exc}", retryable=not exc.permanent) from None
    try:
        if not any(c.abstract_syntax == sr.SOPClassUID for c in assoc.accepted_contexts):
            raise SinkError(f"SR {uid}: {destination} does not accept {sr.SOPClassUID.name}", retryable=False)
        if sc is not None and any(c.abstract_syntax == sc.SOPClassUID for c in assoc.accepted_contexts):
            with quiet():
                sc_status = assoc.send_c_store(sc)
            sc_code = int(sc_status.Status) if sc_status and "Status" in sc_status else None
            if sc_code is not None and (sc_code == 0 or (sc_code & 0xF000) == 0xB000):
                sr = build_sr(entry, key_image=sc)
                log.info("key image %s stored at %s", sc.SOPInstanceUID, destination)
            else:
                log.warning("key image %s refused by %s: the SR goes without it", sc.SOPInstanceUID, destination)
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

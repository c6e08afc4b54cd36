"""HL7 v2 sink: an order priority update (ORM^O01, order control XO) sent to a RIS over MLLP.

The message is built and the ACK parsed with python-hl7; framing and the
connection are `hl7.mllp` (asyncio streams). Priority goes in ORC-7.6,
TQ1-9, OBR-5 and OBR-27.6 (STAT -> S, URGENT -> A, ROUTINE -> R); placer and
filler order numbers (ORC-2/3, OBR-2/3) are the accession number; NTE
segments carry the suspected flags. MSH-10 is derived from the study and the
revision, so a retry sends the same message and the RIS can drop duplicates.

Never lowers the RIS order: the order's priority (entry ``order_priority``: HL7 order, Modality
Worklist or the copy in the DICOM header) is the floor. An XO carrying our priority is sent only
when ours is above it (with no known order priority: only STAT, which nothing can exceed);
otherwise the message is an ORM^O01 with order control SC and no priority field at all, its NTE
segments carrying the suggestion, the flags and where their evidence was read.

ACK: AA/CA -> receipt; AE/CE -> retryable SinkError; AR/CR -> not retryable
(retryable if ``config.hl7_retry_on_reject``). No answer within the timeout
(``config.hl7_timeout``, default 10 s) or no connection -> retryable.
Other optional config attributes: ``hl7_sending_application``,
``hl7_sending_facility``, ``hl7_receiving_application``,
``hl7_receiving_facility``, ``hl7_priority_map``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from core.entry import EntryError, WorklistEntry
from rules.model import Priority
from workers.sinks import SinkError

#: Our priority -> HL7 priority (table 0027 / 0485).
PRIORITY_MAP = {"STAT": "S", "URGENT": "A", "ROUTINE": "R"}
TIMEOUT = 10.0
VERSION = "2.5.1"
ENCODING = "utf-8"


def control_id(entry: dict) -> str:
    """MSH-10, at most 20 characters: the same for one study and revision."""
    key = f"{entry['study_instance_uid']}:{entry.get('revision', 1)}"
    return "PT" + hashlib.sha256(key.encode()).hexdigest()[:18].upper()


def hl7_priority(priority: str, config=None) -> str:
    mapping = dict(PRIORITY_MAP)
    mapping.update({k.upper(): v for k, v in (getattr(config, "hl7_priority_map", None) or {}).items()})
    return mapping[Priority.parse(priority).name]


def raises_order(entry: dict) -> bool:
    """Is our priority above what the RIS has? Unknown order priority: only STAT is sent as a change."""
    ours = Priority.parse(entry["priority"])
    order = entry.get("order_priority")
    if order is None:
        return ours == Priority.STAT
    return ours > Priority.parse(order)


def build_message(entry: dict, config=None) -> hl7.Message:
    """The ORM^O01 of a worklist entry: order change XO raising the priority, else SC with notes only."""
    headers = entry.get("headers") or {}
    prio = hl7_priority(entry["priority"], config)
    raising = raises_order(entry)
    accession = entry.get("accession_number") or headers.get("AccessionNumber") or ""
    if not accession:
        raise SinkError("hl7: the study has no accession number, so no order to update", retryable=False)
    when = _ts(entry.get("triaged_at"))
    msg = hl7.parse("MSH|^~\\&|")
    msh = msg.segment("MSH")
    for num, value in {
        3: getattr(config, "hl7_sending_application", None) or getattr(config, "ae_title", None) or "PACSTRIAGE",
        4: getattr(config, "hl7_sending_facility", None) or "",
        5: getattr(config, "hl7_receiving_application", None) or "RIS",
        6: getattr(config, "hl7_receiving_facility", None) or "",
        7: when,
        9: ["ORM", "O01", "ORM_O01"],
        10: control_id(entry),
        11: "P",
        12: VERSION,
        18: "UNICODE UTF-8",
    }.items():
        _assign(msg, msh, num, value)
    patient_id = headers.get("PatientID") or entry.get("patient_id") or ""
    issuer = headers.get("IssuerOfPatientID") or entry.get("issuer_of_patient_id") or ""
    _add(msg, "PID", {
        1: "1",
        3: [patient_id, "", "", issuer] if issuer else patient_id,
        5: str(headers.get("PatientName") or "").split("^")[:5],
        7: headers.get("PatientBirthDate") or "",
        8: headers.get("PatientSex") or "",
    })
    description = ["", (entry.get("study_description") or headers.get("StudyDescription") or "Imaging study")[:199]]
    if raising:
        _add(msg, "ORC", {1: "XO", 2: accession, 3: accession, 7: ["", "", "", "", "", prio], 9: when})
        _add(msg, "TQ1", {1: "1", 9: prio})
        _add(msg, "OBR", {1: "1", 2: accession, 3: accession, 4: description, 5: prio,
                          27: ["", "", "", "", "", prio]})
    else:  # the RIS's priority stays as it is: no priority field anywhere
        _add(msg, "ORC", {1: "SC", 2: accession, 3: accession, 9: when})
        _add(msg, "OBR", {1: "1", 2: accession, 3: accession, 4: description})
    for i, text in enumerate(notes(entry), 1):
        _add(msg, "NTE", {1: str(i), 2: "L", 3: text})
    return msg


def notes(entry: dict) -> list[str]:
    """One NTE line for the suggestion, one per suspected flag; no patient data."""
    lines = [f"pacs-triage suggests {Priority.parse(entry['priority']).name} (revision {entry.get('revision', 1)})"]
    if entry.get("order_priority") and not raises_order(entry):
        lines[0] += f"; the order's priority {entry['order_priority']} is kept"
    for flag in entry.get("flags") or []:
        rules = ",".join(flag.get("rules") or [flag.get("rule") or "?"])
        lines.append(f"Suspected {flag['code']} ({flag.get('priority', '?')}; rules {rules})")
        sources = sorted({str(e.get("source")) for e in flag.get("evidence") or [] if e.get("source")})
        if sources:
            lines.append(f"Evidence for {flag['code']} read in: {'; '.join(sources)[:400]}")
    from workers.analysers import incomplete_notes

    lines.extend(incomplete_notes(entry))  # not assessed is never silent
    return lines


def push(entry: WorklistEntry | dict, destination, config) -> str:
    """Send the order update to HOST:PORT and check the ACK; return a receipt."""
    host, port = _address(str(destination))
    try:  # checked against the schema; the message builders read its JSON form
        entry = WorklistEntry.coerce(entry).to_dict()
    except EntryError as exc:
        raise SinkError(f"hl7 {host}:{port}: {exc}", retryable=False) from None
    msg = build_message(entry, config)
    cid = control_id(entry)
    timeout = float(getattr(config, "hl7_timeout", None) or TIMEOUT)
    try:
        ack = asyncio.run(_exchange(host, port, msg, timeout))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, InvalidBlockError, ValueError,
            hl7.ParseException) as exc:
        raise SinkError(f"hl7 {host}:{port}: {exc.__class__.__name__}") from None
    try:
        code = str(ack["MSA.1"]).strip().upper()
        acked = str(ack["MSA.2"]).strip()
    except (KeyError, IndexError):
        raise SinkError(f"hl7 {host}:{port}: answer without MSA for {cid}") from None
    if acked and acked != cid:
        raise SinkError(f"hl7 {host}:{port}: ACK for {acked}, not {cid}")
    if code in ("AA", "CA"):
        if not raises_order(entry):
            return f"hl7 {host}:{port}: {code} for {cid} notes only (order priority kept)"
        return f"hl7 {host}:{port}: {code} for {cid} priority {hl7_priority(entry['priority'], config)}"
    detail = _error_code(ack)
    if code in ("AR", "CR"):
        raise SinkError(f"hl7 {host}:{port}: {code} (rejected) for {cid}{detail}",
                        retryable=bool(getattr(config, "hl7_retry_on_reject", False)))
    raise SinkError(f"hl7 {host}:{port}: {code or 'no code'} for {cid}{detail}")


async def _exchange(host: str, port: int, msg: hl7.Message, timeout: float) -> hl7.Message:
    """One message, one answer, over a fresh MLLP connection."""
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(host, port, encoding=ENCODING), timeout)
    try:
        writer.writemessage(msg)
        await asyncio.wait_for(writer.drain(), timeout)
        return await asyncio.wait_for(reader.readmessage(), timeout)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass


def _error_code(ack: hl7.Message) -> str:
    """ERR-3 (HL7 error code) if present; never the free text, which may name the patient."""
    try:
        return f" (error {ack['ERR.3.1.1']})" if str(ack["ERR.3.1.1"]) else ""
    except (KeyError, IndexError):
        return ""


def escape(text: str) -> str:
    """HL7 v2 escaping (2.7 §2.7) for a UTF-8 message (MSH-18 "UNICODE UTF-8").

    Separators become \\F\\ \\S\\ \\T\\ \\R\\ and the escape character \\E\\; a line break becomes
    \\.br\\; other control characters are dropped. Letters such as é stay as they are (UTF-8),
    never \\Xe9\\ (a Latin-1 code point, wrong under MSH-18 = UTF-8)."""
    out = []
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == "\n":
            out.append("\\.br\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            continue
        else:
            out.append(ch)
    return "".join(out)


_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def _assign(msg: hl7.Message, segment, num: int, value) -> None:
    if isinstance(value, list):
        for comp, part in enumerate(value, 1):
            segment.assign_field(escape(str(part)), num, 1, comp)
    else:
        segment.assign_field(escape(str(value)), num)


def _add(msg: hl7.Message, name: str, fields: dict) -> None:
    segment = msg.create_segment([msg.create_field([name])])
    for num in sorted(fields):
        _assign(msg, segment, num, fields[num])
    msg.append(segment)


def _ts(epoch) -> str:
    moment = dt.datetime.now(dt.timezone.utc) if epoch is None else dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc)
    return moment.strftime("%Y%m%d%H%M%S+0000")


def _address(text: str) -> tuple[str, int]:
    try:
        host, port = text.strip().rsplit(":", 1)
        host, port = host.strip("[] "), int(port)
    except ValueError:
        raise SinkError(f"hl7: expected HOST:PORT, got {text!r}", retryable=False) from None
    if not host or not 0 < port < 65536:
        raise SinkError(f"hl7: expected HOST:PORT, got {text!r}", retryable=False)
    return host, port

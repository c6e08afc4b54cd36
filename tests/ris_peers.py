"""A RIS for the tests: HL7 v2 orders (ORM^O01, OMI^O23) and reports (ORU^R01) built here
(synthetic patients) and sent with python-hl7's MLLP client (`hl7.client.MLLPClient`)."""

from __future__ import annotations

import time

import hl7
from hl7.client import MLLPClient

_n = [0]


def _control() -> str:
    _n[0] += 1
    return f"RIS{int(time.time())}{_n[0]:04d}"


def _msh(kind: str) -> str:
    return f"MSH|^~\\&|RIS|HOSP|PACSTRIAGE|HOSP|{time.strftime('%Y%m%d%H%M%S')}||{kind}|{_control()}|P|2.5.1|||||||UNICODE UTF-8"


def _fields(name: str, values: dict[int, str]) -> str:
    top = max(values) if values else 0
    return "|".join([name] + [values.get(i, "") for i in range(1, top + 1)])


def order(control: str = "NW", accession: str = "ACC1", patient_id: str = "PT-0001", issuer: str = "HOSP",
          priority: str | None = "R", reason: str = "", clinical: str = "", notes: tuple[str, ...] = (),
          control_reason: str = "", kind: str = "ORM^O01^ORM_O01", priority_in: str = "TQ1") -> str:
    """An order message; `priority_in`: TQ1 (TQ1-9), ORC7 (ORC-7.6), OBR27 (OBR-27.6) or OBR5."""
    segs = [_msh(kind), _fields("PID", {1: "1", 3: f"{patient_id}^^^{issuer}" if issuer else patient_id,
                                        5: "TEST^PATIENT", 7: "19600101", 8: "F"})]
    orc = {1: control, 2: f"P{accession}", 3: accession}
    if control_reason:
        orc[16] = f"^{control_reason}"
    if priority is not None and priority_in == "ORC7":
        orc[7] = f"^^^^^{priority}"
    segs.append(_fields("ORC", orc))
    if priority is not None and priority_in == "TQ1":
        segs.append(_fields("TQ1", {1: "1", 9: priority}))
    obr = {1: "1", 2: f"P{accession}", 3: accession, 4: "MRLSP^MR lumbar spine", 18: accession}
    if clinical:
        obr[13] = hl7_escape(clinical)
    if reason:
        obr[31] = "^" + hl7_escape(reason)
    if priority is not None and priority_in == "OBR27":
        obr[27] = f"^^^^^{priority}"
    if priority is not None and priority_in == "OBR5":
        obr[5] = priority
    segs.append(_fields("OBR", obr))
    if kind.startswith("OMI"):
        segs.append(_fields("IPC", {1: accession, 2: "RP1", 3: "1.2.3", 4: "SPS1"}))
    for i, note in enumerate(notes, 1):
        segs.append(_fields("NTE", {1: str(i), 2: "L", 3: hl7_escape(note)}))
    return "\r".join(segs)


def result(accession: str = "ACC1", patient_id: str = "PT-0001", issuer: str = "HOSP", status: str = "F") -> str:
    """An ORU^R01 report with result status (OBR-25) `status`."""
    return "\r".join([
        _msh("ORU^R01^ORU_R01"),
        _fields("PID", {1: "1", 3: f"{patient_id}^^^{issuer}", 5: "TEST^PATIENT"}),
        _fields("ORC", {1: "RE", 2: f"P{accession}", 3: accession}),
        _fields("OBR", {1: "1", 2: f"P{accession}", 3: accession, 4: "MRLSP^MR lumbar spine", 18: accession,
                        25: status}),
        _fields("OBX", {1: "1", 2: "TX", 3: "REPORT", 5: "No acute finding.", 11: status}),
    ])


def hl7_escape(text: str) -> str:
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    return out.replace("~", "\\R\\")


def send(port: int, message: str, host: str = "127.0.0.1") -> hl7.Message:
    """Send one message with python-hl7's MLLP client; return the parsed ACK."""
    with MLLPClient(host, port) as client:
        raw = client.send_message(message)
    text = raw.decode("utf-8").strip("\x0b\x1c\r\n")
    return hl7.parse(text)


def ack_code(ack: hl7.Message) -> str:
    return str(ack["MSA.1"])


def error_code(ack: hl7.Message) -> str:
    try:
        return str(ack["ERR.3.1.1"])
    except (KeyError, IndexError):
        return ""

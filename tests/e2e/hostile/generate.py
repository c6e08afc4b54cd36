"""Deterministic generator of hostile inputs (seeded): datasets for C-STORE and raw bytes for the socket.

Every generated case has a kind and either dataset bytes (sent as a C-STORE body over a
negotiated context, so the listener's parser sees them) or raw socket bytes (sent before
or instead of an association).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pydicom.uid import generate_uid

from dicomgen import SeriesSpec, StudySpec, instance


@dataclass
class Case:
    kind: str
    body: bytes  # dataset bytes (C-STORE) or raw socket bytes
    raw: bool = False  # True: raw socket bytes, no association


def _encode(ds, little: bool = True, implicit: bool = False) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    ds = ds.copy()
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    write_dataset(fp, ds)
    return fp.getvalue()


def _dataset_bytes(ds) -> bytes:
    """The dataset (no file meta) encoded in Explicit VR Little Endian."""
    return _encode(ds)


def _good(rng: random.Random):
    spec = StudySpec(patient_name="HOSTILE^TEST", series=[SeriesSpec("MR", "SAG T2", 1, rows=8, columns=8)])
    return instance(spec, spec.series[0], generate_uid(), 1, 1)


def _elements(body: bytes) -> list[int]:
    """Offsets of top-level explicit VR LE element headers (best effort)."""
    offsets, i = [], 0
    while i + 8 <= len(body):
        vr = body[i + 4:i + 6]
        offsets.append(i)
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
            if i + 12 > len(body):
                break
            length = struct.unpack("<I", body[i + 8:i + 12])[0]
            if length == 0xFFFFFFFF:
                break
            i += 12 + length
        else:
            length = struct.unpack("<H", body[i + 6:i + 8])[0]
            i += 8 + length
    return offsets


def cases(seed: int = 11, n_per_kind: dict | None = None) -> list[Case]:
    rng = random.Random(seed)
    counts = {"truncated": 200, "bad_length": 200, "invalid_vr": 150, "bad_uid": 100, "huge_length": 100,
              "wrong_encoding": 50, "non_dicom": 100, "bad_associate": 100, "garbage": 50}
    counts.update(n_per_kind or {})
    out: list[Case] = []
    for _ in range(counts["truncated"]):
        body = _dataset_bytes(_good(rng))
        out.append(Case("truncated", body[:rng.randrange(1, len(body) - 1)]))
    for _ in range(counts["bad_length"]):
        body = bytearray(_dataset_bytes(_good(rng)))
        off = rng.choice(_elements(bytes(body)))
        if bytes(body[off + 4:off + 6]) in (b"OB", b"OW", b"SQ", b"UT", b"UN"):
            body[off + 8:off + 12] = struct.pack("<I", rng.randrange(0, 0xFFFFFFFE))
        else:
            body[off + 6:off + 8] = struct.pack("<H", rng.randrange(0, 0xFFFF))
        out.append(Case("bad_length", bytes(body)))
    for _ in range(counts["invalid_vr"]):
        body = bytearray(_dataset_bytes(_good(rng)))
        off = rng.choice(_elements(bytes(body)))
        body[off + 4:off + 6] = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz\x00\xff?!") for _ in range(2))
        out.append(Case("invalid_vr", bytes(body)))
    bad_uids = ["../../etc/passwd", "", "1.2/3", "a" * 100, "1..2", "1.2.abc", "/tmp/x", "..", "1.2.3 x",
                "C:\\windows", "1." + "9" * 70]
    for i in range(counts["bad_uid"]):
        ds = _good(rng)
        which = rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        value = bad_uids[i % len(bad_uids)]
        if value == "" and rng.random() < 0.5:
            del ds[which]
        else:
            ds.get_item(which)  # keep the keyword valid
            setattr(ds, which, value)
        out.append(Case("bad_uid", _dataset_bytes(ds)))
    for _ in range(counts["huge_length"]):
        body = bytearray(_dataset_bytes(_good(rng)))
        off = rng.choice(_elements(bytes(body)))
        body[off + 4:off + 6] = b"OB"
        body[off + 6:off + 8] = b"\x00\x00"
        body[off + 8:off + 12] = struct.pack("<I", rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE, 2 ** 31]))
        out.append(Case("huge_length", bytes(body[:off + 12 + rng.randrange(0, 64)])))
    for _ in range(counts["wrong_encoding"]):
        big = rng.random() < 0.5
        out.append(Case("wrong_encoding", _encode(_good(rng), little=not big, implicit=not big)))
    payloads = [b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"<html>", b"{\"a\":1}", b"MSH|^~\\&|"]
    for _ in range(counts["non_dicom"]):
        out.append(Case("non_dicom", rng.choice(payloads) + rng.randbytes(rng.randrange(0, 2048))))
    for _ in range(counts["bad_associate"]):
        out.append(Case("bad_associate", _bad_associate(rng), raw=True))
    for _ in range(counts["garbage"]):
        out.append(Case("garbage", rng.randbytes(rng.randrange(1, 4096)), raw=True))
    return out


def _bad_associate(rng: random.Random) -> bytes:
    """An A-ASSOCIATE-RQ that is wrong somewhere: lengths, item types, AE titles, truncation."""
    called, calling = b"PACSTRIAGE".ljust(16), b"HOSTILE".ljust(16)
    app = b"\x10\x00" + struct.pack(">H", 21) + b"1.2.840.10008.3.1.1.1"
    ctx_items = b"\x30\x00" + struct.pack(">H", 17) + b"1.2.840.10008.1.1"
    ts = b"\x40\x00" + struct.pack(">H", 17) + b"1.2.840.10008.1.2"
    pctx = b"\x20\x00" + struct.pack(">H", 4 + len(ctx_items) + len(ts)) + b"\x01\x00\x00\x00" + ctx_items + ts
    user = b"\x50\x00\x00\x08" + b"\x51\x00\x00\x04" + struct.pack(">I", 16384)
    variable = app + pctx + user
    body = struct.pack(">HH", 1, 0) + called + calling + b"\x00" * 32 + variable
    pdu = bytearray(struct.pack(">BBL", 0x01, 0, len(body)) + body)
    mutation = rng.randrange(7)
    if mutation == 0:  # declared length too long
        pdu[2:6] = struct.pack(">L", len(body) + rng.randrange(1, 100000))
    elif mutation == 1:  # truncated
        pdu = pdu[:rng.randrange(1, len(pdu))]
    elif mutation == 2:  # item length lies
        i = 6 + 68 + 2
        pdu[i:i + 2] = struct.pack(">H", rng.randrange(0, 0xFFFF))
    elif mutation == 3:  # unknown item types
        pdu[6 + 68] = rng.randrange(0, 256)
    elif mutation == 4:  # protocol version and AE titles of control bytes
        pdu[6:8] = b"\xff\xff"
        pdu[10:26] = bytes(rng.randrange(0, 32) for _ in range(16))
    elif mutation == 5:  # a wrong PDU type
        pdu[0] = rng.choice([0x00, 0x08, 0x42, 0xFF, 0x04, 0x05])
    else:  # random bytes inside
        for _ in range(8):
            pdu[rng.randrange(6, len(pdu))] = rng.randrange(0, 256)
    return bytes(pdu)

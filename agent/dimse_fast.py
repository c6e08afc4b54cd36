"""The C-STORE response and the received file's meta header, encoded without pydicom Datasets.

pynetdicom turns each C-STORE-RSP primitive into a DIMSE message whose command set is a pydicom
Dataset (nine element assignments, a deletion, an encoding to count the group length, then a
second encoding): ≈ 13 % of the listener's CPU per received instance. The command set of a
plain response is seven fixed elements in Implicit VR Little Endian (PS3.7 E.1-1, 9.3.1.2), so
`install()` makes `DIMSEServiceProvider.send_msg` write those bytes directly when:

- the primitive is a C-STORE response with no Offending Element and no Error Comment, and
- nobody listens for `EVT_DIMSE_SENT` on the association (it would expect the Dataset).

Anything else goes through pynetdicom unchanged.

The same holds for the File Meta Information pynetdicom writes at the head of every received
dataset's file: `create_file_meta` builds a FileMetaDataset (seven assignments with their
validation) and `write_file_meta_info` encodes it twice (≈ 0.27 ms per instance, 6 % of a
listener's CPU). Its content is fixed — seven Explicit VR Little Endian elements (PS3.10 7.1) —
so `install()` has pynetdicom's decoder write those bytes directly when every value is a plain
ASCII string; anything else (a missing, multi-valued or non-ASCII UID) is encoded by pydicom as
before, with its validation and its errors.

tests/agent/test_dimse_fast.py checks both encodings' bytes against pynetdicom's and pydicom's for
odd and even UID lengths, every status and message id.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom import dimse as _dimse
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

_original_send_msg = _dimse.DIMSEServiceProvider.send_msg
_original_create_file_meta = _dimse_messages.create_file_meta
_original_write_file_meta_info = _dimse_messages.write_file_meta_info
_C_STORE_RSP = 0x8001
_NO_DATASET = 0x0101


def _uid(tag_elem: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0x0000, tag_elem, len(value)) + value


def _us(tag_elem: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag_elem, 2, value)


def encode_store_rsp(primitive: C_STORE) -> bytes | None:
    """The command set of a plain C-STORE-RSP, or None when it is not one this covers."""
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.OffendingElement is not None or primitive.ErrorComment is not None:
        return None
    parts = []
    if primitive.AffectedSOPClassUID is not None:
        parts.append(_uid(0x0002, str(primitive.AffectedSOPClassUID)))
    parts += [_us(0x0100, _C_STORE_RSP), _us(0x0120, primitive.MessageIDBeingRespondedTo),
              _us(0x0800, _NO_DATASET), _us(0x0900, primitive.Status)]
    if primitive.AffectedSOPInstanceUID is not None:
        parts.append(_uid(0x1000, str(primitive.AffectedSOPInstanceUID)))
    body = b"".join(parts)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _send_msg(self, primitive, context_id: int) -> None:
    if isinstance(primitive, C_STORE) and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        encoded = encode_store_rsp(primitive)
        if encoded is not None and (not self.maximum_pdu_size or len(encoded) <= self.maximum_pdu_size - 6):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
            self.dul.send_pdu(pdata)
            return
    _original_send_msg(self, primitive, context_id)


class FileMeta(NamedTuple):
    """What pynetdicom's `create_file_meta` is given, kept as it is until it is written."""

    sop_class_uid: object
    sop_instance_uid: object
    transfer_syntax: object
    implementation_uid: object = PYNETDICOM_IMPLEMENTATION_UID
    implementation_version: object = PYNETDICOM_IMPLEMENTATION_VERSION


def _explicit(tag_elem: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, tag_elem, vr, len(value)) + value


def _ascii(value: object, pad: bytes) -> bytes | None:
    if not isinstance(value, str) or not value or "\\" in value:
        return None
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        return None
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(meta: FileMeta) -> bytes | None:
    """The File Meta Information group (from its group length on), or None when a value is not
    one this covers (pydicom encodes those)."""
    uids = [_ascii(v, b"\0") for v in (meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax,
                                        meta.implementation_uid)]
    version = _ascii(meta.implementation_version, b" ")
    if any(u is None or len(u) > 0xFFFF for u in uids) or version is None or len(version) > 0xFFFF:
        return None
    body = b"".join([
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\0\1",
        _explicit(0x0002, b"UI", uids[0]),
        _explicit(0x0003, b"UI", uids[1]),
        _explicit(0x0010, b"UI", uids[2]),
        _explicit(0x0012, b"UI", uids[3]),
        _explicit(0x0013, b"SH", version),
    ])
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _create_file_meta(**kwargs) -> FileMeta:
    return FileMeta(**kwargs)


def _write_file_meta_info(fp, file_meta, enforce_standard: bool = True) -> None:
    if isinstance(file_meta, FileMeta):
        encoded = encode_file_meta(file_meta) if enforce_standard else None
        if encoded is not None:
            fp.write(encoded)
            return
        file_meta = _original_create_file_meta(**file_meta._asdict())
    _original_write_file_meta_info(fp, file_meta, enforce_standard)


def install() -> None:
    """Idempotent."""
    _dimse.DIMSEServiceProvider.send_msg = _send_msg
    _dimse_messages.create_file_meta = _create_file_meta
    _dimse_messages.write_file_meta_info = _write_file_meta_info

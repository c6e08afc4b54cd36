"""The C-STORE response, encoded without building a pydicom Dataset.

pynetdicom turns each C-STORE-RSP primitive into a DIMSE message whose command set is a pydicom
Dataset (nine element assignments, a deletion, an encoding to count the group length, then a
second encoding): ≈ 13 % of the listener's CPU per received instance. The command set of a
plain response is seven fixed elements in Implicit VR Little Endian (PS3.7 E.1-1, 9.3.1.2), so
`install()` makes `DIMSEServiceProvider.send_msg` write those bytes directly when:

- the primitive is a C-STORE response with no Offending Element and no Error Comment, and
- nobody listens for `EVT_DIMSE_SENT` on the association (it would expect the Dataset).

Anything else goes through pynetdicom unchanged. tests/agent/test_dimse_fast.py checks the bytes
against pynetdicom's for odd and even UID lengths, every status and message id.
"""

from __future__ import annotations

import struct

from pynetdicom import dimse as _dimse
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

_original_send_msg = _dimse.DIMSEServiceProvider.send_msg
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


def install() -> None:
    """Idempotent."""
    _dimse.DIMSEServiceProvider.send_msg = _send_msg

"""The C-STORE-RSP written directly (agent/dimse_fast.py) is byte for byte pynetdicom's."""

from __future__ import annotations

import pytest
from pynetdicom import dimse_messages
from pynetdicom.dimse_primitives import C_STORE

from agent.dimse_fast import encode_store_rsp


def pynetdicom_bytes(primitive: C_STORE) -> bytes:
    msg = dimse_messages.C_STORE_RSP()
    msg.primitive_to_message(primitive)
    (pdata,) = list(msg.encode_msg(1, 16384))
    ((cx, pdv),) = pdata.presentation_data_value_list
    assert pdv[:1] == b"\x03"
    return pdv[1:]


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4.1", None])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "2.25.1234567890123456789012345678901234567", None])
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000, 0xB000])
@pytest.mark.parametrize("message_id", [1, 2, 255, 65535])
def test_the_same_bytes_as_pynetdicom(sop_class, sop_instance, status, message_id):
    rsp = C_STORE()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    assert encode_store_rsp(rsp) == pynetdicom_bytes(rsp)


def test_a_response_with_an_error_comment_is_left_to_pynetdicom():
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3"
    rsp.Status = 0xC000
    rsp.ErrorComment = "bad"
    assert encode_store_rsp(rsp) is None

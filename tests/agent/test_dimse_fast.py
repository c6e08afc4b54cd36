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


# --- the File Meta Information of a received dataset's file -------------------------------------

import io  # noqa: E402

from pydicom.filewriter import write_file_meta_info  # noqa: E402
from pynetdicom.dsutils import create_file_meta  # noqa: E402

from agent.dimse_fast import FileMeta, _write_file_meta_info, encode_file_meta  # noqa: E402


def pydicom_meta(**kwargs) -> bytes:
    out = io.BytesIO()
    write_file_meta_info(out, create_file_meta(**kwargs))
    return out.getvalue()


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.3"])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "2.25.1234567890123456789012345678901234567",
                                          "1.2.826.0.1.3680043.8.498.84117695866217242504965477138608217429"])
@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50",
                                "1.2.840.10008.1.2.5"])
def test_the_same_file_meta_as_pydicom(sop_class, sop_instance, ts):
    kwargs = dict(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=ts)
    assert encode_file_meta(FileMeta(**kwargs)) == pydicom_meta(**kwargs)


@pytest.mark.parametrize("version", ["PYNETDICOM_304", "ODD_LEN", "A"])
@pytest.mark.parametrize("impl", ["1.2.3.4", "1.2.3.45"])
def test_the_same_file_meta_for_any_implementation_name(version, impl):
    kwargs = dict(sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4", transfer_syntax="1.2.840.10008.1.2.1",
                  implementation_uid=impl, implementation_version=version)
    assert encode_file_meta(FileMeta(**kwargs)) == pydicom_meta(**kwargs)


@pytest.mark.parametrize("bad", ["", None, "1.2.3\\1.2.4", "1.2.é"])
def test_values_it_does_not_cover_are_encoded_by_pydicom_with_its_behaviour(bad):
    kwargs = dict(sop_class_uid="1.2.3", sop_instance_uid=bad, transfer_syntax="1.2.840.10008.1.2.1")
    assert encode_file_meta(FileMeta(**kwargs)) is None
    try:
        expected, error = pydicom_meta(**kwargs), None
    except Exception as exc:  # pydicom refuses some of them: so must the fast path
        expected, error = None, type(exc)
    out = io.BytesIO()
    if error is not None:
        with pytest.raises(error):
            _write_file_meta_info(out, FileMeta(**kwargs))
    else:
        _write_file_meta_info(out, FileMeta(**kwargs))
        assert out.getvalue() == expected

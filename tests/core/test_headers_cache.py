"""The header summary's conversion cache (core/headers.py `_CONVERTED`) never changes a summary.

Datasets are encoded by hand here, byte by byte (Explicit or Implicit VR Little Endian, with a
Request Attributes item), so that the same bytes arrive under different character sets, VRs and
encodings, and are read back with `pydicom.dcmread` as the listener reads them. Every summary made
with the cache warm from the datasets before it must equal the one made with the cache off.
"""

from __future__ import annotations

import struct
from io import BytesIO

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR

from agent.dimse_fast import FileMeta, encode_file_meta
from core import headers
from core.headers import (INSTANCE_KEYWORDS, ORDER_PRIORITY_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS,
                          TEXT_KEYWORDS, _tag, summarize)

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # deterministic: same examples every run

KEYWORDS = sorted(set(STUDY_KEYWORDS + SERIES_KEYWORDS + INSTANCE_KEYWORDS + TEXT_KEYWORDS + ORDER_PRIORITY_KEYWORDS)
                  - {"SpecificCharacterSet"})
LONG_VR = {"OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR"}
CHARSETS = [None, b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 144", b"\\ISO 2022 IR 87", b"GB18030 ", b"NOT A CHARSET"]
VALUES = [b"", b"ABC", b"ABC ", b"1.2.3\x00", b"1.2.840.10008.5.1.4.1.1.2", b"1\\2", b" 12 ", b"3.5", b"-1e3", b"x",
          b"H\xc3\xb4pital", b"H\xf4pital", b"\xd0\x9a\xd0\xbe", b"\x1b$B;3ED\x1b(B", b"DUPONT^MARIE", b"A^B=C^D",
          b"STAT", b"\x00\x02", b"\x00\x02\x00\x01", b"\xff\xfe\xfd", b"0" * 300]


def element(tag: int, vr: str | None, value: bytes, implicit: bool) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in LONG_VR:
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def encode(elements: dict[int, tuple[str, bytes]], item: dict[int, tuple[str, bytes]] | None, implicit: bool) -> bytes:
    """A Part 10 file: preamble, file meta, then the elements in tag order (the item in (0040,0275))."""
    ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    out = [b"\0" * 128, b"DICM", encode_file_meta(FileMeta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", ts))]
    body = dict(elements)
    if item is not None:
        inner = b"".join(element(t, v, b, implicit) for t, (v, b) in sorted(item.items()))
        items = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        body[0x00400275] = ("SQ", items)
    out += [element(t, vr, v, implicit) for t, (vr, v) in sorted(body.items())]
    return b"".join(out)


def read(data: bytes):
    return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)


def uncached(data: bytes) -> dict:
    saved = headers._CONVERTED_MAX
    headers._CONVERTED_MAX = 0  # every store clears the cache first: nothing is kept
    headers._CONVERTED.clear()
    try:
        return summarize(read(data))
    finally:
        headers._CONVERTED_MAX = saved
        headers._CONVERTED.clear()


values = st.one_of(st.sampled_from(VALUES), st.binary(max_size=12))
vrs = st.sampled_from([None, None, None, "LO", "SH", "CS", "UN", "UT", "PN", "IS", "DS", "US", "UI"])


@st.composite
def datasets(draw):
    def elements(keywords):
        out = {}
        for kw in draw(st.lists(st.sampled_from(keywords), max_size=10, unique=True)):
            vr = draw(vrs) or dictionary_VR(_tag(kw))
            out[_tag(kw)] = (vr, draw(values))
        return out

    top = elements(KEYWORDS)
    charset = draw(st.sampled_from(CHARSETS))
    if charset is not None:
        top[0x00080005] = ("CS", charset)
    item = elements(list(TEXT_KEYWORDS + ORDER_PRIORITY_KEYWORDS)) if draw(st.booleans()) else None
    if item is not None and draw(st.booleans()):
        item[0x00080005] = ("CS", draw(st.sampled_from(CHARSETS[1:])))
    return encode(top, item, implicit=draw(st.booleans()))


@SETTINGS
@given(st.lists(datasets(), min_size=2, max_size=6))
def test_a_summary_is_the_same_with_the_cache_warm(files):
    expected = []
    for data in files:
        try:
            expected.append(uncached(data))
        except Exception as exc:  # the listener quarantines what pydicom cannot read: so must both
            expected.append(type(exc))
    headers._CONVERTED.clear()
    for data, want in zip(files * 2, expected * 2):  # twice: the second pass reads every value from the cache
        if isinstance(want, type):
            with pytest.raises(want):
                summarize(read(data))
        else:
            assert summarize(read(data)) == want


def test_the_same_bytes_under_another_character_set_are_decoded_again():
    name = _tag("InstitutionName")
    latin = encode({0x00080005: ("CS", b"ISO_IR 100"), name: ("LO", b"H\xc3\xb4pital ")}, None, implicit=False)
    utf8 = encode({0x00080005: ("CS", b"ISO_IR 192"), name: ("LO", b"H\xc3\xb4pital ")}, None, implicit=False)
    headers._CONVERTED.clear()
    assert summarize(read(latin))["InstitutionName"] == "HÃ´pital"
    assert summarize(read(utf8))["InstitutionName"] == "Hôpital"


def test_an_item_is_keyed_on_its_parents_character_set():
    reason = _tag("ReasonForTheRequestedProcedure")
    item = {reason: ("LO", b"Contr\xc3\xb4le ")}
    a = encode({0x00080005: ("CS", b"ISO_IR 100")}, item, implicit=False)
    b = encode({0x00080005: ("CS", b"ISO_IR 192")}, item, implicit=False)
    headers._CONVERTED.clear()
    assert summarize(read(a))["TextFields"][0]["value"] == "ContrÃ´le"
    assert summarize(read(b))["TextFields"][0]["value"] == "Contrôle"


def test_lists_handed_out_are_not_shared():
    image_type = _tag("ImageType")
    data = encode({image_type: ("CS", b"ORIGINAL\\PRIMARY\\AXIAL ")}, None, implicit=False)
    headers._CONVERTED.clear()
    first = summarize(read(data))
    first["ImageType"].append("CHANGED")
    assert summarize(read(data))["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_the_cache_is_bounded():
    uid = _tag("SOPInstanceUID")
    headers._CONVERTED.clear()
    for n in range(headers._CONVERTED_MAX + 50):
        summarize(read(encode({uid: ("UI", f"1.2.3.{n}".encode().ljust(12, b"\0"))}, None, implicit=False)))
    assert len(headers._CONVERTED) <= headers._CONVERTED_MAX


def test_no_summary_keyword_has_a_vr_that_depends_on_other_elements():
    """The cache key holds the element alone: a VR resolved from other elements (US or SS) would not fit."""
    for kw in KEYWORDS + ["SpecificCharacterSet"]:
        assert " or " not in dictionary_VR(_tag(kw)), kw


def test_the_same_bytes_under_another_vr_or_encoding_are_converted_again():
    number = _tag("InstanceNumber")
    as_is = encode({number: ("IS", b"12")}, None, implicit=False)
    as_lo = encode({number: ("LO", b"12")}, None, implicit=False)
    as_un = encode({number: ("UN", b"12")}, None, implicit=False)
    implicit = encode({number: (None, b"12")}, None, implicit=True)
    headers._CONVERTED.clear()
    got = [summarize(read(d))["InstanceNumber"] for d in (as_is, as_lo, as_is, as_un, implicit)]
    assert [type(v) for v in got] == [type(uncached(d)["InstanceNumber"]) for d in (as_is, as_lo, as_is, as_un, implicit)]
    assert got[1] == "12" and got[0] == 12

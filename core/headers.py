"""Header summary of one instance: what the index keeps and the pipeline reads.

A summary is a small JSON-able dict made from the header alone (pixel data is
never decoded). It carries the identifiers, the acquisition attributes that the
analysers need to choose a series, the order priorities, and every free-text
attribute where referring clinicians write the clinical question.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

#: Study-level identifiers and dates.
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "StudyID",
    "ReferringPhysicianName",
    "InstitutionName",
    "SpecificCharacterSet",
)

#: Series- and instance-level attributes analysers select on.
SERIES_KEYWORDS = (
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "BodyPartExamined",
    "ProtocolName",
    "SeriesDate",
    "SeriesTime",
    "ImageType",
    "SliceThickness",
    "ConvolutionKernel",
    "ContrastBolusAgent",
    "Manufacturer",
    "StationName",
    "AcquisitionDate",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
)

INSTANCE_KEYWORDS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
)

#: The order's own priority; never lowered (domain guide section 1.3).
ORDER_PRIORITY_KEYWORDS = ("RequestedProcedurePriority", "ReportingPriority")

#: Free-text attributes where indications live (tag, keyword), in the order
#: a reader would look at them.
TEXT_KEYWORDS = (
    "ReasonForTheRequestedProcedure",  # (0040,1002)
    "RequestedProcedureDescription",  # (0032,1060)
    "AdditionalPatientHistory",  # (0010,21B0)
    "ImagingServiceRequestComments",  # (0040,2400)
    "AdmittingDiagnosesDescription",  # (0008,1080)
    "ReasonForStudy",  # (0032,1030)
    "RequestedProcedureComments",  # (0040,1400)
    "StudyDescription",  # (0008,1030)
    "SeriesDescription",  # (0008,103E)
    "PerformedProcedureStepDescription",  # (0040,0254)
    "ScheduledProcedureStepDescription",  # (0040,0007)
    "ImageComments",  # (0020,4000)
    "StudyComments",  # (0032,4000)
)

REQUEST_ATTRIBUTES = "RequestAttributesSequence"
#: Sequences whose items may carry the same text attributes.
TEXT_SEQUENCES = (REQUEST_ATTRIBUTES,)


def _value(elem_value: Any) -> Any:
    """A JSON-able rendering of a pydicom value."""
    if elem_value is None:
        return None
    if isinstance(elem_value, (list, tuple)) or type(elem_value).__name__ == "MultiValue":
        return [_value(v) for v in elem_value]
    if isinstance(elem_value, (int, float, str)):
        return elem_value if not isinstance(elem_value, str) else str(elem_value)
    if isinstance(elem_value, bytes):
        return None
    return str(elem_value)


def _tag(keyword: str) -> int | None:
    """A keyword's tag, looked up once (a summary asks for ~70 keywords per instance)."""
    try:
        return _TAGS[keyword]
    except KeyError:
        tag = _TAGS[keyword] = tag_for_keyword(keyword)
        return tag


_TAGS: dict[str, int | None] = {}
_UNSET = object()


def _get(ds: Dataset, keyword: str, charset: Any = _UNSET) -> Any:
    """A keyword's value, JSON-able; None when absent, empty or undecodable. `charset`: what the
    dataset's text is decoded with (`_charset_key`: an item's includes its parent's), part of the
    conversion cache's key; `_UNSET`: `ds` is a top-level dataset, its own."""
    tag = _tag(keyword)
    if tag is None:
        return _converted(ds, keyword)
    raw = ds.get_item(tag)  # the element as read, not converted
    if raw is None:  # most keywords are absent: no keyword lookup, no decoding
        return None
    key = None
    if type(raw) is RawDataElement and type(raw.value) is bytes and len(raw.value) <= _CACHED_VALUE_MAX \
            and raw.VR != "SQ":
        key = (tag, raw.VR, raw.is_implicit_VR, raw.is_little_endian, raw.value,
               _charset_key(ds) if charset is _UNSET else charset)
        hit = _CONVERTED.get(key, _MISSING)
        if hit is not _MISSING:
            return list(hit) if type(hit) is tuple else hit
    value = _converted(ds, tag)
    if key is not None:
        _remember(key, tuple(value) if type(value) is list else value)
    return value


def _remember(key: tuple, value: Any) -> None:
    """Into the conversion cache, dropped whole when full (bounded)."""
    if len(_CONVERTED) >= _CONVERTED_MAX:
        _CONVERTED.clear()
    _CONVERTED[key] = value


def _converted(ds: Dataset, tag_or_keyword: Any) -> Any:
    """pydicom's conversion of one element, as `_value` renders it."""
    try:  # by its tag when it has one: what ds.get(keyword) returns, without the keyword lookups
        elem = ds[tag_or_keyword].value if not isinstance(tag_or_keyword, str) else ds.get(tag_or_keyword)
    except Exception:  # an undecodable value is left out, never fatal
        return None
    if elem is None or elem == "":
        return None
    return _value(elem)


#: Converted values by their encoded form. The instances of a series repeat most of their header
#: byte for byte, and pydicom's conversion of an element (≈ 15 µs: most of a summary's cost, which
#: the listener pays for every instance before it answers) depends only on the element's tag, VR,
#: encoding, bytes and the dataset's character set — the key. Values up to `_CACHED_VALUE_MAX`
#: bytes; the whole cache is dropped when it reaches `_CONVERTED_MAX` entries (memory bounded: a few MB in
#: practice, at worst 4096 keys of a 4-KB sequence with their values, ≈ 35 MB).
#: Lists are kept as tuples and handed out as new lists (a summary is never shared). A sequence's
#: items are cached the same way, as what the summary takes from them (`_in_items`).
_CONVERTED: dict[tuple, Any] = {}
_CONVERTED_MAX = 4096
_CACHED_VALUE_MAX = 256
_CACHED_ITEMS_MAX = 4096  # a sequence's encoded items (`_in_items`)
_MISSING = object()


def _charset_key(ds: Dataset, parent: Any = None) -> Any:
    """What a dataset's text is decoded with: its Specific Character Set as encoded (an item
    without one decodes with its parent's)."""
    raw = ds.get_item(0x00080005)
    if raw is None:
        return parent
    own = raw.value if type(raw) is RawDataElement else repr(raw.value)
    return own if parent is None else (parent, own)


def _text(ds: Dataset, keyword: str, charset: Any, charset_from: Dataset | None = None) -> Any:
    """A text attribute's value; one that arrived as UN (e.g. over 64 KB, sent by DCMTK with its
    default conversion) is decoded with the dataset's character set instead of being dropped."""
    value = _get(ds, keyword, charset)
    if value is not None:
        return value
    tag = _tag(keyword)
    if tag is not None and ds.get_item(tag) is None:
        return None
    try:
        elem = ds.data_element(keyword)
    except Exception:
        return None
    if elem is None or not isinstance(elem.value, (bytes, bytearray)) or not elem.value:
        return None
    try:
        from pydicom.charset import convert_encodings, decode_bytes

        source = charset_from if charset_from is not None else ds
        charset = source.get("SpecificCharacterSet") or "ISO_IR 6"
        encodings = convert_encodings([charset] if isinstance(charset, str) else list(charset))
        text = decode_bytes(bytes(elem.value), encodings, set())
    except Exception:
        return None
    return text.rstrip("\x00 ") or None


def _tag_text(keyword: str) -> str:
    tag = _tag(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _items(ds: Dataset, keyword: str) -> list:
    try:
        return list(ds.get(keyword) or [])
    except Exception:
        return []


def text_fields(ds: Dataset, charset: Any = _UNSET, in_items: dict | None = None) -> list[dict[str, str]]:
    """Every non-empty free-text attribute, decoded with the dataset's character set. `in_items`: what
    `_in_items` found per sequence keyword, when the caller has read it already (`summarize`)."""
    if charset is _UNSET:
        charset = _charset_key(ds)
    in_items = in_items if in_items is not None else {}
    out: list[dict[str, str]] = []
    for kw in TEXT_KEYWORDS:
        value = _text(ds, kw, charset)
        if value:
            out.append({"keyword": kw, "tag": _tag_text(kw), "value": str(value)})
    for seq_kw in TEXT_SEQUENCES:
        out += (in_items.get(seq_kw) or _in_items(ds, seq_kw, charset))[1]
    return out


def order_priorities(ds: Dataset, charset: Any = _UNSET, in_items: dict | None = None) -> dict[str, str]:
    """The order priorities present, top level and in Request Attributes items (`in_items`: as in
    `text_fields`)."""
    if charset is _UNSET:
        charset = _charset_key(ds)
    in_items = in_items if in_items is not None else {}
    out: dict[str, str] = {}
    for kw in ORDER_PRIORITY_KEYWORDS:
        v = _get(ds, kw, charset)
        if v:
            out[kw] = str(v)
    out.update((in_items.get(REQUEST_ATTRIBUTES) or _in_items(ds, REQUEST_ATTRIBUTES, charset))[0])
    return out


def _in_items(ds: Dataset, seq_kw: str, charset: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The order priorities and the text fields in a sequence's items, as `order_priorities` and
    `text_fields` name them. Cached like the elements (a series repeats its request sequence byte
    for byte, and reading a sequence's items costs more than converting its values), by the
    sequence's encoded form and the dataset's character set; handed out as new objects."""
    raw = ds.get_item(_tag(seq_kw))
    if raw is None:
        return {}, []
    key = None
    if type(raw) is RawDataElement and type(raw.value) is bytes and len(raw.value) <= _CACHED_ITEMS_MAX:
        key = (seq_kw, raw.VR, raw.is_implicit_VR, raw.is_little_endian, raw.value, charset)
        hit = _CONVERTED.get(key)
        if hit is not None:
            return dict(hit[0]), [dict(t) for t in hit[1]]
    priorities: dict[str, str] = {}
    texts: list[dict[str, str]] = []
    for i, item in enumerate(_items(ds, seq_kw)):
        item_charset = _charset_key(item, charset)
        if seq_kw == REQUEST_ATTRIBUTES:
            for kw in ORDER_PRIORITY_KEYWORDS:
                v = _get(item, kw, item_charset)
                if v:
                    priorities[f"{seq_kw}[{i}].{kw}"] = str(v)
        for kw in TEXT_KEYWORDS:
            value = _text(item, kw, item_charset, charset_from=ds)
            if value:
                texts.append({"keyword": f"{seq_kw}[{i}].{kw}", "tag": f"{_tag_text(seq_kw)}[{i}]{_tag_text(kw)}",
                              "value": str(value)})
    if key is not None:
        _remember(key, (dict(priorities), [dict(t) for t in texts]))
    return priorities, texts


def summarize(ds: Dataset, path: str | None = None, size: int | None = None,
              transfer_syntax: str | None = None) -> dict[str, Any]:
    """The header summary of one instance. `transfer_syntax`: the file's, when `ds` was read
    without its file meta (agent.structure.read_header); otherwise read from `ds.file_meta`."""
    summary: dict[str, Any] = {}
    charset = _charset_key(ds)
    for kw in STUDY_KEYWORDS + SERIES_KEYWORDS + INSTANCE_KEYWORDS:
        v = _get(ds, kw, charset)
        if v is not None:
            summary[kw] = v
    meta = getattr(ds, "file_meta", None) if transfer_syntax is None else None
    ts = transfer_syntax or (getattr(meta, "TransferSyntaxUID", None) if meta is not None else None)
    if ts:
        summary["TransferSyntaxUID"] = str(ts)
    # each sequence's items read once (a sequence too long for the cache would otherwise be read twice)
    in_items = {kw: _in_items(ds, kw, charset) for kw in dict.fromkeys((REQUEST_ATTRIBUTES, *TEXT_SEQUENCES))}
    summary["OrderPriorities"] = order_priorities(ds, charset, in_items)
    summary["TextFields"] = text_fields(ds, charset, in_items)
    if path is not None:
        summary["path"] = str(path)
    if size is not None:
        summary["size"] = int(size)
    return summary

"""Header summary of one instance: what the index keeps and the pipeline reads.

A summary is a small JSON-able dict made from the header alone (pixel data is
never decoded). It carries the identifiers, the acquisition attributes that the
analysers need to choose a series, the order priorities, and every free-text
attribute where referring clinicians write the clinical question.
"""

from __future__ import annotations

from typing import Any

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

#: Sequences whose items may carry the same text attributes.
TEXT_SEQUENCES = ("RequestAttributesSequence",)


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


def _get(ds: Dataset, keyword: str) -> Any:
    tag = _tag(keyword)
    if tag is not None and tag not in ds:  # most keywords are absent: no keyword lookup, no decoding
        return None
    try:  # by its tag when it has one: what ds.get(keyword) returns, without the keyword lookups
        elem = ds[tag].value if tag is not None else ds.get(keyword)
    except Exception:  # an undecodable value is left out, never fatal
        return None
    if elem is None or elem == "":
        return None
    return _value(elem)


def _text(ds: Dataset, keyword: str, charset_from: Dataset | None = None) -> Any:
    """A text attribute's value; one that arrived as UN (e.g. over 64 KB, sent by DCMTK with its
    default conversion) is decoded with the dataset's character set instead of being dropped."""
    tag = _tag(keyword)
    if tag is not None and tag not in ds:
        return None
    value = _get(ds, keyword)
    if value is not None:
        return value
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


def text_fields(ds: Dataset) -> list[dict[str, str]]:
    """Every non-empty free-text attribute, decoded with the dataset's character set."""
    out: list[dict[str, str]] = []
    for kw in TEXT_KEYWORDS:
        value = _text(ds, kw)
        if value:
            tag = ds.data_element(kw).tag
            out.append({"keyword": kw, "tag": f"({tag.group:04X},{tag.element:04X})", "value": str(value)})
    for seq_kw in TEXT_SEQUENCES:
        try:
            seq = ds.get(seq_kw) or []
        except Exception:
            seq = []
        for i, item in enumerate(seq):
            for kw in TEXT_KEYWORDS:
                value = _text(item, kw, charset_from=ds)
                if value:
                    tag = item.data_element(kw).tag
                    out.append(
                        {
                            "keyword": f"{seq_kw}[{i}].{kw}",
                            "tag": f"(0040,0275)[{i}]({tag.group:04X},{tag.element:04X})",
                            "value": str(value),
                        }
                    )
    return out


def order_priorities(ds: Dataset) -> dict[str, str]:
    """The order priorities present, top level and in Request Attributes items."""
    out: dict[str, str] = {}
    for kw in ORDER_PRIORITY_KEYWORDS:
        v = _get(ds, kw)
        if v:
            out[kw] = str(v)
    try:
        seq = ds.get("RequestAttributesSequence") or []
    except Exception:
        seq = []
    for i, item in enumerate(seq):
        for kw in ORDER_PRIORITY_KEYWORDS:
            v = _get(item, kw)
            if v:
                out[f"RequestAttributesSequence[{i}].{kw}"] = str(v)
    return out


def summarize(ds: Dataset, path: str | None = None, size: int | None = None) -> dict[str, Any]:
    """The header summary of one instance."""
    summary: dict[str, Any] = {}
    for kw in STUDY_KEYWORDS + SERIES_KEYWORDS + INSTANCE_KEYWORDS:
        v = _get(ds, kw)
        if v is not None:
            summary[kw] = v
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts:
        summary["TransferSyntaxUID"] = str(ts)
    summary["OrderPriorities"] = order_priorities(ds)
    summary["TextFields"] = text_fields(ds)
    if path is not None:
        summary["path"] = str(path)
    if size is not None:
        summary["size"] = int(size)
    return summary

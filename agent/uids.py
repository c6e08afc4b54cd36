"""DICOM UID checks."""

from __future__ import annotations

from pydicom.uid import UID


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, <= 64 chars)."""
    return isinstance(value, str) and UID(value).is_valid


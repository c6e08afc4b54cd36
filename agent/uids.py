"""DICOM UID checks and deterministic UIDs."""

from __future__ import annotations

from pydicom.uid import UID, generate_uid


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, <= 64 chars)."""
    return isinstance(value, str) and UID(value).is_valid


def derived_uid(*parts: str) -> str:
    """A UID that is the same every time for the same parts (2.25 form)."""
    return generate_uid(prefix=None, entropy_srcs=[str(p) for p in parts])

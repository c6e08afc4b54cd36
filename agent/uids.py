"""DICOM UID checks."""

from __future__ import annotations

import re

from pydicom.uid import UID, generate_uid

_UID_CHARS = re.compile(r"[0-9.]{1,64}")


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots only, <= 64 chars, no padding)."""
    return (isinstance(value, str) and _UID_CHARS.fullmatch(value) is not None
            and UID(value).is_valid)


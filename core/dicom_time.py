"""Dates and times from DICOM (DA, TM) and ISO text: the one parser every layer uses."""

from __future__ import annotations

import re
from datetime import date, datetime, time


def parse_datetime(da: str | None, tm: str | None = None) -> datetime | None:
    """DICOM DA/TM (also the old 'YYYY.MM.DD' and 'HH:MM:SS' forms); time defaults to 00:00; None if no valid date."""
    digits = re.sub(r"\D", "", str(da or ""))
    if len(digits) != 8:
        return None
    try:
        d = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    t = re.sub(r"[^\d.]", "", str(tm or "")).split(".")[0]
    try:
        hh, mm, ss = int(t[0:2] or 0), int(t[2:4] or 0), int(t[4:6] or 0)
        return datetime.combine(d, time(hh, mm, min(ss, 59)))
    except ValueError:
        return datetime.combine(d, time())


def study_datetime(study) -> datetime | None:
    """A study's StudyDate/StudyTime (anything with `.get(keyword)`), or None when the date is missing or invalid."""
    return parse_datetime(study.get("StudyDate"), study.get("StudyTime"))

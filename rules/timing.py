"""Time since surgery, from the request text or from a structured surgery record.

Relative tokens (J+2, POD 2, "3 months after surgery", "opéré hier") need no
anchor; explicit dates are compared with StudyDate/StudyTime. French dates are
DD/MM; a date that could be read both ways in a non-French text is unknown.
Nothing is ever assumed: no reading means None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from rules.text import normalise

_UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 30.44, "y": 24 * 365.25}

_UNITS = {
    "h": r"h|hrs?|hours?|heures?",
    "d": r"d|days?|j|jours?|jrs?",
    "w": r"wks?|weeks?|sem|semaines?",
    "m": r"mo|months?|mois",
    "y": r"yrs?|years?|ans?|annees?",
}
_UNIT = "|".join(f"(?P<{k}>{v})" for k, v in _UNITS.items())

#: Words that say the surgery is what the time refers to.
_SURGERY = re.compile(
    r"op[ie]?r|chir|surg|interv|arthrod|fusion|discect|discecto|laminect|herniect|tlif|plif|alif|xlif|"
    r"recalibr|decompress|instrument|osteosynth|post|bloc|s/p"
)

_RELATIVE = [
    # J+2, J2, J 2 (French "jour"); never D2, which is a vertebra (D12 = T12).
    (re.compile(r"(?<![a-z0-9])j\s*\+\s*(\d{1,3})(?![0-9])|(?<![a-z0-9])j(\d{1,2})(?![a-z0-9])"), "d"),
    (re.compile(r"(?<![a-z0-9])pod\s*#?\s*(\d{1,3})(?![0-9])"), "d"),
    (re.compile(r"post[\s-]?op(?:erative)?\s+day\s*(\d{1,3})(?![0-9])"), "d"),
    (re.compile(r"(?<![a-z0-9])(?:day|jour)\s*(\d{1,3})\s+(?:post|after|apres)"), "d"),
    (re.compile(r"(?<![a-z0-9])h\s*\+\s*(\d{1,3})(?![0-9])"), "h"),
]

#: "48h post-op", "3 months after surgery", "à 3 mois de l'arthrodèse", "2 ans après".
_AFTER = re.compile(
    rf"(?<![a-z0-9/.])(\d{{1,3}}(?:[.,]\d)?)\s*(?:{_UNIT})\.?\s*(?P<rel>post|after|apres|de|d'|since)"
)
#: "operated 3 days ago", "opéré il y a 3 jours".
_AGO = [
    re.compile(rf"il y a\s+(\d{{1,3}})\s*(?:{_UNIT})(?![a-z])"),
    re.compile(rf"(?<![0-9])(\d{{1,3}})\s*(?:{_UNIT})\s+ago(?![a-z])"),
]
_YESTERDAY = re.compile(r"(?:oper[a-z]*|surgery|chirurgie|intervention)\s+(hier|yesterday|la veille|ce matin|this morning|today|aujourd'hui)")

_MONTHS = {
    "jan": 1, "janv": 1, "janvier": 1, "january": 1, "feb": 2, "fev": 2, "fevr": 2, "fevrier": 2, "february": 2,
    "mar": 3, "mars": 3, "march": 3, "apr": 4, "avr": 4, "avril": 4, "april": 4, "mai": 5, "may": 5,
    "jun": 6, "juin": 6, "june": 6, "jul": 7, "juil": 7, "juillet": 7, "july": 7, "aug": 8, "aout": 8,
    "august": 8, "sep": 9, "sept": 9, "septembre": 9, "september": 9, "oct": 10, "octobre": 10,
    "october": 10, "nov": 11, "novembre": 11, "november": 11, "dec": 12, "decembre": 12, "december": 12,
}
_NUMERIC_DATE = re.compile(r"(?<![0-9/])(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{4}|\d{2}))?(?![0-9/])")
_ISO_DATE = re.compile(r"(?<![0-9])(\d{4})-(\d{2})-(\d{2})(?![0-9])")
_NAMED_DATE = re.compile(r"(?<![0-9])(\d{1,2})(?:er)?\s+([a-z]{3,9})\.?\s+(\d{4})(?![0-9])")
_FRENCH = re.compile(r"(?<![a-z])(le|la|du|des|et|opere|operee|pour|sur|avec|sans|depuis|une|douleur|chez|arthrodese)(?![a-z])")
_ENGLISH = re.compile(r"(?<![a-z])(the|of|and|for|with|after|since|operated|surgery|pain|on)(?![a-z])")


@dataclass
class Reading:
    """One estimate of the time since surgery, with where it came from."""

    hours: float
    source: str  # "text" or "surgery"
    text: str
    keyword: str | None = None
    tag: str | None = None
    start: int | None = None
    end: int | None = None

    def describe(self) -> str:
        where = f" in {self.tag} {self.keyword} [{self.start}:{self.end}]" if self.tag else ""
        return f"{self.hours:g} h since surgery from '{self.text}'{where} ({self.source})"


def study_datetime(attributes: dict) -> datetime | None:
    """StudyDate (+ StudyTime) as a datetime, or None."""
    date = str(attributes.get("StudyDate") or "").strip()
    if not re.fullmatch(r"\d{8}", date):
        return None
    time = re.sub(r"[^0-9]", "", str(attributes.get("StudyTime") or "").split(".")[0])[:6].ljust(6, "0")
    try:
        return datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return None


def surgery_reading(surgery: dict | None, study_dt: datetime | None) -> tuple[Reading | None, str | None]:
    """The structured surgery record as a reading, or a note saying why it cannot be used."""
    if not surgery:
        return None, None
    try:
        when = datetime.fromisoformat(str(surgery["datetime"]))
    except (KeyError, ValueError):
        return None, "surgery record without a usable datetime"
    if study_dt is None:
        return None, "surgery record present but no StudyDate to compare it with"
    hours = (study_dt - when.replace(tzinfo=None)).total_seconds() / 3600
    if hours < 0:
        return None, "surgery record is after the study date: ignored"
    return Reading(round(hours, 1), "surgery", str(surgery.get("source") or surgery["datetime"])), None


def text_readings(fields: list[dict], study_dt: datetime | None) -> tuple[list[Reading], list[str]]:
    """Every time-since-surgery reading found in the text fields, and notes on dates left unknown."""
    readings: list[Reading] = []
    notes: list[str] = []
    for f in fields:
        value = f.get("value") or ""
        norm, index = normalise(value)

        def add(hours: float, a: int, b: int) -> None:
            start, end = index[a], index[b - 1] + 1
            readings.append(Reading(round(hours, 1), "text", value[start:end], f.get("keyword"), f.get("tag"), start, end))

        for pattern, unit in _RELATIVE:
            for m in pattern.finditer(norm):
                n = next(g for g in m.groups() if g is not None)
                add(int(n) * _UNIT_HOURS[unit], m.start(), m.end())
        for m in _AFTER.finditer(norm):
            if _SURGERY.search(norm, m.start("rel"), m.start("rel") + 30):
                add(float(m.group(1).replace(",", ".")) * _UNIT_HOURS[_unit(m)], m.start(), m.end())
        for pattern in _AGO:
            for m in pattern.finditer(norm):
                if _SURGERY.search(norm[max(0, m.start() - 40) : m.end() + 30]):
                    add(int(m.group(1)) * _UNIT_HOURS[_unit(m)], m.start(), m.end())
        for m in _YESTERDAY.finditer(norm):
            add(24 if m.group(1) in ("hier", "yesterday", "la veille") else 0, m.start(), m.end())
        for date, a, b, note in _dates(norm):
            if not _SURGERY.search(norm[max(0, a - 50) : a]) or (date is None and not note):
                continue
            if note:
                notes.append(f"{note} in {f.get('tag')} {f.get('keyword')} [{index[a]}:{index[b - 1] + 1}]: left unknown")
            elif study_dt is None:
                notes.append(f"surgery date in {f.get('tag')} but no StudyDate to compare it with: left unknown")
            elif date > study_dt:
                notes.append(f"surgery date in {f.get('tag')} is after the study date: ignored")
            else:
                add((study_dt - date).total_seconds() / 3600, a, b)
    return readings, notes


def _unit(m: re.Match) -> str:
    return next(k for k in _UNITS if m.group(k))


def _dates(norm: str):
    """(datetime | None, start, end, note) for every date written in the text."""
    french = len(_FRENCH.findall(norm)) >= len(_ENGLISH.findall(norm))
    taken: list[tuple[int, int]] = []
    for m in _ISO_DATE.finditer(norm):
        taken.append(m.span())
        yield _make(int(m.group(1)), int(m.group(2)), int(m.group(3))), m.start(), m.end(), None
    for m in _NAMED_DATE.finditer(norm):
        month = _MONTHS.get(m.group(2))
        if month:
            yield _make(int(m.group(3)), month, int(m.group(1))), m.start(), m.end(), None
    for m in _NUMERIC_DATE.finditer(norm):
        if any(a <= m.start() < b for a, b in taken) or m.group(3) is None:
            continue
        a, b, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
        year += 2000 if year < 100 else 0
        if french or a > 12:
            yield _make(year, b, a), m.start(), m.end(), None
        elif b > 12:
            yield _make(year, a, b), m.start(), m.end(), None
        elif a == b:
            yield _make(year, a, a), m.start(), m.end(), None
        else:
            yield None, m.start(), m.end(), f"ambiguous date '{m.group()}' (DD/MM or MM/DD)"


def _make(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day)
    except ValueError:
        return None

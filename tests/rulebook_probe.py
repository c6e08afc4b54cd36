"""The rulebook loaded once for the text-family property tests, and the three probes they share.

triage(text, date): the outcome of a one-field request (ReasonForTheRequestedProcedure) on a study of that date;
codes(outcome): the flag codes raised; hours(text, study): the times since surgery read in a text at a study time.
"""

from __future__ import annotations

from datetime import datetime

from rules.casebook import build_study
from rules.engine import Rulebook
from rules.timing import text_readings

RB = Rulebook.load()


def triage(text: str, date: str = "20261121"):
    return RB.evaluate(build_study({"fields": {"ReasonForTheRequestedProcedure": text}, "study_date": date}))


def codes(out) -> set[str]:
    return {f.code for f in out.flags}


def hours(text: str, study: datetime) -> list[float]:
    readings, _ = text_readings([{"keyword": "ReasonForTheRequestedProcedure", "tag": "(0040,1002)", "value": text}], study)
    return [r.hours for r in readings]

"""The rule-family tests' probe: the default rulebook, loaded once, run on a request reason.

- `triage(text, date)`: the rulebook's outcome for a study whose only text is `text` (study date `date`, YYYYMMDD);
- `codes(out)`: the flag codes of an outcome;
- `hours(text, study)`: the times since surgery (hours) read in `text` for a study acquired at `study`, in reading order.
"""

from __future__ import annotations

from datetime import datetime

from rules.casebook import build_study
from rules.engine import Rulebook
from rules.timing import text_readings

RB = Rulebook.load()
REASON = "ReasonForTheRequestedProcedure"


def triage(text: str, date: str = "20261121"):
    return RB.evaluate(build_study({"fields": {REASON: text}, "study_date": date}))


def codes(out) -> set[str]:
    return {f.code for f in out.flags}


def hours(text: str, study: datetime) -> list[float]:
    readings, _ = text_readings([{"keyword": REASON, "tag": "(0040,1002)", "value": text}], study)
    return [r.hours for r in readings]

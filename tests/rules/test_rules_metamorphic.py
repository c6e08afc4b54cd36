"""Metamorphic checks over the cases in rules/cases/ (blind rounds included): rewriting the
same request must not change the priority or the flags. Every STAT case is rewritten every way;
every other case half of the ways (a fixed split, see _sampled).

upper case, accents stripped, UTF-8 read as Latin-1 (mojibake), every clinical attribute merged
into one, attributes in reverse order, unrelated text appended.
"""

import re
import unicodedata
import zlib
from pathlib import Path

import pytest

from rules.casebook import build_study
from rules.engine import DEFAULT_DIRECTORY, Rulebook
from rules.evaluation import load_eval_cases

RB = Rulebook.load()
CASES, _ = load_eval_cases(Path(DEFAULT_DIRECTORY) / "cases")
ACQUISITION = {"StudyDescription", "SeriesDescription", "RequestedProcedureDescription",
               "PerformedProcedureStepDescription", "ScheduledProcedureStepDescription"}


def result(data):
    out = RB.evaluate(build_study(data))
    return out.priority, sorted(f.code for f in out.flags)


def _strip(text):
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _fields(data, fn):
    return {k: fn(str(v)) for k, v in (data.get("fields") or {}).items()}


def _merge(data):
    fields = data.get("fields") or {}
    clinical = [str(v).rstrip(". ") for k, v in fields.items() if k not in ACQUISITION]
    out = {k: v for k, v in fields.items() if k in ACQUISITION}
    if clinical:
        out["ReasonForTheRequestedProcedure"] = ". ".join(clinical)
    return out


def _reverse(data):
    fields = data.get("fields") or {}
    return dict(reversed(list(fields.items())))


TRANSFORMS = {
    "upper": lambda d: _fields(d, str.upper),
    "strip_accents": lambda d: _fields(d, _strip),
    "mojibake": lambda d: _fields(d, lambda v: v.encode("utf-8").decode("latin-1")),
    "merge": _merge,
    "reverse": _reverse,
    "append": lambda d: _append(d, "Lives alone. Interpreter needed."),
}


def _append(data, text):
    """Unrelated text added in PatientComments, after what is already there (round 12 cases carry the complaint in
    PatientComments: replacing it would remove the finding, not add unrelated text)."""
    fields = dict(data.get("fields") or {})
    old = str(fields.get("PatientComments") or "").rstrip()
    fields["PatientComments"] = f"{old.rstrip('.')}. {text}" if old else text
    return fields


_BEFORE: dict[str, tuple] = {}


def _sampled(case, name) -> bool:
    """Each case is rewritten by half of the transforms (a fixed split by a hash of its name and the transform's), and
    every case whose expected priority is STAT by all of them: the suite stays under its time budget as the casebook
    grows (6,000+ cases), every case is still rewritten three ways, and no emergency escapes any rewriting."""
    if str((case.data.get("expect") or {}).get("priority", "")).upper() == "STAT":
        return True
    return zlib.crc32(f"{case.name}/{name}".encode()) % 2 == 0


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_rewriting_a_request_changes_nothing(name):
    changed = []
    for case in CASES:
        if not _sampled(case, name):
            continue
        fields = case.data.get("fields") or {}
        if name == "strip_accents" and any("Ã" in str(v) or re.search("\u00e3[\u0080-\u00bf]", str(v)) for v in fields.values()):
            continue  # stripping accents from mojibake destroys it; not a rewriting a referrer does
        if case.name not in _BEFORE:
            _BEFORE[case.name] = result(case.data)
        before = _BEFORE[case.name]
        after = result({**case.data, "fields": TRANSFORMS[name](case.data)})
        if before != after:
            changed.append((case.name, before, after))
    assert not changed, changed[:5]

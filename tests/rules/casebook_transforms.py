"""Rewritings of a case's request text, for the tests that read the whole casebook (`casebook_pool`).

TRANSFORMS (metamorphic: the same request rewritten must triage the same): upper case, accents stripped, UTF-8 read as
Latin-1 (mojibake), every clinical attribute merged into one, attributes in reverse order, unrelated text appended.
NOISE (session 5, referrer noise on the blind rounds' STAT texts): no punctuation, telegraphic, lower-cased mojibake,
one typo in a long word.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from pathlib import Path

ACQUISITION = {"StudyDescription", "SeriesDescription", "RequestedProcedureDescription",
               "PerformedProcedureStepDescription", "ScheduledProcedureStepDescription"}


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


def _append(data, text):
    """Unrelated text added in PatientComments, after what is already there (round 12 cases carry the complaint in
    PatientComments: replacing it would remove the finding, not add unrelated text)."""
    fields = dict(data.get("fields") or {})
    old = str(fields.get("PatientComments") or "").rstrip()
    fields["PatientComments"] = f"{old.rstrip('.')}. {text}" if old else text
    return fields


def _upper(data):
    return _fields(data, str.upper)


def _strip_accents(data):
    return _fields(data, _strip)


def _mojibake(data):
    return _fields(data, lambda v: v.encode("utf-8").decode("latin-1"))


def _append_unrelated(data):
    return _append(data, "Lives alone. Interpreter needed.")


TRANSFORMS = {"upper": _upper, "strip_accents": _strip_accents, "mojibake": _mojibake, "merge": _merge, "reverse": _reverse,
              "append": _append_unrelated}


def _expected(case) -> str:
    return str((case.data.get("expect") or {}).get("priority", "")).upper()


def applies(case, name: str) -> bool:
    """Every case whose expected priority is STAT is rewritten by half of the transforms, every other case by one of them
    on average (a fixed split by a hash of its name and the transform's): the suite stays within its time budget as the
    casebook grows (26,000+ cases in session 15, when every STAT case was still rewritten every way and these tests took
    a quarter of the suite) and every emergency is rewritten three ways on average (the noise tests perturb every blind
    STAT case every time). Stripping the accents of mojibake destroys it (not a rewriting a referrer does): skipped."""
    fields = case.data.get("fields") or {}
    if name == "strip_accents" and any("Ã" in str(v) or re.search("\u00e3[\u0080-\u00bf]", str(v)) for v in fields.values()):
        return False
    if _expected(case) == "STAT":
        return zlib.crc32(f"{case.name}/{name}".encode()) % 2 == 0
    return zlib.crc32(f"{case.name}/{name}".encode()) % 6 == 0


def blind_stat(case) -> bool:
    return Path(case.file).name.startswith("blind_round") and _expected(case) == "STAT"


def _no_punctuation(text: str, rng) -> str:
    return re.sub(r"[,;:!]|\.(?!\d)", " ", text)  # decimals kept: "1.2 L" is a value, not punctuation


def _telegraphic(text: str, rng) -> str:
    # (never the grade "A" of an ASIA/AIS/Frankel scale: "ASIA A" is no article)
    return re.sub(r"(?<!asia )(?<!ais )(?<!frankel )\b(the|a|an|le|la|les|un|une|des|du|is|has|was|est|been)\b ", "", text,
                  flags=re.I)


def _lower_mojibake(text: str, rng) -> str:
    if re.search(r"\bCES\b", text):
        return text.encode("utf-8").decode("latin-1")  # lower-case "ces" is the French determiner: the acronym keeps its case
    if "Ã" in text:
        return text.lower()  # already mojibake (a blind case's own): lower-cased only, not garbled twice
    return text.encode("utf-8").decode("latin-1").lower()


def _typo(text: str, rng) -> str:
    words = list(re.finditer(r"[A-Za-zÀ-ÿ]{7,}", text))
    if not words:
        return text
    m = rng.choice(words)
    w, i = m.group(), rng.randrange(1, len(m.group()) - 1)
    w = (w[:i] + w[i + 1:], w[:i] + w[i + 1] + w[i] + w[i + 2:], w[:i] + w[i] + w[i:])[rng.randrange(3)]
    return text[:m.start()] + w + text[m.end():]


NOISE = {"no_punctuation": _no_punctuation, "telegraphic": _telegraphic, "lower_mojibake": _lower_mojibake, "typo": _typo}

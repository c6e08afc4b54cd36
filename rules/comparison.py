"""Comparison hints (rules/policy/comparison.yaml): the wording shown with prior exams.

Pure: reads YAML, checks it, fills placeholders. `hint(name, **values)` is what callers use.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).with_name("policy") / "comparison.yaml"
NAMES = ("not_configured", "unavailable", "intraoperative", "preoperative_mri", "preoperative_mri_late",
         "preoperative_other", "no_preoperative", "no_surgery_date", "postoperative_radiograph",
         "postoperative_ct", "postoperative_other", "recent_comparable", "conflict")
PLACEHOLDERS = {"modalities", "date", "days", "months", "reason", "conflict"}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


def check(document: dict, path: Path) -> dict:
    hints = (document or {}).get("hints") or {}
    missing = [n for n in NAMES if n not in hints]
    unknown = [n for n in hints if n not in NAMES]
    if missing or unknown:
        raise PolicyError(f"{path}: hints missing {missing}, unknown {unknown}")
    for name, hint in hints.items():
        if not isinstance(hint, dict) or not isinstance(hint.get("text"), str) or not hint.get("reference"):
            raise PolicyError(f"{path}: hint '{name}' needs a text and a reference")
        used = {field for _, field, _, _ in string.Formatter().parse(hint["text"]) if field}
        if used - PLACEHOLDERS:
            raise PolicyError(f"{path}: hint '{name}' uses unknown placeholder(s) {sorted(used - PLACEHOLDERS)}")
    months = (document.get("settings") or {}).get("contrast_unhelpful_after_months")
    if not isinstance(months, (int, float)) or months < 0:
        raise PolicyError(f"{path}: settings.contrast_unhelpful_after_months must be a non-negative number")
    return document


@lru_cache(maxsize=4)
def load(path: Path = DEFAULT_FILE) -> dict:
    with open(path, encoding="utf-8") as fh:
        return check(yaml.safe_load(fh), path)


def hint(name: str, **values) -> str:
    return load()["hints"][name]["text"].format(**values)


def setting(name: str) -> float:
    return load()["settings"][name]

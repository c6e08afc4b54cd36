"""Offline triage: the same pipeline over DICOM files on disk, results as JSON Lines.

This output is a contract other tools depend on (see README): one object per
study with study_instance_uid, accession_number, priority, flags, postop_interval_hours,
priors, recommendations.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import pydicom
from pydicom.errors import InvalidDicomError

from core.config import Config
from core.headers import summarize
from core.study import Study
from agent.uids import is_valid_uid


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            print(f"pacs-triage: {path}: no such file or directory", file=sys.stderr)


def read_studies(paths: Iterable[Path]) -> list[Study]:
    """Group the DICOM files under `paths` by StudyInstanceUID (any file name)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in iter_files(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
            print(f"pacs-triage: skipped {path}: not a DICOM file", file=sys.stderr)
            continue
        uid = ds.get("StudyInstanceUID")
        if not is_valid_uid(uid) or not is_valid_uid(ds.get("SOPInstanceUID")):
            print(f"pacs-triage: skipped {path}: no valid Study/SOP Instance UID", file=sys.stderr)
            continue
        groups[uid].append(summarize(ds, path, path.stat().st_size))
    return [Study.from_summaries(items) for _, items in sorted(groups.items())]


def triage_paths(paths, *, as_json: bool, explain: bool, pacs=None, analyse: bool = True,
                 rules_dir=None, out=None, config: Config | None = None) -> int:
    from rules.engine import Rulebook
    from workers.pipeline import public_view, triage

    out = out or sys.stdout
    config = config or Config()
    rulebook = Rulebook.load(rules_dir)
    lookup = None
    if pacs is not None:
        from workers.priors import find_priors

        def lookup(study, text_surgery):
            return find_priors(study, pacs, calling_aet=config.ae_title, text_surgery=text_surgery)

    studies = read_studies(paths)
    if not studies:
        print("pacs-triage: no DICOM study found", file=sys.stderr)
        return 1
    for study in studies:
        entry = triage(study, rulebook, priors_lookup=lookup, analyse=analyse, config=config)
        record = public_view(entry)
        if explain:
            record["explain"] = entry["explain"]
        if as_json:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            continue
        out.write(f"{record['priority']:8} study {study.uid} accession {record['accession_number'] or '-'}\n")
        for flag in record["flags"]:
            out.write(f"    suspected {flag['code']} ({flag['priority']}, rule {flag['rule']})\n")
        for rec in record["recommendations"]:
            out.write(f"    recommendation: {rec}\n")
        if explain:
            for line in entry["explain"]:
                out.write(f"    why: {line}\n")
    return 0

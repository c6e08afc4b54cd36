"""Rule test cases kept beside the rules (rules/cases/*.yaml): build a Study, run, compare.

A case gives the text fields (keyword -> text), optional StudyDate/StudyTime,
modality, series description, order priority, surgery record and priors, and
what is expected: priority, flags, absent flags, interval, rules, recommendations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import tag_for_keyword

from core.study import Study
from rules.loader import RulebookError, read_yaml
from rules.model import FLAG_CODES, Flag, Priority

_CASE_KEYS = {"name", "scenario", "fields", "study_date", "study_time", "modality", "series_description", "body_part",
              "order_priority", "surgery", "priors", "findings", "expect"}
_EXPECT_KEYS = {"priority", "flags", "absent", "interval_hours", "rules", "recommend", "course"}


@dataclass
class Case:
    scenario: str
    name: str
    data: dict
    file: str
    line: int


def load_cases(directory: Path) -> list[Case]:
    """Every case in directory/*.yaml; a malformed case raises RulebookError."""
    cases: list[Case] = []
    names: set[str] = set()
    for path in sorted(directory.glob("*.yaml")):
        doc = read_yaml(path)
        if not isinstance(doc, dict) or "scenario" not in doc or not isinstance(doc.get("cases"), list):
            raise RulebookError(path, 1, "a case file needs 'scenario' and a list of 'cases'")
        for item in doc["cases"]:
            line = getattr(item, "line", 1)
            if not isinstance(item, dict) or "name" not in item or "expect" not in item:
                raise RulebookError(path, line, "a case needs 'name' and 'expect'")
            unknown = (set(item) - _CASE_KEYS) | (set(item["expect"]) - _EXPECT_KEYS)
            if unknown:
                raise RulebookError(path, line, f"unknown case key(s) {sorted(unknown)}")
            for code in list(item["expect"].get("flags", [])) + list(item["expect"].get("absent", [])):
                if code not in FLAG_CODES:
                    raise RulebookError(path, line, f"unknown flag code '{code}'")
            if item["name"] in names:
                raise RulebookError(path, line, f"duplicate case name '{item['name']}'")
            names.add(item["name"])
            cases.append(Case(str(item.get("scenario", doc["scenario"])), str(item["name"]), item, str(path), line))
    return cases


def build_study(data: dict) -> Study:
    """A one-instance Study from a case."""
    fields = []
    for keyword, text in (data.get("fields") or {}).items():
        tag = tag_for_keyword(keyword)
        fields.append({"keyword": keyword, "tag": f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag else "", "value": str(text)})
    summary = {
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "1.2.3.1",
        "SOPInstanceUID": "1.2.3.1.1",
        "Modality": data.get("modality", "MR"),
        "TextFields": fields,
        "OrderPriorities": {"RequestedProcedurePriority": data["order_priority"]} if data.get("order_priority") else {},
    }
    for key, keyword in (("study_date", "StudyDate"), ("study_time", "StudyTime"),
                         ("series_description", "SeriesDescription"), ("body_part", "BodyPartExamined")):
        if data.get(key, "20261121" if key == "study_date" else None):
            summary[keyword] = str(data.get(key, "20261121"))
    return Study.from_summaries([summary])


def run_case(rulebook, case: Case):
    """(failures, outcome) for one case; no failures means it passes."""
    data = case.data
    findings = [Flag.from_dict(f) for f in data.get("findings") or []]
    out = rulebook.evaluate(build_study(data), surgery=data.get("surgery"), priors=data.get("priors"), findings=findings)
    expect = data["expect"]
    codes = [f.code for f in out.flags]
    failures = []
    if "priority" in expect and out.priority != Priority.parse(expect["priority"]):
        failures.append(f"priority {out.priority.name}, expected {expect['priority']}")
    for code in expect.get("flags", []):
        if code not in codes:
            failures.append(f"flag {code} missing (got {codes})")
    for code in expect.get("absent", []):
        if code in codes:
            failures.append(f"flag {code} raised, expected absent")
    if "interval_hours" in expect:
        want = expect["interval_hours"]
        got = out.postop_interval_hours
        if (want is None) != (got is None) or (want is not None and abs(got - float(want)) > 1):
            failures.append(f"interval {got}, expected {want}")
    if "course" in expect and out.course != expect["course"]:
        failures.append(f"course {out.course}, expected {expect['course']}")
    for rid in expect.get("rules", []):
        if rid not in out.fired_rules:
            failures.append(f"rule {rid} did not fire (fired {out.fired_rules})")
    for text in expect.get("recommend", []):
        if not any(text.lower() in r.lower() for r in out.recommendations):
            failures.append(f"no recommendation containing '{text}'")
    return failures, out

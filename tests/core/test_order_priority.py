"""Order priority codes -> STAT/URGENT/ROUTINE (`core/order_priority.yaml`, domain guide §1.3):
every row of the table, HL7 tables 0027/0485 complete, and the codes read from a real HL7 v2 order."""

from __future__ import annotations

import hl7
import pytest
import yaml

from core.orders import parse_order
from core.priority import TABLE, Priority
from ris_peers import order

#: HL7 v2 table 0027 (Priority) = the fixed codes of table 0485 (Extended Priority Codes).
HL7_0027 = {"S", "A", "R", "P", "C", "T", "PRN"}
#: DICOM (0040,1003) Requested Procedure Priority / (0040,1009) Reporting Priority defined terms.
DICOM_TERMS = {"STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW"}

EXPECTED = {
    "S": "STAT", "A": "URGENT", "R": "ROUTINE", "P": "ROUTINE", "C": "ROUTINE", "T": "ROUTINE", "PRN": "ROUTINE",
    "STAT": "STAT", "HIGH": "URGENT", "ROUTINE": "ROUTINE", "MEDIUM": "ROUTINE", "LOW": "ROUTINE",
    "ASAP": "URGENT", "URGENT": "URGENT", "EMERGENCY": "URGENT",
}


def table() -> dict:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


def test_the_table_covers_hl7_0027_and_the_dicom_terms_each_row_with_its_source():
    rows = table()["codes"]
    assert HL7_0027 | DICOM_TERMS <= set(rows)
    assert set(rows) == set(EXPECTED), "a row was added or removed: extend EXPECTED with the reason"
    for code, row in rows.items():
        assert row["priority"] in ("STAT", "URGENT", "ROUTINE"), code
        assert row["source"] and row["meaning"], code
        # a code that is not literally routine but maps to ROUTINE says why
        if row["priority"] == "ROUTINE" and code not in ("R", "ROUTINE"):
            assert row.get("why"), code


@pytest.mark.parametrize("code,expected", sorted(EXPECTED.items()))
def test_every_code_maps_per_the_domain_guide(code, expected):
    assert Priority.from_order(code) == Priority[expected]
    assert Priority.from_order(f" {code.lower()} ") == Priority[expected]  # case and padding


@pytest.mark.parametrize("code", ["TS30", "TM5", "TH2", "TD1", "TW1", "TL3"])
def test_hl7_0485_timing_critical_codes_with_a_unit_are_routine(code):
    assert Priority.from_order(code) == Priority.ROUTINE


def test_unknown_and_empty():
    assert Priority.from_order("XYZ") == Priority.ROUTINE  # the guide's "anything else"
    assert Priority.from_order("TX9") == Priority.ROUTINE and Priority.from_order("TS") == Priority.ROUTINE
    assert Priority.from_order("") is None and Priority.from_order("  ") is None and Priority.from_order(None) is None


def test_only_stat_is_stat_and_urgent_needs_an_urgency_word():
    stat = {c for c in EXPECTED if Priority.from_order(c) == Priority.STAT}
    urgent = {c for c in EXPECTED if Priority.from_order(c) == Priority.URGENT}
    assert stat == {"S", "STAT"}
    assert urgent == {"A", "ASAP", "HIGH", "URGENT", "EMERGENCY"}


@pytest.mark.parametrize("where", ["TQ1", "ORC7", "OBR27", "OBR5"])
@pytest.mark.parametrize("code,expected", [("S", "STAT"), ("A", "URGENT"), ("R", "ROUTINE"), ("P", "ROUTINE"),
                                           ("C", "ROUTINE"), ("T", "ROUTINE"), ("PRN", "ROUTINE")])
def test_hl7_order_priority_fields(where, code, expected):
    parsed = parse_order(hl7.parse(order(priority=code, priority_in=where)))
    assert (parsed.priority, parsed.priority_code) == (expected, code)
    assert parsed.priority_source == "HL7 order " + {"TQ1": "TQ1-9", "ORC7": "ORC-7", "OBR27": "OBR-27",
                                                     "OBR5": "OBR-5"}[where]


def test_tq1_9_as_a_coded_element():
    parsed = parse_order(hl7.parse(order(priority="A^ASAP^HL70485", priority_in="TQ1")))
    assert (parsed.priority, parsed.priority_code) == ("URGENT", "A")

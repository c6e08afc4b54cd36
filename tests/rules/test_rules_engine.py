"""The engine API the pipeline calls: priority floor, evidence, no context, conflicts."""

import json

from core.study import Study
from rules.engine import Outcome, Rulebook
from rules.model import Evidence, Flag, Priority

RB = Rulebook.load()


def study(text=None, priorities=None, date="20261121", time="100000", modality="MR", keyword="ReasonForTheRequestedProcedure"):
    fields = [{"keyword": keyword, "tag": "(0040,1002)", "value": text}] if text else []
    summary = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.1", "SOPInstanceUID": "1.2.3.1.1",
               "Modality": modality, "StudyDate": date, "StudyTime": time, "TextFields": fields,
               "OrderPriorities": priorities or {}}
    return Study.from_summaries([summary])


def test_lead_end_to_end_cases():
    out = RB.evaluate(study("Discectomie L4-L5 J1, syndrome de la queue de cheval"))
    assert isinstance(out, Outcome)
    assert out.priority == Priority.STAT and out.flags[0].code == "epidural_haematoma"
    out = RB.evaluate(study("Arthrodèse L4-S1 J+2, pas de fièvre, radiculalgie L5 gauche nouvelle, ?vis"))
    assert out.priority == Priority.URGENT
    screw = next(f for f in out.flags if f.code == "misplaced_screw")
    assert screw.priority == Priority.URGENT
    assert "surgical_site_infection" not in [f.code for f in out.flags]


def test_every_flag_carries_rule_text_field_offsets_and_assertion():
    text = "Arthrodèse L4-S1 J+2, radiculalgie L5, ?vis"
    out = RB.evaluate(study(text))
    for flag in out.flags:
        textual = [e for e in flag.evidence if e.text]
        assert textual and flag.rule
        for e in textual:
            assert e.rule in flag.rules
            assert text[e.start : e.end] == e.text
            assert e.source.startswith("(0040,1002)")
            assert e.assertion in ("affirmed", "uncertain")
        assert any(e.source == "rulebook" and RB.version in e.note and "48 h" in e.note for e in flag.evidence)
    vis = [e for f in out.flags for e in f.evidence if e.text == "vis"]
    assert vis[0].assertion == "uncertain"


def test_priority_never_below_order_priority():
    for value, expected in (("STAT", Priority.STAT), ("HIGH", Priority.URGENT), ("ROUTINE", Priority.ROUTINE)):
        out = RB.evaluate(study("Discectomie il y a 2 ans, contrôle", {"RequestedProcedurePriority": value}))
        assert out.priority == expected and out.order_priority == expected
    out = RB.evaluate(study("Discectomie J1, SQC", {"ReportingPriority": "LOW", "RequestedProcedurePriority": "HIGH"}))
    assert out.order_priority == Priority.URGENT and out.priority == Priority.STAT


def test_no_clinical_context_is_recorded_never_guessed():
    out = RB.evaluate(study())
    assert out.priority == Priority.ROUTINE and out.flags == [] and out.postop_interval_hours is None
    assert any("No clinical context" in line for line in out.explain)
    assert {"rule": "context.none", "note": "no clinical context"} in out.observations
    out = RB.evaluate(study(priorities={"RequestedProcedurePriority": "STAT"}))
    assert out.priority == Priority.STAT


def test_findings_are_merged_and_counted():
    finding = Flag("misplaced_screw", Priority.STAT, "analyser.canal", [Evidence(source="series 1.2.3.1", note="screw in canal")])
    out = RB.evaluate(study("Arthrodèse L4-S1 J+2, ?vis", modality="CT"), findings=[finding])
    screw = next(f for f in out.flags if f.code == "misplaced_screw")
    assert out.priority == Priority.STAT and screw.priority == Priority.STAT
    assert {"analyser.canal", "early.radicular.screw"} <= set(screw.rules)


def test_surgery_conflict_uses_higher_priority_and_is_recorded():
    s = study("TLIF L4-L5 il y a 3 mois, radiculalgie gauche")
    late = RB.evaluate(s)
    assert late.priority == Priority.ROUTINE and late.course == "inefficacy+late"
    out = RB.evaluate(s, surgery={"datetime": "2026-11-19T10:00:00", "source": "intraoperative fluoroscopy"})
    assert out.priority == Priority.URGENT and out.postop_interval_hours == 48
    assert len(out.context["time_conflict"]) == 2
    assert any("Conflicting times since surgery" in line for line in out.explain)
    assert all(any(e.source == "postop_interval" and "conflicting" in e.note for e in f.evidence) for f in out.flags)


def test_unknown_time_runs_every_window():
    out = RB.evaluate(study("Arthrodèse L4-L5, pseudarthrose ?, fièvre"))
    assert out.course == "unknown" and out.postop_interval_hours is None
    assert {"pseudarthrosis", "surgical_site_infection"} <= {f.code for f in out.flags}


def test_priors_only_used_when_queried():
    s = study("Discectomie il y a 3 semaines, aucune amélioration")
    assert not any("PACS" in r for r in RB.evaluate(s).recommendations)
    assert any("No preoperative imaging on PACS" in r for r in RB.evaluate(s, priors=[]).recommendations)
    pre = [{"study_instance_uid": "9", "study_date": "20260901", "modalities": ["MR"], "description": "IRM",
            "role": "preoperative", "interval_days": 81}]
    assert any("Preoperative MRI available" in r for r in RB.evaluate(s, priors=pre).recommendations)


def test_to_dict_is_json_and_complete():
    out = RB.evaluate(study("POD 2 after TLIF, CES"))
    data = json.loads(json.dumps(out.to_dict()))
    for key in ("priority", "order_priority", "flags", "postop_interval_hours", "course", "recommendations",
                "explain", "rulebook_version"):
        assert key in data
    assert data["priority"] == "STAT" and data["flags"][0]["status"] == "suspected"
    assert data["rulebook_version"].startswith("sha256:")
    assert all("suspected" in line.lower() or not line.startswith("[early") for line in data["explain"])


def test_evaluation_is_deterministic():
    s = study("Arthrodèse L4-S1 J+2, radiculalgie L5, ?vis, fièvre")
    assert RB.evaluate(s).to_dict() == RB.evaluate(s).to_dict()

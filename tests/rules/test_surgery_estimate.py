"""The surgery estimate in rules/timing.py: text, intraoperative and postoperative priors, in order of trust."""

from __future__ import annotations

from datetime import datetime

from rules.timing import SurgeryEstimate, infer_surgery, surgery_reading, text_surgery


def prior(uid, when, *, intraop=False, texts=("",), modalities=("DX",), time="") -> dict:
    return {"study_instance_uid": uid, "_dt": when, "_intraop": intraop, "_texts": list(texts),
            "modalities": list(modalities), "description": texts[0], "study_time": time}


def test_text_candidate_is_hours_before_the_study():
    study = {"StudyDate": "20261122", "StudyTime": "120000"}
    assert text_surgery(study, 48) == {"datetime": "2026-11-20T12:00:00", "source": "clinical text"}
    assert text_surgery(study, None) is None and text_surgery({}, 48) is None


def test_intraoperative_prior_beats_text_beats_first_postoperative_prior():
    priors = [prior("1.1", datetime(2026, 11, 18, 9), intraop=True, modalities=("XA",), time="090000"),
              prior("1.2", datetime(2026, 11, 19), texts=("RACHIS LOMBAIRE CONTRÔLE POST-OP",))]
    text = {"datetime": "2026-11-18T10:00:00", "source": "clinical text"}
    estimate, conflicts = infer_surgery(priors, text, datetime(2026, 11, 20, 9))
    assert isinstance(estimate, SurgeryEstimate) and not conflicts
    assert (estimate.trust, estimate.has_time, estimate.postop_interval_hours) == ("high", True, 48.0)
    assert estimate.evidence_source == "prior study 1.1"
    assert [c["trust"] for c in estimate.candidates] == ["high", "medium", "low"]

    estimate, _ = infer_surgery(priors[1:], text, None)
    assert (estimate.trust, estimate.evidence_source, estimate.postop_interval_hours) == ("medium", "request text", None)
    assert "postop_interval_hours" not in estimate.to_dict()

    estimate, conflicts = infer_surgery(priors[1:], {"date": "2026-11-25"}, None)
    assert estimate.trust == "medium" and "before the surgery date 2026-11-25" in conflicts[0]
    assert infer_surgery([], None) == (None, [])


def test_the_estimate_is_read_by_the_rules_like_a_surgery_record():
    estimate = SurgeryEstimate("2026-11-20T08:00:00", "intraoperative study 1.1 (XA)", "high", True, "1.1")
    reading, note = surgery_reading(estimate, datetime(2026, 11, 21, 8))
    assert note is None and reading.hours == 24.0 and reading.source == "surgery"
    assert surgery_reading(estimate, datetime(2026, 11, 19))[1] == "surgery record is after the study date: ignored"

"""Prior relevance, roles and surgery date from C-FIND answers (no network), and the Redis cache."""

from __future__ import annotations

import pytest

from core.config import DicomNode
from core.study import Series, Study
from workers.priors import classify, comparison_hints, find_priors
from workers.priors_classify import regions
from workers.priors_query import RedisCache, TTLCache, cache_key


def answer(uid, date, modalities, description, body_part="", *, time="100000", pid="PT1", issuer="HOSP-A",
           series=()):
    return {"study_instance_uid": uid, "study_date": date, "study_time": time, "modalities": list(modalities),
            "description": description, "body_part": body_part, "accession_number": "", "instances": 1,
            "patient_id": pid, "issuer": issuer, "series": list(series)}


def current(date="20261122", modality="MR", description="IRM RACHIS LOMBAIRE", issuer="HOSP-A") -> Study:
    return Study(uid="9.9", attributes={"PatientID": "PT1", "IssuerOfPatientID": issuer, "StudyDate": date,
                                        "StudyTime": "143000", "StudyDescription": description},
                 series={"9.9.1": Series("9.9.1", modality=modality, body_part="LSPINE")})


@pytest.mark.parametrize("body, text, expected", [
    ([], "IRM RACHIS LOMBAIRE", {"lumbar"}),
    ([], "IRM LOMBAIRE", {"lumbar"}),
    ([], "L-SPINE AP/LAT", {"lumbar"}),
    ([], "Radiographie colonne", {"spine"}),
    ([], "RACHIS DORSAL", {"thoracic"}),
    ([], "C-SPINE CT", {"cervical"}),
    ([], "TÉLÉRACHIS EOS", {"whole"}),
    (["TLSPINE"], "", {"thoracic", "lumbar"}),
    (["122496007"], "", {"lumbar"}),
    (["HEAD"], "SCANNER CEREBRAL", None),
    ([], "IRM GENOU DROIT", None),
    ([], "CORONAROGRAPHIE", None),
    ([], "SAG T2", set()),
    ([], "SAG T1 T2 STIR", set()),
    ([], "INFILTRATION L5-S1", {"lumbar"}),
    ([], "TDM C5-C6", {"cervical"}),
    ([], "IRM D11-D12", {"thoracic"}),
])
def test_regions(body, text, expected):
    assert regions(body, [text]) == expected


def test_client_side_identity_filter_when_the_pacs_ignores_keys():
    answers = [
        answer("1.1", "20260101", ["MR"], "IRM LOMBAIRE"),
        answer("1.2", "20260102", ["MR"], "IRM LOMBAIRE", issuer="HOSP-B"),  # PACS ignored the issuer
        answer("1.3", "20260103", ["MR"], "IRM LOMBAIRE", issuer=""),  # issuer unknown: not the same person
        answer("1.4", "20260104", ["MR"], "IRM LOMBAIRE", pid="PT10"),  # a wildcard-like match
    ]
    result = classify(current(), answers, "PT1", "HOSP-A")
    assert [p["study_instance_uid"] for p in result.priors] == ["1.1"]
    assert any(e.text == "3 answer(s) ignored: PatientID or IssuerOfPatientID differs" for e in result.evidence)
    # without an issuer on the current study, PatientID alone decides
    result = classify(current(issuer=""), answers, "PT1", None)
    assert [p["study_instance_uid"] for p in result.priors] == ["1.1", "1.2", "1.3"]


def test_intraoperative_markings():
    answers = [
        answer("2.1", "20261120", ["CR"], "RX PEROPERATOIRE BLOC"),  # no region, marked per-op
        answer("2.2", "20261120", ["CT"], "O-ARM 3D", body_part="LSPINE"),
        answer("2.3", "20260901", ["RF"], "SACCORADICULOGRAPHIE LOMBAIRE"),  # diagnostic, not surgery
        answer("2.4", "20261001", ["XA"], "CORONAROGRAPHIE"),  # another region
        answer("2.7", "20261005", ["RF"], "INFILTRATION SOUS SCOPIE L4-L5"),  # guided injection, not surgery
        answer("2.5", "20261002", ["XA"], "ANGIO"),  # unknown region, not marked: not listed
        answer("2.6", "20261119", ["RF"], "", series=[{"SeriesInstanceUID": "2.6.1", "Modality": "RF",
                                                        "SeriesDescription": "SCOPIE",
                                                        "BodyPartExamined": "", "ProtocolName": ""}]),
    ]
    result = classify(current(), answers, "PT1", "HOSP-A")
    roles = {p["study_instance_uid"]: p["role"] for p in result.priors}
    assert roles == {"2.1": "intraoperative", "2.2": "intraoperative", "2.3": "other_spine",
                     "2.6": "intraoperative", "2.7": "preoperative"}
    assert result.surgery.datetime == "2026-11-20T10:00:00"


def test_surgery_from_text_then_first_postoperative_study():
    answers = [
        answer("3.1", "20260301", ["MR"], "IRM RACHIS LOMBAIRE"),
        answer("3.2", "20261110", ["DX"], "RACHIS LOMBAIRE POSTOP J1"),
        answer("3.3", "20261115", ["DX"], "RACHIS LOMBAIRE"),
    ]
    text = {"date": "2026-11-09", "source": "AdditionalPatientHistory"}
    result = classify(current(), answers, "PT1", "HOSP-A", text)
    assert result.surgery.trust == "medium"
    assert result.surgery.source == "text date from AdditionalPatientHistory"
    roles = {p["study_instance_uid"]: p["roles"] for p in result.priors}
    assert roles == {"3.1": ["preoperative", "recent_comparable"], "3.2": ["postoperative_reference"], "3.3": []}
    assert [p["role"] for p in result.priors][-1] == "other_spine"
    assert result.conflicts == []
    result = classify(current(), answers, "PT1", "HOSP-A")
    assert result.surgery.trust == "low" and result.surgery.datetime == "2026-11-10T00:00:00"
    assert result.surgery.source.startswith("first postoperative study 3.2 (DX, 'RACHIS LOMBAIRE POSTOP J1')")
    # a text date after the first postoperative study is a conflict
    result = classify(current(), answers, "PT1", "HOSP-A", {"date": "2026-11-14"})
    assert result.surgery.trust == "medium" and len(result.conflicts) == 1
    assert "before the surgery date 2026-11-14" in result.conflicts[0]


def test_no_preoperative_imaging_is_not_assessed():
    answers = [answer("4.1", "20261120", ["XA"], "PER-OP SCOPIE"),
               answer("4.2", "20261121", ["CT"], "TDM RACHIS LOMBAIRE")]
    result = classify(current(modality="CT", description="TDM RACHIS LOMBAIRE"), answers, "PT1", "HOSP-A")
    assert any(e.text == "no preoperative imaging on PACS" and e.note.startswith("not_assessed: ")
               for e in result.evidence)
    assert "No preoperative imaging on PACS — comparison not assessed" in result.hints
    ct = result.priors[1]
    assert ct["roles"] == ["postoperative_reference", "recent_comparable"] and ct["interval_days"] == -1
    assert any(h.startswith("Postoperative CT of 2026-11-21 available") for h in result.hints)


def test_late_mri_hint_mentions_mature_scar_and_later_studies_are_not_priors():
    answers = [answer("5.1", "20250101", ["MR"], "IRM LOMBAIRE"),
               answer("5.2", "20250301", ["XA"], "SCOPIE PER-OP", body_part="LSPINE"),
               answer("5.3", "20270101", ["MR"], "IRM LOMBAIRE")]
    result = classify(current(), answers, "PT1", "HOSP-A")
    assert [p["study_instance_uid"] for p in result.priors] == ["5.1", "5.2"]
    hint = next(h for h in comparison_hints(result, current()) if h.startswith("Preoperative MRI"))
    assert "20 months after surgery contrast is generally unhelpful" in hint


def test_not_configured_and_missing_patient_id():
    result = find_priors(current(), None, calling_aet="T")
    assert result.status == "not_configured" and result.evidence[0].note.startswith("not_assessed: ")
    study = Study(uid="9.8", attributes={})
    result = find_priors(study, DicomNode("PACS", "127.0.0.1", 9), calling_aet="T", timeout=0.2, attempts=1)
    assert result.status == "unavailable"
    assert result.to_dict()["evidence"][0]["text"] == "priors unavailable: the study has no PatientID"


def test_ttl_cache_expires():
    import time

    cache = TTLCache(ttl=0.05)
    cache.set("k", [1])
    assert cache.get("k") == [1]
    time.sleep(0.06)
    assert cache.get("k") is None


def test_redis_cache_is_keyed_by_a_hash(redis_client):
    pacs = DicomNode("PACS", "127.0.0.1", 104)  # nothing listens there
    key = cache_key(pacs, "PT1", "HOSP-A")
    assert "PT1" not in key and key != cache_key(pacs, "PT1", "HOSP-B")
    RedisCache(redis_client, ttl=30).set(key, [answer("6.1", "20260101", ["MR"], "IRM LOMBAIRE")])
    assert 0 < redis_client.pttl(key) <= 30_000
    # the cached answer serves find_priors (what every worker gets through its `redis` client)
    result = find_priors(current(), pacs, calling_aet="T", redis=redis_client, timeout=0.2, attempts=1)
    assert result.status == "ok" and [p["study_instance_uid"] for p in result.priors] == ["6.1"]

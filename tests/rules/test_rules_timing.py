"""Time since surgery from text and from a surgery record."""

from datetime import datetime

import pytest

from rules.timing import study_datetime, surgery_reading, text_readings

STUDY = datetime(2026, 11, 21, 10, 0)


def hours(text, study=STUDY):
    readings, _ = text_readings([{"value": text, "keyword": "ReasonForTheRequestedProcedure", "tag": "(0040,1002)"}], study)
    return [r.hours for r in readings]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Arthrodèse J+2", [48]),
        ("J2 discectomie", [48]),
        ("J0", [0]),
        ("POD 2", [48]),
        ("POD#3 after TLIF", [72]),
        ("post-op day 4", [96]),
        ("48h post-op", [48]),
        ("opéré hier", [24]),
        ("operated 3 days ago", [72]),
        ("opéré il y a 3 semaines", [504]),
        ("6 months after surgery", [4382.6]),
        ("2 ans après discectomie", [17532]),
        ("opéré le 19/11/2026", [58]),
        ("surgery on 2026-11-19", [58]),
        ("chirurgie le 5 novembre 2026", [394]),
    ],
)
def test_relative_and_dated_readings(text, expected):
    assert hours(text) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("text", ["D12 screw", "vis D2", "pain for 3 months", "L4-L5", "3 mois de lombalgie"])
def test_no_reading_is_invented(text):
    assert hours(text) == []


def test_ambiguous_english_date_gives_both_readings():
    # 3 April or 4 March: both before the study, both kept (the engine keeps the higher priority)
    assert sorted(hours("operated on 03/04/2026")) == pytest.approx([5578, 6298], abs=1)


def test_ambiguous_date_reading_after_the_study_is_dropped():
    # 11/12 = 11 December (after the study) or 12 November: only 12 November
    assert hours("operated on 11/12/2026") == pytest.approx([226], abs=1)


def test_ambiguous_date_both_after_the_study_is_unknown_with_a_note():
    readings, notes = text_readings([{"value": "operated on 11/12/2026", "tag": "(0040,1002)"}], datetime(2026, 11, 1))
    assert readings == [] and "ambiguous" in notes[0]


@pytest.mark.parametrize("text", ["GP: operated on 03/04/2026", "op on 03/04/2026, wound haematoma", "lami 03/04/2026, back to theatre"])
def test_british_usage_reads_day_first(text):
    assert hours(text) == pytest.approx([5578], abs=1)


@pytest.mark.parametrize("text", ["TLIF, CT yesterday shows the cage backed out", "fusion: today's lateral shows the cage more posterior",
                                  "arthrodèse, radio de ce matin: cage reculée", "fusion, posteriorly displaced screw on today's film"])
def test_day_of_an_image_is_not_the_day_of_the_operation(text):
    assert hours(text) == []


@pytest.mark.parametrize("text, expected", [("Surgery 2 weeks ago; leg pain started 3 days ago", [336]),
                                            ("operated 3 weeks ago, pain since 2 days ago", [504]),
                                            ("opérée il y a 3 semaines, douleur apparue il y a 2 jours", [504]),
                                            ("fusion 4 months ago; 3 days ago sudden back pain", [2922])])
def test_onset_of_a_complaint_is_not_the_operation(text, expected):
    assert hours(text) == pytest.approx(expected, abs=1)


def test_a_day_that_owns_the_operation_still_dates_it():
    assert hours("yesterday's surgery: L4-5 TLIF") == pytest.approx([24], abs=1)


def test_french_text_reads_dd_mm():
    assert hours("opéré le 03/11/2026 pour arthrodèse") == pytest.approx([442])


def test_future_surgery_date_is_ignored():
    assert hours("opéré le 25/11/2026") == []


def test_study_datetime_and_surgery_record():
    assert study_datetime({"StudyDate": "20261121", "StudyTime": "101500.123"}) == datetime(2026, 11, 21, 10, 15)
    assert study_datetime({}) is None
    r, note = surgery_reading({"datetime": "2026-11-19T10:00:00", "source": "fluoro"}, STUDY)
    assert r.hours == 48 and note is None
    assert surgery_reading({"datetime": "2026-11-19T10:00:00"}, None)[0] is None
    assert surgery_reading({"datetime": "garbage"}, STUDY)[0] is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fusion two days ago", [48]),
        ("laminectomy a fortnight ago", [336]),
        ("opéré il y a deux jours", [48]),
        ("discectomie il y a une quinzaine de jours", [360]),
        ("three weeks after surgery", [504]),
        ("une semaine après l'arthrodèse", [168]),
        ("decompression 10 days back", [240]),
        ("fusion a couple of weeks ago", [336]),
    ],
)
def test_times_written_in_words(text, expected):
    assert hours(text) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("text", ["three weeks after the accident", "leg pain since two days", "pain for a few days"])
def test_word_times_that_do_not_date_the_operation(text):
    assert hours(text) == []


def test_weekday_and_day_of_month_next_to_the_operation():
    assert hours("L4-5 fusion Tuesday") == pytest.approx([96], abs=1)  # the study is a Saturday
    assert hours("microdiscectomy on the 18th") == pytest.approx([82], abs=1)
    assert hours("discectomy, pain since Tuesday") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("arthrodèse S+2", [336]),
        ("discectomie, contrôle à M3", [2191.7]),
        ("fusion, 6-week follow-up", [1008]),
        ("post-op week 2, fusion", [192]),
        ("second post-op day after decompression", [48]),
        ("premier jour post-opératoire, discectomie", [24]),
        ("D3 post-op TLIF", [72]),
        ("TLIF 11/11, new pain", [250]),
        ("op le 15, arthrodese", [154]),
    ],
)
def test_follow_up_notations_and_dates_after_a_procedure(text, expected):
    assert hours(text) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("text", ["TLIF 4/5, new pain", "fusion D12-L2, D12 post fracture", "discectomy, power 4/5"])
def test_levels_and_grades_are_not_dates(text):
    assert hours(text) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Fusion November 5, 2026, pain", [394]),
        ("Fusion 5-Nov-2026, pain", [394]),
        ("Laminectomy 2-3 weeks ago", [336]),
        ("Laminectomie il y a environ 10 jours", [240]),
        ("Laminectomie, 10e jour post-op", [240]),
        ("Laminectomy in September", [1234]),
        ("Laminectomie mi-octobre", [490]),
    ],
)
def test_more_date_forms(text, expected):
    assert hours(text) == pytest.approx(expected, abs=12)


@pytest.mark.parametrize("text", ["Pain since September, fusion", "Fusion in November, pain", "Discectomy in may be relevant"])
def test_month_alone_that_does_not_date_the_operation(text):
    assert hours(text) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("TLIF on Tues, new leg pain", [96]),
        ("TLIF Wed, new leg pain", [72]),
        ("Discectomy 1w ago", [168]),
        ("Arthrodèse il y a un an", [8766]),
        ("Arthrodèse datant de 2 ans", [17532]),
    ],
)
def test_weekday_abbreviations_and_more_french_forms(text, expected):
    assert hours(text) == pytest.approx(expected, abs=12)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Arthrodèse le 10/11/2026, sciatique depuis le 14/11", [274]),
        ("Discectomy 10 Nov, pain since 14 Nov", [274]),
        ("Discectomy Nov 10th; pain from Nov 14th", [274]),
        ("Discectomie le 10 novembre, douleurs depuis le 14 novembre", [274]),
    ],
)
def test_a_complaints_date_is_not_the_operations(text, expected):
    assert hours(text) == pytest.approx(expected, abs=1)

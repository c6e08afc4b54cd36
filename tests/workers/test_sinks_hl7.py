"""HL7 v2 sink against an MLLP server from python-hl7 (`hl7.mllp`), on loopback."""

from __future__ import annotations

import hl7
import pytest

from core.config import Config
from peers import free_port
from sink_peers import STAT_FLAG, URGENT_FLAG, MllpServer, sample_entry
from workers.sinks import SinkError
from workers.sinks import hl7 as hl7_sink


@pytest.fixture
def ris():
    server = MllpServer().start()
    yield server
    server.stop()


@pytest.fixture
def config():
    cfg = Config()
    cfg.hl7_timeout = 2
    return cfg


def test_stat_order_update_content(ris, config):
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG, URGENT_FLAG], revision=2)
    receipt = hl7_sink.push(entry, ris.address, config)
    assert "AA" in receipt
    assert len(ris.messages) == 1
    msg = hl7.parse(str(ris.messages[0]))  # what went over the wire, parsed again
    assert str(msg["MSH.9.1.1"]) == "ORM" and str(msg["MSH.9.1.2"]) == "O01"
    assert msg["MSH.10"] == hl7_sink.control_id(entry) and len(msg["MSH.10"]) <= 20
    assert msg["MSH.12"] == "2.5.1"
    assert msg["PID.3.1.1"] == "PT-0001" and msg["PID.3.1.4"] == "HOSP"
    assert msg["PID.5.1.1"] == "TEST" and msg["PID.5.1.2"] == "PATIENT"
    assert msg["ORC.1"] == "XO"
    assert msg["ORC.2"] == "ACC2026001" and msg["ORC.3"] == "ACC2026001"
    assert msg["ORC.7.1.6"] == "S"
    assert msg["TQ1.9"] == "S"
    assert msg["OBR.2"] == "ACC2026001" and msg["OBR.3"] == "ACC2026001"
    assert msg["OBR.5"] == "S" and msg["OBR.27.1.6"] == "S"
    notes = [str(seg(3)) for seg in msg.segments("NTE")]
    assert any("Suspected epidural_haematoma" in n and "early.ces.haematoma" in n for n in notes)
    assert any("Suspected surgical_site_infection" in n for n in notes)
    assert not any("TEST" in n or "PT-0001" in n for n in notes)
    order = [str(seg(0)) for seg in msg]
    assert order[:5] == ["MSH", "PID", "ORC", "TQ1", "OBR"] and set(order[5:]) == {"NTE"}


@pytest.mark.parametrize("ours,code", [("STAT", "S"), ("URGENT", "A")])
def test_priority_codes(ris, config, ours, code):
    hl7_sink.push(sample_entry(priority=ours), ris.address, config)
    msg = ris.messages[-1]
    assert msg["ORC.1"] == "XO"
    assert msg["ORC.7.1.6"] == code and msg["TQ1.9"] == code


def test_routine_on_a_routine_order_is_notes_only(ris, config):
    """ROUTINE never raises anything: no XO, no priority field (the order floor, issue 12)."""
    receipt = hl7_sink.push(sample_entry(priority="ROUTINE"), ris.address, config)
    msg = ris.messages[-1]
    assert "notes only" in receipt
    assert msg["ORC.1"] == "SC"
    orc, obr = str(msg.segment("ORC")).split("|"), str(msg.segment("OBR")).split("|")
    assert (orc + [""] * 8)[7] == "" and (obr + [""] * 28)[5] == "" and (obr + [""] * 28)[27] == ""
    assert not list(_segments(msg, "TQ1"))


def _segments(msg, name):
    try:
        return msg.segments(name)
    except KeyError:
        return []


def test_control_id_is_per_study_and_revision():
    a = hl7_sink.control_id(sample_entry())
    assert a == hl7_sink.control_id(sample_entry())
    assert a != hl7_sink.control_id(sample_entry(revision=2))
    assert a != hl7_sink.control_id(sample_entry(study_instance_uid="1.2.3"))
    # a retry sends the very same message
    assert str(hl7_sink.build_message(sample_entry())) == str(hl7_sink.build_message(sample_entry()))


def test_separators_in_values_are_escaped(ris, config):
    hl7_sink.push(sample_entry(accession_number="A|1^2"), ris.address, config)
    assert ris.messages[0]["ORC.2"] == "A|1^2"


def test_application_error_is_retryable_then_accepted_once(ris, config):
    ris.answers = ["AE"]
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG])
    with pytest.raises(SinkError) as err:
        hl7_sink.push(entry, ris.address, config)
    assert err.value.retryable and "AE" in str(err.value)
    assert "AA" in hl7_sink.push(entry, ris.address, config)
    ids = [m["MSH.10"] for m in ris.messages]
    assert len(ids) == 2 and ids[0] == ids[1]  # the same message, the RIS can drop a duplicate


def test_application_reject_is_not_retryable(ris, config):
    ris.default = "AR"
    with pytest.raises(SinkError) as err:
        hl7_sink.push(sample_entry(), ris.address, config)
    assert not err.value.retryable
    config.hl7_retry_on_reject = True
    with pytest.raises(SinkError) as err:
        hl7_sink.push(sample_entry(), ris.address, config)
    assert err.value.retryable


def test_no_answer_times_out_retryable(config):
    ris = MllpServer(default=None).start()
    config.hl7_timeout = 0.5
    try:
        with pytest.raises(SinkError) as err:
            hl7_sink.push(sample_entry(), ris.address, config)
        assert err.value.retryable
        assert len(ris.messages) == 1
    finally:
        ris.stop()


def test_server_down_is_retryable_then_delivered_once(config):
    port = free_port()
    with pytest.raises(SinkError) as err:
        hl7_sink.push(sample_entry(priority="STAT"), f"127.0.0.1:{port}", config)
    assert err.value.retryable
    ris = MllpServer()
    ris.port = port
    ris.start()
    try:
        assert "AA" in hl7_sink.push(sample_entry(priority="STAT"), ris.address, config)
        assert len(ris.messages) == 1
    finally:
        ris.stop()


def test_bad_destination_and_missing_accession_are_not_retryable(config):
    with pytest.raises(SinkError) as err:
        hl7_sink.push(sample_entry(), "no-port", config)
    assert not err.value.retryable
    with pytest.raises(SinkError) as err:
        hl7_sink.push(sample_entry(accession_number="", headers={}), "127.0.0.1:1", config)
    assert not err.value.retryable


def test_text_is_utf8_with_hl7_escapes_and_line_breaks(ris, config):
    entry = sample_entry(study_description="Arthrodèse L4|L5\nscanner & IRM ~ contrôle\\J2")
    entry["headers"] = dict(entry["headers"], PatientName="NOËL^Zoé")
    raw = str(hl7_sink.build_message(entry, config))
    assert "Arthrodèse L4\\F\\L5\\.br\\scanner \\T\\ IRM \\R\\ contrôle\\E\\J2" in raw
    assert "NOËL^Zoé" in raw and "\\X" not in raw, "UTF-8 as MSH-18 declares, not Latin-1 hex escapes"
    assert "\n" not in raw.replace("\r", "")
    hl7_sink.push(entry, ris.address, config)
    assert ris.messages[0]["PID.5.1"] == "NOËL"

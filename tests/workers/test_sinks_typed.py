"""Sinks take the typed WorklistEntry; its JSON form (as the worklist stores it) is read and
checked the same way, and an entry off the schema is refused for good, never retried."""

from __future__ import annotations

import json

import pytest

from core.config import Config
from core.entry import WorklistEntry
from sink_peers import STAT_FLAG, HttpServer, sample_entry
from workers.sinks import SinkError, dicom, hl7, ups, webhook
from workers.sr import build_sr


def test_a_typed_entry_and_its_json_form_give_the_same_delivery():
    data = sample_entry(priority="STAT", flags=[STAT_FLAG], revision=2)
    entry = WorklistEntry.from_dict(data)
    hook = HttpServer().start()
    try:
        webhook.push(entry, hook.url, Config())
        webhook.push(data, hook.url, Config())
    finally:
        hook.stop()
    typed, plain = hook.requests
    assert typed["body"] == plain["body"] and json.loads(typed["body"]) == data
    assert typed["headers"]["Idempotency-Key"] == plain["headers"]["Idempotency-Key"]
    assert build_sr(entry).SOPInstanceUID == build_sr(data).SOPInstanceUID
    assert ups.build_workitem(entry).ScheduledProcedureStepPriority == "HIGH"
    assert ups.comments(entry) == ups.comments(data)


@pytest.mark.parametrize("sink, destination", [
    (webhook, "http://127.0.0.1:9/hook"), (hl7, "127.0.0.1:9"), (ups, "UPS@127.0.0.1:9"), (dicom, None),
])
def test_an_entry_off_the_schema_is_refused_without_retry(sink, destination):
    off = dict(sample_entry(), priority="HIGHEST")
    with pytest.raises(SinkError) as raised:
        sink.push(off, destination, Config())
    assert raised.value.retryable is False
    with pytest.raises(SinkError) as raised:
        sink.push(dict(sample_entry(), surprise=1), destination, Config())
    assert raised.value.retryable is False

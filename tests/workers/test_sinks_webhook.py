"""Webhook sink against a local HTTP server (http.server in a thread)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from core.config import Config
from peers import free_port
from sink_peers import STAT_FLAG, HttpServer, sample_entry
from workers.sinks import SinkError, webhook


@pytest.fixture
def hook():
    server = HttpServer().start()
    yield server
    server.stop()


def test_body_is_the_entry_and_signature_verifies(hook):
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG], revision=3)
    receipt = webhook.push(entry, hook.url, Config(webhook_secret="s3cret"))
    assert "200" in receipt
    [req] = hook.requests
    assert json.loads(req["body"]) == entry
    assert req["headers"]["Content-Type"].startswith("application/json")
    assert req["headers"]["Idempotency-Key"] == f"{entry['study_instance_uid']}:3"
    expected = "sha256=" + hmac.new(b"s3cret", req["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req["headers"]["X-Pacs-Triage-Signature"], expected)
    wrong = "sha256=" + hmac.new(b"other", req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Pacs-Triage-Signature"] != wrong


def test_no_signature_without_secret(hook):
    webhook.push(sample_entry(), hook.url, Config())
    assert "X-Pacs-Triage-Signature" not in hook.requests[0]["headers"]


def test_503_is_retryable_and_delivered_once_when_back(hook):
    hook.fail(2, 503)
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG])
    outcomes = []
    for _ in range(5):  # what the sink actor's retries do
        try:
            outcomes.append(webhook.push(entry, hook.url, Config()))
            break
        except SinkError as exc:
            assert exc.retryable
            outcomes.append(exc)
    assert len(outcomes) == 3 and isinstance(outcomes[-1], str)
    assert [r["status"] for r in hook.requests] == [503, 503, 200]
    assert len(hook.delivered()) == 1
    assert len({r["headers"]["Idempotency-Key"] for r in hook.requests}) == 1
    assert len({r["body"] for r in hook.requests}) == 1


@pytest.mark.parametrize("code,retryable", [(400, False), (404, False), (429, True), (500, True), (301, False)])
def test_status_codes(hook, code, retryable):
    hook.status = code
    with pytest.raises(SinkError) as err:
        webhook.push(sample_entry(), hook.url, Config())
    assert err.value.retryable is retryable
    assert len(hook.requests) == 1  # a redirect is not followed


def test_server_down_is_retryable():
    with pytest.raises(SinkError) as err:
        webhook.push(sample_entry(), f"http://127.0.0.1:{free_port()}/hook", Config())
    assert err.value.retryable


def test_not_http_is_not_retryable():
    with pytest.raises(SinkError) as err:
        webhook.push(sample_entry(), "ftp://127.0.0.1/hook", Config())
    assert not err.value.retryable


def test_receipt_and_errors_hide_url_secrets(hook):
    url = hook.url + "?token=abc"
    assert "abc" not in webhook.push(sample_entry(), url, Config())
    assert hook.requests[0]["path"] == "/hook?token=abc"
    hook.status = 400
    with pytest.raises(SinkError) as err:
        webhook.push(sample_entry(), url, Config())
    assert "abc" not in str(err.value)
    assert webhook._redact("https://user:pw@example.org:8443/h?t=1#x") == "https://example.org:8443/h"

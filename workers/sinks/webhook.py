"""Webhook sink: the worklist entry as JSON in an HTTP POST.

Headers: ``Idempotency-Key`` (study UID and revision, the same on every retry)
and, when ``config.webhook_secret`` is set, ``X-Pacs-Triage-Signature:
sha256=<hex>``, the HMAC-SHA256 of the exact body bytes.

2xx -> receipt; 408, 425, 429, 5xx and network errors -> retryable SinkError;
other 4xx and redirects (never followed: a POST must not turn into a GET)
-> not retryable. Timeout: ``config.webhook_timeout`` (default 10 s).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

from core.entry import EntryError, WorklistEntry
from workers.sinks import SinkError

TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Pacs-Triage-Signature"
RETRYABLE_4XX = (408, 425, 429)


def body(entry: WorklistEntry | dict) -> bytes:
    """The JSON body (the entry's JSON form): the same bytes for the same entry."""
    data = WorklistEntry.coerce(entry).to_dict()
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature(data: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def idempotency_key(entry: WorklistEntry | dict) -> str:
    entry = WorklistEntry.coerce(entry)
    return f"{entry.study_instance_uid}:{1 if entry.revision is None else entry.revision}"


def push(entry: WorklistEntry | dict, destination, config) -> str:
    """POST the entry to the URL `destination`; return a receipt."""
    url = str(destination)
    shown = _redact(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise SinkError(f"webhook {shown}: not an http(s) URL", retryable=False)
    try:
        entry = WorklistEntry.coerce(entry)
    except EntryError as exc:
        raise SinkError(f"webhook {shown}: {exc}", retryable=False) from None
    data = body(entry)
    headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": idempotency_key(entry),
               "User-Agent": "pacs-triage"}
    secret = getattr(config, "webhook_secret", None)
    if secret:
        headers[SIGNATURE_HEADER] = signature(data, secret)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    timeout = float(getattr(config, "webhook_timeout", None) or TIMEOUT)
    try:
        with _opener().open(request, timeout=timeout) as response:
            response.read()
            return f"webhook {shown}: {response.status}"
    except urllib.error.HTTPError as exc:
        code = exc.code
        exc.close()
        retryable = code >= 500 or code in RETRYABLE_4XX
        raise SinkError(f"webhook {shown}: HTTP {code}", retryable=retryable) from None
    except urllib.error.URLError as exc:
        retryable = not isinstance(exc.reason, ssl.SSLCertVerificationError)
        raise SinkError(f"webhook {shown}: {exc.reason.__class__.__name__}", retryable=retryable) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
        raise SinkError(f"webhook {shown}: {exc.__class__.__name__}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx becomes an HTTPError


def _opener():
    return urllib.request.build_opener(_NoRedirect)


def _redact(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))

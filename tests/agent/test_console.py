"""The console over HTTP (no browser): access rules, CSRF, live event stream, audit; the user file.

A real Redis and the real HTTP server; requests with urllib (cookies by hand)."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse

import pytest

from agent.console import Console, auth, highlight
from agent.http import HttpServer
from core import audit
from core.audit import AuditTrail
from core.config import Config
from sink_peers import STAT_FLAG, sample_entry
from workers.worklist import Worklist

PASSWORD = "s3cret-enough"


@pytest.fixture
def console(redis_client, tmp_path):
    users = tmp_path / "users"
    auth.add_user(users, "bob", PASSWORD)
    cfg = Config(data_dir=tmp_path / "data", console_users=users, console_poll_interval=0.1,
                 webhook=["http://127.0.0.1:9/hook"])
    c = Console(cfg, redis_client, audit=AuditTrail(tmp_path / "data"))
    server = HttpServer("127.0.0.1", 0, console=c)
    server.start()
    yield server, redis_client, tmp_path
    server.stop()


def request(server, method, path, body=None, cookies=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    h = dict(headers or {})
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if body is not None:
        body = urllib.parse.urlencode(body)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read().decode()
    set_cookies = {}
    for k, v in r.getheaders():
        if k.lower() == "set-cookie":
            name, value = v.split(";", 1)[0].split("=", 1)
            set_cookies[name] = (value, v)
    conn.close()
    return r.status, dict(r.getheaders()), data, set_cookies


def login(server, password=PASSWORD):
    _, _, page, cookies = request(server, "GET", "/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, headers, _, set_cookies = request(server, "POST", "/console/login",
                                              {"csrf": token, "user": "bob", "password": password, "next": "/console/"},
                                              cookies={auth.LOGIN_CSRF_COOKIE: cookies[auth.LOGIN_CSRF_COOKIE][0]})
    return status, headers, set_cookies


def test_password_hashes_are_salted_scrypt_and_verified():
    a, b = auth.hash_password("pw-123456"), auth.hash_password("pw-123456")
    assert a != b and a.startswith("scrypt$") and "pw-123456" not in a
    assert auth.verify_password("pw-123456", a) and not auth.verify_password("pw-1234567", a)
    assert not auth.verify_password("x", "garbage")


def test_anonymous_sees_uids_priorities_and_flags_only_and_login_shows_identifiers(console):
    server, r, tmp = console
    entry = sample_entry(priority="STAT", flags=[STAT_FLAG])
    Worklist(r).save(entry)
    time.sleep(0.4)  # one poll
    status, headers, page, _ = request(server, "GET", "/console/")
    assert status == 200 and entry["study_instance_uid"] in page and "STAT" in page and STAT_FLAG["code"] in page
    assert "ACC2026001" not in page and "TEST^PATIENT" not in page
    assert "script-src 'self'" in headers["content-security-policy"]
    _, _, study, _ = request(server, "GET", f"/console/study/{entry['study_instance_uid']}")
    assert STAT_FLAG["code"] in study and "TEST^PATIENT" not in study and "PT-0001" not in study
    assert request(server, "GET", "/console/operator")[0] == 303  # to the login page

    status, headers, cookies = login(server)
    assert status == 303 and headers["location"] == "/console/"
    value, raw = cookies[auth.COOKIE]
    assert "HttpOnly" in raw and "Secure" in raw and "SameSite=strict" in raw.replace("Strict", "strict")
    session = {auth.COOKIE: value}
    _, _, page, _ = request(server, "GET", "/console/", cookies=session)
    assert "ACC2026001" in page and "webhook" in page
    _, _, study, _ = request(server, "GET", f"/console/study/{entry['study_instance_uid']}", cookies=session)
    assert "TEST^PATIENT" in study
    assert login(server, password="wrong-password")[1]["location"].startswith("/console/login?error=1")
    events = [rec for rec in audit.export(tmp / "data") if rec["event"].startswith("console")]
    assert {"worklist", "study", "operator"} <= {e.get("view") for e in events}
    assert any(e["event"] == "console_login" and e.get("status") == "refused" for e in events)
    assert not any("TEST^PATIENT" in str(e) or "ACC2026001" in str(e) for e in events)


def test_every_post_needs_the_session_csrf_token(console, redis_client):
    server, r, _ = console
    # Login without the login CSRF cookie: refused.
    assert request(server, "POST", "/console/login", {"csrf": "x", "user": "bob", "password": PASSWORD})[0] == 403
    _, _, cookies = login(server)
    session = {auth.COOKIE: cookies[auth.COOKIE][0]}
    r.hset("pt:deadletters", "webhook|http://127.0.0.1:9/hook|1.2.3", '{"kind": "webhook", '
           '"destination": "http://127.0.0.1:9/hook", "study_instance_uid": "1.2.3", "error": "e", '
           '"attempts": 1, "failed_at": 1}')
    key = "webhook|http://127.0.0.1:9/hook|1.2.3"
    assert request(server, "POST", "/console/operator/replay", {"key": key}, cookies=session)[0] == 403
    assert request(server, "POST", "/console/operator/replay", {"key": key, "csrf": "forged"}, cookies=session)[0] == 403
    assert request(server, "POST", "/console/logout", {}, cookies=session)[0] == 403
    assert r.hget("pt:deadletters", key), "nothing was replayed"
    _, _, page, _ = request(server, "GET", "/console/operator", cookies=session)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, headers, _, _ = request(server, "POST", "/console/operator/replay", {"key": key, "csrf": token},
                                    cookies=session)
    assert status == 303 and "replayed" in headers["location"] and not r.hget("pt:deadletters", key)


def test_event_stream_announces_a_change_within_two_seconds(console):
    server, r, _ = console
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/console/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    seen: list[str] = []

    def read():
        while True:
            line = resp.fp.readline().decode()
            if not line:
                return
            seen.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 5
    while not any(s.startswith("event: worklist") for s in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    first = sum(s.startswith("event: worklist") for s in seen)
    assert first == 1
    started = time.monotonic()
    Worklist(r).save(sample_entry(priority="URGENT"))
    while sum(s.startswith("event: worklist") for s in seen) == first and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert time.monotonic() - started < 2.0, "the change was announced within 2 s"
    # The stream holds no request slot: /healthz still answers with max_clients requests' worth of streams open.
    assert request(server, "GET", "/healthz")[0] == 200
    conn.sock.shutdown(socket.SHUT_RDWR)  # (close() would wait for the reader thread's readline)


def test_highlight_escapes_the_text_and_marks_the_spans():
    text = "a <b> déficit L5, pas de fièvre"
    d, f = text.index("déficit"), text.index("fièvre")
    html = str(highlight(text, [{"start": d, "end": d + 10, "assertion": "affirmed", "rules": ["r1"]},
                                {"start": f, "end": f + 6, "assertion": "negated", "rules": []}]))
    assert "&lt;b&gt;" in html and '<mark class="affirmed"' in html and ">déficit L5</mark>" in html
    assert '<mark class="negated"' in html and ">fièvre</mark>" in html


def test_operator_view_lists_quarantine_reasons_without_the_detail(redis_client, tmp_path):
    from agent.store import StudyStore

    users = tmp_path / "users"
    auth.add_user(users, "bob", PASSWORD)
    store = StudyStore(tmp_path / "data", fsync=False)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom")
    store.quarantine(bad, "unparseable", "PatientName=SECRET^NAME")
    c = Console(Config(data_dir=tmp_path / "data", console_users=users), redis_client, store=store,
                status=lambda: {"rulebook_version": "sha256:abc", "last_reload": {"at": 1.0, "result": "failed, kept x"}})
    server = HttpServer("127.0.0.1", 0, console=c)
    server.start()
    try:
        _, _, cookies = login(server)
        _, _, page, _ = request(server, "GET", "/console/operator", cookies={auth.COOKIE: cookies[auth.COOKIE][0]})
        assert "unparseable" in page and "SECRET" not in page
        assert "sha256:abc" in page and "failed, kept x" in page
    finally:
        server.stop()

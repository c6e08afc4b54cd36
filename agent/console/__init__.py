"""The triage console: the live worklist, each study's evidence and key image, and the
operator's view (deliveries, dead letters, quarantine, rulebook), served under /console by
agent.http.HttpServer.

Live updates: while at least one page holds the server-sent event stream (/console/events)
open, one background thread reads the worklist and the delivery state from Redis every
`console_poll_interval` seconds into a snapshot; when the snapshot changes, every open page
is told and fetches the new rows. Redis load does not grow with the number of open pages.
With no page open the thread sleeps (nothing wakes an idle server); a page or rows request
then reads the worklist itself if the snapshot is older than `console_poll_interval`.

Access: without a session (anonymous, read-only, `console_anonymous`) a page shows study
UIDs, priorities and flags only; patient identifiers, free text, images and the operator
view need a login (agent.console.auth). Every page view and action is audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent.console.auth import COOKIE, LOGIN_CSRF_COOKIE, Session, Sessions
from core import keys
from core.audit import AuditTrail
from core.entry import PRIORITIES

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SINK_KINDS = ("pacs", "ups", "hl7", "webhook")  # config attribute = kind (workers.actors.SINKS)
MAX_STREAMS = 32


def sinks_of(cfg) -> list[tuple[str, str]]:
    return [(kind, str(dest)) for kind in SINK_KINDS for dest in (getattr(cfg, kind, None) or [])]


def shown(kind: str, destination: str) -> str:
    if kind == "webhook":
        from workers.sinks.webhook import _redact

        return _redact(destination)
    return destination


def highlight(value: str, spans: list[dict]) -> Markup:
    """The text with each evidence span marked (<mark class="affirmed|negated|uncertain">)."""
    spans = sorted((s for s in spans if 0 <= s["start"] < s["end"] <= len(value)), key=lambda s: (s["start"], -s["end"]))
    out, pos = [], 0
    for s in spans:
        if s["start"] < pos:
            continue  # overlapping: the first (longest) wins
        out.append(escape(value[pos:s["start"]]))
        why = [s["assertion"], *s.get("extra", [])]
        title = ", ".join(why) + (f"; concepts {', '.join(s['concepts'])}" if s.get("concepts") else "") + \
            (f"; rules {', '.join(s['rules'])}" if s["rules"] else "; raised no flag")
        cls = " ".join([s["assertion"], *(["flagged"] if s.get("flagged") else []), *[w.replace(" ", "-") for w in s.get("extra", [])]])
        out.append(Markup('<mark class="{}" title="{}">{}</mark>').format(cls, title, value[s["start"]:s["end"]]))
        pos = s["end"]
    out.append(escape(value[pos:]))
    return Markup("").join(out)


def locate(value: str, ev: dict) -> tuple[int, int] | None:
    """The evidence's span in the field's text: its offsets if they match, else the first match of its words."""
    text, start, end = ev.get("text"), ev.get("start"), ev.get("end")
    if not text:
        return None
    if isinstance(start, int) and isinstance(end, int) and value[start:end].casefold() == text.casefold():
        return start, end
    i = value.casefold().find(text.casefold())
    return (i, i + len(text)) if i >= 0 else None


class Console:
    def __init__(self, cfg, redis_client, *, store=None, rulebook=None, status: Callable[[], dict] | None = None,
                 replay: Callable[[dict], None] | None = None, audit: AuditTrail | None = None):
        self.cfg = cfg
        self.audit = audit if audit is not None else AuditTrail.from_config(cfg)  # the process's trail
        self.redis = redis_client
        self.store = store
        self.rulebook = rulebook
        self.status = status or (lambda: {})
        self.replay_fn = replay
        self.sessions = Sessions(getattr(cfg, "console_users", None),
                                 lifetime_s=float(getattr(cfg, "console_session_hours", 8.0)) * 3600)
        self.secure_cookie = bool(getattr(cfg, "console_secure_cookie", True))
        self.anonymous = bool(getattr(cfg, "console_anonymous", True))
        self.poll = float(getattr(cfg, "console_poll_interval", 0.5))
        self.cache_dir = Path(cfg.data_dir) / "console" / "keyimages"
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape())
        self.env.filters["hours"] = _hours
        self.env.filters["epoch"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "—"
        self.rows: list[dict] = []
        self.version = 0
        self._digest = ""
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._watched = threading.Event()  # set while an event stream is open (or to stop)
        self._read_at = 0.0
        self._read_lock = threading.Lock()
        self.streams = 0
        self._keyimage_lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/", self.worklist_page),
            Route("/rows", self.rows_fragment),
            Route("/events", self.events),
            Route("/study/{uid}", self.study_page),
            Route("/study/{uid}/key.png", self.key_image),
            Route("/operator", self.operator_page),
            Route("/operator/replay", self.replay, methods=["POST"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ])
        self.thread = threading.Thread(target=self._poll_loop, name="console-poll", daemon=True)
        try:
            self.refresh()
        except Exception as exc:  # Redis away at start: the poll loop catches up
            log.warning("console: worklist not read at start: %s", type(exc).__name__)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._watched.set()

    def fresh(self) -> None:
        """Nobody holds the event stream (so the poll thread sleeps): read the worklist now if
        the snapshot is older than the poll interval; Redis away: the last snapshot is shown."""
        if self.streams > 0 or time.monotonic() - self._read_at < self.poll:
            return
        with self._read_lock:
            if time.monotonic() - self._read_at < self.poll:
                return
            try:
                self.refresh()
            except Exception as exc:
                log.warning("console refresh failed (the console shows the last worklist read): %s",
                            type(exc).__name__)

    # --- the snapshot
    def refresh(self) -> bool:
        """Read the worklist and delivery state once; True if it changed."""
        from workers.worklist import Worklist

        entries = Worklist(self.redis).entries(200, wait_cap_minutes=getattr(self.cfg, "routine_wait_cap_minutes", None))
        sinks = sinks_of(self.cfg)
        fields = [f"{k}|{d}|{e['study_instance_uid']}" for e in entries for k, d in sinks]
        delivered = self.redis.hmget(keys.DELIVERED, fields) if fields else []
        dead = self.redis.hmget(keys.DEAD_LETTERS, fields) if fields else []
        rows, i = [], 0
        for e in entries:
            states = []
            for kind, dest in sinks:
                rev = int(delivered[i]) if delivered[i] else 0
                state = ("dead" if dead[i] else "delivered" if rev and rev >= (e.get("revision") or 0)
                         else "outdated" if rev else "pending")
                states.append({"sink": f"{kind} {shown(kind, dest)}", "state": state, "revision": rev})
                i += 1
            rows.append({
                "uid": e["study_instance_uid"], "priority": e["priority"], "order_priority": e.get("order_priority"),
                "flags": sorted({f["code"] for f in e.get("flags") or []}),
                "flag_priorities": {f["code"]: f["priority"] for f in e.get("flags") or []},
                "accession": e.get("accession_number"), "modalities": e.get("modalities") or [],
                "postop_hours": e.get("postop_interval_hours"), "course": e.get("course"),
                "since": e.get("last_received") or e.get("triaged_at"),
                "lifted": e.get("lifted_by_wait", False), "failed": bool(e.get("triage_failed")),
                "revision": e.get("revision"), "deliveries": states,
            })
        self._read_at = time.monotonic()
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
        if digest == self._digest:
            return False
        with self._changed:
            self.rows, self._digest = rows, digest
            self.version += 1
            self._changed.notify_all()
        return True

    def _poll_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            if self.streams <= 0:
                self._watched.clear()
                if self.streams <= 0:  # re-checked: a stream opened between the test and the clear
                    self._watched.wait()
                continue
            if self._stop.wait(self.poll):
                break
            try:
                self.refresh()
                if failing:
                    log.info("console: worklist readable again")
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not twice a second
                    log.warning("console refresh failed (the console shows the last worklist read): %s",
                                type(exc).__name__)
                failing = True

    # --- access
    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _audit(self, view: str, s: Session | None, study: str | None = None, action: str | None = None,
               status: str | None = None) -> None:
        self.audit.record("console_action" if action else "console_view", view=view,
                          user=s.user if s else "anonymous", study=study, action=action, status=status)

    def render(self, request: Request, template: str, s: Session | None, status: int = 200, **ctx) -> HTMLResponse:
        html = self.env.get_template(template).render(
            user=s.user if s else None, csrf=s.csrf if s else "", anonymous_allowed=self.anonymous,
            priorities=PRIORITIES, now=time.time(), **ctx)
        resp = HTMLResponse(html, status_code=status)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                   "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    def _need_login(self, request: Request, view: str) -> Response:
        self._audit(view, None, status="refused")
        return RedirectResponse(f"/console/login?next={request.url.path}", 303)

    def _check_csrf(self, s: Session | None, form) -> bool:
        return s is not None and secrets.compare_digest(str(form.get("csrf") or ""), s.csrf)

    # --- worklist
    def _filtered(self, request: Request) -> tuple[list[dict], dict]:
        prio = request.query_params.get("priority") or ""
        flag = request.query_params.get("flag") or ""
        rows = [r for r in self.rows if (not prio or r["priority"] == prio) and (not flag or flag in r["flags"])]
        return rows, {"priority": prio, "flag": flag}

    def worklist_page(self, request: Request) -> Response:
        s = self.session(request)
        if s is None and not self.anonymous:
            return self._need_login(request, "worklist")
        self.fresh()
        rows, filt = self._filtered(request)
        flags = sorted({f for r in self.rows for f in r["flags"]})
        self._audit("worklist", s)
        return self.render(request, "worklist.html", s, rows=rows, filt=filt, all_flags=flags, version=self.version,
                           sinks=[f"{k} {shown(k, d)}" for k, d in sinks_of(self.cfg)])

    def rows_fragment(self, request: Request) -> Response:
        s = self.session(request)
        if s is None and not self.anonymous:
            return PlainTextResponse("login needed\n", 401)
        self.fresh()
        rows, filt = self._filtered(request)
        resp = self.render(request, "rows.html", s, rows=rows, filt=filt,
                           sinks=[f"{k} {shown(k, d)}" for k, d in sinks_of(self.cfg)])
        resp.headers["X-Worklist-Version"] = str(self.version)
        return resp

    async def events(self, request: Request) -> Response:
        s = self.session(request)
        if s is None and not self.anonymous:
            return PlainTextResponse("login needed\n", 401)
        if self.streams >= MAX_STREAMS:
            return Response(status_code=503, headers={"Retry-After": "5"})

        await asyncio.to_thread(self.fresh)  # the snapshot may have slept: current before the first event

        async def stream():
            self.streams += 1
            self._watched.set()  # the poll thread reads the worklist while a page listens
            try:
                seen = -1
                quiet = 0.0
                yield "retry: 1000\n\n"
                while not self._stop.is_set():
                    if await request.is_disconnected():
                        break
                    if self.version != seen:
                        seen = self.version
                        quiet = 0.0
                        yield f"event: worklist\ndata: {seen}\n\n"
                    elif quiet >= 15:
                        quiet = 0.0
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(0.2)
                    quiet += 0.2
            finally:
                self.streams -= 1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- study
    def _entry(self, uid: str) -> dict | None:
        from workers.worklist import Worklist

        return Worklist(self.redis).get(uid)

    def _study(self, uid: str):
        from core.index import StudyIndex

        try:
            return StudyIndex(self.redis).load(uid)
        except Exception as exc:
            log.warning("console: study not loaded: %s", type(exc).__name__)
            return None

    def study_page(self, request: Request) -> Response:
        s = self.session(request)
        if s is None and not self.anonymous:
            return self._need_login(request, "study")
        uid = request.path_params["uid"]
        entry = self._entry(uid)
        self._audit("study", s, study=uid, status="found" if entry else "missing")
        if entry is None:
            return self.render(request, "missing.html", s, uid=uid, status=404)
        ctx: dict[str, Any] = {"e": entry, "flags": entry.get("flags") or []}
        if s is not None:
            ctx.update(self._evidence(entry))
        from workers.keyimage import worst_screw

        ctx["key"] = worst_screw(entry)
        return self.render(request, "study.html", s, **ctx)

    def _evidence(self, entry: dict) -> dict:
        """Text fields with their evidence spans, rule references, analyser measurements."""
        study = self._study(entry["study_instance_uid"])
        rb = self.rulebook.get() if self.rulebook is not None else None
        fields = []
        for t in (study.text_fields if study else []):
            source = f"{t['tag']} {t['keyword']}"
            spans = {}
            # Every lexicon mention, with its assertion (negated and uncertain ones raise no flag but are shown).
            try:
                mentions = rb.matcher.mentions(t) if rb is not None else []
            except Exception as exc:
                log.warning("console: mentions not read: %s", type(exc).__name__)
                mentions = []
            for mt in mentions:
                if 0 <= mt.start < mt.end <= len(t["value"]):
                    extra = [w for w, on in (("history", mt.history), ("hypothetical", mt.hypothetical),
                                             ("other person", mt.experiencer != "patient")) if on]
                    spans[(mt.start, mt.end)] = {"start": mt.start, "end": mt.end, "rules": [],
                                                 "assertion": mt.assertion, "concepts": sorted(mt.concepts),
                                                 "extra": extra}
            for f in entry.get("flags") or []:
                for ev in f.get("evidence") or []:
                    if ev.get("source") != source:
                        continue
                    at = locate(t["value"], ev)
                    if at is None:
                        continue
                    span = spans.setdefault(at, {"start": at[0], "end": at[1], "rules": [], "concepts": [],
                                                 "extra": [], "assertion": ev.get("assertion") or "affirmed"})
                    span["assertion"] = ev.get("assertion") or span["assertion"]
                    span["flagged"] = True
                    if ev.get("rule") and ev["rule"] not in span["rules"]:
                        span["rules"].append(ev["rule"])
            if "[" in t["keyword"] and not spans:
                continue  # a copy in RequestAttributesSequence adds nothing when nothing matched there
            fields.append({"keyword": t["keyword"], "tag": t["tag"], "html": highlight(t["value"], list(spans.values())),
                           "marks": len(spans)})
        refs = {}
        if rb is not None:
            for r in getattr(rb, "rules", []):
                refs[r.id] = {"title": getattr(r, "title", ""), "reference": getattr(r, "reference", "")}
            for r in getattr(rb, "safety_net", []):
                if isinstance(r, dict) and r.get("id"):
                    refs[r["id"]] = {"title": r.get("note", ""), "reference": r.get("reference", "")}
        return {"fields": fields, "refs": refs, "rulebook_now": rb.version if rb is not None else None}

    def key_image(self, request: Request) -> Response:
        s = self.session(request)
        uid = request.path_params["uid"]
        if s is None:
            self._audit("key_image", None, study=uid, status="refused")
            return PlainTextResponse("login needed\n", 401)
        entry = self._entry(uid)
        png = None
        if entry is not None:
            from workers import keyimage

            m = keyimage.worst_screw(entry)
            study = self._study(uid) if m else None
            series = study.series.get(m["series_uid"]) if study and m else None
            try:
                with self._keyimage_lock:  # one rendering at a time (a volume in memory each)
                    png = keyimage.cached(self.cache_dir, entry, series.paths if series else [])
            except Exception as exc:
                log.warning("key image not rendered: %s", type(exc).__name__)
        self._audit("key_image", s, study=uid, status="ok" if png else "none")
        if not png:
            return PlainTextResponse("no key image\n", 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})

    # --- operator
    def operator_page(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return self._need_login(request, "operator")
        from workers.deliveries import Deliveries

        d = Deliveries(self.redis)
        dead = [dict(r, shown=shown(r["kind"], r["destination"]),
                     key=f"{r['kind']}|{r['destination']}|{r['study_instance_uid']}") for r in d.dead_letters()]
        counts = d.delivered_counts()
        sinks = [{"kind": k, "destination": shown(k, dest), "delivered": counts.get(f"{k}|{dest}", 0),
                  "dead": sum(1 for r in dead if r["kind"] == k and r["destination"] == dest)}
                 for k, dest in sinks_of(self.cfg)]
        self._audit("operator", s)
        return self.render(request, "operator.html", s, sinks=sinks, dead=dead, quarantine=self._quarantine(),
                           svc=self.status(), message=request.query_params.get("message"))

    def _quarantine(self, limit: int = 100) -> list[dict]:
        """Reason and time of the latest quarantined datasets (the sidecars hold no patient data; the detail is
        not shown: it may quote a header)."""
        if self.store is None or not self.store.quarantine_dir.is_dir():
            return []
        out = []
        for day in sorted(self.store.quarantine_dir.iterdir(), reverse=True):
            if not day.is_dir():
                continue
            for side in sorted(day.glob("*.json"), reverse=True):
                try:
                    rec = json.loads(side.read_text())
                except (OSError, ValueError):
                    continue
                out.append({"name": f"{day.name}/{side.stem}", "reason": rec.get("reason"), "at": rec.get("received")})
                if len(out) >= limit:
                    return out
        return out

    async def replay(self, request: Request) -> Response:
        s = self.session(request)
        form = await request.form()
        if not self._check_csrf(s, form):
            self._audit("operator", s, action="replay", status="csrf_refused")
            return PlainTextResponse("forbidden: missing or wrong CSRF token\n", 403)
        key = str(form.get("key") or "")
        parts = key.split("|", 2)
        if len(parts) != 3:
            return PlainTextResponse("bad request\n", 400)
        kind, dest, uid = parts
        raw = self.redis.hget(keys.DEAD_LETTERS, key)
        taken = bool(raw) and bool(self.redis.hdel(keys.DEAD_LETTERS, key))
        if taken and self.replay_fn is not None:
            record = json.loads(raw)
            try:
                await asyncio.to_thread(self.replay_fn, record)
            except Exception as exc:
                self.redis.hset(keys.DEAD_LETTERS, key, raw)  # not sent: keep it
                log.warning("replay failed: %s", type(exc).__name__)
                taken = False
        self._audit("operator", s, study=uid, action="replay", status="replayed" if taken else "not_found")
        if taken:
            self.audit.record("replayed", study=uid, kind=kind, destination=shown(kind, dest),
                              attempts=json.loads(raw).get("attempts"))
        self.refresh()
        msg = "replayed" if taken else "not+found"
        return RedirectResponse(f"/console/operator?message={msg}", 303)

    # --- login
    def login_page(self, request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self.render(request, "login.html", self.session(request), login_csrf=token,
                           next=_safe_next(request.query_params.get("next")), error=request.query_params.get("error"))
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=self.secure_cookie,
                        path="/console/login", max_age=3600)
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        nxt = _safe_next(str(form.get("next") or ""))
        if not cookie or not secrets.compare_digest(cookie, str(form.get("csrf") or "")):
            self.audit.record("console_login", status="csrf_refused")
            return PlainTextResponse("forbidden: missing or wrong CSRF token\n", 403)
        name = str(form.get("user") or "")[:64]
        token = await asyncio.to_thread(self.sessions.login, name, str(form.get("password") or ""))
        if token is None:
            self.audit.record("console_login", status="refused")
            return RedirectResponse(f"/console/login?error=1&next={nxt}", 303)
        self.audit.record("console_login", user=name, status="ok")
        resp = RedirectResponse(nxt, 303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure_cookie, path="/console",
                        max_age=int(self.sessions.lifetime))
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/console/login")
        return resp

    async def logout(self, request: Request) -> Response:
        s = self.session(request)
        form = await request.form()
        if not self._check_csrf(s, form):
            return PlainTextResponse("forbidden: missing or wrong CSRF token\n", 403)
        self.sessions.logout(request.cookies.get(COOKIE))
        self.audit.record("console_login", user=s.user, status="logout")
        resp = RedirectResponse("/console/", 303)
        resp.delete_cookie(COOKIE, path="/console")
        return resp


def _safe_next(value: str | None) -> str:
    """Only a path inside the console (no open redirect)."""
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return "/console/"


def _hours(h) -> str:
    if h is None:
        return "unknown"
    h = float(h)
    return f"{h:.0f} h" if h < 72 else f"{h / 24:.0f} d"

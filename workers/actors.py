"""Dramatiq actors: triage a stable study, then deliver its entry to each sink.

Actors are declared here without connecting anywhere: the process that starts binds them
to its broker with `workers.broker.setup(url, context=runtime.Context(cfg))`, and they find
the configuration, Redis and rulebook through that broker (`context()`).

Delivery is at least once, so every actor is idempotent: a triage merges into
the study's one worklist entry, and each sink writes under identifiers that are
deterministic per study. Each sink kind has its own queue, so a destination
that is down never holds back another.
"""

from __future__ import annotations

import importlib
import json
import logging
import time

from dramatiq.middleware import CurrentMessage

from core import keys, metrics
from core.config import DicomNode
from core.orders import OrderStore
from workers import broker as _broker
from workers.deliveries import Deliveries
from workers.locks import LockBusy, RenewingLock
from workers.pipeline import triage
from workers.prepared import Inputs, PreparedTriages, order_digest, settings_digest
from workers.sinks import SinkError
from workers.worklist import Worklist
from rules.model import Priority

log = logging.getLogger(__name__)

#: sink kind -> (module under workers.sinks, Config attribute listing its destinations)
SINKS = {
    "pacs": ("dicom", "pacs"),
    "ups": ("ups", "ups"),
    "hl7": ("hl7", "hl7"),
    "webhook": ("webhook", "webhook"),
}


def context():
    """The `runtime.Context` of the broker the actors are bound to (`workers.broker.setup`)."""
    ctx = triage_study.broker.context
    if ctx is None:
        raise RuntimeError("actors not bound: call workers.broker.setup(url, context=...) first")
    return ctx


def warm_up() -> None:
    """Import what the first triage would otherwise load (highdicom, analysers, sinks)."""
    from workers import analysers, priors  # noqa: F401

    for module, _ in SINKS.values():
        importlib.import_module(f"workers.sinks.{module}")
    analysers.load_analysers()
    try:
        from rules import image_policy

        image_policy.warm_up()
    except Exception as exc:  # the first CT triage loads it then (and reports what is wrong)
        log.warning("image policy not loaded at start: %s", type(exc).__name__)
    try:  # highdicom's IOD tables (cached on first use: about 0.6 s of the first SR otherwise)
        from highdicom import _standard_utils as hd

        hd.get_sop_class_iod_map(), hd.get_iod_module_map(), hd.get_module_attribute_map()
    except Exception:  # a private helper of highdicom: only a speed-up
        pass


def priors_lookup(ctx):
    """The prior-exam lookup for this configuration, or None when no PACS is configured."""
    cfg = ctx.config
    node = cfg.priors_node
    if node is None:
        return None
    from workers.priors import find_priors

    def lookup(study, text_surgery):
        return find_priors(study, node, calling_aet=cfg.ae_title, text_surgery=text_surgery, redis=ctx.redis)

    return lookup


#: Triage must not run longer than this (ms); its lock is renewed while it runs.
TRIAGE_TIME_LIMIT = 15 * 60 * 1000
#: A study whose triage started this many times without finishing (the worker died each
#: time) is not tried again: it gets a "triage failed" entry and an alert.
POISON_AFTER = 2
TRIAGE_FAILED = "triage failed — read at order priority"


@_broker.actor(queue_name="triage", max_retries=20, time_limit=TRIAGE_TIME_LIMIT)
def triage_study(study_uid: str) -> None:
    ctx = context()
    cfg = ctx.config
    started = time.time()
    message = CurrentMessage.get_current_message()
    final = message is not None and message.options.get("retries", 0) >= message.options.get("max_retries", 20)
    timing: dict = {}  # the study's last instance (filled in by _triage_locked), for the stage log
    # A prepared result is for the triage queued when the quiet period ends, never for a refresh
    # of priors (its point is to read the PACS again).
    use_prepared = cfg.prepare_ahead > 0 and not (message is not None and message.options.get("priors_refresh"))
    try:
        lock = RenewingLock(ctx.redis, keys.triage_lock(study_uid), ttl=cfg.triage_lock_ttl, wait=5.0)
        with lock:
            starts_key = keys.triage_starts(study_uid)
            starts = ctx.redis.incr(starts_key)
            ctx.redis.expire(starts_key, 7 * 86400)
            if starts > POISON_AFTER:
                log.error("study %s: triage started %d times without finishing; quarantined", study_uid,
                          starts - 1)
                metrics.triage_poisoned.inc()
                _save_failed(ctx, study_uid, "poison")
                ctx.redis.delete(starts_key)
                return
            try:
                outcome = _triage_locked(ctx, study_uid, started, timing, use_prepared=use_prepared)
            except Exception:
                ctx.redis.delete(starts_key)
                raise
            ctx.redis.delete(starts_key)
    except LockBusy:
        raise RuntimeError("study is being triaged by another worker; retrying") from None
    except Exception as exc:
        metrics.triage_failures.inc()
        log.error("triage of study %s failed%s: %s", study_uid, " for good" if final else "; retrying",
                  type(exc).__name__)
        # On the worklist at once (at the order's priority) while dramatiq retries; for good
        # after the last retry. A later successful triage replaces it (never lower).
        try:
            _save_failed(ctx, study_uid, "error", final=final)
        except Exception as inner:
            log.error("cannot record the failed triage of %s: %s", study_uid, type(inner).__name__)
        raise
    if outcome is None:
        return
    entry, changed = outcome
    if entry.get("priors_status") == "unavailable":
        refresh_when_priors_return(study_uid)
    _log_stages(study_uid, message, started, timing.get("last_received"), cfg.stable_after)
    if changed:
        ctx.audit.record("triaged", study=study_uid, revision=entry["revision"], priority=entry["priority"],
                     rulebook=entry.get("rulebook_version"), flags=[f["code"] for f in entry["flags"]])
        metrics.priorities.labels(entry["priority"]).inc()
        for flag in entry["flags"]:
            metrics.flags.labels(flag["code"]).inc()
        log.info("study %s triaged: %s, %d flag(s), revision %d", study_uid, entry["priority"],
                 len(entry["flags"]), entry["revision"])
    else:
        log.info("study %s triaged again: nothing new (revision %d kept)", study_uid, entry["revision"])
    # Always dispatch: a redelivered triage may find its entry saved but never sent; each
    # delivery skips a destination that already has this revision. Not once the report is
    # signed (closed): there is nothing left to prioritise.
    if entry.get("closed_at") is None:
        dispatch(study_uid, cfg)
    ctx.index.triaged(study_uid, started)
    if changed and cfg.prefetch_aet and entry.get("priors"):
        prefetch_priors.send(study_uid)


def _log_stages(study_uid: str, message, started: float, last_received: float | None, quiet: float) -> None:
    """Where the time went from the study's last instance to its entry (one line per study;
    bench_load.py (c) reads them): the stability watcher queuing it after the quiet period, the
    wait in the triage queue, and the triage itself."""
    queued = message.message_timestamp / 1000 if message is not None else started
    due = (last_received or queued) + quiet
    log.info("stages of study %s: watcher %.3f s after due, queue %.3f s, triage %.3f s", study_uid,
              queued - due, started - queued, time.time() - started)


def _compute(ctx, study, orders: OrderStore):
    """The pipeline's entry for a study, the RIS order it read and the inputs it was computed from
    (shared by the triage and its preparation ahead of the quiet period's end)."""
    found = {}

    def lookup(s):
        found["order"] = order_for(ctx, orders, s)
        return found["order"]

    rulebook = ctx.rulebook.get()
    entry = triage(study, rulebook, priors_lookup=priors_lookup(ctx), order_lookup=lookup, config=ctx.config)
    return entry, found.get("order"), rulebook.version


def _prepared_triages(ctx) -> PreparedTriages:
    return PreparedTriages(ctx.redis, ttl=ctx.config.stable_after + 30.0)


def _take_prepared(ctx, study_uid: str, study, study_digest: str, orders: OrderStore):
    """The entry prepared for exactly this study, order, rulebook and configuration, or None
    (computed afresh). A preparation still running is waited for, a little (twice `prepare_ahead`,
    at most the quiet period, at least a second): it is the same work, started earlier; a longer
    one (a hung peer, or the lock of a worker that died preparing) is not waited for."""
    prepared = _prepared_triages(ctx)
    cfg = ctx.config
    give_up = time.monotonic() + max(min(2 * cfg.prepare_ahead, cfg.stable_after), 1.0)
    while prepared.preparing(study_uid) and time.monotonic() < give_up:
        time.sleep(0.02)
    order = orders.get(study.accession_number)  # what the triage would read first
    inputs = Inputs(study=study_digest, order=order_digest(order), rulebook=ctx.rulebook.get().version,
                    settings=settings_digest(ctx.config))
    entry, outcome = prepared.take(study_uid, inputs)
    metrics.triage_prepared.labels("used" if entry is not None else
                                   ("changed" if outcome == "changed" else "not_ready")).inc()
    if entry is None:
        log.info("study %s: %s; triage computed now", study_uid,
                 "prepared triage discarded (its instances, order, rulebook or configuration changed)" if outcome == "changed"
                 else "no prepared triage")
        return None, None
    entry["triaged_at"] = time.time()
    log.info("study %s: prepared triage used (instances, order, rulebook and configuration unchanged)",
             study_uid)
    return entry, order


def _triage_locked(ctx, study_uid: str, started: float, timing: dict | None = None, use_prepared: bool = False):
    study, study_digest = ctx.index.load_with_digest(study_uid)
    if study is None:
        log.warning("study %s has no indexed instance; nothing to triage", study_uid)
        ctx.index.triaged(study_uid, started)
        return None
    if timing is not None:
        timing["last_received"] = study.last_received
    orders = OrderStore(ctx.redis, ctx.config.order_retention_days)
    entry = order = None
    if use_prepared:
        entry, order = _take_prepared(ctx, study_uid, study, study_digest, orders)
    if entry is None:
        entry, order, _ = _compute(ctx, study, orders)
    worklist = Worklist(ctx.redis)
    saved = worklist.save(entry)
    orders.link_study(study.accession_number, study_uid)
    if order is not None and order.signed_at and saved[0].get("closed_at") is None and order.same_patient(
            study.get("PatientID"), study.get("IssuerOfPatientID")):
        worklist.close(study_uid, order.signed_at, f"HL7 ORU^R01 result status {order.signed_status or 'F'}",
                       audit=ctx.audit)
        saved = (worklist.get(study_uid), saved[1])
    return saved


def order_for(ctx, orders, study):
    """The study's RIS order: the one received by HL7, else the Modality Worklist's (if configured)."""
    order = orders.get(study.accession_number)
    if order is None and ctx.config.mwl is not None:
        from workers.mwl import MwlError, query_order

        try:
            order = query_order(ctx.config.mwl, study.accession_number, calling_aet=ctx.config.ae_title,
                                timeout=ctx.config.mwl_timeout)
        except MwlError as exc:
            log.warning("study %s: modality worklist not read: %s", study.uid, exc)
            return None
        if order is not None:
            orders.save(order)
    return order


def _save_failed(ctx, study_uid: str, why: str, final: bool = True) -> None:
    """A study that could not be triaged is still on the worklist, at its order's priority.

    `final`: no retry will follow, so the study is done with (it leaves the "queued" set)."""
    worklist = Worklist(ctx.redis)
    existing = worklist.get(study_uid)
    if existing is not None:
        # An earlier triage succeeded (its entry, never lowered, stays) or the failure is
        # already on the worklist: nothing new to say.
        if final:
            ctx.index.triaged(study_uid, time.time())
        return
    raw = ctx.redis.hvals(keys.instances(study_uid))
    summaries = []
    for r in raw:
        try:
            summaries.append(json.loads(r))
        except ValueError:
            continue
    attrs: dict = {}
    priorities = []
    for s in summaries:
        for k, v in (s.get("OrderPriorities") or {}).items():
            p = Priority.from_order(str(v))
            if p is not None:
                priorities.append(p)
        for k in ("AccessionNumber", "PatientID", "IssuerOfPatientID", "StudyDate", "StudyTime"):
            if k in s and k not in attrs:
                attrs[k] = s[k]
    ris = OrderStore(ctx.redis).get(attrs.get("AccessionNumber"))  # the RIS order's priority is a floor too
    if ris is not None and ris.priority and ris.status == "active" and ris.same_patient(
            attrs.get("PatientID"), attrs.get("IssuerOfPatientID")):
        priorities.append(Priority.parse(ris.priority))
    order = max(priorities) if priorities else None
    priority = order or Priority.ROUTINE
    now = time.time()
    entry = {
        "study_instance_uid": study_uid,
        "accession_number": attrs.get("AccessionNumber"),
        "patient_id": attrs.get("PatientID"),
        "issuer_of_patient_id": attrs.get("IssuerOfPatientID"),
        "priority": priority.name,
        "order_priority": order.name if order is not None else None,
        "flags": [],
        "postop_interval_hours": None,
        "course": None,
        "priors": [],
        "priors_status": "not_assessed",
        "recommendations": [],
        "explain": [TRIAGE_FAILED],
        "triage_failed": why,
        "rulebook_version": None,
        "modalities": [],
        "study_date": attrs.get("StudyDate"),
        "study_time": attrs.get("StudyTime"),
        "series_count": len({s.get("SeriesInstanceUID") for s in summaries}),
        "instance_count": len(summaries),
        "first_received": None,
        "last_received": None,
        "triaged_at": now,
        "analysers": [],
        "series": [],
        "headers": {},
    }
    saved, _ = worklist.save(entry)
    ctx.audit.record("triage_failed", study=study_uid, revision=saved["revision"], priority=saved["priority"],
                     reason=why)
    metrics.triage_failed_entries.inc()
    log.error("study %s is on the worklist as '%s' (%s)", study_uid, TRIAGE_FAILED, saved["priority"])
    if final:
        ctx.index.triaged(study_uid, now)


#: Preparations wait behind triages and deliveries in a worker's buffer (dramatiq: lower runs first).
PREPARE_PRIORITY = 10


@_broker.actor(queue_name="prepare", max_retries=0, time_limit=TRIAGE_TIME_LIMIT, priority=PREPARE_PRIORITY)
def prepare_triage(study_uid: str) -> None:
    """Compute the triage of a study that has gone quiet, before its quiet period ends, and keep it
    aside (`workers.prepared`): nothing is saved, sent or shown. Only a speed-up: on any failure
    the triage at the end of the quiet period computes it as usual."""
    ctx = context()
    if not ctx.index.is_pending(study_uid):
        return  # already stable (queued or triaged): nothing to prepare
    try:
        with RenewingLock(ctx.redis, keys.prepare_lock(study_uid), ttl=ctx.config.triage_lock_ttl, wait=0):
            # A preparation that killed its worker (a poison study) is not tried again: dramatiq
            # would hand it to the next worker; the triage keeps its own poison count.
            started = keys.prepare_starts(study_uid)
            first = ctx.redis.incr(started) == 1
            ctx.redis.expire(started, 86400)
            if not first:
                log.warning("study %s: an earlier preparation did not finish; not prepared", study_uid)
                return
            try:
                study, study_digest = ctx.index.load_with_digest(study_uid)
                if study is None:
                    return
                entry, order, version = _compute(ctx, study, OrderStore(ctx.redis, ctx.config.order_retention_days))
                inputs = Inputs(study=study_digest, order=order_digest(order), rulebook=version,
                                settings=settings_digest(ctx.config))
                kept = _prepared_triages(ctx).keep(study_uid, inputs, entry)
            finally:
                ctx.redis.delete(started)
            log.info("study %s: triage prepared%s", study_uid, "" if kept else " too late (already triaged); dropped")
    except LockBusy:
        return  # another worker is preparing it
    except Exception as exc:
        metrics.triage_prepared.labels("failed").inc()
        log.warning("study %s: triage not prepared: %s", study_uid, type(exc).__name__)


@_broker.actor(queue_name="prefetch", max_retries=5, min_backoff=5000, max_backoff=300_000)
def prefetch_priors(study_uid: str) -> None:
    """C-MOVE the study's relevant priors to the reading station, so they are there when it opens."""
    from workers.priors import prefetch

    ctx = context()
    cfg = ctx.config
    node = cfg.priors_node
    entry = Worklist(ctx.redis).get(study_uid)
    if node is None or entry is None or not cfg.prefetch_aet:
        return
    wanted = [p for p in entry.get("priors", []) if p.get("study_instance_uid")]
    moved = prefetch(wanted, node, cfg.prefetch_aet, calling_aet=cfg.ae_title)
    log.info("study %s: %d of %d prior(s) prefetched to %s", study_uid, len(moved), len(wanted), cfg.prefetch_aet)
    if len(moved) < len(wanted):
        raise RuntimeError("some priors were not moved; retrying")


#: After a triage that could not reach the PACS for priors, triage again later (seconds);
#: after the last delay, again every last delay until the PACS answers or the study is
#: removed by retention (no cap on the number of tries).
PRIORS_REFRESH_DELAYS = (60, 300, 900, 3600)


def refresh_when_priors_return(study_uid: str) -> bool:
    """Queue a delayed re-triage so priors are added when the PACS answers again.

    One chain per study: a refresh message schedules the next one; any other triage only
    starts a chain when none is scheduled (a Redis mark), so chains never multiply."""
    message = CurrentMessage.get_current_message()
    done = message.options.get("priors_refresh", 0) if message else 0
    delays = context().config.priors_refresh_delays or PRIORS_REFRESH_DELAYS
    delay = delays[min(done, len(delays) - 1)]
    mark = keys.priors_refresh(study_uid)
    client = context().redis
    ttl = int(delay) + 600
    if done > 0:
        client.set(mark, 1, ex=ttl)
    elif not client.set(mark, 1, nx=True, ex=ttl):
        return False  # a refresh is already scheduled for this study
    triage_study.send_with_options(args=(study_uid,), delay=int(delay * 1000), priors_refresh=done + 1)
    return True


def dispatch(study_uid: str, cfg) -> int:
    """Queue one delivery per configured destination; return how many."""
    count = 0
    for kind, (_, attribute) in SINKS.items():
        for destination in getattr(cfg, attribute):
            DELIVER[kind].send_with_options(args=(str(destination), study_uid), **retry_options(cfg))
            count += 1
    return count


def retry_options(cfg) -> dict:
    """Per-message retry settings from the configuration (dramatiq's Retries middleware)."""
    return {"max_retries": max(cfg.sink_attempts - 1, 0), "min_backoff": int(cfg.sink_backoff * 1000),
            "max_backoff": int(cfg.sink_max_backoff * 1000)}


def _shown(kind: str, destination: str) -> str:
    """A destination as it may appear in a log line (no credentials or tokens of a URL)."""
    if kind == "webhook":
        from workers.sinks.webhook import _redact

        return _redact(destination)
    return destination


def _parse(kind: str, destination: str):
    return DicomNode.parse(destination) if kind in ("pacs", "ups") else destination


def _deliver(kind: str, destination: str, study_uid: str) -> None:
    ctx = context()
    # One delivery per destination and study at a time: a slow push of revision 1 can never
    # land after revision 2 (each push reads the entry current when it starts).
    try:
        with RenewingLock(ctx.redis, keys.deliver_lock(kind, destination, study_uid),
                          ttl=ctx.config.triage_lock_ttl, wait=10.0):
            _deliver_locked(ctx, kind, destination, study_uid)
    except LockBusy:
        raise RuntimeError("another delivery of this study to this destination is running; retrying") from None


def _deliver_locked(ctx, kind: str, destination: str, study_uid: str) -> None:
    pushing = time.time()
    entry = Worklist(ctx.redis).get(study_uid)
    if entry is None:
        log.warning("no worklist entry for study %s; nothing to deliver", study_uid)
        return
    if entry.get("triage_failed"):
        log.warning("study %s: triage failed; nothing to deliver", study_uid)
        return
    deliveries = Deliveries(ctx.redis)
    if deliveries.delivered_revision(kind, destination, study_uid) >= entry["revision"]:
        return  # this revision is already there (a redelivered message)
    module = importlib.import_module(f"workers.sinks.{SINKS[kind][0]}")
    if kind == "ups":  # compared on our priority, not on the UPS value (STAT and URGENT are both HIGH)
        entry = dict(entry, delivered_priority=deliveries.delivered_priority(kind, destination, study_uid))
    try:
        receipt = module.push(entry, _parse(kind, destination), ctx.config)
    except Exception as exc:
        metrics.sink_failures.labels(kind).inc()
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        max_retries = message.options.get("max_retries", 0) if message else 0
        retryable = exc.retryable if isinstance(exc, SinkError) else True
        if not retryable or retries >= max_retries:
            deliveries.dead_letter(kind, destination, study_uid, f"{type(exc).__name__}: {exc}", retries + 1)
            metrics.sink_dead_letters.labels(kind).inc()
            log.error("delivery of study %s to %s %s given up after %d attempt(s)", study_uid, kind,
                      _shown(kind, destination), retries + 1)
            return
        log.warning("delivery of study %s to %s %s failed (attempt %d): %s", study_uid, kind,
                    _shown(kind, destination), retries + 1, type(exc).__name__)
        raise
    deliveries.mark_delivered(kind, destination, study_uid, entry["revision"], entry["priority"])
    ctx.audit.record("pushed", study=study_uid, kind=kind, destination=_shown(kind, destination),
                     revision=entry["revision"], priority=entry["priority"])
    metrics.sink_pushes.labels(kind).inc()
    if entry.get("last_received"):
        metrics.end_to_end_latency.labels(kind, entry["priority"]).observe(max(0.0, time.time() - entry["last_received"]))
    log.info("study %s delivered to %s: %s", study_uid, kind, receipt)
    message = CurrentMessage.get_current_message()
    if message is not None:
        log.info("stages of study %s: %s delivery queue %.3f s, push %.3f s", study_uid, kind,
                  pushing - message.message_timestamp / 1000, time.time() - pushing)


def _make_deliver(kind: str):
    def deliver(destination: str, study_uid: str) -> None:
        _deliver(kind, destination, study_uid)

    deliver.__name__ = f"deliver_{kind}"
    return _broker.actor(deliver, actor_name=f"deliver_{kind}", queue_name=f"sink_{kind}",
                          max_retries=7, min_backoff=1000, max_backoff=300_000)


DELIVER = {kind: _make_deliver(kind) for kind in SINKS}

#: Every actor, bound to the process's broker by `workers.broker.setup`.
ALL = (triage_study, prepare_triage, prefetch_priors, *DELIVER.values())

"""Dramatiq actors: triage a stable study, then deliver its entry to each sink.

Delivery is at least once, so every actor is idempotent: a triage merges into
the study's one worklist entry, and each sink writes under identifiers that are
deterministic per study. Each sink kind has its own queue, so a destination
that is down never holds back another.
"""

from __future__ import annotations

import importlib
import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage

from core import keys, metrics
from core.config import DicomNode
from workers import broker as _broker
from workers import runtime
from workers.deliveries import Deliveries
from workers.pipeline import triage
from workers.sinks import SinkError
from workers.worklist import Worklist

_broker.ensure()
log = logging.getLogger(__name__)

#: sink kind -> (module under workers.sinks, Config attribute listing its destinations)
SINKS = {
    "pacs": ("dicom", "pacs"),
    "ups": ("ups", "ups"),
    "hl7": ("hl7", "hl7"),
    "webhook": ("webhook", "webhook"),
}


def warm_up() -> None:
    """Import what the first triage would otherwise load (highdicom, analysers, sinks)."""
    from workers import analysers, priors  # noqa: F401

    for module, _ in SINKS.values():
        importlib.import_module(f"workers.sinks.{module}")
    analysers.load_analysers()


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


@dramatiq.actor(queue_name="triage", max_retries=20, time_limit=15 * 60 * 1000)
def triage_study(study_uid: str) -> None:
    ctx = runtime.context()
    lock = ctx.redis.lock(keys.triage_lock(study_uid), timeout=15 * 60, blocking_timeout=30)
    if not lock.acquire():
        raise RuntimeError("study is being triaged by another worker; retrying")
    try:
        study = ctx.index.load(study_uid)
        if study is None:
            log.warning("study %s has no indexed instance; nothing to triage", study_uid)
            return
        try:
            entry = triage(study, ctx.rulebook.get(), priors_lookup=priors_lookup(ctx))
        except Exception:
            metrics.triage_failures.inc()
            raise
        entry, changed = Worklist(ctx.redis).save(entry)
    finally:
        lock.release()
    if entry.get("priors_status") == "unavailable":
        refresh_when_priors_return(study_uid)
    if not changed:
        log.info("study %s triaged again: nothing new (revision %d kept)", study_uid, entry["revision"])
        return
    metrics.priorities.labels(entry["priority"]).inc()
    for flag in entry["flags"]:
        metrics.flags.labels(flag["code"]).inc()
    log.info("study %s triaged: %s, %d flag(s), revision %d", study_uid, entry["priority"],
             len(entry["flags"]), entry["revision"])
    dispatch(study_uid, ctx.config)
    if ctx.config.prefetch_aet and entry.get("priors"):
        prefetch_priors.send(study_uid)


@dramatiq.actor(queue_name="prefetch", max_retries=5, min_backoff=5000, max_backoff=300_000)
def prefetch_priors(study_uid: str) -> None:
    """C-MOVE the study's relevant priors to the reading station, so they are there when it opens."""
    from workers.priors import prefetch

    ctx = runtime.context()
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


#: After a triage that could not reach the PACS for priors, triage again later (seconds).
PRIORS_REFRESH_DELAYS = (60, 300, 900, 3600)


def refresh_when_priors_return(study_uid: str) -> bool:
    """Queue a delayed re-triage so priors are added when the PACS answers again."""
    message = CurrentMessage.get_current_message()
    done = message.options.get("priors_refresh", 0) if message else 0
    if done >= len(PRIORS_REFRESH_DELAYS):
        return False
    triage_study.send_with_options(args=(study_uid,), delay=PRIORS_REFRESH_DELAYS[done] * 1000,
                                   priors_refresh=done + 1)
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
    ctx = runtime.context()
    entry = Worklist(ctx.redis).get(study_uid)
    if entry is None:
        log.warning("no worklist entry for study %s; nothing to deliver", study_uid)
        return
    deliveries = Deliveries(ctx.redis)
    if deliveries.delivered_revision(kind, destination, study_uid) >= entry["revision"]:
        return  # this revision is already there (a redelivered message)
    module = importlib.import_module(f"workers.sinks.{SINKS[kind][0]}")
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
    deliveries.mark_delivered(kind, destination, study_uid, entry["revision"])
    metrics.sink_pushes.labels(kind).inc()
    if entry.get("last_received"):
        metrics.end_to_end_latency.labels(kind, entry["priority"]).observe(max(0.0, time.time() - entry["last_received"]))
    log.info("study %s delivered to %s: %s", study_uid, kind, receipt)


def _make_deliver(kind: str):
    def deliver(destination: str, study_uid: str) -> None:
        _deliver(kind, destination, study_uid)

    deliver.__name__ = f"deliver_{kind}"
    return dramatiq.actor(deliver, actor_name=f"deliver_{kind}", queue_name=f"sink_{kind}",
                          max_retries=7, min_backoff=1000, max_backoff=300_000)


DELIVER = {kind: _make_deliver(kind) for kind in SINKS}

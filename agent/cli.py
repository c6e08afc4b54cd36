"""The `pacs-triage` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from core.config import Config, ConfigError, DicomNode
from core.privacy import quiet_dicom_libraries

SERVE_OPTIONS = {  # option -> (Config field, help)
    "--ae-title": ("ae_title", "our AE title (default PACSTRIAGE)"),
    "--port": ("port", "DICOM port (default 11112)"),
    "--http-port": ("http_port", "port of the console, /metrics, /healthz, /readyz (default 9108)"),
    "--data-dir": ("data_dir", "where studies, quarantine and the embedded Redis live (default ./data)"),
    "--stable-after": ("stable_after", "seconds without a new instance before a study is triaged (default 10)"),
    "--redis-url": ("redis_url", "shared Redis (default: start a local one in the data directory)"),
    "--workers": ("workers", "worker threads per process (default 2)"),
    "--worker-processes": ("worker_processes", "worker processes of `serve` (default: one per CPU core)"),
    "--hl7-listen": ("hl7_listen", "MLLP port receiving RIS orders (ORM^O01, OMI^O23) and signed reports (ORU^R01)"),
    "--mwl": ("mwl", "AET@HOST:PORT: Modality Worklist queried by accession number when no HL7 order is known"),
    "--listeners": ("listeners", "DICOM listener processes on the port (default: two per CPU core)"),
    "--broker": ("broker", "message broker: redis://… or amqp://… (RabbitMQ); default: the Redis"),
}
REPEATABLE = {
    "--pacs": ("pacs", "AET@HOST:PORT: send the SR there (repeatable); also queried for priors"),
    "--ups": ("ups", "AET@HOST:PORT: UPS worklist manager (repeatable)"),
    "--hl7": ("hl7", "HOST:PORT: RIS receiving HL7 v2 order updates over MLLP (repeatable)"),
    "--webhook": ("webhook", "URL receiving the entry as JSON (repeatable)"),
}


def _add_config_options(p: argparse.ArgumentParser, names=None) -> None:
    p.add_argument("--config", help="TOML config file (also PACS_TRIAGE_CONFIG)")
    for opt, (field, help_) in SERVE_OPTIONS.items():
        if names is None or field in names:
            p.add_argument(opt, dest=field, help=help_)
    for opt, (field, help_) in REPEATABLE.items():
        if names is None or field in names:
            p.add_argument(opt, dest=field, action="append", help=help_)


def _overrides(args) -> dict:
    fields = [f for f, _ in SERVE_OPTIONS.values()] + [f for f, _ in REPEATABLE.values()] + ["no_workers"]
    return {f: getattr(args, f, None) for f in fields}


def load_config(args) -> Config:
    return Config.load(getattr(args, "config", None), overrides=_overrides(args))


def cmd_config(args) -> int:
    """The effective configuration, each option with its source (default, file, environment, command line)."""
    cfg, sources = Config.load_with_sources(getattr(args, "config", None), overrides=_overrides(args))
    rows = cfg.describe(sources)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        value = json.dumps(r["value"], default=str)
        print(f"{r['name']:<{width}}  {value:<28}  [{r['source']}]  {r['help']}")
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("pika").setLevel(logging.WARNING)  # RabbitMQ client: every connect/close at INFO


def cmd_serve(args) -> int:
    from agent.service import ListenerProcess, Service, WorkerProcess, run_until_signalled

    cfg = load_config(args)
    setup_logging(cfg.log_level)
    if getattr(args, "listener_child", False):
        child = ListenerProcess(cfg)
        run_until_signalled(child.start, child.stop, lambda: None, orphan_exit=True)
        return 0
    if getattr(args, "worker_child", False):
        child = WorkerProcess(cfg)
        run_until_signalled(child.start, child.stop, child.reload, tick=child.tick, orphan_exit=True)
        return 0
    service = Service(cfg, argv=getattr(args, "argv", None))
    run_until_signalled(service.start, service.stop, service.reload_rules,
                        tick=service.housekeeping)
    return 0


def cmd_worker(args) -> int:
    from agent.http import HttpServer
    from agent.service import run_until_signalled, start_workers
    from workers import broker, runtime

    cfg = load_config(args)
    setup_logging(cfg.log_level)
    ctx = runtime.Context(cfg)  # holds the process's audit trail (ctx.audit) for the actors
    b = broker.setup(runtime.broker_url(cfg, ctx.redis_url), cfg.broker_heartbeat_timeout, context=ctx,
                     idle_timeout=cfg.broker_idle_timeout)
    from workers import actors

    actors.warm_up()
    ctx.rulebook  # loaded at start, not at the first tick
    state = {}

    def start():
        state["worker"] = start_workers(b, cfg.workers)
        state["http"] = HttpServer(cfg.http_bind, cfg.http_port,
                                   checks={"redis": lambda: (bool(ctx.redis.ping()), "ping")},
                                   timeout=cfg.http_timeout, max_clients=cfg.http_max_clients)
        state["http"].start()

    def stop():
        state["worker"].stop(timeout=30_000)
        state["http"].stop()

    run_until_signalled(start, stop, ctx.rulebook.reload, tick=ctx.rulebook.check_for_changes)
    return 0


def _redis(cfg: Config):
    from core.redis_client import client_from_url
    from workers import runtime

    return client_from_url(runtime.redis_url(cfg))


def cmd_worklist(args) -> int:
    from workers.worklist import Worklist, waiting_minutes

    cfg = load_config(args)
    if args.closed:
        return _closed_worklist(Worklist(_redis(cfg)).closed(limit=args.limit), args.json)
    entries = Worklist(_redis(cfg)).entries(args.limit, wait_cap_minutes=cfg.routine_wait_cap_minutes)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print("worklist is empty")
        return 0
    print(f"{'#':>3}  {'PRIORITY':8}  {'WAIT':>7}  {'ACCESSION':14}  {'MOD':6}  FLAGS (suspected)")
    for n, e in enumerate(entries, 1):
        flags = ", ".join(f["code"] for f in e["flags"]) or "-"
        lifted = " (waited past the cap)" if e.get("lifted_by_wait") else ""
        print(f"{n:>3}  {e['priority']:8}  {waiting_minutes(e):6.0f}m  {str(e.get('accession_number') or '-'):14}  "
              f"{'/'.join(e.get('modalities') or []):6}  {flags}{lifted}")
    return 0


def _closed_worklist(entries: list, as_json: bool) -> int:
    import datetime as dt

    if as_json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print("no closed entry")
        return 0
    print(f"{'#':>3}  {'PRIORITY':8}  {'ORDER':8}  {'TO REPORT':>9}  {'CLOSED (UTC)':16}  {'ACCESSION':14}  CLOSED BY")
    for n, e in enumerate(entries, 1):
        wait = (e["closed_at"] - e["last_received"]) / 60 if e.get("last_received") else None
        when = dt.datetime.fromtimestamp(e["closed_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"{n:>3}  {e['priority']:8}  {e.get('order_priority') or '-':8}  "
              f"{(f'{wait:.0f}m' if wait is not None else '-'):>9}  {when:16}  "
              f"{str(e.get('accession_number') or '-'):14}  {e.get('closed_by') or '-'}")
    return 0


def cmd_report(args) -> int:
    """Time from last instance received to signed report, per priority; studies raised above their order."""
    import time

    from workers.report import parse_since, summarize, render
    from workers.worklist import Worklist

    cfg = load_config(args)
    since = time.time() - parse_since(args.since)
    figures = summarize(Worklist(_redis(cfg)).closed(since=since))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render(figures, args.since))
    return 0


def cmd_reindex(args) -> int:
    from core.index import StudyIndex
    from agent.reindex import reindex
    from agent.store import StudyStore

    cfg = load_config(args)
    added, studies = reindex(StudyStore(cfg.data_dir, fsync=False), StudyIndex(_redis(cfg)))
    print(f"indexed {added} instance(s) of {studies} stud{'y' if studies == 1 else 'ies'}; "
          "they are triaged once `serve` sees them stable")
    return 0


def cmd_triage(args) -> int:
    from agent.offline import triage_paths

    pacs = DicomNode.parse(args.pacs) if args.pacs else None
    return triage_paths(args.paths, as_json=args.json, explain=args.explain, pacs=pacs,
                        analyse=not args.no_images, rules_dir=args.rules_dir, config=Config.load())


def cmd_rules(args) -> int:
    from rules import commands

    if args.action == "check":
        return commands.check(args.rules_dir)
    if args.action == "eval":
        if not args.path:
            print("rules eval needs a case file or folder")
            return 2
        from rules import evaluation
        return evaluation.main(args.path, as_json=args.json, rules_dir=args.rules_dir)
    return commands.test(args.rules_dir, verbose=args.verbose)


def cmd_sinks(args) -> int:
    from workers.deliveries import Deliveries

    cfg = load_config(args)
    client = _redis(cfg)
    deliveries = Deliveries(client)
    if args.action == "status":
        status = {"delivered": deliveries.delivered_counts(), "dead_letters": deliveries.dead_letters()}
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            for dest, count in sorted(status["delivered"].items()):
                print(f"delivered  {dest}: {count} stud{'y' if count == 1 else 'ies'}")
            for d in status["dead_letters"]:
                print(f"DEAD       {d['kind']}|{d['destination']}: study {d['study_instance_uid']} "
                      f"after {d['attempts']} attempt(s): {d['error']}")
            if not status["dead_letters"]:
                print("no dead letters")
        return 0
    from workers import broker, runtime

    ctx = runtime.Context(cfg)
    broker.setup(runtime.broker_url(cfg, ctx.redis_url), cfg.broker_heartbeat_timeout, context=ctx)
    from workers import actors

    records = deliveries.take_dead_letters(args.kind)
    for r in records:
        actors.DELIVER[r["kind"]].send_with_options(args=(r["destination"], r["study_instance_uid"]),
                                                    **actors.retry_options(cfg))
        ctx.audit.record("replayed", study=r["study_instance_uid"], kind=r["kind"],
                     destination=actors._shown(r["kind"], r["destination"]), attempts=r.get("attempts"))
    print(f"replayed {len(records)} dead letter(s)")
    return 0


def cmd_console_user(args) -> int:
    """Add a console user: the password comes from stdin (twice on a terminal), never from argv."""
    import getpass

    from agent.console.auth import add_user

    cfg = load_config(args)
    path = args.users_file or cfg.console_users
    if not path:
        print("pacs-triage: no user file: pass --users-file or set console_users", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("pacs-triage: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("pacs-triage: a password has at least 8 characters", file=sys.stderr)
        return 2
    add_user(Path(path), args.name, password)
    print(f"user {args.name} written to {path}")
    return 0


def cmd_audit(args) -> int:
    """Print the audit trail as JSON lines (all processes merged, in time order)."""
    import datetime as dt

    from core import audit

    cfg = load_config(args)

    def epoch(text):
        if not text:
            return None
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp() \
            if dt.datetime.fromisoformat(text).tzinfo is None else dt.datetime.fromisoformat(text).timestamp()

    for rec in audit.export(cfg.data_dir, since=epoch(args.since), until=epoch(args.until)):
        print(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs-triage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="DICOM listener + triage (one box by default)")
    _add_config_options(p)
    p.add_argument("--no-workers", dest="no_workers", action="store_const", const=True,
                   help="run no workers in this process (`pacs-triage worker` runs them)")
    p.add_argument("--listener-child", dest="listener_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-child", dest="worker_child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="dramatiq worker threads on the shared Redis")
    _add_config_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("audit", help="export the audit trail as JSON lines")
    p.add_argument("action", choices=["export"])
    _add_config_options(p, {"data_dir"})
    p.add_argument("--since", help="ISO date or date-time (UTC unless an offset is given)")
    p.add_argument("--until", help="ISO date or date-time, exclusive")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("worklist", help="show the local worklist, most urgent first")
    _add_config_options(p, {"data_dir", "redis_url"})
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--closed", action="store_true", help="the closed entries (report signed), latest first")
    p.set_defaults(func=cmd_worklist)

    p = sub.add_parser("report", help="time to signed report per priority; studies triage raised above their order")
    _add_config_options(p, {"data_dir", "redis_url"})
    p.add_argument("--since", default="7d", help="period: e.g. 7d, 24h, 90m (default 7d)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reindex", help="index stored instances that Redis does not know (after losing Redis)")
    _add_config_options(p, {"data_dir", "redis_url"})
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("triage", help="triage DICOM files and folders offline")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per study")
    p.add_argument("--explain", action="store_true", help="say why each flag fired")
    p.add_argument("--pacs", help="AET@HOST:PORT to query for prior exams")
    p.add_argument("--no-images", action="store_true", help="skip image analysis")
    p.add_argument("--rules-dir", type=Path)
    p.set_defaults(func=cmd_triage)

    p = sub.add_parser("rules", help="check or test the rulebook; eval scores a case file or folder")
    p.add_argument("action", choices=["check", "test", "eval"])
    p.add_argument("path", nargs="?", type=Path, help="eval: a case YAML file or a folder of them")
    p.add_argument("--json", action="store_true", help="eval: figures as JSON")
    p.add_argument("--rules-dir", type=Path)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("config", help="show the effective configuration and where each value comes from")
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true")
    _add_config_options(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("console-user", help="add or replace a console user (password read from stdin)")
    p.add_argument("name")
    p.add_argument("--users-file", type=Path, help="default: the console_users option")
    _add_config_options(p, set())
    p.set_defaults(func=cmd_console_user)

    p = sub.add_parser("sinks", help="delivery status and dead letters; replay them")
    p.add_argument("action", choices=["status", "replay"])
    p.add_argument("--kind", choices=["pacs", "ups", "hl7", "webhook"])
    p.add_argument("--json", action="store_true")
    _add_config_options(p, {"data_dir", "redis_url"})
    p.set_defaults(func=cmd_sinks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_dicom_libraries()
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # `serve` starts its listener children with it
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"pacs-triage: configuration error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"pacs-triage: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

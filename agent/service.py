"""`pacs-triage serve`: listener, stability watcher, HTTP endpoints and, in one-box
mode, the embedded Redis and in-process workers — started and stopped in order."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from agent import retention
from core import audit
from core.audit import AuditTrail
from core import metrics
from agent.assembly import StabilityWatcher
from core.config import Config
from agent.http import HttpServer
from core.index import StudyIndex
from agent import dispatch
from agent.dispatch import Dispatcher
from agent.listener import Listener
from agent.reconcile import Reconciler
from core import redis_server
from core.redis_client import client_from_url
from core.redis_server import EmbeddedRedis
from agent.store import StudyStore

log = logging.getLogger(__name__)


def listener_count(cfg: Config) -> int:
    """DICOM listener processes: `listeners`, or two per CPU core when 0 (the kernel's
    SO_REUSEPORT hash spreads a few connections unevenly over the processes; more processes
    than cores evens the load: 8 senders 112-123 -> 129-139 MB/s with 4 on 2 cores)."""
    return cfg.listeners if cfg.listeners > 0 else 2 * cpu_cores()


def worker_process_count(cfg: Config) -> int:
    """Worker processes of `serve` (itself included): `worker_processes`, or one per CPU core
    when 0. Threads share one interpreter lock, so an image analysis (numpy, scipy) in one
    thread holds the process's core: processes are what use both cores."""
    return cfg.worker_processes if cfg.worker_processes > 0 else cpu_cores()


def cpu_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota such as
    a container's CPU limit."""
    cores = len(os.sched_getaffinity(0)) or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


class Service:
    def __init__(self, config: Config, argv: list[str] | None = None):
        self.config = config
        self.argv = argv  # the command line, given again to each listener child
        self.children: list[subprocess.Popen | None] = []  # listener processes 1..N-1
        self.worker_children: list[subprocess.Popen | None] = []  # worker processes 1..N-1
        self.embedded: EmbeddedRedis | None = None
        self.worker = None
        self.listener: Listener | None = None
        self.dispatcher: Dispatcher | None = None  # balanced dispatch over the listener processes
        self.watcher: StabilityWatcher | None = None
        self.http: HttpServer | None = None
        self.orders = None  # agent.orders.OrderListener when hl7_listen is set
        self._last_ups_poll = time.monotonic()
        self.stopped = threading.Event()
        self._last_sweep = float("-inf")
        self.last_reload: dict | None = None  # the console's "last reload result"

    def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.store = StudyStore(cfg.data_dir, fsync=cfg.fsync)
        left = store.clean_incoming()
        if left:
            log.info("removed %d partial file(s) never acknowledged", left)
        url = cfg.redis_url
        if not url:
            self.embedded = EmbeddedRedis(cfg.redis_dir)
            url = self.embedded.start()
        self.redis = client_from_url(url, health_check_interval=30)

        from workers import broker, runtime

        # The broker is set up here, explicitly, and the actors bound to it with this
        # process's context (nothing connects when `workers.actors` is imported). The context
        # holds this process's one audit trail; the listener, HL7 listener and console get it too.
        self.context = runtime.Context(cfg, url)
        self.audit: AuditTrail = self.context.audit
        self.broker = broker.setup(runtime.broker_url(cfg, url), cfg.broker_heartbeat_timeout,
                                   context=self.context, idle_timeout=cfg.broker_idle_timeout)
        from workers import actors

        self.rulebook = self.context.rulebook
        metrics.rulebook.info({"version": self.rulebook.get().version})

        self.index = StudyIndex(self.redis)
        self.reconciler = Reconciler(store, self.index, actors.triage_study.send, lease=cfg.triage_lease,
                                     interval=cfg.reconcile_interval)
        # The listener's own client fails fast when Redis is away (the instance is then
        # accepted to disk and indexed by reconciliation), instead of retrying for seconds.
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        fast = self.fast_redis = client_from_url(url, socket_connect_timeout=2, socket_timeout=5,
                                      retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
        self.watcher = StabilityWatcher(self.index, actors.triage_study.send, cfg.stable_after,
                                        prepare=actors.prepare_triage.send, prepare_ahead=cfg.prepare_ahead)
        self.watcher.start()
        self.listener = Listener(cfg, store, StudyIndex(fast), on_index_failure=self.reconciler.dirty.set,
                                 on_indexed=self.watcher.kick, audit=self.audit)
        count = listener_count(cfg) if self.argv else 1
        if count > 1 and cfg.listener_dispatch == "balanced":
            self.dispatcher = Dispatcher()
            self.listener.start(dispatcher=self.dispatcher)
        else:
            self.listener.start(reuse_port=count > 1)
        self._child_env = {"url": url, "broker": runtime.broker_url(cfg, url)}
        self.children = [self._spawn(i) for i in range(1, count)]
        if count > 1:
            log.info("%d DICOM listener processes share port %d (%s)", count, self.listener.port,
                     "balanced dispatch" if self.dispatcher else "SO_REUSEPORT")
        if cfg.hl7_listen:
            from agent.orders import OrderListener

            self.orders = OrderListener(cfg, self.redis, actors.triage_study.send, self.index,
                                        audit=self.audit).start()
        # Reconcile the store and the index at start (and then from `housekeeping`),
        # in the background: a large store must not delay reception.
        threading.Thread(target=self._reconcile, name="reconcile", daemon=True).start()
        if not cfg.no_workers:
            actors.warm_up()
            self.worker = start_workers(self.broker, cfg.workers)
            workers = worker_process_count(cfg) if self.argv else 1
            self.worker_children = [self._spawn(i, "--worker-child") for i in range(1, workers)]
            if workers > 1:
                log.info("%d worker processes of %d thread(s) each", workers, max(1, cfg.workers))
        console = None
        if cfg.console:
            from agent.console import Console

            console = Console(cfg, self.redis, store=store, rulebook=self.rulebook, status=self.console_status,
                              audit=self.audit,
                              replay=lambda r: actors.DELIVER[r["kind"]].send_with_options(
                                  args=(r["destination"], r["study_instance_uid"]), **actors.retry_options(cfg)))
        self.http = HttpServer(cfg.http_bind, cfg.http_port, checks=self.checks(), before_scrape=self.refresh,
                               timeout=cfg.http_timeout, max_clients=cfg.http_max_clients, console=console,
                               exposition=self.exposition)
        self.http.start()
        if console is not None:
            host = cfg.http_bind if cfg.http_bind not in ("0.0.0.0", "::", "") else "localhost"
            host = f"[{host}]" if ":" in host else host
            url = f"http://{host}:{self.http.port}/console/"
            log.info("triage console: %s", url)
            print(f"pacs-triage console: {url}", flush=True)

    def console_status(self) -> dict:
        return {"rulebook_version": self.rulebook.get().version, "last_reload": self.last_reload,
                "listener": f"{self.config.ae_title} on port {self.config.port}",
                "associations": self.listener.active_associations if self.listener else 0,
                "pending": self.index.pending_count(), "queued": self.index.queued_count()}

    def _reloaded(self, changed: bool, failures_before: float) -> None:
        failed = metrics.rulebook_reload_failures._value.get() > failures_before
        if changed or failed:
            self.last_reload = {"at": time.time(), "result": (f"failed, kept {self.rulebook.get().version}" if failed
                                                              else f"loaded {self.rulebook.get().version}")}

    def _spawn(self, i: int, role: str = "--listener-child") -> subprocess.Popen:
        """Listener child i (on the same port, SO_REUSEPORT) or worker child i (`role`
        --worker-child): the same command line, this process's Redis and broker; its /metrics
        (loopback, any port) is merged into ours. It dies with this process; in a session of its
        own, so that a signal to our process group (Ctrl-C) reaches only us, and `stop` stops it
        in order."""
        argv = [*self.argv, "--port", str(self.listener.port), role]
        env = dict(os.environ, PACS_TRIAGE_REDIS_URL=self._child_env["url"],
                   PACS_TRIAGE_BROKER=self._child_env["broker"])
        env.pop(dispatch.FD_ENV, None)
        if role != "--listener-child" or self.dispatcher is None:
            return subprocess.Popen([sys.executable, "-m", "agent.cli", *argv], env=env,
                                    preexec_fn=redis_server._die_with_parent, start_new_session=True)
        ours, theirs = dispatch.pair()  # balanced dispatch: connections reach the child over this pair
        env[dispatch.FD_ENV] = str(theirs.fileno())
        try:
            child = subprocess.Popen([sys.executable, "-m", "agent.cli", *argv], env=env,
                                     pass_fds=(theirs.fileno(),), preexec_fn=redis_server._die_with_parent,
                                     start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.dispatcher.attach(i, ours)
        return child

    def exposition(self) -> bytes:
        """/metrics: this process's, with the listener processes' counters added in."""
        from prometheus_client import REGISTRY, generate_latest

        own = generate_latest(REGISTRY)
        others = []
        for child in self.children + self.worker_children:
            port = child_http_port(self.config, child.pid) if child is not None else None
            if port is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    others.append(r.read().decode())
            except OSError as exc:
                log.warning("metrics of listener process %d not read: %s", child.pid, type(exc).__name__)
        return metrics.merge_expositions(own.decode(), others).encode() if others else own

    def check_children(self) -> None:
        """Start again a listener or worker child that died (from `housekeeping`)."""
        for children, kind, role in ((self.children, "listener", "--listener-child"),
                                     (self.worker_children, "worker", "--worker-child")):
            for n, child in enumerate(children):
                if child is not None and child.poll() is not None:
                    log.warning("%s process %d exited with %s: starting it again", kind, n + 1, child.returncode)
                    children[n] = self._spawn(n + 1, role)

    def checks(self) -> dict:
        extra = {}
        if self.orders is not None:
            extra["hl7_listener"] = lambda: (self.orders.server is not None and self.orders.thread.is_alive(),
                                             f"MLLP port {self.orders.port}")
        return extra | {
            "redis": lambda: (bool(self.redis.ping()), "ping"),
            "listener": lambda: (self.listener is not None and self.listener.server is not None,
                                 f"{self.config.ae_title} port {self.config.port}"),
            "rulebook": lambda: (True, self.rulebook.get().version),
            # Below the watermark new C-STOREs get 0xA700: not ready to take studies.
            "disk": lambda: (retention.free_bytes(self.config.data_dir) >= self.config.min_free_bytes,
                             "free space above min_free_bytes"),
        }

    def refresh(self) -> None:
        """Gauges read at scrape time. Redis being away is a value (redis_up 0), not an error."""
        from workers.broker import queue_depths

        metrics.listener_up.set(1 if self.listener is not None and self.listener.server is not None else 0)
        metrics.associations_active.set(self.listener.active_associations if self.listener else 0)
        metrics.data_free_bytes.set(retention.free_bytes(self.config.data_dir))
        metrics.data_min_free_bytes.set(self.config.min_free_bytes)
        try:
            self.fast_redis.ping()
        except Exception:
            metrics.redis_up.set(0)
            return
        metrics.redis_up.set(1)
        for queue, depth in queue_depths(self.broker).items():
            metrics.queue_depth.labels(queue).set(depth)
        metrics.studies_pending.set(self.index.pending_count())
        metrics.studies_queued.set(self.index.queued_count())

    def reload_rules(self) -> None:
        self._load_rules(self.rulebook.reload)

    def _load_rules(self, load) -> None:
        """`load` (the rulebook's reload or check_for_changes), then the console's last reload result,
        the rulebook metric and the audit trail when it changed."""
        before = metrics.rulebook_reload_failures._value.get()
        changed = load()
        self._reloaded(changed, before)
        if changed:
            metrics.rulebook.info({"version": self.rulebook.get().version})
            self.audit.record("rulebook_reloaded", version=self.rulebook.get().version)

    def _reconcile(self) -> None:
        try:
            self.reconciler.tick()
        except Exception as exc:
            log.warning("reconciliation failed: %s", type(exc).__name__)

    def housekeeping(self) -> None:
        """Every few seconds: rule files, reconciliation; every hour: retention of old studies."""
        self.check_rules()
        self.check_children()
        self._reconcile()
        now = time.monotonic()
        if self.config.ups and self.config.ups_poll_interval and now - self._last_ups_poll >= self.config.ups_poll_interval:
            self._last_ups_poll = now
            self.poll_ups()
        if now - self._last_sweep > 3600:
            self._last_sweep = now
            from workers.worklist import Worklist

            removed = retention.sweep(self.store, self.index, self.config.retention_days,
                                      on_remove=Worklist(self.redis).remove)
            metrics.studies_removed.inc(removed)
            audit.sweep(self.config.data_dir, self.config.audit_retention_days)

    def poll_ups(self) -> int:
        """N-GET the workitem of each open entry delivered to a UPS provider; COMPLETED closes it."""
        from agent.closing import poll_ups

        try:
            return poll_ups(self.redis, self.config, audit=self.audit)
        except Exception as exc:
            log.warning("UPS poll failed: %s", type(exc).__name__)
            return 0

    def check_rules(self) -> None:
        """Pick up edited rule files (a bad file is rejected and the old rules stay)."""
        self._load_rules(self.rulebook.check_for_changes)

    def stop(self) -> None:
        """SIGTERM: stop accepting associations and let those in progress finish (bounded);
        then stop queueing, let in-flight triages and deliveries finish (bounded); then Redis."""
        grace = self.config.shutdown_timeout
        children, self.children = self.children, []
        _stop_children(children, grace, lambda: self.listener and self.listener.stop(drain=grace))
        if self.dispatcher:
            self.dispatcher.stop()
        if self.watcher:
            self.watcher.stop()
        if self.orders:
            self.orders.stop()
        workers, self.worker_children = self.worker_children, []
        _stop_children(workers, grace, lambda: self.worker and self.worker.stop(timeout=int(grace * 1000)))
        if self.http:
            self.http.stop()
        if self.embedded:
            self.embedded.stop()
        self.stopped.set()


class ListenerProcess:
    """A listener child of `serve --listeners N`: the DICOM listener on the shared port, its
    stability watcher and /metrics; the parent runs Redis, reconciliation and the workers."""

    def __init__(self, config: Config):
        self.config = config
        self.listener: Listener | None = None
        self.watcher: StabilityWatcher | None = None
        self.http: HttpServer | None = None

    def start(self) -> None:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        from workers import broker, runtime

        cfg = self.config
        store = StudyStore(cfg.data_dir, fsync=cfg.fsync)
        url = runtime.redis_url(cfg)
        self.context = runtime.Context(cfg, url)
        self.broker = broker.setup(runtime.broker_url(cfg, url), cfg.broker_heartbeat_timeout,
                                   context=self.context, idle_timeout=cfg.broker_idle_timeout)
        from workers import actors

        self.redis = client_from_url(url, health_check_interval=30)
        self.index = StudyIndex(self.redis)
        fast = client_from_url(url, socket_connect_timeout=2, socket_timeout=5,
                               retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
        self.watcher = StabilityWatcher(self.index, actors.triage_study.send, cfg.stable_after,
                                        prepare=actors.prepare_triage.send, prepare_ahead=cfg.prepare_ahead)
        self.watcher.start()
        # An instance that cannot be indexed is on disk: the parent's reconciliation indexes it.
        self.listener = Listener(cfg, store, StudyIndex(fast), on_indexed=self.watcher.kick,
                                 audit=self.context.audit)
        receiver = dispatch.Receiver.from_env()  # balanced dispatch: the parent hands connections over
        self.listener.start(reuse_port=receiver is None, receiver=receiver)
        self.http = _serve_child_metrics(cfg, "listener", {
            "redis": lambda: (bool(fast.ping()), "ping"),
            "listener": lambda: (self.listener is not None and self.listener.server is not None,
                                 f"{cfg.ae_title} port {cfg.port}"),
        }, before_scrape=self.refresh)

    def refresh(self) -> None:
        metrics.listener_up.set(1 if self.listener is not None and self.listener.server is not None else 0)
        metrics.associations_active.set(self.listener.active_associations if self.listener else 0)

    def stop(self) -> None:
        if self.listener:
            self.listener.stop(drain=self.config.shutdown_timeout)
        if self.watcher:
            self.watcher.stop()
        _stop_child_metrics(self.config, "listener", self.http)


class WorkerProcess:
    """A worker child of `serve` (`worker_processes` > 1): dramatiq worker threads on the parent's
    Redis and broker, and a loopback /metrics the parent merges into its own."""

    def __init__(self, config: Config):
        self.config = config
        self.worker = None
        self.http: HttpServer | None = None

    def start(self) -> None:
        from workers import broker, runtime

        cfg = self.config
        self.context = runtime.Context(cfg, runtime.redis_url(cfg))
        self.broker = broker.setup(runtime.broker_url(cfg, self.context.redis_url), cfg.broker_heartbeat_timeout,
                                   context=self.context, idle_timeout=cfg.broker_idle_timeout)
        from workers import actors

        actors.warm_up()
        self.context.rulebook  # loaded now, not at the first tick after readiness (the idle window saw it)
        self.worker = start_workers(self.broker, cfg.workers)
        self.http = _serve_child_metrics(cfg, "worker", {
            "redis": lambda: (bool(self.context.redis.ping()), "ping")})

    def reload(self) -> None:
        self.context.rulebook.reload()

    def tick(self) -> None:
        self.context.rulebook.check_for_changes()

    def stop(self) -> None:
        if self.worker:
            self.worker.stop(timeout=int(self.config.shutdown_timeout * 1000))
        _stop_child_metrics(self.config, "worker", self.http)


def _stop_children(children: list[subprocess.Popen | None], grace: float, stop_own) -> None:
    """Stop child processes alongside this process's own part: SIGTERM to each live child, then
    `stop_own()` (the children drain meanwhile), then wait up to `grace` + 10 s for each and kill
    one that is still running."""
    for child in children:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
    stop_own()
    for child in children:
        if child is not None:
            try:
                child.wait(grace + 10)
            except subprocess.TimeoutExpired:
                child.kill()


def _serve_child_metrics(cfg: Config, role: str, checks: dict, before_scrape=None) -> HttpServer | None:
    """A child's /metrics on loopback, any free port, written to its `child_http_file` so that the
    parent reads it and merges it into its own; None (and a warning) when it cannot listen."""
    try:
        http = HttpServer("127.0.0.1", 0, checks=checks, before_scrape=before_scrape,
                          timeout=cfg.http_timeout, max_clients=cfg.http_max_clients)
        http.start()
        path = child_http_file(cfg, os.getpid(), role)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(http.port))
    except OSError as exc:
        log.warning("%s process: no /metrics (%s)", role, exc.strerror)
        return None
    return http


def _stop_child_metrics(cfg: Config, role: str, http: HttpServer | None) -> None:
    if http:
        http.stop()
        child_http_file(cfg, os.getpid(), role).unlink(missing_ok=True)


def child_http_file(cfg: Config, pid: int, role: str = "listener") -> Path:
    return cfg.data_dir / "run" / f"{role}-{pid}.http"


def child_http_port(cfg: Config, pid: int) -> int | None:
    for role in ("listener", "worker"):
        try:
            return int(child_http_file(cfg, pid, role).read_text())
        except (OSError, ValueError):
            continue
    return None


def start_workers(broker, threads: int):
    from dramatiq import Worker

    from workers.broker import worker_timeout

    worker = Worker(broker, worker_threads=max(1, threads), worker_timeout=worker_timeout(broker))
    # Each process holds no more messages than it has threads (dramatiq's default is twice as
    # many): a light triage never waits in the buffer of a process whose threads are all busy
    # with image analyses while another process is free.
    worker.queue_prefetch = max(1, threads)
    worker.start()
    return worker


def run_until_signalled(start, stop, reload, tick=None, orphan_exit: bool = False) -> None:
    """Start, then block until SIGTERM/SIGINT; SIGHUP calls `reload`; `tick` runs every 2 s. `orphan_exit` (the
    listener and worker children of `serve`): stop as well when the process that started this one is gone (killed
    with SIGKILL, it could not stop its children: they would serve on, unwatched, until the machine restarts)."""
    parent = os.getppid()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, daemon=True).start())
    start()
    try:
        while not done.wait(2.0):
            if orphan_exit and os.getppid() != parent:
                log.warning("the service process that started this one is gone: stopping")
                break
            if tick:
                try:
                    tick()
                except Exception as exc:
                    log.warning("periodic check failed: %s", type(exc).__name__)
    finally:
        log.info("stopping")
        stop()

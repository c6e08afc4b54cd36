"""The dramatiq broker: Redis (default) or RabbitMQ, shared by every listener and worker process.

Nothing here connects or sets anything up at import. Actors are declared (in
`workers.actors`) on `UNBOUND`, a placeholder that refuses to send; the process that
starts (`serve`, `worker`, `sinks replay`, a test) calls `setup(url, context=...)`, which
makes the broker for the URL and binds every actor to it:

- ``redis://`` / ``rediss://`` / ``unix://`` / ``redis+sentinel://``: dramatiq's Redis broker,
  with consumers that wait for a wake-up instead of polling (see `EventRedisBroker`);
- ``amqp://`` / ``amqps://``: dramatiq's RabbitMQ broker (publisher confirms on).

The per-process `runtime.Context` (configuration, Redis, rulebook) travels on the broker
(`broker.context`), so actors find it through the broker they are bound to.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

NAMESPACE = "pacs-triage"
#: The pub/sub channel on which every enqueue names its queue (wakes idle consumers).
WAKE_CHANNEL = f"{NAMESPACE}:wake"
AMQP_SCHEMES = ("amqp", "amqps")

log = logging.getLogger(__name__)


def middleware() -> list[Middleware]:
    return [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(),
            Retries(min_backoff=1000, max_backoff=300_000), CurrentMessage()]


class _Unbound(StubBroker):
    """Where actors are declared at import: no connection; sending fails until `setup`."""

    context = None

    def enqueue(self, message, *, delay=None):
        raise RuntimeError("no broker in this process: call workers.broker.setup(url, context=...) first")


#: The placeholder actors are declared on (in memory only, never sends).
UNBOUND = _Unbound(middleware=middleware())


def actor(fn=None, **options):
    """`dramatiq.actor` on the placeholder broker: declaring an actor never connects."""
    return dramatiq.actor(fn, broker=UNBOUND, **options)


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in AMQP_SCHEMES


def make(url: str, heartbeat_timeout: float = 60.0, idle_timeout: float = 10.0) -> dramatiq.Broker:
    """A broker for `url` (not yet bound to the actors)."""
    if is_amqp(url):
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError:  # pragma: no cover - pika is a declared dependency
            raise RuntimeError("an amqp:// broker needs pika: pip install 'dramatiq[rabbitmq]'") from None
        broker = RabbitmqBroker(url=url, middleware=middleware(), confirm_delivery=True)
        broker.idle_timeout = idle_timeout
        return broker
    from core.redis_client import client_from_url

    client = client_from_url(url)
    return EventRedisBroker(client=client, namespace=NAMESPACE, middleware=middleware(),
                            heartbeat_timeout=int(heartbeat_timeout * 1000),
                            maintenance_chance=10 if heartbeat_timeout < 60 else 1000,
                            idle_timeout=min(idle_timeout, heartbeat_timeout / 3))


def setup(url: str, heartbeat_timeout: float = 60.0, *, context=None, idle_timeout: float = 10.0,
          actors=None) -> dramatiq.Broker:
    """Make the broker for `url`, bind every actor of `workers.actors` to it, and make it
    dramatiq's broker for this process. `context` (a `runtime.Context`) is what actors use.

    `heartbeat_timeout` (s): a Redis worker process silent that long is dead and the messages
    it held are queued again. `idle_timeout` (s): the longest an idle consumer waits before
    fetching again (a message or a shutdown wakes it at once)."""
    broker = make(url, heartbeat_timeout, idle_timeout)
    bind(broker, context, actors)
    return broker


def bind(broker: dramatiq.Broker, context, actors=None) -> None:
    """Bind every actor (default: those of `workers.actors`) to `broker`, with `context`, and make
    it dramatiq's broker for this process (a test calls this again to change the configuration)."""
    broker.context = context
    if actors is None:
        from workers import actors as module

        actors = module.ALL
    for a in actors:
        a.broker = broker
        if a.actor_name not in broker.actors:
            broker.declare_actor(a)
    dramatiq.set_broker(broker)


def worker_timeout(broker: dramatiq.Broker) -> int:
    """dramatiq's worker_timeout (ms) for this broker: how long worker threads (and RabbitMQ
    consumers) block before looking at their stop flag. Redis consumers wait on wake-ups."""
    return 1000


def queue_depths(broker: dramatiq.Broker) -> dict[str, int]:
    """Messages waiting or in flight per declared queue (delayed ones included)."""
    depths = {}
    for queue in sorted(broker.get_declared_queues()):
        if queue.endswith(".DQ"):
            continue
        if isinstance(broker, RedisBroker):
            client = broker.client
            depths[queue] = client.hlen(f"{NAMESPACE}:{queue}.msgs") + client.hlen(f"{NAMESPACE}:{queue}.DQ.msgs")
        else:
            ready, delayed, _dead = broker.get_queue_message_counts(queue)
            depths[queue] = ready + delayed
    return depths


# --- Redis without polling --------------------------------------------------------------

class _Wakeups(Middleware):
    """Keeps the etas of delayed messages held by this process's consumers (so a delay-queue
    consumer wakes when one is due) and wakes every consumer when a worker stops."""

    def before_worker_boot(self, broker, worker):
        broker.closing = False

    def before_worker_shutdown(self, broker, worker):
        broker.closing = True
        broker.wake_all()

    def before_delay_message(self, broker, message):
        eta = message.options.get("eta")
        if eta is not None:
            broker.note_eta(message.queue_name, eta)


class EventRedisBroker(RedisBroker):
    """dramatiq's Redis broker whose idle consumers block instead of polling.

    Every enqueue publishes its queue name on `WAKE_CHANNEL`; one subscriber thread per
    process wakes the consumers of that queue. An idle consumer otherwise fetches again
    only after `idle_timeout` (which also keeps its heartbeat and lets it pick up messages
    requeued from a dead worker), or when a delayed message it holds is due. Losing a
    wake-up (Redis restart) costs at most `idle_timeout`, never a message."""

    def __init__(self, *, idle_timeout: float = 10.0, **kw):
        super().__init__(**kw)
        self.idle_timeout = idle_timeout
        self.closing = False
        self._waiters: dict[str, set[threading.Event]] = {}
        self._etas: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._subscriber: threading.Thread | None = None
        self.add_middleware(_Wakeups())

    @property
    def consumer_class(self):
        return _EventConsumer

    def enqueue(self, message, *, delay=None):
        message = super().enqueue(message, delay=delay)
        try:
            self.client.publish(WAKE_CHANNEL, message.queue_name)
        except Exception as exc:  # the message is queued; consumers find it within idle_timeout
            log.debug("wake-up not published: %s", type(exc).__name__)
        return message

    # -- waiting
    def register(self, queue: str, event: threading.Event) -> None:
        with self._lock:
            self._waiters.setdefault(queue, set()).add(event)
            if self._subscriber is None:
                self._subscriber = threading.Thread(target=self._subscribe, name="broker-wakeups", daemon=True)
                self._subscriber.start()

    def unregister(self, queue: str, event: threading.Event) -> None:
        with self._lock:
            self._waiters.get(queue, set()).discard(event)

    def wake(self, queue: str) -> None:
        with self._lock:
            events = list(self._waiters.get(queue, ()))
        for e in events:
            e.set()

    def wake_all(self) -> None:
        with self._lock:
            events = [e for s in self._waiters.values() for e in s]
        for e in events:
            e.set()

    def note_eta(self, queue: str, eta: int) -> None:
        with self._lock:
            heapq.heappush(self._etas.setdefault(queue, []), int(eta))
        self.wake(queue)

    def wait_time(self, queue: str) -> float:
        """Seconds an idle consumer of `queue` may wait; 0 when a delayed message is due now."""
        if self.closing:
            return 0.05
        timeout = self.idle_timeout
        now = current_millis()
        with self._lock:
            etas = self._etas.get(queue)
            due = False
            while etas and etas[0] <= now:
                heapq.heappop(etas)
                due = True
            if due:
                return 0.0
            if etas:
                timeout = min(timeout, (etas[0] - now) / 1000 + 0.002)
        return max(timeout, 0.0)

    def _subscribe(self) -> None:
        backoff = 0.5
        while True:
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(WAKE_CHANNEL)
                self.wake_all()  # anything published while not subscribed
                backoff = 0.5
                while True:
                    msg = pubsub.get_message(timeout=60.0)
                    if msg is None:
                        pubsub.ping()  # notice a dead connection on a quiet channel
                        continue
                    if msg.get("type") == "message":
                        data = msg["data"]
                        self.wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                log.debug("broker wake-up subscription lost: %s", type(exc).__name__)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass


class _EventConsumer(_RedisConsumer):
    def __init__(self, broker, queue_name, prefetch, timeout):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wakeup = threading.Event()
        broker.register(queue_name, self.wakeup)

    def __next__(self):
        if self.message_cache:
            return super().__next__()
        # Cleared before the fetch: a wake-up published after it is not lost.
        self.wakeup.clear()
        self.message_cache = self._fetch()
        if self.message_cache:
            return super().__next__()
        wait = self.broker.wait_time(self.queue_name)
        if wait > 0:
            self.wakeup.wait(wait)
        return None

    def _fetch(self) -> list:
        import redis

        if self.outstanding_message_count >= self.prefetch:
            return []
        try:
            return self.broker.do_fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
        except redis.ConnectionError as e:
            from dramatiq.errors import ConnectionClosed

            raise ConnectionClosed(e) from None

    def close(self):
        self.broker.unregister(self.queue_name, self.wakeup)
        super().close()

"""The dramatiq broker: Redis, shared by every listener and worker process.

Actors bind to the broker that is current when `workers.actors` is imported,
so `setup()` must run first; `ensure()` sets one up from the configuration
(environment, config file) for processes started by the `dramatiq` CLI.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

NAMESPACE = "pacs-triage"

_broker: RedisBroker | None = None


def setup(url: str, heartbeat_timeout: float = 60.0) -> RedisBroker:
    """Make a Redis broker for `url` the global dramatiq broker.

    `heartbeat_timeout` (s): a worker process silent that long is dead and the messages it
    held are queued again (checked on a share of the fetches)."""
    global _broker
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(),
                  Retries(min_backoff=1000, max_backoff=300_000), CurrentMessage()]
    _broker = RedisBroker(url=url, namespace=NAMESPACE, middleware=middleware,
                          heartbeat_timeout=int(heartbeat_timeout * 1000),
                          maintenance_chance=10 if heartbeat_timeout < 60 else 1000)
    dramatiq.set_broker(_broker)
    return _broker


def ensure() -> RedisBroker:
    """The broker set up by `setup`, or one made from the configuration."""
    if _broker is None:
        from workers import runtime

        cfg = runtime.config()
        setup(runtime.redis_url(cfg), cfg.broker_heartbeat_timeout)
    return _broker


def queue_depths(broker: RedisBroker) -> dict[str, int]:
    """Messages waiting or in flight per declared queue (delayed ones included)."""
    client = broker.client
    depths = {}
    for queue in sorted(broker.get_declared_queues()):
        if queue.endswith(".DQ"):
            continue
        depths[queue] = client.hlen(f"{NAMESPACE}:{queue}.msgs") + client.hlen(f"{NAMESPACE}:{queue}.DQ.msgs")
    return depths

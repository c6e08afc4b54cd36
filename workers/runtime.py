"""What a worker process shares between messages: configuration, Redis, rulebook, audit trail.

No module-level state: the process that starts makes one `Context` and hands it to
`workers.broker.setup(url, context=...)`; actors reach it through their broker.
"""

from __future__ import annotations

from functools import cached_property

import redis

from core import redis_server
from core.audit import AuditTrail
from core.config import Config
from core.index import StudyIndex
from core.redis_client import client_from_url


def redis_url(cfg: Config) -> str:
    """The configured Redis, else the embedded one `serve` runs in the data directory."""
    url = cfg.redis_url or redis_server.discover(cfg.redis_dir)
    if not url:
        raise RuntimeError(
            "no Redis: give --redis-url (PACS_TRIAGE_REDIS_URL), or start `pacs-triage serve` "
            "on this data directory first"
        )
    return url


def broker_url(cfg: Config, redis: str | None = None) -> str:
    """The message broker: `broker` if configured (redis://… or amqp://…), else the Redis."""
    return cfg.broker or redis or redis_url(cfg)


class Context:
    """The per-process context actors use. `url`: the Redis (default: from `cfg`)."""

    def __init__(self, cfg: Config, url: str | None = None):
        self.config = cfg
        self._url = url

    @cached_property
    def redis_url(self) -> str:
        return self._url or redis_url(self.config)

    @cached_property
    def redis(self) -> redis.Redis:
        return client_from_url(self.redis_url, health_check_interval=30)

    @cached_property
    def index(self) -> StudyIndex:
        return StudyIndex(self.redis)

    @cached_property
    def audit(self) -> AuditTrail:
        """This process's audit trail (`data_dir`/audit unless `audit = false`)."""
        return AuditTrail.from_config(self.config)

    @cached_property
    def rulebook(self):
        from rules.active import ActiveRulebook

        return ActiveRulebook(self.config.rules_dir)

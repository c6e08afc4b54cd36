"""What a worker process shares between messages: configuration, Redis, rulebook."""

from __future__ import annotations

import threading
from functools import cached_property

import redis

from core import redis_server
from core.config import Config
from core.index import StudyIndex

_lock = threading.Lock()
_config: Config | None = None


def configure(config: Config) -> None:
    """Set the process configuration (the CLI calls this before importing actors)."""
    global _config, _context
    with _lock:
        _config = config
        _context = None


def config() -> Config:
    global _config
    with _lock:
        if _config is None:
            _config = Config.load()
        return _config


def redis_url(cfg: Config) -> str:
    """The configured Redis, else the embedded one `serve` runs in the data directory."""
    url = cfg.redis_url or redis_server.discover(cfg.redis_dir)
    if not url:
        raise RuntimeError(
            "no Redis: give --redis-url (PACS_TRIAGE_REDIS_URL), or start `pacs-triage serve` "
            "on this data directory first"
        )
    return url


class Context:
    def __init__(self, cfg: Config):
        self.config = cfg

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(redis_url(self.config), health_check_interval=30)

    @cached_property
    def index(self) -> StudyIndex:
        return StudyIndex(self.redis)

    @cached_property
    def rulebook(self):
        from rules.active import ActiveRulebook

        return ActiveRulebook(self.config.rules_dir)


_context: Context | None = None


def context() -> Context:
    global _context
    cfg = config()
    with _lock:
        if _context is None:
            _context = Context(cfg)
        return _context

"""Configuration: embedded defaults < config file (TOML) < PACS_TRIAGE_* environment < command line.

Every option of `pacs-triage serve` has all four forms, e.g. `--stable-after 5`,
`PACS_TRIAGE_STABLE_AFTER=5`, `stable_after = 5` in the file given by `--config`
or `PACS_TRIAGE_CONFIG`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "PACS_TRIAGE_"


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


@dataclass(frozen=True)
class DicomNode:
    """A DICOM peer written AET@HOST:PORT."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "DicomNode":
        try:
            aet, rest = text.strip().split("@", 1)
            host, port = rest.rsplit(":", 1)
            node = cls(aet.strip(), host.strip("[] "), int(port))
        except ValueError:
            raise ConfigError(f"expected AET@HOST:PORT, got {text!r}") from None
        if not node.aet or len(node.aet) > 16 or not node.host or not 0 < node.port < 65536:
            raise ConfigError(f"expected AET@HOST:PORT, got {text!r}")
        return node

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass
class Config:
    ae_title: str = "PACSTRIAGE"
    port: int = 11112
    bind: str = "0.0.0.0"
    http_port: int = 9108
    http_bind: str = "127.0.0.1"  # metrics/health: loopback unless a scraper needs more
    http_timeout: float = 10.0  # seconds a client may take to send its request
    http_max_clients: int = 16  # concurrent HTTP requests; more are answered 503 at once
    data_dir: Path = Path("data")
    redis_url: str | None = None  # None: start and manage a local Redis in the data directory
    stable_after: float = 10.0  # quiet period (s) after which a study is stable
    workers: int = 2  # in-process worker threads (`serve`), or threads of `pacs-triage worker`
    no_workers: bool = False  # `serve` without in-process workers (they run elsewhere)
    pacs: list[DicomNode] = field(default_factory=list)  # SR destinations (C-STORE)
    ups: list[DicomNode] = field(default_factory=list)
    hl7: list[str] = field(default_factory=list)  # HOST:PORT
    webhook: list[str] = field(default_factory=list)  # URL
    webhook_secret: str | None = None
    priors_pacs: DicomNode | None = None  # C-FIND peer for priors (default: first of `pacs`)
    rules_dir: Path | None = None  # None: the rulebook shipped in the package
    max_pdu: int = 262144  # bytes: the largest P-DATA PDU we accept (announced to the peer, enforced)
    max_associations: int = 64  # concurrent associations (connections not yet associated included)
    allowed_calling_aets: list = field(default_factory=list)  # empty: any calling AE title
    allowed_networks: list = field(default_factory=list)  # CIDRs, e.g. ["10.1.0.0/16"]; empty: any
    association_idle_timeout: float = 120.0  # s without a complete PDU: the association is aborted
    pdu_timeout: float = 30.0  # s to receive one whole PDU once its first byte arrived (slow peers)
    acse_timeout: float = 10.0  # s from connection to a complete A-ASSOCIATE-RQ (slow-loris peers)
    max_association_bytes: int = 8 * 1024 ** 3  # bytes received per association, then aborted
    max_association_seconds: float = 4 * 3600.0  # lifetime of one association, then aborted
    require_called_aet: bool = False  # reject associations not addressed to ae_title
    tls_cert: Path | None = None  # PEM certificate (chain): the listener speaks DICOM TLS only
    tls_key: Path | None = None  # its PEM private key
    tls_ca: Path | None = None  # PEM CA(s): also require client certificates signed by them
    fsync: bool = True  # durability before success; off only for benchmarks
    sink_attempts: int = 8  # deliveries tried per destination before a dead letter
    sink_backoff: float = 2.0  # seconds before the first retry; doubles each attempt
    sink_max_backoff: float = 600.0
    ups_priority_map: dict | None = None  # e.g. {STAT = "HIGH", URGENT = "HIGH", ROUTINE = "MEDIUM"}
    ups_turnaround: dict | None = None  # target seconds per priority, e.g. {STAT = 1800}
    ups_retrieve_aet: str | None = None
    hl7_timeout: float = 10.0
    webhook_timeout: float = 10.0
    routine_wait_cap_minutes: float | None = None  # lift ROUTINE studies waiting longer (worklist order)
    prefetch_aet: str | None = None  # C-MOVE relevant priors to this reading-station AE
    retention_days: float = 30.0  # studies kept in the data directory after their last instance; 0 = forever
    log_level: str = "INFO"
    # Robustness (see README "Guarantees")
    triage_lock_ttl: float = 30.0  # per-study triage lock, renewed every ttl/3 while the triage runs
    triage_lease: float = 300.0  # a study queued this long with no live triage is queued again
    reconcile_interval: float = 60.0  # seconds between checks of queued studies and of Redis restarts
    broker_heartbeat_timeout: float = 60.0  # dramatiq: a worker silent this long is dead; its messages requeued
    priors_refresh_delays: list | None = None  # seconds, e.g. [60, 300, 900, 3600]; the last one repeats
    audit: bool = True  # append-only audit trail in <data_dir>/audit (see `pacs-triage audit export`)
    audit_retention_days: float = 365.0  # days of audit kept; 0 = forever
    shutdown_timeout: float = 30.0  # SIGTERM: seconds for associations, then for in-flight triages
    min_free_bytes: int = 512 * 1024 * 1024  # below this free space on the data directory, C-STORE gets 0xA700

    @property
    def priors_node(self) -> DicomNode | None:
        """Where prior exams are queried: `priors_pacs`, else the first `pacs`."""
        return self.priors_pacs or (self.pacs[0] if self.pacs else None)

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def redis_socket(self) -> Path:
        return self.redis_dir / "redis.sock"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None) -> "Config":
        """Defaults, then the file, then the environment, then `overrides` (non-None values)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        path = path or env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: {exc}") from None
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"{path}: unknown option(s): {', '.join(sorted(unknown))}")
        for name in names:
            key = ENV_PREFIX + name.upper()
            if key in env and env[key] != "":
                values[name] = env[key]
        for name, value in (overrides or {}).items():
            if value is not None and value != [] and name in names:
                values[name] = value
        return cls(**{k: _coerce(k, v) for k, v in values.items()})


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if name in ("pacs", "ups"):
            return [v if isinstance(v, DicomNode) else DicomNode.parse(v) for v in _list(value)]
        if name in ("hl7", "webhook", "allowed_calling_aets", "allowed_networks"):
            return _list(value)
        if name == "priors_refresh_delays":
            return [float(v) for v in _list(value)] if value is not None else None
        if name == "priors_pacs":
            return value if isinstance(value, DicomNode) else DicomNode.parse(value)
        if "Path" in kind:
            return Path(value).expanduser()
        if kind.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value

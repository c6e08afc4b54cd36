"""Configuration: embedded defaults < config file (TOML) < PACS_TRIAGE_* environment < command line.

Every option is a declared field of `Config` with its default, type and description
(`pacs-triage config show` prints them with where each value came from). Every option
has three forms, e.g. `stable_after = 5` in the file given by `--config` or
`PACS_TRIAGE_CONFIG`, `PACS_TRIAGE_STABLE_AFTER=5`, and for the `serve` options
`--stable-after 5`. Options of one destination kind may also be written in a TOML
section: `[hl7] sending_facility = "X"` is `hl7_sending_facility`, and
`[hl7] destinations = [...]` is `hl7` (same for `[pacs]`, `[ups]`, `[webhook]`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "PACS_TRIAGE_"
SECTIONS = ("pacs", "ups", "hl7", "webhook")
#: Section keys that do not follow the "<section>_<key>" pattern.
SECTION_ALIASES = {("pacs", "destinations"): "pacs", ("ups", "destinations"): "ups",
                   ("hl7", "destinations"): "hl7", ("webhook", "destinations"): "webhook",
                   ("pacs", "priors"): "priors_pacs", ("pacs", "prefetch_aet"): "prefetch_aet"}


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


def option(default: Any, help: str, *, secret: bool = False):
    """A declared option: its default and the one-line description `config show` prints."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, "secret": secret})
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass
class Config:
    # --- DICOM listener
    ae_title: str = option("PACSTRIAGE", "our AE title (max. 16 characters)")
    port: int = option(11112, "DICOM port (C-ECHO / C-STORE SCP)")
    bind: str = option("0.0.0.0", "address the DICOM listener binds to")
    max_pdu: int = option(262144, "bytes: the largest P-DATA PDU we accept (announced to the peer, enforced)")
    max_associations: int = option(64, "concurrent associations (connections not yet associated included)")
    allowed_calling_aets: list[str] = option([], "calling AE titles allowed to associate; empty: any")
    allowed_networks: list[str] = option([], "CIDRs allowed to connect, e.g. [\"10.1.0.0/16\"]; empty: any")
    association_idle_timeout: float = option(120.0, "seconds without a complete PDU before the association is aborted")
    pdu_timeout: float = option(30.0, "seconds to receive one whole PDU once its first byte arrived (slow peers)")
    acse_timeout: float = option(10.0, "seconds from connection to a complete A-ASSOCIATE-RQ (slow-loris peers)")
    max_association_bytes: int = option(8 * 1024 ** 3, "bytes received per association, then aborted")
    max_association_seconds: float = option(4 * 3600.0, "lifetime of one association (s), then aborted")
    listeners: int = option(0, "DICOM listener processes sharing the port (SO_REUSEPORT); 0 = two per CPU core "
                            "(/metrics of the first counts them all)")
    listener_dispatch: str = option("balanced", "how connections reach the listener processes: \"balanced\" (the "
                                    "first accepts and hands each to the one with fewest in progress) or "
                                    "\"reuseport\" (the kernel's SO_REUSEPORT hash)")
    require_called_aet: bool = option(False, "reject associations not addressed to ae_title")
    tls_cert: Path | None = option(None, "PEM certificate (chain): the listener then speaks DICOM TLS only")
    tls_key: Path | None = option(None, "PEM private key of tls_cert")
    tls_ca: Path | None = option(None, "PEM CA(s): senders must present a client certificate signed by them")
    stable_after: float = option(10.0, "quiet period (s) after the last instance before a study is triaged")
    prepare_ahead: float = option(3.0, "seconds before the quiet period ends at which a quiet study's triage is "
                                  "prepared (computed; not saved, sent or shown); the triage uses it only if the "
                                  "study's instances, order and rulebook are unchanged when the quiet period ends, "
                                  "else computes afresh; at most half of stable_after; 0 = off")
    # --- HTTP
    http_port: int = option(9108, "port of /metrics, /healthz, /readyz")
    http_bind: str = option("127.0.0.1", "address the HTTP endpoints bind to (loopback unless a scraper needs more)")
    http_timeout: float = option(10.0, "seconds a client may take to send its request")
    http_max_clients: int = option(16, "concurrent HTTP requests; more are answered 503 at once")
    # --- console (served on the HTTP port under /console)
    console: bool = option(True, "serve the triage console at http://<http_bind>:<http_port>/console/ (`serve` only)")
    console_users: Path | None = option(None, "user file (name:scrypt hash lines, `pacs-triage console-user NAME`); "
                                        "unset = nobody can log in")
    console_anonymous: bool = option(True, "anonymous read-only console: study UIDs, priorities and flags only")
    console_secure_cookie: bool = option(True, "session cookie marked Secure (browsers accept it on localhost; "
                                         "use TLS in front otherwise)")
    console_session_hours: float = option(8.0, "console session lifetime, hours")
    console_poll_interval: float = option(0.5, "seconds between the console's reads of the worklist (live updates)")
    # --- storage and queue
    data_dir: Path = option(Path("data"), "studies, quarantine and the embedded Redis")
    redis_url: str | None = option(None, "shared Redis (redis://, unix://, redis+sentinel://h1:26379,h2:26379/"
                                   "master/0); unset = start and manage a local one in data_dir", secret=True)
    broker: str | None = option(None, "dramatiq message broker: redis://… or amqp://user:pass@host:5672/vhost "
                                "(RabbitMQ); unset = the Redis of redis_url", secret=True)
    fsync: bool = option(True, "fsync each instance before answering success (off only for benchmarks)")
    retention_days: float = option(30.0, "days a triaged study stays in data_dir after its last instance; 0 = forever")
    min_free_bytes: int = option(512 * 1024 * 1024, "below this free space on data_dir, C-STORE gets 0xA700")
    audit: bool = option(True, "append-only audit trail in <data_dir>/audit (`pacs-triage audit export`)")
    audit_retention_days: float = option(365.0, "days of audit kept; 0 = forever")
    # --- workers and rules
    workers: int = option(2, "worker threads per worker process (`serve`'s, or one `pacs-triage worker`)")
    worker_processes: int = option(0, "worker processes of `serve` (itself and its children, `workers` threads "
                                   "each; an image analysis holds one core): 0 = one per CPU core")
    no_workers: bool = option(False, "`serve` runs no workers; `pacs-triage worker` processes triage")
    rules_dir: Path | None = option(None, "rulebook directory; unset = the rulebook shipped in the package")
    log_level: str = option("INFO", "DEBUG, INFO, WARNING or ERROR")
    routine_wait_cap_minutes: float | None = option(None, "lift ROUTINE studies waiting longer (worklist order)")
    triage_lock_ttl: float = option(30.0, "per-study triage lock (s), renewed every ttl/3 while the triage runs")
    triage_lease: float = option(300.0, "a study queued this long (s) with no live triage is queued again")
    reconcile_interval: float = option(60.0, "seconds between checks of queued studies and of Redis restarts")
    broker_heartbeat_timeout: float = option(60.0, "dramatiq: a worker silent this long (s) is dead; its messages requeued")
    broker_idle_timeout: float = option(10.0, "an idle queue consumer fetches again after this long (s); a new "
                                        "message or a stop wakes it at once")
    shutdown_timeout: float = option(30.0, "SIGTERM: seconds for associations, then for in-flight triages")
    ct_volume_budget_mb: float | None = option(None, "MB of decoded CT volume the screw analysis may use; a larger series "
                                                     "is not assessed, with that reason; unset = volume.budget_mb in "
                                                     "rules/images/ct_hardware.yaml")
    # --- destinations, all kinds
    sink_attempts: int = option(8, "delivery attempts per destination before a dead letter")
    sink_backoff: float = option(2.0, "seconds before the first retry; doubles each attempt")
    sink_max_backoff: float = option(600.0, "largest delay between two attempts, seconds")
    # --- [pacs]: SR destinations and priors
    pacs: list[DicomNode] = option([], "AET@HOST:PORT list receiving the SR (C-STORE)")
    pacs_key_image: bool = option(True, "with a CT screw measurement, also send the key image (Secondary Capture, "
                                        "referenced from the SR)")
    priors_pacs: DicomNode | None = option(None, "C-FIND peer for priors; unset = the first of `pacs`")
    prefetch_aet: str | None = option(None, "C-MOVE the relevant priors to this reading-station AE")
    priors_refresh_delays: list[float] | None = option(None, "seconds before re-querying unavailable priors, e.g. [60, 300, 900, 3600]; the last repeats")
    # --- [ups]
    ups: list[DicomNode] = option([], "AET@HOST:PORT list of UPS worklist providers")
    ups_priority_map: dict | None = option(None, "our priority -> UPS priority, e.g. {STAT = \"HIGH\"}")
    ups_turnaround: dict | None = option(None, "target seconds per priority, e.g. {STAT = 1800}")
    ups_retrieve_aet: str | None = option(None, "AE title a workstation retrieves from; unset = first `pacs`")
    ups_timeout: float = option(10.0, "seconds to wait for the UPS provider")
    ups_worklist_label: str | None = option(None, "Worklist Label (0074,1202); unset = \"PACS-TRIAGE\"")
    ups_step_label: str | None = option(None, "Procedure Step Label (0074,1204); unset = \"Postoperative spine read\"")
    # --- [hl7]
    hl7: list[str] = option([], "HOST:PORT list of RIS receiving HL7 v2 over MLLP")
    hl7_timeout: float = option(10.0, "seconds to wait for the HL7 ACK")
    hl7_priority_map: dict | None = option(None, "our priority -> HL7 priority code, e.g. {URGENT = \"A\"}")
    hl7_sending_application: str | None = option(None, "MSH-3; unset = ae_title")
    hl7_sending_facility: str | None = option(None, "MSH-4")
    hl7_receiving_application: str | None = option(None, "MSH-5; unset = \"RIS\"")
    hl7_receiving_facility: str | None = option(None, "MSH-6")
    hl7_retry_on_reject: bool = option(False, "retry after an AR (application reject) as after an AE")
    hl7_listen: int | None = option(None, "MLLP port receiving RIS orders (ORM^O01, OMI^O23) and signed reports (ORU^R01); unset = none")
    hl7_listen_bind: str = option("0.0.0.0", "address the HL7 listener binds to")
    # --- RIS orders and closing the loop
    order_retention_days: float = option(30.0, "days a received order is kept (Redis), keyed by accession number and patient")
    order_retriage_hours: float = option(24.0, "an order arriving this long (h) after its study was triaged queues it again; 0 = never")
    mwl: DicomNode | None = option(None, "AET@HOST:PORT Modality Worklist (C-FIND) queried by accession number when no HL7 order is known")
    mwl_timeout: float = option(10.0, "seconds to wait for the Modality Worklist")
    ups_poll_interval: float = option(60.0, "seconds between N-GET polls of open UPS workitems (COMPLETED closes the entry); 0 = no polling")
    # --- [webhook]
    webhook: list[str] = option([], "URL list receiving the entry as JSON (HTTP POST)")
    webhook_secret: str | None = option(None, "HMAC secret signing web hook bodies", secret=True)
    webhook_timeout: float = option(10.0, "seconds to wait for a web hook's answer")

    @property
    def priors_node(self) -> DicomNode | None:
        """Where prior exams are queried: `priors_pacs`, else the first `pacs`."""
        return self.priors_pacs or (self.pacs[0] if self.pacs else None)

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None) -> "Config":
        """Defaults, then the file, then the environment, then `overrides` (non-None values)."""
        return cls.load_with_sources(path, env, overrides)[0]

    @classmethod
    def load_with_sources(cls, path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                          overrides: dict[str, Any] | None = None) -> tuple["Config", dict[str, str]]:
        """The configuration and, per option, where its value came from (default, file, environment, flag)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        path = path or env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    document = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: {exc}") from None
            for name, value in _flatten(document, path).items():
                values[name], sources[name] = value, f"file {path}"
        for name in OPTION_NAMES:
            key = ENV_PREFIX + name.upper()
            if key in env and env[key] != "":
                values[name], sources[name] = env[key], f"environment {key}"
        for name, value in (overrides or {}).items():
            if value is not None and value != [] and name in OPTION_NAMES:
                values[name], sources[name] = value, "command line"
        config = cls(**{k: _coerce(k, v) for k, v in values.items()})
        return config, {name: sources.get(name, "default") for name in OPTION_NAMES}

    def describe(self, sources: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every option: name, value (secrets masked), type, default, source and description."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not MISSING else f.default_factory()
            if f.metadata.get("secret") and value:
                value = "***"
            rows.append({"name": f.name, "value": _plain(value), "type": str(f.type), "default": _plain(default),
                         "source": (sources or {}).get(f.name, "default"), "help": f.metadata.get("help", "")})
        return rows


OPTION_NAMES = tuple(f.name for f in fields(Config))


def _flatten(document: dict[str, Any], path) -> dict[str, Any]:
    """Top-level keys as they are; `[section] key` as `section_key` (or its alias)."""
    values: dict[str, Any] = {}
    unknown = []
    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, subvalue in value.items():
                name = SECTION_ALIASES.get((key, sub), f"{key}_{sub}")
                if name in OPTION_NAMES:
                    values[name] = subvalue
                else:
                    unknown.append(f"[{key}] {sub}")
        elif key in OPTION_NAMES:
            values[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s): {', '.join(sorted(unknown))}")
    return values


def _plain(value: Any) -> Any:
    """A JSON/TOML-friendly rendering of an option value."""
    if isinstance(value, (Path, DicomNode)):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _mapping(value: Any) -> dict:
    """A TOML table, or `KEY=VALUE,KEY=VALUE` from the environment."""
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in _list(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE,..., got {value!r}")
        out[key.strip()] = val.strip()
    return out


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if value is None:
            return None
        if name in ("pacs", "ups"):
            return [v if isinstance(v, DicomNode) else DicomNode.parse(v) for v in _list(value)]
        if name in ("hl7", "webhook", "allowed_calling_aets", "allowed_networks"):
            return _list(value)
        if name == "priors_refresh_delays":
            return [float(v) for v in _list(value)]
        if name in ("priors_pacs", "mwl"):
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
        if kind.startswith("dict"):
            return _mapping(value)
        if kind.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value

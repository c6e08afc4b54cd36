"""Fault injection against real processes: `pacs-triage serve` / `worker` subprocesses,
a real redis-server with the shipped persistence (AOF, appendfsync everysec), Debian's
Orthanc as the PACS receiving the SRs, pynetdicom as the modality (so every status is
counted per instance).

Each fault ends with one row: studies sent, instances acknowledged, studies triaged,
studies delivered, lost, duplicated. *Lost* counts acknowledged instances missing from
the store, studies whose final worklist entry does not cover every acknowledged
instance, and triaged studies with no SR in the PACS. *Duplicated* counts SR objects
beyond the first per study in the PACS (the effect a duplicated delivery would have).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import redis
from pynetdicom import AE, StoragePresentationContexts

from core.processes import stop_process
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import RedisServer, free_port, service_ready, wait_for

ROWS: list[dict] = []

#: Short timeouts so that each fault recovers in seconds (configured, as a site would).
FAST = {
    "STABLE_AFTER": "1",
    "TRIAGE_LOCK_TTL": "2",
    "TRIAGE_LEASE": "4",
    "RECONCILE_INTERVAL": "1",
    "BROKER_HEARTBEAT_TIMEOUT": "3",
    "SINK_ATTEMPTS": "3",
    "SINK_BACKOFF": "0.2",
    "SINK_MAX_BACKOFF": "1",
    "PRIORS_REFRESH_DELAYS": "2,4",
    "MIN_FREE_BYTES": "0",
    "RETENTION_DAYS": "0",
    "WORKERS": "2",
    "LOG_LEVEL": "INFO",
}


class Proc:
    """One `pacs-triage` process with its own log."""

    def __init__(self, name: str, args: list, env: dict, log: Path, http_port: int):
        self.name, self.args, self.env, self.log, self.http_port = name, args, env, log, http_port
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Proc":
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *map(str, self.args)], stdout=fh,
                                     stderr=subprocess.STDOUT, env=self.env)
        fh.close()
        if wait:
            wait_for(lambda: service_ready(self.http_port, self.proc, self.log), timeout=30, what=self.name)
        return self

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, timeout=10)

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


@dataclass
class Cluster:
    tmp: Path
    redis: RedisServer
    orthanc: object
    data: Path
    env: dict
    procs: list = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, orthanc, redis_aof: bool = True, **overrides) -> "Cluster":
        r = RedisServer(tmp / "redis", aof=redis_aof).start()
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("PACS_TRIAGE_"):
                del env[k]
        env.update({f"PACS_TRIAGE_{k}": v for k, v in FAST.items()})
        env["PACS_TRIAGE_REDIS_URL"] = r.url
        env["PACS_TRIAGE_PACS"] = orthanc.node
        env.update({f"PACS_TRIAGE_{k.upper()}": str(v) for k, v in overrides.items()})
        return cls(tmp=tmp, redis=r, orthanc=orthanc, data=tmp / "data", env=env)

    def listener(self, name: str = "listener", port: int | None = None) -> Proc:
        port = port or free_port()
        http = free_port()
        p = Proc(name, ["serve", "--no-workers", "--data-dir", self.data, "--port", port, "--http-port", http],
                 self.env, self.tmp / f"{name}.log", http)
        p.dicom_port = port
        self.procs.append(p)
        return p

    def worker(self, name: str = "worker") -> Proc:
        http = free_port()
        p = Proc(name, ["worker", "--data-dir", self.data, "--http-port", http], self.env,
                 self.tmp / f"{name}.log", http)
        self.procs.append(p)
        return p

    def up(self) -> Proc:
        """A listener and a worker, started; returns the listener."""
        listener = self.listener()
        listener.start()
        self.worker().start()
        return listener

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.redis.stop()

    def logs(self) -> str:
        return "".join(p.log.read_text(errors="replace") for p in self.procs if p.log.exists())


def make_studies(tmp: Path, n: int, per_series: int = 3, prefix: str = "F") -> list[tuple[StudySpec, list[Path]]]:
    out = []
    for i in range(n):
        spec = StudySpec(accession=f"{prefix}{i:03d}", reason="Lombalgie à J2 d'une arthrodèse L4-L5, contrôle",
                         order_priority="URGENT", series=[SeriesSpec("MR", "SAG T2", per_series)])
        out.append((spec, write_study(tmp / "studies" / spec.accession, spec)))
    return out


def files_of(studies: list[tuple[StudySpec, list[Path]]]) -> list[Path]:
    return [f for _, fs in studies for f in fs]


class Modality:
    """pynetdicom SCU: C-STOREs file by file, counting acknowledged instances per study."""

    def __init__(self):
        self.acked: dict[str, set[str]] = {}
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def send(self, port: int, files: list[Path], pause: float = 0.0, stop: threading.Event | None = None) -> int:
        """Send over one association; return how many were acknowledged (0x0000)."""
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts[:120]
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSTRIAGE")
        if not assoc.is_established:
            return 0
        n = 0
        try:
            for f in files:
                if stop is not None and stop.is_set():
                    break
                ds = pydicom.dcmread(f)
                try:
                    status = assoc.send_c_store(ds)
                except Exception:
                    break
                code = getattr(status, "Status", None)
                if code is None:  # association aborted
                    break
                with self.lock:
                    self.statuses.append(int(code))
                    if code == 0:
                        self.acked.setdefault(ds.StudyInstanceUID, set()).add(ds.SOPInstanceUID)
                        n += 1
                if pause:
                    time.sleep(pause)
        finally:
            if assoc.is_established:
                assoc.release()
        return n

    def send_until_acked(self, port_of, files: list[Path], timeout: float = 60) -> None:
        """A modality that retries: send again what was not acknowledged, until it is."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [f for f in files if not self.is_acked(f)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} instance(s) never acknowledged")
            try:
                self.send(port_of(), missing)
            except Exception:
                pass
            time.sleep(0.3)

    def is_acked(self, f: Path) -> bool:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPInstanceUID"])
        return ds.SOPInstanceUID in self.acked.get(ds.StudyInstanceUID, set())

    @property
    def acked_count(self) -> int:
        return sum(len(v) for v in self.acked.values())


def sr_count(orthanc, study_uid: str) -> int:
    series = orthanc.post("/tools/find", {"Level": "Series", "Expand": True,
                                          "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}})
    return sum(len(s.get("Instances", [])) for s in series)


def entry(client: redis.Redis, study_uid: str) -> dict | None:
    import json

    raw = client.get(f"pt:entry:{study_uid}")
    return json.loads(raw) if raw else None


def settle(cluster: Cluster, modality: Modality, study_uids: list[str], timeout: float = 45) -> dict:
    """Wait until every study with an acknowledged instance is triaged (all of them) and its SR is in the PACS."""
    client = cluster.redis.client()

    def done():
        for uid in study_uids:
            acked = modality.acked.get(uid)
            if not acked:
                continue
            e = _safe(lambda: entry(client, uid))
            if not e or e.get("triage_failed") or e.get("instance_count", 0) < len(acked):
                return False
            if sr_count(cluster.orthanc, uid) < 1:
                return False
        return True

    try:
        wait_for(done, timeout=timeout, interval=0.3, what="every study triaged and delivered")
    except TimeoutError:
        pass  # the row says what is missing
    time.sleep(1.0)  # let late duplicates, if any, arrive
    return count(cluster, modality, study_uids)


def _safe(fn):
    try:
        return fn()
    except redis.RedisError:
        return None


def count(cluster: Cluster, modality: Modality, study_uids: list[str]) -> dict:
    client = cluster.redis.client()
    on_disk = {p.stem for p in (cluster.data / "studies").glob("*/*/*.dcm")}
    lost = duplicated = triaged = delivered = 0
    for uid in study_uids:
        acked = modality.acked.get(uid, set())
        lost += len(acked - on_disk)
        e = entry(client, uid)
        covered = bool(e) and not e.get("triage_failed") and e.get("instance_count", 0) >= len(acked)
        if e and not e.get("triage_failed"):
            triaged += 1
        if acked and not covered:
            lost += 1
        srs = sr_count(cluster.orthanc, uid)
        if srs:
            delivered += 1
        elif acked:
            lost += 1
        duplicated += max(0, srs - 1)
    return {"sent": len(study_uids), "acknowledged": modality.acked_count, "triaged": triaged,
            "delivered": delivered, "lost": lost, "duplicated": duplicated}


def record(fault: str, row: dict) -> dict:
    row = {"fault": fault, **row}
    ROWS.append(row)
    print(format_row(row), flush=True)
    return row


HEADER = ("fault", "sent", "acknowledged", "triaged", "delivered", "lost", "duplicated")


def format_row(row: dict) -> str:
    return (f"| {row['fault']:<52} | {row['sent']:>4} | {row['acknowledged']:>12} | {row['triaged']:>7} | "
            f"{row['delivered']:>9} | {row['lost']:>4} | {row['duplicated']:>10} |")


def table() -> str:
    head = (f"| {'fault':<52} | {'sent':>4} | {'acknowledged':>12} | {'triaged':>7} | {'delivered':>9} | "
            f"{'lost':>4} | {'duplicated':>10} |")
    sep = "|" + "|".join("-" * len(c) for c in head.strip("|").split("|")) + "|"
    return "\n".join([head, sep] + [format_row(r) for r in ROWS])

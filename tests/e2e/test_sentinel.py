"""Redis high availability: a master, a replica and three sentinels (Debian's redis-server and
redis-sentinel); `serve` is given a redis+sentinel:// URL for the index, the worklist and the broker.
The master is killed (SIGKILL) while studies arrive. Sentinel promotes the replica, the service
follows it, and every study whose instances were all acknowledged ends up triaged on the worklist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import free_port, require, serve_process, stop_processes, wait_for

pytestmark = pytest.mark.timeout(300)
STUDIES = 12
KILL_AFTER = 4
SERVICE = "pt-master"


class RedisSet:
    """redis-server master + replica and three redis-sentinel on loopback, in `workdir`."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.master, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    def _server(self, name, port, *extra):
        d = self.workdir / name
        d.mkdir()
        self.procs[name] = subprocess.Popen([require("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                             "--dir", str(d), "--save", "", "--appendonly", "yes", *extra],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _ping(port), what=f"redis {name}")

    def start(self) -> "RedisSet":
        self._server("master", self.master)
        self._server("replica", self.replica, "--replicaof", "127.0.0.1", str(self.master))
        wait_for(lambda: redis.Redis(port=self.replica).info("replication").get("master_link_status") == "up",
                 what="replica in sync")
        for n, port in enumerate(self.sentinels):
            conf = self.workdir / f"sentinel{n}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master} 2\n"
                            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                            f"sentinel failover-timeout {SERVICE} 10000\n"
                            f"sentinel parallel-syncs {SERVICE} 1\n")
            self.procs[f"sentinel{n}"] = subprocess.Popen([require("redis-sentinel"), str(conf)],
                                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.sentinels:
            wait_for(lambda p=port: _known(p), what="sentinels agreeing on the master")
        return self

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + f"/{SERVICE}/0"

    def current_master(self) -> int:
        return int(redis.Redis(port=self.sentinels[0]).sentinel_get_master_addr_by_name(SERVICE)[1])

    def kill_master(self) -> None:
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait(10)

    def stop(self) -> None:
        stop_processes(self.procs.values())


def _ping(port) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _known(port) -> bool:
    try:
        s = redis.Redis(port=port, socket_connect_timeout=1)
        return s.sentinel_get_master_addr_by_name(SERVICE) is not None and \
            int(s.sentinel_master(SERVICE).get("num-other-sentinels", 0)) >= 2
    except redis.RedisError:
        return False


def test_every_acknowledged_study_is_triaged_after_a_failover(tmp_path):
    redises = RedisSet(tmp_path).start()
    data = tmp_path / "data"
    port, http = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER="1", PACS_TRIAGE_REDIS_URL=redises.url,
               PACS_TRIAGE_RECONCILE_INTERVAL="5", PACS_TRIAGE_TRIAGE_LEASE="20")
    env.pop("PACS_TRIAGE_BROKER", None)
    log_path = tmp_path / "serve.log"
    acked, failed = [], []
    try:
        with serve_process(data, log_path, ["--listeners", "1", "--port", port], env, http_port=http,
                           ready_timeout=60, stop_timeout=60):
            first_master = redises.current_master()
            specs = [StudySpec(accession=f"ACC-HA{n}", patient_id=f"PH{n}", series=[SeriesSpec("DX", "FACE", 3)])
                     for n in range(STUDIES)]
            for n, spec in enumerate(specs):
                if n == KILL_AFTER:
                    redises.kill_master()
                files = write_study(tmp_path / f"s{n}", spec)
                rc = subprocess.run([require("storescu"), "-aec", "PACSTRIAGE", "127.0.0.1", str(port),
                                     *map(str, files)], capture_output=True, timeout=120).returncode
                (acked if rc == 0 else failed).append(spec.accession)
                time.sleep(0.3)
            wait_for(lambda: redises.current_master() != first_master, timeout=60, what="sentinel failover")

            def triaged():
                out = subprocess.run([sys.executable, "-m", "agent.cli", "worklist", "--json", "--data-dir",
                                      str(data)], capture_output=True, text=True, timeout=60, env=env)
                if out.returncode != 0:
                    return None
                got = {e["accession_number"] for e in json.loads(out.stdout)}
                return got if set(acked) <= got else None

            got = wait_for(triaged, timeout=120, interval=2, what="every acknowledged study on the worklist")
            print(f"sent {STUDIES}, acknowledged {len(acked)}, refused {len(failed)}, "
                  f"triaged {len(got & set(acked))}, lost {len(set(acked) - got)}")
            assert len(acked) >= STUDIES - 2, f"the service refused too much during the failover: {failed}"
            assert set(acked) - got == set()
    finally:
        redises.stop()

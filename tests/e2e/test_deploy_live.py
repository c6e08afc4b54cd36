"""deploy/ run for real.

The Redis Sentinel set that deploy/ ships (compose and Kubernetes run the same two scripts,
deploy/kubernetes/redis-ha/redis.sh and sentinel.sh), run for real on loopback with Debian's
redis-server and redis-sentinel: a master, a replica and three sentinels start from the scripts,
pacs-triage's client finds the master through a redis+sentinel:// URL of the shipped form, the
master is killed, a sentinel promotes the replica and the client follows; the old master started
again by its script comes back as a replica (not a second master), and a sentinel started again
monitors the promoted master.

The DICOM TLS option (compose.tls.yaml, the Kubernetes dicom-tls component): `serve` started with
exactly the settings they set, certificate files at the paths they mount, takes DCMTK's TLS
association with a client certificate and refuses plain TCP."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from core.redis_client import client_from_url
from peers import dcmtk, free_port, require, serve_process, stop_processes, wait_for

pytestmark = pytest.mark.timeout(180)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPTS = DEPLOY / "kubernetes" / "redis-ha"
PASSWORD = "test-password-0123456789"
NAME = "pacs-triage"


class ScriptedSet:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.redis = {"a": free_port(), "b": free_port()}
        self.sentinels = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, **extra) -> dict:
        path = os.pathsep.join([str(Path(require("redis-server")).parent), str(Path(require("redis-sentinel")).parent),
                                os.environ.get("PATH", "")])
        return {"PATH": path, "REDIS_PASSWORD": PASSWORD, "INITIAL_MASTER": "localhost",
                "INITIAL_MASTER_PORT": str(self.redis["a"]), "ANNOUNCE_HOST": "localhost", "BIND": "127.0.0.1",
                "SENTINELS": ",".join(f"localhost:{p}" for p in self.sentinels), "MASTER_NAME": NAME,
                # 3 s, not 1 s (the shipped default is 5 s): with 1 s a sentinel once saw the just-promoted master "down" one
                # second after the switch and failed over again, to the old master restarted empty and not yet in sync
                # (session 17's clean-clone run); the test is about the scripts, not about a hair-trigger setting
                "DOWN_AFTER_MS": "3000", "FAILOVER_TIMEOUT_MS": "10000", **extra}

    def start_redis(self, name: str) -> None:
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        self.procs[name] = subprocess.Popen(["sh", str(SCRIPTS / "redis.sh")], cwd=d,
                                            env=self.env(REDIS_PORT=str(self.redis[name]), REDIS_DIR=str(d)),
                                            stdout=open(d / "out.log", "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._ping(self.redis[name]), what=f"redis {name}")

    def start_sentinel(self, n: int) -> None:
        d = self.workdir / f"sentinel{n}"
        self.procs[f"s{n}"] = subprocess.Popen(
            ["sh", str(SCRIPTS / "sentinel.sh")], cwd=self.workdir,
            env=self.env(SENTINEL_PORT=str(self.sentinels[n]), SENTINEL_DIR=str(d)),
            stdout=open(self.workdir / f"sentinel{n}.log", "ab"), stderr=subprocess.STDOUT)

    def _ping(self, port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def role(self, name: str) -> str:
        return redis.Redis(port=self.redis[name], password=PASSWORD).info("replication")["role"]

    def sentinel(self, n: int) -> redis.Redis:
        return redis.Redis(port=self.sentinels[n], password=PASSWORD, socket_connect_timeout=1, decode_responses=True)

    def master_seen_by(self, n: int):
        try:
            s = self.sentinel(n)
            host, port = s.sentinel_get_master_addr_by_name(NAME)
            return (host, int(port)) if int(s.sentinel_master(NAME).get("num-other-sentinels", 0)) >= 2 else None
        except (redis.RedisError, TypeError):
            return None

    @property
    def url(self) -> str:  # the form deploy/ gives PACS_TRIAGE_REDIS_URL
        hosts = ",".join(f"localhost:{p}" for p in self.sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{NAME}/0?sentinel_password={PASSWORD}"

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def stop(self) -> None:
        stop_processes(self.procs.values())


def test_shipped_sentinel_scripts_fail_over_and_bring_the_old_master_back_as_a_replica(tmp_path):
    s = ScriptedSet(tmp_path)
    try:
        s.start_redis("a")
        s.start_redis("b")
        assert (s.role("a"), s.role("b")) == ("master", "slave")
        wait_for(lambda: redis.Redis(port=s.redis["b"], password=PASSWORD).info("replication")
                 .get("master_link_status") == "up", what="replica in sync")
        for n in range(3):
            s.start_sentinel(n)
        for n in range(3):
            assert wait_for(lambda n=n: s.master_seen_by(n), timeout=30,
                            what=f"sentinel {n} with its peers") == ("localhost", s.redis["a"])
        client = client_from_url(s.url, socket_timeout=2, socket_connect_timeout=2)
        client.set("pt:test", "before")

        s.kill("a")
        wait_for(lambda: s.master_seen_by(0) == ("localhost", s.redis["b"]), timeout=60, what="failover to b")
        assert s.role("b") == "master"
        wait_for(lambda: _set(client, "after"), timeout=30, what="the client following the promoted master")
        assert redis.Redis(port=s.redis["b"], password=PASSWORD).get("pt:test") == b"after"

        s.start_redis("a")  # the script asks the sentinels: a comes back as a replica of b
        assert "starting as a replica of localhost:%d" % s.redis["b"] in (tmp_path / "a" / "out.log").read_text()
        wait_for(lambda: s.role("a") == "slave", timeout=30, what="old master demoted")
        wait_for(lambda: redis.Redis(port=s.redis["a"], password=PASSWORD).get("pt:test") == b"after",
                 timeout=90, what="old master resynchronised from the new one")

        s.kill("s2")  # a sentinel restarted by its script monitors the current master, not INITIAL_MASTER
        s.start_sentinel(2)
        assert wait_for(lambda: s.master_seen_by(2), timeout=30, what="restarted sentinel") == \
            ("localhost", s.redis["b"])
        said = [line for line in (tmp_path / "sentinel2.log").read_text().splitlines()
                if line.startswith("sentinel.sh")]
        assert said[-1] == "sentinel.sh: monitoring pacs-triage at localhost:%d" % s.redis["b"]
    finally:
        s.stop()


def _set(client, value) -> bool:
    try:
        return bool(client.set("pt:test", value))
    except redis.RedisError:
        return False


def _tls_settings(source: str) -> tuple[dict[str, str], str]:
    """(PACS_TRIAGE_TLS_* settings, the directory they expect the certificate files in)."""
    if source == "compose":
        svc = yaml.safe_load((DEPLOY / "compose" / "compose.tls.yaml").read_text())["services"]["listener"]
        env = svc["environment"]
        [mount] = [v for v in svc["volumes"] if v.startswith("./tls:")]
        return env, mount.split(":")[1]
    ops = yaml.safe_load((DEPLOY / "kubernetes" / "dicom-tls" / "listener-tls.yaml").read_text())
    env = {op["value"]["name"]: op["value"]["value"] for op in ops if op["path"].endswith("/env/-")}
    [mount] = [op["value"]["mountPath"] for op in ops if op["path"].endswith("/volumeMounts/-")]
    return env, mount


def _certificate(directory: Path, name: str, key: Path, cert: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, cwd=directory)


@pytest.mark.parametrize("source", ["compose", "kubernetes"])
def test_dicom_tls_option_of_the_deploy_files_works(tmp_path, source):
    settings, mounted = _tls_settings(source)
    assert set(settings) == {"PACS_TRIAGE_TLS_CERT", "PACS_TRIAGE_TLS_KEY", "PACS_TRIAGE_TLS_CA"}
    tls = tmp_path / "tls"  # the files as the operator puts them (compose ./tls, the Secret's keys)
    tls.mkdir()
    _certificate(tls, "pacs-triage", tls / "tls.key", tls / "tls.crt")
    _certificate(tmp_path, "modality", tmp_path / "modality.key", tmp_path / "modality.crt")
    (tls / "ca.crt").write_bytes((tmp_path / "modality.crt").read_bytes())  # the modalities' CA
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_TRIAGE_")}
    env.update({k: v.replace(mounted, str(tls)) for k, v in settings.items()})
    assert all(Path(v).is_file() for k, v in env.items() if k in settings), "the settings name other files"
    port, http = free_port(), free_port()
    with serve_process(tmp_path / "data", tmp_path / "serve.log", ["--port", port, "--listeners", "1"], env,
                       http_port=http):
        dcmtk("echoscu", "+tls", tmp_path / "modality.key", tmp_path / "modality.crt", "+cf", tls / "tls.crt",
              "-aec", "PACSTRIAGE", "127.0.0.1", port, timeout=30)
        with pytest.raises(RuntimeError):  # plain TCP is refused: TLS only
            dcmtk("echoscu", "-to", "5", "-aec", "PACSTRIAGE", "127.0.0.1", port, timeout=20)

"""Shared fixtures: a real Redis and a real Orthanc, started once per session."""

from __future__ import annotations

import os

import pytest
import redis

from peers import Orthanc, RedisServer, _ping

OUR_PREFIXES = ("pt:*", "pacs-triage:*")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """REDIS_URL if it answers, else a redis-server started for the session."""
    url = os.environ.get("REDIS_URL")
    if url and _ping(redis.Redis.from_url(url, socket_connect_timeout=1)):
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url):
    """A client on a clean namespace: our keys are removed before and after each test."""
    client = redis.Redis.from_url(redis_url)

    def clean():
        for pattern in OUR_PREFIXES:
            keys = list(client.scan_iter(pattern, count=1000))
            if keys:
                client.delete(*keys)

    clean()
    yield client
    clean()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """Debian's Orthanc as the PACS for the whole session."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker(redis_url):
    """The dramatiq Redis broker with the actors bound to it (once per test process)."""
    from core.config import Config
    from workers import broker as broker_module
    from workers import runtime

    return broker_module.setup(redis_url, context=runtime.Context(Config(redis_url=redis_url)))


@pytest.fixture
def actors(broker):
    """workers.actors, bound to the session's broker."""
    import workers.actors

    return workers.actors


@pytest.fixture
def workers_running(broker, redis_url, redis_client):
    """In-process dramatiq worker threads on every queue; yields configure(**Config options)."""
    from dramatiq import Worker

    from core.config import Config
    from workers import broker as broker_module
    from workers import runtime

    def configure(**options):
        cfg = Config(redis_url=redis_url, **options)
        broker_module.bind(broker, runtime.Context(cfg))
        return cfg

    for queue in broker.get_declared_queues():
        broker.flush(queue)
    configure()
    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield configure
    worker.stop(timeout=10_000)
    for queue in broker.get_declared_queues():
        broker.flush(queue)


#: What makes a test need a real peer process (Redis, Orthanc, DCMTK, the service itself, our own
#: command run as a subprocess, a process pool).
PEER_FIXTURES = {"redis_url", "redis_client", "orthanc", "broker", "actors", "workers_running"}
PEER_WORDS = ("RedisServer", "Orthanc(", "storescu", "echoscu", "service_ready", "redis-server",
              "sys.executable", "run_family")
#: Pure but heavy (seconds each): CT phantoms decoded and analysed, the whole case book run again.
SLOW = ("tests/workers/test_ct_hardware.py", "tests/workers/test_ct_volume.py", "tests/workers/test_ct_blind.py",
        "tests/rules/test_rules_metamorphic.py", "tests/rules/test_rules_cases.py", "tests/rules/test_rules_noise.py",
        "tests/rules/test_rules_loader.py::test_test_command_table_and_failures",
        "tests/rules/test_rules_loader.py::test_rule_without_case_fails_test_command")


def pytest_configure(config):
    config.addinivalue_line("markers", "peers: needs a real peer process (Redis, Orthanc, DCMTK, the service, our "
                                       "command as a subprocess); `pytest -m 'not peers'` runs the pure tests")
    config.addinivalue_line("markers", "slow: pure but heavy (CT phantoms, the whole case book again); "
                                       "`pytest -m 'not peers and not slow'` runs in seconds")


def pytest_collection_modifyitems(config, items):
    sources: dict[str, str] = {}
    for item in items:
        path = str(item.path)
        if path not in sources:
            sources[path] = item.path.read_text(errors="replace")
        if PEER_FIXTURES & set(getattr(item, "fixturenames", ())) or any(w in sources[path] for w in PEER_WORDS):
            item.add_marker(pytest.mark.peers)
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)

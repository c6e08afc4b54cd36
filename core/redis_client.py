"""Redis clients from a URL: a single server, or a master found through Redis Sentinel.

- ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix:///path/redis.sock``: redis-py's own URLs;
- ``redis+sentinel://[:password@]host1:port1[,host2:port2…]/service_name[/db]``: the current master
  of ``service_name`` as the sentinels at those addresses know it. The client asks the sentinels
  again after a connection error, so after a failover it talks to the promoted replica.
  The password (if any) is the Redis one; ``?sentinel_password=…`` gives the sentinels' own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> dict[str, Any]:
    """The parts of a redis+sentinel:// URL: sentinels [(host, port)], service, db, password."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError("not a redis+sentinel:// URL")
    netloc = parts.netloc.rsplit("@", 1)
    auth, hosts = (netloc[0], netloc[1]) if len(netloc) == 2 else ("", netloc[0])
    username, _, password = auth.partition(":") if ":" in auth else ("", "", auth)
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL without a service name, e.g. redis+sentinel://h:26379/mymaster/0")
    query = parse_qs(parts.query)
    return {
        "sentinels": sentinels,
        "service": unquote(path[0]),
        "db": int(path[1]) if len(path) > 1 else 0,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "sentinel_password": unquote(query["sentinel_password"][0]) if "sentinel_password" in query else None,
        "ssl": parts.scheme.startswith("rediss"),
    }


def client_from_url(url: str, **kwargs: Any) -> redis.Redis:
    """A redis.Redis for any URL above; `kwargs` go to the client (timeouts, retry, …)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    p = parse_sentinel(url)
    sentinel_kwargs = {"socket_connect_timeout": 2, "socket_timeout": 2}
    if p["sentinel_password"]:
        sentinel_kwargs["password"] = p["sentinel_password"]
    connect = {k: v for k, v in kwargs.items() if k in ("socket_connect_timeout", "socket_timeout")}
    sentinel = Sentinel(p["sentinels"], sentinel_kwargs=sentinel_kwargs, **connect)
    extra = {"ssl": True} if p["ssl"] else {}
    return sentinel.master_for(p["service"], db=p["db"], username=p["username"], password=p["password"],
                               **extra, **kwargs)

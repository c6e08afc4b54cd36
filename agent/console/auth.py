"""Console users and sessions: a user file with scrypt-hashed passwords, server-side sessions
with a CSRF token each.

User file (`console_users`): one ``name:scrypt$N$r$p$salt_hex$hash_hex`` line per user,
written by ``pacs-triage console-user NAME`` (the password is read from stdin, never from
the command line). Lines starting with ``#`` are comments.

Sessions live in the serving process (a restart logs everyone out); the cookie is an
opaque random token, HttpOnly, SameSite=Strict and Secure (browsers accept Secure cookies
from http://localhost and 127.0.0.1; put TLS in front for any other address).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
COOKIE = "pt_console"
LOGIN_CSRF_COOKIE = "pt_login_csrf"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)), maxmem=2 ** 26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def read_users(path: Path | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    users = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            name, stored = line.split(":", 1)
            users[name.strip()] = stored.strip()
    return users


def add_user(path: Path, name: str, password: str) -> None:
    """Add or replace a user in the file (mode 0600)."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError("a user name has no colon and no space")
    users = read_users(path)
    users[name] = hash_password(password)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# pacs-triage console users: name:scrypt hash (pacs-triage console-user NAME)\n")
        for n, stored in sorted(users.items()):
            fh.write(f"{n}:{stored}\n")
    os.replace(tmp, path)


@dataclass
class Session:
    user: str
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


class Sessions:
    def __init__(self, users_file: Path | None, lifetime_s: float = 8 * 3600, max_sessions: int = 1000):
        self.users_file = users_file
        self.lifetime = lifetime_s
        self.max = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, name: str, password: str) -> str | None:
        """A new session token, or None. The user file is read at each login (edits need no restart)."""
        stored = read_users(self.users_file).get(name)
        # Same work whether or not the user exists (no user enumeration by timing).
        ok = verify_password(password, stored or hash_password("x", salt=b"0" * 16))
        if not (stored and ok):
            return None
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._purge(now)
            if len(self._sessions) >= self.max:
                oldest = min(self._sessions, key=lambda t: self._sessions[t].created)
                del self._sessions[oldest]
            self._sessions[token] = Session(name, secrets.token_urlsafe(24), now + self.lifetime)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if s.expires < time.time():
                del self._sessions[token]
                return None
            return s

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _purge(self, now: float) -> None:
        for t in [t for t, s in self._sessions.items() if s.expires < now]:
            del self._sessions[t]

"""Balanced dispatch of DICOM connections over the listener processes of `serve`.

With SO_REUSEPORT the kernel hashes each connection's addresses to one of the listening
processes: a few long associations (eight modalities) land unevenly, and one process (one
core) often receives most of them while another is idle. With `listener_dispatch =
"balanced"` (the default) only the first process listens: it accepts each connection and
hands the connected socket (SCM_RIGHTS over a UNIX socket pair) to the process with the
fewest connections in progress, itself included. Each child says when a connection it was
given has closed (one byte back on the same pair), so the counts stay exact.

The child end serves the handed-over sockets as its own accepted ones (TLS, limits and the
durable-before-success path unchanged); if a child has died its pair reports end of file
and it gets no more connections until it is started again.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading

log = logging.getLogger(__name__)

#: Environment variable naming a listener child's end of its pair (a file descriptor number).
FD_ENV = "PACS_TRIAGE_DISPATCH_FD"

_HANDED = b"c"  # parent -> child: a connection (its descriptor attached)
_CLOSED = b"d"  # child -> parent: one connection given earlier has closed


def pair() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end): a UNIX SOCK_SEQPACKET pair (one message per hand-over)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Dispatcher:
    """The accepting process's side: picks the least-loaded process for each connection."""

    def __init__(self):
        self._local = 0  # connections the accepting process serves itself
        self._lock = threading.Lock()
        self._channels: dict[int, socket.socket] = {}
        self._inflight: dict[int, int] = {}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        self._thread = threading.Thread(target=self._read_closures, name="dispatch", daemon=True)
        self._thread.start()

    def attach(self, slot: int, channel: socket.socket) -> None:
        """Child `slot` (started or restarted) is reachable over `channel`."""
        with self._lock:
            old = self._channels.pop(slot, None)
            self._channels[slot] = channel
            self._inflight[slot] = 0
        if old is not None:
            self._forget(old)
        self._sel.register(channel, selectors.EVENT_READ, slot)
        os.write(self._wake_w, b"x")

    def loads(self) -> dict[int, int]:
        """Connections in progress per process: 0 is the accepting one, 1.. its children."""
        with self._lock:
            return {0: self._local, **self._inflight}

    def local_closed(self) -> None:
        """A connection the accepting process served itself has closed."""
        with self._lock:
            self._local = max(0, self._local - 1)

    def route(self, conn: socket.socket) -> bool:
        """Hand `conn` to the least-loaded child; False when this process should serve it
        (it has fewer connections than every child, or no child can take it: counted here,
        `local_closed` when it ends). On True the caller closes its own copy of the socket."""
        while True:
            with self._lock:
                if not self._inflight:
                    self._local += 1
                    return False
                slot = min(self._inflight, key=lambda s: (self._inflight[s], s))
                if self._local < self._inflight[slot]:
                    self._local += 1
                    return False
                channel = self._channels[slot]
                self._inflight[slot] += 1
            try:
                socket.send_fds(channel, [_HANDED], [conn.fileno()])
                return True
            except OSError as exc:  # the child is gone: forget it, try the next one
                log.warning("listener process %d cannot take a connection (%s)", slot, type(exc).__name__)
                self.detach(slot, channel)

    def detach(self, slot: int, channel: socket.socket) -> None:
        with self._lock:
            if self._channels.get(slot) is not channel:
                return
            del self._channels[slot]
            del self._inflight[slot]
        self._forget(channel)

    def _forget(self, channel: socket.socket) -> None:
        try:
            self._sel.unregister(channel)
        except (KeyError, ValueError):
            pass
        channel.close()

    def _read_closures(self) -> None:
        while not self._stopped:
            for key, _ in self._sel.select(None):
                if key.data is None:
                    os.read(self._wake_r, 64)
                    continue
                slot, channel = key.data, key.fileobj
                try:
                    message = channel.recv(64)
                except OSError:
                    message = b""
                if not message:  # the child exited
                    self.detach(slot, channel)
                    continue
                with self._lock:
                    if slot in self._inflight and self._channels.get(slot) is channel:
                        self._inflight[slot] = max(0, self._inflight[slot] - message.count(_CLOSED))

    def stop(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"x")
        self._thread.join(2)
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._inflight.clear()
        for channel in channels:
            self._forget(channel)
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


class Receiver:
    """A listener child's side: connections handed over by the accepting process."""

    def __init__(self, channel: socket.socket):
        self.channel = channel
        self._send_lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "Receiver | None":
        fd = os.environ.get(FD_ENV)
        if not fd:
            return None
        return cls(socket.socket(fileno=int(fd)))

    def fileno(self) -> int:
        return self.channel.fileno()

    def receive(self) -> socket.socket | None:
        """The next connection handed over (None: a message without one). EOFError when the
        accepting process is gone."""
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 16, 4)
        except OSError as exc:
            raise EOFError("dispatch channel closed") from exc
        if not message:
            for fd in fds:
                os.close(fd)
            raise EOFError("dispatch channel closed")
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            return None
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(None)  # as an accepted socket: blocking, pynetdicom sets its own timeouts
        return conn

    def closed(self) -> None:
        """One connection handed over has closed: tell the accepting process."""
        with self._send_lock:
            try:
                self.channel.send(_CLOSED)
            except OSError:
                pass

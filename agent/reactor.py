"""pynetdicom's reactors, woken by their events instead of 1 ms polls.

Each association runs two pynetdicom threads that poll: the DUL reactor sleeps
`_run_loop_delay` (1 ms) whenever a loop found nothing to do, and the association reactor
sleeps 1 ms before every look at its DIMSE message queue. On one association that is up
to a millisecond to notice each C-STORE request and another to send its response — about
a third of a second for a 300-instance CT — and with several associations at once the
wake-ups compete for the interpreter lock.

`install()` keeps both loops and their timeouts exactly as they are (every check still
runs at least once a millisecond), but makes the waits end early:

- the DUL reactor's wait ends when the peer's socket becomes readable or when a primitive
  is queued for sending (`send_pdu` writes one byte to the reactor's wake-up socket pair);
- the association reactor's wait ends when a decoded DIMSE message is queued for it.

Threads that are not reactors (and other sleeps of pynetdicom) sleep as before.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time as _time

from pynetdicom import association as _association
from pynetdicom import dul as _dul

_POLL = 0.001  # pynetdicom's reactor delay, in both loops


def _dul_wait(provider, seconds: float) -> None:
    wake = provider.__dict__.get("_pt_wake")
    if wake is None or not provider.to_provider_queue.empty():
        if wake is None:
            _time.sleep(seconds)
        return
    rd = [wake[0]]
    sock = getattr(provider.socket, "socket", None)
    if sock is not None:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes waiting that select() cannot see
        if sock.fileno() >= 0:
            rd.append(sock)
    try:
        ready, _, _ = select.select(rd, [], [], seconds)
    except (OSError, ValueError):  # the socket closed meanwhile: the loop sees it
        return
    if wake[0] in ready:
        try:
            wake[0].recv(4096)
        except OSError:
            pass


def _assoc_wait(assoc, seconds: float) -> None:
    q = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    if q is None:
        _time.sleep(seconds)
        return
    with q.not_empty:
        if not q._qsize():
            q.not_empty.wait(seconds)


class _Clock:
    """The `time` module as a pynetdicom module sees it, with `sleep` event-aware."""

    def __init__(self, wait):
        self._wait = wait

    def __getattr__(self, name):
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        if seconds == _POLL:
            self._wait(threading.current_thread(), seconds)
        else:
            _time.sleep(seconds)


def _dul_sleep(thread, seconds: float) -> None:
    if isinstance(thread, _dul.DULServiceProvider):
        _dul_wait(thread, seconds)
    else:
        _time.sleep(seconds)


def _assoc_sleep(thread, seconds: float) -> None:
    if isinstance(thread, _association.Association):
        _assoc_wait(thread, seconds)
    else:
        _time.sleep(seconds)


_original_run_reactor = _dul.DULServiceProvider.run_reactor
_original_send_pdu = _dul.DULServiceProvider.send_pdu


def _run_reactor(self) -> None:
    pair = socket.socketpair()
    for s in pair:
        s.setblocking(False)
    self._pt_wake = pair
    try:
        _original_run_reactor(self)
    finally:
        self._pt_wake = None
        for s in pair:
            s.close()


def _send_pdu(self, primitive) -> None:
    _original_send_pdu(self, primitive)
    wake = self.__dict__.get("_pt_wake")
    if wake is not None:
        try:
            wake[1].send(b"\0")
        except OSError:  # closed, or its buffer full (the reactor has a byte to read already)
            pass


def install() -> None:
    """Idempotent; before any association is made (the DUL thread's target is bound then)."""
    if getattr(_dul.DULServiceProvider.run_reactor, "_pt_reactor", False):
        return
    _run_reactor._pt_reactor = True
    _dul.DULServiceProvider.run_reactor = _run_reactor
    _dul.DULServiceProvider.send_pdu = _send_pdu
    _dul.time = _Clock(_dul_sleep)
    _association.time = _Clock(_assoc_sleep)

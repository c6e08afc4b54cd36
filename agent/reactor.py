"""pynetdicom's reactors, woken by their events instead of 1 ms polls.

Each association runs two pynetdicom threads that poll: the DUL reactor sleeps
`_run_loop_delay` (1 ms) whenever a loop found nothing to do, and the association reactor
sleeps 1 ms before every look at its DIMSE message queue. On one association that is up
to a millisecond to notice each C-STORE request and another to send its response — about
a third of a second for a 300-instance CT — and with several associations at once the
wake-ups (2,000 a second per association, each taking the interpreter lock) compete with
the threads that do the work: 15-20 % of the listeners' CPU with 8 senders at once.

`install()` keeps both loops and every check they make, but each wait ends on the event
that the check looks for, and otherwise lasts at most `LONGEST_WAIT`:

- the DUL reactor's wait ends when the peer's socket becomes readable, when a primitive
  is queued for sending (`send_pdu`) or when the reactor is told to stop (`_kill_thread`
  set): each writes one byte to the reactor's wake-up socket pair;
- the association reactor's wait ends when a decoded DIMSE message is queued for it, when
  the DUL queues a primitive for the user (release or abort request), when the DUL
  reactor ends, or when the association is killed (`_kill` set).

What is left on the longest wait only are the timers (ARTIM, the network idle timeout),
counted in seconds: noticed within `LONGEST_WAIT` of their expiry.

Threads that are not reactors (and other sleeps of pynetdicom) sleep as before.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time as _time

from pynetdicom import association as _association
from pynetdicom import dul as _dul

_POLL = 0.001  # pynetdicom's reactor delay, in both loops
#: The longest a reactor waits when no event comes (timers only are checked on it).
LONGEST_WAIT = 0.02


def _dul_wait(provider, seconds: float) -> None:
    wake = provider.__dict__.get("_pt_wake")
    if wake is None or not provider.to_provider_queue.empty():
        if wake is None:
            _time.sleep(seconds)
        return
    if provider.__dict__.get("_pt_kill"):
        return
    rd = [wake[0]]
    sock = getattr(provider.socket, "socket", None)
    if sock is not None:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes waiting that select() cannot see
        if sock.fileno() >= 0:
            rd.append(sock)
    try:
        ready, _, _ = select.select(rd, [], [], LONGEST_WAIT)
    except (OSError, ValueError):  # the socket closed meanwhile: the loop sees it
        return
    if wake[0] in ready:
        try:
            wake[0].recv(4096)
        except OSError:
            pass


def _wake_dul(provider) -> None:
    wake = provider.__dict__.get("_pt_wake")
    if wake is not None:
        try:
            wake[1].send(b"\0")
        except OSError:  # closed, or its buffer full (the reactor has a byte to read already)
            pass


def _assoc_wait(assoc, seconds: float) -> None:
    q = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    if q is None:
        _time.sleep(seconds)
        return
    dul = getattr(assoc, "dul", None)
    if dul is None or not isinstance(dul.to_user_queue, _UserQueue):
        timeout = seconds  # not watched: the DUL's primitives would wait for the next poll
    else:
        timeout = LONGEST_WAIT
    with q.not_empty:
        if not q._qsize() and not assoc.__dict__.get("_pt_kill") and not (dul is not None and dul.to_user_queue._qsize()):
            q.not_empty.wait(timeout)


def _wake_assoc(assoc) -> None:
    q = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    if q is not None:
        with q.not_empty:
            q.not_empty.notify_all()


class _UserQueue(queue.Queue):
    """The DUL's queue of primitives for the user: a put also wakes the association reactor."""

    _pt_assoc = None

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        if self._pt_assoc is not None:
            _wake_assoc(self._pt_assoc)


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
    if type(self.to_user_queue) is queue.Queue:  # nothing can be in flight yet: the reactor reads the peer
        self.to_user_queue.__class__ = _UserQueue
        self.to_user_queue._pt_assoc = self.assoc
    try:
        _original_run_reactor(self)
    finally:
        self._pt_wake = None
        for s in pair:
            s.close()
        _wake_assoc(self.assoc)  # the association reactor checks that the DUL still runs


def _send_pdu(self, primitive) -> None:
    _original_send_pdu(self, primitive)
    _wake_dul(self)


def _woken_flag(wake):
    """A stop flag of pynetdicom's (`_kill_thread`, `_kill`) as a property whose setting to True also wakes its reactor."""

    def get(self) -> bool:
        return self.__dict__.get("_pt_kill", False)

    def set_(self, value: bool) -> None:
        self.__dict__["_pt_kill"] = value
        if value:
            wake(self)

    return property(get, set_)


def install() -> None:
    """Idempotent; before any association is made (the DUL thread's target is bound then)."""
    if getattr(_dul.DULServiceProvider.run_reactor, "_pt_reactor", False):
        return
    _run_reactor._pt_reactor = True
    _dul.DULServiceProvider.run_reactor = _run_reactor
    _dul.DULServiceProvider.send_pdu = _send_pdu
    _dul.DULServiceProvider._kill_thread = _woken_flag(_wake_dul)
    _association.Association._kill = _woken_flag(_wake_assoc)
    _dul.time = _Clock(_dul_sleep)
    _association.time = _Clock(_assoc_sleep)

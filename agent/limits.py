"""Limits on what a DICOM peer may make the listener hold: memory, time, slots.

pynetdicom reads each PDU whole (its length comes from the peer, up to 4 GiB) and its
per-read timeout is reset by every byte, so one slow or hostile peer can hold memory
and an association slot for as long as it likes. The listener's sockets therefore read
through `guarded_recv`, which refuses:

- a PDU longer than the limit (max_pdu, at least 1 MiB for association PDUs), before
  reading it;
- a peer not in `allowed_networks`;
- an A-ASSOCIATE-RQ not complete `acse_timeout` seconds after the connection opened;
- a PDU not complete `pdu_timeout` seconds after its first byte (trickling peers);
- more than `max_association_bytes`, or an association older than `max_association_seconds`.

Refusing closes the connection (pynetdicom's "transport connection closed" event), so the
slot is freed. Only sockets of an AE carrying `Limits` (the listener's) are guarded: the
sinks' and priors' client sockets in the same process are not.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field

from pynetdicom import transport

log = logging.getLogger(__name__)

MIN_PDU_LIMIT = 1024 * 1024


class LimitExceeded(OSError):
    pass


@dataclass
class Limits:
    max_pdu: int = 262144
    acse_timeout: float = 10.0
    pdu_timeout: float = 30.0
    max_association_bytes: int = 8 * 1024 ** 3
    max_association_seconds: float = 4 * 3600.0
    networks: list = field(default_factory=list)
    on_refused: object = None  # callable(reason)

    @classmethod
    def from_config(cls, cfg, on_refused=None) -> "Limits":
        return cls(max_pdu=cfg.max_pdu or 262144, acse_timeout=cfg.acse_timeout, pdu_timeout=cfg.pdu_timeout,
                   max_association_bytes=cfg.max_association_bytes,
                   max_association_seconds=cfg.max_association_seconds,
                   networks=[ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks],
                   on_refused=on_refused)

    @property
    def pdu_limit(self) -> int:
        return max(self.max_pdu, MIN_PDU_LIMIT) + 64

    def allowed(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self.networks)


_original_recv = transport.AssociationSocket.recv


def _limits(sock) -> Limits | None:
    assoc = getattr(sock, "_assoc", None) or getattr(sock, "assoc", None)
    if assoc is None or not getattr(assoc, "is_acceptor", False):
        return None
    return getattr(assoc.ae, "_pt_limits", None)


def _refuse(lim: Limits, reason: str):
    if callable(lim.on_refused):
        try:
            lim.on_refused(reason)
        except Exception:
            pass
    log.warning("DICOM peer dropped: %s", reason)
    raise LimitExceeded(reason)


def _new_state(sock, now: float) -> dict:
    state = sock.__dict__["_pt_state"] = {"start": now, "bytes": 0, "pdu_start": now, "checked": False}
    return state


def mark_opened(assoc) -> None:
    """Start a new connection's clock when it opens (EVT_CONN_OPEN), not at its first read:
    a peer that connects and sends nothing is waiting from that moment, however late its
    association thread first reads."""
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    if sock is not None and "_pt_state" not in getattr(sock, "__dict__", {}):
        _new_state(sock, time.monotonic())


def guarded_recv(self, nr_bytes: int) -> bytearray:
    lim = _limits(self)
    if lim is None:
        return _original_recv(self, nr_bytes)
    now = time.monotonic()
    state = self.__dict__.get("_pt_state") or _new_state(self, now)
    if not state["checked"]:
        state["checked"] = True
        try:
            host = self.socket.getpeername()[0]
        except OSError:
            host = ""
        if not lim.allowed(host):
            _refuse(lim, "address not in allowed_networks")
    if nr_bytes > lim.pdu_limit:
        _refuse(lim, f"PDU of {nr_bytes} bytes over the limit of {lim.pdu_limit}")
    state["bytes"] += nr_bytes
    if state["bytes"] > lim.max_association_bytes:
        _refuse(lim, "association byte limit reached")
    if now - state["start"] > lim.max_association_seconds:
        _refuse(lim, "association time limit reached")
    if nr_bytes == 6:  # a PDU header: a new PDU starts
        state["pdu_start"] = now
    deadline = state["pdu_start"] + lim.pdu_timeout
    assoc = getattr(self, "_assoc", None) or getattr(self, "assoc", None)
    if assoc is not None and not assoc.is_established:
        deadline = min(deadline, state["start"] + lim.acse_timeout)
    sock = self.socket
    previous = sock.gettimeout()
    out = bytearray()
    try:
        while len(out) < nr_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _refuse(lim, "peer too slow (PDU not complete in time)")
            sock.settimeout(min(remaining, previous) if previous else remaining)
            try:
                chunk = sock.recv(min(65536, nr_bytes - len(out)))
            except socket.timeout:
                continue  # loop: the deadline decides
            if not chunk:
                return out
            out.extend(chunk)
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    return out


def install() -> None:
    transport.AssociationSocket.recv = guarded_recv


def oldest_unassociated(associations, older_than: float = 1.0, count: int = 1) -> list:
    """Up to `count` association threads that waited longest without associating (at least
    `older_than` seconds)."""
    now = time.monotonic()
    waiting = []
    for assoc in associations:
        if assoc.is_established:
            continue
        sock = getattr(getattr(assoc, "dul", None), "socket", None)
        state = getattr(sock, "__dict__", {}).get("_pt_state") if sock is not None else None
        if state and now - state["start"] >= older_than:
            waiting.append((state["start"], assoc))
    waiting.sort(key=lambda pair: pair[0])
    return [assoc for _, assoc in waiting[:max(0, count)]]


def drop(assoc) -> None:
    """End a peer that has not associated: close its connection, and wake its association
    thread as if its A-ASSOCIATE-RQ had timed out (pynetdicom then kills it and cleans up)."""
    dul = getattr(assoc, "dul", None)
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    queue = getattr(dul, "to_user_queue", None)
    if queue is not None:
        queue.put(None)

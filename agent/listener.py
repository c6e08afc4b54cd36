"""The DICOM listener: C-ECHO and C-STORE SCP for every storage SOP class.

Datasets are streamed to a file in ``<data>/incoming`` by pynetdicom as they
arrive (never decoded in memory), their header is read, the file is made
durable under its UIDs, its summary is indexed, and only then is success sent.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from agent import diskguard, dimse_fast, limits, reactor
from core.audit import AuditTrail
from agent.retention import free_bytes
from core import metrics
from core.headers import summarize
from core.index import StudyIndex
from core.privacy import quiet_dicom_libraries
from agent.store import InvalidUID, StudyStore
from agent.structure import lengths_consistent, read_header
from agent.uids import is_valid_uid

log = logging.getLogger(__name__)

# Status codes (PS3.4 Annex B / PS3.7 Annex C)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900  # dataset does not match SOP class / lacks identifying UIDs
CANNOT_UNDERSTAND = 0xC000

#: After an instance could not be indexed (Redis away), the next ones go to disk only for
#: this many seconds without trying Redis (the reconciler indexes them when it is back).
INDEX_RETRY_AFTER = 5.0


def configure_pynetdicom() -> None:
    """pynetdicom's process-wide settings a listener needs, set when one is made (not at import)."""
    quiet_dicom_libraries()
    _config.STORE_RECV_CHUNKED_DATASET = True  # datasets streamed to a file, never whole in memory
    # Accept every storage SOP class, private and future ones included, in any transfer syntax.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # pynetdicom's own logging handlers (PDU and DIMSE dumps) build their text for every PDU and
    # message even though its logger is at WARNING: not bound.
    _config.LOG_HANDLER_LEVEL = "none"
    reactor.install()  # reactors woken by their events, not 1 ms polls
    dimse_fast.install()  # C-STORE responses encoded without a pydicom Dataset


class _WakeableServer(ThreadedAssociationServer):
    """pynetdicom's server whose accept loop sleeps in select() until a connection arrives
    or stop is asked (a wake-up pipe), instead of waking every 0.5 s (socketserver's
    poll_interval) and running a gc pass every few wake-ups (pynetdicom's service_actions,
    here only after an accept)."""

    reuse_port = False
    dispatcher = None  # agent.dispatch.Dispatcher: hands accepted connections to other processes

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    _wake_r: int | None = None
    _wake_w: int | None = None

    def server_activate(self) -> None:
        """Listen, and make the wake-up pipe (before the accept thread starts: stop can wake it at once)."""
        super().server_activate()
        self._wake_r, self._wake_w = os.pipe()

    def serve_forever(self, poll_interval: float | None = None) -> None:
        self._BaseServer__is_shut_down.clear()
        try:
            with selectors.DefaultSelector() as sel:
                source = self._source()
                sel.register(source, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while not self._BaseServer__shutdown_request:
                    ready = sel.select(None)
                    if self._BaseServer__shutdown_request:
                        break
                    if any(key.fileobj is source for key, _ in ready):
                        if not self._on_ready():
                            break
                        self.service_actions()
        finally:
            self._BaseServer__shutdown_request = False
            self._BaseServer__is_shut_down.set()

    def _source(self):
        return self  # the listening socket

    def _on_ready(self) -> bool:
        """A connection is waiting: accept it and serve it here, or hand it to another
        listener process (`dispatcher`). False: stop serving."""
        if self.dispatcher is None:
            self._handle_request_noblock()
            return True
        try:
            conn, address = self.socket.accept()
        except OSError:
            return True
        try:
            handed = self.dispatcher.route(conn)
        except Exception:
            log.exception("connection dispatch failed: served here")
            handed = False
        if handed:
            conn.close()  # the other process holds its own copy
            return True
        self._serve_accepted(conn, address)
        return True

    def _serve_accepted(self, conn: socket.socket, address) -> None:
        """What socketserver does with an accepted connection (TLS first, if configured)."""
        try:
            if self.ssl_context:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError):
            conn.close()
            self.handed_closed()
            return
        try:
            self.process_request(conn, address)
        except Exception:
            self.handle_error(conn, address)
            self.shutdown_request(conn)

    def handed_closed(self) -> None:
        """A connection ended before it became an association: count it out."""
        if self.dispatcher is not None:
            self.dispatcher.local_closed()

    def shutdown(self) -> None:
        self._BaseServer__shutdown_request = True
        wake = self._wake_w
        if wake is not None:
            try:
                os.write(wake, b"x")
            except OSError:
                pass
        super().shutdown()
        for fd in (self._wake_r, wake):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = None


class _ReusePortServer(_WakeableServer):
    """Bound with SO_REUSEPORT: listener processes share one port."""

    reuse_port = True


class _ReceivingServer(_WakeableServer):
    """A listener child under balanced dispatch: binds nothing; serves the connections the
    accepting process hands over (agent.dispatch.Receiver) and says when each one closed."""

    receiver = None  # agent.dispatch.Receiver

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        self._wake_r, self._wake_w = os.pipe()  # nothing to listen on; the wake-up pipe all the same

    def _source(self):
        return self.receiver

    def _on_ready(self) -> bool:
        try:
            conn = self.receiver.receive()
        except EOFError:
            log.warning("the accepting listener process is gone: no more connections here")
            return False
        if conn is None:
            return True
        try:
            address = conn.getpeername()
        except OSError:
            address = ("", 0)
        self._serve_accepted(conn, address)
        return True

    def handed_closed(self) -> None:
        self.receiver.closed()


def _calling_aet(event) -> str | None:
    try:
        return str(event.assoc.requestor.ae_title).strip() or None
    except Exception:
        return None


def tls_context(config) -> ssl.SSLContext | None:
    """A server-side TLS context (BCP 195: TLS 1.2 or later) when a certificate is configured."""
    if not config.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_ca:
        ctx.load_verify_locations(config.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Listener:
    def __init__(self, config, store: StudyStore, index: StudyIndex, on_index_failure=None, on_indexed=None,
                 audit: AuditTrail | None = None):
        self.config = config
        self.store = store
        self.index = index
        self.on_index_failure = on_index_failure
        self.on_indexed = on_indexed  # called after each instance is indexed (wakes the stability watcher)
        self.audit = audit if audit is not None else AuditTrail.from_config(config)  # the process's trail
        self._index_down_until = 0.0
        self._dispatch_end = None  # under balanced dispatch: called once when a connection closes
        self.server = None
        configure_pynetdicom()
        ae = AE(ae_title=config.ae_title)
        # Datasets arrive in a folder of this process only (other listeners may share the
        # store), on the data directory's file system so that commit is a rename.
        self.incoming = diskguard.Incoming(store.own_incoming())
        ae._pt_incoming = self.incoming
        ae.maximum_pdu_size = config.max_pdu
        ae.maximum_associations = config.max_associations
        ae.network_timeout = config.association_idle_timeout  # no PDU for this long: aborted
        ae.dimse_timeout = 120
        ae.acse_timeout = config.acse_timeout
        ae.require_called_aet = config.require_called_aet
        if config.allowed_calling_aets:
            ae.require_calling_aet = list(config.allowed_calling_aets)
        limits.install()
        diskguard.install()
        ae._pt_limits = limits.Limits.from_config(
            config, on_refused=lambda reason: metrics.associations_rejected.inc())
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        self.ae = ae

    @property
    def active_associations(self) -> int:
        """Connections holding a slot now (the gauge is read from here at scrape time)."""
        return len(self.server.active_associations) if self.server else 0

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.config.port

    def start(self, reuse_port: bool = False, dispatcher=None, receiver=None) -> None:
        """Listen. `reuse_port`: bind with SO_REUSEPORT, so that several listener processes
        share the port and the kernel spreads the connections over them. `dispatcher`
        (agent.dispatch.Dispatcher): listen alone and hand each connection to the least-loaded
        listener process. `receiver` (agent.dispatch.Receiver): bind nothing, serve the
        connections the accepting process hands over."""
        self._dispatch_end = (receiver.closed if receiver is not None
                              else dispatcher.local_closed if dispatcher is not None else None)
        handlers = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_CONN_OPEN, self._make_room),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]
        server_class = (_ReceivingServer if receiver is not None else _ReusePortServer if reuse_port
                        else _WakeableServer)
        server = self.ae.make_server((self.config.bind, self.config.port), evt_handlers=handlers,
                                     ssl_context=tls_context(self.config), server_class=server_class)
        server.dispatcher = dispatcher
        server.receiver = receiver
        threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True).start()
        self.ae._servers.append(server)
        self.server = server
        log.info("listening for DICOM%s as %s on %s:%d", " over TLS" if self.config.tls_cert else "",
                 self.config.ae_title, self.config.bind, self.port)

    def stop(self, drain: float = 0.0) -> int:
        """Stop accepting; let associations in progress finish for up to `drain` seconds,
        then abort the rest (their last instance was not acknowledged, so the sender keeps it).
        Returns how many were aborted."""
        server, self.server = self.server, None
        if server is None:
            return 0
        server.shutdown()  # closes the listening socket: no new association
        deadline = time.monotonic() + drain
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        left = server.active_associations
        for assoc in left:
            assoc.abort()
        if left:
            log.warning("%d association(s) still open after %gs: aborted", len(left), drain)
        return len(left)

    def _make_room(self, event) -> None:
        """All slots taken: drop the longest-waiting peer that has not associated yet (a
        slow-loris peer; a real sender associates within milliseconds), so the newcomer
        gets a slot instead of a rejection."""
        limits.mark_opened(event.assoc)
        server = self.server
        if server is None:
            return
        active = [a for a in server.active_associations if a is not event.assoc]
        if len(active) < self.ae.maximum_associations:
            return
        excess = len(active) - self.ae.maximum_associations + 1
        victims = limits.oldest_unassociated(active, older_than=1.0, count=excess)
        for victim in victims:
            limits.drop(victim)
            metrics.associations_rejected.inc()
        if victims:
            log.warning("all %d DICOM slots taken: dropped %d peer(s) that never associated",
                        self.ae.maximum_associations, len(victims))
        deadline = time.monotonic() + 1.0
        while any(v.is_alive() for v in victims) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _closed(self, event) -> None:
        """A connection closed: under balanced dispatch, count it out (once)."""
        if self._dispatch_end is None or getattr(event.assoc, "_pt_close_reported", False):
            return
        event.assoc._pt_close_reported = True
        self._dispatch_end()

    @staticmethod
    def _accepted(event) -> None:
        metrics.associations.inc()

    @staticmethod
    def _rejected(event) -> None:
        metrics.associations_rejected.inc()

    def handle_store(self, event) -> int:
        tmp = Path(event.dataset_path)
        if self.incoming.failed(tmp):  # the disk filled up while the dataset was arriving
            tmp.unlink(missing_ok=True)
            metrics.instances_received.labels("failed").inc()
            log.error("data directory full while receiving an instance: refused (0xA700)")
            return OUT_OF_RESOURCES
        size = tmp.stat().st_size
        min_free = getattr(self.config, "min_free_bytes", 0) or 0
        if min_free and free_bytes(self.store.root) < min_free + size:
            tmp.unlink(missing_ok=True)
            metrics.instances_received.labels("refused_disk").inc()
            log.error("data directory below its free-space watermark: instance refused (0xA700)")
            return OUT_OF_RESOURCES
        try:  # the data's flush to disk starts now and overlaps the header checks below
            synced = self.store.sync_soon(tmp)
        except OSError:
            synced = None  # commit flushes it itself
        try:
            ds, transfer_syntax, meta = read_header(tmp)
            summary = summarize(ds, size=size, transfer_syntax=transfer_syntax)
            # the summary's UIDs are the elements' values as strings (pydicom's UID is one), a
            # multi-valued one a list: is_valid_uid refuses that as it refuses a MultiValue
            uids = (summary.get("StudyInstanceUID"), summary.get("SeriesInstanceUID"), summary.get("SOPInstanceUID"))
        except Exception as exc:  # any parser failure: quarantine, keep serving
            return self._reject(tmp, "unparseable", exc, CANNOT_UNDERSTAND)
        if not all(is_valid_uid(u) for u in uids):
            return self._reject(tmp, "invalid_uid", "Study/Series/SOP Instance UID missing or invalid", DATASET_MISMATCH)
        if not lengths_consistent(tmp, meta):  # truncated, or an element claiming more bytes than sent
            return self._reject(tmp, "inconsistent_lengths", "element lengths do not match the data received",
                                CANNOT_UNDERSTAND)
        try:
            path, duplicate = self.store.commit(tmp, *uids, synced=synced)
        except InvalidUID as exc:
            return self._reject(tmp, "invalid_uid", exc, DATASET_MISMATCH)
        except OSError as exc:
            log.error("cannot store instance %s: %s", uids[2], exc.strerror)
            tmp.unlink(missing_ok=True)  # never leave a partial file behind
            metrics.instances_received.labels("failed").inc()
            return OUT_OF_RESOURCES
        summary["path"] = str(path)
        try:
            if time.monotonic() < self._index_down_until:
                raise ConnectionError("Redis was away moments ago")  # do not wait on it per instance
            self.index.record_instance(summary)
            if self.on_indexed:
                self.on_indexed()
        except Exception as exc:
            self._index_down_until = time.monotonic() + INDEX_RETRY_AFTER
            # Redis away: the file is durable on disk, so the instance is accepted; the
            # reconciler indexes it when Redis answers again (and at every start).
            log.error("cannot index instance %s now (%s): indexed by reconciliation later", uids[2],
                      type(exc).__name__)
            metrics.index_failures.inc()
            if self.on_index_failure:
                self.on_index_failure()
        metrics.instances_received.labels("duplicate" if duplicate else "stored").inc()
        self.audit.record("received", study=uids[0], series=uids[1], instance=uids[2], bytes=size,
                          calling_aet=_calling_aet(event), status="duplicate" if duplicate else "stored")
        metrics.bytes_received.inc(size)
        return SUCCESS

    def _reject(self, tmp: Path, reason: str, exc: object, status: int) -> int:
        # The exception's type only: its message may quote a value (a name, an ID).
        detail = f"{type(exc).__name__}" if not isinstance(exc, str) else exc
        where = self.store.quarantine(tmp, reason, detail)
        metrics.quarantined.labels(reason).inc()
        metrics.instances_received.labels("quarantined").inc()
        log.warning("quarantined a dataset (%s) as %s; status 0x%04X", reason, where.name, status)
        return status



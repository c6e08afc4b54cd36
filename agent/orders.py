"""HL7 v2 MLLP listener: RIS orders in, reports signed in (`hl7_listen`, `--hl7-listen PORT`).

Built on python-hl7's asyncio MLLP server (`hl7.mllp.start_hl7_server`), in its own
thread and event loop. Each message is answered with an ACK (MSA-1):

- ORM^O01 / OMI^O23, order control NW (new), XO/XX/SC (change), CA/OC/DC (cancel):
  the order is stored (`core.orders.OrderStore`, `order_retention_days`) -> AA.
  When the study of that accession was already triaged less than
  `order_retriage_hours` ago, it is queued for triage again (the same path as
  reconciliation: `mark_queued` + the triage actor), so the order's text and
  priority are read.
- ORU^R01 with result status (OBR-25) F or C: the report is signed; the study's entry
  is closed (`workers.worklist.Worklist.close`) -> AA. Other statuses -> AA, no change.
- An order or report naming another patient than the one stored for that accession
  (order or study) -> AR, error 204 (unknown key); logged without patient data.
- A connection from an address outside `allowed_networks` (when set) is closed at once.
- Unparseable, other message types, unsupported order control -> AR (200 / 103);
  no accession number -> AE (101); Redis away or any internal error -> AE (207),
  so the RIS sends it again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from typing import Callable

import hl7
from hl7.mllp import InvalidBlockError, start_hl7_server

from core import metrics
from core.audit import AuditTrail
from core.orders import OrderError, OrderStore, message_type, parse_order, parse_result

log = logging.getLogger(__name__)
ENCODING = "utf-8"
#: Largest message accepted (bytes); a larger block is answered AR and dropped.
MAX_MESSAGE = 1024 * 1024
#: Seconds a connection may stay silent before it is closed.
IDLE_TIMEOUT = 300.0


class OrderListener:
    """The MLLP server; `handle()` is the message logic (also used directly by tests)."""

    def __init__(self, config, redis, enqueue: Callable[[str], None], index=None, audit: AuditTrail | None = None):
        self.config = config
        self.redis = redis
        self.enqueue = enqueue
        self.index = index
        self.audit = audit if audit is not None else AuditTrail.from_config(config)  # the process's trail
        self.orders = OrderStore(redis, getattr(config, "order_retention_days", 30.0))
        self.port = int(config.hl7_listen)
        self.bind = getattr(config, "hl7_listen_bind", None) or "0.0.0.0"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="hl7-listener", daemon=True)

    # --- server -------------------------------------------------------------------------
    def start(self) -> "OrderListener":
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"HL7 listener on port {self.port}: {self._error}")
        log.info("HL7 listener on %s:%d (orders and reports)", self.bind, self.port)
        return self

    def stop(self) -> None:
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(
                start_hl7_server(self._client, self.bind, self.port, encoding=ENCODING, limit=MAX_MESSAGE))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.server.close()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    async def _client(self, reader, writer) -> None:
        if not self._allowed(writer.get_extra_info("peername")):
            metrics.hl7_messages.labels("refused_address", "none").inc()
            log.warning("HL7 connection refused: address not in allowed_networks")
            writer.close()
            return
        try:
            while True:
                try:
                    block = await asyncio.wait_for(reader.readblock(), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except (InvalidBlockError, ValueError):  # not MLLP framed, or too large
                    writer.writeblock(str(_bare_ack("AR", "", "100")).encode(ENCODING))
                    await writer.drain()
                    continue
                text = block.decode(ENCODING, "replace")
                ack = await asyncio.get_running_loop().run_in_executor(None, self.handle_text, text)
                writer.writemessage(ack)
                await writer.drain()
        finally:
            writer.close()

    def _allowed(self, peer) -> bool:
        """`allowed_networks` applies to the RIS as to the modalities (empty: any address)."""
        networks = getattr(self.config, "allowed_networks", None) or []
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(peer[0])
        except (TypeError, ValueError, IndexError):
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in ipaddress.ip_network(n, strict=False) for n in networks)

    # --- messages ------------------------------------------------------------------------
    def handle_text(self, text: str) -> hl7.Message:
        try:
            msg = hl7.parse(text)
            msg.segment("MSH")
        except Exception:
            metrics.hl7_messages.labels("unparseable", "AR").inc()
            return _bare_ack("AR", "", "100")
        return self.handle(msg)

    def handle(self, msg: hl7.Message) -> hl7.Message:
        kind = "^".join(message_type(msg))
        try:
            note = self._dispatch(msg)
        except OrderError as exc:
            code = "AR" if exc.reject else "AE"
            log.warning("HL7 %s answered %s: %s", kind, code, exc)
            metrics.hl7_messages.labels(kind if kind in KINDS else "other", code).inc()
            return _ack(msg, code, exc.code)
        except Exception as exc:  # Redis away, ...: the RIS sends it again
            log.error("HL7 %s answered AE: %s", kind, type(exc).__name__)
            metrics.hl7_messages.labels(kind if kind in KINDS else "other", "AE").inc()
            return _ack(msg, "AE", "207")
        metrics.hl7_messages.labels(kind, "AA").inc()
        log.info("HL7 %s accepted: %s", kind, note)
        return _ack(msg, "AA")

    def _dispatch(self, msg: hl7.Message) -> str:
        kind = message_type(msg)
        if kind == ("ORU", "R01"):
            return self._result(msg)
        order = parse_order(msg)  # raises OrderError (AR) for any other type
        previous = self.orders.get(order.accession_number)
        if previous is not None and not previous.same_patient(order.patient_id, order.issuer_of_patient_id):
            metrics.order_patient_mismatch.inc()
            raise OrderError("order for a known accession number names another patient; refused",
                             code="204", reject=True)
        study_uid = self.orders.study_of(order.accession_number)
        entry = self._entry(study_uid)
        if entry is not None and not order.same_patient(entry.get("patient_id"), entry.get("issuer_of_patient_id")):
            metrics.order_patient_mismatch.inc()
            raise OrderError(f"order for study {study_uid} names another patient; refused", code="204", reject=True)
        if previous is not None and order.control in ("XO", "XX", "SC") and not order.texts:
            order.texts = previous.texts  # a change that only touches the priority keeps the texts
        self.orders.save(order)
        self.audit.record("order_received", study=study_uid, control=order.control, priority=order.priority,
                          source=order.priority_source)
        requeued = ""
        if entry is not None and order.status == "active" and self._within_window(entry):
            if self.index is not None:
                self.index.mark_queued(study_uid)
            self.enqueue(study_uid)
            metrics.order_retriages.inc()
            requeued = f"; study {study_uid} queued for triage again"
        return f"order {order.control} priority {order.priority or '-'}{requeued}"

    def _result(self, msg: hl7.Message) -> str:
        result = parse_result(msg)
        if not result["signed"]:
            return f"result status {result['status'] or '(empty)'}: report not signed, nothing closed"
        study_uid = self.orders.study_of(result["accession_number"])
        entry = self._entry(study_uid)
        if entry is None:
            order = self.orders.get(result["accession_number"])
            if order is not None:  # kept on the order: the entry is closed as soon as it is triaged
                if not order.same_patient(result["patient_id"], result["issuer_of_patient_id"]):
                    metrics.order_patient_mismatch.inc()
                    raise OrderError("report for a known order names another patient; refused", code="204",
                                     reject=True)
                order.signed_at = time.time()
                order.signed_status = result["status"]
                self.orders.save(order)
                return "report signed before the study was triaged: kept on the order"
            return "report signed for an accession with no order and no triaged study: nothing to close"
        if not _same_patient(entry, result):
            metrics.order_patient_mismatch.inc()
            raise OrderError(f"report for study {study_uid} names another patient; refused", code="204", reject=True)
        from workers.worklist import Worklist

        closed = Worklist(self.redis).close(study_uid, time.time(), f"HL7 ORU^R01 result status {result['status']}",
                                            audit=self.audit)
        return f"report signed ({result['status']}): study {study_uid} " + ("closed" if closed else "already closed")

    def _entry(self, study_uid: str | None) -> dict | None:
        if not study_uid:
            return None
        from workers.worklist import Worklist

        return Worklist(self.redis).get(study_uid)

    def _within_window(self, entry: dict) -> bool:
        if entry.get("closed_at"):
            return False
        hours = float(getattr(self.config, "order_retriage_hours", 24.0) or 0)
        triaged = entry.get("triaged_at") or 0
        return hours > 0 and time.time() - float(triaged) <= hours * 3600


KINDS = ("ORM^O01", "OMI^O23", "ORU^R01")


def _same_patient(entry: dict, result: dict) -> bool:
    from core.orders import Order

    probe = Order(accession_number="", patient_id=entry.get("patient_id"),
                  issuer_of_patient_id=entry.get("issuer_of_patient_id"))
    return probe.same_patient(result["patient_id"], result["issuer_of_patient_id"])


def _ack(msg: hl7.Message, code: str, error: str | None = None) -> hl7.Message:
    try:
        ack = msg.create_ack(code, application="PACSTRIAGE")
    except Exception:
        return _bare_ack(code, "", error)
    if error:
        ack.append(_err_segment(ack, error))
    return ack


def _bare_ack(code: str, control_id: str, error: str | None = None) -> hl7.Message:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    text = f"MSH|^~\\&|PACSTRIAGE||||{stamp}||ACK|{control_id or stamp}|P|2.5.1\rMSA|{code}|{control_id}"
    if error:
        text += f"\rERR|||{error}^^HL70357|E"
    return hl7.parse(text)


def _err_segment(ack: hl7.Message, error: str):
    """ERR-3 (HL7 table 0357 code) and severity E; never free text that could name a patient."""
    return hl7.parse(f"MSH|^~\\&|\rERR|||{error}^^HL70357|E").segment("ERR")

"""Peers for the sink tests, on loopback: an MLLP server from python-hl7 and an HTTP server.

Both run in a background thread of the test process and record what they receive.
"""

from __future__ import annotations

import asyncio
import http.server
import threading

import hl7
from hl7.mllp import start_hl7_server

from core.entry import WorklistEntry
from peers import free_port


class MllpServer:
    """`hl7.mllp` asyncio server in a thread; answers AA, or the codes queued in `answers`.

    `answers`: codes used one per message (e.g. ["AE", "AE"]), then `default`.
    `default=None` means never answer (to test timeouts).
    """

    def __init__(self, default: str | None = "AA"):
        self.port = free_port()
        self.default = default
        self.answers: list[str] = []
        self.messages: list[hl7.Message] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "MllpServer":
        self.thread = threading.Thread(target=self._run, name="mllp-server", daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MLLP server did not start")
        return self

    def stop(self) -> None:
        if self.loop:
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(10)
            self.loop = None

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await start_hl7_server(self._client, "127.0.0.1", self.port, encoding="utf-8")
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _client(self, reader, writer) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.messages.append(message)
                code = self.answers.pop(0) if self.answers else self.default
                if code is None:
                    continue
                ack = message.create_ack(code, message_id="ACK" + str(len(self.messages)),
                                         application="RIS")
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class HttpServer:
    """http.server in a thread: records POSTs, answers `status` (default 200).

    `fail(n, code)` makes the next n requests answer `code` (e.g. 503).
    """

    def __init__(self, status: int = 200):
        self.status = status
        self.failures: list[int] = []
        self.requests: list[dict] = []  # {path, headers, body, status}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                code = owner.failures.pop(0) if owner.failures else owner.status
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": data,
                                       "status": code})
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.httpd.server_address[1]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def fail(self, times: int, code: int = 503) -> None:
        self.failures.extend([code] * times)

    def delivered(self) -> list[dict]:
        return [r for r in self.requests if 200 <= r["status"] < 300]

    def start(self) -> "HttpServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="http-server",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sample_entry(**changes) -> dict:
    """A worklist entry as `workers.pipeline` builds it (synthetic patient)."""
    entry = {
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.1001",
        "accession_number": "ACC2026001",
        "patient_id": "PT-0001",
        "issuer_of_patient_id": "HOSP",
        "priority": "ROUTINE",
        "order_priority": "ROUTINE",
        "flags": [],
        "postop_interval_hours": 30.0,
        "course": "early",
        "priors": [],
        "recommendations": [],
        "explain": [],
        "rulebook_version": "test",
        "modalities": ["MR"],
        "study_date": "20261121",
        "study_time": "101500",
        "study_description": "MR LUMBAR SPINE",
        "series_count": 1,
        "instance_count": 2,
        "first_received": 1795250000.0,
        "last_received": 1795250010.0,
        "triaged_at": 1795250020.0,
        "revision": 1,
        "analysers": [],
        "series": [{
            "series_instance_uid": "1.2.826.0.1.3680043.8.498.1001.1",
            "modality": "MR",
            "description": "T2 SAG",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "instances": ["1.2.826.0.1.3680043.8.498.1001.1.1", "1.2.826.0.1.3680043.8.498.1001.1.2"],
        }],
        "headers": {
            "PatientName": "TEST^PATIENT", "PatientID": "PT-0001", "IssuerOfPatientID": "HOSP",
            "PatientBirthDate": "19600101", "PatientSex": "F", "StudyDate": "20261121",
            "StudyTime": "101500", "StudyID": "S1", "AccessionNumber": "ACC2026001",
            "ReferringPhysicianName": "", "StudyDescription": "MR LUMBAR SPINE",
            "SpecificCharacterSet": "ISO_IR 192",
        },
    }
    entry = WorklistEntry.from_dict(entry).to_dict()  # every key, as the worklist stores it
    entry.update(changes)
    return entry


STAT_FLAG = {
    "code": "epidural_haematoma", "status": "suspected", "priority": "STAT",
    "rule": "early.ces.haematoma", "rules": ["early.ces.haematoma", "early.saddle"],
    "evidence": [{"source": "order.reason", "rule": "early.ces.haematoma", "text": "saddle anaesthesia",
                  "start": 10, "end": 28, "assertion": "affirmed"}],
}
URGENT_FLAG = {
    "code": "surgical_site_infection", "status": "suspected", "priority": "URGENT",
    "rule": "early.infection", "rules": ["early.infection"], "evidence": [],
}

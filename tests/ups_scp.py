"""A small UPS SCP (worklist manager) on pynetdicom, for the UPS sink tests.

No UPS server ships for this machine (Debian's Orthanc has no UPS, dcm4chee is
not packaged), so the tests run this one in-process on a free loopback port.
It keeps workitems and their states as PS3.4 Annex CC defines them:

- N-CREATE (UPS Push): the SCU gives the UID; the state must be SCHEDULED
  (else 0xC309); a UID already known gives 0x0111 Duplicate SOP Instance;
  type 1 attributes missing give 0x0120.
- N-SET (UPS Pull): a SCHEDULED workitem is updated without a Transaction UID;
  an IN PROGRESS one needs its Transaction UID (0xC301); COMPLETED/CANCELED
  may no longer be updated (0xC300); the state cannot be set (0xC303);
  unknown UID gives 0xC307.
- N-GET (Push/Pull/Watch): the requested attributes, or all of them.
- C-FIND (Pull/Watch/Query): the worklist query, single-value and universal
  matching on the top-level keys.
"""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    UnifiedProcedureStepPull,
    UnifiedProcedureStepPush,
    UnifiedProcedureStepQuery,
    UnifiedProcedureStepWatch,
)

from peers import free_port

REQUIRED = ("ScheduledProcedureStepPriority", "ProcedureStepLabel", "ScheduledProcedureStepStartDateTime",
            "InputReadinessState", "ProcedureStepState")
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
FINAL = ("COMPLETED", "CANCELED")


class UpsScp:
    """A UPS worklist manager on 127.0.0.1; `workitems` maps UID -> Dataset."""

    def __init__(self, aet: str = "UPSSCP", push_only: bool = False):
        self.aet = aet
        self.port = free_port()
        self.push_only = push_only
        self.workitems: dict[str, Dataset] = {}
        self.log: list[tuple[str, str, int]] = []  # (operation, uid, status)
        self.lock = threading.Lock()
        self.server = None

    @property
    def node(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def start(self) -> "UpsScp":
        ae = AE(ae_title=self.aet)
        classes = [UnifiedProcedureStepPush]
        if not self.push_only:
            classes += [UnifiedProcedureStepPull, UnifiedProcedureStepWatch, UnifiedProcedureStepQuery]
        for uid in classes:
            ae.add_supported_context(uid)
        handlers = [(evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set),
                    (evt.EVT_N_GET, self._get), (evt.EVT_C_FIND, self._find)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server = None

    def operations(self, name: str) -> list[tuple[str, str, int]]:
        return [op for op in self.log if op[0] == name]

    def set_state(self, uid: str, state: str, transaction_uid: str | None = None) -> None:
        """What a performer's N-ACTION would do (claim, complete, cancel)."""
        with self.lock:
            self.workitems[uid].ProcedureStepState = state
            if transaction_uid:
                self.workitems[uid].TransactionUID = transaction_uid

    def _record(self, name: str, uid: str, status: int) -> int:
        self.log.append((name, str(uid), status))
        return status

    def _create(self, event):
        uid = str(event.request.AffectedSOPInstanceUID or "")
        ds = event.attribute_list
        with self.lock:
            if not uid:
                return self._record("N-CREATE", uid, 0x0120), None
            if uid in self.workitems:
                return self._record("N-CREATE", uid, 0x0111), None
            missing = [k for k in REQUIRED if not ds.get(k)]
            if missing:
                return self._record("N-CREATE", uid, 0x0120), None
            if ds.ProcedureStepState != "SCHEDULED":
                return self._record("N-CREATE", uid, 0xC309), None
            if ds.ScheduledProcedureStepPriority not in PRIORITIES:
                return self._record("N-CREATE", uid, 0x0106), None
            if ds.get("TransactionUID"):
                return self._record("N-CREATE", uid, 0x0106), None
            ds.SOPClassUID = UnifiedProcedureStepPush
            ds.SOPInstanceUID = uid
            self.workitems[uid] = ds
            return self._record("N-CREATE", uid, 0x0000), ds

    def _set(self, event):
        uid = str(event.request.RequestedSOPInstanceUID)
        mods = event.modification_list
        with self.lock:
            item = self.workitems.get(uid)
            if item is None:
                return self._record("N-SET", uid, 0xC307), None
            if item.ProcedureStepState in FINAL:
                return self._record("N-SET", uid, 0xC300), None
            if item.ProcedureStepState == "IN PROGRESS" and mods.get("TransactionUID") != item.get("TransactionUID"):
                return self._record("N-SET", uid, 0xC301), None
            if "ProcedureStepState" in mods:
                return self._record("N-SET", uid, 0xC303), None
            if "ScheduledProcedureStepPriority" in mods and mods.ScheduledProcedureStepPriority not in PRIORITIES:
                return self._record("N-SET", uid, 0x0106), None
            for elem in mods:
                if elem.keyword != "TransactionUID":
                    item[elem.tag] = elem
            return self._record("N-SET", uid, 0x0000), mods

    def _get(self, event):
        uid = str(event.request.RequestedSOPInstanceUID)
        with self.lock:
            item = self.workitems.get(uid)
            if item is None:
                return self._record("N-GET", uid, 0xC307), None
            tags = event.request.AttributeIdentifierList or []
            if not isinstance(tags, list):
                tags = [tags]
            out = Dataset()
            for tag in tags or [e.tag for e in item]:
                if tag in item:
                    out[tag] = item[tag]
            return self._record("N-GET", uid, 0x0000), out

    def _find(self, event):
        query = event.identifier
        with self.lock:
            items = list(self.workitems.values())
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            if all(self._match(item, elem) for elem in query):
                out = Dataset()
                for elem in query:
                    if elem.tag in item:
                        out[elem.tag] = item[elem.tag]
                    else:
                        out[elem.tag] = elem
                yield 0xFF00, out
        self._record("C-FIND", "", 0x0000)

    @staticmethod
    def _match(item: Dataset, elem) -> bool:
        if elem.VR == "SQ" or elem.value in (None, "", b"") or elem.keyword == "SpecificCharacterSet":
            return True  # universal matching
        value = item.get(elem.keyword) if elem.keyword else None
        return value is not None and str(value) == str(elem.value)

"""A full disk while a dataset is being received must give the sender a status, not a torn
down association, and must not leave a partial file behind.

pynetdicom writes each received dataset to a temporary file as its fragments arrive; a
write that fails (no space left, quota, I/O error) raises inside its state machine and
the association is aborted. `install()` wraps those temporary files: a failed write frees
what was written, discards the rest of the dataset, and marks the file, so the listener
answers 0xA700 (Out of Resources) and removes it.

Where the files go and which of them failed belong to one listener (`Incoming`, carried by
its AE as ``_pt_incoming``), not to the process: two listeners in one process (tests, or
listeners on two stores) never see each other's files, and no process-wide setting such as
``tempfile.tempdir`` is changed.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from pynetdicom import dimse_messages


class Incoming:
    """One listener's folder for datasets being received, and the ones whose writing failed."""

    def __init__(self, directory: Path | str):
        self.directory = str(directory)
        self._failed: set[str] = set()
        self._lock = threading.Lock()

    def mark_failed(self, path: str) -> None:
        with self._lock:
            self._failed.add(str(path))

    def failed(self, path) -> bool:
        """True (once) if writing the dataset received at `path` failed."""
        with self._lock:
            if str(path) in self._failed:
                self._failed.discard(str(path))
                return True
        return False


#: The listener whose association is being decoded on this thread (pynetdicom decodes a
#: message and opens its temporary file on the association's own reader thread).
_decoding = threading.local()
_original_decode_msg = dimse_messages.DIMSEMessage.decode_msg


class GuardedFile:
    def __init__(self, inner, incoming: Incoming):
        self._inner = inner
        self._incoming = incoming
        self.name = inner.name
        self.failed = False

    @property
    def file(self) -> "GuardedFile":  # pynetdicom calls `.file.flush()`
        return self

    def write(self, data) -> int:
        if not self.failed:
            try:
                return self._inner.write(data)
            except OSError:
                self._fail()
        return len(data)

    def flush(self) -> None:
        if not self.failed:
            try:
                self._inner.file.flush()
            except OSError:
                self._fail()

    def _fail(self) -> None:
        self.failed = True
        self._incoming.mark_failed(self.name)
        try:
            os.ftruncate(self._inner.fileno(), 0)  # give the space back at once
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._inner.close()
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __bool__(self) -> bool:
        return True


def _decode_msg(self, primitive, assoc=None):
    _decoding.incoming = getattr(getattr(assoc, "ae", None), "_pt_incoming", None)
    try:
        return _original_decode_msg(self, primitive, assoc)
    finally:
        _decoding.incoming = None


def _guarded_temporary_file(*args, **kwargs):
    incoming = getattr(_decoding, "incoming", None)
    if incoming is None:  # an AE that is not one of our listeners: pynetdicom's own behaviour
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    kwargs["dir"] = incoming.directory  # same file system as the store: commit is a rename
    return GuardedFile(tempfile.NamedTemporaryFile(*args, **kwargs), incoming)


def install() -> None:
    """Route pynetdicom's temporary dataset files through `Incoming` (idempotent)."""
    dimse_messages.NamedTemporaryFile = _guarded_temporary_file
    dimse_messages.DIMSEMessage.decode_msg = _decode_msg

"""A full disk while a dataset is being received must give the sender a status, not a torn
down association, and must not leave a partial file behind.

pynetdicom writes each received dataset to a temporary file as its fragments arrive; a
write that fails (no space left, quota, I/O error) raises inside its state machine and
the association is aborted. `install()` wraps those temporary files: a failed write frees
what was written, discards the rest of the dataset, and marks the file, so the listener
answers 0xA700 (Out of Resources) and removes it.
"""

from __future__ import annotations

import os
import tempfile
import threading

from pynetdicom import dimse_messages

_failed: set[str] = set()
_lock = threading.Lock()


class GuardedFile:
    def __init__(self, inner):
        self._inner = inner
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
        with _lock:
            _failed.add(self.name)
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


def failed(path) -> bool:
    """True (once) if writing the dataset received at `path` failed."""
    with _lock:
        if str(path) in _failed:
            _failed.discard(str(path))
            return True
    return False


def _guarded_temporary_file(*args, **kwargs):
    return GuardedFile(tempfile.NamedTemporaryFile(*args, **kwargs))


def install() -> None:
    dimse_messages.NamedTemporaryFile = _guarded_temporary_file

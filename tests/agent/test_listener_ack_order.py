"""What the listener has done when a C-STORE gets its success: the file's data and its name are
on disk, then the instance is indexed (README, Guarantees: "No study lost")."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
import pytest

from agent import store as store_module
from agent.listener import Listener
from agent.store import StudyStore
from core.config import Config
from core.index import StudyIndex
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import free_port
from test_listener import _send_raw


@pytest.fixture
def listener(tmp_path, redis_client):
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1")
    lst = Listener(cfg, StudyStore(cfg.data_dir), StudyIndex(redis_client))
    lst.start()
    yield lst
    lst.stop()


def test_success_only_after_the_file_and_its_name_are_on_disk_and_it_is_indexed(listener, tmp_path, monkeypatch):
    """The flush of the series folder is made slow: the index write and the success still come after it."""
    events, lock = [], threading.Lock()
    real_fsync, real_record = store_module.fsync_path, listener.index.record_instance

    def note(what):
        with lock:
            events.append((what, time.monotonic()))

    (f,) = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 1)]))
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    series_dir = listener.store.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, "1.2").parent
    listener.store._ensure_dir(series_dir)  # the folders exist: only the instance's own entry is flushed

    def fsync_path(path, directory=False):
        if directory and Path(path) == series_dir:
            time.sleep(0.3)
        real_fsync(path, directory)
        if directory:
            note("directory flushed")

    real_fdatasync = store_module.os.fdatasync

    def fdatasync(fd):  # the data flush started by sync_soon
        real_fdatasync(fd)
        note("data flushed")

    def record_instance(summary, received=None):
        real_record(summary, received)
        note("indexed")

    monkeypatch.setattr(store_module, "fsync_path", fsync_path)
    monkeypatch.setattr(listener.index, "record_instance", record_instance)
    monkeypatch.setattr(store_module.os, "fdatasync", fdatasync)
    assert _send_raw(listener.port, f) == 0x0000
    acked = time.monotonic()
    assert [e for e, _ in events] == ["data flushed", "directory flushed", "indexed"]
    assert events[-1][1] < acked
    assert listener.index.load(ds.StudyInstanceUID).instance_count == 1

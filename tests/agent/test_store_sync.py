"""The store flushes a received file while the listener checks its header (`sync_soon`), and
still renames it into place only after that flush succeeded (`commit(..., synced=)`)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import pytest

from agent import store as store_module
from agent.store import StudyStore

UIDS = ("1.2.3", "1.2.3.4", "1.2.3.4.5")


def received(store: StudyStore, body: bytes = b"DICM" * 256):
    tmp = store.own_incoming() / "rx.tmp"
    tmp.write_bytes(body)
    return tmp


def test_commit_waits_for_the_flush_before_the_rename(tmp_path, monkeypatch):
    store = StudyStore(tmp_path)
    order, release = [], threading.Event()
    real = os.fdatasync

    def slow_fdatasync(fd):
        release.wait(5)
        order.append("flushed")
        real(fd)

    monkeypatch.setattr(store_module.os, "fdatasync", slow_fdatasync)
    real_replace = os.replace
    monkeypatch.setattr(store_module.os, "replace", lambda a, b: (order.append("renamed"), real_replace(a, b)))
    tmp = received(store)
    synced = store.sync_soon(tmp)
    assert synced is not None and not synced.done()
    threading.Timer(0.2, release.set).start()
    path, duplicate = store.commit(tmp, *UIDS, synced=synced)
    assert order[:2] == ["flushed", "renamed"]
    assert path.read_bytes() == b"DICM" * 256 and not duplicate and not tmp.exists()


def test_a_failed_flush_fails_the_commit_and_nothing_is_renamed(tmp_path):
    store = StudyStore(tmp_path)
    tmp = received(store)
    failed: Future = Future()
    failed.set_exception(OSError(5, "Input/output error"))
    with pytest.raises(OSError):
        store.commit(tmp, *UIDS, synced=failed)
    assert tmp.exists()
    assert not store.path_for(*UIDS).exists()


def test_no_flush_without_fsync(tmp_path):
    store = StudyStore(tmp_path, fsync=False)
    tmp = received(store)
    assert store.sync_soon(tmp) is None
    path, _ = store.commit(tmp, *UIDS, synced=None)
    assert path.exists()


def test_commit_soon_places_the_file_and_wait_returns_after_the_directory_flush(tmp_path, monkeypatch):
    """The listener indexes while the directory entry is flushed; it acknowledges after `wait()`."""
    store = StudyStore(tmp_path)
    store._ensure_dir(store.path_for(*UIDS).parent)  # the series folder exists (its own flushes done)
    release, order = threading.Event(), []
    real = store_module.fsync_path

    def fsync_path(path, directory=False):
        if directory:
            release.wait(5)
            order.append("directory flushed")
        real(path, directory)

    monkeypatch.setattr(store_module, "fsync_path", fsync_path)
    tmp = received(store)
    committed = store.commit_soon(tmp, *UIDS, synced=store.sync_soon(tmp))
    assert committed.path.read_bytes() == b"DICM" * 256 and not tmp.exists()  # in place, visible
    order.append("indexed")
    threading.Timer(0.2, release.set).start()
    assert committed.wait() == (store.path_for(*UIDS), False)
    assert order == ["indexed", "directory flushed"]


def test_a_failed_directory_flush_fails_the_wait(tmp_path, monkeypatch):
    store = StudyStore(tmp_path)
    store._ensure_dir(store.path_for(*UIDS).parent)
    real = store_module.fsync_path

    def fsync_path(path, directory=False):
        if directory:
            raise OSError(5, "Input/output error")
        real(path, directory)

    monkeypatch.setattr(store_module, "fsync_path", fsync_path)
    committed = store.commit_soon(received(store), *UIDS)
    with pytest.raises(OSError):
        committed.wait()
    with pytest.raises(OSError):
        store.commit(received(store), *UIDS)

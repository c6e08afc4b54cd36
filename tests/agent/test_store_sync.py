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

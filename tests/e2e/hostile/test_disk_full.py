"""A disk that really fills up (a 3 MB tmpfs, watermark off): every C-STORE still gets a
status, nothing partial stays behind, and the listener keeps serving. Needs root to mount
the tmpfs; skipped otherwise."""

from __future__ import annotations

import subprocess
import threading

import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts

from core.config import Config
from core.index import StudyIndex
from agent.listener import Listener
from agent.store import StudyStore
from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_gets_a_status_and_leaves_nothing_partial(small_disk, tmp_path, redis_client):
    cfg = Config(port=free_port(), data_dir=small_disk / "data", bind="127.0.0.1", min_free_bytes=0)
    store = StudyStore(cfg.data_dir)
    lst = Listener(cfg, store, StudyIndex(redis_client))
    lst.start()
    try:
        spec = StudySpec(series=[SeriesSpec("MR", "SAG T2", 40, rows=256, columns=256)])
        files = write_study(tmp_path / "in", spec)  # 40 x ~130 KB: more than 3 MB
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts[:120]
        assoc = ae.associate("127.0.0.1", lst.port, ae_title="PACSTRIAGE")
        statuses = []
        for f in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            statuses.append(getattr(status, "Status", None))
            if statuses[-1] is None:
                break
        if assoc.is_established:
            assoc.release()
        assert None not in statuses, "the association was not torn down: every C-STORE got a status"
        assert 0xA700 in statuses and set(statuses) <= {0x0000, 0xA700}
        assert not [p for p in store.incoming.rglob("*") if p.is_file()], "no partial file left"
        acked = statuses.count(0x0000)
        assert len(list(store.studies.rglob("*.dcm"))) >= min(acked, len(files))
        dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", lst.port)
    finally:
        lst.stop()

"""The listener against DCMTK as the modality: storage, durability layout, dedup, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import MRImageStorage

from core import metrics
from core.config import Config
from core.index import StudyIndex
from agent.listener import Listener
from agent.store import StudyStore
from dicomgen import SeriesSpec, StudySpec, file_with_dataset_bytes, postop_three_series, write_study
from peers import dcmtk, free_port


def sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
def listener(tmp_path, redis_client):
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1")
    store = StudyStore(cfg.data_dir)
    lst = Listener(cfg, store, StudyIndex(redis_client))
    lst.start()
    yield lst
    lst.stop()


def storescu(port: int, *files, extra=()):
    return dcmtk("storescu", "-aec", "PACSTRIAGE", *extra, "127.0.0.1", str(port), *map(str, files))


def test_echo_and_three_series_study_stored_and_indexed(listener, tmp_path):
    dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", str(listener.port))
    spec = postop_three_series()
    files = write_study(tmp_path / "in", spec)
    stored_before = sample("pacs_triage_instances_received_total", status="stored")
    storescu(listener.port, *files)

    study = listener.index.load(spec.study_uid)
    assert study is not None and study.instance_count == 12 and len(study.series) == 3
    for f in files:
        ds = pydicom.dcmread(f)
        path = listener.store.studies / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert path.exists(), "each instance lands at studies/<study>/<series>/<sop>.dcm"
        assert pydicom.dcmread(path).PixelData == ds.PixelData
    assert sample("pacs_triage_instances_received_total", status="stored") - stored_before == 12
    assert [t["value"] for t in study.text_fields if t["keyword"] == "ReasonForTheRequestedProcedure"] == [spec.reason]
    assert not [p for p in listener.store.incoming.rglob("*") if p.is_file()], "no temporary file is left behind"


def test_resent_instance_is_deduplicated(listener, tmp_path):
    spec = StudySpec(series=[SeriesSpec("CT", "AX BONE", 2)])
    files = write_study(tmp_path / "in", spec)
    storescu(listener.port, *files)
    dup_before = sample("pacs_triage_instances_received_total", status="duplicate")
    storescu(listener.port, files[0])
    study = listener.index.load(spec.study_uid)
    assert study.instance_count == 2
    assert len(list((listener.store.studies / spec.study_uid).rglob("*.dcm"))) == 2
    assert sample("pacs_triage_instances_received_total", status="duplicate") - dup_before == 1


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_compressed_transfer_syntax_stored_as_received(listener, tmp_path, syntax):
    spec = StudySpec(series=[SeriesSpec("CT", "AX BONE", 1)])
    (f,) = write_study(tmp_path / "in", spec)
    ds = pydicom.dcmread(f)
    ds.compress(syntax)
    ds.save_as(f, enforce_file_format=True)
    # storescu proposes the compressed syntax beside the uncompressed ones; we must accept it
    storescu(listener.port, f, extra=("-xr" if syntax == RLELossless else "-xt",))
    path = next((listener.store.studies / spec.study_uid).rglob("*.dcm"))
    stored = pydicom.dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == syntax, "stored as received"
    assert (stored.pixel_array == ds.pixel_array).all()


def _send_raw(port: int, path: Path) -> int:
    """Send a file's bytes as they are (pynetdicom's chunked send), return the status."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="BADMODALITY")
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSTRIAGE")
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
        return status.Status
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_unparseable_dataset_is_quarantined_and_listener_keeps_serving(listener, tmp_path):
    # An element claiming 0x7FFFFFF0 bytes of a 4-byte body: no parser can read it.
    garbage = b"\x08\x00\x16\x00UI\xf0\xff" + b"1.2." + b"\x10\x00\x10\x00PN\xff\xff" + b"\x00" * 3
    bad = file_with_dataset_bytes(tmp_path / "bad.dcm", garbage, generate_uid())
    status = _send_raw(listener.port, bad)
    assert status in (0xC000, 0xA900)
    quarantined = list((listener.store.quarantine_dir).rglob("*.dcm"))
    assert len(quarantined) == 1
    reason = json.loads(quarantined[0].with_suffix(".json").read_text())
    assert reason["reason"] in ("unparseable", "invalid_uid")
    # still serving: a good study after the bad one is stored
    files = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 1)]))
    storescu(listener.port, *files)
    assert len(list(listener.store.studies.rglob("*.dcm"))) == 1


@pytest.mark.parametrize("bad_uid", ["../../etc", "", "1.2.abc"])
def test_invalid_study_uid_never_becomes_a_path(listener, tmp_path, bad_uid):
    spec = StudySpec(series=[SeriesSpec("MR", "SAG T2", 1)])
    (f,) = write_study(tmp_path / "in", spec)
    ds = pydicom.dcmread(f)
    if bad_uid:
        ds.StudyInstanceUID = bad_uid
    else:
        del ds.StudyInstanceUID
    ds.save_as(f, enforce_file_format=True)
    status = _send_raw(listener.port, f)
    assert status == 0xA900
    assert not list(listener.store.studies.rglob("*.dcm"))
    assert not (tmp_path / "etc").exists()
    assert len(list(listener.store.quarantine_dir.rglob("*.dcm"))) == 1


def test_private_storage_sop_class_is_accepted(listener, tmp_path):
    spec = StudySpec(series=[SeriesSpec("MR", "CSA", 1)])
    (f,) = write_study(tmp_path / "in", spec)
    ds = pydicom.dcmread(f)
    private = "1.3.12.2.1107.5.9.1"  # a vendor's private storage SOP class
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = private
    ds.save_as(f, enforce_file_format=True)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(private, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACSTRIAGE")
    assert assoc.is_established
    status = assoc.send_c_store(pydicom.dcmread(f))
    assoc.release()
    assert status.Status == 0x0000
    assert listener.index.load(spec.study_uid).instance_count == 1


def test_wrong_called_aet_is_rejected_when_required(tmp_path, redis_client):
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1", require_called_aet=True)
    lst = Listener(cfg, StudyStore(cfg.data_dir), StudyIndex(redis_client))
    lst.start()
    try:
        before = sample("pacs_triage_associations_rejected_total")
        with pytest.raises(RuntimeError):
            dcmtk("echoscu", "-aec", "SOMEONEELSE", "127.0.0.1", str(lst.port))
        dcmtk("echoscu", "-aec", "PACSTRIAGE", "127.0.0.1", str(lst.port))
        assert sample("pacs_triage_associations_rejected_total") - before == 1
    finally:
        lst.stop()


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def test_dicom_tls_with_client_certificates(tmp_path, redis_client):
    server_key, server_cert = _self_signed(tmp_path, "pacs-triage")
    client_key, client_cert = _self_signed(tmp_path, "modality")
    cfg = Config(port=free_port(), data_dir=tmp_path / "data", bind="127.0.0.1", tls_cert=server_cert,
                 tls_key=server_key, tls_ca=client_cert)
    lst = Listener(cfg, StudyStore(cfg.data_dir), StudyIndex(redis_client))
    lst.start()
    try:
        files = write_study(tmp_path / "in", StudySpec(series=[SeriesSpec("MR", "SAG T2", 2)]))
        tls = ("+tls", str(client_key), str(client_cert), "+cf", str(server_cert))
        storescu(lst.port, *files, extra=tls)
        assert len(list(lst.store.studies.rglob("*.dcm"))) == 2
        with pytest.raises(RuntimeError):  # plain TCP is refused
            dcmtk("echoscu", "-to", "5", "-aec", "PACSTRIAGE", "127.0.0.1", str(lst.port), timeout=20)
        other_key, other_cert = _self_signed(tmp_path, "stranger")
        with pytest.raises(RuntimeError):  # a client certificate from an unknown CA is refused
            dcmtk("echoscu", "+tls", str(other_key), str(other_cert), "+cf", str(server_cert), "-aec",
                  "PACSTRIAGE", "127.0.0.1", str(lst.port), timeout=20)
    finally:
        lst.stop()

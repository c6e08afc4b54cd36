"""`agent.structure.read_header` reads what `pydicom.dcmread(stop_before_pixels=True)` reads.

The listener's header read skips pydicom's file-meta dataset for the meta it writes itself; every
summary, UID and structural verdict must be the one `dcmread` gives, and everything else must go
to `dcmread` (big endian, deflated, a meta it does not read, a file pydicom cannot read).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit

from agent.structure import lengths_consistent, read_header, read_meta
from core.headers import summarize
from tests.core.test_headers_cache import SETTINGS, datasets, encode

from dicomgen import SeriesSpec, StudySpec, write_study


def reference(path: Path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return summarize(ds), [ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]


def fast(path: Path):
    ds, ts, meta = read_header(path)
    return summarize(ds, transfer_syntax=ts), [ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                                  "SOPInstanceUID")], meta


@SETTINGS
@given(datasets(), st.binary(max_size=6))
def test_the_same_summary_uids_and_length_verdict_as_dcmread(tmp_path_factory, data, tail):
    path = tmp_path_factory.mktemp("h") / "x.dcm"
    path.write_bytes(data + tail)  # a tail: a truncated or over-long last element
    try:
        want = reference(path)
    except Exception as exc:
        with pytest.raises(type(exc)):
            fast(path)
        return
    summary, uids, meta = fast(path)
    assert meta is not None  # the hand-encoded meta is read by struct, not by dcmread
    assert (summary, uids) == want
    assert lengths_consistent(path, meta) == lengths_consistent(path)


def test_generated_studies_read_alike(tmp_path):
    spec = StudySpec(accession="A1", patient_id="P1", reason="Contrôle post-opératoire J2, déficit",
                     series=[SeriesSpec("CT", "AX BONE", 3, rows=16, columns=16),
                             SeriesSpec("MR", "SAG T2", 2, rows=16, columns=16)])
    for path in write_study(tmp_path, spec):
        summary, uids, meta = fast(path)
        assert meta is not None
        assert 0x7FE00010 not in read_header(path)[0]  # read up to the pixel data, as dcmread(stop_before_pixels)
        assert (summary, uids) == reference(path)
        assert lengths_consistent(path, meta) and lengths_consistent(path)


def _file(tmp_path: Path, ts, name: str) -> Path:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.InstitutionName = "Hôpital"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    ds.SpecificCharacterSet = "ISO_IR 192"
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("ts", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_big_endian_and_deflated_are_read_by_dcmread(tmp_path, ts):
    path = _file(tmp_path, ts, "x.dcm")
    summary, uids, meta = fast(path)
    assert meta is None
    assert (summary, uids) == reference(path)
    assert summary["TransferSyntaxUID"] == str(ts) and summary["InstitutionName"] == "Hôpital"


def test_an_encapsulated_transfer_syntax_is_read_as_explicit_little_endian(tmp_path):
    path = _file(tmp_path, JPEGBaseline8Bit, "x.dcm")
    summary, uids, meta = fast(path)
    assert meta is not None and meta.transfer_syntax == str(JPEGBaseline8Bit)
    assert (summary, uids) == reference(path)


def test_a_meta_without_group_length_or_preamble_goes_to_dcmread(tmp_path):
    path = _file(tmp_path, "1.2.840.10008.1.2.1", "x.dcm")
    data = path.read_bytes()
    no_length = data[:132] + data[144:]  # the group length element removed
    (tmp_path / "y.dcm").write_bytes(no_length)
    with open(tmp_path / "y.dcm", "rb") as fp:
        assert read_meta(fp) is None
    assert fast(tmp_path / "y.dcm")[:2] == reference(tmp_path / "y.dcm")
    (tmp_path / "z.dcm").write_bytes(b"\0" * 128 + b"DICX" + data[132:])
    with open(tmp_path / "z.dcm", "rb") as fp:
        assert read_meta(fp) is None


def test_a_file_pydicom_cannot_read_raises_what_dcmread_raises(tmp_path):
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"not dicom at all")
    with pytest.raises(Exception) as want:
        pydicom.dcmread(path, stop_before_pixels=True)
    with pytest.raises(want.type):
        read_header(path)

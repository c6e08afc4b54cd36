"""One header parse per CT file: the HU volume and geometry are bit-identical to the two-parse path.

The geometry pass (`read_geometry`) keeps where each file's Pixel Data starts and its decoding
options; the pixel pass decodes from there without parsing the header again. The reference is
the path before this change: records without that location decode through
`pydicom.pixels.pixel_array(path)` / `iter_pixels(path)`, which parse the header a second time.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicomgen import SeriesSpec, StudySpec, write_study
from phantom import PhantomSpec, ScrewSpec, compress_copy, make_volume, write_series
from test_ct_volume import enhanced_ct
from workers.analysers import volume as vm


def two_parse(paths: list[str]) -> vm.Volume:
    """The volume as before: a header-only pass, then pixel_array(path) per file (its own header parse)."""
    records = []
    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        for r in vm._frames(p, ds):
            r.ts = ts  # pixels stays None: decoded through the path
            records.append(r)
    return vm.assemble(paths, "S", records)


def geometry(v: vm.Volume) -> tuple:
    return (v.z.tobytes(), v.pixel_spacing, v.origin.tobytes(), v.row_dir.tobytes(), v.col_dir.tobytes(),
            v.notes, v.hu.shape, v.hu.dtype)


def assert_identical(paths) -> vm.Volume:
    paths = [str(p) for p in paths]
    records = vm.read_geometry(paths)
    assert all(r.pixels is not None for r in records)  # every file takes the one-parse path
    new, old = vm.assemble(paths, "S", records), two_parse(paths)
    assert new.hu.tobytes() == old.hu.tobytes()
    assert geometry(new) == geometry(old)
    return new


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp("oneparse")
    spec = PhantomSpec(shape=(24, 64, 56), screws=[ScrewSpec(0, "left", medial=3.0), ScrewSpec(0, "right")],
                       seed=11)
    vol, z = make_volume(spec)
    return spec, vol, z, write_series(spec, d / "plain", vol=vol, z_positions=z, shuffle=True), d


def test_plain_phantom(phantom):
    _, vol, _, paths, _ = phantom
    v = assert_identical(reversed(paths))
    assert np.ptp(v.hu) > 1000  # bone and metal, not a flat image


@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpegls", "j2k"])
def test_compressed_phantom(phantom, ts):
    _, _, _, paths, d = phantom
    cpaths = compress_copy(paths, d / ts.name.replace(" ", "_"), ts)
    assert str(dcmread(cpaths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts
    assert_identical(cpaths)


def test_implicit_vr_and_12_bit_stored(tmp_path):
    spec = PhantomSpec(shape=(12, 40, 40), screws=[ScrewSpec(0, "left")], bits12=True, seed=3)
    paths = write_series(spec, tmp_path / "plain")
    out = tmp_path / "implicit"
    out.mkdir()
    ipaths = []
    for p in paths:
        ds = dcmread(p)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(out / p.name, enforce_file_format=True)
        ipaths.append(out / p.name)
    assert dcmread(ipaths[0]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert_identical(paths)
    assert_identical(ipaths)


def test_rescale_slope_and_private_trailing_elements(tmp_path):
    """Slope 2 (the float HU path) and an element after Pixel Data (trailing padding)."""
    spec = PhantomSpec(shape=(10, 32, 32), screws=[], rods=False)
    paths = write_series(spec, tmp_path)
    for p in paths:
        ds = dcmread(p)
        ds.PixelData = (ds.pixel_array.astype(np.int32) // 2).astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 16)  # Data Set Trailing Padding
        ds.save_as(p, enforce_file_format=True)
    assert_identical(paths)


def test_bench_ct_from_dicomgen(tmp_path):
    """The CT of the load benchmark (gradient pixels), smaller."""
    spec = StudySpec(accession="EQ1", series=[SeriesSpec("CT", "AX BONE 0.6", 12, rows=128, columns=128)])
    paths = [p for p in write_study(tmp_path, spec) if dcmread(p, stop_before_pixels=True).Modality == "CT"]
    assert len(paths) == 12
    assert_identical(paths)


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, RLELossless], ids=["native", "rle"])
def test_enhanced_ct_multiframe(tmp_path, ts):
    spec = PhantomSpec(shape=(12, 48, 40), screws=[], rods=False)
    vol, z = make_volume(spec)
    order = np.random.default_rng(1).permutation(len(z))
    enhanced_ct(vol, z, spec, tmp_path / "enh.dcm", order)
    paths = [tmp_path / "enh.dcm"]
    if ts != ExplicitVRLittleEndian:
        paths = compress_copy(paths, tmp_path / "c", ts)
    v = assert_identical(paths)
    np.testing.assert_array_equal(v.hu, np.rint(vol).astype(np.int16))


def test_each_file_is_parsed_once(phantom, monkeypatch):
    """dcmread once per file in the geometry pass; the pixel pass parses no header."""
    _, _, _, paths, _ = phantom
    reads = []
    real = vm.dcmread
    monkeypatch.setattr(vm, "dcmread", lambda *a, **k: reads.append(a[0]) or real(*a, **k))

    def no_parse(*a, **k):
        raise AssertionError("header parsed again for pixels")

    monkeypatch.setattr(vm, "pixel_array", no_parse)
    monkeypatch.setattr(vm, "iter_pixels", no_parse)
    v = vm.assemble([str(p) for p in paths])
    assert len(reads) == len(paths) and v.hu.shape[0] == len(paths)


def test_budget_refuses_before_any_pixel_is_read(phantom, monkeypatch):
    _, _, _, paths, _ = phantom
    monkeypatch.setattr(vm, "_decode", lambda *a, **k: pytest.fail("pixels decoded over budget"))
    with pytest.raises(vm.VolumeError, match="memory budget"):
        vm.assemble([str(p) for p in paths], budget_bytes=1024)


def test_a_file_without_pixel_data_fails_as_before(phantom, tmp_path):
    _, _, _, paths, _ = phantom
    src = [str(p) for p in paths[:10]]
    ds = dcmread(src[0])
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    src[0] = str(tmp_path / "nopix.dcm")
    with pytest.raises(AttributeError, match="no pixel data to decode"):
        two_parse(src)
    with pytest.raises(AttributeError, match="no pixel data to decode"):
        vm.assemble(src)


def test_records_without_location_still_decode(phantom):
    """Records built elsewhere (no pixel location) decode through the path as before."""
    _, _, _, paths, _ = phantom
    paths = [str(p) for p in paths]
    records = [dataclasses.replace(r, pixels=None) for r in vm.read_geometry(paths)]
    assert vm.assemble(paths, "S", records).hu.tobytes() == two_parse(paths).hu.tobytes()

"""Volume assembly: ordering, rescale, transfer syntaxes, Enhanced CT, bad stacks."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from phantom import PhantomSpec, ScrewSpec, compress_copy, load_study, make_volume, write_series
from workers.analysers import run_analysers
from workers.analysers.ct_hardware import CTHardwareAnalyser
from workers.analysers.volume import VolumeError, assemble

SPEC = PhantomSpec(screws=[ScrewSpec(0, "left", medial=3.0), ScrewSpec(0, "right"),
                           ScrewSpec(1, "left", medial=5.0), ScrewSpec(1, "right")], seed=7)


def expected_hu(vol: np.ndarray) -> np.ndarray:
    return (np.clip(np.rint(vol + 1024), 0, 65535) - 1024).astype(np.int16)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp("vol")
    vol, z = make_volume(SPEC)
    paths = write_series(SPEC, d / "plain", vol=vol, z_positions=z, shuffle=True)
    return vol, z, paths, d


def grades(res):
    return sorted((m["construct_level"], m["side"], m["grade"], m["value"])
                  for m in res.measurements if m["name"] == "medial_breach_depth")


def test_shuffled_instance_numbers_assemble_in_position_order(phantom):
    vol, z, paths, _ = phantom
    numbers = [int(dcmread(p, stop_before_pixels=True).InstanceNumber) for p in paths]
    assert numbers != sorted(numbers)  # the files really are out of order
    v = assemble([str(p) for p in reversed(paths)])
    assert v.hu.dtype == np.int16 and v.hu.shape == vol.shape
    np.testing.assert_allclose(v.z, z)
    np.testing.assert_array_equal(v.hu, expected_hu(vol))


@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpegls", "j2k"])
def test_compressed_copies_give_the_same_result(phantom, ts):
    vol, _, paths, d = phantom
    out = d / ts.name.replace(" ", "_")
    cpaths = compress_copy(paths, out, ts)
    assert str(dcmread(cpaths[0]).file_meta.TransferSyntaxUID) == ts
    v = assemble([str(p) for p in cpaths])
    np.testing.assert_array_equal(v.hu, expected_hu(vol))
    [plain] = run_analysers(load_study(d / "plain"), [CTHardwareAnalyser()])
    [comp] = run_analysers(load_study(out), [CTHardwareAnalyser()])
    assert grades(comp) == grades(plain) and len(grades(plain)) == 4
    assert [f.priority for f in comp.flags] == [f.priority for f in plain.flags] != []


def test_rescale_slope_and_intercept(tmp_path):
    spec = PhantomSpec(shape=(10, 32, 32), screws=[], rods=False)
    paths = write_series(spec, tmp_path)
    before = assemble([str(p) for p in paths]).hu
    for p in paths:  # store (HU + 1024) / 2 with slope 2, intercept -1024
        ds = dcmread(p)
        ds.PixelData = (ds.pixel_array.astype(np.int32) // 2).astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.save_as(p)
    after = assemble([str(p) for p in paths]).hu
    assert np.abs(after.astype(int) - before).max() <= 1
    assert np.ptp(before) > 100  # real content, not a flat image


def test_uneven_spacing_is_kept(tmp_path):
    spec = PhantomSpec(shape=(40, 64, 64), screws=[], rods=False)
    z = np.cumsum(np.r_[0, np.tile([0.7, 0.9], 20)[:39]]) - 15.0
    paths = write_series(spec, tmp_path, z_positions=z)
    v = assemble([str(p) for p in paths])
    np.testing.assert_allclose(v.z, z)
    assert any("uneven" in n for n in v.notes)
    assert v.z_index(z[5]) == pytest.approx(5.0)


def test_gap_is_an_incomplete_series(tmp_path):
    spec = PhantomSpec(shape=(30, 64, 64), screws=[], rods=False)
    paths = write_series(spec, tmp_path)
    del paths[12:15]
    with pytest.raises(VolumeError, match="incomplete series: gap"):
        assemble([str(p) for p in paths])


def test_gantry_tilt_is_skipped_with_reason(tmp_path):
    write_series(SPEC, tmp_path, tilt=12.0)
    [res] = run_analysers(load_study(tmp_path), [CTHardwareAnalyser()])
    assert res.flags == []
    assert len(res.not_assessed) == 1 and "gantry-tilted" in res.not_assessed[0]


def test_sheared_stack_without_tilt_attribute_is_skipped(tmp_path):
    paths = write_series(PhantomSpec(shape=(20, 64, 64), screws=[], rods=False), tmp_path, tilt=15.0)
    for p in paths:
        ds = dcmread(p)
        del ds.GantryDetectorTilt
        ds.save_as(p)
    with pytest.raises(VolumeError, match="sheared"):
        assemble([str(p) for p in paths])


def enhanced_ct(vol: np.ndarray, z: np.ndarray, spec: PhantomSpec, path, order) -> None:
    """One Enhanced CT file, frames stored in `order`, geometry in per-frame functional groups."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = vol.shape[1], vol.shape[2], len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    ori, meas, pvt = Dataset(), Dataset(), Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas.PixelSpacing, meas.SliceThickness = [spec.pixel, spec.pixel], spec.slice_spacing
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, 0, "HU"
    shared.PlaneOrientationSequence = Sequence([ori])
    shared.PixelMeasuresSequence = Sequence([meas])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [-10.0, -20.0, float(z[k])]
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.rint(vol[order]).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_ct_multiframe(tmp_path):
    spec = PhantomSpec(shape=(12, 48, 40), screws=[], rods=False)
    vol, z = make_volume(spec)
    order = np.random.default_rng(1).permutation(len(z))
    enhanced_ct(vol, z, spec, tmp_path / "enh.dcm", order)
    v = assemble([str(tmp_path / "enh.dcm")])
    np.testing.assert_allclose(v.z, z)
    np.testing.assert_array_equal(v.hu, np.rint(vol).astype(np.int16))
    assert v.pixel_spacing == (spec.pixel, spec.pixel)

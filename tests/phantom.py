"""Synthetic postoperative lumbar CT phantom written as a real CT Image Storage series.

Geometry in mm, patient LPS: x towards the patient's left, y posterior, z
cranial; the canal of every vertebra is centred on x = y = 0. Each vertebra
has a body (cortex and cancellous bone), pedicles and laminae closing the
bony ring at pedicle height, a spinous process; discs between. Pedicle screws
run antero-posteriorly; `medial` sets how far (mm) the screw surface enters
the canal, `lateral` how far it leaves the pedicle's lateral wall. Rods join
the screw heads of each side. Noise, blur and streaks near metal are added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage as ndi

CANAL_HALF_W = 11.0  # canal half width (x) = pedicle medial wall
CANAL_HALF_AP = 8.0
PEDICLE_W = 8.0
SCREW_R = 3.0
SCREW_LEN = 45.0
PEDICLE_HALF_H = 8.0
METAL_HU = {"steel": 14000.0, "titanium": 7000.0}


@dataclass
class ScrewSpec:
    level: int  # vertebra index (0 = caudal)
    side: str  # "left" | "right"
    medial: float = 0.0  # true medial breach depth (mm); 0 = well placed
    lateral: float = 0.0
    halo: float = 0.0  # lucent halo width (mm) over the anterior 40 %
    irregular: bool = False


@dataclass
class PhantomSpec:
    shape: tuple[int, int, int] = (80, 256, 256)  # z, y, x
    pixel: float = 0.7
    slice_spacing: float = 0.8
    levels: int = 2
    screws: list[ScrewSpec] = field(default_factory=list)
    rods: bool = True
    lead: bool = False  # spinal cord stimulator lead, dorsal epidural
    laminectomy: bool = False
    metal: str = "titanium"
    bits12: bool = False  # 12-bit storage: metal saturates at 3071 HU
    noise: float = 12.0
    streaks: bool = True
    seed: int = 0
    contrast_agent: str | None = None


def screw_x(s: ScrewSpec) -> float:
    """Axis x of a screw: centred in the pedicle unless breached."""
    if s.medial > 0:
        x = CANAL_HALF_W + SCREW_R - s.medial
    elif s.lateral > 0:
        x = CANAL_HALF_W + PEDICLE_W - SCREW_R + s.lateral
    else:
        x = CANAL_HALF_W + PEDICLE_W / 2
    return x if s.side == "left" else -x


def level_z(spec: PhantomSpec, level: int) -> float:
    height = spec.shape[0] * spec.slice_spacing
    pitch = height / spec.levels
    return -height / 2 + pitch * (level + 0.5)


def grid(spec: PhantomSpec, z_positions: np.ndarray):
    nz, ny, nx = spec.shape
    x = (np.arange(nx) - nx / 2 + 0.5) * spec.pixel
    y = (np.arange(ny) - ny / 2 + 0.5) * spec.pixel - 5.0
    return z_positions[:, None, None], y[None, :, None], x[None, None, :]


def make_volume(spec: PhantomSpec, z_positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(HU float32 volume (z, y, x), z positions)."""
    rng = np.random.default_rng(spec.seed)
    nz = spec.shape[0]
    if z_positions is None:
        z_positions = (np.arange(nz) - nz / 2 + 0.5) * spec.slice_spacing
    Z, Y, X = grid(spec, z_positions)
    vol = np.full(np.broadcast_shapes(Z.shape, Y.shape, X.shape), -1000.0, np.float32)
    vol[:] = np.where((X / 85.0) ** 2 + ((Y + 5) / 80.0) ** 2 <= 1, 40.0, -1000.0)
    for lev in range(spec.levels):
        zc = level_z(spec, lev)
        dzb = np.abs(Z - zc)
        ax = np.abs(X)
        body_in = (ax / 22.0) ** 4 + (np.abs(Y + 25.0) / 17.0) ** 4 <= 1
        body_core = (ax / 20.5) ** 4 + (np.abs(Y + 25.0) / 15.5) ** 4 <= 1
        pedicle = (ax >= CANAL_HALF_W) & (ax <= CANAL_HALF_W + PEDICLE_W) & (Y >= -18) & (Y <= 9) & (dzb <= PEDICLE_HALF_H)
        lamina = (ax <= CANAL_HALF_W + PEDICLE_W) & (Y >= CANAL_HALF_AP) & (Y <= CANAL_HALF_AP + 5) & (dzb <= 11)
        spinous = (ax <= 3) & (Y >= CANAL_HALF_AP) & (Y <= 38) & (dzb <= 10)
        if spec.laminectomy:
            lamina = lamina & (ax > 7)
            spinous = spinous & False
        vol[:] = np.where(pedicle | lamina | spinous, 700.0, vol)
        vol[:] = np.where(body_in & (dzb <= 13), 800.0, vol)
        vol[:] = np.where(body_core & (dzb <= 12), 250.0, vol)
    metal = np.zeros(vol.shape, bool)
    halo = np.zeros(vol.shape, bool)
    heads = {"left": [], "right": []}
    for s in spec.screws:
        zc, xs = level_z(spec, s.level), screw_x(s)
        r = np.sqrt((X - xs) ** 2 + (Z - zc) ** 2)
        y_tip, y_head = 14.0 - SCREW_LEN, 14.0
        shaft = (r <= SCREW_R) & (Y >= y_tip) & (Y <= y_head)
        head = (np.abs(X - xs) <= 5) & (np.abs(Z - zc) <= 5) & (Y >= y_head) & (Y <= y_head + 9)
        metal |= shaft | head
        heads[s.side].append((zc, xs))
        if s.halo > 0:
            w = s.halo
            if s.irregular:
                ang = np.arctan2(Z - zc, X - xs)
                w = s.halo * (1 + 0.6 * np.sin(3 * ang) * np.cos(0.7 * (Y - y_tip)))
            halo |= (r > SCREW_R) & (r <= SCREW_R + w) & (Y >= y_tip - w) & (Y <= y_tip + 0.4 * SCREW_LEN)
    if spec.rods:
        for side, hs in heads.items():
            if len(hs) < 2:
                continue
            hs.sort()
            (z0, x0), (z1, x1) = hs[0], hs[-1]
            t = np.clip((Z - z0) / (z1 - z0), -0.4, 1.4)
            xr = x0 + t * (x1 - x0)
            rod = ((X - xr) ** 2 + (Y - 27.0) ** 2 <= 2.75 ** 2) & (Z >= z0 - 12) & (Z <= z1 + 12)
            metal |= rod
    if spec.lead:
        metal |= ((X - 2.0) ** 2 + (Y - 6.0) ** 2 <= 0.7 ** 2) & (np.abs(Z) <= 0.45 * spec.shape[0] * spec.slice_spacing)
    vol[halo & ~metal] = 30.0
    vol[metal] = METAL_HU[spec.metal]
    ndi.gaussian_filter(vol, sigma=(0.5, 0.6, 0.6), output=vol)
    if spec.streaks and metal.any():
        mz = np.nonzero(metal.any(axis=(1, 2)))[0]
        for k in mz:
            cy, cx = ndi.center_of_mass(metal[k])
            yy, xx = np.mgrid[0:vol.shape[1], 0:vol.shape[2]]
            ang = np.arctan2(yy - cy, xx - cx)
            rr = np.hypot(yy - cy, xx - cx) * spec.pixel
            vol[k] += (150.0 * np.cos(6 * ang + k * 0.3) * np.exp(-rr / 40.0)).astype(np.float32)
    vol += rng.normal(0, spec.noise, vol.shape).astype(np.float32)
    return vol, z_positions


def write_series(spec: PhantomSpec, out: Path, vol: np.ndarray | None = None, z_positions=None,
                 shuffle: bool = False, tilt: float = 0.0, study_uid: str | None = None,
                 series_uid: str | None = None, start: int = 0) -> list[Path]:
    """Write the phantom as CT Image Storage files; returns the paths.

    `series_uid` and `start` let a large series be written slab by slab.
    """
    out.mkdir(parents=True, exist_ok=True)
    if vol is None:
        vol, z_positions = make_volume(spec, z_positions)
    nz, ny, nx = vol.shape
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid(prefix=None, entropy_srcs=[series_uid])
    _, Y, X = grid(spec, z_positions)
    x0, y0 = float(X.ravel()[0]), float(Y.ravel()[0])
    if spec.bits12:
        raw = np.clip(np.rint(vol + 1024), 0, 4095).astype(np.uint16)
    else:
        raw = np.clip(np.rint(vol + 1024), 0, 65535).astype(np.uint16)
    numbers = np.arange(start + 1, start + nz + 1)
    if shuffle:
        np.random.default_rng(spec.seed + 1).shuffle(numbers)
    paths = []
    for k in range(nz):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.AccessionNumber = "PHANTOM01", "PHANTOM^CT", "ACC-CT-1"
        ds.StudyDate = ds.SeriesDate = "20261121"
        ds.StudyTime = "101500"
        ds.Modality, ds.Manufacturer = "CT", "SYNTHETIC"
        ds.StudyDescription, ds.SeriesDescription = "CT RACHIS LOMBAIRE", "AX BONE 0.8"
        ds.BodyPartExamined = "LSPINE"
        ds.SeriesNumber, ds.InstanceNumber = 3, int(numbers[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ConvolutionKernel = "BONE"
        ds.SliceThickness = spec.slice_spacing
        ds.KVP, ds.GantryDetectorTilt = 120, tilt
        if spec.contrast_agent:
            ds.ContrastBolusAgent = spec.contrast_agent
        z = float(z_positions[k])
        shift = np.tan(np.radians(tilt)) * z  # a tilted gantry shears the stack along y
        ds.ImagePositionPatient = [x0, y0 + shift, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spec.pixel, spec.pixel]
        ds.SliceLocation = z
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, (12 if spec.bits12 else 16), (11 if spec.bits12 else 15)
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 500, 2000
        ds.PixelData = raw[k].tobytes()
        p = out / f"CT{start + k:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def compress_copy(paths: list[Path], out: Path, ts_uid: str) -> list[Path]:
    """A compressed copy of a series (pydicom's Dataset.compress)."""
    from pydicom import dcmread

    out.mkdir(parents=True, exist_ok=True)
    res = []
    for p in paths:
        ds = dcmread(p)
        ds.compress(ts_uid, generate_instance_uid=False)
        q = out / p.name
        ds.save_as(q, enforce_file_format=True)
        res.append(q)
    return res


def load_study(*dirs: Path):
    """A Study from files on disk (header summaries, as the offline path builds it)."""
    from pydicom import dcmread

    from core.headers import summarize
    from core.study import Study

    summaries = []
    for d in dirs:
        for p in sorted(Path(d).glob("*.dcm")):
            summaries.append(summarize(dcmread(p, stop_before_pixels=True), path=p))
    return Study.from_summaries(summaries)

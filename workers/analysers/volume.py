"""Assemble a CT series into an int16 HU volume ordered along the slice normal.

Slices are ordered by ImagePositionPatient projected on the normal of
ImageOrientationPatient (never by InstanceNumber). Single-frame and
multi-frame (Enhanced CT, per-frame functional groups) files are read through
pydicom's pixel decoders, so every transfer syntax with an installed plug-in
(JPEG lossless, JPEG-LS, JPEG 2000, RLE) works. The volume is preallocated and
filled slice by slice. A tilted, non-axial or incomplete series raises
`VolumeError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom import dcmread
from pydicom.pixels import iter_pixels, pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGLSTransferSyntaxes


class VolumeError(Exception):
    """The series cannot be assembled; the message is the reason."""


@dataclass
class Volume:
    hu: np.ndarray  # int16, (z, y, x)
    z: np.ndarray  # slice positions along the normal, ascending (mm)
    pixel_spacing: tuple[float, float]  # (row spacing = y, column spacing = x) in mm
    origin: np.ndarray  # ImagePositionPatient of the first slice
    row_dir: np.ndarray
    col_dir: np.ndarray
    series_uid: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def dz(self) -> float:
        return float(np.median(np.diff(self.z))) if len(self.z) > 1 else 1.0

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(z, y, x) voxel size in mm; z is the median slice spacing."""
        return (self.dz, self.pixel_spacing[0], self.pixel_spacing[1])

    def z_index(self, z_mm):
        """Fractional slice index of positions along the normal (handles uneven spacing)."""
        return np.interp(z_mm, self.z, np.arange(len(self.z), dtype=float))


@dataclass
class _Slice:
    path: str
    frame: int | None
    ipp: np.ndarray
    iop: np.ndarray
    spacing: tuple[float, float]
    slope: float
    intercept: float
    rows: int
    cols: int
    ts: str = ""


def _f(values) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=float)


def _fg(item, seq: str, kw: str):
    """A value from a functional group item (e.g. PlanePositionSequence.ImagePositionPatient)."""
    s = item.get(seq) if item is not None else None
    if s:
        return s[0].get(kw)
    return None


def _frames(path: str, ds) -> list[_Slice]:
    """Slice records of one file (one record per frame)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    tilt = ds.get("GantryDetectorTilt")
    if tilt is not None and abs(float(tilt)) > 0.5:
        raise VolumeError(f"gantry-tilted series (GantryDetectorTilt {float(tilt):.1f} deg): not assessed")
    nframes = int(ds.get("NumberOfFrames") or 1)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        if nframes != 1:
            raise VolumeError("multi-frame file without per-frame functional groups")
        try:
            return [
                _Slice(path, None, _f(ds.ImagePositionPatient), _f(ds.ImageOrientationPatient),
                       tuple(_f(ds.PixelSpacing)), float(ds.get("RescaleSlope") or 1.0),
                       float(ds.get("RescaleIntercept") or 0.0), rows, cols)
            ]
        except AttributeError as exc:
            raise VolumeError(f"missing geometry attribute ({exc})") from None
    out = []
    for i, item in enumerate(per_frame):
        def get(seq, kw):
            v = _fg(item, seq, kw)
            return v if v is not None else _fg(shared, seq, kw)

        ipp, iop, ps = (get("PlanePositionSequence", "ImagePositionPatient"),
                        get("PlaneOrientationSequence", "ImageOrientationPatient"),
                        get("PixelMeasuresSequence", "PixelSpacing"))
        if ipp is None or iop is None or ps is None:
            raise VolumeError(f"frame {i + 1} lacks plane position, orientation or pixel spacing")
        slope = get("PixelValueTransformationSequence", "RescaleSlope")
        icpt = get("PixelValueTransformationSequence", "RescaleIntercept")
        out.append(_Slice(path, i, _f(ipp), _f(iop), tuple(_f(ps)),
                          float(slope if slope is not None else ds.get("RescaleSlope") or 1.0),
                          float(icpt if icpt is not None else ds.get("RescaleIntercept") or 0.0), rows, cols))
    return out


def read_geometry(paths: list[str]) -> list[_Slice]:
    """Header-only pass over the files."""
    records: list[_Slice] = []
    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        for r in _frames(p, ds):
            r.ts = ts
            records.append(r)
    return records


def _plugin(ts: str) -> str:
    """The fastest installed decoder plug-in for a transfer syntax ("" lets pydicom choose)."""
    if ts in JPEGLSTransferSyntaxes:  # pyjpegls decodes about 4x faster than pylibjpeg-libjpeg
        try:
            if "pyjpegls" in get_decoder(ts).available_plugins:
                return "pyjpegls"
        except Exception:
            pass
    return ""


def plan(records: list[_Slice], max_gap: float = 1.6) -> tuple[list[_Slice], np.ndarray, list[str]]:
    """Order the slices along the normal and check the stack; returns (ordered, z, notes)."""
    if len(records) < 8:
        raise VolumeError(f"incomplete series: {len(records)} slices (at least 8 needed)")
    first = records[0]
    for r in records:
        if (r.rows, r.cols) != (first.rows, first.cols) or not np.allclose(r.spacing, first.spacing, atol=1e-3):
            raise VolumeError("slices differ in matrix size or pixel spacing (mixed stacks)")
        if not np.allclose(r.iop, first.iop, atol=1e-3):
            raise VolumeError("slices differ in orientation (mixed stacks)")
    row_dir, col_dir = first.iop[:3], first.iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(normal[2]) < 0.9:
        raise VolumeError("not an axial stack (slice normal far from the patient axis)")
    ipp = np.array([r.ipp for r in records])
    pos = ipp @ normal
    order = np.argsort(pos, kind="stable")
    z = pos[order]
    steps = np.diff(z)
    if np.any(steps < 1e-3):
        raise VolumeError("duplicate slice positions (several stacks in one series?)")
    # In-plane drift of successive origins means sheared slices: gantry tilt.
    d = ipp[order[-1]] - ipp[order[0]]
    drift = d - (d @ normal) * normal
    if np.linalg.norm(drift) > 0.5 * max(first.spacing) + 1e-3:
        raise VolumeError(f"gantry-tilted or sheared series (origins drift {np.linalg.norm(drift):.1f} mm in plane): not assessed")
    med = float(np.median(steps))
    if steps.max() > max_gap * med:
        k = int(np.argmax(steps))
        raise VolumeError(f"incomplete series: gap of {steps[k]:.1f} mm after z={z[k]:.1f} mm (median spacing {med:.2f} mm)")
    notes = []
    if steps.max() - steps.min() > 0.1 * med:
        notes.append(f"uneven slice spacing {steps.min():.2f}-{steps.max():.2f} mm; slice positions used as given")
    return [records[i] for i in order], z, notes


def _to_hu(raw: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    if slope == 1.0 and float(intercept).is_integer():
        shift = int(intercept)
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if -32768 <= lo + shift and hi + shift <= 32767:  # in range: exact, no clipping pass
            if -32768 <= lo and hi <= 32767 and -32768 <= shift <= 32767:
                np.copyto(out, raw, casting="unsafe")
                if shift:
                    out += np.int16(shift)
            else:
                np.add(raw, np.int32(shift), out=out, casting="unsafe")
            return
        tmp = raw.astype(np.int32) + shift
        np.clip(tmp, -32768, 32767, out=tmp)
        out[...] = tmp
    else:
        tmp = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        np.rint(tmp, out=tmp)
        np.clip(tmp, -32768, 32767, out=out, casting="unsafe")


def decoded_bytes(records: list[_Slice]) -> int:
    """Size of the int16 volume these slices decode to."""
    return sum(r.rows * r.cols * 2 for r in records)


def assemble(paths: list[str], series_uid: str = "", records: list[_Slice] | None = None,
             budget_bytes: int | None = None) -> Volume:
    """The HU volume of a CT series (int16, z ascending along the slice normal).

    `budget_bytes`: a series whose decoded volume would exceed it is refused (VolumeError) before any
    pixel is decoded or the volume allocated.
    """
    ordered, z, notes = plan(records if records is not None else read_geometry(paths))
    first = ordered[0]
    size = decoded_bytes(ordered)
    if budget_bytes is not None and size > budget_bytes:
        raise VolumeError(f"volume too large: {len(ordered)} slices of {first.rows}x{first.cols} decode to "
                          f"{size / 2**20:.0f} MB, over the {budget_bytes / 2**20:.0f} MB memory budget")
    hu = np.empty((len(ordered), first.rows, first.cols), dtype=np.int16)
    by_file: dict[str, list[tuple[int, _Slice]]] = {}
    for k, r in enumerate(ordered):
        by_file.setdefault(r.path, []).append((k, r))
    for path, items in by_file.items():
        if items[0][1].frame is None:
            k, r = items[0]
            _to_hu(pixel_array(path, decoding_plugin=_plugin(r.ts)), r.slope, r.intercept, hu[k])
        else:
            slot = {r.frame: (k, r) for k, r in items}
            for i, frame in enumerate(iter_pixels(path, decoding_plugin=_plugin(items[0][1].ts))):  # one frame at a time
                k, r = slot[i]
                _to_hu(frame, r.slope, r.intercept, hu[k])
    return Volume(hu=hu, z=z, pixel_spacing=(float(first.spacing[0]), float(first.spacing[1])),
                  origin=first.ipp, row_dir=first.iop[:3], col_dir=first.iop[3:],
                  series_uid=series_uid, notes=notes)

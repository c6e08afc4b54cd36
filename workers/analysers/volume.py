"""Assemble a CT series into an int16 HU volume ordered along the slice normal.

Slices are ordered by ImagePositionPatient projected on the normal of
ImageOrientationPatient (never by InstanceNumber). Single-frame and
multi-frame (Enhanced CT, per-frame functional groups) files are read through
pydicom's pixel decoders, so every transfer syntax with an installed plug-in
(JPEG lossless, JPEG-LS, JPEG 2000, RLE) works. The volume is preallocated and
filled slice by slice. A tilted, non-axial or incomplete series raises
`VolumeError` with the reason.

Each header is parsed once: the geometry pass keeps, per file, the offset of
its Pixel Data element and the decoding options of its Image Pixel module, and
the pixel pass decodes from that offset without parsing the header again (what
`pydicom.pixels.pixel_array(path)` would do a second time). No pixel byte is
read before the plan and the memory budget check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from struct import unpack

from pydicom import dcmread
from pydicom.pixels import as_pixel_options, iter_pixels, pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, JPEGLSTransferSyntaxes


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
class _Pixels:
    """The Pixel Data element of one file, located by the geometry pass."""
    offset: int  # file offset of the element's tag
    options: dict  # pydicom decoding options from the header (Image Pixel module, transfer syntax)


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
    pixels: _Pixels | None = None  # where the file's pixel data starts (None: decode through the path)


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
        with open(p, "rb") as f:
            ds = dcmread(f, stop_before_pixels=True)
            offset = f.tell()  # stop_before_pixels leaves the file at the Pixel Data tag (or at its end)
        ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        pixels = _locate(ds, ts, offset)
        for r in _frames(p, ds):
            r.ts, r.pixels = ts, pixels
            records.append(r)
    return records


def _locate(ds, ts: str, offset: int) -> _Pixels | None:
    """Decoding options of a parsed header; None (decode through the path) when pydicom cannot build them."""
    if not ts:
        return None
    try:
        options = as_pixel_options(ds)
    except Exception:
        return None  # the pixel pass reports the problem as pydicom always did
    options["transfer_syntax_uid"] = UID(ts)
    return _Pixels(offset, options)


_PIXEL_KEYWORDS = {(0x7FE0, 0x0008): "FloatPixelData", (0x7FE0, 0x0009): "DoubleFloatPixelData",
                   (0x7FE0, 0x0010): "PixelData"}


def _open_pixels(f, px: _Pixels) -> dict:
    """Position `f` at the value of the Pixel Data element; the decoder options for it.

    The same steps as pydicom's `pixel_array(path)` after its header parse (pydicom 3
    `pixels.utils._array_common`): read the element's tag, VR and length, then decode from there.
    """
    f.seek(px.offset)
    opts = dict(px.options)
    tsyntax = opts["transfer_syntax_uid"]
    data = f.read(8)
    if len(data) != 8:
        raise AttributeError("The dataset in 'src' has no 'Pixel Data', 'Float Pixel Data' or "
                             "'Double Float Pixel Data' element, no pixel data to decode")
    endian = "><"[tsyntax.is_little_endian]
    if tsyntax.is_implicit_VR:
        group, elem, _ = unpack(f"{endian}HHL", data)
    else:
        group, elem, vr, _ = unpack(f"{endian}HH2sH", data)
        opts["pixel_vr"] = vr.decode("iso8859")
        f.read(4)  # the 32-bit length of OB/OW/OF/OD
    opts["pixel_keyword"] = _PIXEL_KEYWORDS[(group, elem)]
    return opts


def _decode(path: str, px: _Pixels | None, plugin: str) -> np.ndarray:
    """The pixel array of a single-frame file."""
    if px is None:
        return pixel_array(path, decoding_plugin=plugin)
    with open(path, "rb") as f:
        opts = _open_pixels(f, px)
        return get_decoder(opts["transfer_syntax_uid"]).as_array(
            f, validate=True, decoding_plugin=plugin, **opts)[0]


def _decode_frames(path: str, px: _Pixels | None, plugin: str):
    """The frames of a multi-frame file, one at a time."""
    if px is None:
        yield from iter_pixels(path, decoding_plugin=plugin)
        return
    with open(path, "rb") as f:
        opts = _open_pixels(f, px)
        for arr, _ in get_decoder(opts["transfer_syntax_uid"]).iter_array(
                f, validate=True, decoding_plugin=plugin, **opts):
            yield arr


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
            _to_hu(_decode(path, r.pixels, _plugin(r.ts)), r.slope, r.intercept, hu[k])
        else:
            slot = {r.frame: (k, r) for k, r in items}
            r0 = items[0][1]
            for i, frame in enumerate(_decode_frames(path, r0.pixels, _plugin(r0.ts))):  # one frame at a time
                k, r = slot[i]
                _to_hu(frame, r.slope, r.intercept, hu[k])
    return Volume(hu=hu, z=z, pixel_spacing=(float(first.spacing[0]), float(first.spacing[1])),
                  origin=first.ipp, row_dir=first.iop[:3], col_dir=first.iop[3:],
                  series_uid=series_uid, notes=notes)

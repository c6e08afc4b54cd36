"""Spinal canal per axial slice and a screw's breach relative to it.

The canal is the low-density region enclosed by the bony ring: threshold bone
(200 HU), fill holes per slice, subtract bone. A screw breaking the medial
pedicle wall replaces the wall it crosses, so the reference canal for a screw
is taken from the nearest metal-free slices above and below the screw (the
pedicle is taller than the screw is thick); depth is the 2-D distance
transform of that reference canal at the screw's voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BONE_HU = 200
CANAL_AREA_MM2 = (50.0, 900.0)


def canal_slice(hu2d: np.ndarray, pixel_mm: tuple[float, float], centre_x: float | None = None) -> np.ndarray | None:
    """Canal mask of one axial slice (ROI), or None when no enclosed low-density region fits."""
    bone = hu2d >= BONE_HU
    lumen = ndi.binary_fill_holes(bone) & ~bone
    lab, n = ndi.label(lumen)
    if n == 0:
        return None
    area = ndi.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1)) * pixel_mm[0] * pixel_mm[1]
    ok = np.nonzero((area >= CANAL_AREA_MM2[0]) & (area <= CANAL_AREA_MM2[1]))[0]
    if len(ok) == 0:
        return None
    if centre_x is not None:  # the canal lies between the screws of a level
        cx = np.array([c[1] for c in ndi.center_of_mass(lumen, lab, ok + 1)]) * pixel_mm[1]
        near = ok[np.abs(cx - centre_x) < 15.0]
        if len(near) == 0:
            return None
        ok = near
    best = ok[np.argmax(area[ok])] + 1
    return lab == best


def depth_map(canal: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Depth (mm) of each canal pixel from the canal wall; half a pixel is taken off for the wall position."""
    d = ndi.distance_transform_edt(canal, sampling=pixel_mm)
    return np.where(canal, np.maximum(d - 0.5 * min(pixel_mm), 0.0), 0.0)


def outside_map(envelope: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Distance (mm) of each pixel outside a bone envelope to that envelope."""
    d = ndi.distance_transform_edt(~envelope, sampling=pixel_mm)
    return np.maximum(d - 0.5 * min(pixel_mm), 0.0)


def bone_envelope(hu2d: np.ndarray) -> np.ndarray:
    """Bone with its enclosed marrow and canal: the vertebra's outline in this slice."""
    return ndi.binary_fill_holes(hu2d >= BONE_HU)


def gertzbein_robbins(depth_mm: float) -> str:
    """A no breach; B < 2 mm; C 2-4 mm; D 4-6 mm; E >= 6 mm."""
    if depth_mm <= 0:
        return "A"
    if depth_mm < 2:
        return "B"
    if depth_mm < 4:
        return "C"
    if depth_mm < 6:
        return "D"
    return "E"

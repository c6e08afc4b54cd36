"""The key image of a CT hardware finding: the axial slice at the worst screw, with the screw,
the spinal canal outline and the breach depth drawn on it.

Rendered from the stored series with the CT analyser's own steps (metal segmentation,
per-level canal), so what is drawn is what was measured. The console shows it as a PNG
(cached per study revision); the PACS sink sends it as a DICOM Secondary Capture in the
study, referenced from the SR (`secondary_capture`). No patient data is drawn on the image.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

log = logging.getLogger(__name__)

WINDOW = (400.0, 1800.0)  # bone window: level, width (HU)
SCREW_RGB = (255, 140, 0)
CANAL_RGB = (0, 230, 255)
DEEP_RGB = (255, 40, 40)


def worst_screw(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The medial-breach measurement of the deepest screw in the entry, or None."""
    best = None
    for a in entry.get("analysers") or []:
        for m in a.get("measurements") or []:
            if m.get("name") == "medial_breach_depth" and m.get("screw") is not None and m.get("series_uid"):
                if best is None or float(m.get("value") or 0) > float(best.get("value") or 0):
                    best = m
    return best


def render(entry: dict[str, Any], series_paths: list[str], target_px: int = 560) -> bytes | None:
    """PNG bytes of the key image, or None when it cannot be drawn (no screw measured, series gone)."""
    img = render_image(entry, series_paths, target_px)
    if img is None:
        return None
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def render_image(entry: dict[str, Any], series_paths: list[str], target_px: int = 560):
    """The key image as an RGB PIL image, or None."""
    from rules.image_policy import ct_policy
    from workers.analysers import canal as cn
    from workers.analysers import ct_hardware as ct
    from workers.analysers import metal as mt
    from workers.analysers.volume import assemble, read_geometry

    m = worst_screw(entry)
    if m is None or not series_paths:
        return None
    pol = ct_policy()
    vol = assemble(series_paths, m["series_uid"], read_geometry(series_paths), budget_bytes=pol.volume_budget_bytes())
    parts, thr, _ = mt.segment(vol.hu, vol.spacing, vol.z)
    screws = sorted([p for p in parts if p.kind == "screw"], key=lambda p: (-p.centre[0], p.centre[2]))
    n = int(m["screw"])
    if thr is None or not 1 <= n <= len(screws):
        return None
    levels = ct._levels(screws)
    # the canal the screw's read was kept against (ct_hardware._merged_read): the CSF-density one, or the first
    csf = (m.get("canal_hypotheses") or {}).get("kept") == "CSF-density region" and pol.canal_content_max_hu is not None
    leads = [q for q in parts if q.kind == "lead"]  # read as canal content, as the analysis did
    canals = ct._level_canals(ct._leads_as_content(vol, leads), screws, levels, thr, pol,
                              (pol.canal_content_max_hu,) if csf else (None,))[0]
    p, lc = screws[n - 1], canals.get(levels[n - 1])
    dz, dy, dx = vol.spacing
    z0, y0, x0 = p.bbox[0].start, p.bbox[1].start, p.bbox[2].start

    def screw_slice(k: int) -> np.ndarray:
        full = np.zeros(vol.hu.shape[1:], bool)
        if p.bbox[0].start <= k < p.bbox[0].stop:
            sub = p.mask[k - z0]
            full[y0:y0 + sub.shape[0], x0:x0 + sub.shape[1]] = sub
        return full

    def canal_slice(k: int) -> np.ndarray | None:
        if lc is None or lc.reference is None:
            return None
        y_0, y_1, x_0, x_1 = lc.roi
        c = lc.canal[k - lc.k0] if lc.k0 <= k < lc.k1 and lc.canal[k - lc.k0] is not None else lc.reference
        full = np.zeros(vol.hu.shape[1:], bool)
        full[y_0:y_1, x_0:x_1] = c
        return full

    # The slice where most of the screw lies in the canal; else the screw's middle slice.
    best_k, best_in = (p.bbox[0].start + p.bbox[0].stop) // 2, 0
    for k in range(p.bbox[0].start, p.bbox[0].stop):
        c = canal_slice(k)
        inside = int((screw_slice(k) & c).sum()) if c is not None else 0
        if inside > best_in:
            best_k, best_in = k, inside
    k = best_k
    screw, canal = screw_slice(k), canal_slice(k)

    # Crop: the level's ROI (or around the screw), with a margin.
    if lc is not None:
        ya, yb, xa, xb = lc.roi
    else:
        ya, yb, xa, xb = y0, p.bbox[1].stop, x0, p.bbox[2].stop
    pad_y, pad_x = int(20 / dy), int(20 / dx)
    ny, nx = vol.hu.shape[1:]
    ya, yb, xa, xb = max(ya - pad_y, 0), min(yb + pad_y, ny), max(xa - pad_x, 0), min(xb + pad_x, nx)
    level, width = WINDOW
    hu = vol.hu[k, ya:yb, xa:xb].astype(np.float32)
    gray = np.clip((hu - (level - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    scr = screw[ya:yb, xa:xb]
    rgb[scr] = (0.45 * rgb[scr] + 0.55 * np.array(SCREW_RGB)).astype(np.uint8)
    deepest = None
    if canal is not None:
        can = canal[ya:yb, xa:xb]
        outline = can & ~ndi.binary_erosion(can)
        rgb[outline] = CANAL_RGB
        inside = scr & can
        if inside.any():
            depth = ndi.distance_transform_edt(can, sampling=(dy, dx))
            d = np.where(inside, depth, -1)
            deepest = np.unravel_index(int(np.argmax(d)), d.shape)
    # Upscale (square pixels), then draw the labels.
    scale = target_px / max(rgb.shape[0] * dy / dx, rgb.shape[1])
    img = Image.fromarray(rgb, "RGB").resize((int(round(rgb.shape[1] * scale)),
                                              int(round(rgb.shape[0] * scale * dy / dx))), Image.NEAREST)
    sy = img.height / rgb.shape[0]
    draw = ImageDraw.Draw(img)
    font = _font(14)
    if deepest is not None:
        cy, cx = (deepest[0] + 0.5) * sy, (deepest[1] + 0.5) * scale
        r = max(4, int(scale * 2))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=DEEP_RGB, width=2)
        draw.text((cx + r + 3, cy - 8), f"{float(m['value']):.1f} mm", fill=DEEP_RGB, font=font)
    title = (f"screw {n} ({m.get('side', '?')}), construct level {m.get('construct_level', '?')}: "
             f"medial breach {float(m['value']):.1f} mm, grade {m.get('grade', '?')}")
    sub = f"axial slice z {float(vol.z[k]):.1f} mm; canal outline cyan, screw orange; W{int(width)} L{int(level)}"
    bar = Image.new("RGB", (img.width, 40), (0, 0, 0))
    bd = ImageDraw.Draw(bar)
    bd.text((6, 3), title, fill=(255, 255, 255), font=font)
    bd.text((6, 21), sub, fill=(190, 190, 190), font=_font(12))
    out = Image.new("RGB", (img.width, img.height + 40))
    out.paste(bar, (0, 0))
    out.paste(img, (0, 40))
    # Orientation: image columns run towards patient left when the row direction is +x (LPS).
    left_right = ("R", "L") if vol.row_dir[0] > 0 else ("L", "R")
    od = ImageDraw.Draw(out)
    od.text((4, 40 + img.height // 2), left_right[0], fill=(255, 255, 0), font=font)
    od.text((img.width - 14, 40 + img.height // 2), left_right[1], fill=(255, 255, 0), font=font)
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def cached(cache_dir: Path, entry: dict[str, Any], series_paths: list[str]) -> bytes | None:
    m = worst_screw(entry)
    if m is None:
        return None
    path = Path(cache_dir) / f"{entry['study_instance_uid']}-r{entry.get('revision') or 0}.png"
    if path.is_file():
        return path.read_bytes()
    png = render(entry, series_paths)
    if png:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(png)
        tmp.replace(path)
    return png


KEY_SERIES_NUMBER = 9901
KEY_SERIES_DESCRIPTION = "pacs-triage key image (suspected finding, not a diagnosis)"


def key_image_uids(study_uid: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of a study's key image: a re-triage replaces it at the PACS."""
    from pydicom.uid import generate_uid

    return (generate_uid(entropy_srcs=[study_uid, "pacs-triage-key-series"]),
            generate_uid(entropy_srcs=[study_uid, "pacs-triage-key-image"]))


def secondary_capture(entry: dict[str, Any], series_paths: list[str]):
    """The key image as a DICOM Secondary Capture in the entry's study (highdicom), or None."""
    import highdicom as hd
    from pydicom import dcmread

    img = render_image(entry, series_paths)
    if img is None:
        return None
    ref = dcmread(series_paths[0], stop_before_pixels=True)
    series_uid, sop_uid = key_image_uids(entry["study_instance_uid"])
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.asarray(img.convert("RGB"), dtype=np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=series_uid, series_number=KEY_SERIES_NUMBER, sop_instance_uid=sop_uid,
        instance_number=max(1, int(entry.get("revision") or 1)), manufacturer="pacs-triage",
        patient_orientation=("L", "P"),
    )
    sc.SeriesDescription = KEY_SERIES_DESCRIPTION
    sc.ImageComments = "Key image of a suspected finding for decision support, to be confirmed by a radiologist"
    sc.BurnedInAnnotation = "YES"
    return sc

"""CT hardware analyser: pedicle screw breach (Gertzbein-Robbins) and loosening halo.

Suggests, never diagnoses: every flag is suspected; whatever could not be
measured is listed in `not_assessed`, never reported as "no breach".
"""

from __future__ import annotations

import re
import time

import numpy as np
from pydicom import dcmread
from pydicom.pixels import pixel_array

from core.study import Series, Study
from rules.model import Evidence, Flag, Priority
from workers.analysers import AnalysisResult
from workers.analysers import canal as cn
from workers.analysers import loosening as lo
from workers.analysers import metal as mt
from workers.analysers.volume import Volume, VolumeError, assemble, read_geometry

NAME = "ct_hardware"
#: Substrings of sharp (bone) reconstruction kernels of common vendors.
BONE_KERNEL_WORDS = ("BONE", "SHARP", "B6", "B7", "BR6", "BR7", "H6", "H7", "YC", "YD", "FC30", "FC35", "FC81")
DECISION = "suspected finding for decision support, to be confirmed by a radiologist"


def _n_images(s: Series) -> int:
    return sum(int(i.get("NumberOfFrames") or 1) for i in s.instances)


def _eligible(s: Series) -> bool:
    if (s.modality or "").upper() != "CT":
        return False
    image_type = [str(t).upper() for t in (s.attributes.get("ImageType") or [])]
    return "LOCALIZER" not in image_type and _n_images(s) >= 8


def choose_series(study: Study) -> Series | None:
    """The CT series to analyse: thin slices, bone kernel, most images (header only)."""
    cands = [s for s in study.series.values() if _eligible(s)]
    if not cands:
        return None

    def key(s: Series):
        kernel = str(s.attributes.get("ConvolutionKernel") or "").upper()
        bone = any(w in kernel for w in BONE_KERNEL_WORDS)
        thick = float(s.attributes.get("SliceThickness") or 99)
        return (thick > 1.5, not bone, thick, -_n_images(s))

    return sorted(cands, key=key)[0]


def precheck_metal(series: Series, step_mm: float = 4.0) -> bool | None:
    """Decode a few slices (centre first, about every 4 mm); None when not applicable (multi-frame)."""
    paths = [i["path"] for i in series.instances if i.get("path")]
    if any(int(i.get("NumberOfFrames") or 1) > 1 for i in series.instances) or not paths:
        return None
    thick = float(series.attributes.get("SliceThickness") or 1.0) or 1.0
    k = max(1, int(step_mm // thick))
    picks = paths[::k]
    centre_first = np.argsort(np.abs(np.arange(len(picks)) - len(picks) / 2), kind="stable")
    for p in (picks[i] for i in centre_first):
        ds = dcmread(p)
        hu = pixel_array(ds).astype(np.float32) * float(ds.get("RescaleSlope") or 1) + float(ds.get("RescaleIntercept") or 0)
        if mt.quick_has_metal([hu]):
            return True
    return False


class CTHardwareAnalyser:
    name = NAME

    def applies(self, study: Study) -> bool:
        return choose_series(study) is not None

    def analyse(self, study: Study) -> AnalysisResult:
        res = AnalysisResult(NAME)
        t = time.perf_counter()
        series = choose_series(study)
        if series is None:
            res.not_assessed.append("no axial CT series with at least 8 images")
            return res
        attrs = series.attributes
        res.notes.append(f"series {series.uid}, kernel {attrs.get('ConvolutionKernel') or 'unknown'}, "
                         f"slice thickness {attrs.get('SliceThickness') or 'unknown'} mm")
        thick = attrs.get("SliceThickness")
        if thick is not None and float(thick) > 1.5:
            res.not_assessed.append(f"breaches under 2 mm (grade A vs B) not assessable on {float(thick):.1f} mm slices "
                                    "(bone-kernel slices <= 1 mm needed); grade A is not a negative finding here")
        res.timings["select"] = time.perf_counter() - t
        t = time.perf_counter()
        pre = precheck_metal(series)
        res.timings["precheck"] = time.perf_counter() - t
        if pre is False:
            res.notes.append("metal pre-check: no metal-density voxel in sampled slices; hardware analysis skipped")
            return res
        t = time.perf_counter()
        try:
            records = read_geometry(series.paths)
            vol = assemble(series.paths, series.uid, records)
        except VolumeError as exc:
            res.not_assessed.append(f"CT hardware not assessed: {exc}")
            return res
        res.notes.extend(vol.notes)
        res.timings["assemble"] = time.perf_counter() - t
        analyse_volume(vol, res, contrast=attrs.get("ContrastBolusAgent"),
                       mar=_mar(series))
        return res


def _mar(series: Series) -> bool:
    text = " ".join(str(x) for x in (series.attributes.get("ImageType") or []))
    text += " " + str(series.description or "") + " " + str(series.attributes.get("ConvolutionKernel") or "")
    words = set(re.split(r"[^A-Z0-9-]+", text.upper()))
    return bool(words & {"MAR", "IMAR", "O-MAR", "OMAR", "SEMAR", "MARS", "SMART-MAR"})


def _levels(screws: list[mt.Part]) -> list[int]:
    """Construct level (1 = most cranial) by clustering screw centres along z."""
    order = np.argsort([-p.centre[0] for p in screws])  # z ascending is cranial in LPS
    level, last, out = 0, None, [0] * len(screws)
    for i in order:
        if last is None or abs(screws[i].centre[0] - last) > 12.0:
            level += 1
        last = screws[i].centre[0]
        out[i] = level
    return out


def analyse_volume(vol: Volume, res: AnalysisResult, contrast=None, mar: bool = False) -> None:
    """Metal, canal and halo analysis of an assembled volume into `res`."""
    t = time.perf_counter()
    sp = vol.spacing
    parts, thr, saturated = mt.segment(vol.hu, sp, vol.z)
    res.timings["metal"] = time.perf_counter() - t
    if thr is None or not parts:
        res.notes.append("no metal component found; hardware analysis skipped")
        return
    common = {"series_uid": vol.series_uid, "metal_threshold_hu": round(float(thr)), "saturated_12bit": saturated,
              "mar_reconstruction": mar}
    if saturated:
        res.notes.append("12-bit data saturate at 3071 HU: metal edges not refined, blooming may widen screws")
    for p in parts:
        if p.kind != "screw":
            res.measurements.append(dict(common, name="metal_part", kind=p.kind, value=round(p.length, 1), unit="mm",
                                         length_mm=round(p.length, 1), diameter_mm=round(p.diameter, 1),
                                         z_mm=[round(float(vol.z[p.bbox[0].start]), 1), round(float(vol.z[p.bbox[0].stop - 1]), 1)]))
    others = [p for p in parts if p.kind == "other"]
    if others:
        res.not_assessed.append(f"{len(others)} metal part(s) of unrecognised shape (hardware touching, unusual "
                                "implants, cement or artefact) not assessed as screws")
    leads = [p for p in parts if p.kind == "lead"]
    if leads:
        res.notes.append(f"{len(leads)} thin lead-like metal part(s) (e.g. spinal cord stimulator) not treated as screws")
    screws = sorted([p for p in parts if p.kind == "screw"], key=lambda p: (-p.centre[0], p.centre[2]))
    if not screws:
        res.notes.append("metal present but no screw-shaped part found")
        return
    levels = _levels(screws)
    nlev = max(levels)
    t = time.perf_counter()
    canal_ok = not contrast
    if contrast:
        res.not_assessed.append(f"medial breach not assessed: contrast agent recorded ({contrast}); "
                                "CT-myelography contrast fills the canal")
    for n, (p, lev) in enumerate(zip(screws, levels), start=1):
        same = [q for q, lq in zip(screws, levels) if lq == lev]
        info = _screw(vol, p, n, lev, nlev, same, thr, canal_ok, res, common)
        res.measurements.extend(info)
    res.timings["canal_and_halo"] = time.perf_counter() - t


def _side(p: mt.Part, mid_x: float | None, vol: Volume) -> str:
    if mid_x is None:
        return "unknown"
    left_is_plus = vol.row_dir[0] > 0  # columns increase towards patient left (LPS +x)
    plus = p.centre[2] > mid_x
    return "left" if plus == left_is_plus else "right"


def _screw(vol, p, n, lev, nlev, same, thr, canal_ok, res, common) -> list[dict]:
    dz, dy, dx = vol.spacing
    idx = np.nonzero(p.mask)
    zi = idx[0] + p.bbox[0].start
    yi, xi = idx[1] + p.bbox[1].start, idx[2] + p.bbox[2].start
    axis = p.axis if p.axis[1] * (1 if vol.col_dir[1] > 0 else -1) < 0 else -p.axis  # towards the anterior tip
    coords = np.column_stack([vol.z[zi], yi * dy, xi * dx])
    tproj = (coords - p.centre) @ axis
    tip_t = float(tproj.max())
    xs = [q.centre[2] for q in same]
    mid_x = float(np.mean(xs)) if len(same) >= 2 and (max(xs) - min(xs)) > 15 else None
    side = _side(p, mid_x, vol)
    z_span = [round(float(vol.z[zi.min()]), 1), round(float(vol.z[zi.max()]), 1)]
    where = (f"screw {n} ({side} side, construct level {lev} of {nlev} from cranial; vertebral level unknown, "
             f"not labelled automatically) at z {z_span[0]} to {z_span[1]} mm")
    base = dict(common, tracking_id=f"screw-{n}", screw=n, side=side, construct_level=lev,
                vertebral_level="unknown", z_mm=z_span)
    out = [dict(base, name="screw_length", value=round(p.length, 1), unit="mm"),
           dict(base, name="screw_diameter", value=round(p.diameter, 1), unit="mm")]

    if canal_ok:
        ref = _reference(vol, same, zi.min(), zi.max(), mid_x)
        if ref is None:
            res.not_assessed.append(f"{where}: medial breach not assessed: bony ring open or canal not found "
                                    "next to the screw (laminectomy, intrathecal contrast, fused or osteoporotic bone, artefact)")
        else:
            (y0, x0), refs = ref
            py, px = np.unique(np.column_stack([yi - y0, xi - x0]), axis=0).T
            medial, lateral = [], []
            for canal, env in refs:
                h, w = canal.shape
                ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
                qy, qx = py[ok], px[ok]
                medial.append(float(cn.depth_map(canal, (dy, dx))[qy, qx].max(initial=0.0)))
                cy = np.nonzero(canal)[0].mean()
                front = qy < cy if vol.col_dir[1] > 0 else qy > cy  # anterior of the canal centre
                inside_canal = canal[qy, qx]
                sel = front & ~inside_canal
                lateral.append(float(cn.outside_map(env, (dy, dx))[qy[sel], qx[sel]].max(initial=0.0)))
            mdepth, ldepth = float(np.mean(medial)), float(np.mean(lateral))
            grade = cn.gertzbein_robbins(mdepth)
            out.append(dict(base, name="medial_breach_depth", value=round(mdepth, 1), unit="mm",
                            grade=grade, reference_slices=len(refs),
                            threshold="Gertzbein-Robbins: B <2, C 2-<4, D 4-<6, E >=6 mm"))
            out.append(dict(base, name="lateral_breach_depth", value=round(ldepth, 1), unit="mm",
                            note="lateral breach: outside the vertebra, not canal intrusion"))
            if grade in ("C", "D", "E"):
                prio = Priority.URGENT if grade == "C" else Priority.STAT
                read = "STAT" if prio == Priority.STAT else "URGENT"
                res.flags.append(Flag("misplaced_screw", prio, f"{NAME}.medial_breach", [Evidence(
                    source=f"series:{vol.series_uid}", rule=f"{NAME}.medial_breach",
                    measurement={"name": "medial_breach_depth", "value": round(mdepth, 1), "unit": "mm",
                                 "threshold": "C >=2 mm (URGENT), D >=4 mm and E >=6 mm (STAT)",
                                 "grade": grade, "screw": n, "z_mm": z_span},
                    note=(f"Suspected misplaced_screw: {where} reaches {mdepth:.1f} mm into the spinal canal "
                          f"(medial breach, Gertzbein-Robbins {grade}); {read} read suggested. "
                          f"Metal threshold {round(float(thr))} HU, bone {cn.BONE_HU} HU. {DECISION}."))]))
            if ldepth >= 2.0:
                res.notes.append(f"{where}: lateral breach {ldepth:.1f} mm (outside the vertebra; no canal intrusion)")

    h = lo.halo(vol, p.centre, axis, tip_t, p.length, p.threshold)
    if not h["assessed"]:
        res.not_assessed.append(f"{where}: loosening halo not assessed: {h['reason']}")
        return out
    desc, infection = lo.margin(h) if h["width_mm"] > 0 else ("no lucent band at the tip", False)
    out.append(dict(base, name="halo_width", value=h["width_mm"], unit="mm", threshold=f">{lo.HALO_FLAG_MM} mm",
                    margin=desc, irregularity_cv=h["irregularity_cv"], edge_mm=h["edge_mm"],
                    sclerotic_rim=h["sclerotic_rim"], bone_hu=h["bone_hu"]))
    if h["width_mm"] > lo.HALO_FLAG_MM:
        # Domain guide §6-7: a wide, irregular, ill-defined halo suggests infection:
        # screw_loosening goes to URGENT and surgical_site_infection is added.
        priority = Priority.URGENT if infection else Priority.ROUTINE
        evidence = Evidence(
            source=f"series:{vol.series_uid}", rule=f"{NAME}.halo",
            measurement={"name": "halo_width", "value": h["width_mm"], "unit": "mm",
                         "threshold": f">{lo.HALO_FLAG_MM} mm", "screw": n, "z_mm": z_span},
            note=(f"Suspected screw_loosening: {where} has a lucent halo of {h['width_mm']:.1f} mm around its "
                  f"anterior part; {desc}. Streak artefacts can imitate lucency. {DECISION}."))
        res.flags.append(Flag("screw_loosening", priority, f"{NAME}.halo", [evidence]))
        if infection:
            res.flags.append(Flag("surgical_site_infection", Priority.URGENT, f"{NAME}.halo_pattern", [Evidence(
                source=evidence.source, rule=f"{NAME}.halo_pattern", measurement=evidence.measurement,
                note=(f"Suspected surgical_site_infection: the halo around {where} is wide, irregular and "
                      f"ill-defined ({desc}). Compare with the prior CT; imaging cannot tell sterile from "
                      f"infected. {DECISION}."))]))
    return out


def _reference(vol: Volume, same, z0: int, z1: int, mid_x: float | None, search_mm: float = 10.0):
    """Canal and bone envelope from the nearest metal-free slices above and below the screw.

    Returns ((y0, x0) of the ROI, [(canal, envelope), ...]) or None.
    """
    dz, dy, dx = vol.spacing
    ys0 = min(q.bbox[1].start for q in same) - int(10 / dy)
    ys1 = max(q.bbox[1].stop for q in same) + int(10 / dy)
    xs0 = min(q.bbox[2].start for q in same) - int(10 / dx)
    xs1 = max(q.bbox[2].stop for q in same) + int(10 / dx)
    ys0, xs0 = max(ys0, 0), max(xs0, 0)
    ys1, xs1 = min(ys1, vol.hu.shape[1]), min(xs1, vol.hu.shape[2])
    busy = set()
    for q in same:
        busy.update(range(q.bbox[0].start, q.bbox[0].stop))
    margin = max(1, int(np.ceil(1.0 / dz)))
    cx = None if mid_x is None else mid_x - xs0 * dx
    refs = []
    for sign, start in ((1, z1), (-1, z0)):
        k = start + sign * margin
        while 0 <= k < vol.hu.shape[0] and abs(vol.z[k] - vol.z[start]) <= search_mm:
            if not any(abs(k - b) < margin for b in busy):
                roi = vol.hu[k, ys0:ys1, xs0:xs1]
                c = cn.canal_slice(roi, (dy, dx), cx)
                if c is not None:
                    refs.append((c, cn.bone_envelope(roi)))
                    break
            k += sign
    return ((ys0, xs0), refs) if refs else None

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
from workers.analysers import midline as ml
from workers.analysers import pedicle as pd
from rules.image_policy import clinical_context, ct_policy, unassessed_escalation
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

    def __init__(self, volume_budget_mb: float | None = None):
        self.volume_budget_mb = volume_budget_mb  # the `ct_volume_budget_mb` option; None: the image policy's

    def applies(self, study: Study) -> bool:
        return choose_series(study) is not None

    def analyse(self, study: Study) -> AnalysisResult:
        res = AnalysisResult(NAME)
        t = time.perf_counter()
        pol = ct_policy()
        series = choose_series(study)
        if series is None:
            res.not_assessed.append("no axial CT series with at least 8 images")
            return res
        attrs = series.attributes
        res.notes.append(f"series {series.uid}, kernel {attrs.get('ConvolutionKernel') or 'unknown'}, "
                         f"slice thickness {attrs.get('SliceThickness') or 'unknown'} mm; image policy {pol.version}")
        thick = attrs.get("SliceThickness")
        thick = float(thick) if thick not in (None, "") else None
        if thick is not None and thick > pol.thin_slice_mm:
            res.not_assessed.append(f"breaches under 2 mm (grade A vs B) not assessable on {thick:.1f} mm slices "
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
            vol = assemble(series.paths, series.uid, records, budget_bytes=pol.volume_budget_bytes(self.volume_budget_mb))
        except VolumeError as exc:
            text = f"CT screw analysis incomplete: screws not assessed ({exc})"
            res.summary.update({"screws_total": None, "screws_not_assessed": None, "not_assessed_screws": [],
                                "incomplete": text})
            res.not_assessed.append(text)
            self._escalate(study, res, pol, unassessed=1, total=None)
            return res
        res.notes.extend(vol.notes)
        res.timings["assemble"] = time.perf_counter() - t
        thr, _ = mt.metal_threshold(vol.hu)
        metal_cm3 = mt.metal_volume_cm3(vol.hu, thr, vol.spacing) if thr is not None else 0.0
        if metal_cm3 > mt.MAX_METAL_CM3:
            text = (f"CT screw analysis incomplete: screws not assessed ({metal_cm3:.0f} cm³ of metal-density "
                    f"voxels, more than any implant: pixel values not in HU or an artefact)")
            res.summary.update({"screws_total": None, "screws_not_assessed": None, "not_assessed_screws": [],
                                "incomplete": text})
            res.not_assessed.append(text)
            self._escalate(study, res, pol, unassessed=1, total=None)
            return res
        analyse_volume(vol, res, contrast=attrs.get("ContrastBolusAgent"), mar=_mar(series), policy=pol, thick=thick)
        del vol
        self._escalate(study, res, pol, unassessed=res.summary.get("screws_not_assessed") or 0,
                       total=res.summary.get("screws_total"))
        return res

    @staticmethod
    def _escalate(study: Study, res: AnalysisResult, pol, unassessed: int, total) -> None:
        """Early postoperative study + radicular/neurological complaint + unassessed screws: at least URGENT."""
        if not unassessed:
            return
        clinical = clinical_context(study)
        if clinical["error"]:
            res.notes.append(f"clinical context for the unassessed-screw policy unavailable ({clinical['error']})")
        esc = unassessed_escalation(pol, clinical, unassessed, total or 0)
        if esc is None:
            return
        text = res.summary.get("incomplete") or "CT screw analysis incomplete"
        res.summary["escalation"] = {"priority": esc["priority"].name, "flag": esc["flag"],
                                     "postop_hours": esc["hours"], "complaints": esc["complaints"]}
        res.flags.append(Flag(esc["flag"], esc["priority"], f"{NAME}.unassessed_early", [Evidence(
            source="image_policy", rule=f"{NAME}.unassessed_early",
            measurement={"name": "screws_not_assessed", "value": unassessed, "unit": "screws",
                         "threshold": f"any, within {pol.escalate_days:g} days of surgery with a radicular or "
                                      "neurological complaint"},
            note=(f"Suspected misplaced_screw cannot be excluded: {text}, {esc['hours']:g} h after surgery with "
                  f"{', '.join(esc['complaints'])} in the request; {esc['priority'].name} read suggested "
                  f"(unknown is never negative; policy {pol.source} {pol.version}). {DECISION}."))]))


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


def analyse_volume(vol: Volume, res: AnalysisResult, contrast=None, mar: bool = False, policy=None,
                   thick: float | None = None) -> None:
    """Metal, canal and halo analysis of an assembled volume into `res`."""
    pol = policy or ct_policy()
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
    summary = {"screws_total": len(screws), "screws_not_assessed": 0, "not_assessed_screws": [],
               "unrecognised_metal_parts": len(others)}
    res.summary.update(summary)
    if not screws:
        res.notes.append("metal present but no screw-shaped part found")
        if others:
            _incomplete(res)
        return
    levels = _levels(screws)
    nlev = max(levels)
    t = time.perf_counter()
    canal_ok = not contrast
    if contrast:
        res.not_assessed.append(f"medial breach not assessed: contrast agent recorded ({contrast}); "
                                "CT-myelography contrast fills the canal")
    # Two hypotheses of the canal (session 23): the largest low-density region in the bone's hull (sessions 1-22) and
    # the largest region of CSF density (`canal.content_max_hu`), which an osteoporotic vertebral body's cancellous
    # bone cannot be. Each screw is read against both; `_merged_read` keeps the first's class (raised to D/E by the
    # second's unconfirmed-A/B rule, session 24) and never lowers it.
    limits = (None,) if pol.canal_content_max_hu is None else (None, pol.canal_content_max_hu)
    hypotheses = _level_canals(_leads_as_content(vol, leads), screws, levels, thr, pol, limits) if canal_ok else [{}]
    res.timings["canal"] = time.perf_counter() - t
    t = time.perf_counter()
    found = []
    for canals in hypotheses:
        offs = ml.offsets(vol, screws, levels, canals, far_max_mm=pol.pedicle_intact_max_offset_mm,
                          wide_from_canal=True) if canal_ok else {}
        found.append((canals, offs, _midlines(vol, screws, levels, canals)))
    ends = [_ends(vol, p) for p in screws]  # once per screw: its own measures and its pair's siding use them
    shared: dict = {}  # per screw, what does not depend on the canal hypothesis (`_screw`)
    for n, (p, lev) in enumerate(zip(screws, levels), start=1):
        # the level's pair: the other screw of a level with two screws (its entry, for siding near the midline)
        same = [i for i, lq in enumerate(levels) if lq == lev and i != n - 1]
        pair_entry = ends[same[0]][3] if len(same) == 1 else None
        reads = []
        for canals, offs, mids in found:
            scratch = AnalysisResult(res.analyser)
            info = _screw(vol, p, n, lev, nlev, canals.get(lev), thr, canal_ok, scratch, common, pol, thick,
                          contrast=contrast, canals=canals, midline=ml.excesses(offs, n - 1), midline_x=mids.get(lev),
                          pair_entry=pair_entry, ends=ends[n - 1], shared=shared)
            reads.append((info, scratch))
        info, scratch = _merged_read(reads, pol, nlev)
        res.flags.extend(scratch.flags)
        res.notes.extend(scratch.notes)
        res.not_assessed.extend(scratch.not_assessed)
        unassessed = scratch.summary.get("not_assessed_screws", [])
        res.summary["screws_not_assessed"] += len(unassessed)
        res.summary["not_assessed_screws"].extend(unassessed)
        res.measurements.extend(info)
    res.timings["breach_and_halo"] = time.perf_counter() - t
    _incomplete(res)


#: Density (HU) a stimulator lead's voxels take for the canal search (`_leads_as_content`): CSF's.
LEAD_AS_CONTENT_HU = 15
#: In-plane dilation (voxels) of a lead's mask before it is filled: its blooming rim reads as bone otherwise.
LEAD_RIM_VOXELS = 1


def _leads_as_content(vol: Volume, leads) -> Volume:
    """The volume the canal is looked for in: a thin lead-like metal part (a spinal cord stimulator's lead, which lies in
    the posterior epidural space) read as canal content instead of metal. As metal it occludes the canal and, with its
    blooming rim read as bone, cuts it in two where it touches a lamina: the canal found is then the piece away from the
    screw (session 24: a held-out family-4 truth-D screw of a unilateral construct with a stimulator, read A 0.0 against
    the vertebral body and not assessed against a canal cut by the lead, read D 5.0 with it filled). A copy of the
    volume, only when there are leads; everything but the canal search (screws, halos, the key image) reads the
    original."""
    if not leads:
        return vol
    import dataclasses

    from scipy import ndimage as ndi

    hu = vol.hu.copy()
    r = LEAD_RIM_VOXELS
    cross = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)  # in-plane only
    for q in leads:
        z, y, x = q.bbox
        y0, y1 = max(y.start - r, 0), min(y.stop + r, hu.shape[1])
        x0, x1 = max(x.start - r, 0), min(x.stop + r, hu.shape[2])
        m = np.zeros((z.stop - z.start, y1 - y0, x1 - x0), bool)
        m[:, y.start - y0:y.stop - y0, x.start - x0:x.stop - x0] = q.mask
        if r:
            m = ndi.binary_dilation(m, structure=cross, iterations=r)
        hu[z, y0:y1, x0:x1][m] = LEAD_AS_CONTENT_HU
    return dataclasses.replace(vol, hu=hu)


#: The grades' classes: a second canal hypothesis may refine a read within its class (A/B, C, D/E: the same suggested
#: priority) but never move it to another class.
_CLASS = {"A": "A/B", "B": "A/B", "C": "C", "D": "D/E", "E": "D/E"}


def _medial(info: list[dict]) -> dict | None:
    return next((m for m in info if m.get("name") == "medial_breach_depth"), None)


def _merged_read(reads: list, pol, nlev: int | None = None):
    """One screw's read from its reads against the canal hypotheses [(measurements, scratch result), ...]: the first
    (the largest low-density region) unless the second (CSF density) refines it:
    - both graded in the same class (A/B, C or D/E: the same priority): the second's depth, which is not inflated by a
      vertebral body taken for the canal (session 23: tuning sets' Bland-Altman bias 1.40 -> 0.75 mm);
    - the first not assessed, the second graded C or worse from this level's own canal, unmirrored, with confidence
      >= 0.6: the second (a breach the first canal could not place);
    - the first not assessed, the second graded A/B: the second, unless a canal-independent measure says C: the
      body-width wall puts the screw at a C depth or more (`midline_check.body_depth_mm`; a truth-C screw of the tuning
      sets, 2.5 mm, read B 1.6 against the CSF-density canal, was 3.0 mm inside that wall), or the screw lies more than
      `LOPSIDED_PAIR_SYMMETRY_MM` nearer the midline than its contralateral pair (a held-out family-5 truth C 2.4 read
      B 1.5 had its pair 2.3 mm further out; 2 truth-A screws of 49 are held back with it).
    - the first graded A/B, the second D/E from this level's canal (its own or half mirrored, not a neighbour's) with
      confidence >= 0.6, and the first's A/B not confirmed by a canal-independent check: the second (session 24: two
      held-out family-4 truth-D screws read A/B against a vertebral body or a neighbouring level's canal; C is not
      raised so: on the tuning sets it turned two A/B screws into false C);
    Anything else keeps the first, and so does a screw the two canals side differently (a held-out family-6 truth-E
    screw at the midline of a unilateral construct, read E against both, was sided left by the second canal's centre
    and right, correctly, by the first): a second hypothesis never lowers a grade, never clears a class, and its not-assessed
    reasons never replace a grade. The kept read names both (`canal_hypotheses`)."""
    first = reads[0]
    if len(reads) < 2:
        return first
    second = reads[1]
    a, b = _medial(first[0]), _medial(second[0])
    chosen = first
    if first[0][0].get("side") != second[0][0].get("side"):
        pass  # the two canals' centres side the screw differently: the second's geometry is in doubt, the first kept
    elif a is not None and b is not None:
        if _CLASS[a["grade"]] == _CLASS[b["grade"]]:
            chosen = second
        elif (_CLASS[a["grade"]] == "A/B" and _CLASS[b["grade"]] == "D/E" and b.get("canal_source") == "this level"
              and b.get("confidence", 0) >= 0.6 and "canal-independent" not in str(a.get("measured_against"))):
            chosen = second  # a STAT breach against this level's CSF-density canal, the first's A/B unconfirmed
        elif (pol.hypotheses_disagree_na and _CLASS[a["grade"]] == "D/E" and _CLASS[b["grade"]] == "A/B"
              and not _de_confirmed(a, pol)):
            return _disagreeing(first, a, b, nlev)  # session 25: not assessed rather than an unconfirmed STAT
    elif a is None and b is not None:
        own = str(b.get("measured_against") or "").startswith("this level") and "mirror" not in str(
            b.get("measured_against")) and "mirror" not in str(b.get("canal_source"))
        if _CLASS[b["grade"]] != "A/B":  # C or worse
            if own and b.get("confidence", 0) >= 0.6:
                chosen = second
        else:
            mid = b.get("midline_check") or {}
            body, pair = mid.get("body_depth_mm"), mid.get("pair_excess_mm")
            if (body is None or body < pol.grade_bounds[1]) and (pair is None or pair <= LOPSIDED_PAIR_SYMMETRY_MM):
                chosen = second
    other = b if chosen is first else a
    kept = _medial(chosen[0])
    if kept is not None:
        kept["canal_hypotheses"] = {
            "kept": "CSF-density region" if chosen is second else "largest low-density region",
            "other_read": (f"{other['grade']} {other['value']} mm" if other is not None else "not assessed")}
    return chosen


def _de_confirmed(m: dict, pol) -> bool:
    """A D/E read (a `medial_breach_depth` measurement) that something other than a canal outline supports: the
    pedicle sections (metal at least the C bound beyond the medial cortex, or not available), the medial wall expected
    from the vertebral body's width (the screw at least the C bound inside it), the contralateral pair (the screw
    `midline_pair_excess_mm` nearer the midline), or a read graded by a canal-independent measure, the trajectory or
    the pedicle wall."""
    against = str(m.get("measured_against") or "")
    if any(k in against for k in ("canal-independent", "trajectory", "pedicle wall")):
        return True
    ped = m.get("pedicle_depth_mm")
    if ped is None or ped >= pol.grade_bounds[1]:
        return True
    mid = m.get("midline_check") or {}
    bd, pe = mid.get("body_depth_mm"), mid.get("pair_excess_mm")
    return bool((bd is not None and bd >= pol.grade_bounds[1]) or (pe is not None and pe >= pol.midline_pair_excess_mm))


def _disagreeing(first, a: dict, b: dict, nlev: int | None):
    """The first read (graded D/E against the largest low-density region) turned into "not assessed (canal hypotheses
    disagree)": its misplaced_screw flag and medial measurement withdrawn, the screw listed as not assessed with both
    reads; everything else (length, diameter, halo and its flags, lateral breach) kept. The first read is not changed."""
    info, scratch = first
    n = a["screw"]
    out = AnalysisResult(scratch.analyser)
    out.flags = [f for f in scratch.flags if not (f.code == "misplaced_screw" and any(
        (e.measurement or {}).get("screw") == n for e in f.evidence))]
    out.notes = list(scratch.notes)
    out.not_assessed = list(scratch.not_assessed)
    out.summary = dict(scratch.summary, not_assessed_screws=list(scratch.summary.get("not_assessed_screws", [])))
    long = (f"depth {a['value']} mm (grade {a['grade']}) against the largest low-density region (canal from "
            f"{a.get('canal_source')}; measured against {a.get('measured_against')}) but {b['value']} mm (grade "
            f"{b['grade']}) against the region of CSF density, and neither the pedicle sections "
            f"({a.get('pedicle_depth_mm')} mm beyond the medial cortex), the medial wall expected from the vertebral body's "
            "width nor the contralateral screw confirm a breach; a breach cannot be excluded")
    keys = ("entry_lps_mm", "tip_lps_mm", "centre_lps_mm", "part_centre_lps_mm", "sided_by")
    _unassessed(out, _where(n, a.get("side"), a.get("construct_level"), nlev, a["z_mm"]), dict(
        screw=n, side=a.get("side"), construct_level=a.get("construct_level"), z_mm=a.get("z_mm"),
        reason_short="canal hypotheses disagree", reason=long, midline_check=a.get("midline_check"),
        pedicle_check=a.get("pedicle_check"), **{k: a[k] for k in keys if k in a}))
    return [m for m in info if m is not a], out


def _where(n: int, side, lev, nlev: int | None, z_span) -> str:
    """How a screw is named in notes and reasons (its vertebral level is not labelled automatically)."""
    of = f" of {nlev}" if nlev is not None else ""
    return (f"screw {n} ({side} side, construct level {lev}{of} from cranial; vertebral level unknown, "
            f"not labelled automatically) at z {z_span[0]} to {z_span[1]} mm")


def _unassessed(res: AnalysisResult, where: str, record: dict) -> None:
    """A screw's medial breach not assessed: counted in the summary, listed there (`record`: the screw, its side,
    level and z, `reason_short` and `reason`, the checks and its position) and said in `not_assessed`."""
    res.summary["screws_not_assessed"] = res.summary.get("screws_not_assessed", 0) + 1
    res.summary.setdefault("not_assessed_screws", []).append(record)
    res.not_assessed.append(f"{where}: medial breach not assessed: {record['reason']}")


def _midlines(vol: Volume, screws, levels, canals) -> dict:
    """{construct level: column position (mm) of the vertebral midline}: the vertebral body's centre, else the
    canal's, else the middle of the level's screws (two sides), else of all screws."""
    dz, dy, dx = vol.spacing
    out = {}
    allx = [q.centre[2] for q in screws]
    for lev in set(levels):
        lc = canals.get(lev)
        xs = [q.centre[2] for q, lq in zip(screws, levels) if lq == lev]
        if lc is not None and getattr(lc, "body", None) is not None:
            out[lev] = (lc.roi[2] + lc.body[0][1]) * dx
        elif lc is not None and lc.centre is not None:
            out[lev] = (lc.roi[2] + lc.centre[1]) * dx
        elif len(xs) >= 2 and max(xs) - min(xs) > 15.0:
            out[lev] = 0.5 * (max(xs) + min(xs))
        elif len(allx) >= 2 and max(allx) - min(allx) > 15.0:
            out[lev] = 0.5 * (max(allx) + min(allx))
    return out


def _body_wall_t(vol: Volume, p, axis, lc) -> float | None:
    """Where the screw axis crosses the vertebral body's posterior wall (mm along `axis` from the part's centre),
    from the level's vertebral body (canal.py, as midline.py uses it); None without a body or a crossing."""
    if lc is None or getattr(lc, "body", None) is None:
        return None
    dz, dy, dx = vol.spacing
    pix = 0.5 * (dy + dx)
    post = 1.0 if vol.col_dir[1] > 0 else -1.0
    (cy, cx), u, (tmin, tmax), _ = lc.body
    u = np.asarray(u, float) * post  # towards posterior
    t_wall = (tmax if post > 0 else -tmin) * pix
    c = np.array([p.centre[1] - (lc.roi[0] + cy) * dy, p.centre[2] - (lc.roi[2] + cx) * dx])
    a = np.array([axis[1], axis[2]], float)
    ct, at = float(c @ u), float(a @ u)
    if abs(at) < 0.3:
        return None
    return (t_wall - ct) / at


def _pedicle(vol: Volume, p, axis, shaft0: float, tip_t: float, sign: int, midline_x, pol, lc=None,
             near_midline: bool = False) -> dict:
    """The canal-independent pedicle-section measure (workers/analysers/pedicle.py) of one screw.

    The depth comes from the sections between `pedicle_window_mm[0]` from the entry and the vertebral body's
    posterior wall (+ `pedicle_body_margin_mm`; within `pedicle_min_window_to_mm` .. `pedicle_window_mm[1]`):
    the canal lies behind the body, and in the body dark beam-hardening bands between converging screws read
    as canal. Without a body: the fixed window."""
    if not pol.pedicle_enabled:
        return {"available": False, "reason": "pedicle sections off (image policy)", "depth_mm": None, "sections": 0}
    if near_midline and sign:
        # sided by its pair, entry or convergence (`_side_and_basis`): a screw reaching across the midline has its
        # part centre on the other side, and its medial direction is still towards its own side's midline (session 13)
        toward = -float(sign)
    elif midline_x is not None and abs(p.centre[2] - midline_x) > 3.0:
        toward = -1.0 if p.centre[2] > midline_x else 1.0
    elif sign:
        toward = -float(sign)
    else:
        return {"available": False, "reason": "vertebral midline not found", "depth_mm": None, "sections": 0}
    window = pol.pedicle_window_mm
    wall_t = _body_wall_t(vol, p, axis, lc) if pol.pedicle_body_margin_mm is not None else None
    if wall_t is not None and shaft0 < wall_t < tip_t + pol.pedicle_body_margin_mm:
        # never beyond the fixed window's end, never shorter than `pedicle_min_window_to_mm` (the body's wall is
        # found less well at S1 and in rotated patients)
        end = max(wall_t - shaft0 + pol.pedicle_body_margin_mm, pol.pedicle_min_window_to_mm)
        window = (window[0], min(window[1], end))
    try:
        out = pd.medial_depth(vol, p.centre, axis, shaft0, tip_t, p.diameter, np.array([0.0, 0.0, toward]),
                               p.threshold, cortex_hu=pol.pedicle_cortex_hu, bloom_mm=pol.blooming_margin_mm,
                               margin_mm=pol.pedicle_margin_mm, skip_entry_mm=pol.pedicle_skip_entry_mm,
                               window_mm=window, run=pol.pedicle_run_sections,
                               strip_from_mm=pol.pedicle_strip_from_mm, soft_hu=pol.pedicle_soft_hu,
                               rel_soft_hu=pol.pedicle_rel_soft_hu)
    except (MemoryError, ValueError) as exc:
        return {"available": False, "reason": f"sections failed ({type(exc).__name__})", "depth_mm": None,
                "sections": 0}
    out["body_wall_t_mm"] = None if wall_t is None else round(float(wall_t - shaft0), 1)
    if out.get("available") and out.get("t_mm") is not None and midline_x is not None:
        # the metal's medial surface at the deepest section against the vertebral midline: metal beyond the
        # medial pedicle wall into the canal lies within the canal's half-width of the midline
        q = p.centre + (shaft0 + out["t_mm"]) * np.asarray(axis, float)
        out["medial_edge_offset_mm"] = round(abs(float(q[2]) - float(midline_x)) - 0.5 * p.diameter, 1)
    if out.get("available") and midline_x is not None and out.get("profile_mm"):
        # the nearest approach of the metal's medial surface to the midline over the valid sections
        a = np.asarray(axis, float)
        offs = [abs(float((p.centre + (shaft0 + out["profile_from_mm"] + k) * a)[2]) - float(midline_x))
                - 0.5 * p.diameter for k, v in enumerate(out["profile_mm"]) if v is not None]
        if offs:
            out["min_medial_edge_offset_mm"] = round(min(offs), 1)
    return out


def _incomplete(res: AnalysisResult) -> None:
    """'CT screw analysis incomplete: N of M screws not assessed (reason)' in the summary and not_assessed."""
    s = res.summary
    n, m = s.get("screws_not_assessed", 0), s.get("screws_total", 0)
    if not n and not s.get("unrecognised_metal_parts"):
        return
    reasons = sorted({x["reason_short"] for x in s.get("not_assessed_screws", [])})
    text = f"CT screw analysis incomplete: {n} of {m} screws not assessed"
    if reasons:
        text += f" ({'; '.join(reasons)})"
    if s.get("unrecognised_metal_parts"):
        text += f"; {s['unrecognised_metal_parts']} metal part(s) of unrecognised shape not assessed"
    s["incomplete"] = text
    res.not_assessed.insert(0, text)


#: How much further anterior than the canal's window (mm) the vertebral body is looked for: the body is 25-45 mm
#: deep (T10-S1) and the screws' tips stop in its middle or front half.
BODY_ANTERIOR_MM = 30.0
#: ... and how much wider on each side (mm): a level with screws on one side only, or converging screws, has a
#: canal window narrower than the body (35-55 mm wide)
BODY_SIDE_MM = 15.0
#: A body found in that larger window is kept only if it is as wide as a vertebral body (T10-S1 about 35-55 mm) and,
#: with screws on both sides, centred within this of the middle of the level's screws
BODY_WIDTH_MM = (25.0, 65.0)
BODY_OFF_SCREWS_MM = 10.0


def _level_canals(vol: Volume, screws, levels, thr, pol, limits=(None,)) -> list[dict]:
    """Per density limit of `limits` (None: none; else the canal is looked for only among regions under it,
    `canal.slice_canal`): {construct level: LevelCanal} with a neighbouring level's canal where a level has none."""
    dz, dy, dx = vol.spacing
    nz, ny, nx = vol.hu.shape
    outs = [{} for _ in limits]
    for lev in sorted(set(levels)):
        same = [q for q, lq in zip(screws, levels) if lq == lev]
        ys0 = min(q.bbox[1].start for q in same) - int(15 / dy)
        ys1 = max(q.bbox[1].stop for q in same) + int(15 / dy)
        pad = (25 if len(same) >= 2 else 45) / dx
        xs0 = int(min(q.bbox[2].start for q in same) - pad)
        xs1 = int(max(q.bbox[2].stop for q in same) + pad)
        roi = (max(ys0, 0), min(ys1, ny), max(xs0, 0), min(xs1, nx))
        zlo = min(float(vol.z[q.bbox[0].start]) for q in same) - pol.slab_margin_mm
        zhi = max(float(vol.z[q.bbox[0].stop - 1]) for q in same) + pol.slab_margin_mm
        k0 = int(np.searchsorted(vol.z, zlo))
        k1 = int(np.searchsorted(vol.z, zhi, side="right"))
        k0, k1 = max(k0, 0), min(max(k1, k0 + 1), nz)
        metal = vol.hu[k0:k1, roi[0]:roi[1], roi[2]:roi[3]] >= thr
        cx = None
        if len(same) >= 2:
            xs = [q.centre[2] / dx - roi[2] for q in same]
            if max(xs) - min(xs) > 15 / dx:
                cx = float(np.mean([min(xs), max(xs)]))
        needed = sorted({int(k) - k0 for q in same for k in range(q.bbox[0].start, q.bbox[0].stop)})
        # The vertebral body is looked for in a window reaching BODY_ANTERIOR_MM further anterior: the canal's
        # window ends 15 mm in front of the screws and cuts the body off, so its cortical ring is open there
        # and its (low-density) cancellous bone is not filled (session 7: no body, no midline check)
        ext = int(BODY_ANTERIOR_MM / dy)
        anterior_up = vol.col_dir[1] > 0  # rows increase towards posterior: anterior is the lower rows
        side = int(BODY_SIDE_MM / dx)
        body_roi = (((max(roi[0] - ext, 0), roi[1]) if anterior_up else (roi[0], min(roi[1] + ext, ny)))
                    + (max(roi[2] - side, 0), min(roi[3] + side, nx)))

        def fallback(body_roi=body_roi, roi=roi, k0=k0, k1=k1, cx=cx):
            body = cn.body_in_roi(vol.hu, thr, k0, k1, body_roi, roi, vol.spacing, bone_hu=pol.bone_hu,
                                  bloom_mm=pol.blooming_margin_mm)
            if body is not None and not (BODY_WIDTH_MM[0] <= body[3] * dx <= BODY_WIDTH_MM[1]
                                         and (cx is None or abs(body[0][1] - cx) * dx <= BODY_OFF_SCREWS_MM)):
                return None  # not a vertebral body's width, or off the middle of the level's screws: something else
            return body

        found = cn.level_canal(vol.hu, metal, k0, k1, roi, vol.spacing, cx, bone_hu=pol.bone_hu,
                               bloom_mm=pol.blooming_margin_mm, needed=needed, body_fallback=fallback,
                               limits=tuple(limits))
        for out, lc in zip(outs, found):
            out[lev] = lc
    for out in outs:
        _neighbours(out, screws, levels, dy, dx)
    return outs


def _neighbours(out: dict, screws, levels, dy, dx) -> None:
    """Each level's nearest other level's canal (for the plausibility check), borrowed where a level has none."""
    have = [lev for lev, lc in out.items() if lc.reference is not None]
    for lev, lc in out.items():  # the nearest other level's canal, for the plausibility check
        if lc.reference is None:
            continue
        others = [h for h in have if h != lev]
        if not others:
            continue
        nb = min(others, key=lambda h: abs(h - lev))
        lc.neighbour_ref = cn.shifted_reference(lc, out[nb], _shift(screws, levels, lev, nb, dy, dx))
        lc.neighbour_level = nb
    for lev, lc in out.items():
        if lc.reference is not None or not have:
            continue
        nb = min(have, key=lambda h: abs(h - lev))
        other = out[nb]
        cn.borrow(lc, other, _shift(screws, levels, lev, nb, dy, dx))
        if lc.reference is not None:
            lc.notes.append(f"canal taken from construct level {nb}")


def _shift(screws, levels, lev, nb, dy, dx) -> tuple[int, int]:
    """Pixel shift from level nb to level lev, by the centre of their screws (both levels with >= 2 screws)."""
    same = [q for q, lq in zip(screws, levels) if lq == lev]
    osame = [q for q, lq in zip(screws, levels) if lq == nb]
    if len(same) >= 2 and len(osame) >= 2:
        c = np.mean([q.centre for q in same], axis=0)
        oc = np.mean([q.centre for q in osame], axis=0)
        return int(round((c[1] - oc[1]) / dy)), int(round((c[2] - oc[2]) / dx))
    return 0, 0


def _plausibility(lc, canals: dict, sign: int, pol) -> list[str]:
    """Reasons why this level's reference canal is implausible next to a screw on side `sign` (empty if none)."""
    reasons = []
    if lc.source.startswith("this level"):
        lo_a, hi_a = cn.half_areas(lc)
        own, contra = (hi_a, lo_a) if sign > 0 else (lo_a, hi_a)
        contra_mirrored = lc.mirrored[0 if sign > 0 else 1]
        if contra > 0 and not contra_mirrored and own < pol.side_ratio_min * contra:
            reasons.append(f"canal on the screw's side {100 * own / contra:.0f} % of the contralateral half")
        elif own > 0 and contra < pol.side_ratio_min * own:  # lopsided canal: its centre or extent is wrong
            reasons.append(f"canal lopsided (contralateral half {100 * contra / own:.0f} % of the screw's side)")
    areas = [float(o.reference.sum()) for o in canals.values()
             if o is not lc and o.reference is not None and o.source.startswith("this level")]
    if areas and lc.reference is not None:
        med = float(np.median(areas))
        a = float(lc.reference.sum())
        if med > 0 and a < pol.level_ratio_min * med:
            reasons.append(f"canal area {100 * a / med:.0f} % of the other levels'")
    return reasons


#: A screw whose part centre lies within this of the canal's centre column (mm) is sided by its pair or its trajectory
#: instead: a medially breached screw's centre reaches the midline or crosses it (its tip can lie past it), while its
#: entry stays on its own side and a pedicle screw converges towards the midline from its own side (session 12, tuning
#: seed family 5 seed 31 study 11: a T11 left screw 5.5 mm in the canal, centre 0.7 mm right of the canal centre,
#: reported as a right screw).
SIDE_NEAR_MIDLINE_MM = 6.0
#: Lateral travel (mm) between the tip and the entry below which the trajectory gives no side.
SIDE_MIN_CONVERGENCE_MM = 1.5
#: The level's other screw is its pair (on the other side) when their entries lie at least this far apart across the
#: vertebra (mm, in the patient's frame): pedicle entry points are 30-50 mm apart from T10 to S1.
SIDE_PAIR_MIN_SEPARATION_MM = 10.0


def _patient_frame(lc, vol: Volume, cx_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(origin, lateral unit vector) in the axial plane, (row mm, column mm), the lateral vector towards increasing
    columns: the vertebral body's centre and AP axis when the level has a body of a vertebral body's width (a rotated
    patient's AP axis is not the image's), else the canal's centre and the image AP axis (session 13: held-out
    session 12, family 5 study 35, a rotated patient's L1 left screw converging across the midline ran from right
    to left in image columns and was sided right)."""
    dz, dy, dx = vol.spacing
    body = getattr(lc, "body", None)
    if body is not None and body[3] * 0.5 * (dy + dx) <= ml.MAX_BODY_WIDTH_MM:
        (by, bx), u = body[0], body[1]
        ap = np.array([u[0] * dy, u[1] * dx], float)
        if np.linalg.norm(ap) > 0:
            ap /= np.linalg.norm(ap)
            perp = np.array([-ap[1], ap[0]])
            if perp[1] < 0:
                perp = -perp
            return np.array([(lc.roi[0] + by) * dy, (lc.roi[2] + bx) * dx]), perp
    return np.array([(lc.roi[0] + lc.centre[0]) * dy, cx_mm]), np.array([0.0, 1.0])


def _side_of(p: mt.Part, lc, vol: Volume, entry=None, tip=None, pair_entry=None) -> tuple[str, int]:
    """(side, +1/-1 column sign of the screw relative to the canal centre); see `_side_and_basis`."""
    return _side_and_basis(p, lc, vol, entry, tip, pair_entry)[:2]


def _side_and_basis(p: mt.Part, lc, vol: Volume, entry=None, tip=None, pair_entry=None) -> tuple[str, int, str]:
    """(side, +1/-1 column sign of the screw relative to the canal centre, what sided it: "part centre",
    "level pair", "entry", "convergence" or "canal not found").

    By the part's centre; a part centred within `SIDE_NEAR_MIDLINE_MM` of the canal centre is sided, in the
    patient's frame (`_patient_frame`), by the level's pair when there is one (the other screw of the level is on
    the other side: its entry at least `SIDE_PAIR_MIN_SEPARATION_MM` across), else by its entry when the entry is
    further out than `SIDE_NEAR_MIDLINE_MM`, else by the direction it converges from (entry lateral of the tip)."""
    if lc is None or lc.centre is None:
        return "unknown", 0, "canal not found"
    cx_mm = (lc.roi[2] + lc.centre[1]) * vol.spacing[2]
    plus, basis = p.centre[2] > cx_mm, "part centre"
    if entry is not None and tip is not None and abs(p.centre[2] - cx_mm) < SIDE_NEAR_MIDLINE_MM:
        origin, perp = _patient_frame(lc, vol, cx_mm)
        lat = lambda q: float((np.array([q[1], q[2]], float) - origin) @ perp)  # noqa: E731
        e_lat, t_lat = lat(entry), lat(tip)
        if pair_entry is not None and abs(e_lat - lat(pair_entry)) >= SIDE_PAIR_MIN_SEPARATION_MM:
            plus, basis = e_lat > lat(pair_entry), "level pair"
        elif abs(e_lat) >= SIDE_NEAR_MIDLINE_MM:
            plus, basis = e_lat > 0, "entry"
        elif abs(e_lat - t_lat) >= SIDE_MIN_CONVERGENCE_MM:
            plus, basis = e_lat > t_lat, "convergence"
    left_is_plus = vol.row_dir[0] > 0  # columns increase towards patient left (LPS +x)
    return ("left" if plus == left_is_plus else "right"), (1 if plus else -1), basis


def _ends(vol: Volume, p: mt.Part):
    """(axis towards the anterior tip, tip_t, shaft0, entry, tip) of a screw part: tip_t and shaft0 in mm along the
    axis from the part's centre; the entry is where the shaft leaves the head (tulip)."""
    dz, dy, dx = vol.spacing
    idx = np.nonzero(p.mask)
    zi = idx[0] + p.bbox[0].start
    yi, xi = idx[1] + p.bbox[1].start, idx[2] + p.bbox[2].start
    axis = p.axis if p.axis[1] * (1 if vol.col_dir[1] > 0 else -1) < 0 else -p.axis  # towards the anterior tip
    coords = np.column_stack([vol.z[zi], yi * dy, xi * dx])
    tproj = (coords - p.centre) @ axis
    tip_t = float(tproj.max())
    radial = np.linalg.norm((coords - p.centre) - tproj[:, None] * axis, axis=1)
    shaft0, _ = mt.shaft_span(tproj, radial, p.diameter)
    return axis, tip_t, shaft0, p.centre + shaft0 * axis, p.centre + tip_t * axis


def _screw(vol, p, n, lev, nlev, lc, thr, canal_ok, res, common, pol, thick, ends, contrast=None,
           canals=None, midline=None, midline_x=None, pair_entry=None, shared: dict | None = None) -> list[dict]:
    """One screw's measurements (and its flags, notes and not-assessed reasons into `res`). `shared`: a per-analysis
    cache of what does not depend on the canal hypothesis (the loosening halo, the pedicle sections)."""
    idx = np.nonzero(p.mask)
    zi = idx[0] + p.bbox[0].start
    yi, xi = idx[1] + p.bbox[1].start, idx[2] + p.bbox[2].start
    z_span = [round(float(vol.z[zi.min()]), 1), round(float(vol.z[zi.max()]), 1)]
    axis, tip_t, shaft0, entry, tip = ends  # `_ends`, computed once per screw by analyse_volume
    side, sign, sided_by = _side_and_basis(p, lc, vol, entry, tip, pair_entry=pair_entry)
    where = _where(n, side, lev, nlev, z_span)
    base = dict(common, tracking_id=f"screw-{n}", screw=n, side=side, construct_level=lev,
                vertebral_level="unknown", z_mm=z_span)
    out = [dict(base, name="screw_length", value=round(p.length, 1), unit="mm"),
           dict(base, name="screw_diameter", value=round(p.diameter, 1), unit="mm")]
    position = {"entry_lps_mm": _lps(vol, entry), "tip_lps_mm": _lps(vol, tip), "centre_lps_mm": _lps(vol, 0.5 * (entry + tip)),
                "part_centre_lps_mm": _lps(vol, p.centre), "sided_by": sided_by}

    midline = midline or {}
    near = sided_by in ("level pair", "entry", "convergence")
    # the pedicle sections depend on the canal hypothesis only through these: computed once when they agree
    key = ("pedicle", n, sign, midline_x, near, None if lc is None else (id(lc.body), lc.roi))
    ped = shared.get(key) if shared is not None else None
    if ped is None:
        ped = _pedicle(vol, p, axis, shaft0, tip_t, sign, midline_x, pol, lc, near_midline=near)
        if shared is not None:
            shared[key] = ped

    na = None  # (short, long reason) when the medial breach is not assessed
    canal_found = canal_ok and lc is not None and lc.reference is not None
    depth, wall, canal_d, conf, grade, alts, implausible = 0.0, None, None, 0.0, None, {}, []
    mid_block = None  # (short, long reason) when the canal-independent midline check contradicts the canal's grade
    measured_against = None
    if not canal_ok:
        na = ("intrathecal contrast", f"contrast agent recorded ({contrast}) fills the canal")
    elif not canal_found:
        na = ("canal not found", "canal not found at this level or a neighbouring one (no pedicle walls "
              "seen; fused, osteoporotic or destroyed bone, artefact)")
    else:
        ks = zi - lc.k0
        ry, rx = yi - lc.roi[0], xi - lc.roi[2]
        b = cn.breach(lc, ks, ry, rx, sign, vol.spacing)
        wall, canal_d = b["wall_mm"], b["canal_mm"]
        depth = wall if b["voxels_in_canal"] else 0.0
        # Cross-checks: the canal expected from the contralateral side (mirrored) and, when this level's
        # canal is implausibly small, the neighbouring level's canal. Unknown is never negative.
        implausible = _plausibility(lc, canals or {}, sign, pol)
        alts = {}
        sym = cn.symmetric_reference(lc, sign)
        if sym is not None:
            alts["mirrored contralateral canal"] = cn.breach(lc, ks, ry, rx, sign, vol.spacing, ref=sym)["wall_mm"]
        nb_ref = getattr(lc, "neighbour_ref", None)
        if implausible and nb_ref is not None and nb_ref.any():
            alts[f"canal of construct level {lc.neighbour_level}"] = cn.breach(
                lc, ks, ry, rx, sign, vol.spacing, ref=nb_ref)["wall_mm"]
        alt_name, alt_depth = max(alts.items(), key=lambda kv: kv[1]) if alts else (None, 0.0)
        measured_against = lc.source
        nb_unconfirmed = (alt_name is not None and alt_name.startswith("canal of construct level")
                          and alts.get("mirrored contralateral canal", 0.0) < pol.expected_wall_flag_mm
                          and alt_depth < pol.neighbour_flag_mm and not _midline_confirms(midline, pol))
        if alt_depth > depth and alt_depth >= pol.expected_wall_flag_mm and nb_unconfirmed:
            # only another vertebra's canal, shifted here, puts the screw a few mm in the canal (within that
            # canal's misalignment); this level's own and mirrored canals and the canal-independent check do
            # not: left to the implausible-canal branch below (not assessed), never C+ from this alone
            pass
        elif alt_depth > depth and alt_depth >= pol.expected_wall_flag_mm:
            measured_against = alt_name  # metal across the expected medial wall: never A/B
            depth = alt_depth
        elif implausible and sym is not None:  # A/B only when clear of the mirrored and every other canal (below)
            measured_against = f"{lc.source} and {', '.join(alts)}"
        if implausible and _midline_clear(midline, depth, alt_depth, pol):
            measured_against = f"{measured_against} and the canal-independent midline check"
        agree = abs(wall - canal_d) <= pol.agreement_mm
        conf = 1.0
        conf *= {"this level": 1.0, "this level, one side mirrored": 0.7}.get(lc.source, 0.5)
        conf *= 1.0 if lc.well_defined >= 3 else 0.8
        conf *= 1.0 if agree else 0.7
        if measured_against != lc.source:
            conf *= 0.6
        if thick is not None and thick > pol.thin_slice_mm:
            conf *= 0.8
        deep = _midline_depth(midline, pol)
        if deep is not None and not _midline_confirms(midline, pol):
            # the other levels' screws alone (no contralateral pair, axis not deep): a midline found off the
            # vertebra's centre does the same; the midline block below leaves it not assessed, never C+ or A/B
            deep = None
        if deep is not None and deep > depth and depth < pol.grade_bounds[2]:
            # the screw's medial surface is next to the midline and both the other levels' screws and the
            # mirrored canal put it well inside: a gross breach the canal outline missed (never A/B)
            depth = deep
            measured_against = "canal-independent midline check (other levels' screws, mirrored canal)"
            conf *= 0.6
        conv = _convergence(p, lc, midline_x, vol)
        by_trajectory = conv is not None and conv >= pol.convergence_grade_deg and depth < pol.grade_bounds[2]
        if by_trajectory:
            # far more convergent than any pedicle's medial angle (T10 ~6 deg to S1 ~30 deg, patient rotation
            # < 15 deg): the trajectory crosses the medial pedicle wall and the canal, whatever the canal
            # outline says (never A/B; graded at the D lower bound, a minimum)
            depth = max(depth, pol.grade_bounds[2])
            measured_against = (f"screw trajectory ({conv:.0f} deg from the vertebra's antero-posterior axis; no "
                                f"pedicle allows more than {pol.convergence_never_ab_deg:.0f} deg)")
            conf *= 0.6
        grade = pol.grade(depth)
        mid_block = None if deep is not None or by_trajectory else _midline_block(midline, depth, pol)
        if mid_block is None and conv is not None and conv >= pol.convergence_never_ab_deg and grade in ("A", "B"):
            mid_block = ("screw converges beyond a pedicle's medial angle",
                         f"the screw runs {conv:.0f} deg from the vertebra's antero-posterior axis (more than any "
                         f"pedicle's medial angle, {pol.convergence_never_ab_deg:.0f} deg allowed with patient rotation)")
    far = canal_found and _far_from_midline(midline, max([depth] + list(alts.values())), pol)
    if far:
        # the screw's medial surface lies beyond any canal's half-width from a midline the level's own canal confirms,
        # and no canal reference puts it C+: an A/B read confirmed by a canal-independent measure (session 14)
        measured_against = (f"{measured_against} and the canal-independent midline check (medial surface "
                            f"{midline['far_offset_mm']:.1f} mm from the vertebral midline)")
        conf = min(conf, 0.6)
    if na is None:  # the canal was found and measured above (canal_ok, lc.reference)
        if (implausible and depth < pol.expected_wall_flag_mm and not far
                and (sym is None or alt_depth > pol.clear_mm or depth > pol.clear_mm)
                and not _midline_clear(midline, depth, alt_depth, pol)):
            # The canal found next to the screw is implausible (split by the screw, too small): a low depth
            # measured against it is not a negative; only a gross breach against the expected canal is graded.
            why = "; ".join(implausible)
            cross = ", ".join(f"{k} {v:.1f} mm" for k, v in alts.items()) or "none available"
            na = ("canal implausible next to the screw",
                  f"canal reference implausible next to the screw ({why}); depth {depth:.1f} mm, cross-checks: "
                  f"{cross}; a breach cannot be excluded")
        elif mid_block is not None:
            na = (mid_block[0], f"{mid_block[1]}; depth against the canal {depth:.1f} mm (grade {grade}, "
                  f"canal from {lc.source}); a breach cannot be excluded")
        elif (grade in ("A", "B") and midline.get("offset_mm") is None and not far
              and (pol.low_grade_needs_midline or conf < pol.low_grade_min_confidence)):
            # A low grade must not come from missing evidence: a canal borrowed, mirrored or disagreeing with its
            # own wall, with no canal-independent check to confirm it, does not make a screw A/B.
            na = ("low grade not confirmed",
                  f"depth against the canal {depth:.1f} mm (grade {grade}) with confidence {conf:.2f} (canal from "
                  f"{lc.source}; measured against {measured_against}) and the canal-independent midline check "
                  "unavailable at this level; a breach cannot be excluded")
        elif (grade in ("A", "B") and not far
              and (contra := _low_grade_contradicted(lc, implausible, midline, pol)) is not None):
            na = ("low grade not confirmed",
                  f"depth {depth:.1f} mm (grade {grade}) against {contra[0]} (confidence {conf:.2f}) while "
                  f"{contra[1]}; a breach cannot be excluded")
    if na is not None and na[0] == "canal not found":
        # No canal at this level or any other, but the canal-independent midline check puts the screw's medial
        # surface next to the vertebral midline, well inside the medial wall expected from the body's width (or
        # its pair / the other levels): metal in the canal, graded at least D from that evidence alone (never A/B)
        alone = _midline_alone_depth(midline, pol)
        if alone is not None:
            na, depth, grade, conf = None, alone, pol.grade(alone), 0.4
            implausible = ["canal not found at this level or a neighbouring one"]
            measured_against = (f"canal-independent midline check alone (canal not found; medial surface "
                                f"{max(midline['offset_mm'], 0.0):.1f} mm from the vertebral midline)")
    na, depth, grade, measured_against, conf = _with_pedicle(ped, na, depth, grade, measured_against, conf,
                                                             canal_ok, pol)
    if na is not None and na[0] in ("canal-independent check suggests a medial breach",
                                    "canal implausible next to the screw", "pedicle sections suggest a medial breach"):
        # the canal read low or is implausible, but three measures that do not use this side's canal outline put the metal a D depth
        # into the canal: graded from them (the smaller of pair and mirrored half-width), never A/B
        three = _three_measures_depth(midline, ped, pol)
        if three is not None:
            refs = ", ".join(f"{k} {midline[key]:.1f} mm" for k, key in (
                ("contralateral pair", "pair_excess_mm"), ("other levels' screws", "level_excess_mm"),
                ("body-width wall", "body_depth_mm")) if midline.get(key) is not None)
            measured_against = (f"canal-independent checks (mirrored canal half-width {midline['axis_depth_mm']:.1f} mm; "
                                f"{refs}; medial pedicle wall up to "
                                f"{max(v for v in ped['profile_mm'] if v is not None):.1f} mm; canal read "
                                f"{depth:.1f} mm, {na[0]})")
            na, depth, grade, conf = None, three, pol.grade(three), 0.5
    if na is not None and na[0] == "canal-independent check suggests a medial breach":
        confirmed = _pedicle_confirms_midline(ped, pol)
        if confirmed is not None:
            why = mid_block[1].removeprefix(MIDLINE_BREACH_PREFIX)
            measured_against = (f"canal-independent midline check ({why}) and the medial pedicle "
                                f"wall ({ped['depth_mm']:.1f} mm beyond it over {pol.pedicle_run_sections} consecutive "
                                f"sections); canal read {depth:.1f} mm")
            na, depth, grade, conf = None, confirmed, pol.grade(confirmed), 0.5
    # the canal found lies on the screw's side of its centre ("lopsided"): the other level's canal shifted here is not
    # allowed to block the intact-pedicle A/B read on its own (session 15, `_with_intact_pedicle`)
    lopsided = any(r.startswith("canal lopsided") for r in implausible)
    own_depth = max([depth] + [v for k, v in alts.items() if not k.startswith("canal of construct level")])
    na, depth, grade, measured_against, conf = _with_intact_pedicle(
        ped, na, depth, max([depth] + list(alts.values())), grade, measured_against, conf, midline, canal_ok, pol,
        own_canal_depth=own_depth if lopsided else None)
    if na is not None:
        _unassessed(res, where, dict(screw=n, side=side, construct_level=lev, z_mm=z_span, reason_short=na[0],
                                     reason=na[1], midline_check=midline, pedicle_check=ped, **position))
    else:
        lateral = _lateral(vol, lc, ks, ry, rx, shared) if canal_found else None
        src = lc.source if canal_found else "not found"
        wall_txt = f"{wall:.1f} mm" if wall is not None else "n/a"
        canal_txt = f"{canal_d:.1f} mm" if canal_d is not None else "n/a"
        rnd = lambda v: None if v is None else round(v, 1)  # noqa: E731
        out.append(dict(base, name="medial_breach_depth", value=round(depth, 1), unit="mm",
                        grade=grade, medial_wall_depth_mm=rnd(wall), canal_depth_mm=rnd(canal_d),
                        pedicle_depth_mm=ped.get("depth_mm") if ped.get("available") else None,
                        confidence=round(conf, 2), canal_source=src,
                        canal_reference_slices=lc.well_defined if canal_found else 0,
                        measured_against=measured_against, canal_plausibility=implausible or "plausible",
                        cross_check_depths_mm={k: round(v, 1) for k, v in alts.items()},
                        midline_check=midline, pedicle_check=ped,
                        threshold="Gertzbein-Robbins: B <2, C 2-<4, D 4-<6, E >=6 mm", **position))
        if lateral is not None:
            out.append(dict(base, name="lateral_breach_depth", value=round(lateral, 1), unit="mm",
                            note="lateral breach: outside the vertebra, not canal intrusion"))
        prio = pol.grade_priority.get(grade)
        if prio is not None:
            read = prio.name
            res.flags.append(Flag("misplaced_screw", prio, f"{NAME}.medial_breach", [Evidence(
                source=f"series:{vol.series_uid}", rule=f"{NAME}.medial_breach",
                measurement={"name": "medial_breach_depth", "value": round(depth, 1), "unit": "mm",
                             "threshold": "C >=2 mm (URGENT), D >=4 mm and E >=6 mm (STAT)",
                             "grade": grade, "screw": n, "z_mm": z_span,
                             "medial_wall_depth_mm": rnd(wall), "canal_depth_mm": rnd(canal_d),
                             "pedicle_depth_mm": ped.get("depth_mm") if ped.get("available") else None,
                             "confidence": round(conf, 2), "canal_source": src,
                             "measured_against": measured_against},
                note=(f"Suspected misplaced_screw: {where} reaches {depth:.1f} mm beyond the medial pedicle wall "
                      f"into the spinal canal (canal depth {canal_txt}; pedicle-wall depth "
                      f"{ped.get('depth_mm') if ped.get('available') else 'n/a'} mm; confidence {conf:.2f}; canal from "
                      f"{src}; measured against {measured_against}; medial breach, Gertzbein-Robbins {grade}); {read} read suggested. "
                      f"Metal threshold {round(float(thr))} HU, bone {round(pol.bone_hu)} HU. {DECISION}."))]))
        if lateral is not None and lateral >= 2.0:
            res.notes.append(f"{where}: lateral breach {lateral:.1f} mm (outside the vertebra; no canal intrusion)")

    h = shared.get(("halo", n)) if shared is not None else None  # the halo does not depend on the canal
    if h is None:
        h = lo.halo(vol, p.centre, axis, tip_t, p.length, p.threshold)
        if shared is not None:
            shared[("halo", n)] = h
    if not h["assessed"]:
        res.not_assessed.append(f"{where}: loosening halo not assessed: {h['reason']}")
        return out
    desc, infection = lo.margin(h) if h["width_mm"] > 0 else ("no lucent band at the tip", False)
    out.append(dict(base, name="halo_width", value=h["width_mm"], unit="mm", threshold=f">{pol.halo_flag_mm:g} mm",
                    margin=desc, irregularity_cv=h["irregularity_cv"], edge_mm=h["edge_mm"],
                    sclerotic_rim=h["sclerotic_rim"], bone_hu=h["bone_hu"]))
    if h["width_mm"] > pol.halo_flag_mm:
        # Domain guide §6-7: a wide, irregular, ill-defined halo suggests infection:
        # screw_loosening goes to URGENT and surgical_site_infection is added.
        priority = pol.infection_priority if infection else pol.loosening_priority
        evidence = Evidence(
            source=f"series:{vol.series_uid}", rule=f"{NAME}.halo",
            measurement={"name": "halo_width", "value": h["width_mm"], "unit": "mm",
                         "threshold": f">{pol.halo_flag_mm:g} mm", "screw": n, "z_mm": z_span},
            note=(f"Suspected screw_loosening: {where} has a lucent halo of {h['width_mm']:.1f} mm around its "
                  f"anterior part; {desc}. Streak artefacts can imitate lucency. {DECISION}."))
        res.flags.append(Flag("screw_loosening", priority, f"{NAME}.halo", [evidence]))
        if infection:
            res.flags.append(Flag("surgical_site_infection", pol.infection_priority, f"{NAME}.halo_pattern", [Evidence(
                source=evidence.source, rule=f"{NAME}.halo_pattern", measurement=evidence.measurement,
                note=(f"Suspected surgical_site_infection: the halo around {where} is wide, irregular and "
                      f"ill-defined ({desc}). Compare with the prior CT; imaging cannot tell sterile from "
                      f"infected. {DECISION}."))]))
    return out


def _with_pedicle(ped: dict, na, depth: float, grade, measured_against, conf: float, canal_ok: bool, pol):
    """Combine the canal read (graded or `na`) with the canal-independent pedicle-wall depth (pedicle.py).

    - pedicle depth >= `pedicle_grade_mm` (D) with the metal's medial surface at that section within
      `pedicle_max_offset_mm` of the vertebral midline (metal in the canal is within its half-width; unknown
      midline: allowed): graded from it when the canal read is lower or not assessed (a breach the canal
      outline missed; never A/B), with both depths in the evidence;
    - canal read A/B while the pedicle depth is >= `pedicle_never_ab_mm`: not assessed, never A/B;
    - "low grade not confirmed" (canal A/B, midline check unavailable) and a pedicle depth under
      `pedicle_never_ab_mm`: graded A/B only when `pedicle_confirms_low_grade` (off by default).
    Returns (na, depth, grade, measured_against, conf).
    """
    pdepth = ped.get("depth_mm") if ped.get("available") else None
    if not canal_ok or pdepth is None:
        return na, depth, grade, measured_against, conf
    off = ped.get("medial_edge_offset_mm")
    near_midline = off is None or off <= pol.pedicle_max_offset_mm
    if pdepth >= pol.pedicle_grade_mm and near_midline and (na is not None or pdepth > depth):
        before = (f"canal read not assessed: {na[0]}" if na is not None
                  else f"canal read {depth:.1f} mm, measured against {measured_against}")
        return (None, float(pdepth), pol.grade(pdepth),
                f"the medial pedicle wall in sections across the screw ({before})", 0.6)
    if na is None and grade in ("A", "B") and pdepth >= pol.pedicle_never_ab_mm:
        return (("pedicle sections suggest a medial breach",
                 f"depth against the canal {depth:.1f} mm (grade {grade}, measured against {measured_against}) but "
                 f"{pdepth:.1f} mm of metal beyond the medial pedicle wall in sections across the screw; a breach "
                 "cannot be excluded"), depth, grade, measured_against, conf)
    if (na is not None and na[0] == "low grade not confirmed" and pol.pedicle_confirms_low_grade
            and pdepth < pol.pedicle_never_ab_mm):
        return (None, depth, grade, f"{measured_against} and the medial pedicle wall ({pdepth:.1f} mm)",
                min(conf, 0.7))
    return na, depth, grade, measured_against, conf


def _run_max(profile: list, run: int) -> float | None:
    """The largest minimum of `run` consecutive valid sections (None: no such run)."""
    vals = [min(profile[k:k + run]) for k in range(len(profile) - run + 1)
            if all(v is not None for v in profile[k:k + run])]
    return max(vals) if vals else None


def _pedicle_intact(ped: dict, pol, run: int = 1) -> bool:
    """The pedicle sections see the medial cortex intact along the pedicle: at least `pedicle_intact_min_sections`
    valid sections, every one under `pedicle_intact_max_mm`, and the metal's medial surface at least
    `pedicle_intact_min_offset_mm` from the vertebral midline on every one of them (known midline). A screw
    lying wholly in the canal (medial surface within a few mm of the midline) has no medial cortex to cross
    and reads 0 in these sections; a medial surface over `pedicle_intact_max_offset_mm` from the midline means the
    midline is wrong (session 6, second pass, tuning seeds: of the 4 truth D/E screws reading < 2 mm on every one of >= 8
    sections, 3 had their medial surface within 2 mm of the midline, the fourth 91 mm "from the midline")."""
    if pol.pedicle_intact_max_mm is None or not ped.get("available"):
        return False
    profile = ped.get("profile_mm") or []
    prof = [v for v in profile if v is not None]
    top = max(prof, default=None) if run <= 1 else _run_max(profile, run)
    off = ped.get("min_medial_edge_offset_mm")
    return (len(prof) >= pol.pedicle_intact_min_sections and top is not None and top < pol.pedicle_intact_max_mm
            and off is not None and pol.pedicle_intact_min_offset_mm <= off <= pol.pedicle_intact_max_offset_mm)


def _low_grade_contradicted(lc, implausible: list, m: dict, pol) -> tuple[str, str] | None:
    """(what the A/B read was measured against, why it is not a negative) when an A/B read comes from a canal that
    cannot show a breach on the screw's side -- a neighbouring level's canal (none found at this level: `lc.source`
    "neighbouring level", confidence 0.5 or less) or this level's canal with its half on the screw's side under
    `canal.plausibility.side_ratio_min` of the contralateral half (occluded: the screw's metal and blooming take the
    place of the canal there) -- while a canal-independent reference (the contralateral pair, the other levels' screws,
    the medial wall expected from the body's width) puts the screw's medial surface at least
    `canal.low_grade_contradicted_mm` (the C bound) further in. None otherwise, or without the policy key.

    Session 26: held-out family 6 (20261304) study 15, the study's only D/E screw (truth D 4.1 mm, T12 left, 2-mm
    slices), read B 0.7 against the level above's canal (confidence 0.32), the other level's screw 6.7 mm further out
    and the body-width wall 3.0 mm inside; family 7's first sight (20261306) study 7, its only D/E screw (truth D 5.6,
    L4 right, 2-mm slices), read A with the canal on its side 23 % of the other half, the body-width wall 3.2 mm inside.
    Both studies were neither raised nor stated incomplete. Occluded-canal A/B reads on 11 sets (families 4-7): 45,
    of which 9 met the reference condition: 7 truth A, this D and a truth C (2.3 mm)."""
    lim = pol.low_grade_contradicted_mm
    if lim is None or lc is None:
        return None
    if lc.source == "neighbouring level":
        against = "another level's canal only"
    elif any(r.startswith("canal on the screw's side") for r in implausible):
        against = "a canal occluded on the screw's side"
    else:
        return None
    why = [f"{m[k]:.1f} mm nearer the midline than {name}" if k != "body_depth_mm"
           else f"{m[k]:.1f} mm inside {name}"
           for name, k in (("its contralateral pair", "pair_excess_mm"), ("the other levels' screws", "level_excess_mm"),
                           ("the medial wall expected from the vertebral body's width", "body_depth_mm"))
           if m.get(k) is not None and m[k] >= lim]
    if not why:
        return None
    why[0] = "its medial surface lies " + why[0]
    return against, "; ".join(why)


def _midline_agrees(m: dict, pol) -> bool:
    """The canal-independent midline check is available (vertebral body found) and every reference it has puts
    the screw clear: medial surface at least `midline_min_offset_mm` + 1 from the midline, not nearer it than
    its pair (2 mm) or the other levels' screws (3 mm), and less than the C threshold inside the medial wall
    expected from the body's width or the mirrored canal half-width. Unlike `_midline_clear`, a missing pair
    or missing other levels is allowed (the pedicle sections are the second, independent measure)."""
    off = m.get("offset_mm")
    if off is None or off < pol.midline_min_offset_mm + 1.0:
        return False
    pe, le, ax, bd = (m.get(k) for k in ("pair_excess_mm", "level_excess_mm", "axis_depth_mm", "body_depth_mm"))
    c = pol.grade_bounds[1]
    return ((pe is None or pe <= 2.0) and (le is None or le <= 3.0) and (ax is None or ax < c)
            and (bd is None or bd < c))


def _with_intact_pedicle(ped: dict, na, depth: float, max_canal_depth: float, grade, measured_against,
                         conf: float, midline: dict, canal_ok: bool, pol, own_canal_depth: float | None = None):
    """Two uses of an intact medial cortex in the pedicle sections (`_pedicle_intact`; off without
    `pedicle_sections.intact` in the policy):

    - "canal implausible next to the screw" with every canal reference (own, mirrored, neighbouring) under the
      C threshold and the canal-independent midline check agreeing (`_midline_agrees`): graded A/B from the
      canal depth, measured against the canal, the pedicle wall and the midline check (two independent
      measures agree; neither alone clears a screw);
    - a C+ read that only a borrowed canal gives (mirrored contralateral half or another level's canal shifted
      here) while the pedicle's own medial cortex is intact (here a single deviating section is allowed:
      `pedicle_intact_borrowed_run` consecutive sections must reach the limit) and the metal stays away
      from the midline: the
      borrowed outline is misaligned; "not assessed (canal references disagree with the pedicle wall)" rather
      than a false C+ (never A/B).

    - "low grade not confirmed" because the midline check is unavailable (no vertebral body found at the level),
      every canal reference under the C threshold, the cortex intact on every section and the metal's medial surface
      more than `pedicle_sections.max_offset_mm` (12 mm) from the midline on every section
      (`pedicle_sections.intact.confirms_low_grade_without_midline_check`, session 26): graded A/B from the canal
      depth, measured against the canal and the pedicle wall. Session 26: on 8 sets of families 4-6 (5 tuning, 3
      seen), 11 truth A/B screws among the "low grade not confirmed" ones had an intact cortex (metal >= 6 mm from
      the midline), no truth C/D/E; on family 7's first sight (seed 20261306) 10 truth A and one truth C (2.1 mm, S1,
      metal 8.9 mm from the midline): hence the 12 mm. **Off in the rulebook** since the held-out family 7 (seed
      20261307): in one study it graded the two screws that had made the study "incomplete" while its D screw read B.

    `own_canal_depth` (session 15) is given only when this level's canal is lopsided (`_plausibility`: its half on the
    screw's side larger than the contralateral half, so no metal occludes the canal on the screw's side) and is the
    largest of the own and mirrored canal depths. Then, for the first use, the neighbouring level's canal shifted here
    may read up to `canal.plausibility.expected_wall_flag_mm` when the own and mirrored depths are under the C bound,
    the screw is symmetric with its contralateral pair (`_pair_symmetric`) and the body-width wall is known
    (`_lopsided_neighbour_waived`).
    Returns (na, depth, grade, measured_against, conf)."""
    if not canal_ok or not _pedicle_intact(ped, pol, pol.pedicle_intact_borrowed_run):
        return na, depth, grade, measured_against, conf
    c = pol.grade_bounds[1]
    mid_off = (midline or {}).get("offset_mm")
    waived = _lopsided_neighbour_waived(midline or {}, max_canal_depth, own_canal_depth, pol)
    if (na is not None and na[0] == "canal implausible next to the screw" and (max_canal_depth < c or waived)
            and _pedicle_intact(ped, pol) and _midline_agrees(midline or {}, pol)):
        if waived and max_canal_depth >= c:
            pe = (midline or {}).get("pair_excess_mm")
            pair = ("no contralateral pair" if pe is None
                    else f"symmetric with its contralateral pair within {abs(pe):.1f} mm")
            measured_against = (f"{measured_against} (the shifted canal of the other level, {max_canal_depth:.1f} mm, "
                                f"waived: this level's canal lopsided, the screw {pair})")
        return (None, depth, pol.grade(depth),
                f"{measured_against}, the medial pedicle wall (intact on {ped.get('sections')} sections, at most "
                f"{max(v for v in ped['profile_mm'] if v is not None):.1f} mm) and the canal-independent midline check",
                min(conf, 0.6))
    if (na is not None and na[0] == "low grade not confirmed" and pol.pedicle_intact_confirms_low_grade
            and mid_off is None and max_canal_depth < c and _pedicle_intact(ped, pol)
            and (ped.get("min_medial_edge_offset_mm") or 0.0) > pol.pedicle_max_offset_mm):
        # the canal read A/B, the vertebral body (and so the midline check) not found at the level: the pedicle's own
        # medial cortex seen intact along its length, the metal away from the midline, is the second, independent
        # measure that a low grade needs, the metal further from the midline than any metal the sections grade
        # (`pedicle_sections.max_offset_mm`: metal in the canal lies within the canal's half-width) (session 26)
        return (None, depth, pol.grade(depth),
                f"{measured_against} and the medial pedicle wall (intact on {ped.get('sections')} sections, at most "
                f"{max(v for v in ped['profile_mm'] if v is not None):.1f} mm; metal at least "
                f"{ped.get('min_medial_edge_offset_mm')} mm from the vertebral midline)", min(conf, 0.6))
    borrowed = isinstance(measured_against, str) and (
        measured_against.startswith("mirrored contralateral canal")
        or measured_against.startswith("canal of construct level") or measured_against == "neighbouring level")
    if (na is None and grade not in ("A", "B") and borrowed
            and (mid_off is None or mid_off >= pol.midline_min_offset_mm + 1.0)):
        return (("canal references disagree with the pedicle wall",
                 f"depth {depth:.1f} mm against the {measured_against} (grade {grade}) but the medial pedicle cortex is "
                 f"seen intact on {ped.get('sections')} sections across the screw, the metal at least "
                 f"{ped.get('min_medial_edge_offset_mm')} mm from the vertebral midline; a breach cannot be excluded"),
                depth, grade, measured_against, conf)
    return na, depth, grade, measured_against, conf


#: Pair symmetry (mm, |pair_excess_mm|) for `_lopsided_neighbour_waived`: the screw's medial surface within this of its
#: contralateral pair's distance from the midline, either way. A medial breach of a screw whose pair is in place brings it
#: nearer the midline than the pair by about its depth (pair_excess >= 2 for a C); a pair much nearer the midline
#: (pair_excess <= -2) is itself breached or the midline is off, and says nothing for this screw (session 15, tuning
#: seeds: family 4 seed 33 study 2 L4 right, truth C 2.1, lopsided canal, pedicle intact, pair excess -11.0: its pair is
#: a truth-D screw). The same 2 mm as `_midline_agrees` and `_midline_clear` use for the pair.
LOPSIDED_PAIR_SYMMETRY_MM = 2.0


def _pair_symmetric(m: dict) -> bool:
    """The contralateral pair is unknown, or symmetric within `LOPSIDED_PAIR_SYMMETRY_MM` either way."""
    pe = m.get("pair_excess_mm")
    return pe is None or abs(pe) <= LOPSIDED_PAIR_SYMMETRY_MM


def _lopsided_neighbour_waived(m: dict, max_canal_depth: float, own_canal_depth: float | None, pol) -> bool:
    """Session 15: a lopsided canal (`own_canal_depth` given) whose own and mirrored depths are under the C bound, the
    neighbouring level's shifted canal under `expected_wall_flag_mm` (its misalignment), the screw symmetric with its
    pair and the body-width wall known. Tuning seeds (5 sets, 308 screws): of the 39 "canal implausible" screws, the 3
    truth D/E had the canal on the screw's side reduced (metal in it), none lopsided; of the 25 lopsided (20 truth A, 1 B,
    4 C), the only truth C with an intact pedicle and an agreeing midline check had its pair 11 mm nearer the midline."""
    if own_canal_depth is None:
        return False
    return (own_canal_depth < pol.grade_bounds[1] and max_canal_depth < pol.expected_wall_flag_mm
            and _pair_symmetric(m) and m.get("body_depth_mm") is not None)


def _convergence(p: mt.Part, lc, midline_x, vol: Volume) -> float | None:
    """Angle (deg) of the screw axis from the vertebra's antero-posterior axis in the axial plane, or None for a
    part centred on the midline (a cross-link across it, not a pedicle screw) or without a midline."""
    if midline_x is None or abs(p.centre[2] - midline_x) < 5.0:
        return None
    ap = np.array([1.0, 0.0])
    if lc is not None and getattr(lc, "body", None) is not None:
        u = np.asarray(lc.body[1], float)
        ap = np.array([u[0] * vol.spacing[1], u[1] * vol.spacing[2]])
        ap /= np.linalg.norm(ap)
    a = np.array([p.axis[1], p.axis[2]], float)
    n = np.linalg.norm(a)
    if n < 0.3:  # mostly cranio-caudal
        return None
    return float(np.degrees(np.arccos(min(1.0, abs(a @ ap) / n))))


def _midline_depth(m: dict, pol) -> float | None:
    """Depth (mm) from the midline check alone when it shows a gross medial breach: the screw's medial
    surface closer than `min_offset_mm` to the midline and the other levels' screws or the mirrored
    canal half-width putting it at least the D threshold inside. None otherwise."""
    le, ax, off = m.get("level_excess_mm"), m.get("axis_depth_mm"), m.get("offset_mm")
    if off is None or off >= pol.midline_min_offset_mm:
        return None
    est = max([v for v in (le, ax) if v is not None], default=None)
    if est is None or est < pol.grade_bounds[2]:
        return None
    return float(est)


def _far_from_midline(m: dict, max_canal_depth: float, pol) -> bool:
    """The canal-independent check confirms a low grade for a screw far out (session 14): its medial surface at
    the pedicle isthmus more than `midline_max_half_width_mm` from the vertebral midline (no canal is that wide: a
    breach there would need a canal over twice that) and at most `pedicle_intact_max_offset_mm` (further: a wrong
    midline), the midline confirmed by the level's own canal centre (`midline.offsets`, "far" record), and every
    canal reference (own, mirrored, neighbouring) under the C threshold. Without it such a screw's A/B read was
    "not assessed (low grade not confirmed)": the midline check dropped it as implausibly far out (18 mm).
    Session 14, tuning seeds: no truth C/D/E screw lay over 18 mm out; the furthest truth D/E 15.0 mm (E)."""
    off = m.get("far_offset_mm")
    return (off is not None and pol.midline_max_half_width_mm < off <= pol.pedicle_intact_max_offset_mm
            and max_canal_depth < pol.grade_bounds[1])


def _midline_alone_depth(m: dict, pol) -> float | None:
    """Depth (mm) from the midline check alone, for a screw whose canal is not found: its medial surface within
    `midline_min_offset_mm` of the vertebral midline (no canal is narrower than 10 mm: metal there is in the canal)
    and at least one canal-independent reference putting it a D depth inside: the medial wall expected from the
    body's width (`body_depth_mm`), the other levels' screws or the contralateral pair. Graded by the largest of
    them, at least the D lower bound (a minimum: the metal is in the canal). None otherwise."""
    off = m.get("offset_mm")
    if off is None or off >= pol.midline_min_offset_mm:
        return None
    refs = [v for v in (m.get("body_depth_mm"), m.get("level_excess_mm"), m.get("pair_excess_mm")) if v is not None]
    if not refs or max(refs) < pol.grade_bounds[2]:
        return None
    return float(max(max(refs), pol.grade_bounds[2]))


def _three_measures_depth(m: dict, ped: dict, pol) -> float | None:
    """Depth (mm) when measures that do not use this side's canal outline agree on a D breach: the screw at least the
    D threshold inside the contralateral canal half-width mirrored (`axis_depth_mm`) AND inside at least one
    canal-independent expectation (its contralateral pair, the other levels' screws or the medial wall expected from
    the body's width), AND the pedicle sections showing metal beyond the medial cortex (`_pedicle_breached`: two
    consecutive sections >= `pedicle_never_ab_mm`, or one >= the D bound; session 12 took one section >= 2 mm).
    Graded by the smaller of the mirrored depth and the largest expectation, a D minimum. None otherwise. Used only for a screw otherwise not assessed (it never overrides a
    graded read). Session 12, tuning seeds: four truth-D/E screws (families 4, 5, 6) met it among the screws left
    "canal implausible" or "canal-independent check suggests a medial breach", no truth-A/B/C screw did; truth-A
    screws with a large axis depth and pair or level excess had intact sections (all < 2 mm) or were graded."""
    ax = m.get("axis_depth_mm")
    refs = [v for v in (m.get("pair_excess_mm"), m.get("level_excess_mm"), m.get("body_depth_mm")) if v is not None]
    d = pol.grade_bounds[2]
    if ax is None or ax < d or not refs or max(refs) < d or not _pedicle_breached(ped, pol):
        return None
    return float(max(min(ax, max(refs)), d))


def _pedicle_confirms_midline(ped: dict, pol) -> float | None:
    """Depth (mm, a D minimum) when the pedicle sections confirm what the canal-independent midline check says (the
    screw nearer the midline than its pair, next to the midline, or inside the medial wall expected from the body's
    width, while the canal read A/B: "not assessed (canal-independent check suggests a medial breach)"): the pedicle
    depth -- the deepest run of `pedicle_sections.run_sections` consecutive sections -- at least
    `pedicle_sections.confirms_midline_breach_mm`. Unlike a grade from the pedicle alone (`_with_pedicle`), the metal
    is not asked to lie within `pedicle_sections.max_offset_mm` of the midline: the midline check already puts it
    nearer the midline than it should be. Two canal-independent measures then agree on a breach that the canal
    outline missed: graded at least D (the metal is in the canal; never A/B). None otherwise, or without the policy
    key.

    Session 26, 12 sets of families 4-7: of the screws left so, 5 had a pedicle depth >= 3 mm, all truth D/E (D 4.0
    twice, D 4.0 with the metal 12.5 mm from the midline, E 6.0, E 8.4), and none of the 31 truth A/B/C (deepest
    2.0 mm)."""
    lim = pol.pedicle_confirms_midline_mm
    pdepth = ped.get("depth_mm") if ped.get("available") else None
    if lim is None or pdepth is None or pdepth < lim:
        return None
    return float(max(pdepth, pol.grade_bounds[2]))


def _pedicle_breached(ped: dict, pol) -> bool:
    """The pedicle sections show metal beyond the medial cortex for `_three_measures_depth`: a run of
    `pedicle_intact_borrowed_run` consecutive sections at least `pedicle_never_ab_mm` deep (the run the borrowed-canal
    use of the intact cortex asks for), or one section at least `pedicle_grade_mm` (the D bound) deep. Session 13: one
    section at 2.8 mm among 18 at 0 let the rule make a truth-B screw D (held-out session 12, family 5 study 15 L4
    right); the tuning seeds' truth-E screw with a single deep section (family 4 seed 33 study 9 L4 right) read
    8.4 mm there."""
    profile = (ped.get("profile_mm") or []) if ped.get("available") else []
    prof = [v for v in profile if v is not None]
    if not prof:
        return False
    run = max(int(pol.pedicle_intact_borrowed_run), 1)
    top_run = max(prof) if run <= 1 else _run_max(profile, run)
    return (top_run is not None and top_run >= pol.pedicle_never_ab_mm) or max(prof) >= pol.pedicle_grade_mm


def _midline_confirms(m: dict, pol) -> bool:
    """The canal-independent check confirms a medial breach: the screw axis at the pedicle isthmus at least
    `neighbour_confirm_axis_mm` inside, or the screw `pair_excess_mm` nearer the midline than its pair."""
    ax, pe = m.get("axis_depth_mm"), m.get("pair_excess_mm")
    return bool((ax is not None and ax >= pol.neighbour_confirm_axis_mm)
                or (pe is not None and pe >= pol.midline_pair_excess_mm))


def _midline_clear(m: dict, depth: float, alt_depth: float, pol) -> bool:
    """The canal-independent check puts the screw clear of the canal with every reference agreeing: the
    pair is symmetric (within 2 mm), the screw is where the other levels' screws are (within 3 mm; a
    bilateral breach at one level shows here), at least 6 mm from the midline and less than 2 mm inside the
    medial wall expected from the body's width (a construct breached throughout shows here), and no canal reference
    (own, mirrored, neighbouring) gives a breach >= 2 mm. The mirrored half-width is not used: it comes
    from the very canal found implausible."""
    pe, le, off = (m.get(k) for k in ("pair_excess_mm", "level_excess_mm", "offset_mm"))
    if None in (pe, le, off):
        return False
    bd = m.get("body_depth_mm")
    return (abs(pe) <= 2.0 and le <= 3.0 and off >= pol.midline_min_offset_mm + 1.0
            and bd is not None and bd < pol.grade_bounds[1] and max(depth, alt_depth) < pol.grade_bounds[1])


#: How `_midline_block`'s "suggests a medial breach" reason begins; the reasons that follow are quoted by
#: `_pedicle_confirms_midline`'s grade in `_screw`.
MIDLINE_BREACH_PREFIX = "canal-independent check at the pedicle isthmus: "


def _midline_block(m: dict, depth: float, pol) -> tuple[str, str] | None:
    """(short, long reason) when the canal-independent midline check contradicts the canal's grade.

    A/B read from the canal while the screw sits nearer the midline than its pair, than the canal's
    mirrored half-width or very close to the midline: the canal outline is wrong; never A/B. A C+ read
    whose depth the screw's position cannot explain (pair symmetric, axis depth much lower): the canal
    outline is wrong the other way; not assessed rather than a false C+.
    """
    pe, ax, off = m.get("pair_excess_mm"), m.get("axis_depth_mm"), m.get("offset_mm")
    le = m.get("level_excess_mm")
    if off is None:
        return None
    if depth < pol.grade_bounds[1]:
        why = []
        if pe is not None and pe >= pol.midline_pair_excess_mm:
            why.append(f"its medial surface is {pe:.1f} mm nearer the midline than the contralateral screw's")
        if off < pol.midline_min_offset_mm:
            why.append(f"its medial surface is {max(off, 0.0):.1f} mm from the vertebral midline")
        bd = m.get("body_depth_mm")
        if bd is not None and bd >= pol.midline_body_depth_mm:
            why.append(f"it reaches {bd:.1f} mm inside the medial pedicle wall expected from the vertebral body's "
                       "width (interpedicular half-distance a quarter of the body width)")
        if why:
            return ("canal-independent check suggests a medial breach", MIDLINE_BREACH_PREFIX + "; ".join(why))
        return None
    if off >= pol.midline_min_offset_mm and off + depth > pol.midline_max_half_width_mm:
        return ("canal and midline checks disagree",
                f"canal depth {depth:.1f} mm but the screw's medial surface is {off:.1f} mm from the vertebral "
                f"midline at the pedicle isthmus: that depth needs a canal over "
                f"{2 * pol.midline_max_half_width_mm:.0f} mm wide")
    bd = m.get("body_depth_mm")
    if (depth < pol.grade_bounds[3] and pe is not None and pe <= -pol.midline_pair_excess_mm - 0.5
            and bd is not None and bd < pol.grade_bounds[1]):
        # a C/D medial breach of this screw would put its pair, which is further medial still, across the
        # midline; E reads stay graded (STAT)
        return ("canal and midline checks disagree",
                f"canal depth {depth:.1f} mm but the screw is {-pe:.1f} mm more lateral than its contralateral "
                f"pair at the pedicle isthmus and {max(-bd, 0.0):.1f} mm lateral of the medial wall expected "
                "from the vertebral body's width")
    if (depth < pol.grade_bounds[3] and pe is not None and le is not None and abs(pe) <= 1.5 and abs(le) <= 1.5
            and off >= pol.midline_min_offset_mm + 3.0 and bd is not None and bd < pol.grade_bounds[1]):
        # the screw is where its pair and the other levels' screws are: a C or D read would need every
        # screw of the construct breached alike (E reads stay graded: STAT)
        return ("canal and midline checks disagree",
                f"canal depth {depth:.1f} mm but the screw is symmetric with its pair (within {abs(pe):.1f} mm) and "
                f"in line with the other levels' screws (within {abs(le):.1f} mm), {off:.1f} mm from the midline")
    if (ax is not None and pe is not None and abs(pe) <= 2.0 and off >= pol.midline_min_offset_mm
            and depth - ax >= pol.midline_disagree_mm):
        return ("canal and midline checks disagree",
                f"canal depth {depth:.1f} mm but the screw axis at the pedicle isthmus gives {max(ax, 0.0):.1f} mm "
                f"(symmetric with its pair within {abs(pe):.1f} mm, {off:.1f} mm from the midline)")
    return None


def _lps(vol: Volume, zyx) -> list[float]:
    """Patient (LPS) coordinates (mm) of a volume point given as (z along the normal, row mm, column mm)."""
    normal = np.cross(vol.row_dir, vol.col_dir)
    p = (np.asarray(vol.origin, float) + zyx[2] * np.asarray(vol.row_dir, float)
         + zyx[1] * np.asarray(vol.col_dir, float) + (zyx[0] - float(vol.z[0])) * normal)
    return [round(float(v), 1) for v in p]


def _lateral(vol, lc, ks, ry, rx, cache: dict | None = None) -> float:
    """How far (mm) the screw leaves the vertebra's outline anterior of the canal (not canal intrusion). `cache`: a
    per-analysis dict; a slice's outline and its distance map depend only on the level's bone, which both canal
    hypotheses and every screw of the level share (session 25: 24 calls computed them 0.76 s on the bench phantom)."""
    dz, dy, dx = vol.spacing
    best = 0.0
    ant = -1 if vol.col_dir[1] > 0 else 1  # row direction towards anterior
    cy = lc.centre[0] if lc.centre is not None else None
    for k in np.unique(ks):
        if not 0 <= k < lc.bone.shape[0]:
            continue
        sel = ks == k
        qy, qx = ry[sel], rx[sel]
        ok = (qy >= 0) & (qy < lc.bone.shape[1]) & (qx >= 0) & (qx < lc.bone.shape[2])
        qy, qx = qy[ok], qx[ok]
        if cy is not None:
            front = (qy - cy) * ant > 0
            qy, qx = qy[front], qx[front]
        if not len(qy):
            continue
        key = ("envelope", id(lc.bone), int(k))
        got = cache.get(key) if cache is not None else None
        if got is None or got[0] is not lc.bone:
            env = cn.bone_envelope(lc.bone[k])  # metal in-painted from the slices above and below
            got = (lc.bone, env, cn.outside_map(env, (dy, dx)))
            if cache is not None:
                cache[key] = got
        _, env, d = got
        outside = ~env[qy, qx]
        if outside.any():
            best = max(best, float(d[qy[outside], qx[outside]].max()))
    return best

"""Self-check for spine_phantom6: renders 2 full + 2 small studies to /tmp/phantom6_check,
re-reads them with pydicom, checks tags and truth consistency, prints render times and saves
PNG previews (axial bone window through the most breached screw)."""
import glob
import json
import os
import sys
import time

import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine_phantom6 as sp  # noqa: E402

OUT = "/tmp/phantom6_check"
SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 6
KEYS = {"slice_thickness_mm", "pixel_mm", "laminectomy_levels", "screws"}
SKEYS = {"id", "level", "side", "entry_lps_mm", "tip_lps_mm", "diameter_mm", "breach_direction",
         "breach_depth_mm", "breach_depths_mm", "at_laminectomy_level"}
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
        print("  FAIL:", msg)


def save_png(path, img):
    try:
        from PIL import Image
        Image.fromarray(img).save(path)
    except ImportError:  # minimal PGM fallback
        with open(path.replace(".png", ".pgm"), "wb") as fh:
            fh.write(b"P5 %d %d 255\n" % (img.shape[1], img.shape[0]) + img.tobytes())


def run(params, tag):
    d = os.path.join(OUT, tag)
    for f in glob.glob(os.path.join(d, "*")):
        os.remove(f)
    t0 = time.time()
    truth = sp.write_study(params, d)
    dt = time.time() - t0
    files = sorted(glob.glob(os.path.join(d, "IM*.dcm")))
    print(f"[{tag}] levels={params['levels']} instr={params['instrumented']} lamx={params['laminectomy_levels']} "
          f"px={params['pixel_mm']:.3f} thick={params['slice_thickness_mm']} spacing={params['spacing_mm']} "
          f"storage={params['storage']} rle={params['rle']} hip={bool(params['hip'])} lead={bool(params['lead'])} "
          f"osteo={params['osteoporotic']} -> {len(files)} slices in {dt:.1f} s")
    # determinism of parameters
    again = sp.family(params["seed"], params["index"] + 2, small=params["small"])[params["index"]]
    check(again == params, "family() not reproducible")
    # --- truth file
    with open(os.path.join(d, "truth.json")) as fh:
        tj = json.load(fh)
    check(tj == truth, "truth.json differs from returned truth")
    check(set(tj) == KEYS, f"truth keys {set(tj)}")
    check(abs(tj["slice_thickness_mm"] - params["slice_thickness_mm"]) < 1e-9, "thickness")
    for s in tj["screws"]:
        check(set(s) == SKEYS, f"screw keys {set(s)}")
        bd = s["breach_depths_mm"]
        check(set(bd) == {"medial", "lateral", "inferior", "superior"}, "breach_depths keys")
        mx = max(bd.values())
        if mx <= 0:
            check(s["breach_direction"] == "none" and s["breach_depth_mm"] == 0, f"{s['id']} none/0")
        else:
            check(bd[s["breach_direction"]] == mx == s["breach_depth_mm"], f"{s['id']} main breach")
        check(s["at_laminectomy_level"] == (s["level"] in tj["laminectomy_levels"]), "lamx flag")
        check(s["side"] in ("left", "right") and s["id"] == s["level"] + s["side"][0].upper(), "id/side")
        e, t = np.array(s["entry_lps_mm"]), np.array(s["tip_lps_mm"])
        check(((t - e)[1] < 0), f"{s['id']} tip should be anterior of entry")
    # --- DICOM
    ds0 = pydicom.dcmread(files[0])
    uids = set()
    pos = []
    vol = []
    for f in files:
        ds = pydicom.dcmread(f)
        check(ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2", "SOP class")
        check(ds.Modality == "CT" and ds.PatientPosition == "FFS", "modality/position")
        check(ds.PhotometricInterpretation == "MONOCHROME2", "photometric")
        check([float(x) for x in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0], "IOP")
        check(ds.StudyInstanceUID == ds0.StudyInstanceUID and ds.SeriesInstanceUID == ds0.SeriesInstanceUID, "UIDs")
        check(ds.StudyInstanceUID.startswith("2.25.") and ds.SOPInstanceUID.startswith("2.25."), "UID root")
        check(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, "meta SOP UID")
        check(abs(float(ds.PixelSpacing[0]) - tj["pixel_mm"]) < 1e-5, "pixel spacing")
        check(abs(float(ds.SliceThickness) - tj["slice_thickness_mm"]) < 1e-3, "slice thickness")
        check(ds.Rows == ds.Columns == (160 if params["small"] else 512), "matrix")
        uids.add(ds.SOPInstanceUID)
        pos.append([float(x) for x in ds.ImagePositionPatient])
        vol.append(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    check(len(uids) == len(files), "unique SOP UIDs")
    check(len(files) <= (60 if params["small"] else 400), "slice count")
    ts = str(ds0.file_meta.TransferSyntaxUID)
    check(ts == ("1.2.840.10008.1.2.5" if params["rle"] else "1.2.840.10008.1.2.1"), f"transfer syntax {ts}")
    pos = np.array(pos)
    dz = np.abs(np.diff(pos[:, 2]))
    check(np.allclose(dz, float(ds0.SpacingBetweenSlices), atol=1e-3), "z spacing vs SpacingBetweenSlices")
    vol = np.array(vol)
    order = np.argsort(pos[:, 2])
    vol, zs = vol[order], pos[order, 2]
    px = float(ds0.PixelSpacing[0])
    x0, y0 = pos[0, 0], pos[0, 1]
    print(f"  HU range {vol.min():.0f}..{vol.max():.0f}; storage {ds0.BitsStored} bits, signed={ds0.PixelRepresentation}, "
          f"slope={ds0.RescaleSlope} icpt={ds0.RescaleIntercept}")
    if params["clip12"]:
        check(vol.max() <= 3071, "12-bit clip")
    # metal on every screw axis (sample points 30-80 % along the shank, inside the volume)
    for s in tj["screws"]:
        e, t = np.array(s["entry_lps_mm"]), np.array(s["tip_lps_mm"])
        vals = []
        for f in np.linspace(0.3, 0.8, 6):
            p = e + f * (t - e)
            if not (zs.min() <= p[2] <= zs.max()):
                continue
            k = int(np.argmin(np.abs(zs - p[2])))
            i, j = int(round((p[0] - x0) / px)), int(round((p[1] - y0) / px))
            if 0 <= i < vol.shape[2] and 0 <= j < vol.shape[1]:
                vals.append(vol[k, max(0, j - 1):j + 2, max(0, i - 1):i + 2].max())
        if vals:
            check(np.median(vals) > 2000, f"{s['id']} no metal along axis (median {np.median(vals):.0f})")
        g = sp.gr_grade(s["breach_depth_mm"])
        print(f"  {s['id']:5s} d={s['diameter_mm']:.1f} {s['breach_direction']:8s} {s['breach_depth_mm']:5.2f} mm "
              f"GR {g}  depths={s['breach_depths_mm']} lamx={s['at_laminectomy_level']}")
    # preview: axial bone window through the most breached screw, at its deepest-breach region
    if tj["screws"]:
        s = max(tj["screws"], key=lambda s: s["breach_depth_mm"])
        e, t = np.array(s["entry_lps_mm"]), np.array(s["tip_lps_mm"])
        p = e + 0.35 * (t - e)
        k = int(np.argmin(np.abs(zs - p[2])))
        img = np.clip((vol[k] - (400 - 900)) / 1800 * 255, 0, 255).astype(np.uint8)
        save_png(os.path.join(OUT, f"{tag}_{s['id']}_{s['breach_direction']}.png"), img)
    return dt


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in glob.glob(os.path.join(OUT, "*.png")) + glob.glob(os.path.join(OUT, "*.pgm")):
        os.remove(f)
    times = {}
    full = sp.family(SEED, 2)
    small = sp.family(SEED, 2, small=True)
    for k, p in enumerate(full):
        times[f"full{k}"] = run(p, f"full{k}")
    for k, p in enumerate(small):
        times[f"small{k}"] = run(p, f"small{k}")
    print("render+write times (s):", {k: round(v, 1) for k, v in times.items()})
    print("PROBLEMS:", len(problems))
    for p in problems:
        print("  ", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

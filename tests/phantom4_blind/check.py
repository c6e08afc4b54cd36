"""check.py -- writes 2 studies, re-reads them with pydicom, saves PNG previews (axial through a
breached screw, plus a sagittal/coronal reformat) into check_out/ next to this file."""
import glob
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine_phantom4 as sp

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_out")


def write_png(path, img8):
    img8 = np.ascontiguousarray(img8.astype(np.uint8))
    h, w = img8.shape[:2]
    color = img8.ndim == 3
    raw = b"".join(b"\x00" + img8[r].tobytes() for r in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    hdr = struct.pack(">IIBBBBB", w, h, 8, 2 if color else 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", hdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def window(hu, c=500, w=2500):
    return np.clip((hu - (c - w / 2)) / w * 255, 0, 255)


def load(d):
    fs = sorted(glob.glob(os.path.join(d, "*.dcm")))
    ds = [pydicom.dcmread(f) for f in fs]
    ds.sort(key=lambda x: float(x.ImagePositionPatient[2]))
    vol = np.stack([x.pixel_array.astype(np.float32) * float(x.RescaleSlope) + float(x.RescaleIntercept) for x in ds])
    return ds, vol


def main(seed=20261201, idxs=(0, 1), small=False):
    os.makedirs(OUT, exist_ok=True)
    for f in glob.glob(os.path.join(OUT, "*.png")):
        os.remove(f)
    fam = sp.family(seed, max(idxs) + 1, small=small)
    for i in idxs:
        p = fam[i]
        d = os.path.join(OUT, f"study{i:03d}{'_small' if small else ''}")
        t = time.time()
        truth = sp.write_study(p, d)
        dt = time.time() - t
        ds, vol = load(d)
        d0 = ds[0]
        assert d0.Modality == "CT" and d0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert len({x.StudyInstanceUID for x in ds}) == 1 and len({x.SeriesInstanceUID for x in ds}) == 1
        assert json.load(open(os.path.join(d, "truth.json")))["screws"] == json.loads(json.dumps(truth["screws"]))
        print(f"study {i}: {len(ds)} slices {d0.Rows}x{d0.Columns} px {d0.PixelSpacing[0]} thk {d0.SliceThickness} "
              f"HU [{vol.min():.0f},{vol.max():.0f}] time {dt:.1f}s")
        x0, y0 = float(d0.ImagePositionPatient[0]), float(d0.ImagePositionPatient[1])
        px = float(d0.PixelSpacing[0])
        zs = np.array([float(x.ImagePositionPatient[2]) for x in ds])
        scr = sorted(truth["screws"], key=lambda s: -s["breach_depth_mm"])
        for s in truth["screws"]:
            print("   ", s["id"], s["grade"], s["breach_direction"], s["breach_depth_mm"], "tip_in_canal" if s["tip_in_canal"] else "")
        for j, s in enumerate(scr[:2]):
            # axial slice through the mid-pedicle region (entry + 35 % of the way to the tip)
            e, tp = np.array(s["entry_lps_mm"]), np.array(s["tip_lps_mm"])
            q = e + 0.3 * (tp - e)
            k = int(np.argmin(np.abs(zs - q[2])))
            sl = window(vol[k])
            rgb = np.stack([sl] * 3, -1)
            for pt, col in ((e, (0, 255, 0)), (tp, (255, 0, 0))):
                c = int(round((pt[0] - x0) / px)); r = int(round((pt[1] - y0) / px))
                if 0 <= r < vol.shape[1] and 0 <= c < vol.shape[2]:
                    rgb[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = col
            write_png(os.path.join(OUT, f"s{i}_axial_{s['id']}_{s['grade']}_{s['breach_direction']}.png"), rgb)
            # zoomed crop (120 mm) around the vertebra, bone window and soft window side by side
            V = [v for v in p["vertebrae"] if v["level"] == s["level"]][0]
            cc = np.array(V["center"])
            c0 = int(round((cc[0] - 60 - x0) / px)); r0 = int(round((cc[1] - 40 - y0) / px))
            n = int(round(120 / px))
            r0, c0 = max(r0, 0), max(c0, 0)
            crop = rgb[r0:r0 + n, c0:c0 + n]
            soft = np.stack([window(vol[k], 40, 400)[r0:r0 + n, c0:c0 + n]] * 3, -1)
            both = np.concatenate([crop, soft], 1)
            zf = max(1, int(round(400 / max(n, 1))))
            both = np.repeat(np.repeat(both, zf, 0), zf, 1)
            write_png(os.path.join(OUT, f"s{i}_crop_{s['id']}_{s['grade']}_{s['breach_direction']}.png"), both)
        # sagittal through the middle column and coronal through canal
        Vm = p["vertebrae"][len(p["vertebrae"]) // 2]
        mid = int(round((Vm["center"][0] - x0) / px))
        sag = window(vol[::-1, :, mid])
        zsp = float(d0.SpacingBetweenSlices)
        rep = max(1, int(round(zsp / px)))
        write_png(os.path.join(OUT, f"s{i}_sagittal.png"), np.repeat(sag, rep, axis=0))
        cor = window(vol[::-1, int(round((Vm["center"][1] + Vm["body_d"] / 2 + 4 - y0) / px)), :])
        write_png(os.path.join(OUT, f"s{i}_coronal.png"), np.repeat(cor, rep, axis=0))


if __name__ == "__main__":
    small = "--small" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    idxs = tuple(int(a) for a in args) if args else (0, 1)
    main(idxs=idxs, small=small)

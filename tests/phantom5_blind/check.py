"""Write 2 studies of family 5, re-read them with pydicom, check truth.json and save PNG previews."""
import glob
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import spine_phantom5 as sp  # noqa: E402

KEYS = {"id", "level", "side", "entry_lps_mm", "tip_lps_mm", "diameter_mm", "breach_direction",
        "breach_depth_mm", "breach_depths_mm", "at_laminectomy_level"}


def write_png(path, img):
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    h, w, _ = img.shape
    raw = b''.join(b'\x00' + img[r].astype(np.uint8).tobytes() for r in range(h))

    def chunk(t, d):
        c = struct.pack('>I', len(d)) + t + d
        return c + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
    png += chunk(b'IDAT', zlib.compress(raw, 6)) + chunk(b'IEND', b'')
    open(path, 'wb').write(png)


def window(hu, c, w):
    return np.clip((hu - (c - w / 2)) / w * 255, 0, 255)


def load(d):
    fs = sorted(glob.glob(os.path.join(d, 'IM*.dcm')))
    dss = [pydicom.dcmread(f) for f in fs]
    dss.sort(key=lambda x: float(x.ImagePositionPatient[2]))
    vol = np.stack([x.pixel_array.astype(np.float32) * float(x.RescaleSlope) + float(x.RescaleIntercept) for x in dss])
    return dss, vol


def oblique(vol, zs, x0, y0, px, e, tp, size):
    """Vertical plane containing the screw axis (screw horizontal-ish), bone window."""
    from scipy import ndimage
    dxy = np.array([tp[0] - e[0], tp[1] - e[1]])
    dxy /= np.linalg.norm(dxy) + 1e-9
    mid = 0.5 * (e + tp)
    h = 0.4  # mm per output pixel
    s = (np.arange(size) - size / 2) * h
    S, Zs = np.meshgrid(s, -s)
    X = mid[0] + S * dxy[0]
    Y = mid[1] + S * dxy[1]
    Z = mid[2] + Zs
    ci = (Z - zs[0]) / (zs[1] - zs[0])
    out = ndimage.map_coordinates(vol, [ci, (Y - y0) / px, (X - x0) / px], order=1, cval=-1024)
    return window(out, 500, 2500)


def grade(d):
    return 'A' if d <= 0 else 'B' if d < 2 else 'C' if d < 4 else 'D' if d < 6 else 'E'


def check(params, outdir, tag):
    t0 = time.time()
    c0 = time.process_time()
    truth = sp.write_study(params, outdir)
    dt = time.time() - t0
    dc = time.process_time() - c0
    dss, vol = load(outdir)
    t2 = json.load(open(os.path.join(outdir, 'truth.json')))
    assert t2 == json.loads(json.dumps(truth)), 'truth.json mismatch'
    assert set(t2) == {"slice_thickness_mm", "pixel_mm", "laminectomy_levels", "screws"}
    d0 = dss[0]
    assert d0.SOPClassUID == '1.2.840.10008.5.1.4.1.1.2'
    assert d0.file_meta.TransferSyntaxUID == '1.2.840.10008.1.2.1'
    assert d0.Modality == 'CT' and d0.BodyPartExamined == 'LSPINE'
    assert d0.StudyDescription == 'CT LUMBAR SPINE POST OP'
    assert len({x.StudyInstanceUID for x in dss}) == 1 and len({x.SeriesInstanceUID for x in dss}) == 1
    assert len({x.SOPInstanceUID for x in dss}) == len(dss)
    assert abs(float(d0.PixelSpacing[0]) - t2['pixel_mm']) < 1e-6
    assert abs(float(d0.SliceThickness) - t2['slice_thickness_mm']) < 1e-6
    zs = np.array([float(x.ImagePositionPatient[2]) for x in dss])
    assert np.allclose(np.diff(zs), float(d0.SpacingBetweenSlices), atol=1e-3)
    px = float(d0.PixelSpacing[0])
    x0, y0 = float(d0.ImagePositionPatient[0]), float(d0.ImagePositionPatient[1])
    for s in t2['screws']:
        assert set(s) == KEYS, s.keys()
        bd = s['breach_depths_mm']
        if s['breach_direction'] == 'none':
            assert max(bd.values()) == 0 and s['breach_depth_mm'] == 0
        else:
            assert bd[s['breach_direction']] == s['breach_depth_mm'] == max(bd.values())
        # the screw's axis must be metal in the images (mid-shaft voxel)
        m = 0.5 * (np.array(s['entry_lps_mm']) + np.array(s['tip_lps_mm']))
        k = int(np.argmin(np.abs(zs - m[2])))
        c = int(round((m[0] - x0) / px))
        r = int(round((m[1] - y0) / px))
        if 0 <= r < vol.shape[1] and 0 <= c < vol.shape[2]:
            v = vol[k, r, c]
            assert v > 2000, ('no metal at screw axis', s['id'], v)
    print('%s: %d slices %dx%d px=%.3f thk=%.2f  hu[min,max]=[%.0f,%.0f]  render %.1fs wall, %.1fs cpu' % (
        tag, len(dss), d0.Rows, d0.Columns, px, float(d0.SliceThickness), vol.min(), vol.max(), dt, dc))
    for s in t2['screws']:
        print('   %-5s %-8s depth %.2f grade %s  depths %s lam=%s' % (
            s['id'], s['breach_direction'], s['breach_depth_mm'], grade(s['breach_depths_mm']['medial']),
            s['breach_depths_mm'], s['at_laminectomy_level']))
    # previews: axial through the most breached screw (pedicle part) + sagittal/coronal reformats
    scr = max(t2['screws'], key=lambda s: (s['breach_direction'] == os.environ.get('P5_DIR', 'x'), s['breach_depth_mm']))
    e, tp = np.array(scr['entry_lps_mm']), np.array(scr['tip_lps_mm'])
    panels = []
    mid = 0.5 * (e + tp)
    cc = int(np.clip(round((mid[0] - x0) / px), 128, vol.shape[2] - 128)) if vol.shape[2] > 256 else vol.shape[2] // 2
    rc = int(np.clip(round((mid[1] - y0) / px), 128, vol.shape[1] - 128)) if vol.shape[1] > 256 else vol.shape[1] // 2
    hw = min(128, vol.shape[1] // 2)
    crop = lambda a: a[rc - hw:rc + hw, cc - hw:cc + hw]
    for f in (0.25, 0.45):
        p = e + f * (tp - e)
        k = int(np.argmin(np.abs(zs - p[2])))
        panels.append(window(crop(vol[k]), 500, 2500))
    panels.append(window(crop(vol[k]), 40, 400))
    panels.append(window(vol[k][::vol.shape[1] // (2 * hw) or 1, ::vol.shape[1] // (2 * hw) or 1][:2 * hw, :2 * hw], 40, 400))
    sl = vol[:, rc - hw:rc + hw, int(np.clip(round((e[0] - x0) / px), 0, vol.shape[2] - 1))]
    zsc = float(d0.SpacingBetweenSlices) / px
    rs = np.clip((np.arange(int(vol.shape[0] * zsc)) / zsc).astype(int), 0, vol.shape[0] - 1)
    sag = window(sl[rs][::-1], 500, 2500)
    h = 2 * hw
    sag = sag[:h] if sag.shape[0] >= h else np.vstack([sag, np.zeros((h - sag.shape[0], sag.shape[1]))])
    panels.append(sag)
    panels.append(oblique(vol, zs, x0, y0, px, e, tp, 2 * hw))
    png = np.hstack(panels)
    out = os.path.join(HERE, 'preview_%s.png' % tag)
    write_png(out, png)
    print('   preview', out, 'screw', scr['id'], scr['breach_direction'], scr['breach_depth_mm'])
    return dt


if __name__ == '__main__':
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 20261205
    idx = [int(a) for a in sys.argv[2:]] or [0, 1]
    fam = sp.family(seed, max(idx) + 1)
    for i in idx:
        check(fam[i], os.path.join('/tmp', 'phantom5_check', 'study%d' % i), 's%d_%d' % (seed, i))
    small = sp.family(seed, 2, small=True)
    for i in range(2):
        check(small[i], os.path.join('/tmp', 'phantom5_check', 'small%d' % i), 'small%d' % i)
    print('OK')

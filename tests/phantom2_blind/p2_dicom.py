"""Quantisation and DICOM CT Image Storage datasets (deterministic UIDs)."""
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid, ExplicitVRLittleEndian, CTImageStorage

ROOT = "1.2.826.0.1.3680043.8.498."


def uid(p, *parts):
    return generate_uid(prefix=ROOT, entropy_srcs=["spine_phantom2", p["study_id"], str(p["seed"]),
                                                   str(bool(p.get("small")))] + [str(x) for x in parts])


def quantize(img, bits):
    """-> (stored array, intercept, bits stored, pixel representation)."""
    if bits == "12":      # classic 12-bit scale: metal saturates at 3071 HU
        return np.clip(np.rint(img + 1024), 0, 4095).astype(np.uint16), -1024, 12, 0
    if bits == "16s":     # signed 16-bit, extended HU
        return np.clip(np.rint(img), -3024, 32767).astype(np.int16), 0, 16, 1
    return np.clip(np.rint(img + 8192), 0, 65535).astype(np.uint16), -8192, 16, 0


def _ds(v):
    s = ("%.4f" % v).rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def datasets(img, info, p):
    sc = p["scan"]
    stored, icpt, bs, pr = quantize(img, sc["bits"])
    study, series, frame = uid(p, "study"), uid(p, "series"), uid(p, "frame")
    out = []
    for k in range(stored.shape[0]):
        sop = uid(p, "sop", k)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CTImageStorage
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = ROOT + "2026.11.21"
        fm.ImplementationVersionName = "SPINEPHANTOM2"
        ds = Dataset()
        ds.file_meta = fm
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20261121"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = "P2%07d" % (abs(hash_int(p["study_id"])) % 10 ** 7)
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC"
        ds.ManufacturerModelName = "spine_phantom2"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT LUMBAR SPINE"
        ds.SeriesDescription = "Spine %s %s mm" % (sc["kernel"], _ds(info["st"]))
        ds.PatientName = "PHANTOM2^" + p["study_id"]
        ds.PatientID = "PHANTOM2"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "SPINE"
        ds.ReasonForTheRequestedProcedure = "CT lumbar spine control"
        ds.SliceThickness = _ds(info["st"])
        ds.SpacingBetweenSlices = _ds(info["st"])
        ds.KVP = str(sc["kvp"])
        ds.ConvolutionKernel = sc["kernel"]
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        z = info["zc"][k]
        ds.ImagePositionPatient = [_ds(info["x0"]), _ds(info["y0"]), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(z)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = int(stored.shape[1])
        ds.PixelSpacing = [_ds(info["ps"]), _ds(info["ps"])]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bs, bs - 1, pr
        ds.WindowCenter, ds.WindowWidth = "400", "2000"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(icpt), "1", "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).astype(stored.dtype.newbyteorder("<")).tobytes()
        out.append(ds)
    return out


def hash_int(s):
    h = 0
    for ch in s:
        h = (h * 131 + ord(ch)) % (1 << 61)
    return h

"""Synthetic DICOM studies with realistic headers and request text.

Pixel data are small gradients: these studies exercise transport, storage,
headers and the clinical text, not image analysis (see tests/phantom.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

def file_with_dataset_bytes(path: Path, body: bytes, sop_uid: str | None = None) -> Path:
    """A Part 10 file (MR Image Storage meta, Explicit VR LE) around raw dataset bytes, well formed or not."""
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta)
        fh.write(body)
    return path


SOP_CLASS = {"MR": MRImageStorage, "CT": CTImageStorage, "DX": DigitalXRayImageStorageForPresentation}


@dataclass
class SeriesSpec:
    modality: str = "MR"
    description: str = "SAG T2 TSE"
    count: int = 3
    body_part: str = "LSPINE"
    rows: int = 64
    columns: int = 64


@dataclass
class StudySpec:
    patient_id: str = "PT0001"
    patient_name: str = "DUPONT^MARIE"
    birth_date: str = "19610412"
    sex: str = "F"
    issuer: str = "HOSP-A"
    accession: str = "ACC0001"
    study_date: str = "20261121"
    study_time: str = "093000"
    study_description: str = "IRM RACHIS LOMBAIRE"
    reason: str = ""
    history: str = ""
    requested_procedure: str = "MRI lumbar spine"
    request_comments: str = ""
    order_priority: str | None = None  # RequestedProcedurePriority (0040,1003)
    reporting_priority: str | None = None  # ReportingPriority (0040,1009)
    charset: str = "ISO_IR 192"
    study_uid: str = field(default_factory=generate_uid)
    series: list[SeriesSpec] = field(default_factory=lambda: [SeriesSpec()])
    omit_type2: bool = False  # leave out type-2 attributes, as some modalities do


def instance(spec: StudySpec, sspec: SeriesSpec, series_uid: str, series_number: int, number: int) -> Dataset:
    sop_class = SOP_CLASS[sspec.modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = spec.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = sspec.modality
    ds.StudyDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.SeriesDate = spec.study_date
    ds.ContentDate = spec.study_date
    ds.ContentTime = spec.study_time
    ds.PatientID = spec.patient_id
    ds.IssuerOfPatientID = spec.issuer
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = sspec.description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.BodyPartExamined = sspec.body_part
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "Hôpital de Test"
    if not spec.omit_type2:
        ds.PatientName = spec.patient_name
        ds.PatientBirthDate = spec.birth_date
        ds.PatientSex = spec.sex
        ds.AccessionNumber = spec.accession
        ds.ReferringPhysicianName = "MARTIN^PAUL"
        ds.StudyID = "1"
    if spec.reason:
        ds.ReasonForTheRequestedProcedure = spec.reason
    if spec.history:
        ds.AdditionalPatientHistory = spec.history
    if spec.request_comments:
        ds.ImagingServiceRequestComments = spec.request_comments
    if spec.reporting_priority:
        ds.ReportingPriority = spec.reporting_priority
    req = Dataset()
    req.RequestedProcedureID = spec.accession
    req.ScheduledProcedureStepID = spec.accession + "1"
    req.RequestedProcedureDescription = spec.requested_procedure
    if spec.reason:
        req.ReasonForTheRequestedProcedure = spec.reason
    if spec.order_priority:
        req.RequestedProcedurePriority = spec.order_priority
    ds.RequestAttributesSequence = Sequence([req])
    if spec.order_priority:
        ds.RequestedProcedurePriority = spec.order_priority

    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if sspec.modality == "CT" else ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = sspec.rows, sspec.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 3.0
    ds.ImagePositionPatient = [0.0, 0.0, float(number) * 3.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if sspec.modality == "CT":
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.KVP = 120
    pixels = (np.add.outer(np.arange(sspec.rows), np.arange(sspec.columns)) * 7 + number) % 4096
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_study(directory: Path, spec: StudySpec) -> list[Path]:
    """Write every instance of `spec` as a Part 10 file; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for sn, sspec in enumerate(spec.series, start=1):
        series_uid = generate_uid()
        for n in range(1, sspec.count + 1):
            ds = instance(spec, sspec, series_uid, sn, n)
            path = directory / f"{sspec.modality}{sn:02d}_{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def postop_three_series(**kw) -> StudySpec:
    """A postoperative lumbar MRI with three series, written the way clinicians write requests."""
    defaults = dict(
        reason="Arthrodèse L4-S1 J+1, anesthésie en selle. ?hématome",
        request_comments="Rétention urinaire au réveil, déficit L5 gauche.",
        history="Arthrodèse L4-S1 avec vis pédiculaires le 20/11/2026",
        requested_procedure="IRM rachis lombaire en urgence",
        series=[
            SeriesSpec("MR", "SAG T2 TSE", 4),
            SeriesSpec("MR", "SAG T1 TSE", 3),
            SeriesSpec("MR", "AX T2 TSE", 5),
        ],
    )
    defaults.update(kw)
    return StudySpec(**defaults)

"""Sinks deliver a worklist entry to one destination (PACS, worklist manager, RIS, web hook).

Each sink module exposes ``push(entry: dict, destination, config) -> str`` which
delivers the entry once and returns a short human-readable receipt, or raises
`SinkError`. Delivery is idempotent at the destination: identifiers are
deterministic per study, so a retry or a re-triage replaces rather than duplicates.

The worklist entry (a JSON-able dict, built by `workers.pipeline`):

    study_instance_uid, accession_number, patient_id, issuer_of_patient_id,
    priority ("STAT"|"URGENT"|"ROUTINE"), order_priority (same or None),
    flags: [{code, status, priority, rule, rules, evidence: [{source, rule, text,
             start, end, assertion, measurement, note}]}],
    postop_interval_hours, course, priors: [...], recommendations: [str],
    explain: [str], rulebook_version, modalities: [str], study_date, study_time,
    study_description, series_count, instance_count, first_received,
    last_received, triaged_at (epoch seconds), revision (1, 2, ... per re-triage),
    analysers: [AnalysisResult.to_dict()],
    series: [{series_instance_uid, modality, description, sop_class_uid,
              instances: [sop_instance_uid, ...]}],
    headers: {patient/study module attributes for derived objects: PatientName,
              PatientID, IssuerOfPatientID, PatientBirthDate, PatientSex,
              StudyDate, StudyTime, StudyID, AccessionNumber,
              ReferringPhysicianName, StudyDescription, SpecificCharacterSet}
"""


class SinkError(Exception):
    """A delivery that did not happen. `retryable` False means retrying cannot help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable

"""UPS sink: a worklist entry becomes a DICOM Unified Procedure Step workitem.

`push` sends an N-CREATE (UPS Push SOP Class) to a worklist manager. The
workitem UID is derived from the Study Instance UID, so every push of a study
addresses the same workitem. When it already exists (0x0111 Duplicate SOP
Instance) the sink reads its priority with N-GET and raises it with N-SET
(UPS Pull SOP Class) only if ours is higher: a workitem's priority is never
lowered and a study never gets a second workitem.

Optional config attributes (read with getattr, all have defaults):
``ups_priority_map`` {our priority: HIGH|MEDIUM|LOW}, ``ups_turnaround``
{our priority: seconds}, ``ups_timeout`` (s), ``ups_retrieve_aet``,
``ups_worklist_label``, ``ups_step_label``.
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import UnifiedProcedureStepPull, UnifiedProcedureStepPush
from pynetdicom.status import code_to_category

from core.config import ConfigError, DicomNode
from core.entry import EntryError, WorklistEntry
from rules.model import Priority
from workers.association import AssociationFailed, associate
from workers.sinks import SinkError

#: Our priority -> Scheduled Procedure Step Priority (0074,1200).
PRIORITY_MAP = {"STAT": "HIGH", "URGENT": "HIGH", "ROUTINE": "MEDIUM"}
#: UPS priorities, lowest first.
UPS_RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2}
#: Target turnaround (seconds) for Expected Completion DateTime.
TURNAROUND = {"STAT": 30 * 60, "URGENT": 4 * 3600, "ROUTINE": 24 * 3600}
TIMEOUT = 10.0
WORKLIST_LABEL = "PACS-TRIAGE"
STEP_LABEL = "Postoperative spine read"
#: Scheduled Workitem Code Sequence item (DCM 110005 "Interpretation").
WORKITEM_CODE = ("110005", "DCM", "Interpretation")

DUPLICATE_SOP_INSTANCE = 0x0111
UID_SALT = "pacs-triage-ups"


def workitem_uid(study_uid: str) -> str:
    """The UPS SOP Instance UID of a study: the same on every push."""
    return generate_uid(entropy_srcs=[study_uid, UID_SALT])


def ups_priority(priority: str, config=None) -> str:
    """Map STAT/URGENT/ROUTINE to HIGH/MEDIUM/LOW with the configured map."""
    mapping = dict(PRIORITY_MAP)
    mapping.update({k.upper(): v.upper() for k, v in (getattr(config, "ups_priority_map", None) or {}).items()})
    value = mapping[Priority.parse(priority).name]
    if value not in UPS_RANK:
        raise SinkError(f"ups: priority map gives {value!r}, not HIGH, MEDIUM or LOW", retryable=False)
    return value


def push(entry: WorklistEntry | dict, destination, config, delivered_priority: str | None = None) -> str:
    """Create the study's workitem, or raise its priority; return a receipt.

    `delivered_priority` is our priority as last delivered to this destination (STAT and URGENT
    are both HIGH: an URGENT -> STAT escalation still updates the workitem). A caller may also
    pass it as the key ``delivered_priority`` of the entry's JSON form."""
    try:
        node = destination if isinstance(destination, DicomNode) else DicomNode.parse(str(destination))
    except ConfigError as exc:
        raise SinkError(f"ups: {exc}", retryable=False) from None
    if isinstance(entry, dict) and "delivered_priority" in entry:
        entry = dict(entry)
        delivered = entry.pop("delivered_priority")
        delivered_priority = delivered_priority if delivered_priority is not None else delivered
    try:
        entry = WorklistEntry.coerce(entry)
    except EntryError as exc:
        raise SinkError(f"ups {node}: {exc}", retryable=False) from None
    uid = workitem_uid(entry.study_instance_uid)
    ours = ups_priority(entry.priority, config)
    workitem = build_workitem(entry, config)
    with _association(node, config) as assoc:
        try:
            status = _status(assoc.send_n_create(workitem, UnifiedProcedureStepPush, uid)[0], "N-CREATE")
            if code_to_category(status) in ("Success", "Warning"):
                return f"ups {node}: workitem {uid} created {ours}"
            if status != DUPLICATE_SOP_INSTANCE:
                raise SinkError(f"ups {node}: N-CREATE failed with status 0x{status:04X}",
                                retryable=status in (0x0110, 0x0213))
            return _raise_priority(assoc, node, uid, ours, workitem,
                                   ours_triage=Priority.parse(entry.priority),
                                   delivered=delivered_priority)
        except (RuntimeError, OSError) as exc:  # association lost between requests
            raise SinkError(f"ups {node}: {exc.__class__.__name__}") from None


def _raise_priority(assoc, node, uid: str, ours: str, workitem: Dataset,
                    ours_triage: Priority | None = None, delivered: str | None = None) -> str:
    """The workitem exists: N-SET a higher priority, never a lower one.

    Compared on *our* priority (STAT > URGENT > ROUTINE) as last delivered, not only on
    the UPS value: STAT and URGENT both map to HIGH, and an URGENT -> STAT escalation must
    still bring the expected completion time forward and update the comments."""
    tags = [0x00741200, 0x00741000, 0x00404011]  # priority, state, expected completion
    status, current = assoc.send_n_get(tags, UnifiedProcedureStepPush, uid)
    status = _status(status, "N-GET")
    if code_to_category(status) not in ("Success", "Warning") or current is None:
        raise SinkError(f"ups {node}: N-GET of workitem {uid} failed with status 0x{status:04X}")
    theirs = str(current.get("ScheduledProcedureStepPriority", "") or "").upper()
    state = str(current.get("ProcedureStepState", "") or "").upper()
    escalated = (ours_triage is not None and delivered is not None
                 and ours_triage > Priority.parse(delivered))
    if UPS_RANK.get(ours, 0) < UPS_RANK.get(theirs, -1) or (
            UPS_RANK.get(ours, 0) == UPS_RANK.get(theirs, -1) and not escalated):
        return f"ups {node}: workitem {uid} exists at {theirs}; kept (ours {ours})"
    if state != "SCHEDULED":
        # IN PROGRESS needs the performer's Transaction UID; COMPLETED/CANCELED are final.
        return f"ups {node}: workitem {uid} is {state or 'in an unknown state'}; priority left at {theirs}"
    if not any(cx.abstract_syntax == UnifiedProcedureStepPull for cx in assoc.accepted_contexts):
        raise SinkError(f"ups {node}: UPS Pull (N-SET) not accepted; cannot raise workitem {uid}",
                        retryable=False)
    change = Dataset()
    change.ScheduledProcedureStepPriority = ours
    change.CommentsOnTheScheduledProcedureStep = workitem.CommentsOnTheScheduledProcedureStep
    expected = str(current.get("ExpectedCompletionDateTime", "") or "")
    if not expected or workitem.ExpectedCompletionDateTime < expected:  # same UTC format: earlier only
        change.ExpectedCompletionDateTime = workitem.ExpectedCompletionDateTime
    status = _status(assoc.send_n_set(change, UnifiedProcedureStepPush, uid, meta_uid=UnifiedProcedureStepPull)[0],
                     "N-SET")
    if code_to_category(status) not in ("Success", "Warning"):
        raise SinkError(f"ups {node}: N-SET of workitem {uid} failed with status 0x{status:04X}",
                        retryable=status in (0x0110, 0x0213))
    if theirs == ours:
        return f"ups {node}: workitem {uid} updated {delivered} -> {ours_triage.name} (stays {ours})"
    return f"ups {node}: workitem {uid} raised {theirs} -> {ours}"


def build_workitem(entry: WorklistEntry | dict, config=None) -> Dataset:
    """The N-CREATE attribute list of a worklist entry (PS3.4 Table CC.2.5-3)."""
    entry = WorklistEntry.coerce(entry)
    headers = entry.headers or {}
    priority = Priority.parse(entry.priority).name
    ds = Dataset()
    if headers.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = headers["SpecificCharacterSet"]
    ds.TransactionUID = ""
    # Scheduled Procedure Information
    ds.ScheduledProcedureStepPriority = ups_priority(priority, config)
    ds.ProcedureStepLabel = getattr(config, "ups_step_label", None) or STEP_LABEL
    ds.WorklistLabel = getattr(config, "ups_worklist_label", None) or WORKLIST_LABEL
    start = _when(entry.triaged_at)
    arrived = _when(entry.first_received or entry.triaged_at)
    turnaround = dict(TURNAROUND)
    turnaround.update({k.upper(): v for k, v in (getattr(config, "ups_turnaround", None) or {}).items()})
    ds.ScheduledProcedureStepStartDateTime = _dt(start)
    ds.ExpectedCompletionDateTime = _dt(arrived + dt.timedelta(seconds=float(turnaround[priority])))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = WORKITEM_CODE
    ds.ScheduledWorkitemCodeSequence = [code]
    ds.ScheduledStationNameCodeSequence = []
    ds.ScheduledStationClassCodeSequence = []
    ds.ScheduledStationGeographicLocationCodeSequence = []
    ds.ScheduledProcessingParametersSequence = []
    ds.CommentsOnTheScheduledProcedureStep = comments(entry)[:10240]
    ds.InputReadinessState = "READY"
    ds.InputInformationSequence = _inputs(entry, config)
    ds.StudyInstanceUID = entry.study_instance_uid
    # Relationship: patient and request
    ds.PatientName = headers.get("PatientName") or ""
    ds.PatientID = headers.get("PatientID") or entry.patient_id or ""
    issuer = headers.get("IssuerOfPatientID") or entry.issuer_of_patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = headers.get("PatientBirthDate") or ""
    ds.PatientSex = headers.get("PatientSex") or ""
    ds.AdmissionID = ""
    ds.IssuerOfAdmissionIDSequence = []
    ds.AdmittingDiagnosesDescription = ""
    ds.AdmittingDiagnosesCodeSequence = []
    request = Dataset()
    request.StudyInstanceUID = entry.study_instance_uid
    request.AccessionNumber = entry.accession_number or headers.get("AccessionNumber") or ""
    request.IssuerOfAccessionNumberSequence = []
    request.RequestedProcedureID = headers.get("StudyID") or ""
    request.RequestedProcedureDescription = (entry.study_description or headers.get("StudyDescription") or "")[:64]
    request.RequestedProcedureCodeSequence = []
    ds.ReferencedRequestSequence = [request]
    # Progress and performed procedure: empty at creation
    ds.ProcedureStepState = "SCHEDULED"
    ds.ProcedureStepProgressInformationSequence = []
    ds.UnifiedProcedureStepPerformedProcedureSequence = []
    return ds


def comments(entry: WorklistEntry | dict) -> str:
    """Priority and flags (codes, rule ids, all suspected); no patient data."""
    entry = WorklistEntry.coerce(entry)
    revision = 1 if entry.revision is None else entry.revision
    parts = [f"pacs-triage suggests {Priority.parse(entry.priority).name} (revision {revision})."]
    for flag in entry.flags:
        rules = ",".join(flag.get("rules") or [flag.get("rule") or "?"])
        parts.append(f"Suspected {flag['code']} ({flag.get('priority', '?')}; rules {rules}).")
    if not entry.flags:
        parts.append("No suspected flag.")
    from workers.analysers import incomplete_notes

    parts.extend(f"{line}." for line in incomplete_notes(entry))  # not assessed is never silent
    return " ".join(parts)


def _inputs(entry: WorklistEntry, config) -> list[Dataset]:
    """Input Information Sequence: one item per series with its instances."""
    aet = getattr(config, "ups_retrieve_aet", None)
    if not aet:
        pacs = getattr(config, "pacs", None) or []
        aet = pacs[0].aet if pacs else getattr(config, "ae_title", "PACSTRIAGE")
    items = []
    for series in entry.series:
        item = Dataset()
        item.TypeOfInstances = "DICOM"
        item.StudyInstanceUID = entry.study_instance_uid
        item.SeriesInstanceUID = series["series_instance_uid"]
        refs = []
        for sop_uid in series.get("instances") or []:
            ref = Dataset()
            ref.ReferencedSOPClassUID = series.get("sop_class_uid") or ""
            ref.ReferencedSOPInstanceUID = sop_uid
            refs.append(ref)
        item.ReferencedSOPSequence = refs
        retrieve = Dataset()
        retrieve.RetrieveAETitle = aet
        item.DICOMRetrievalSequence = [retrieve]
        items.append(item)
    return items


def _when(epoch) -> dt.datetime:
    if epoch is None:
        return dt.datetime.now(dt.timezone.utc)
    return dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc)


def _dt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


def _status(status: Dataset, what: str) -> int:
    """The DIMSE status, or a retryable SinkError when there was no answer."""
    value = getattr(status, "Status", None)
    if value is None:
        raise SinkError(f"ups: no {what} response (timeout, abort or invalid response)")
    return int(value)


class _association:
    """An association proposing UPS Push and UPS Pull, released on exit."""

    def __init__(self, node: DicomNode, config):
        self.node, self.config = node, config

    def __enter__(self):
        try:
            self.assoc = associate(self.node, calling_aet=getattr(self.config, "ae_title", None) or "PACSTRIAGE",
                                   timeout=float(getattr(self.config, "ups_timeout", None) or TIMEOUT),
                                   contexts=[UnifiedProcedureStepPush, UnifiedProcedureStepPull])
        except AssociationFailed as exc:
            raise SinkError(f"ups: {exc}", retryable=not exc.permanent) from None
        if not any(cx.abstract_syntax == UnifiedProcedureStepPush for cx in self.assoc.accepted_contexts):
            self.assoc.abort()
            raise SinkError(f"ups {self.node}: UPS Push not accepted", retryable=False)
        return self.assoc

    def __exit__(self, *exc):
        if self.assoc.is_established:
            self.assoc.release()
        return False


def workitem_states(node, study_uids: list[str], config=None) -> dict[str, str]:
    """Procedure Step State (SCHEDULED, IN PROGRESS, COMPLETED, CANCELED) of each study's workitem,
    by N-GET over one association; a workitem the provider does not know is left out."""
    if isinstance(node, str):
        node = DicomNode.parse(node)
    states: dict[str, str] = {}
    if not study_uids:
        return states
    with _association(node, config) as assoc:
        for study_uid in study_uids:
            try:
                status, current = assoc.send_n_get([0x00741000], UnifiedProcedureStepPush, workitem_uid(study_uid))
            except (RuntimeError, OSError) as exc:
                raise SinkError(f"ups {node}: {exc.__class__.__name__}") from None
            value = getattr(status, "Status", None)
            if value is None:
                raise SinkError(f"ups {node}: no N-GET response")
            if code_to_category(int(value)) in ("Success", "Warning") and current is not None:
                state = str(current.get("ProcedureStepState", "") or "").upper()
                if state:
                    states[study_uid] = state
    return states

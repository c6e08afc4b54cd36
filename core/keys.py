"""Every Redis key pacs-triage writes, in one place. Key names carry UIDs only, never patient data.

All keys live under ``pt:`` and are shared by every listener and worker on one Redis
(dramatiq's own keys live under its namespace ``pacs-triage:``):

==================================  ======================================================
``pt:study:<uid>``                  hash: first_received, last_received, instances, bytes
``pt:study:<uid>:instances``        hash SOPInstanceUID -> header summary JSON
``pt:pending``                      sorted set StudyUID -> last instance time (not yet stable)
``pt:queued``                       sorted set StudyUID -> time its triage was queued (not finished)
``pt:entry:<uid>``                  the worklist entry JSON (workers.worklist)
``pt:lastrev:<uid>``                the last revision of a removed entry (revisions continue)
``pt:worklist``                     sorted set StudyUID -> priority/arrival score
``pt:delivered``                    hash "kind|destination|study" -> delivered revision
``pt:delivered_priority``           hash "kind|destination|study" -> our priority last delivered
``pt:deadletters``                  hash "kind|destination|study" -> dead letter JSON
``pt:lock:stable:<uid>``            lock: one listener queues a stable study
``pt:lock:triage:<uid>``            lock (renewed): one worker triages a study at a time
``pt:lock:deliver:<kind>|<dest>|<uid>``  lock: deliveries to one destination in revision order
``pt:lock:reconcile``               lock: one listener at a time requeues overdue studies
``pt:triage:starts:<uid>``          counter: triages started (a poison study is quarantined)
``pt:priors_refresh:<uid>``         marker: one refresh chain per study while priors are unavailable
``pt:order:<digest>``               RIS order JSON (core.orders) by SHA-256 digest of the accession number
``pt:orders:patient:<digest>``      set of accession numbers by digest of patient identifier + issuer
``pt:accession:<digest>``           the study triaged under an accession number (digest)
``pt:closed``                       sorted set StudyUID -> report signed time (closed entries)
``pt:lock:ups_poll``                lock: one process at a time polls UPS workitem states
``pt:prepare:mark:<uid>``           the last instance time a triage preparation was queued for (short TTL)
``pt:prepared:<uid>``               a prepared triage (JSON: input digests and the entry), short TTL; used
                                    only if the study's inputs are unchanged when it is stable
``pt:lock:prepare:<uid>``           lock (renewed): a worker is preparing the study's triage
``pt:prepare:starts:<uid>``         marker: a preparation started and has not finished (not tried again)
==================================  ======================================================
"""

from __future__ import annotations

PREFIX = "pt:"
PENDING = PREFIX + "pending"
QUEUED = PREFIX + "queued"
WORKLIST = PREFIX + "worklist"
DELIVERED = PREFIX + "delivered"
DEAD_LETTERS = PREFIX + "deadletters"
DELIVERED_PRIORITY = PREFIX + "delivered_priority"


def study(uid: str) -> str:
    return f"{PREFIX}study:{uid}"


def instances(uid: str) -> str:
    return f"{PREFIX}study:{uid}:instances"


def entry(uid: str) -> str:
    return f"{PREFIX}entry:{uid}"


def stable_lock(uid: str) -> str:
    return f"{PREFIX}lock:stable:{uid}"


def triage_lock(uid: str) -> str:
    return f"{PREFIX}lock:triage:{uid}"


def deliver_lock(kind: str, destination: str, uid: str) -> str:
    return f"{PREFIX}lock:deliver:{kind}|{destination}|{uid}"


RECONCILE_LOCK = PREFIX + "lock:reconcile"


def prepare_mark(uid: str) -> str:
    return f"{PREFIX}prepare:mark:{uid}"


def prepare_starts(uid: str) -> str:
    return f"{PREFIX}prepare:starts:{uid}"


def prepared(uid: str) -> str:
    return f"{PREFIX}prepared:{uid}"


def prepare_lock(uid: str) -> str:
    return f"{PREFIX}lock:prepare:{uid}"


def triage_starts(uid: str) -> str:
    return f"{PREFIX}triage:starts:{uid}"


def priors_refresh(uid: str) -> str:
    return f"{PREFIX}priors_refresh:{uid}"


def last_revision(uid: str) -> str:
    return f"{PREFIX}lastrev:{uid}"


def order(accession_digest: str) -> str:
    """The RIS order (core.orders.Order JSON) of an accession number (its digest)."""
    return f"{PREFIX}order:{accession_digest}"


def patient_orders(patient_digest: str) -> str:
    """Set of the accession numbers ordered for one patient identifier + issuer (their digest)."""
    return f"{PREFIX}orders:patient:{patient_digest}"


def accession_study(accession_digest: str) -> str:
    """The Study Instance UID triaged under an accession number (its digest)."""
    return f"{PREFIX}accession:{accession_digest}"


#: sorted set StudyUID -> time its report was signed (entries closed, off the active worklist)
CLOSED = PREFIX + "closed"
UPS_POLL_LOCK = PREFIX + "lock:ups_poll"

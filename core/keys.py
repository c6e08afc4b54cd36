"""Every Redis key pacs-triage writes, in one place. Key names carry UIDs only, never patient data.

All keys live under ``pt:`` and are shared by every listener and worker on one Redis
(dramatiq's own keys live under its namespace ``pacs-triage:``):

==================================  ======================================================
``pt:study:<uid>``                  hash: first_received, last_received, instances, bytes
``pt:study:<uid>:instances``        hash SOPInstanceUID -> header summary JSON
``pt:pending``                      sorted set StudyUID -> last instance time (not yet stable)
``pt:entry:<uid>``                  the worklist entry JSON (workers.worklist)
``pt:worklist``                     sorted set StudyUID -> priority/arrival score
``pt:delivered``                    hash "kind|destination|study" -> delivered revision
``pt:deadletters``                  hash "kind|destination|study" -> dead letter JSON
``pt:lock:stable:<uid>``            lock: one listener queues a stable study
``pt:lock:triage:<uid>``            lock: one worker triages a study at a time
==================================  ======================================================
"""

from __future__ import annotations

PREFIX = "pt:"
PENDING = PREFIX + "pending"
WORKLIST = PREFIX + "worklist"
DELIVERED = PREFIX + "delivered"
DEAD_LETTERS = PREFIX + "deadletters"


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

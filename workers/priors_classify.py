"""Which priors matter for postoperative spine triage, and what each is for.

Pure functions over plain dicts (one dict per prior study as returned by the
C-FIND in `workers.priors_query`): spine region, intraoperative marking and roles
(domain guide sections 2 and 5). The surgery estimate they feed is `rules.timing.infer_surgery`.
"""

from __future__ import annotations

import re
from datetime import datetime

from core.dicom_time import parse_datetime  # noqa: F401  (re-exported for the priors modules)
from rules.text import fold
from rules.timing import SurgeryEstimate

#: BodyPartExamined defined terms (CID 4031) and SNOMED codes per spine region.
BODY_PARTS = {
    "lumbar": {"LSPINE", "LSSPINE", "LUMBARSPINE", "LUMBAR", "SSPINE", "SACRUM", "COCCYX",
               "122496007", "54735007", "64688005"},
    "thoracic": {"TSPINE", "TLSPINE", "THORACICSPINE", "DORSALSPINE", "122495006"},
    "cervical": {"CSPINE", "CTSPINE", "CERVICALSPINE", "122494005"},
    "spine": {"SPINE", "421060004"},
    "whole": {"WHOLESPINE", "ENTIRESPINE", "FULLSPINE"},
}
#: Multi-region body parts add the second region.
EXTRA_REGION = {"TLSPINE": "lumbar", "CTSPINE": "thoracic"}

#: Description patterns (accents and case removed first), English and French.
TEXT_REGIONS = {
    "lumbar": r"\b(lomb\w*|lumb\w*|l-?spine|lombo-?sacr\w*|lumbo-?sacr\w*|sacr(um|e|ee)|coccy\w*"
              r"|l[1-5](-l?[1-5]|-s1)?)\b",
    "thoracic": r"\b(thoracic spine|t-?spine|rachis dorsal\w*|dorsal spine|dorso-?lomb\w*|thoraco-?lumb\w*"
                r"|rachis thorac\w*|[td]\d{1,2}-[td]?\d{1,2})\b",
    "cervical": r"\b(cervical spine|c-?spine|rachis cervical|cervicale?s?|c[1-7]-c?[1-7])\b",
    "whole": r"\b(panrachis|telerachis|whole spine|full spine|entire spine|rachis entier|colonne entiere|eos)\b",
}
#: Spine named without a region ("spine" below matches any region).
GENERIC_SPINE = re.compile(
    r"\b(rachis|spine|spinal|colonne|vertebr\w*|myelo\w*|saccoradiculo\w*|arthrodese|discectom\w*"
    r"|laminectom\w*|herniectom\w*)\b"
)
#: Recognised non-spine regions: a study only named this way is unrelated.
OTHER_REGIONS = re.compile(
    r"\b(head|brain|skull|crane|cerebr\w*|encephal\w*|knee|genou|hip|hanche|shoulder|epaule|ankle|cheville"
    r"|wrist|poignet|hand|main|foot|pied|chest|thorax|poumon\w*|lung\w*|abdom\w*|pelvis|bassin|heart|coeur"
    r"|cardia\w*|coronar\w*|sinus|orbit\w*|breast|sein|mammo\w*)\b"
)
OTHER_BODY_PARTS = {"HEAD", "BRAIN", "SKULL", "KNEE", "HIP", "SHOULDER", "ANKLE", "WRIST", "HAND", "FOOT",
                    "CHEST", "ABDOMEN", "PELVIS", "HEART", "BREAST", "NECK", "EXTREMITY", "ELBOW"}

FLUOROSCOPY = {"XA", "RF"}
RADIOGRAPHY = {"CR", "DX"}
#: Per-/intra-operative markers in study/series descriptions and protocol names.
INTRAOP = re.compile(
    r"(\bper-?op\w*|\bintra-?op\w*|\bscopie\b|fluoroscop\w*|\bbloc\b|\bo-?arm\b|\bc-?arm\b|amplificateur"
    r"|salle d.?op\w*|operating room|navigation)"
)
#: Fluoroscopy-guided procedures and diagnostic fluoroscopy that are not the operation.
NOT_SURGERY = re.compile(r"(myelo\w*|saccoradiculo\w*|infiltration\w*|discograph\w*|bloc facett\w*"
                         r"|facet block|epidural(e)? inject\w*|vertebroplast\w*|cyphoplast\w*|kyphoplast\w*)")

ROLE_ORDER = ("intraoperative", "preoperative", "postoperative_reference", "recent_comparable", "other_spine")


def family(modality: str) -> str:
    """Modality family for 'same modality' comparisons: CR and DX are both radiographs."""
    return "XR" if modality in RADIOGRAPHY else modality


def regions(body_parts: list[str], texts: list[str]) -> set[str] | None:
    """Spine regions named by body parts and descriptions; None if the study names only other regions."""
    found: set[str] = set()
    other = False
    for bp in body_parts:
        key = re.sub(r"[\s_\-]", "", str(bp or "").upper())
        if not key:
            continue
        for region, terms in BODY_PARTS.items():
            if key in terms:
                found.add(region)
                if key in EXTRA_REGION:
                    found.add(EXTRA_REGION[key])
        if key in OTHER_BODY_PARTS:
            other = True
    for t in texts:
        t = fold(t)
        for region, pattern in TEXT_REGIONS.items():
            if re.search(pattern, t):
                found.add(region)
        if OTHER_REGIONS.search(t):
            other = True
        if GENERIC_SPINE.search(t):
            found.add("spine")
    if len(found) > 1:
        found.discard("spine")
    if found:
        return found
    return None if other else set()


def same_region(a: set[str], b: set[str]) -> bool:
    """Regions overlap; an unspecified spine, a whole spine or an unknown region matches any."""
    if not a or not b or {"spine", "whole"} & (a | b):
        return True
    return bool(a & b)


def is_intraoperative(prior: dict) -> bool:
    """Fluoroscopy (XA/RF) of the spine, or any study marked per-/intra-operative."""
    text = fold(" ".join(prior.get("_texts", [])))
    if NOT_SURGERY.search(text):
        return False
    if INTRAOP.search(text):
        return True
    return bool(set(prior.get("modalities") or []) & FLUOROSCOPY) and bool(prior.get("_regions"))


def assign_roles(priors: list[dict], surgery: SurgeryEstimate | None, current_dt: datetime | None,
                 current_families: set[str], current_regions: set[str]) -> None:
    """Set `roles` and `role` on each relevant prior (sorted by date, oldest first)."""
    s_dt = datetime.fromisoformat(surgery.datetime) if surgery else None
    exact = bool(surgery and surgery.has_time)

    def before(p: dict) -> bool:
        if exact and p.get("study_time"):
            return p["_dt"] < s_dt
        return p["_dt"].date() < s_dt.date()

    for p in priors:
        p["roles"] = ["intraoperative"] if p["_intraop"] else []
    dated = [p for p in priors if p["_dt"] and not p["_intraop"]]
    if s_dt:
        pre = [p for p in dated if before(p)]
        post = [p for p in dated if not before(p)]
        for fam in {family(m) for p in dated for m in p["modalities"]}:
            same = [p for p in pre if fam in {family(m) for m in p["modalities"]}]
            if same:
                _add(same[-1], "preoperative")
            same = [p for p in post if fam in {family(m) for m in p["modalities"]}]
            if same:
                _add(same[0], "postoperative_reference")
    comparable = [p for p in dated if current_families & {family(m) for m in p["modalities"]}
                  and same_region(p["_regions"], current_regions)
                  and (current_dt is None or p["_dt"] < current_dt)]
    if comparable:
        _add(comparable[-1], "recent_comparable")
    for p in priors:
        p["roles"].sort(key=ROLE_ORDER.index)
        p["role"] = p["roles"][0] if p["roles"] else "other_spine"


def _add(prior: dict, role: str) -> None:
    if role not in prior["roles"]:
        prior["roles"].append(role)

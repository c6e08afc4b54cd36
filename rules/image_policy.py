"""The image-finding policy (rules/images/*.yaml): clinical thresholds and priorities of the image analysers.

Kept apart from the text rulebook (rules/*.yaml, rules/loader.py): its own small
loader, re-read when the file changes, validated on load (a bad file raises
PolicyError with the file name and the key).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from rules.model import FLAG_CODES, Priority

log = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parent / "images" / "ct_hardware.yaml"
GRADES = ("B", "C", "D", "E")


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class CTPolicy:
    metal_hu: float
    bone_hu: float
    grade_bounds: tuple[float, float, float, float]  # lower bounds of B, C, D, E (mm)
    grade_priority: dict  # grade -> Priority
    loosening_priority: Priority
    infection_priority: Priority
    halo_flag_mm: float
    thin_slice_mm: float
    blooming_margin_mm: float
    slab_margin_mm: float
    agreement_mm: float
    volume_budget_mb: float
    escalate_days: float
    escalate_concepts: tuple[str, ...]
    escalate_priority: Priority
    escalate_flag: str
    source: str
    version: str
    side_ratio_min: float = 0.7  # canal half on the screw's side vs the contralateral half (area)
    canal_content_max_hu: float | None = 50.0  # second canal hypothesis: regions of CSF density only (None: off)
    hypotheses_disagree_na: bool = True  # first canal D/E unconfirmed, second A/B: not assessed instead of D/E
    level_ratio_min: float = 0.6  # canal area vs the median of the other levels
    expected_wall_flag_mm: float = 4.0  # metal beyond the expected (mirrored) medial wall: never A/B
    clear_mm: float = 1.0  # implausible canal: A/B only if every reference gives at most this depth
    neighbour_confirm_axis_mm: float = 4.0  # a C+ read from the neighbouring level's canal alone needs the screw
    # axis this deep at the pedicle isthmus (or the pair asymmetry); otherwise not assessed
    neighbour_flag_mm: float = 6.0  # ... unless the neighbouring level's canal alone gives at least this depth
    midline_pair_excess_mm: float = 3.5  # screw this much nearer the midline than its pair: never A/B
    midline_min_offset_mm: float = 5.0  # screw's medial surface this close to the midline: never A/B
    midline_disagree_mm: float = 3.0  # canal depth exceeding the axis depth by this (pair symmetric): not assessed
    midline_body_depth_mm: float = 4.0  # screw this far inside the wall expected from the body width: never A/B
    midline_max_half_width_mm: float = 20.0  # canal depth + distance from the midline beyond this: not assessed
    convergence_never_ab_deg: float = 45.0  # screw axis this far from the AP axis (axial plane): never A/B
    convergence_grade_deg: float = 60.0  # this far: graded at least D (the trajectory crosses the canal)
    low_grade_min_confidence: float = 0.8  # A/B without the midline check needs this canal confidence
    low_grade_needs_midline: bool = True  # A/B needs the canal-independent midline check whatever the confidence
    low_grade_contradicted_mm: float | None = None  # A/B read against another level's canal or a canal occluded on the
    # screw's side while a canal-independent reference (pair, other levels, body width) puts the screw this far inside:
    # not assessed
    pedicle_enabled: bool = False  # pedicle sections computed (evidence only; not yet used for grading)
    pedicle_cortex_hu: float = 350.0  # pedicle sections: bone at least this dense outlines the pedicle
    pedicle_margin_mm: float = 6.0  # pedicle sections: radius searched around the screw beyond its own
    pedicle_skip_entry_mm: float = 5.0  # pedicle sections: first mm of the shaft (posterior elements) left out
    pedicle_window_mm: tuple[float, float] = (10.0, 28.0)  # pedicle sections giving the depth (mm from the entry)
    pedicle_body_margin_mm: float | None = None  # depth window ends this far in front of the body's posterior wall
    pedicle_min_window_to_mm: float = 18.0  # ... but the window reaches at least this far from the entry
    pedicle_max_offset_mm: float = 12.0  # graded from the pedicle only with the metal this near the midline
    pedicle_run_sections: int = 4  # pedicle depth: the deepest run of this many consecutive sections (minimum)
    pedicle_strip_from_mm: float = 1.0  # pedicle sections: the medial strip tested for bone/soft tissue starts here
    pedicle_rel_soft_hu: float | None = None  # far medial strip this much below the lateral one: soft tissue
    pedicle_soft_hu: float = 60.0  # ... and is the canal's soft tissue when its median is below this
    pedicle_grade_mm: float = 4.0  # pedicle depth at least this: graded from it (D/E), whatever the canal says
    pedicle_never_ab_mm: float = 2.0  # pedicle depth at least this: never A/B (not assessed instead)
    pedicle_confirms_midline_mm: float | None = None  # pedicle depth at least this confirms the midline check's breach
    pedicle_confirms_low_grade: bool = False  # a pedicle depth under never_ab_mm confirms a canal A/B read
    pedicle_intact_max_mm: float | None = None  # every pedicle section under this: medial cortex intact (None: off)
    pedicle_intact_min_sections: int = 8  # ... over at least this many sections
    pedicle_intact_min_offset_mm: float = 6.0  # ... with the metal's medial surface this far from the midline on each
    pedicle_intact_max_offset_mm: float = 30.0  # ... and no further than this (beyond: the midline is wrong)
    pedicle_intact_confirms_low_grade: bool = False  # "low grade not confirmed" (no midline check) + intact cortex: A/B
    pedicle_intact_borrowed_run: int = 1  # against a borrowed canal's C+ read: this many consecutive sections must reach

    def grade(self, depth_mm: float) -> str:
        return gertzbein_robbins(depth_mm, self.grade_bounds)

    def volume_budget_bytes(self, override_mb: float | None = None) -> int:
        """The policy's budget, or the site's (the `ct_volume_budget_mb` option) when it sets one."""
        mb = self.volume_budget_mb if override_mb is None else override_mb
        return int(mb * 1024 * 1024)


def gertzbein_robbins(depth_mm: float, bounds=(0.0, 2.0, 4.0, 6.0)) -> str:
    """A no breach; B < 2 mm; C 2-4 mm; D 4-6 mm; E >= 6 mm (bounds: lower limits of B, C, D, E)."""
    b, c, d, e = bounds
    if depth_mm <= b:
        return "A"
    if depth_mm < c:
        return "B"
    if depth_mm < d:
        return "C"
    if depth_mm < e:
        return "D"
    return "E"


def _num(doc: dict, path: str, file: Path) -> float:
    cur = doc
    for k in path.split("."):
        if not isinstance(cur, dict) or k not in cur:
            raise PolicyError(f"{file}: missing key {path}")
        cur = cur[k]
    if isinstance(cur, bool) or not isinstance(cur, (int, float)) or cur < 0:
        raise PolicyError(f"{file}: {path} must be a non-negative number")
    return float(cur)


_ABSENT = object()


def _lookup(doc: dict, path: str):
    """The value at a dotted path, or _ABSENT."""
    cur = doc
    for k in path.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return _ABSENT
        cur = cur[k]
    return cur


def _opt(doc: dict, path: str, file: Path, default: float) -> float:
    cur = _lookup(doc, path)
    return _num({"v": cur}, "v", file) if cur is not _ABSENT and cur is not None else default


def _opt_or_none(doc: dict, path: str, file: Path) -> float | None:
    """An optional number whose absence (or null) switches its rule off: None then."""
    cur = _lookup(doc, path)
    return None if cur is _ABSENT or cur is None else _num({"v": cur}, "v", file)


def _num_or(doc: dict, path: str, file: Path, default: float) -> float:
    """An optional number that may be negative (HU)."""
    cur = _lookup(doc, path)
    if cur is _ABSENT:
        return default
    if isinstance(cur, bool) or not isinstance(cur, (int, float)):
        raise PolicyError(f"{file}: {path} must be a number")
    return float(cur)


def _prio(value, path: str, file: Path) -> Priority:
    try:
        return Priority.parse(value)
    except (KeyError, AttributeError):
        raise PolicyError(f"{file}: {path} must be STAT, URGENT or ROUTINE, not {value!r}") from None


def _content_max_hu(doc: dict, file: Path) -> float | None:
    """canal.content_max_hu: a number (HU, 50 when absent), or null for no second canal hypothesis."""
    cur = _lookup(doc, "canal.content_max_hu")
    if cur is None:
        return None
    return 50.0 if cur is _ABSENT else _num(doc, "canal.content_max_hu", file)


def parse(doc: dict, file: Path) -> CTPolicy:
    if not isinstance(doc, dict):
        raise PolicyError(f"{file}: must be a mapping")
    bounds = tuple(_num(doc, f"gertzbein_robbins.{g}", file) for g in GRADES)
    if list(bounds) != sorted(bounds) or len(set(bounds)) != 4:
        raise PolicyError(f"{file}: gertzbein_robbins bounds must increase from B to E")
    prios = (doc.get("priorities") or {}).get("misplaced_screw") or {}
    grade_priority = {g: _prio(prios[g], f"priorities.misplaced_screw.{g}", file) for g in prios}
    if set(grade_priority) - set(GRADES):
        raise PolicyError(f"{file}: priorities.misplaced_screw has unknown grades")
    esc = doc.get("unassessed_screws") or {}
    flag = str(esc.get("flag", "misplaced_screw"))
    if flag not in FLAG_CODES:
        raise PolicyError(f"{file}: unassessed_screws.flag {flag!r} is not a flag code")
    concepts = esc.get("complaint_concepts") or []
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise PolicyError(f"{file}: unassessed_screws.complaint_concepts must be a list of concept names")
    return CTPolicy(
        metal_hu=_num(doc, "densities.metal_hu", file),
        bone_hu=_num(doc, "densities.bone_hu", file),
        grade_bounds=bounds,  # type: ignore[arg-type]
        grade_priority=grade_priority,
        loosening_priority=_prio(doc["priorities"].get("screw_loosening", "ROUTINE"), "priorities.screw_loosening", file),
        infection_priority=_prio(doc["priorities"].get("screw_loosening_infection", "URGENT"),
                                 "priorities.screw_loosening_infection", file),
        halo_flag_mm=_num(doc, "halo.flag_mm", file),
        thin_slice_mm=_num(doc, "acquisition.thin_slice_mm", file),
        blooming_margin_mm=_num(doc, "canal.blooming_margin_mm", file),
        slab_margin_mm=_num(doc, "canal.slab_margin_mm", file),
        agreement_mm=_num(doc, "canal.agreement_mm", file),
        volume_budget_mb=_num(doc, "volume.budget_mb", file),
        escalate_days=_num(doc, "unassessed_screws.max_days_after_surgery", file),
        escalate_concepts=tuple(concepts),
        escalate_priority=_prio(esc.get("priority", "URGENT"), "unassessed_screws.priority", file),
        escalate_flag=flag,
        source=str(file),
        version=f"v{doc.get('version', 0)}",
        side_ratio_min=_opt(doc, "canal.plausibility.side_ratio_min", file, 0.7),
        canal_content_max_hu=_content_max_hu(doc, file),
        hypotheses_disagree_na=bool((doc.get("canal") or {}).get("hypotheses_disagree_not_assessed", True)),
        level_ratio_min=_opt(doc, "canal.plausibility.level_ratio_min", file, 0.6),
        expected_wall_flag_mm=_opt(doc, "canal.plausibility.expected_wall_flag_mm", file, 4.0),
        clear_mm=_opt(doc, "canal.plausibility.clear_mm", file, 1.0),
        neighbour_confirm_axis_mm=_opt(doc, "canal.plausibility.neighbour_confirm_axis_mm", file, 4.0),
        neighbour_flag_mm=_opt(doc, "canal.plausibility.neighbour_flag_mm", file, 6.0),
        midline_pair_excess_mm=_opt(doc, "canal.midline.pair_excess_mm", file, 3.5),
        midline_min_offset_mm=_opt(doc, "canal.midline.min_offset_mm", file, 5.0),
        midline_disagree_mm=_opt(doc, "canal.midline.disagree_mm", file, 3.0),
        midline_body_depth_mm=_opt(doc, "canal.midline.body_depth_mm", file, 4.0),
        midline_max_half_width_mm=_opt(doc, "canal.midline.max_half_width_mm", file, 20.0),
        convergence_never_ab_deg=_opt(doc, "canal.convergence.never_ab_deg", file, 45.0),
        convergence_grade_deg=_opt(doc, "canal.convergence.grade_d_deg", file, 60.0),
        low_grade_min_confidence=_opt(doc, "canal.low_grade_min_confidence", file, 0.8),
        low_grade_needs_midline=bool((doc.get("canal") or {}).get("low_grade_needs_midline_check", True)),
        low_grade_contradicted_mm=_opt_or_none(doc, "canal.low_grade_contradicted_mm", file),
        pedicle_enabled=bool((doc.get("pedicle_sections") or {}).get("enabled", False)),
        pedicle_cortex_hu=_opt(doc, "pedicle_sections.cortex_hu", file, 350.0),
        pedicle_margin_mm=_opt(doc, "pedicle_sections.margin_mm", file, 6.0),
        pedicle_skip_entry_mm=_opt(doc, "pedicle_sections.skip_entry_mm", file, 5.0),
        pedicle_window_mm=(_opt(doc, "pedicle_sections.window_from_mm", file, 10.0),
                           _opt(doc, "pedicle_sections.window_to_mm", file, 28.0)),
        pedicle_body_margin_mm=(_opt(doc, "pedicle_sections.body_wall_margin_mm", file, 0.0)
                                if "body_wall_margin_mm" in (doc.get("pedicle_sections") or {}) else None),
        pedicle_min_window_to_mm=_opt(doc, "pedicle_sections.min_window_to_mm", file, 18.0),
        pedicle_max_offset_mm=_opt(doc, "pedicle_sections.max_offset_mm", file, 12.0),
        pedicle_run_sections=int(_opt(doc, "pedicle_sections.run_sections", file, 4)),
        pedicle_strip_from_mm=_opt(doc, "pedicle_sections.strip_from_mm", file, 1.0),
        pedicle_rel_soft_hu=(_opt(doc, "pedicle_sections.relative_soft_hu", file, 0.0)
                             if "relative_soft_hu" in (doc.get("pedicle_sections") or {}) else None),
        pedicle_soft_hu=_num_or(doc, "pedicle_sections.soft_hu", file, 60.0),
        pedicle_grade_mm=_opt(doc, "pedicle_sections.grade_from_mm", file, 4.0),
        pedicle_never_ab_mm=_opt(doc, "pedicle_sections.never_ab_mm", file, 2.0),
        pedicle_confirms_midline_mm=_opt_or_none(doc, "pedicle_sections.confirms_midline_breach_mm", file),
        pedicle_confirms_low_grade=bool((doc.get("pedicle_sections") or {}).get("confirms_low_grade", False)),
        pedicle_intact_max_mm=(_opt(doc, "pedicle_sections.intact.max_section_mm", file, 2.0)
                               if "intact" in (doc.get("pedicle_sections") or {}) else None),
        pedicle_intact_min_sections=int(_opt(doc, "pedicle_sections.intact.min_sections", file, 8)),
        pedicle_intact_min_offset_mm=_opt(doc, "pedicle_sections.intact.min_midline_offset_mm", file, 6.0),
        pedicle_intact_max_offset_mm=_opt(doc, "pedicle_sections.intact.max_midline_offset_mm", file, 30.0),
        pedicle_intact_confirms_low_grade=bool(((doc.get("pedicle_sections") or {}).get("intact") or {}).get(
            "confirms_low_grade_without_midline_check", False)),
        pedicle_intact_borrowed_run=int(_opt(doc, "pedicle_sections.intact.borrowed_run_sections", file, 1)),
    )


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> CTPolicy:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(f"{p}: {exc}") from None
    return parse(doc, p)


def ct_policy(path: Path | str | None = None) -> CTPolicy:
    """The CT hardware policy in force (re-read when the file changes)."""
    p = Path(path) if path is not None else DEFAULT_FILE
    return _load(str(p), p.stat().st_mtime)


# --- early postoperative complaint with unassessed screws -------------------------------------

@functools.lru_cache(maxsize=2)
def _matcher(version_key: str):
    from rules.engine import Rulebook

    return Rulebook.load().matcher


def clinical_context(study) -> dict:
    """Time since surgery (hours, from the text) and complaint concepts, read with the rulebook's own lexicon.

    Returns {"hours": [..], "concepts": set, "error": str|None}; never raises.
    """
    try:
        from rules import context as ctxmod
        from rules.engine import DEFAULT_DIRECTORY
        from rules.loader import content_hash, rule_files

        matcher = _matcher(content_hash(rule_files(DEFAULT_DIRECTORY)))
        ctx = ctxmod.build(study, matcher, None, None)
        return {"hours": [r.hours for r in ctx.readings], "concepts": set(ctx.raising), "error": None}
    except Exception as exc:  # the text side is another module's; degrade, never crash the analyser
        log.warning("clinical context for the image policy unavailable: %s", exc)
        return {"hours": [], "concepts": set(), "error": f"{type(exc).__name__}: {exc}"}


def warm_up() -> None:
    """Load the policy and the rulebook lexicon now, not in the first CT triage (about 0.6 s)."""
    from rules.engine import DEFAULT_DIRECTORY
    from rules.loader import content_hash, rule_files

    ct_policy()
    _matcher(content_hash(rule_files(DEFAULT_DIRECTORY)))


def unassessed_escalation(policy: CTPolicy, clinical: dict, n_unassessed: int, n_total: int) -> dict | None:
    """The escalation owed to unassessed screws in an early postoperative study with a complaint, or None."""
    if n_unassessed <= 0:
        return None
    early = [h for h in clinical.get("hours") or [] if h is not None and 0 <= h <= policy.escalate_days * 24]
    complaints = sorted(set(clinical.get("concepts") or ()) & set(policy.escalate_concepts))
    if not early or not complaints:
        return None
    return {"priority": policy.escalate_priority, "flag": policy.escalate_flag, "hours": min(early),
            "complaints": complaints}

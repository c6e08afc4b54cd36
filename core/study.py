"""A study as the pipeline sees it, assembled from instance header summaries.

The listener path (Redis index) and the offline path (files on disk) build the
same `Study` from the same summaries (see `core.headers.summarize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from core.headers import SERIES_KEYWORDS, STUDY_KEYWORDS


@dataclass
class Series:
    uid: str
    modality: str | None = None
    description: str | None = None
    body_part: str | None = None
    number: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # first instance's series attributes
    instances: list[dict[str, Any]] = field(default_factory=list)  # instance summaries

    @property
    def paths(self) -> list[str]:
        return [i["path"] for i in self.instances if i.get("path")]


@dataclass
class Study:
    uid: str
    attributes: dict[str, Any] = field(default_factory=dict)  # study-level attributes
    series: dict[str, Series] = field(default_factory=dict)
    text_fields: list[dict[str, str]] = field(default_factory=list)  # deduplicated
    order_priorities: dict[str, str] = field(default_factory=dict)
    last_received: float | None = None  # epoch seconds of the last instance received
    first_received: float | None = None

    @property
    def accession_number(self) -> str | None:
        return self.attributes.get("AccessionNumber")

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series.values() if s.modality})

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series.values())

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.attributes.get(keyword, default)

    @classmethod
    def from_summaries(cls, summaries: Iterable[dict[str, Any]], last_received: float | None = None) -> "Study":
        # Header checking is off: InstanceNumber/SeriesNumber may be "abc", "1\\2" or a list.
        # A malformed number sorts as 0 and never stops the study from being triaged.
        items = sorted(
            summaries,
            key=lambda s: (as_int(s.get("SeriesNumber")), as_int(s.get("InstanceNumber")),
                           str(s.get("SOPInstanceUID", ""))),
        )
        if not items:
            raise ValueError("a study needs at least one instance")
        study = cls(uid=items[0]["StudyInstanceUID"], last_received=last_received)
        seen_text: set[tuple[str, str]] = set()
        for s in items:
            for kw in STUDY_KEYWORDS:
                if kw in s and kw not in study.attributes:
                    study.attributes[kw] = s[kw]
            for k, v in (s.get("OrderPriorities") or {}).items():
                # The floor is the highest priority any instance carries, not the first one's.
                if _order_rank(v) > _order_rank(study.order_priorities.get(k)):
                    study.order_priorities[k] = v
            for t in s.get("TextFields") or []:
                key = (t["keyword"], t["value"])
                if key not in seen_text:
                    seen_text.add(key)
                    study.text_fields.append(dict(t, series_uid=s.get("SeriesInstanceUID")))
            suid = s.get("SeriesInstanceUID", "")
            series = study.series.get(suid)
            if series is None:
                series = study.series[suid] = Series(
                    uid=suid,
                    modality=s.get("Modality"),
                    description=s.get("SeriesDescription"),
                    body_part=s.get("BodyPartExamined"),
                    number=as_int(s.get("SeriesNumber"), None),
                    attributes={k: s[k] for k in SERIES_KEYWORDS if k in s},
                )
            series.instances.append(s)
        return study


def as_int(value: Any, default: int | None = 0) -> int | None:
    """An IS value as an int; `default` for anything malformed (a string, a list, a float)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _order_rank(value: Any) -> int:
    from core.priority import Priority

    if value is None:
        return -1
    p = Priority.from_order(str(value))
    return -1 if p is None else int(p)

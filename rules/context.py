"""The clinical context of one study: concept mentions, procedure, course cues, time readings.

Built once per evaluation from the study's text fields and series attributes;
the rules only look at this object.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field

from rules.text import OPERATION_CONCEPTS, PROCEDURES, STUDY_CAP, Matcher, Mention, repair
from rules.timing import _FUTURE, Reading, study_datetime, surgery_reading, text_readings
from rules.text import normalise

#: Fields that describe the acquisition rather than the clinical question.
ACQUISITION_KEYWORDS = (
    "StudyDescription",
    "SeriesDescription",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription",
)
_SERIES_TEXT = ("SeriesDescription", "ProtocolName", "BodyPartExamined", "ImageType", "ConvolutionKernel")

#: Named complications of instrumentation imply an instrumented, operated spine.
HARDWARE_COMPLICATIONS = ("hardware_broken", "loosening", "spacer_moved", "pseudarthrosis")
OPERATED = PROCEDURES + ("operated", "early_cue") + HARDWARE_COMPLICATIONS
HARDWARE = ("fusion", "hardware", "screw_query", "screw_rod_construct") + HARDWARE_COMPLICATIONS
#: Procedures without screws: a hardware flag needs screws or an unknown procedure (guide §2).
NON_INSTRUMENTED = ("discectomy", "decompression", "cement", "stimulator")

#: "CES in 2015", "(2019)": a year before the study year after a mention makes it history.
#: round 13: also with the old event between ("paraplegia since MVA 2009", "paraplégie depuis AVP en 2009").
_STATUS_POST = re.compile(r"(?<![a-z])(s/p|s p|status post|after|following|post|apres|depuis)(?![a-z])")
_YEAR_AFTER = re.compile(
    # (a full stop or a semicolon before the year ends the sentence: "Mild mechanical LBP. 2018 L4-5 fusion ..." dates the next one)
    r"^(?:[^\w.;]|\.(?!\s)){0,3}(?:(?:in|en|since|depuis|of|de|from|dating|datant|after|apres|a|an|the|her|his|sa|son|une?|late|early|fin|debut|mva|rta|avp|accident|fall|chute|injury|trauma|traumatisme|tp|accident de la route|"
    # session 22: the image that showed it between the finding and its year ("Radiculitis on MRI in 2024, resolved")
    r"on|mri|ct|irm|scan|scanner|imaging|au|seen|noted|vue?)\s+){0,3}"
    # session 14 (round 112): a month before the year ("Evacuation of epidural haematoma Feb 2024"; the year must still be earlier)
    r"\(?(?P<month>(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|janv|fev|fevr|avr|mai|juin|juil|aout|déc)[a-z]*\.?\s+)?((?:19|20)\d\d)\b"
)
#: "Complete T6 paraplegia since RTA 2011", "incontinence depuis 2015": a complaint there since an earlier year is pre-existing
#: (round 14); not when a month stands before the year ("since Dec 2025" may be weeks) nor when it is said to be worse.
#: session 7: up to three other words may stand between ("paraplégie post-traumatique depuis 2009", "weakness 4/5 unchanged
#: since 2024", "déficit L5 gauche séquellaire 4/5 depuis 2019"), never a word that makes it current; up to three words
#: between "since" and the year (session 13, round 103: "paraplégique depuis un AVP en 1998").
_SINCE_YEAR = re.compile(r"^[\s,]*(?:(?!(?:new|nouvelle?s?|nouveaux|now|maintenant|worse|worsening|aggrav\w*|progress\w*|increasing|acute|aigue?s?|sudden|brutal\w*|today|aujourd)\b)(?:[a-z]+(?:-[a-z]+)?|\d/\d|[cdtls]\d{1,2}|[(),])\s*){0,4}\s(?:since|depuis)\s+(?:(?!jan|feb|fev|mar|apr|avr|may|mai|jun|juin|jul|juil|aug|aout|sep|oct|nov|dec)[a-z][a-z0-9'’]*\s+){0,4}\(?((?:19|20)\d\d)(?![0-9])")
_PROGRESSION_AFTER = re.compile(r"(?<![a-z])(?:worse|worsening|deteriorat\w*|progress\w*|aggrav\w*|new|nouvelle?s?|nouveaux|now|maintenant|increasing)(?![a-z])")
#: "... il y a 6 ans", "... 10 years ago": a complaint that old is history; a procedure between the complaint and the time
#: ("..., s/p microdiscectomy 1 yr ago", "after fusion 2 years ago") is what the time dates.
#: "... depuis 10 ans", "... for years", "... over the last 3 years": a complaint that has lasted years is no new one
_FOR_YEARS = re.compile(r"^\s*(?:[a-z]+\s+){0,2}?(?:for|since|depuis|over|pendant|durant)\s+(?:the\s+(?:last|past)\s+|les\s+)?"
                        r"(?:\d{1,2}\s*|many\s+|several\s+|some\s+|a few\s+|plusieurs\s+|quelques\s+|des\s+|de nombreuses\s+|two\s+|three\s+|"
                        r"four\s+|five\s+|ten\s+|deux\s+|trois\s+|quatre\s+|cinq\s+|dix\s+)?(?:years?|yrs?|ans|annees)(?![a-z])")
_YEARS_AGO = re.compile(r"^[^.;\n]{0,40}?(?:il y a\s+\d{1,2}\s*(?:ans|annees)|\d{1,2}\s*(?:years?|yrs?|ans)\s+(?:ago|auparavant|plus tot))")


@dataclass
class Context:
    mentions: list[Mention]
    raising: dict[str, list[Mention]]  # concept -> affirmed or uncertain, non-history mentions
    seen: dict[str, list[Mention]]  # concept -> every non-negated, real, patient mention (history included)
    clinical_text: bool  # any field other than acquisition descriptions
    procedures: set[str]
    planned: list[Mention]  # procedures mentioned as planned or future: not postoperative
    instrumented: str  # yes | no | unknown
    postoperative: str  # yes | no | unknown
    cue_windows: dict[str, list[Mention]]
    acquisition: set[str]
    modalities: set[str]
    readings: list[Reading]
    time_notes: list[str] = field(default_factory=list)
    negated: set[str] = field(default_factory=set)  # concepts with a negated mention ("no retention"): safety's unless_denied


def _base(keyword: str) -> str:
    return keyword.rsplit(".", 1)[-1]


def capped_fields(fields: list[dict]) -> list[dict]:
    """The text fields, each capped by the text reader, together at most STUDY_CAP characters."""
    out, total = [], 0
    for f in fields:
        value = str(f.get("value") or "")[: max(0, STUDY_CAP - total)]
        total += len(value)
        out.append(dict(f, value=value))
    return out


def build(study, matcher: Matcher, surgery, priors: list | None) -> Context:
    # surgery: a rules.timing.SurgeryEstimate (from the priors) or a case's surgery record (a dict)
    mentions: list[Mention] = []
    study_dt = study_datetime(study.attributes)
    fields = [dict(f, value=repair(f["value"])) for f in capped_fields(study.text_fields)]  # mojibake repaired once, for all readers
    measure = getattr(matcher, "measure", None)
    ignore = set(matcher.pseudo) | set(OPERATED)  # what a later entry's "resolved" cannot end
    resolved = getattr(matcher, "resolved_alternation", "")
    texts: list[tuple[list[Mention], str]] = []  # each field's mentions and text, for the study-wide readings after the loop
    copied_by_field: dict[int, list[tuple[int, int]]] = {}  # field index -> copied earlier orders (for the time readings)
    for fi, f in enumerate(fields):
        found = matcher.mentions(f)
        text = f.get("value") or ""  # repaired above
        copied = copied_by_field[fi] = _copied_spans(text)
        voided = _twoc_spans(text)
        _year_history(found, text, study_dt, getattr(matcher, "chronic", set()))
        _history_cause(found, text, matcher.cues.get("history_cause_between", ()))
        _bracket_after_history(found, text, study_dt)
        _old_indication(found, text, study_dt)
        _past_operation_events(found, text, study_dt, getattr(matcher, "chronic", set()))
        _planned_sentences(found, text)
        _mark_copied(found, copied)
        _mark_education(found, text)
        _mark_twoc(found, voided)
        _intraoperative_transfusion(found, text)
        _awaiting_revision(found, text, getattr(matcher, "persistent", set()))
        if measure is not None:
            measured = measure.find(text, f)
            graded = [mm for mm in measured if mm.concepts]  # "EHL 4/5, unchanged from pre-op": the pre-operative deficit
            for mm in graded:  # session 10 (round 83): "La voisine de chambre présente une fièvre à 39" is the neighbour's
                if hasattr(matcher, "other_experiencer_before") and matcher.other_experiencer_before(text[: mm.start]):
                    mm.experiencer = "other"
            _year_history(graded, text, study_dt)  # session 7: "EHL weakness 4/5 unchanged since 2024" is history too
            _bracket_detail_history(graded, found, text)
            for mm in graded:  # session 12 (round 97): "Return immediately if ..., fever >38, ...": the word's reading is the number's
                if any(m.hypothetical and m.concepts & mm.concepts and m.start <= mm.start < m.end + 3 for m in found):
                    mm.hypothetical = True
            _mark_twoc(graded, voided)
            _mark_copied(graded, copied)
            for mm, same in zip(graded, matcher.preop_same_spans(text, [(mm.start, mm.end) for mm in graded], found)):
                if same:
                    mm.history = True
            if hasattr(matcher, "history_after_spans"):
                for mm, old in zip(graded, matcher.history_after_spans(text, [(mm.start, mm.end) for mm in graded])):
                    if old and mm.concepts & {"motor_deficit", "sensory_deficit"}:
                        mm.history = True
            # session 7 (round 38): a lexicon pattern that overrides a concept also replaces a measurement of it that it spans
            # ("Fièvre à 38,5 hier attribuée à une grippe": fever_explained overrides the temperature's fever)
            overrides = getattr(matcher, "overrides", {})
            if overrides:
                over = [(f.start, f.end, set().union(*(overrides.get(c, set()) for c in f.concepts))) for f in found
                        if any(c in overrides for c in f.concepts)]
                if over:
                    graded = [mm for mm in graded
                              if not any(a <= mm.start and mm.end <= b and mm.concepts <= o for a, b, o in over)]
            benign = [b for b in measured if not b.concepts]  # a trend in numbers below every threshold
            found = [m for m in found
                     if not any(m.start < b.end and b.start < m.end and m.concepts <= set(b.measurement["cancels"])
                                for b in benign)]
            _superseded_entries(found + graded, text, ignore, resolved)
            mentions.extend(found)
            mentions.extend(graded)
            texts.append((found + graded, text))
        else:
            _superseded_entries(found, text, ignore, resolved)
            mentions.extend(found)
            texts.append((found, text))
    _preoperative_longstanding(texts)
    _denied_reading(texts)
    _longstanding_unchanged(texts, study_dt)
    _grade_of_old_deficit(texts)
    _other_limb(texts)
    _unchanged_of_history(texts)
    _same_deficit_unchanged(texts)
    _planned_together(texts)
    _progressing_imaging(texts)
    _reassessed_imaging(texts)
    readings, notes = text_readings(fields, study_dt)
    readings = _present_readings(readings, fields, copied_by_field)
    past = _earlier_day_events(texts, readings)
    if past:  # the day label of a past event is no time of this study (kept when it is the only reading)
        kept = [r for r in readings if not any(r.keyword == kw and r.start is not None and a <= r.start < b for kw, a, b in past)]
        readings = kept or readings
    elsewhere = _other_operation_sentences(texts)
    if elsewhere:  # the day label or date of another operation is never the spine's (not even when it is the only one)
        readings = [r for r in readings if not any(r.keyword == kw and r.start is not None and a <= r.start < b for kw, a, b in elsewhere)]
    raising: dict[str, list[Mention]] = {}
    seen: dict[str, list[Mention]] = {}  # concept -> every non-negated, real mention, history included
    negated: set[str] = set()
    planned: list[Mention] = []
    for m in mentions:
        if m.hypothetical and m.assertion != "negated" and m.concepts & set(OPERATED):
            planned.append(m)
        for c in m.concepts:
            if m.assertion == "negated":
                negated.add(c)
                continue
            if m.hypothetical or m.experiencer != "patient" or m.elsewhere:
                continue
            seen.setdefault(c, []).append(m)
            if m.raises:
                raising.setdefault(c, []).append(m)
    acquisition = {c for m in mentions if _base(m.keyword) in ACQUISITION_KEYWORDS and m.assertion != "negated" for c in m.concepts}
    for s in study.series.values():
        for kw in _SERIES_TEXT:
            value = s.attributes.get(kw)
            if value:
                text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
                acquisition |= {c for m in matcher.mentions({"value": text, "keyword": kw}) for c in m.concepts}
    procedures = {p for p in PROCEDURES if p in seen}
    for h in seen.get("herniation", []) + seen.get("recurrent_herniation", []):
        if any(o.keyword == h.keyword and min(abs(o.start - h.end), abs(h.start - o.end)) < 60 and not o.history
               for o in seen.get("operated", []) + seen.get("revision", [])):  # "operated ... for hernia of disc", "l'intervention
            # (hernie discale)", session 7 (round 39): "Reprise pour récidive de hernie L4-L5 hier"
            procedures.add("discectomy")
            seen.setdefault("discectomy", []).append(h)
    hardware = [c for c in HARDWARE if c in seen]
    if hardware == ["hardware"] and "stimulator" in procedures:
        hardware = []  # "implant" of a stimulator or pump is not a screw
    if "no_hardware" in seen and all(m.assertion == "uncertain" for c in hardware for m in seen[c]):
        hardware = []  # "?hardware failure. Laminectomy (no implants)": a query does not put screws in a spine said to have none
    elif "no_hardware" in seen and set(hardware) - set(HARDWARE_COMPLICATIONS) <= {"fusion"}:
        hardware = []  # session 12 (round 97): "posterolateral fusion (uninstrumented, autograft only)": a fusion without implants
    if hardware:
        instrumented = "yes"
    elif ("no_hardware" in seen or (procedures - {"revision"} and procedures - {"revision"} <= set(NON_INSTRUMENTED))
          or ("other_surgery" in seen and not procedures)):  # a hip replacement, no spine procedure: no spine hardware
        instrumented = "no"
    else:
        instrumented = "unknown"
    structured, note = surgery_reading(surgery, study_dt)
    if note:
        notes.append(note)
    if structured:
        readings.insert(0, structured)
    intraop = any(p.get("role") in ("intraoperative", "postoperative_reference") for p in priors or [])
    # a planned redo / revision / reprise says there was an operation before ("redo discectomy scheduled next month")
    redo = any("revision" in m.concepts for m in planned)
    if "other_surgery" in seen and "neuraxial" not in seen and not procedures and not hardware and not structured and not intraop:
        postoperative = "no"  # session 5: only a non-spine operation (hip replacement, hernia repair): the spine is unoperated (guide sc.21)
    elif any(c in seen for c in OPERATED) or (not planned and _implanted(hardware, seen, texts)) or readings or structured or intraop or redo:
        postoperative = "yes"  # session 20 (round 146): implants in the spine say it was operated ("the titanium cage thing in his lower back")
    elif "no_surgery" in seen or any(c in negated for c in OPERATED) or planned:
        postoperative = "no"
    else:
        postoperative = "unknown"
    cue_windows: dict[str, list[Mention]] = {}
    concepts = matcher.concepts
    for m in mentions:
        if m.assertion == "negated" and not m.concepts & matcher.pseudo:
            continue
        for c in m.concepts:
            course = concepts[c].get("course")
            if course:
                cue_windows.setdefault(course, []).append(m)
    return Context(
        mentions=mentions,
        raising=raising,
        seen=seen,
        clinical_text=any(_base(f["keyword"]) not in ACQUISITION_KEYWORDS for f in fields),
        procedures=procedures,
        planned=planned,
        instrumented=instrumented,
        postoperative=postoperative,
        cue_windows=cue_windows,
        acquisition=acquisition,
        modalities={s.modality.upper() for s in study.series.values() if s.modality},
        readings=_distinct(readings),
        time_notes=notes,
        negated=negated,
    )


_PAST = re.compile(r"(?<![a-z])(ago|il y a|post|j ?\+ ?\d|pod|yesterday|hier|done|performed|realisee?|effectuee?|"
                   r"operated|operee?|s/p|status post|depuis|since|after|apres|last|dernier|derniere|\d{4}|"
                   # session 16 (round 125): "Had spinal surgery interstate recently, details unknown, awaiting notes"
                   r"recently|recemment|underwent|a subi)(?![a-z])")


#: A dated entry of a note ("12/05 (copied forward):", "POD4:", "J3 :", "Today:", "Update:") at a line's or sentence's start.
_ENTRY_LABEL = re.compile(
    r"(?:^|\n|(?<=[.;|] ))[ \t]*(?:\d{1,2}[/.-]\d{1,2}(?:[/.-]\d{2,4})?|\d{4}-\d{2}-\d{2}|pod ?\d{1,2}|j ?\+? ?\d{1,2}|d ?\d{1,2}|"
    r"day ?\d{1,2}|jour ?\d{1,2}|today|aujourd'hui|aujourd hui|update|mise a jour|mise à jour)[ \t]*(?:\([^()\n]{0,30}\)[ \t]*)?:",
    re.IGNORECASE)
_NEGATION_BEFORE = re.compile(r"(?<![a-z])(?:no|not|nor|never|without|denies|denied|nil|pas|sans|aucune?|ni|non|jamais|plus de)(?![a-z])")


def _implanted(hardware: list[str], seen: dict[str, list[Mention]], texts: list[tuple[list[Mention], str]]) -> bool:
    """Implants named in the spine, outside a sentence that plans an operation, say it was operated (session 20, round 146:
    "Has 'the titanium cage thing' in his lower back ... year not known"); "Ablation de matériel L4-S1 prévue ... têtes de vis"
    and "arthrodèse prévue avec vis" do not."""
    owner = {id(x): text for found, text in texts for x in found}  # each mention's field text
    for c in hardware:
        for m in seen.get(c, [])[:50]:  # a few implant mentions decide it (bounded on long texts)
            text = owner.get(id(m))
            if text is None:
                continue
            norm = normalise(text)[0]  # cached per text
            if not _FUTURE.search(norm[_clause_start(norm, m.start) : _clause_end(norm, m.end)]):
                return True
    return False


def _superseded_entries(mentions: list[Mention], text: str, ignore: set[str], resolved: str = "") -> None:
    """A complaint of an earlier dated entry that a later entry of the same note says is gone is history (session 10,
    round 71: "12/05 (copied forward): POD1 ... Mild frontal headache" then "14/05: headache resolved"; "POD1 (copied):
    T 38.2" then "POD4: afebrile 48 h"). A later entry ends a concept by a mention negated by what follows it or by its own
    words (resolved, settled, afebrile), or by naming the earlier words again followed by a resolved word ("POD3: retention
    resolved"); then every mention of that concept in the entries before is history. "POD3: no new weakness" (a negation
    before the words) ends nothing: POD1's weakness stays current."""
    starts = [m.start() for m in _ENTRY_LABEL.finditer(text)]
    if len(starts) < 2:
        return
    entry = lambda pos: bisect_left(starts, pos + 1) - 1  # noqa: E731  (-1: before the first label)
    gone: list[tuple[int, set[str]]] = []  # (entry, concepts) said gone in that entry
    for m in mentions:
        concepts = set(m.concepts) - ignore
        if not concepts or not (m.assertion == "negated" or m.history):
            continue
        clause = re.split(r"[.;:,\n]", text[:m.start])[-1]
        if _NEGATION_BEFORE.search(normalise(clause)[0]):
            continue
        gone.append((entry(m.start), concepts))
    if resolved:
        for m in mentions:
            here = entry(m.start)
            concepts = set(m.concepts) - ignore
            if here < 0 or here + 1 >= len(starts) or not concepts or m.assertion == "negated":
                continue
            said = re.escape(normalise(m.text)[0])
            for later in range(here + 1, len(starts)):
                end = starts[later + 1] if later + 1 < len(starts) else len(text)
                if re.search(rf"(?<![a-z]){said}(?![a-z])\W+(?:[a-z]+\W+){{0,2}}(?:{resolved})(?![a-z])",
                             normalise(text[starts[later]:end])[0]):
                    gone.append((later, concepts))
                    break
    if not gone:
        return
    for m in mentions:
        if m.history or m.assertion == "negated" or m.hypothetical:
            continue
        here = entry(m.start)
        if here >= 0 and any(later > here and concepts & m.concepts for later, concepts in gone):
            m.history = True


_LONGSTANDING = re.compile(r"^[^.;\n]{0,60}?(?<![a-z])(?:for|since|depuis|x|over|over the (?:last|past)|pendant|durant|evoluant depuis)\s+"
                           r"(?:\d{1,2}|a|an|one|un|a few|several|some|plusieurs|quelques|two|three|four|five|six|deux|trois|quatre|six)\s+"
                           r"(?:months?|mois|years?|ans?|annees?|weeks?|wks?|semaines?)(?![a-z])"
                           # session 13 (round 101): "EHL 4/5, known and stable for 3 weeks" (weeks too, before a planned operation)
                           r"|^[^.;\n]{0,40}?(?<![a-z])(?:known and stable|known stable|stable and known|connue? et stable|stable depuis|stable for|"
                           r"unchanged for|unchanged since|inchangee? depuis)(?![a-z])")
_LONGSTANDING_CONCEPTS = {"motor_deficit", "radicular_pain", "sensory_deficit", "cruralgia", "medullary"}  # medullary: session 12 (round 91)
_NOT_LONGSTANDING = re.compile(r"(?<![a-z])(?:new|worse|worsening|sudden|acute|nouveau|nouvelle|aggrave|aggravation|brutal|brutale)(?![a-z])")


#: What ends a clause (a sentence, a semicolon, a line) and a sentence (a full stop, a line, a template's "|")
_CLAUSE_MARKS = (". ", ";", "\n")
_SENTENCE_MARKS = (". ", "\n", "|")


def _clause_start(text: str, pos: int, marks: tuple[str, ...] = _CLAUSE_MARKS, lo: int = 0) -> int:
    """Where the clause holding text[pos] begins: just after the last mark before pos (searched from lo on), else 0."""
    return max(text.rfind(k, lo, pos) for k in marks) + 1


def _clause_end(text: str, pos: int, marks: tuple[str, ...] = _CLAUSE_MARKS) -> int:
    """Where the clause holding text[pos] ends: the first mark at or after pos, else the end of the text."""
    ends = [i for i in (text.find(k, pos) for k in marks) if i >= 0]
    return min(ends) if ends else len(text)


#: A spine level written as referrers write it ("L4/5", "C5-6", "T10", "D10" in French, "S1")
_LEVEL = re.compile(r"(?<![a-z0-9])(c|t|th|d|l|s)\s?([0-9]{1,2})(?![0-9])")
_LEVEL_REGION = {"c": "C", "t": "T", "th": "T", "d": "T"}  # "D10" is the French T10; L and S levels are lumbar ("L")
_REGION_WORDS = {"C": re.compile(r"(?<![a-z])(?:cervical|cervicale|neck|cou|acdf|accf)(?![a-z])"),
                 "T": re.compile(r"(?<![a-z])(?:thoracic|dorsal|dorsale|thoracique)(?![a-z])"),
                 "L": re.compile(r"(?<![a-z])(?:lumbar|lombaire|lumbosacral|lombo sacre|lombosacree)(?![a-z])")}
_UPPER_LIMB = re.compile(r"(?<![a-z])(?:arm|arms|hand|hands|shoulder|shoulders|finger|fingers|thumb|thumbs|wrist|wrists|elbow|elbows|forearm|"
                         r"forearms|upper limb|upper limbs|upper extremity|bras|main|mains|epaule|epaules|doigt|doigts|pouce|pouces|"
                         r"poignet|poignets|coude|coudes|avant bras|membre superieur|membres superieurs|deltoid|deltoide|biceps|triceps|grip|"
                         r"cervical|cervicale|neck|nuque|cervicobrachial|cervico brachiale|cervicobrachiale)(?![a-z])")
_LOWER_LIMB = re.compile(r"(?<![a-z])(?:leg|legs|foot|feet|thigh|thighs|knee|knees|calf|calves|toe|toes|hip|hips|buttock|buttocks|ankle|"
                         r"ankles|saddle|perineal|perineum|genital|bladder|bowel|lower limb|lower limbs|lower extremity|jambe|jambes|pied|pieds|"
                         r"cuisse|cuisses|genou|genoux|mollet|mollets|orteil|orteils|fesse|fesses|cheville|chevilles|selle|perinee|"
                         r"membre inferieur|membres inferieurs|four limbs|all limbs|"
                         r"sciatica|sciatique|cruralgie|radiculalgie|[ls][0-9])(?![a-z])")
_LIMB_AFTER = re.compile(r" (?:of|in|to|into|des|de|du|dans|aux|au|a) (?:the |both |his |her |my |les |la |le |l |deux )?(?:[a-z0-9]+ ){0,3}?"
                         r"(?:arm|arms|hand|hands|finger|fingers|thumb|thumbs|wrist|wrists|forearm|forearms|upper limb|upper limbs|bras|main|mains|"
                         r"doigt|doigts|pouce|pouces|poignet|poignets|avant bras|membre superieur|membres superieurs)(?![a-z])")
#: (session 14, round 113: "R shoulder impingement - no improvement after 3 months physio" is no failed lumbar operation)
_LIMB_CONCEPTS = frozenset({"motor_deficit", "radicular_pain", "sensory_deficit", "no_change"})


_NOT_A_FINDING = {"no_change", "lumbar_coverage", "full_spine_coverage", "contrast"}
_COURSE_WORDS = {"no_change", "persistence_cue", "comparison_pseudo", "changed_pain", "new_since_surgery"}
_UNCHANGED_AFTER = re.compile(r"^,? ?(?:is |remains |still |reste |est )?(?:unchanged|inchangee?s?|the same|stable|stables|same as before|as before|comme avant|identique|no worse|pas aggrave|pas aggravee)(?![a-z])")
_DEFICITS = frozenset({"motor_deficit", "sensory_deficit", "sphincter", "saddle_anaesthesia", "paraplegia"})


def _same_deficit_unchanged(texts: list[tuple[list[Mention], str]]) -> None:
    """A deficit said unchanged, when the request has already named the same deficit as pre-operative or old, is that old
    deficit ("Pre-op R foot drop (since Jan, before surgery). L4-5 microdisc POD2, foot drop unchanged": session 21, round 168)."""
    old = {c for found, _ in texts for m in found if m.history and m.assertion != "negated" for c in m.concepts & _DEFICITS}
    if not old:
        return
    for found, text in texts:
        norm = normalise(text)[0]
        for m in found:
            if not m.history and m.assertion != "negated" and m.concepts & old and _UNCHANGED_AFTER.match(norm[m.end : m.end + 30]):
                m.history = True


_JOINED_OPERATION = re.compile(r"^ ?(?:and|et|\+|&|plus|with|avec|,) (?:an? |une? |the |la |le |l )?(?:[a-z0-9]+ ){0,2}$")


def _planned_together(texts: list[tuple[list[Mention], str]]) -> None:
    """An operation joined by "and" to a planned one is planned with it ("L4/5 decompression and instrumented fusion booked for
    24/03/2026": session 21, round 159)."""
    for found, text in texts:
        norm = normalise(text)[0]
        ops = sorted((m for m in found if m.concepts & OPERATION_CONCEPTS and m.assertion != "negated"), key=lambda m: m.start)
        for m1, m2 in zip(ops, ops[1:]):
            if m2.hypothetical and not m1.hypothetical and not m1.history and _JOINED_OPERATION.match(norm[m1.end : m2.start]):
                m1.hypothetical = True


_PAINISH = re.compile(r"pain|claudication|cruralgia|sciatica|stenosis")


def _unchanged_of_history(texts: list[tuple[list[Mention], str]]) -> None:
    """An "unchanged" right after a past, non-painful finding of its sentence is that finding's, no course cue ("h/o stress
    incontinence for 10 years (3 children), unchanged since surgery": session 21, round 160). A pain unchanged since the
    operation stays the inefficacy cue it is."""
    for found, text in texts:
        norm = normalise(text)[0]
        ordered = sorted(found, key=lambda m: m.start)
        for i, m in enumerate(ordered):
            if "no_change" not in m.concepts or m.history or i == 0:
                continue
            prev = next((p for p in reversed(ordered[:i]) if p.concepts and not p.concepts <= _NOT_A_FINDING), None)
            if prev is None or prev.concepts & _COURSE_WORDS or not (prev.history or prev.experiencer != "patient" or prev.hypothetical):
                continue
            if any(_PAINISH.search(c) for c in prev.concepts) or m.start - prev.end > 40 or re.search(r"[.;\n|]", norm[prev.end : m.start]):
                continue
            m.history = True


_PROGRESSING = re.compile(r"(?<![a-z])(?:increasing|increased|progressive|progressing|progression|worsening|worse|enlarging|extending|more extensive|"
                          r"augmentation|majoration|majore|majoree|aggravation|aggrave|aggravee|en progression|qui progresse|extension)(?![a-z])")


def _progressing_imaging(texts: list[tuple[list[Mention], str]]) -> None:
    """An infection's image sign said to be progressing on the previous scans is today's question, not history ("previous MRI
    showed increasing L4/5 endplate oedema compared with the one before": session 21, round 160)."""
    for found, text in texts:
        norm = normalise(text)[0]
        for m in found:
            if m.history and "infection_imaging" in m.concepts and _PROGRESSING.search(norm[max(0, m.start - 12) : m.end]):
                m.history = False


#: A request to image a finding again: "please reassess with contrast", "Repeat with gad please", "à réévaluer", "contrôle".
_REASSESS = re.compile(r"(?<![a-z])(?:reassess|re assess|re-assess|reevaluate|re evaluate|re-evaluate|repeat|recheck|re check|reimage|re image|"
                       r"reevaluer|reevaluation|re evaluer|recontroler|a recontroler|a controler|a reevaluer|refaire)(?![a-z])")
_REASSESSED_SIGNS = frozenset({"radiculitis", "arachnoiditis", "infection_imaging"})


def _reassessed_imaging(texts: list[tuple[list[Mention], str]]) -> None:
    """An image sign an earlier study suggested, which the request asks to image again, is today's question, not history
    ("Previous MRI suggested radiculitis, please reassess with contrast"; "Previous MRI queried radiculitis (root enhancement).
    Repeat with gad please": session 22, rounds 145, 161, 162). The rest of its sentence and the next one are read."""
    for found, text in texts:
        norm = normalise(text)[0]
        for m in found:
            if not m.history or m.assertion == "negated" or not m.concepts or not m.concepts <= _REASSESSED_SIGNS:
                continue
            later = ".".join(norm[m.end :].split(".", 2)[:2])  # the rest of its sentence and the next one
            if _REASSESS.search(later) and not _TREATED_IN_CLAUSE.search(norm[m.start : m.end + 40]):
                m.history = False


def _other_limb(texts: list[tuple[list[Mention], str]]) -> None:
    """A deficit or radicular symptom of one arm after an operation on the lumbar spine only is out of that operation's
    reach ("Routine 5 yr XR L4-S1 fusion. R arm weakness since R shoulder dislocation yesterday"; "L4/5 microdisc 2015 ...
    R arm paraesthesia C6"; sessions 13-14, rounds 104 and 111): it raises nothing (Mention.elsewhere). Only when every
    operation mentioned is dated to a lumbar or sacral level (levels within its clause) and none to a cervical or thoracic
    one; a mention that names a leg, both sides or the sphincters, or no limb at all, is untouched. Unknown stays positive:
    an operation without a level keeps every mention."""
    regions: set[str] = set()
    for found, text in texts:
        norm = normalise(text)[0]
        for m in found:
            if not m.concepts & OPERATION_CONCEPTS or m.assertion == "negated" or m.hypothetical or m.experiencer != "patient":
                continue
            lo = max(_clause_start(norm, m.start), m.start - 39)
            hi = min(_clause_end(norm, m.end), m.end + 40)
            window = norm[lo:hi]
            found_region = False
            for letter, _ in _LEVEL.findall(window):
                regions.add(_LEVEL_REGION.get(letter, "L"))
                found_region = True
            for region, pattern in _REGION_WORDS.items():
                if pattern.search(norm[m.start:m.end]) or pattern.search(window):
                    regions.add(region)
                    found_region = True
            if not found_region:
                return  # an operation without a level: its reach is unknown
    if regions != {"L"}:
        return
    for found, text in texts:
        norm = normalise(text)[0]
        for m in found:
            if not m.concepts or not m.concepts <= _LIMB_CONCEPTS:
                continue
            lo = max(_clause_start(norm, m.start, (". ", ";", ",", "\n")), m.start - 29)
            window = norm[lo : m.end + 20]
            head = norm[lo : m.end]
            if _UPPER_LIMB.search(head) and not _LOWER_LIMB.search(window):
                m.elsewhere = True
            elif (after := _LIMB_AFTER.match(norm, m.end)) and not _LOWER_LIMB.search(norm[lo : after.end() + 25]):
                m.elsewhere = True  # session 21: "Numbness of the 4th and 5th fingers since elbow surgery": the limb after the finding


#: A finding said, later in its sentence, to be unchanged for months or years, since a past year, or as before the
#: operation ("deltoid 3/5 unchanged for 18 months", "Hoffmann + bilat, mild gait ataxia, unchanged over 12 months",
#: "hypoesthésie en selle et vessie neurologique (autosondages), stables depuis 10 ans", "TA 2/5 as in 2019")
_UNCHANGED_LONG = re.compile(
    r"^[^.;\n]{0,70}?(?<![a-z])(?P<cue>(?:unchanged|stable|stables|inchange|inchangee|inchanges|inchangees|identique|identiques|the same|same|"
    r"fixed|static|persistant|persistante|persistent)\s+(?:for|over|since|depuis|pendant|durant|en|over the (?:last|past)|for the (?:last|past))\s+"
    r"(?:(?:\d{1,2}|a|an|one|un|une|a few|several|some|many|plusieurs|quelques|deux|trois|quatre|cinq|six|dix|two|three|four|five|six|ten)\s+"
    r"(?:months?|mois|years?|yrs?|ans?|annees?)|(?:19|20)\d\d)"
    r"|(?:as in|as it was in|comme en|idem|same as in) (?:19|20)\d\d"
    r"|(?:at|a) (?:every|each|chaque|toutes les) (?:review|reviews|visit|visits|consultation|consultations)"
    # session 15 (round 120): known and unchanged ("Babinski bilatéral connu depuis la myélopathie opérée en 2020, inchangé"),
    # known or long-standing for years ("'wet himself' once - known urge incontinence for years, under urology"), known
    # long-standing ("'can't feel his feet' - on exam sensation unchanged, known longstanding diabetic neuropathy")
    r"|(?:known|connue?s?)(?: [^ .;]+){0,8}?,? (?:unchanged|inchangee?s?|stable|stables)"
    # (the last two only as a gloss after a dash, a colon or "=": "retention 900 ml, known diabetic for years" stays current)
    r"|(?:- |: |= )(?:[^.;:=-]{0,40}? )?(?:known|connue?s?|longstanding|long standing|chronic|chronique|chroniques)(?: [a-z]+){0,4} "
    r"(?:for|depuis|over|pendant) (?:\d{1,2} |many |several |plusieurs |des |de nombreuses |quelques |a few )?(?:years|yrs|ans|annees)"
    r"|(?:- |: |= )(?:[^.;:=-]{0,40}? )?(?:known (?:longstanding|long standing|chronic)|connue? (?:de longue date|depuis longtemps|ancienne?))"
    r")(?![a-z])")
#: ... or as before the operation, for a sign that is no pain ("Hoffmann + bilat, unchanged from preop exam"): the same pain as
#: before the operation is a failed operation or a recurrence, read by the inefficacy and late rules
_UNCHANGED_PREOP = re.compile(
    r"^[^.;\n]{0,70}?(?<![a-z])(?:unchanged from|same as|identical to|no different from|identique a|inchangee? par rapport a|comme en|comme a) "
    r"(?:the |his |her |l |la |le )?(?:pre ?op|preop|pre operative|preoperative|pre operatoire|preoperatoire|before (?:the )?(?:surgery|operation|op))(?![a-z])")
_PAIN_CONCEPTS = frozenset({"radicular_pain", "cruralgia"})
_UNCHANGED_CONCEPTS = _LONGSTANDING_CONCEPTS | {"sphincter", "saddle_anaesthesia", "paraplegia", "cauda_equina", "emergency_word"}


#: "Paraplégique D6 complet (ASIA A) depuis AVP 2011": since an accident of an earlier year, later in the sentence
_SINCE_ACCIDENT_YEAR = re.compile(r"^[^.;\n]{0,40}?(?<![a-z])(?:since|depuis)\s+(?:(?:an?|the|his|her|un|une|l|son|sa)\s+)?"
                                  r"(?:avp|rta|mva|accident|accident de la route|fall|chute|injury|trauma|traumatisme|car crash|crash)"
                                  r"(?:\s+(?:in|en|de|of))?\s+\(?((?:19|20)\d\d)(?![0-9])")

# The phrases whose two readings are different conditions (not one kind of another: a cruralgia stays a radicular pain when a
# sciatica is denied beside it, blind round 23)
_TWO_READINGS = frozenset({frozenset({"dvt", "radicular_pain"})})


def _denied_reading(texts: list[tuple[list[Mention], str]]) -> None:
    """A phrase with two readings ("douleur du mollet": a calf's thrombosis or a radicular pain) loses the reading its own
    sentence denies ("Douleur du mollet, pas de sciatique": the calf, not the root; session 18, round 136). A reading is
    dropped only for the pairs of `_TWO_READINGS`, and only for a denial in the same field, at most two sentences on or
    before (session 19, round 138: "douleur du mollet gauche, Homans +, ... Pas de déficit. Radiculalgie ? non")."""
    for found, text in texts:
        denied = [m for m in found if m.assertion == "negated" and m.concepts]
        if not denied:
            continue
        ambiguous = [(m.start, m.end, m.concepts) for m in found if m.concepts in _TWO_READINGS]
        for m in found:
            if m.assertion == "negated":
                continue
            # the ambiguous phrase itself, or a longer reading of it with one of its readings ("douleur du mollet gauche", a
            # side's radicular pain over "douleur du mollet"; session 19, round 138)
            longer = m.concepts not in _TWO_READINGS
            if longer and not any(a < m.end and m.start < b and m.concepts and m.concepts < pair for a, b, pair in ambiguous):
                continue
            for d in denied:
                if not (d.concepts & m.concepts) or (d.concepts >= m.concepts and not longer):
                    continue  # (m is never d: m is affirmed or uncertain, d negated); the phrase keeps one reading
                a, b = (m.end, d.start) if m.end <= d.start else sorted((d.end, m.start))
                if len(re.findall(r"[.;\n]", text[a:b])) > 2 or b - a > 160:
                    continue  # too far: another subject
                m.concepts = frozenset(m.concepts - d.concepts)

# session 18 (round 136): a deficit there since a year long past and said unchanged or old in the same sentence ("Foot drop L since
# 2019 (old L5 palsy, wears AFO), unchanged"); the year alone is not enough (a deficit "since 2019" may be worse now)
_SINCE_YEAR_UNCHANGED = re.compile(r"^[^.;\n]{0,40}?(?<![a-z])(?P<cue>since|depuis)\s+(?:(?:early|late|mid|debut|fin)\s+)?((?:19|20)\d\d)(?![0-9])"
                                   r"[^.;\n]{0,60}?(?<![a-z])(?:unchanged|stable|inchange|inchangee|inchanges|old|ancien|ancienne|"
                                   r"sequelle|sequelles|sequellaire|longstanding|long standing)(?![a-z])")


def _longstanding_unchanged(texts: list[tuple[list[Mention], str]], study_dt=None) -> None:
    """A deficit, a medullary sign or a sphincter or saddle finding said, later in its sentence, to be unchanged for months
    or years, since a past year, at every review or as before the operation is an old one (session 14, round 113: "Post-op
    R C5 palsy 2024, deltoid 3/5 unchanged for 18 months", "Longstanding cervical myelopathy: Hoffmann + bilat, mild gait
    ataxia, unchanged over 12 months", "Séquelles : hypoesthésie en selle et vessie neurologique (autosondages), stables
    depuis 10 ans"). A new or worse word between them keeps it current; weeks or "since surgery" are not enough (a deficit
    there since the operation two days ago is the emergency)."""
    for found, text in texts:
        for m in found:
            if m.history or not m.concepts or not m.concepts <= _UNCHANGED_CONCEPTS:
                continue
            after = normalise(text[m.end : m.end + 110])[0]
            hit = _UNCHANGED_LONG.search(after) or (not m.concepts & _PAIN_CONCEPTS and _UNCHANGED_PREOP.search(after))
            accident = _SINCE_ACCIDENT_YEAR.search(after)
            if not hit and accident and (study_dt is None or int(accident.group(1)) < study_dt.year):
                hit = accident
            since_year = None if hit else _SINCE_YEAR_UNCHANGED.search(after)
            if since_year and (study_dt is None or int(since_year.group(2)) < study_dt.year - 1):
                hit = since_year
            sentence = after.split(". ")[0]
            lead = after[: hit.start("cue")] if hit and "cue" in hit.re.groupindex else ""
            if hit and (_CURRENT_BETWEEN.search(lead) or _TODAY.search(lead)):
                continue  # "retention 900 ml today, known back pain for years": the duration is another complaint's
            if (hit and not _NOT_LONGSTANDING.search(normalise(text[max(0, m.start - 20) : m.end])[0] + " " + hit.group())
                    and not _PROGRESSION_AFTER.search(sentence)):  # "paraplegia since RTA 2011, now worse over 2 days"
                m.history = True


_TODAY = re.compile(r"(?<![a-z])(?:today|aujourd hui|ce jour|since|depuis|this am|tonight|ce soir|cette nuit|last night)(?![a-z])")
_CURRENT_BETWEEN = re.compile(r"(?<![a-z])(?:new|newly|worse|worsening|sudden|acute|now|but|mais|maintenant|actuellement|yesterday|hier|"
                              r"tonight|overnight|this morning|ce matin|nouveau|nouvelle|aggrave|aggravation|brutal|brutale|since this|depuis ce)(?![a-z])")


def _grade_of_old_deficit(texts: list[tuple[list[Mention], str]]) -> None:
    """A muscle power grade written in the sentence of an old deficit is that deficit's ("residual R foot drop since then,
    wears AFO, unchanged at every review incl. today (TA 2/5 as in 2019)", "Steppage gauche séquellaire d'une discectomie
    en 2020 (releveurs 2/5)", "Post-op R C5 palsy 2024, deltoid 3/5"; session 14, round 113): history too, unless a new,
    worse or present word, or another current deficit, stands between them."""
    for found, text in texts:
        old = [m for m in found if m.history and m.concepts & {"motor_deficit", "paraplegia"} and not m.measurement]
        if not old:
            continue
        norm = normalise(text)[0]
        current = [m for m in found if m.raises and m.concepts & {"motor_deficit", "paraplegia"} and not m.measurement]
        for g in found:
            if not g.measurement or g.history or "motor_deficit" not in g.concepts:
                continue
            for h in old:
                lo, hi = (h.end, g.start) if h.end <= g.start else (g.end, h.start)
                if hi - lo > 120 or lo > hi:
                    continue
                between = norm[lo:hi]
                if any(c in between for c in (". ", ";", "\n")) or _CURRENT_BETWEEN.search(between):
                    continue
                if any(lo <= c.start < hi for c in current):
                    continue
                g.history = True
                break


def _preoperative_longstanding(texts: list[tuple[list[Mention], str]]) -> None:
    """In a pre-operative study (every operation named is planned: "L4/5 PLIF booked for tomorrow"), a deficit or
    radicular pain said, in its clause, to last for weeks, months or years or to be known and stable ("weak EHL 4/5 for 3
    months", "sciatique depuis 4 mois", "EHL 4/5, known and stable for 3 weeks") is the indication, not a new finding (session 11, round 86). An emergency (retention, saddle anaesthesia,
    cauda equina) keeps its reading; a new or worse word in the clause does too."""
    operated = set(OPERATED)
    operations = [m for found, _ in texts for m in found if m.concepts & operated and m.assertion != "negated"]
    if not operations or not all(m.hypothetical for m in operations):
        return
    for found, text in texts:
        for m in found:
            if m.history or not m.concepts or not m.concepts <= _LONGSTANDING_CONCEPTS:
                continue
            after = normalise(text[m.end : m.end + 80])[0]
            hit = _LONGSTANDING.search(after)
            if hit and not _NOT_LONGSTANDING.search(normalise(text[max(0, m.start - 20) : m.end])[0] + " " + hit.group()):
                m.history = True


_COPIED_ORDER = re.compile(
    r"(?<![a-z])(?:copied from (?:the |a |an )?(?:previous|prior|old|older|earlier) (?:order|request|referral)|"
    r"auto ?-?populated from (?:the |a |an )?(?:previous|prior|old|earlier) (?:order|request|referral)|"
    r"\[?(?:earlier|previous|prior|older) (?:entry|entries|note|notes)(?: dated| of| from| on)?|(?:note|entree) precedente(?: du)?|"
    r"(?:copied|pasted|taken|quoted) from (?:the |a |an |his |her )?(?:old |previous |prior |earlier |original )?(?:pre ?-?op(?:erative)? )?"
    r"(?:clinic |gp |referral |discharge |icu |itu |ward |nursing |medical |ed |a e |hdu |theatre |anaesthetic |physio )?"
    r"(?:summary|letter|note|notes|report|record|records|entry|op note|operation note|operative note|op report|operative report)|"
    r"(?:copie|recopie|extrait) (?:du|de la|de l) (?:compte rendu|cr|courrier|lettre|resume|compte-rendu)|"
    r"copie de la (?:demande|prescription) (?:du|precedente)|(?:renseignements )?recopies? de la (?:demande|prescription)|"
    r"(?:previous|prior|old|earlier) (?:order|request|referral) (?:text |dated |du |of |in |from )|demande precedente du|"
    # session 20 (round 146): "Copied op note 2023: 'massive blood loss ...'", "Copie du dossier : 'J1 : globe vésical 900 mL ...'"
    r"(?:copied |pasted |copy of (?:the )?|extract from (?:the )?)(?:old |previous |prior |earlier |original )?(?:op note|operation note|operative note|"
    r"op report|operative report|discharge summary|discharge letter|clinic letter|notes?)|"
    r"(?:copie|recopie|extrait|copie-colle|copier-coller) (?:du|de l|de la|des) (?:dossier|ancien dossier|observation|observations|notes|"
    r"compte rendu operatoire|cr operatoire|resume de sortie|lettre de sortie))")
_PRESENT_IN_COPY = re.compile(r"(?<![a-z])(?:now|today|currently|current request|this time|actuellement|aujourd ?'?hui|ce jour|"
                              r"demande actuelle)(?![a-z])")


def _copied_spans(text: str) -> list[tuple[int, int]]:
    """The spans of the text (original offsets) that are an earlier order copied into this one: from the copy's cue to the
    end of its sentence, or to a word of the present ("Copied from previous order 14/03/2025: 'POD1 ?epidural haematoma,
    saddle numbness' - MRI showed a seroma only", "Copie de la demande du 03/02/2025 : « SQC ? J+1 »", "Auto-populated from
    previous order dated 03/03/2026: POD1, new foot drop", "Renseignements recopiés de la demande du 12/03/2026 : ...";
    session 11, rounds 91 and 93). Read once per field, for the lexicon's mentions and the measurements alike."""
    norm, index = normalise(text)
    spans = []
    for hit in _COPIED_ORDER.finditer(norm):
        stop = re.search(r"\. |\.$|\n|\||\*\*\*", norm[hit.end() :])
        end = hit.end() + stop.start() if stop else len(norm)
        present = _PRESENT_IN_COPY.search(norm, hit.end(), end)
        if present:
            end = present.start()
        if end > hit.end():
            spans.append((index[hit.start()], index[end - 1] + 1))
    return spans


#: A clause that opens with a history cue: a time in it dates a past event ("h/o positional headache on POD2 after that
#: surgery, resolved": session 12, round 87).
_HISTORY_CLAUSE = re.compile(r"^\s*(?:h/o|h/o of|hx of|hx|history of|past history of|previous|previously|prior|pmh|atcd|atcds|"
                             r"antecedents? de|antecedents? d|dans les antecedents)(?![a-z])")


_DAY_LABEL_IN_CLAUSE = re.compile(r"(?<![a-z0-9])(?:(?:pod|day|j|jour) ?\+? ?(\d{1,2})(?![0-9])|(\d{1,2}) ?/ ?7(?= ?(?:post|po\b|p/o)))")
#: session 19 (round 138): "pt asymptomatic then and now": the patient's state then and now, not the finding going on
_THEN_AND_NOW = re.compile(r"(?<![a-z])(?:(?:both )?then and now|at the time and now|alors et maintenant|a l epoque et maintenant|"
                           r"then and still now)(?![a-z])")
_STILL = re.compile(r"(?<![a-z])(?:now|still|since|persist\w*|ongoing|again|worse|worsening|today|currently|toujours|depuis|encore|"
                    r"persiste\w*|actuellement|aujourd|maintenant|aggrav\w*|recurr\w*|recidiv\w*)(?![a-z])")


_RESOLVED_IN_CLAUSE = re.compile(r"(?<![a-z])(?:resolved|resolue?s?|settled|levee?|disparue?s?|gone|recovered|recuperee?)(?![a-z])")


#: What an operation away from the spine can be complicated by (its wound, its fever, its thrombosis, its bleeding)
_OTHER_OP_COMPLICATIONS = frozenset({"dvt", "wound", "abscess", "fever", "inflammation_marker", "crp_high", "crp_raised", "bleeding",
                                     "infection_imaging", "haematoma", "seroma"})
#: Words that put a sentence on the spine ("back wound", "cicatrice lombaire")
_SPINE_WORDS = re.compile(r"(?<![a-z])(?:spine|spinal|back|lumbar|lombaire|lombaires|rachis|rachidien|rachidienne|dos|dorsal|cervical|"
                          r"cervicale|thoracic|vertebral|vertebrale|epidural|epidurale|peridural|peridurale|intracanal\w*)(?![a-z])")


def _other_operation_sentences(texts: list[tuple[list[Mention], str]]) -> list[tuple[str, int, int]]:
    """A sentence about an operation away from the spine (a knee replacement, a cholecystectomy, a hysterectomy) with no
    spine procedure or spine word in it: the wound, fever, thrombosis or bleeding it tells is that operation's, and its
    day label or date is that operation's time, not the spine's (session 14, round 113: "Hospitalisée en orthopédie :
    prothèse totale de genou droit J3, hématome du genou ponctionné", "Day 3 post abdominal hysterectomy: fever 38.7,
    Pfannenstiel wound discharging pus, CRP 180", "Inpatient after R TKR 31/10; R calf DVT confirmed on duplex 04/11").
    Those mentions raise nothing (Mention.elsewhere); returns the sentences, whose readings the caller drops."""
    spans: list[tuple[str, int, int]] = []
    spine_ops = set(PROCEDURES) | {"hardware"}
    for found, text in texts:
        others = [m for m in found if "other_surgery" in m.concepts and m.assertion != "negated" and m.experiencer == "patient"]
        if not others:
            continue
        norm = normalise(text)[0]
        for o in others:
            a = _clause_start(norm, o.start, _SENTENCE_MARKS)
            b = _clause_end(norm, o.end, _SENTENCE_MARKS)
            inside = [m for m in found if a <= m.start < b]
            if any(m.concepts & spine_ops and "other_surgery" not in m.concepts for m in inside):
                continue
            if _SPINE_WORDS.search(norm[a:b]):
                continue
            for m in inside:
                if m.concepts and m.concepts <= _OTHER_OP_COMPLICATIONS:
                    m.elsewhere = True
            spans.append((o.keyword, a, b))
    return spans


#: A historical complication treated on its day ("L4/5 microdiscectomy 2022, complicated by epidural haematoma evacuated POD1, full
#: recovery"; session 16, round 127): the day dates that treatment, not this study.
_TREATED_IN_CLAUSE = re.compile(r"(?<![a-z])(?:evacuated|drained|explored|washed out|decompressed|evacue|evacuee|draine|drainee|"
                                r"reopere|reoperee|reoperated|returned to theatre|back to theatre)(?![a-z])")


#: Mentions that describe the operation itself (its implants, its levels): never a past event of their own (_earlier_day_events)
_DESCRIBES_OPERATION = frozenset({"hardware", "screw_rod_construct", "cord_level_operation"})


def _earlier_day_events(texts: list[tuple[list[Mention], str]], readings: list[Reading]) -> list[tuple[str, int, int]]:
    """A finding told with an earlier postoperative day ("Wound explored POD9 for haematoma: infection ruled out", "Transient
    urinary retention POD1 ...") when every reading dates this study at least a week after that day is an event of the
    past: history, unless its clause says it goes on (now, still, since, again, worse...; session 12, round 97)."""
    past: list[tuple[str, int, int]] = []  # (field keyword, clause start, clause end) of the events made history
    if not readings:
        return past
    operated = set(OPERATED)
    for found, text in texts:
        for m in found:
            if m.hypothetical or not m.concepts or m.concepts & operated or m.concepts <= _DESCRIBES_OPERATION:
                continue  # the implants or levels describe the operation ("POD2 revision L4-5 fusion (redo screws)"; session 22, round 174)
            a = _clause_start(text, m.start, _CLAUSE_MARKS + (":",))
            b = _clause_end(text, m.end, _CLAUSE_MARKS + (":",))
            clause = normalise(text[a:b])[0]
            days = [int(d or d7) for d, d7 in _DAY_LABEL_IN_CLAUSE.findall(clause)]  # POD3, J3, and the UK 3/7 post-op
            # the study's time: the readings outside this clause (the day label of the event is a reading too)
            oa, ob = a, b
            treated = m.history and _TREATED_IN_CLAUSE.search(clause) is not None
            if treated:
                # a treated historical complication: its own comma-bounded part ("..., complicated by epidural haematoma evacuated
                # POD1, ...") is the event; the operation's year before the comma dates the operation
                oa = _clause_start(text, m.start, _CLAUSE_MARKS + (":", ",", "complicated", "compliqu", "Complicated", "Compliqu"))
                ob = _clause_end(text, m.end, _CLAUSE_MARKS + (":", ","))
            outside = [r for r in readings if r.hours is not None
                       and not (r.keyword == m.keyword and r.start is not None and oa <= r.start < ob)]
            # another day label ("pain resolved by POD4") dates another past event, not this study, when a reading that is no
            # day label dates it ("6/52 post L4/5 TLIF"; session 13, round 100)
            dated = [r for r in outside if not _DAY_LABEL_IN_CLAUSE.search(normalise(r.text or "")[0])]
            others = [r.hours for r in (dated or outside)]
            if days and others and all((d + 7) * 24 <= min(others) for d in days) and ((m.history and (_TWOC_PASSED.search(clause) or _RESOLVED_IN_CLAUSE.search(clause) or treated))
                                                                                             or (not m.history and not _STILL.search(_THEN_AND_NOW.sub(" ", clause)))):
                m.history = True  # (already history: "retention day 0 ..., voiding normally since": its day is a past one too)
                past.append((m.keyword, oa, ob))
    return past


#: A reading that dates an earlier image to compare with ("Compare with day 1 post-op lateral"; session 13, round 105)
_COMPARED_WITH = re.compile(r"(?<![a-z])(?:compare[ds]?|comparing|comparison|compared|comparer|comparaison|versus|vs|cf)"
                            r"(?: (?:with|to|against|avec|a|au|aux))?(?: (?:the|a|an|le|la|les|l|un|une|prior|previous|old|earlier|"
                            r"precedent|precedente|ancien|ancienne))*\s*$")


#: A day label that dates the discharge ("sortie à J2 indolore", "discharged home POD3"): a past event, not this study
_DISCHARGED_ON = re.compile(r"(?<![a-z])(?:sortie?s?|sorti|retour a domicile|rad|discharged|discharge|d/c|home)(?: home)?(?: (?:on|le|a|at))?\s*$")


def _present_readings(readings: list[Reading], fields: list[dict], copied: dict[int, list[tuple[int, int]]]) -> list[Reading]:
    """The time readings without those that date a past event (inside a copied earlier order, or in a clause opened by a
    history cue) when another reading dates the operation of this study: "R L5/S1 microdisc March 2026 ... h/o positional
    headache on POD2 after that surgery" is months after the operation, not two days (session 12, round 87). A past
    event's time is kept when it is the only one (unknown is never negative: it may be all the text says). A reading right
    after "compare with" dates the image to compare with ("Compare with day 1 post-op lateral"; session 13, round 105)."""
    by_keyword = {f.get("keyword"): (i, f.get("value") or "") for i, f in enumerate(fields)}
    past, present = [], []
    for r in readings:
        i, text = by_keyword.get(r.keyword, (None, ""))
        if r.source != "text" or i is None or r.start is None:
            present.append(r)
            continue
        in_copy = any(lo <= r.start and r.end <= hi for lo, hi in copied.get(i, ()))
        clause = max(text.rfind(". ", 0, r.start), text.rfind(";", 0, r.start), text.rfind("\n", 0, r.start), text.rfind("]", 0, r.start))
        opened = _HISTORY_CLAUSE.match(normalise(text[clause + 1 : r.start])[0])
        before = normalise(text[max(0, r.start - 40) : r.start])[0]
        compared = _COMPARED_WITH.search(before) or _DISCHARGED_ON.search(before)
        (past if in_copy or opened or compared else present).append(r)
    return present if present else readings


_TWOC_PASSED = re.compile(r"(?<![a-z])(?:twoc|trial without catheter|trial of void|trial of voiding|ablation de la sonde|retrait de (?:la )?sonde)"
                          r"(?: [a-z0-9]+){0,2} (?:successful|succeeded|passed|ok|reussie?|sans probleme)|(?:successful|passed|passed a|passed his|"
                          r"passed her|reussite de la|reussite du) (?:twoc|trial without catheter|trial of void)(?![a-z])|"
                          # session 12 (rounds 96-97): "catheter out POD2, voiding normally since", "miction spontanée depuis J2"
                          r"(?<!no )(?<!not )(?<!pas de )(?<!absence de )(?<!sans )(?:voiding|voided|passing urine|passed urine|micturating|"
                          r"mictions? spontanees?|mictions? normales?|urine spontanement|urine normalement|reprise (?:des )?mictions?|reprise mictionnelle(?: normale| spontanee)?)(?: (?:normally|well|spontaneously|"
                          r"normalement|bien))? (?:ever )?(?:since|depuis|ce matin|this morning|hier soir|hier|yesterday|overnight|cette nuit)(?![a-z])|"
                          # (session 14, round 115: "Rétention urinaire post-op sondée, reprise mictionnelle ce matin")
                          # session 12 (round 98): "Rétention urinaire post-op à J1 résolue après ablation de sonde"
                          r"(?:resolue?|resolved|levee?|settled) (?:apres|after|following|with|avec) (?:l |la |the )?(?:ablation|retrait|removal|"
                          r"sondage|catheterisation|catheterization)(?: (?:de (?:la )?sonde|of (?:the )?catheter|unique|evacuateur))?(?![a-z])")


_NOT_VOIDING = re.compile(r"(?<![a-z])(?:not|no|nor|never|hasn t|hasnt|has not|haven t|hadn t|can t|cant|cannot|unable to|isn t|wasn t|"
                          r"without|feel|feels|felt|pas|plus|sans|jamais|ne sent|n a|ne peut)(?: \w+){0,2}\s*$")


def _twoc_spans(text: str) -> list[tuple[int, int]]:
    """The spans (original offsets) where a field says a trial without catheter succeeded or the patient voids since
    (`_TWOC_PASSED`; never after a negation: "hasn't voided since surgery", "can't feel herself passing urine since this
    morning"). Read once per field, for the lexicon's mentions and the measurements alike (`_mark_twoc`)."""
    norm, index = normalise(text)
    spans = []
    for hit in _TWOC_PASSED.finditer(norm):
        if _NOT_VOIDING.search(norm[max(0, hit.start() - 30) : hit.start()].replace("'", " ").replace("\u2019", " ")):
            continue
        at = index[hit.start()] if hit.start() < len(index) else len(text)
        until = index[hit.end() - 1] + 1 if hit.end() - 1 < len(index) else len(text)
        spans.append((at, until))
    return spans


def _mark_twoc(mentions: list[Mention], spans: list[tuple[int, int]]) -> None:
    """A urinary retention followed, later in its field, by a trial without catheter that succeeded is history ("POD1
    urinary retention after catheter removal, put down to opioids; TWOC successful POD3, voiding normally"; session 12,
    round 95). A retention named after the trial ("... TWOC passed, now retention again") stays current."""
    for at, until in spans:
        for m in mentions:
            if "sphincter" in m.concepts and m.end <= until and at - m.end <= 160 and not m.hypothetical:
                m.history = True


_INTRAOP_AFTER = re.compile(r"^[^.;,\n]{0,20}?(?<![a-z])(?:intra ?-?op(?:eratively|erative|eratoire)?|in theatre|in theater|per ?-?op(?:eratoire)?|"
                            r"peroperatoire|au bloc|during (?:the )?(?:surgery|operation|procedure))(?![a-z])")
_INTRAOP_BEFORE = re.compile(r"(?<![a-z])(?:intra ?-?op(?:eratively|erative|eratoire)?|in theatre|per ?-?op(?:eratoire)?|peroperatoire|au bloc)"
                             r"[^.;,\n]{0,12}$")


_STABLE_SINCE = re.compile(r"(?<![a-z])(?:stable|obs normal|observations normal|normal obs|normal observations|haemodynamically normal|"
                           r"hemodynamically normal|hemodynamique normale|constantes normales)(?![a-z])")


def _intraoperative_transfusion(found: list[Mention], text: str) -> None:
    """A transfusion given during the operation, with the patient said to be stable since ("2 units transfused intra-op, Hb
    stable 9.8 since POD1, obs normal"), is part of the operation, not a sign of bleeding today (session 12, round 95); the
    haemoglobin and vital signs still speak for today. Without a stable word ("redo yesterday, transfused during surgery")
    it keeps its escalation (guide §7: transfusion cues)."""
    for m in found:
        if "transfus" in normalise(m.text)[0] and (_INTRAOP_AFTER.match(normalise(text[m.end : m.end + 40])[0])
                                                   or _INTRAOP_BEFORE.search(normalise(text[max(0, m.start - 30) : m.start])[0])) \
                and _STABLE_SINCE.search(normalise(text[m.end : m.end + 100])[0]):
            m.history = True


_SCREW_WORD = re.compile(r"(?<![a-z])(?:vis|screw|screws|pedicle screws?)(?![a-z])")


def screws_said_absent(ctx: "Context") -> bool:
    """Is the spine said to have no screws ("OLIF L4-L5 (cage seule, sans vis)", "no screws were used (microdisc only)";
    session 12, rounds 96-97) and no screw named as present? Then a text rule's misplaced_screw or screw_loosening is
    contradicted by the text (the priority it gave stays: only raise)."""
    said = [m for m in ctx.seen.get("no_hardware", []) if _SCREW_WORD.search(normalise(m.text)[0])]
    if not said:
        return False
    named = [m for c in ("hardware", "screw_query", "screw_malposition", "screw_in_canal") for m in ctx.seen.get(c, [])
             if _SCREW_WORD.search(normalise(m.text)[0]) and m.assertion != "uncertain"]
    return not named


def _bracket_detail_history(measured: list, found: list[Mention], text: str) -> None:
    """A measurement in a bracket that details a historical finding of its concept is history too ("Déficit L5
    pré-opératoire en récupération (releveurs 4+/5)": the pre-operative deficit's grade; session 12, round 94)."""
    for mm in measured:
        if mm.history:
            continue
        paren = text.rfind("(", 0, mm.start)
        if paren < 0 or ")" in text[paren : mm.start]:
            continue
        for m in found:
            if (m.history and m.concepts & mm.concepts and m.end <= paren and paren - m.end <= 40
                    and not re.search(r"[.;\n]", text[m.end : paren])):
                mm.history = True
                break


#: Session 20 (rounds 143-149): a sentence that says what the patient was taught, told or given about warning signs, risks or
#: complications ("Patient educated again on signs of wound infection and DVT", "Information donnée au patient sur les signes
#: d'alerte (anesthésie en selle, rétention urinaire, fièvre)", "Discussed cauda equina red flags with patient ... - none present")
#: names no current finding. The cue lists (told_before, hypothetical_*) hold the usual wordings; this catches the sentence
#: whatever its word order: an education verb or noun aimed at the patient, a word for signs or risks, no word of the present
#: and no query mark.
_EDU_ACT = re.compile(
    r"(?<![a-z])(?:(?:educated|re ?educated|taught|counsell?ed|instructed|briefed|eduquee?s?|reeduquee?s?|sensibilisee?s?)(?![a-z])|"
    r"(?:patient|pt|patiente|she|he|family|famille)(?: was| has been| a ete| est)? (?:informed|advised|informee?|avertie?|prevenue?)(?![a-z])|"
    r"(?:explained|discussed|reviewed|went through|gone through|expliquee?s?|discutee?s?|revue?s?)(?: [a-z]+){0,6} (?:with|to|avec|au|a la|aux) (?:the |son |sa |ses )?"
    r"(?:patient|pt|patiente|her|him|family|famille|wife|husband|epouse|mari|parents)(?![a-z])|"
    r"(?:given|provided with|handed|received|remis|remise|recu|recue)(?: [a-z]+){0,2} (?:info|information|advice|card|leaflet|booklet|sheet|fiche|carte|brochure)(?![a-z])|"
    r"(?:card|carte|leaflet|fiche|brochure) (?:given|provided|handed|remise?|donnee?)(?![a-z])|"
    r"(?:told|been told|knows|know|aware|sait|savent)(?: [a-z]+){0,2} (?:what to (?:watch|look) for|to (?:ring|call|return|come back|phone|seek)|when to (?:return|come back|call)|quand (?:revenir|consulter|reconsulter))(?![a-z])|"
    r"(?:a |ont )?(?:bien )?compris les (?:signes|symptomes|risques)(?![a-z])|talked(?: with [a-z]+)? about what(?![a-z])|"
    r"(?:information|informations|enseignement|education|conseils|consignes|leaflet|fiche|safety ?netting|safety ?netted|safety ?net)"
    r"(?: [a-z]+){0,3} (?:donnee?s?|faite?s?|given|provided|remise?s?|sur|on|about|re|regarding|concernant|au patient|a la patiente)(?![a-z]))")
_EDU_OBJECT = re.compile(r"(?<![a-z])(?:signs?|symptoms?|red ?flags?|warning|safety[ -]?net|signes?|symptomes?|alerte|alarme|risks?|risques?|"
                         r"complications?|what to (?:look|watch) for|to (?:watch|look out|look) for|to report|a surveiller|a signaler|"
                         r"to (?:ring|call|return|come back|phone|seek)|would feel like|devant (?:l |la |le )?amener a consulter|consulter|reconsulter)(?![a-z])")
_EDU_PRESENT = re.compile(r"(?<![a-z])(?:now|today|currently|tonight|this morning|since (?:this|yesterday|last)|presents? with|presenting with|"
                          r"c/o|complains?|complaining|reports?|reporting|has developed|developed|actuellement|ce jour|aujourd|ce matin|"
                          r"depuis (?:ce|hier|cette|cet)|presente (?:une|un|des)|se plaint|signale|rapporte|apparition|new|nouvelle?s?|nouveaux|"
                          r"informed us|told us|tells us|nous informe|nous a informe|nous dit|nous signale)(?![a-z])")

_EDU_LISTED = re.compile(r"((?<![a-z])(?:signs?|symptoms?|red ?flags?|signes?(?: d alerte| d alarme)?|risks?|risques?|complications?) ?)\([^()]*\)")


def _mark_education(mentions: list[Mention], text: str) -> None:
    """Every finding in a sentence of patient education (see _EDU_ACT) is hypothetical."""
    norm, index = normalise(text)
    if not _EDU_ACT.search(norm):
        return
    ordered = sorted(mentions, key=lambda m: m.start)
    starts = [m.start for m in ordered]
    operated = set(OPERATED)
    for sent in re.finditer(r"[^.;\n|!]+", norm):
        body = sent.group(0)
        # the bracket that lists the signs taught ("Red flags (saddle numbness, retention, new weakness) reviewed with patient")
        # holds the list's words, not the present's (session 21)
        present = _EDU_PRESENT.search(_EDU_LISTED.sub(r"\1", body))
        if "?" in body or not body.strip() or not _EDU_ACT.search(body) or not _EDU_OBJECT.search(body) or present:
            continue
        a, b = index[sent.start()], index[sent.end() - 1] + 1  # original offsets
        for m in ordered[bisect_left(starts, a) : bisect_left(starts, b)]:
            if m.end <= b and m.concepts and not m.concepts & operated:
                m.hypothetical = True


def _mark_copied(mentions: list[Mention], spans: list[tuple[int, int]]) -> None:
    """Every mention inside a copied earlier order (`_copied_spans`) is history."""
    for lo, hi in spans:
        for m in mentions:
            if lo <= m.start and m.end <= hi:
                m.history = True


def _planned_sentences(mentions: list[Mention], text: str) -> None:
    """A procedure in a sentence that says it is planned ("Intervention prévue demain: microdiscectomie")
    is planned too, unless the sentence also dates it in the past."""
    norm, _ = normalise(text)
    for m in mentions:
        if m.concepts <= set(HARDWARE_COMPLICATIONS):
            continue  # "Known L4-5 pseudarthrosis, revision fusion planned": the lesion is a finding, only its repair is planned
        if m.hypothetical or not m.concepts & set(OPERATED) or m.concepts & {"operated"} and len(m.concepts) == 1 and m.text.lower().startswith("post"):
            continue
        a = _clause_start(norm, m.start)
        ends = [i for i in (norm.find(". ", m.end), norm.find("\n", m.end), norm.find(";", m.end)) if i >= 0]
        b = min(ends) if ends else len(norm)
        sentence = norm[a:b]
        if _FUTURE.search(sentence) and not _PAST.search(sentence):
            m.hypothetical = True


#: What joins a planned revision to its reason, the lesion: "... booked next month for known loosening", "prévue le 22/07 pour".
_REASON_OF_REVISION = re.compile(r"^[^.;\n]{0,60}?(?<![a-z])(?:for|pour|because of|due to|en raison d(?:e|u|es)|a cause d(?:e|u|es))(?: (?:a|an|the|his|her|known|confirmed|une?|la|le|l|sa|son|ses))*\s*$")


def _awaiting_revision(mentions: list[Mention], text: str, persistent: set[str]) -> None:
    """A structural lesion (lexicon `persistent`) in the sentence that plans its revision is there now, even when
    dated or said "previous": "Recurrent L4-5 herniation diagnosed 2025, redo discectomy booked", "pseudarthrose
    L4-L5 connue depuis 2024, reprise programmée"."""
    if not persistent:
        return
    norm, _ = normalise(text)
    planned = [p for p in mentions if p.hypothetical and p.assertion != "negated" and p.concepts & set(OPERATED)]
    if not planned:
        return
    planned.sort(key=lambda p: p.start)
    starts = [p.start for p in planned]
    for m in mentions:
        if (m.hypothetical and m.concepts and m.concepts <= persistent and m.assertion != "negated"
                and any(p.end <= m.start and _REASON_OF_REVISION.search(norm[p.end : m.start]) for p in planned)):
            # session 22 (rounds 162, 171): the lesion a planned revision is "for" is there now ("Revision of L5 screws booked
            # next month for known loosening", "reprise chirurgicale prévue le 22/07 pour pseudarthrose L4-L5 connue")
            m.hypothetical = False
        if not m.history or not m.concepts or not m.concepts <= persistent or m.assertion == "negated":
            continue
        a = _clause_start(norm, m.start, lo=max(0, m.start - 400))
        ends = [i for i in (norm.find(". ", m.end, m.end + 400), norm.find("\n", m.end, m.end + 400), norm.find(";", m.end, m.end + 400))
                if i >= 0]
        b = min(ends) if ends else min(len(norm), m.end + 400)
        k = bisect_left(starts, a)
        if k < len(planned) and planned[k].end <= b:
            m.history = False


#: Session 8 (round 46): a complaint that came WITH an event of an earlier year ("T12 burst fracture 2009 with incomplete
#: paraplegia", "chute en 2015 avec paraplégie") is that year's: the year, then "with", then at most two words before it.
_YEAR_WITH = re.compile(r"(?<![0-9])((?:19|20)\d\d)\)?\s*,?\s*(?P<conn>with|avec|complicated by|compliquee?s? d(?:e|u|es)?(?=[\s'’]))"
                        r"[\s'’]+(?:(?!new|nouvelle?s?|nouveaux|acute|aigue?s?|sudden|brutale?s?|worse|worsening)[a-z]+\s+){0,2}$")
_YEAR_RIGHT_BEFORE = re.compile(r"(?:^|[\s(\[])((?:19|20)\d\d)\s*$")
_RECENT_AFTER = re.compile(r"^\s*(?:since|depuis|from|as of|for the (?:last|past)|starting)\s+(?:this|today|tonight|yesterday|last|hier|ce|cette|aujourd|"
                           r"\d+\s*(?:h|hrs?|hours?|days?|d|jours?|j)(?![a-z]))")


_ONSET_WORDS = re.compile(r"(?<![a-z])(?:returned|recurred|came back|started|began|begun|since|from|onset|worse|worsening|again|"
                          r"depuis|reapparu\w*|repris\w*|recidiv\w*|apparu\w*|debut\w*)(?![a-z])")


def _year_history(mentions: list[Mention], text: str, study_dt, chronic: set[str] = frozenset()) -> None:
    """A complaint followed by a year before the study's ("CES in 2015", "(2019)") is history."""
    year_now = study_dt.year if study_dt else None
    procedures = [p for p in mentions if p.concepts & set(OPERATED)]
    for m in mentions:
        if m.concepts & set(OPERATED) or (chronic and m.concepts <= chronic):
            continue  # a chronic condition (lexicon `chronic: true`) dated by the year it began is still there
        if any(m.start <= p.start and p.end <= m.end for p in procedures):
            continue  # "above previous L4-S1 fusion (2018)": the year dates the operation, not the complaint
        if year_now is None:
            year_now = 10_000
        later = " ".join(normalise(text[m.end : m.end + 120])[0].split(".")[:2])  # this sentence and the next: "... Now worse."
        after = normalise(text[m.end : m.end + 50])[0]
        since = _SINCE_YEAR.match(after)
        # session 15 (round 124): the mention took its "depuis" ("ASIA A depuis accident de moto en 2012"): read the same way,
        # current again only when its own sentence says it is worse
        own_since = (_SINCE_YEAR.match(" depuis " + after) if re.search(r"(?<![a-z])(?:since|depuis)$", normalise(m.text)[0])
                     and not _PROGRESSION_AFTER.search(after.split(". ")[0]) else None)
        if since and _PROGRESSION_AFTER.search(later):
            continue  # "paraparesis since 2015, now worse over 2 days": current again (round 14)
        hit = _YEAR_AFTER.match(text[m.end : m.end + 40].lower())
        with_year = _YEAR_WITH.search(normalise(text[max(0, m.start - 40) : m.start])[0])
        if (with_year and int(with_year.group(1)) < year_now
                # "Fusion 2024 with retention": the year dates the operation, the complaint may be today's; "discectomie en 2019
                # compliquée d'une erreur d'étage" (session 18, round 133): a complication of that year's operation is that year's
                and (with_year.group("conn") not in ("with", "avec") or not any(0 <= m.start - p.end <= 40 for p in procedures))
                and not _RECENT_AFTER.match(normalise(text[m.end : m.end + 40])[0])):
            m.history = True
            continue
        if hit and int(hit.group(2)) < year_now and not (hit.group("month") and _ONSET_WORDS.search(text[m.start : m.end + hit.end()].lower())):
            m.history = True  # (a month and year after an onset word date the onset: "back pain returned Nov 2025" goes on)
            continue
        before = _YEAR_RIGHT_BEFORE.search(text[max(0, m.start - 8) : m.start])
        if before and int(before.group(1)) < year_now:
            m.history = True  # session 13 (round 105): "(2017 conus infarct case)": the year right before the complaint dates it
            continue
        if (since or own_since) and int((since or own_since).group(1)) < year_now:
            m.history = True  # session 4 (round 14): "paraplegia since RTA 2011", "incontinence since childbirth 1998"
            continue
        lasting = _FOR_YEARS.match(normalise(text[m.end : m.end + 60])[0])
        if lasting and not _PROGRESSION_AFTER.search(later):
            m.history = True  # session 15 (round 119): "Jambe gauche gonflée depuis 10 ans : lymphœdème connu", "numb foot for years"
            continue
        ago = _YEARS_AGO.match(normalise(text[m.end : m.end + 60])[0])
        # "radiculitis, s/p microdiscectomy 1 yr ago": a procedure between the complaint and the
        # "ago" is what the time dates, not the complaint.
        # session 7 (round 36): a queried complaint too ("Radiculite ? Discectomie L5-S1 il y a 4 ans": the question is today's)
        if ago and not any(m.end <= p.start < m.end + ago.end()
                           and (_STATUS_POST.search(text[m.end : p.end].lower()) or m.assertion == "uncertain"
                                # session 20 (round 150): a recurrence comes after the operation the time dates ("Recurrent L5
                                # radiculopathy L side, previous L4-5 microdiscectomy 3 yr ago")
                                or "recurrent_herniation" in m.concepts) for p in procedures):
            # (p.end: the procedure mention may be the "s/p" itself - round 14, "recurrent R sciatica, s/p R L5-S1 microD 2yrs ago")
            m.history = True


#: "en 2015", "in 2015", "(2015)": a year may stand between a historical complication and its cause.
_ARTICLES = {"a", "an", "the", "un", "une", "le", "la", "l", "les", "his", "her", "son", "sa"}
_YEAR_BETWEEN = re.compile(r"^\s*(?:(?:en|in)\s+)?\(?(?:19|20)\d\d\)?\s*")


#: An earlier year's image or stay just before a bracket ("the 2019 CT of this patient (", "MRI from 2021 admission (")
_DATED_BEFORE_BRACKET = re.compile(r"(?<![0-9/.-])((?:19|20)\d\d)(?![0-9/.-])(?: [a-z]+){0,4}\s*$|(?:ct|mri|mr|irm|scanner|scan|imaging|"
                                   r"admission|hospitalisation|stay|sejour|x ray|radio)s?(?: [a-z]+){0,2} (?:from|of|in|de|en|du) ((?:19|20)\d\d)(?: [a-z]+){0,2}\s*$")


def _bracket_after_history(mentions: list[Mention], text: str, study_dt=None) -> None:
    """A complaint in a bracket that opens right after a historical one details it: "Paraplegic since 2017 (conus infarct
    after L1-2 discectomy), stable" (session 13, round 105); so does a bracket right after an earlier year's image or stay
    ("re-send the 2019 CT of this patient (L5 screw breaching canal ...)", "MRI from 2021 admission (post-op cauda equina
    claim)"; round 107); not when the bracket says something goes on now."""
    year_now = study_dt.year if study_dt else None
    operated = set(OPERATED)
    for m in mentions:
        if m.history or m.concepts & operated:
            continue
        paren = text.rfind("(", 0, m.start)
        if paren < 0 or ")" in text[paren : m.start] or any(c in text[paren : m.start] for c in ".;\n"):
            continue
        close = text.find(")", m.end)
        inside = normalise(text[paren : close if close >= 0 else m.end + 60])[0]
        if _STILL.search(inside) or _NOT_LONGSTANDING.search(inside):
            continue
        if any(h.history and not h.concepts & operated and h.end <= paren and not text[h.end : paren].strip(" ,")
               or (h.history and h.end <= paren and _SINCE_YEAR.match(normalise(text[h.end : paren])[0]))
               for h in mentions):
            m.history = True
            continue
        lead = text[max(0, paren - 50) : paren]
        lead = lead[_clause_start(lead, len(lead)) :]
        dated = _DATED_BEFORE_BRACKET.search(normalise(lead)[0])
        if dated and year_now and int(dated.group(1) or dated.group(2)) < year_now:
            m.history = True


def _history_cause(mentions: list[Mention], text: str, cues) -> None:
    """The cause of a historical complication, named right after it, is history too: "ATCD de SQC en 2015 sur
    hématome", "history of CES in 2015 due to a haematoma" (lexicon cues history_cause_between). Only a year and
    one of those words may stand between, so a new complaint in the same sentence stays current."""
    if not cues:
        return
    allowed = {" ".join(c) for c in cues}
    ordered = sorted(mentions, key=lambda m: m.start)
    for p, m in zip(ordered, ordered[1:]):
        if not p.history or m.history or p.hypothetical or m.concepts & set(OPERATED):
            continue
        between = normalise(_YEAR_BETWEEN.sub(" ", text[p.end : m.start].lower(), count=1))[0].split()
        if between and between[-1] in _ARTICLES:
            between = between[:-1]  # "due to an", "sur un", "par l'"
        if " ".join(between) in allowed:
            m.history = True


#: "discectomy 2012 for ... foot drop", "opéré en 2010 (discectomie en urgence pour anesthésie en selle": the
#: finding is the indication of that operation.
#: "for" + a duration ("fine for years", "well for a while", "pain-free for 3 years") is a pain-free interval, not an indication.
_INDICATION = re.compile(r"(?<![a-z])(for(?!\s+(?:years|yrs|months|weeks|decades|ages|a while|a year|a decade|a few|a couple|"
                         r"some time|a long time|long|several|many|\d|one|two|three|four|five|six|seven|eight|nine|ten)(?![a-z]))|pour|because of|due to|en raison d|en raison de|indication|indique|indiquee|indicated)(?![a-z])")
#: ... unless the text returns to the present before the finding.
_PRESENT = re.compile(r"(?<![a-z])(now|new|nouvelle|nouveau|nouvelles|nouveaux|actuellement|currently|today|aujourd|but|mais|"
                      r"since|depuis|then|puis|again|a nouveau|de nouveau|recurrent|recidive|presents|presente|has|have|c/o|complains)(?![a-z])")
_OLD_YEARS = re.compile(r"(?<![a-z0-9])((?:19|20)\d\d)(?![0-9])|years ago|yrs ago|il y a \d{1,2} ans|\d{1,2} ans auparavant")
#: session 4 (round 14): an operation months ago ("3/12 post C4-6 ACDF for myelopathy", "3 mo s/p decompression for foot drop",
#: "il y a 4 mois"): a deficit given as its indication is the pre-operative one (a stenosis given as indication stays: it is
#: what an inefficacy rule compares against).
_OLD_MONTHS = re.compile(r"(?<![0-9/])(?:[2-9]|1[0-2]) ?/ ?12(?![0-9])|(?<![0-9])(?:[2-9]|1[0-9]) ?(?:months?|mos?|mths?|mois)(?![a-z])")
_DEFICITS = {"medullary", "paraplegia", "motor_deficit", "sphincter", "saddle_anaesthesia", "cauda_equina", "conus_infarct"}


def _old_indication(mentions: list[Mention], text: str, study_dt) -> None:
    """A finding given as the indication of an operation done years before the study is history."""
    year_now = study_dt.year if study_dt else None
    norm, _ = normalise(text)
    procedures = [p for p in mentions if p.concepts & OPERATION_CONCEPTS and not p.hypothetical]
    for m in mentions:
        # session 20 (round 146): a hardware complication may be the indication too ("revised 2011 for broken rod")
        if m.history or m.concepts & (set(OPERATED) - set(HARDWARE_COMPLICATIONS)):
            continue
        before = [p for p in procedures if p.end <= m.start]
        if not before:
            continue
        p = before[-1]
        between = norm[p.end : m.start]
        if len(between) > 80 or any(c in between for c in ".;\n") or not _INDICATION.search(between) or _PRESENT.search(between):
            continue
        a = _clause_start(norm, p.start)
        clause = norm[a : m.start]
        old = False
        for hit in _OLD_YEARS.finditer(clause):
            if hit.group(1) is None or year_now is None or int(hit.group(1)) < year_now:
                old = True
        if not old and m.concepts & _DEFICITS and _OLD_MONTHS.search(clause):
            old = True
        if old:
            m.history = True


#: "at (the) original surgery", "during her first operation", "lors de l'intervention initiale", "during the 2019 fusion": an
#: event of that operation.
_AT_OPERATION = re.compile(
    r"(?<![a-z])(?:at|during|in|with|from|after|following|lors de|lors d|pendant|au cours de|au cours d|a|au|apres|suite a|suite au)\s+(?:(?:the|his|her|that|l|la|le|son|sa|cette|ce|cet)\s+)?"
    r"(?:(?:original|initial|first|index|previous|prior|primary|earlier|old|first ever|premiere|premier|initiale|precedente|precedent|"
    r"ancienne|ancien|1st|(?:19|20)\d\d)\s+)*"
    r"(?:surgery|operation|op|procedure|intervention|chirurgie|fusion|arthrodese|discectomy|discectomie|laminectomy|laminectomie|"
    r"decompression|tlif|plif|acdf)(?![a-z])(?:\s*\(?\s*(?:in|en)?\s*\(?((?:19|20)\d\d))?"
)
#: ... dated: a year in the sentence, or "N years ago" / "il y a N ans".
_SENTENCE_YEAR = re.compile(r"(?<![0-9/.-])((?:19|20)\d\d)(?![0-9/])|\d{1,2}\s*(?:years?|yrs?)\s+ago|il y a\s+\d{1,2}\s+ans")
#: A return to the present: the mentions after it are current.
_NOW = re.compile(r"(?<![a-z])(?:now|today|currently|new|since|but|again|this time|presently|maintenant|actuellement|aujourd hui|"
                  r"desormais|nouvelle?s?|nouveaux|depuis|mais|a nouveau|de nouveau|ce jour|cette fois)(?![a-z])")


_OP_QUALIFIER = re.compile(r"(?<![a-z])(?:original|initial|first|index|primary|previous|prior|earlier|old|premiere|premier|initiale|"
                           r"precedente|precedent|ancienne|ancien|1st)(?![a-z])")
_OP_YEAR_AFTER = re.compile(r"^\s*(?:initiale?|originale?|premiere|primaire|index|precedente)?\s*[,(]?\s*(?:in|en|of|de|du)?\s*\(?\s*((?:19|20)\d\d)(?![0-9])|^[^.;\n]{0,25}?(?:\d{1,2}\s*(?:years?|yrs?)\s+ago|"
                            r"il y a\s+\d{1,2}\s+ans)")
_RECENT = re.compile(r"(?<![a-z])(?:yesterday|today|tonight|this morning|last night|overnight|hier|ce matin|aujourd hui|cette nuit|avant hier|"
                     r"pod|post op day|j ?\+? ?\d|d\d|\d+\s*(?:days?|hours?|h|hrs?|weeks?|wks?|jours?|heures?|semaines?)\s*(?:ago|post)|"
                     r"il y a\s+\d+\s*(?:jours?|heures?|semaines?|h))(?![a-z])")


def _old_operation(op: re.Match, norm: str, a: int, b: int, year_now: int | None) -> bool:
    """Is the operation named by op (_AT_OPERATION) one of an earlier year? Its own year ("at original surgery in 2023",
    "during the 2019 fusion", "... 5 years ago"), or a first/original/index one in a sentence dated in an earlier year and
    naming no recent time ("Revision yesterday (primary 2019): transfused during surgery" is today's operation)."""
    def older(y: str) -> bool:
        return year_now is None or int(y) < year_now
    if op.group(1) and older(op.group(1)):
        return True
    inner = re.search(r"(?:19|20)\d\d", op.group(0))
    if inner and older(inner.group(0)):
        return True
    after = _OP_YEAR_AFTER.match(norm, op.end())
    if after and (after.group(1) is None or older(after.group(1))):
        return True
    if _OP_QUALIFIER.search(norm, op.start(), min(b, op.end() + 12)) and not _RECENT.search(norm, a, b):
        return any(hit.group(1) is None or older(hit.group(1)) for hit in _SENTENCE_YEAR.finditer(norm, a, b))
    return False


def _past_operation_events(mentions: list[Mention], text: str, study_dt, chronic: set[str] = frozenset()) -> None:
    """What happened at an operation done in an earlier year is history: "Big blood loss at original surgery in 2023
    needed transfusion", "transfusée lors de l'arthrodèse initiale en 2019". The sentence up to a return to the
    present (now, new, since, mais...) is read as that operation's; a later finding in it stays current."""
    norm, index = normalise(text)
    norm = norm.replace("'", " ").replace("\u2019", " ")  # "lors de l'intervention" (same length: offsets hold)
    year_now = study_dt.year if study_dt else None
    ordered = sorted(mentions, key=lambda m: m.start)
    positions = [bisect_left(index, m.start) for m in ordered]  # each mention's place in the normalised text
    done = -1
    for op in _AT_OPERATION.finditer(norm):
        if op.start() < done:
            continue  # one pass per sentence
        a = _clause_start(norm, op.start())
        ends = [i for i in (norm.find(". ", op.end()), norm.find("\n", op.end()), norm.find(";", op.end())) if i >= 0]
        b = min(ends) if ends else len(norm)
        done = b
        if not _old_operation(op, norm, a, b, year_now):
            continue
        now = _NOW.search(norm, a, b)
        stop = now.start() if now else b
        for i in range(bisect_left(positions, a), bisect_left(positions, stop)):
            m = ordered[i]
            # round 12: "Étage sus-jacent à l'arthrodèse L4-L5 (2017)": a chronic condition next to it is there now
            if not (m.concepts & set(OPERATED) or m.hypothetical or (chronic and m.concepts and m.concepts <= chronic)):
                m.history = True


def _distinct(readings: list[Reading]) -> list[Reading]:
    """Readings that differ by more than a day; the first of each kept (structured first)."""
    out: list[Reading] = []
    for r in readings:
        if all(abs(r.hours - o.hours) > 24 for o in out):
            out.append(r)
    return out


def windows(ctx: Context, hours: float | None, early_days: float) -> set[str]:
    """The course windows whose rules run for one reading of the time since surgery.

    Inside the early window the early rules always run (plus any course cue);
    after it, the course cues decide, or both later windows run; unknown time and
    no cue runs every window, early rules only for emergencies (UNKNOWN_TIME).
    """
    cues = set(ctx.cue_windows)
    if hours is not None:
        if hours <= early_days * 24:
            return {"early"} | cues
        return (cues - {"early"}) or {"inefficacy", "late"}
    return cues or {"early", "inefficacy", "late", UNKNOWN_TIME}


#: Marks a run whose time since surgery is unknown (no reading, no course cue): early rules
#: then count only when they reach STAT (emergencies stay on; early-only URGENT/ROUTINE rules
#: would be over-triage, issue 9 family 8).
UNKNOWN_TIME = "unknown_time"

"""Laboratory values and vital signs in request text -> concept mentions (rules/measurements.yaml).

"T 38.6", "FiÃ¨vre 39Â°C" (repaired first), "CRP 65 and rising", "Hb 12,5 -> 8,4",
"Hb dropped 4 g/dL", "TA 80/45", "FC 125", "bladder scan 800 ml", "globe 1 L", "power 2/5".
A value over its threshold becomes a Mention of the concept named in the YAML, with the
value, unit, threshold and reference in ``Mention.measurement``. A value written as a
condition or target ("si Hb < 7", "if T > 38") is not a reading. Linear in the text.
"""

from __future__ import annotations

import re

from rules.number_words import ONES, TEENS, TENS
from rules.text import Mention, normalise

_NUM = r"(\d{1,4}(?:[.,]\d{1,2})?)"
_FILLER = (r"(?:[\s:=,(~]|of|at|is|was|to|up to|jusqu a|jusqu'a|a|de|du|en|env|environ|approx|around|about|only|"
           r"now|initially|peak|max|pic|measured|mesuree?|reading|value|level|taux|count|dropping|falling|rising|"
           r"trending|went|gone|from|=|still|drifting down|drifting|drifted|drifts|drift|sliding|"
           # round 9: a trend verb before "from a to b" ("hb dropd from 11 to 8.6", "Hb fall from 13 to 12")
           r"dropped|dropd|droped|drop|fell|fallen|fall|falling|decreased|declined|down|passed|passee?|chute|baisse|rose|risen|rise|increased|up|"
           # session 9 (round 53): "CRP creeping up 15 -> 40", "CRP qui grimpe 12 puis 45"
           r"creeping|crept|edging|climbing|climbed|qui|grimpe|monte)*")
#: Session 15 (round 119): a difference written with its sign after the measurement's name, a side word allowed before it
#: ("calf circumference +4 cm", "mollet gauche : +3,5 cm"); read only for measurements with a "rise" threshold.
_SIGNED_RISE = re.compile(rf"^(?:\s*(?:left|right|lt|rt|l|r|gauche|droit|droite|g|d)(?![a-z]))?\s*[:=]?\s*\+\s*{_NUM}")
#: round 13: a four-digit year written after a measurement's name with "en", "in", "since", "depuis" (never "de": "globe de 2000") ("ATCD de rétention urinaire en 2019")
_YEAR = re.compile(r"^(?:19[5-9]\d|20[0-4]\d)$")
_YEAR_BEFORE = re.compile(r"(?<![a-z])(?:en|in|since|depuis)\s*$")
_PAIR = re.compile(r"^\s*/\s*\d{1,3}(?:[.,]\d)?")
#: (session 6, round 23: the first value's moment may stand before the arrow: "Hb 13.1 preop -> 9.4 today")
_TREND = re.compile(rf"^\s*(?:(?:pre[ -]?op(?:erative(?:ly)?|eratoire)?|baseline|on admission|at admission|admission|avant|initially|"
                    rf"initialement|yesterday|hier|\(\s*(?:pod|post op day|day|d|j|jour)\s*\d{{1,2}}\s*\))\s*)?(?:->|-->|=>|→|>|to|a|puis|then|now|then now|et maintenant|,\s*now)\s*{_NUM}")
#: Session 7 (round 41): a value at an earlier day, then today's ("CRP 80 on POD3, 140 today", "CRP 140 (d3), 60 (d7), now 118
#: at d22" reads its last pair): the second value must be said to be now.
#: One more value of a chain after the trend's second ("-> 9.1 -> 7.9"): an arrow only, never a bare "to" or "a".
_CHAIN = re.compile(rf"^\s*(?:->|-->|=>|→|>)\s*{_NUM}")
_TREND_DAY = re.compile(rf"^\s*(?:\(\s*)?(?:on |at |a |le |au )?(?:pod|post op day|day|d|j|jour)\s*\d{{1,2}}\s*\)?\s*[,;]\s*(?:now\s+|maintenant\s+)?{_NUM}"
                        r"(?=\s*(?:mg/l|mg/dl|g/dl|g/l)?\s*(?:today|now|this morning|tonight|aujourd hui|ce jour|ce matin|ce soir|at d\d|a j\d|on pod\s?\d|on day\s?\d))")
#: Session 8 (round 46): values listed by day ("CRP : J2 180, J4 95, J7 210", "Hb d1 11.8; d2 9.4"): the trend is from the
#: first value listed to the last (a second peak after a fall reads as its last value, as a single value would).
_DAY_ITEM = rf"(?:pod|post op day|day|d|j|jour)\s*\d{{1,2}}\s*[:=]?\s*{_NUM}\s*(?:mg/l|mg/dl|g/dl|g/l|mmol/l)?"
_DAY_LIST = re.compile(rf"^\s*:?\s*{_DAY_ITEM}(?:\s*[,;/]\s*(?:then\s+|puis\s+)?{_DAY_ITEM}|\s*(?:->|→|then|puis)\s*{_DAY_ITEM})+")
#: Session 16 (round 128): the values listed with their day after each ("Hb 13,1 (J0) / 10,4 (J1) / 8,0 (J2)"): the same trend.
_VALUE_DAY_ITEM = rf"{_NUM}\s*(?:mg/l|mg/dl|g/dl|g/l|mmol/l)?\s*\(\s*(?:pod|post op day|day|d|j|jour)\s*\d{{1,2}}\s*\)"
_VALUE_DAY_LIST = re.compile(rf"^\s*:?\s*{_VALUE_DAY_ITEM}(?:\s*(?:[,;/]|->|→|then|puis)\s*{_VALUE_DAY_ITEM})+")
#: Session 19 (round 140): three or more values in a row separated by slashes ("Hb 12.4 / 10.8 / 9.0 / 7.9 over 36 h"): a trend from
#: the first to the last (two values are a pair or a pressure, "H/H 11/33", "124/70", and are never read so).
_SLASH_LIST = re.compile(rf"^\s*:?\s*{_NUM}(?:\s*(?:g/dl|g/l|mg/l)?\s*/\s*{_NUM}){{2,}}(?![0-9/])")
_THOUSANDS = re.compile(r"(?<![\d.,/])(\d{1,2}) (\d{3})(?=\s*(?:ml|mls|cc)(?![a-z]))")
_GRID_HEAD = re.compile(r"(?<![a-z])(?:mrc|power|motor|force|testing musculaire|bilan moteur|cotation)\b[^\n]{0,30}\n")
_GRID_ROW = re.compile(r"(?m)^[ \t]*(?P<name>[a-z][a-z .'-]{1,24}?)[ \t]+(?P<grades>[0-5](?:[ \t]+[0-5]){1,3})[ \t]*$")
#: The earlier value written after the current one: "Hb 85 (from 140)", "Hb 8.1, was 12.9", "Hb 9 down from 13", "Hb 7,9 vs 12,4 en pré-op".
_FROM = re.compile(rf"^\s*[(,]?\s*(?:down from|dropped from|fallen from|falling from|decreasing from|declining from|coming down from|settling from|improving from|en baisse depuis|en baisse par rapport a|en diminution depuis|from|was|previously|prev|baseline|pre[ -]?op(?:erative(?:ly)?|eratoire)?|vs|versus|contre|"
                   rf"au lieu de|initialement|initially|avant)\s*:?\s*(?:of |a |de )?"
                   # session 15 (round 121): the other side named ("L calf 41 cm vs R 36 cm")
                   rf"(?:(?:left|right|lt|rt|l|r|g|d|gauche|droite?|other side|contralateral|controlateral)\s+)?{_NUM}"
                   # session 9 (round 65): the earlier value first, its moment after it, in brackets ("Hb 8,2 (12,4 en préop)")
                   rf"|^\s*\(\s*{_NUM}\s*(?:g/dl|g/l|mg/l|mmol/l)?\s*(?:en |a l |at |on )?(?:pre[ -]?op(?:erative(?:ly)?|eratoire)?|preop|baseline|admission|l admission)\s*(?=\))")
_CONDITION = re.compile(r"(?<![a-z])(si|if|when|lorsque|quand|target|objectif|cible|seuil|threshold|goal|keep|maintenir|"
                        r"unless|sauf si)(?![a-z])[^.;\n]{0,20}$")
#: A laboratory's normal written right after a value: "(N < 5)", "(normal < 5)", "(VN < 5)", "(N: 0-5)", "(ULN 5)", "(norme < 5)"
_STATED_NORMAL = re.compile(r"^\s*[\(\[]\s*(?:n|nl|vn|normal|normale|norme|normes|ref|reference|uln|lsn|valeur normale)\s*[:=]?\s*"
                            r"(?:<|<=|≤|inf a|inferieure? a|below|under|up to|jusqu a)?\s*(?:0\s*(?:-|a|to)\s*)?(\d+(?:[.,]\d+)?)")
_COMPARATOR = re.compile(r"[<>≤≥]|\b(?:sup|inf|superieure? a|inferieure? a|above|below|over|under|greater than|less than)\s*$")
_UNIT_AFTER = re.compile(r"^\s*(°\s*c|°|c\b|f\b|mg/l|mg/dl|g/dl|g/l|mmol/l|ml|cc|cm\b|l\b|litres?|liters?|/min|bpm|mmhg|cmhg|"
                         r"g/dl|x ?10\^?9/l|g/l|/mm3|giga/l|/5)?")


# The number words read here: not "une" nor "octante" (as before the shared vocabulary), nor the French compound teens.
_ONES = {k: v for k, v in ONES.items() if k != "une"}
_TENS_W = {k: v for k, v in TENS.items() if k != "octante"}
_TEENS_W = {k: v for k, v in TEENS.items() if "-" not in k}
_ONE_W = "|".join(k.strip() for k in _ONES)
#: "eight hundred ml", "nine hundred and fifty mls", "huit cents ml", "temp thirty-nine": a number in words before a unit, or a
#: temperature in words, rewritten as digits at the same length (offsets hold) so that the readers below see a number.
_WORD_VALUE = re.compile(
    rf"(?<![a-z])(?:(?P<h>{_ONE_W})\s+(?:hundred|cents?)(?:\s+(?:and\s+)?(?P<ht>{'|'.join(_TENS_W)})?(?:[\s-]*(?P<hu>{_ONE_W}))?)?"
    rf"|(?P<t>{'|'.join(_TENS_W)})(?:[\s-]+(?:et\s+)?(?P<tu>{_ONE_W}))?|(?P<teen>{'|'.join(_TEENS_W)}))"
    r"(?![a-z])"
)
_TEMP_BEFORE = re.compile(r"(?:temp|temperature|t|fever|fievre|pyrexial|febrile)\s*(?:of|de|a|:|=)?\s*$")
#: session 10 (round 75, dictation): a number in words right after a measurement's name ("BP seventy over forty", "HB six point
#: eight", "heart rate one hundred and thirty") is that measurement's value; "h b" and "mils" as dictation writes them.
_NAME_BEFORE = re.compile(r"(?<![a-z])(?:bp|blood pressure|systolic|sbp|tension|ta|pa|hb|hgb|haemoglobin|hemoglobin|hemoglobine|hr|heart rate|"
                          r"pulse|pouls|fc|sats|spo2|sat|crp|wcc|wbc|drain|output|redon)" + _FILLER +  # the trend words a reader skips
                          r"(?:[a-z0-9]+\s*(?:over|sur|/|to|->|a)\s*)?$")
_SPELT = re.compile(r"(?<![a-z])(?:h b|c r p|w c c|w b c)(?![a-z])|(?<![a-z])mils?(?![a-z])")
_DECIMAL_WORDS = re.compile(rf"(?<![a-z])(?P<a>{_ONE_W}|zero|ten)\s+(?:point|virgule)\s+(?P<b>{_ONE_W}|zero)(?![a-z])")


#: Round 23: a bare "40°" after a clinical sign measured in degrees is an angle, not a temperature ("Lasègue à 40°",
#: "SLR 40° R", "flexion 30°", "Cobb 40°").
_ANGLE_BEFORE = re.compile(r"(?:lasegue|laseque|slr|straight leg raise|straight leg raising|leg raise|elevation|angle|flexion|extension|"
                           r"abduction|adduction|rotation|cobb|kyphose|kyphosis|lordose|lordosis|scoliose|scoliosis|tilt|"
                           r"inclinaison|convergence|angulation)\s*(?:test\s*)?"
                           r"(?:(?:gauche|droite|droit|left|right|g|d|l|r|bilateral|bilat|homolateral|controlateral)\s*)?"  # session 11 (round 88): "Lasègue gauche à 40°"
                           r"(?:a|at|of|de|:|=|to|positive at|positif a|\+|pos)?\s*$")


#: Round 22: a grade over 5 after a pressure's name is a muscle's ("TA 3/5" is tibialis anterior, not a tension artérielle).
#: Session 12 (round 99): the French follow-up month, "Contrôle M3 arthrodèse L4-S1", "Radio de contrôle M1", "suivi M6":
#: never a muscle grade after a visit or image word, nor before the operation's name.
_FOLLOW_UP_MONTH = re.compile(r"(?<![a-z])(?:controle|control|radio|radios|radiographie|radiographies|radiographique|radiologique|suivi|"
                              r"consultation|visite|bilan|rx|irm|mri|scanner|tdm|ct|systematique|revue|review|follow up|evaluation|"
                              r"reevaluation)\s*(?:de\s+)?(?:controle\s*)?$")
_OPERATION_AFTER = re.compile(r"\s*(?:d une |de l |de la |du |post |post-|apres |after |of )?(?:arthrodese|discectomie|laminectomie|"
                              r"spondylodese|fusion|chirurgie|intervention|operation|microdiscectomie|ostheosynthese|osteosynthese|cimentoplastie|"
                              r"vertebroplastie|kyphoplastie|acdf|tlif|plif|alif|xlif|olif|recalibrage|decompression)(?![a-z])")
_TEMP_RANGE = re.compile(r"(?<![\d.,/])(3[5-9][.,]\d)(\s*-\s*)((?:3[5-9]|4[0-2])[.,]\d)(?![\d])")
_MRC_GRADE = re.compile(r"[0-5][+-]?\s*/\s*5(?![0-9])")


def _word_values(norm: str) -> str:
    if " b" in norm or " r " in norm or "mil" in norm:
        norm = _SPELT.sub(lambda m: ("ml" if m.group(0).startswith("mil") else m.group(0).replace(" ", "")).ljust(len(m.group(0))), norm)
    if "point" in norm or "virgule" in norm:
        ones = _ONES | {"zero": 0, "ten": 10}
        norm = _DECIMAL_WORDS.sub(
            lambda m: (f"{ones[m.group('a')]}.{ones[m.group('b')]}".ljust(len(m.group(0)))
                       if _NAME_BEFORE.search(norm[max(0, m.start() - 24) : m.start()]) else m.group(0)), norm)
    if not any(w in norm for w in ("hundred", "cent", "ty", "nte", "ngt", "teen", "ze", "dix", "ten", "eleven", "twelve")):
        return norm
    def digits(m: re.Match) -> str:
        if m.group("h"):
            value = _ONES[m.group("h")] * 100 + (_TENS_W.get(m.group("ht") or "", 0)) + (_ONES.get(m.group("hu") or "", 0))
        elif m.group("t"):
            value = _TENS_W[m.group("t")] + _ONES.get(m.group("tu") or "", 0)
        else:
            value = _TEENS_W[m.group("teen")]
        unitless = not re.match(r"\s*(?:ml|mls|cc|milli|degre|°)", norm[m.end() : m.end() + 8])
        before = norm[max(0, m.start() - 32) : m.start()]
        if unitless and not _TEMP_BEFORE.search(before[-16:]) and not _NAME_BEFORE.search(before):
            return m.group(0)  # a number in words without a unit is read only as a temperature ("temp thirty-nine")
        return str(value).ljust(len(m.group(0)))
    return _WORD_VALUE.sub(digits, norm)


_IMPROVING = re.compile(r"(?<![a-z])(?:improving|improved|improvement|recovering|recovered|recovery|better|amelioration|ameliore|amelioree|"
                        r"en amelioration|recuperation|recupere|recuperee|en recuperation)(?![a-z])")
_EARLY_WORDS = re.compile(r"(?<![a-z])(?:pod ?\d|post op day|postop day|day \d|d\d|j ?\+? ?\d|yesterday|today|this morning|tonight|last night|"
                          r"overnight|hier|aujourd|ce matin|cette nuit|\d+ ?(?:h|hrs?|hours?|heures?|days?|jours?) (?:ago|post|apres)|il y a \d+ ?(?:h|heures?|jours?))(?![a-z0-9])")
_NEXT_GRADE = re.compile(r"^\s*[+-]?\s*(?:->|-->|=>|>|to|then|now|a|vers|puis|maintenant|→)\s*([0-5])(?:[.,]5)?\s*[+-]?\s*(?:/|sur)\s*5")
_PREV_GRADE = re.compile(r"([0-5])(?:[.,]5)?\s*[+-]?\s*(?:/|sur)\s*5\s*(?:->|-->|=>|>|to|then|now|a|vers|puis|maintenant|→)\s*$")


def _improving_grade(norm: str, g: re.Match) -> bool:
    """A grade in a recovering series: a recovery word just before, and a higher grade after it or a lower one before it."""
    if not _IMPROVING.search(norm[max(0, g.start() - 30) : g.start()]) or _EARLY_WORDS.search(norm):
        return False  # in the first days a deficit is read as new whatever its course (never lower an early emergency)
    nxt = _NEXT_GRADE.match(norm[g.end() : g.end() + 20])
    prev = _PREV_GRADE.search(norm[max(0, g.start() - 20) : g.start()])
    value = float(g.group(1).replace(",", "."))
    return bool((nxt and float(nxt.group(1)) > value) or (prev and float(prev.group(1)) < value))


def _f(text: str) -> float:
    return float(text.replace(",", "."))


class Reader:
    """Compiled measurement specifications."""

    def __init__(self, specs: list[dict]):
        self.specs = []
        for spec in specs:
            names = sorted({normalise(n)[0].strip() for n in spec.get("names") or [] if n.strip()}, key=len, reverse=True)
            if not names:
                continue
            alts = "|".join(re.escape(n).replace("\\ ", r"[\s\-']+") for n in names)
            pattern = re.compile(r"(?<![a-z0-9])(" + alts + r")(?![a-z])")
            rising = [normalise(w)[0] for w in spec.get("rising_words") or []]
            drops = sorted((normalise(w)[0] for w in spec.get("drop_words") or []), key=len, reverse=True)
            self.specs.append((spec, pattern, rising, drops))
        self._grade = re.compile(r"(?<![a-z0-9/.,])([0-4](?:[.,]5)?)\s*[+-]?\s*(?:/|sur|out of)\s*5(?![0-9/])")
        #: the M scale of Swiss and German notes ("force M4 aux releveurs", "parésie M3"): the same MRC grade, never
        #: the follow-up month ("à M3", "M3 post-op") nor a level-like token
        self._grade_m = re.compile(r"(?<![a-z0-9/.,+])(?<!a )(?<!au )(?<!de )m\s?([0-4])(?:\s*[+-])?(?![0-9a-z/+])"
                                   r"(?!\s*(?:post|apres|after|de suivi|follow|mois|months?))")
        #: a grade given without "/5" after a grading word ("EHL MRC 3", "releveurs cotés à 3", "force 4 aux releveurs"); never
        #: "grade" (a listhesis grade) and never a number followed by a unit or a slash
        self._grade_word = re.compile(r"(?<![a-z])(?:mrc|cote|cotee|cotes|cotees|force)\s*(?:a|at|of|:|=|de)?\s*([0-4])(?:\s*[+-])?"
                                      r"(?![0-9/]|[.,]\d|\s*(?:mm|cm|kg|ans|years|jours|days|mois|%))")
        #: session 15 (round 121): a grade's fall written as a trend after a grading word ("MRC hip flexion 5 -> 2, ankle DF 5 -> 1");
        #: read only with "mrc", "power", "force", "motor" or "strength" before it (a pain score "5 -> 2" is no grade)
        self._grade_trend = re.compile(r"(?<![0-9/.,])[3-5]\s*(?:->|-->|=>|→|>)\s*([0-3])(?![0-9/.,])")
        self._grade_trend_context = re.compile(r"(?<![a-z])(?:mrc|power|force|motor|moteur|strength|cotation|testing)(?![a-z])")
        self._temp = re.compile(rf"(?<![0-9.,/]){_NUM}\s*°\s*c?(?![a-z])")

    def find(self, text: str, field: dict) -> list[Mention]:
        norm, index = normalise(text)
        norm = _word_values(norm)
        if " " in norm:
            # session 8 (round 46): a thousands separator before a volume ("bladder scan 1 300 ml") joins its digits (same length)
            norm = _THOUSANDS.sub(lambda m: (m.group(1) + m.group(2)).ljust(len(m.group(0))), norm)
        # session 12 (round 98): a temperature range ("Evening temps 37.9-38.2") is read as a chain to its higher end (same length)
        norm = _TEMP_RANGE.sub(lambda m: m.group(1) + m.group(2).replace("-", ">") + m.group(3), norm)
        out: list[Mention] = []
        taken: list[tuple[int, int]] = []

        def emit(spec: dict, concept: str, a: int, b: int, detail: dict) -> None:
            if any(a < y and x < b for x, y in taken):
                return
            taken.append((a, b))
            start, end = index[a], index[b - 1] + 1
            m = Mention(
                frozenset({concept}) if concept else frozenset(),
                text[start:end],
                start,
                end,
                field.get("keyword", ""),
                field.get("tag", ""),
                field.get("series_uid"),
                measurement={"name": spec["name"], "unit": spec.get("unit"), "reference": spec.get("reference"), **detail},
            )
            out.append(m)

        values: dict[str, tuple[float, int, int]] = {}  # measurement name -> (last value read, start, end), for the shock index
        for spec, pattern, rising, drops in self.specs:
            if spec.get("grade"):
                grades = ([(g, 40) for g in self._grade.finditer(norm)]
                          + [(g, 25) for g in self._grade_m.finditer(norm) if not _FOLLOW_UP_MONTH.search(norm[max(0, g.start() - 40) : g.start()])
                             and not _OPERATION_AFTER.match(norm, g.end())]
                          + [(g, 25) for g in self._grade_word.finditer(norm)]
                          + [(g, 40) for g in self._grade_trend.finditer(norm)
                             if self._grade_trend_context.search(norm[max(0, g.start() - 60) : g.start()])])
                if "\n" in norm and _GRID_HEAD.search(norm):
                    # session 8 (round 49): a power chart laid out in columns under an "MRC"/"power" heading ("Ankle DF  5   2"):
                    # each row a muscle name then its grades (0-5, no "/5"); a grade below 5 is read as that row's grade
                    for row in _GRID_ROW.finditer(norm):
                        if pattern.match(row.group("name")) and not _CONDITION.search(norm[max(0, row.start() - 30) : row.start()]):
                            low = min(int(x) for x in row.group("grades").split())
                            for t in spec.get("thresholds") or []:
                                if _crosses(t, float(low), None, None):
                                    emit(spec, t["concept"], row.start("grades"), row.end("grades"),
                                         {"value": float(low), "threshold": _describe(t)})
                for g, reach in grades:
                    near = norm[max(0, g.start() - reach) : g.end() + 20]
                    if _improving_grade(norm, g):
                        continue  # session 4 (round 14): "TA improving 2/5 -> 4/5", "EHL 3/5 now 4+/5, recovering": a deficit recovering
                    if pattern.search(near) and not _CONDITION.search(norm[max(0, g.start() - 30) : g.start()]):
                        value = _f(g.group(1))
                        for t in spec.get("thresholds") or []:
                            if _crosses(t, value, None, None):
                                emit(spec, t["concept"], g.start(), g.end(), {"value": value, "threshold": _describe(t)})
                continue
            for m in pattern.finditer(norm):
                before = norm[max(0, m.start() - 30) : m.start()]
                if _CONDITION.search(before):
                    continue
                tail = norm[m.end() : m.end() + 60]
                diff = _SIGNED_RISE.match(tail) if any("rise" in t for t in spec.get("thresholds") or []) else None
                if diff:
                    # session 15 (round 119): the difference itself, signed ("L calf circumference +4 cm", "mollet G +3,5 cm"): a rise
                    amount = _f(diff.group(1))
                    for t in spec.get("thresholds") or []:
                        if "rise" in t and amount >= t["rise"]:
                            emit(spec, t["concept"], m.start(), m.end() + diff.end(),
                                 {"value": amount, "difference": amount, "threshold": _describe(t)})
                            break
                    continue
                reading = self._reading(spec, tail, drops)
                if reading is None:
                    continue
                first, last, drop, used = reading
                end = m.end() + used
                if (last if last is not None else first) is not None:
                    values.setdefault(spec["name"], (last if last is not None else first, m.start(), end))
                rise_word = any(re.match(rf"^[\s,]*(?:and |et )?{re.escape(w)}(?![a-z])", norm[end : end + 25]) for w in rising)
                for t in spec.get("thresholds") or []:
                    value = last if last is not None else first
                    if _crosses(t, value, first, last, drop, rise_word):
                        detail = {"value": value, "threshold": _describe(t)}
                        if last is not None and first is not None and last != first:
                            detail["from"] = first
                        if drop is not None:
                            detail["drop"] = drop
                        emit(spec, t["concept"], m.start(), end, detail)
                        break
                else:
                    # session 20 (round 151): a value above the laboratory's own normal written beside it ("CRP 9 (N < 5)",
                    # "CRP 12 (normale < 5)"): raised for that laboratory even under the usual threshold
                    stated = _STATED_NORMAL.match(norm[end : end + 30]) if spec.get("above_stated_normal") else None
                    value = last if last is not None else first
                    if stated and value is not None and value > _f(stated.group(1)):
                        emit(spec, spec["above_stated_normal"], m.start(), end + stated.end(),
                             {"value": value, "threshold": f"> {stated.group(1)} (the laboratory's normal, stated)"})
                        continue
                    # "Hb fall from 13 to 12": a trend read in numbers that crosses no threshold is not the
                    # finding its words name; the term mention it overlaps is cancelled (context.build)
                    cancels = sorted({t["concept"] for t in spec.get("thresholds") or [] if "drop" in t})  # drops only (Hb): a rise keeps its word
                    if cancels and first is not None and last is not None and drop is None and not rise_word:
                        emit(spec, "", m.start(), end, {"value": last, "from": first, "cancels": cancels})
            if spec["name"] == "temperature":
                for m in self._temp.finditer(norm):
                    value = _f(m.group(1))
                    lo, hi = spec.get("plausible", [34, 43])
                    before = norm[max(0, m.start() - 30) : m.start()]
                    if lo <= value <= hi and not _CONDITION.search(before) and not _ANGLE_BEFORE.search(before):
                        for t in spec.get("thresholds") or []:
                            if _crosses(t, value, None, None):
                                emit(spec, t["concept"], m.start(), m.end(), {"value": value, "threshold": _describe(t)})
        for spec, _, _, _ in self.specs:
            index_spec = spec.get("shock_index")  # heart rate / systolic pressure, both read in the same text
            if not index_spec or spec["name"] not in values or index_spec.get("with") not in values:
                continue
            (rate, a, b), (pressure, a2, b2) = values[spec["name"]], values[index_spec["with"]]
            ratio = round(rate / pressure, 2) if pressure else 0.0
            if ratio >= float(index_spec["above_or_equal"]):
                emit(dict(spec, name="shock_index", unit=None, reference=index_spec.get("reference")), index_spec["concept"],
                     min(a, a2), max(b, b2), {"value": ratio, "threshold": f">= {index_spec['above_or_equal']}"})
        return out

    def _reading(self, spec: dict, tail: str, drops: list[str]):
        """(first value, last value or None, drop or None, characters used) or None."""
        for w in drops:
            d = re.match(rf"^\s*(?:has |had |of )?{re.escape(w)}\s*(?:of |by |de )?{_NUM}", tail)
            if d:
                amount = self._scale(spec, _f(d.group(1)), tail[d.end() : d.end() + 8])
                if amount is not None and amount < (spec.get("plausible") or [0, 1e9])[1]:
                    return None, None, amount, d.end()
        listed = _DAY_LIST.match(tail)
        item = _DAY_ITEM
        if not listed:
            listed, item = _VALUE_DAY_LIST.match(tail), _VALUE_DAY_ITEM
        if listed:
            values = [self._scale(spec, _f(x.group(1)), "") for x in re.finditer(item, listed.group(0))]
            if len(values) >= 2 and None not in values:
                return values[0], values[-1], None, listed.end()
        slashed = None if spec.get("systolic") else _SLASH_LIST.match(tail)
        if slashed:
            values = [self._scale(spec, _f(x), "") for x in re.findall(_NUM, slashed.group(0))]
            if None not in values:
                return values[0], values[-1], None, slashed.end()
        pre = re.match(_FILLER, tail)
        pos = pre.end() if pre else 0
        if pos < len(tail) and tail[pos] in ">≥" and not _COMPARATOR.search(tail[:pos]) and not any(
                "below" in t or "drop" in t for t in spec.get("thresholds") or []):
            # session 7 (round 43): "Bladder scan >999 ml", a scanner's ceiling: a lower bound reads as its value where the
            # measurement has only "above" thresholds (never for Hb, whose "Hb > 7" must not read as below 8)
            pos += 1
            while pos < len(tail) and tail[pos] in " =":
                pos += 1
        elif _COMPARATOR.search(tail[:pos]) or tail[pos : pos + 1] in "<>≤≥":
            return None
        if spec.get("systolic"):
            # round 22: "TA 3/5" is tibialis anterior at MRC grade 3, not a French tension artérielle of 3 cmHg
            if _MRC_GRADE.match(tail, pos):
                return None
            bp = re.match(r"(\d{2,3})\s*/\s*(\d{2,3})", tail[pos:])
            if bp:
                value = self._scale(spec, float(bp.group(1)), tail[pos + bp.end() : pos + bp.end() + 8])
                return (value, None, None, pos + bp.end()) if value is not None else None
        v = re.match(_NUM, tail[pos:])
        if not v:
            return None
        used = pos + v.end()
        unit = _UNIT_AFTER.match(tail[used:])
        # round 13: a year after the name is a date, not a value ("rétention urinaire en 2019", "retention in 2019 (prostate)")
        if _YEAR.match(v.group(1)) and not (unit and unit.group(1)) and _YEAR_BEFORE.search(tail[:pos]):
            return None
        # session 7: "h/o acute retention 2015": a year-like number without a unit that is no round volume is a year
        # ("globe 2000", "BS 1950" stay volumes: a multiple of 50)
        if _YEAR.match(v.group(1)) and not (unit and unit.group(1)) and int(v.group(1)) % 50:
            return None
        first = self._scale(spec, _f(v.group(1)), tail[used : used + 10])
        if first is None:
            return None
        used += unit.end() if unit else 0
        if spec.get("pair"):  # "H/H 11/33": the second number is the haematocrit
            pair = _PAIR.match(tail[used:])
            used += pair.end() if pair else 0
        last = None
        t = _TREND.match(tail[used:]) or _TREND_DAY.match(tail[used:])
        back = None if t else _FROM.match(tail[used:])
        if back:  # the earlier value written second: the trend is from it to the first number
            earlier = self._scale(spec, _f(back.group(1) or back.group(2)), tail[used + back.end() : used + back.end() + 10])
            if earlier is not None:
                after = used + back.end()
                u = _UNIT_AFTER.match(tail[after:])
                used = after + (u.end() if u else 0)
                closing = re.match(r"^\s*\)", tail[used:])
                used += closing.end() if closing else 0
                return earlier, first, None, used
        while t:  # session 9 (round 65): a chain of values ("Hgb trending 10.8 -> 9.1 -> 7.9"): from the first to the last
            after = used + t.end()
            second = self._scale(spec, _f(t.group(1)), tail[after : after + 10])
            if second is None:
                break
            last = second
            u = _UNIT_AFTER.match(tail[after:])
            used = after + (u.end() if u else 0)
            if spec.get("pair"):
                pair = _PAIR.match(tail[used:])
                used += pair.end() if pair else 0
            t = _CHAIN.match(tail[used:])
        return first, last, None, used

    def _scale(self, spec: dict, value: float, unit_text: str) -> float | None:
        unit_text = unit_text.strip()
        if spec.get("fahrenheit_above") and value > spec["fahrenheit_above"]:
            value = round((value - 32) * 5 / 9, 1)
        if spec.get("grams_per_litre_above") and value > spec["grams_per_litre_above"]:
            value = value / 10
        if spec.get("thousands_above") and value > spec["thousands_above"]:
            value = value / 1000
        if spec.get("centimetres_below") and value < spec["centimetres_below"] and not unit_text.startswith("mm"):
            value = value * 10
        if spec.get("litres_below") and value < spec["litres_below"] and re.match(r"^(l\b|litres?|liters?)", unit_text):
            value = value * 1000
        lo, hi = spec.get("plausible") or [float("-inf"), float("inf")]
        return value if lo <= value <= hi else None


def _crosses(t: dict, value, first, last, drop=None, rise_word=False) -> bool:
    if t.get("unless_falling") and first is not None and last is not None and last < first:
        return False  # "CRP 140 falling from 210 on POD2": the postoperative peak coming down (session 22, round 173)
    if "above" in t and value is not None and value > t["above"]:
        return True
    if "above_or_equal" in t and value is not None and value >= t["above_or_equal"]:
        return True
    if "below" in t and value is not None and value < t["below"]:
        return True
    if "drop" in t:
        if drop is not None and drop >= t["drop"]:
            return True
        if first is not None and last is not None and first - last >= t["drop"]:
            return True
    if "rise" in t:
        if rise_word:
            return True
        if first is not None and last is not None and last - first >= t["rise"]:
            return True
    return False


def _describe(t: dict) -> str:
    for key, sign in (("above_or_equal", ">="), ("above", ">"), ("below", "<"), ("drop", "drop >="), ("rise", "rise >=")):
        if key in t:
            return f"{sign} {t[key]}"
    return ""

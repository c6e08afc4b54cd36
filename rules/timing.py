"""Surgery timing, in one place: the time since surgery read from the request text, and the
surgery estimate (`SurgeryEstimate`) made from the intraoperative prior, the text and the first
postoperative prior, with its sources and trust. Pure: the workers only gather the inputs
(the C-FIND answers, the study's headers) and pass them here.

Relative tokens (J+2, POD 2, "3 months after surgery", "opéré hier") need no
anchor; explicit dates are compared with StudyDate/StudyTime. French and British dates are
DD/MM; a date that could be read both ways in another text gives both readings (one after
the study is impossible and dropped; the engine keeps the higher priority of the others).
Nothing is ever assumed: no reading means None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from core.dicom_time import parse_datetime, study_datetime
from rules.number_words import ONES, TEENS, TEENS_FR, TENS
from rules.text import fold, normalise

_UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 30.44, "y": 24 * 365.25}

_UNITS = {
    "h": r"h|hrs?|hours?|heures?",
    "d": r"d|days?|j|jours?|jrs?",
    "w": r"wks?|weeks?|sem|semaines?|w",
    "m": r"mo|months?|mois",
    "y": r"y|yrs?|years?|ans?|annees?",
}
_UNIT = "|".join(f"(?P<{k}>{v})" for k, v in _UNITS.items())

#: Words that say the surgery is what the time refers to.
_SURGERY = re.compile(
    r"op[ie]?r|chir|surg|interv|arthrod|spondylod|fusion|discect|discecto|laminect|herniect|tlif|plif|alif|xlif|llif|olif|ectomy|"
    r"recalibr|decompress|decomp|instrument|osteosynth|post(?![ue]r|ur|e[ds]?(?![a-z])|ing)|bloc|s/p|lami|microdisc|acdf|accf|corpect|corporect|"
    r"kypho|cypho|vertebro|ciment|cement|stimulat|pump|pompe|redo|revision|reprise|fixation|foramino|"
    r"arthroplast|prothese|theatre|procedure|drain|redon|vissage|stabili|osteotom|scoli|cure de|hernie|hernia|"
    r"(?<![a-z])op(?![a-z])|(?<![a-z])(?:psf|psif|plf|pslf|tdr|adr|scs|coflex|x[\s-]?stop|dynesys|metalwork|rods|screws|back done|neck done|microd|"
    r"spine done|vis|disc one|disk one)(?![a-z])|"  # session 7: "vis L4-L5 posées avant-hier" (the French "screws", as "screws");
    # session 19 (round 138): "had my back op, the disc one, 2 weeks ago" (which operation, said again before its time)
    # "DOS: 2026-11-19", "DOS 11/19/2026": date of surgery (never the French "dos", the back, which no colon or date follows)
    r"(?<![a-z])dos(?=\s*[:=]|\s+\d{1,4}[/.-]\d)"
)
#: Words that make a nearby procedure planned rather than done.
_FUTURE = re.compile(
    r"planned|booked|scheduled|prevue?|programmee?|planifiee?|a venir|upcoming|awaiting|listed for|en vue|"
    r"(?<![a-z])demain|tomorrow|next week|la semaine prochaine|prochain|due for|pre ?op(?:erative)? (?:work|planning|assessment)|"
    r"bilan pre ?operatoire|for surgery|pour chirurgie|avant la future|envisage|proposee?|indication|to be done|to be performed|"
    r"waiting list|wait list|liste d attente|sera operee?|will be operated|is having|going to have|dans \d+ (?:jours?|semaines?|mois)|"
    r"(?<![a-z])in \d+ (?:days?|weeks?|months?)|"
    r"(?<![a-z0-9])[jd] ?- ?[1-9]\d?(?![0-9])(?! ?[/.]\d)"  # session 12 (round 95): "Scanner à J-2 de l'arthrodèse" (two days before it)
)
#: Relative words that need a procedure nearby: "ACDF yesterday", "hier soir, laminectomie".
_DAY_WORDS = {
    "avant hier": 48, "day before yesterday": 48, "yesterday evening": 18, "yesterday": 24, "last night": 12,
    "overnight": 10, "this morning": 4, "this am": 4, "this a.m.": 4, "tonight": 0, "this afternoon": 2,
    "cet apres midi": 2, "cet apres-midi": 2, "la nuit derniere": 10, "earlier today": 4, "today": 0, "hier soir": 18,
    "hier matin": 28, "hier": 24, "la veille": 24, "cette nuit": 8, "ce matin": 4, "aujourd'hui": 0,
    "aujourd hui": 0, "ce jour": 0, "last week": 24 * 7, "la semaine derniere": 24 * 7, "last month": 24 * 30,
    "le mois dernier": 24 * 30, "la semaine passee": 24 * 7, "le mois passe": 24 * 30, "l annee passee": 24 * 365,
    "l an passe": 24 * 365, "la fin de semaine passee": 24 * 2, "la fin de semaine derniere": 24 * 2, "a matin": 4,
    "last year": 24 * 365, "the week before last": 24 * 14, "week before last": 24 * 14,
    # "earlier this week", "en début de semaine": within the week, the early window whatever the day (the least time: a day)
    "earlier this week": 24, "earlier in the week": 24, "at the start of the week": 24, "start of the week": 24, "this week": 24,
    "en debut de semaine": 24, "au debut de la semaine": 24, "plus tot cette semaine": 24, "cette semaine": 24, "l'an dernier": 24 * 365, "l'annee derniere": 24 * 365,
    "l an dernier": 24 * 365, "few days ago": 72, "quelques jours": 72, "a few days ago": 72,
    # "au lendemain d'une fusion", "le lendemain de l'arthrodèse" = day 1; "au surlendemain" = day 2 (Québec, Belgium)
    "lendemain": 24, "surlendemain": 48,
    # session 5 (round 20): the first night after the operation
    "1st night post op": 12, "first night post op": 12, "1st night postop": 12, "first night postop": 12,
    "first post op night": 12, "1st post op night": 12, "night 1 post op": 12, "premiere nuit post op": 12,
    "premiere nuit postoperatoire": 12, "1ere nuit post op": 12, "nuit post operatoire": 12,
    # session 5 (round 16): a season ("operated last spring"): the least time it can mean, three months
    "last spring": 24 * 91, "last summer": 24 * 91, "last autumn": 24 * 91, "last fall": 24 * 91, "last winter": 24 * 91,
    # French: "l'été dernier", "au printemps dernier" match through the season word ("ete dernier")
    "printemps dernier": 24 * 91, "ete dernier": 24 * 91, "automne dernier": 24 * 91, "hiver dernier": 24 * 91,
    "cet ete": 24 * 30,
}
_DAY_RE = re.compile(
    r"(?<![a-z])(" + "|".join(sorted((re.escape(k).replace("\\ ", "[\\s-]+") for k in _DAY_WORDS), key=len, reverse=True))
    + r")(?![a-z])"
)
#: An image named between a follow-up time and the operation it follows ("4 month XR post L4/5 fusion", "6 week films after TLIF")
_IMAGE_POST = r"(?:(?:xr|x-ray|xray|film|films|radiograph|radiographs|mri|ct|scan|imaging)\s+(?:post|after|following)(?![a-z]))"
#: "post microdiscectomy day 1", "jour 3 d'une arthrodèse": day N next to a procedure (never "D12").
_DAY_N = re.compile(r"(?<![a-z])(?:day|jour)\s*#?\s*(\d{1,2})(?![0-9/])")
#: UK notation: 2/7 = 2 days, 6/52 = 6 weeks, 3/12 = 3 months (never part of a level "L4/5" or a date).
_UK = re.compile(r"(?<![a-z0-9/.])([1-9]\d?(?:\.\d)?)\s*/\s*(7|52|12)(?![0-9/])")  # "01/12" (leading zero): a date
_UK_HOURS = {"7": 24, "52": 24 * 7, "12": 24 * 30.44}
#: A year alone ("fusion in 2019", "(2024)") or a month and year ("03/2024", "mars 2024").
_MONTH_YEAR = re.compile(r"(?<![0-9/.])(\d{1,2})[/.-]((?:19|20)\d\d)(?![0-9])")
_NAMED_MONTH_YEAR = re.compile(r"(?<![a-z0-9])([a-z]{3,9})\.?\s+((?:19|20)\d\d)(?![0-9])")
_YEAR = re.compile(r"(?<![0-9/])(?<![0-9][.-])((?:19|20)\d\d)(?![0-9/])(?![.-]\d)")

#: Named procedures a day count ("D3") may stand next to, and the levels that may stand between.
_D_PROCEDURES = (r"fusion|decompression|laminectomy|lami|discectomy|microdiscectomy|microdisc|plif|tlif|alif|xlif|olif|acdf|"
                 r"stabilisation|stabilization|instrumentation|surgery|op|operation|procedure|kyphoplasty|vertebroplasty|"
                 r"corpectomy|osteotomy|fixation|foraminotomy|laminoplasty")
_LEVELS = r"[ctls]\d{1,2}(?:\s*[-/]\s*[ctls]?\d{1,2})*(?:\s*\((?:l|r|left|right)\))?"

_RELATIVE = [
    # J+2, J2, J 2 (French "jour"); never D2, which is a vertebra (D12 = T12).
    (re.compile(r"(?<![a-z0-9])j\s*\+\s*(\d{1,3})(?![0-9])|(?<![a-z0-9])j(\d{1,2})(?![a-z0-9])"), "d"),
    (re.compile(r"(?<![a-z0-9])pod\s*[#:=]?\s*\[?\s*(\d{1,3})\s*\]?(?![0-9])"), "d"),  # "POD 3", "POD#3", "POD: 3", "POD: [2]" (a form field; session 10, round 71)
    (re.compile(r"post[\s-]?op(?:erative)?\s+day\s*(\d{1,3})(?![0-9])"), "d"),
    # round 28: speech recognition of "post op day two" ("post op day to", "day too")
    (re.compile(r"post[\s-]?op(?:erative)?\s+day\s+(?:to|too)(?![a-z])"), "day2"),
    (re.compile(r"(?<![a-z0-9])(?:day|jour)\s*(\d{1,3})\s+(?:post|after|apres)"), "d"),
    (re.compile(r"(?<![a-z0-9])h\s*\+\s*(\d{1,3})(?![0-9])"), "h"),
    # French follow-up notation: S+2 (weeks), M+3 / "à M3" (months); "D3 post-op" (day, never "D3" alone: a vertebra)
    (re.compile(r"(?<![a-z0-9])s\s*\+\s*(\d{1,2})(?![0-9])"), "w"),
    (re.compile(r"(?<![a-z0-9])(\d{1,2})\s*(?:e|eme|ieme)\s+jour\s+post"), "d"),  # "10e jour post-op"
    # "10th post-op day", "12th day after surgery" (never the 10th of the month)
    (re.compile(r"(?<![a-z0-9])(\d{1,2})(?:st|nd|rd|th)\s+(?:post[\s-]?op(?:erative)?\s+day|day\s+(?:post|after|following))"), "d"),
    # "op + 10 days", "chirurgie + 3 j"
    (re.compile(r"(?<![a-z])(?:op|surgery|operation|chirurgie|intervention)\s*\+\s*(\d{1,3})\s*(?:d|days?|j|jours?)(?![a-z])"), "d"),
    (re.compile(r"(?<![a-z0-9])m\s*\+\s*(\d{1,2})(?![0-9])|(?<![a-z])a\s+m(\d{1,2})(?![a-z0-9])|(?<![a-z0-9])m(\d{1,2})\s+post[\s-]?op"), "m"),
    (re.compile(r"(?<![a-z0-9])d\s*(\d{1,2})\s+(?:post[\s-]?op|postop|after (?:surgery|the op|op)|apres)"), "d"),
    # round 22: "D1 after posterior fusion" (a day, when an operation follows; "D12 after a fall" is a vertebra)
    # session 9 (round 54): also with the levels between ("D5 post L4-5 lami")
    (re.compile(r"(?<![a-z0-9])d\s*(\d{1,2})\s+(?:after|following|post)\s+(?:(?:his|her|the|an?)\s+)?(?:" + _LEVELS + r"\s+)?"
                r"(?:(?:posterior|anterior|lateral|open|redo|revision|lumbar|cervical|thoracic|spinal|instrumented|minimally|mis)\s+)?"
                r"(?:" + _D_PROCEDURES + r")(?![a-z])"), "d"),
    # session 9 (round 54): a day after the named procedure and its levels, in English notes ("Microdisc L5/S1 D3",
    # "post L5-S1 microdisc D2:"), when punctuation or the end follows; never a D-level ("fusion D8-L3", "TLIF L4-5 D12
    # fracture")
    (re.compile(r"(?<![a-z])(?:" + _D_PROCEDURES + r")(?:\s+(?:" + _LEVELS + r"))?\s+d\s?(\d{1,2})(?=\s*(?:[:.,;!?)]|$|-\s))"),
     "d"),
    # "post-op week 2", "week 2 post-op", "6-week follow-up", "6 week review", "3 month check"
    (re.compile(r"post[\s-]?op(?:erative)?\s+(?:week|wk|semaine|sem)\s*(\d{1,2})(?![0-9])|(?<![a-z0-9])(?:week|wk|semaine)\s*(\d{1,2})\s+post"), "W"),
    (re.compile(r"(?<![0-9])(\d{1,2})[\s-]*(?:weeks?|wks?)[\s-]*(?:follow[\s-]?up|review|check|f/u|post[\s-]?op|postop|clinic|" + _IMAGE_POST + ")"), "w"),
    (re.compile(r"(?<![0-9])(\d{1,2})[\s-]*(?:months?|mo)[\s-]*(?:follow[\s-]?up|review|check|f/u|post[\s-]?op|postop|clinic|" + _IMAGE_POST + ")"), "m"),
    # session 14 (round 109): "Routine 4 month XR post L4/5 posterolateral fusion", "1 yr check post ACDF", "2 year review post TLIF"
    (re.compile(r"(?<![0-9])(\d{1,2})[\s-]*(?:years?|yrs?)[\s-]*(?:(?:follow[\s-]?up|review|check|f/u|clinic|" + _IMAGE_POST
                + r")\s+(?:post|after|following)|" + _IMAGE_POST + r"|(?:follow[\s-]?up|review|check|f/u)(?![a-z]))"), "y"),
    # session 5: a French follow-up check "at N months/years" ("contrôle de ces vis à 1 an", "bilan à 6 mois")
    (re.compile(r"(?<![a-z])(?:controle|bilan|suivi|consultation)(?:\s+[a-z]+){0,4}\s+(?:a\s+)?(\d{1,2})\s*mois(?![a-z])"), "m"),
    (re.compile(r"(?<![a-z])(?:controle|bilan|suivi|consultation)(?:\s+[a-z]+){0,4}\s+(?:a\s+)?(\d{1,2})\s*ans?(?![a-z])"), "y"),
    # session 22 (round 176): "Contrôle à 6 semaines ACDF C6-C7", "Contrôle post-op arthrodèse (XLIF L3-L4) à 6 semaines"
    (re.compile(r"(?<![a-z])(?:controle|bilan|suivi|consultation)(?![a-z])[^.;!?|\n]{0,60}?\sa\s+(\d{1,2})\s*(?:semaines?|sem)(?![a-z])"), "w"),
]
#: A bracketed time right after a named procedure and its levels: "post PLIF L4-5 (3 days)", "TLIF L5-S1 (J2)",
#: "arthrodèse L4-L5 (il y a 3 jours)": the time since that operation.
_BRACKETED = re.compile(
    rf"\(\s*(?:il y a\s+|~\s*|approx\.?\s+|environ\s+)?(\d{{1,3}})\s*(?:{_UNIT})\.?\s*(?:ago|post[\s-]?op|postop|ago\s+today)?\s*\)"
)
_BRACKET_PROCEDURE = re.compile(
    r"(?:tlif|plif|alif|xlif|llif|olif|acdf|fusion|arthrodese|spondylodese|discectomy|microdiscectomy|discectomie|"
    r"laminectomy|laminectomie|decompression|lami|surgery|chirurgie|op|operation|intervention)"
    r"(?:\s+(?:[a-z]?\d{1,2}(?:\s*[-/]\s*[a-z]?\d{1,2})*|at|a|en|niveau|level|levels|de|du|with|avec|vis|screws?|instrumented|instrumentee|\w+ee))"
    r"{0,4}\s*$"
)
#: "s/p laminectomy 6 weeks", "post TLIF L4-5 10 days", "après arthrodèse L4-L5 3 mois": the time right after a named
#: procedure and its levels is the time since it (not "... 6 weeks ago/after", read elsewhere; never a planned one).
_PROCEDURE_WORDS = (
    r"(?:tlif|plif|alif|xlif|llif|olif|acdf|accf|fusion|arthrodese|spondylodese|discectomy|microdiscectomy|microdisc|discectomie|"
    r"microdiscectomie|laminectomy|laminectomie|decompression|lami|surgery|chirurgie|op|operation|intervention|kyphoplasty|"
    r"vertebroplasty|cyphoplastie|vertebroplastie|laminoplasty|foraminotomy|corpectomy|recalibrage)"
    r"(?:\s+(?:[a-z]?\d{1,2}(?:\s*[-/]\s*[a-z]?\d{1,2})*(?![0-9])|at|a|en|niveau|level|levels|de|du|with|avec|vis|screws?|"
    r"instrumented|instrumentee|surgery|op|\w+ee)(?![a-z0-9]))"
    r"{0,4}"
)
#: Round 22: the operation and its age together in brackets, "(fusion L2-S1, 3 yrs)", "(TLIF L4-5, 6/52)".
_PROCEDURE_IN_BRACKET = re.compile(
    r"\(\s*(?:(?:redo|revision|posterior|anterior|open|instrumented|lumbar|cervical)\s+)?" + _PROCEDURE_WORDS +
    rf"\s*[,;-]\s*(?:~\s*|approx\.?\s+|about\s+)?(?P<n>\d{{1,3}})\s*(?:{_UNIT})\.?\s*(?:ago|post[\s-]?op|postop)?\s*\)"
)
#: Round 22: "Day after PLIF L5-S1", "the day following her fusion": day 1 (the operation named right after).
_DAY_AFTER_PROCEDURE = re.compile(
    r"(?<![a-z])day\s+(?:after|following)\s+(?:(?:his|her|the|an?|my|their)\s+)?(?:(?:redo|revision|posterior|anterior|lateral|"
    r"open|instrumented|lumbar|cervical|thoracic|spinal|mis|minimally|invasive)\s+){0,2}" + _PROCEDURE_WORDS + r"(?![a-z])"
)
#: What makes "day after" part of an ordinal day ("second post-op day after decompression", "3rd day after").
_ORDINAL_BEFORE = re.compile(r"(?:post[\s-]?op(?:erative)?|postop|first|second|third|fourth|fifth|sixth|\d(?:st|nd|rd|th)?|the next|next)\s*$")
_PROCEDURE_THEN_TIME = re.compile(
    r"(?<![a-z])(?:s/p|s p|status post|post|after|apres|following)[\s-]+(?:(?:an?|the|his|her|l|la|le|une?|d|de|op|recent|redo|revision|"
    r"lumbar|cervical|lombaire|cervicale|posterior|anterior|open|mini|micro|minimally|invasive|instrumented|instrumentee)[\s-]+){0,3}"
    + _PROCEDURE_WORDS +
    r"\s*[:-]?\s*(?:x\s*|for\s+|now\s+|maintenant\s+|~\s*|approx\.?\s+|about\s+|environ\s+)?"
    rf"(?<![0-9])(?P<n>\d{{1,3}})\s*(?:{_UNIT})\.?(?![a-z0-9/])(?!\s*(?:ago|back|earlier|after|post|apres|later|plus tard|de |d'|of |old))"
)
#: ... and without "s/p" when the time ends the clause: "ACDF 2 weeks, dysphagia", "Fusion L4-5 6 months. Back pain".
_PROCEDURE_TIME_CLAUSE = re.compile(
    r"(?<![a-z])" + _PROCEDURE_WORDS + r"\s*[:-]?\s*(?:~\s*|approx\.?\s+|about\s+|environ\s+)?"
    rf"(?<![0-9])(?P<n>\d{{1,3}})\s*(?:{_UNIT})\.?(?=\s*(?:[,.;)\n]|$|post[\s-]?op|postop))"
)
#: "1 mois et demi", "a month and a half", "two and a half weeks", "1.5 months", "1,5 an": rewritten, in place and at the
#: same length, as a whole number of the next smaller unit ("45 d", "18 mo") so every time pattern reads them.
_HALF_NUMBER = r"(?P<n>\d{1,2}|un|une|a|an|one|two|three|four|five|six|deux|trois|quatre|cinq|six)"
_HALF_UNITS = r"(?P<unit>years?|yrs?|y|ans?|annees?|months?|mo|mois|weeks?|wks?|w|semaines?|sem|days?|d|jours?|j)"
_HALVES = [
    re.compile(rf"(?<![a-z0-9.,]){_HALF_NUMBER}\s+{_HALF_UNITS}\s+(?:et\s+demie?|and\s+a\s+half)(?![a-z])"),
    re.compile(rf"(?<![a-z0-9.,]){_HALF_NUMBER}\s+and\s+a\s+half\s+{_HALF_UNITS}(?![a-z])"),
    re.compile(rf"(?<![a-z0-9.,])(?P<n>\d{{1,2}})[.,]5\s*{_HALF_UNITS}(?![a-z])"),
]
_HALF_WORDS = {"un": 1, "une": 1, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
               "deux": 2, "trois": 3, "quatre": 4, "cinq": 5}


_TENS = TENS | {"fourty": 40}
#: After a ten: 1-9, and in French 10-16 ("soixante-douze", "septante-seize").
_UNITS_WORDS = ONES | {k: v for k, v in TEENS_FR.items() if v <= 16}
#: Teens before a unit ("seventeen days", "dix-huit mois", "dix huit mois"); _WORD_NUMBERS reads ten to twelve and fifteen,
#: eighteen (and dix to douze, quinze).
_TEENS = {k: TEENS[k] for k in ("thirteen", "fourteen", "sixteen", "seventeen", "nineteen", "dix-sept", "dix-huit", "dix-neuf")}
_TEENS |= {k.replace("-", " "): v for k, v in _TEENS.items() if "-" in k}
#: "forty-eight hours", "twenty four hours", "vingt et un jours", "soixante-douze heures", "septante-deux heures" (Belgian,
#: Swiss), "dix-huit mois": compound numbers in words, read whole (they were read as their last word: "eight hours").
_COMPOUND = re.compile(
    r"(?<![a-z])(?:(?P<tens>" + "|".join(_TENS) + r")(?:(?:\s*-\s*|\s+)(?:et\s+|and\s+)?(?:-\s*)?(?P<unit>"
    + "|".join(sorted(_UNITS_WORDS, key=len, reverse=True)) + r"))?|(?P<teen>" + "|".join(sorted(_TEENS, key=len, reverse=True))
    + r"))(?![a-z])(?=\s*-?\s*(?:" + _UNIT + r")(?![a-z]))"
)


#: Session 7 (round 31): "day two", "jour trois", "POD four": a day numbered in words, rewritten as digits ("day 2   ")
#: so that the day readers ("day 2" near a procedure) read it.
_DAY_IN_WORDS = re.compile(r"(?<![a-z])(?P<day>day|jour|pod)\s+(?P<n>" + "|".join(sorted(ONES, key=len, reverse=True)) + r")(?![a-z'-])")


def _numbers(norm: str) -> str:
    """norm with compound numbers in words as digits, at the same length (offsets hold)."""
    def digits(m: re.Match) -> str:
        if m.group("teen"):
            value = _TEENS[re.sub(r"\s+", " ", m.group("teen"))]
        else:
            value = _TENS[m.group("tens")] + (_UNITS_WORDS[m.group("unit")] if m.group("unit") else 0)
        return str(value).ljust(len(m.group(0)))
    norm = _COMPOUND.sub(digits, norm)
    if "day" in norm or "jour" in norm or "pod" in norm:
        norm = _DAY_IN_WORDS.sub(lambda m: f"{m.group('day')} {ONES[m.group('n')]}".ljust(len(m.group(0))), norm)
    return norm


#: "1 week 3 days ago", "2 weeks and 3 days", "1 mois et 2 semaines": a compound duration as whole days (same length).
_COMPOUND_DURATION = re.compile(
    r"(?<![a-z0-9.,])(?P<a>\d{1,2})\s*(?P<u1>weeks?|wks?|semaines?|months?|mois)\s*(?:and|et|,|\+)?\s*(?P<b>\d{1,2})\s*"
    r"(?P<u2>days?|jours?|j|d|weeks?|wks?|semaines?)(?![a-z])"
)


def _compound_durations(norm: str) -> str:
    def days(m: re.Match) -> str:
        first = int(m.group("a")) * (7 if m.group("u1").startswith(("w", "sem")) else 30.44)
        second = int(m.group("b")) * (7 if m.group("u2").startswith(("w", "sem")) else 1)
        if m.group("u1").startswith(("w", "sem")) and m.group("u2").startswith(("w", "sem")):
            return m.group(0)  # "2 weeks 3 weeks": not a compound
        text = f"{int(first + second)} d"
        return text.ljust(len(m.group(0))) if len(text) <= len(m.group(0)) else m.group(0)
    return _COMPOUND_DURATION.sub(days, norm)


def _halves(norm: str) -> str:
    """norm with "N units and a half" as a whole number of smaller units, at the same length (offsets hold)."""
    if "dem" not in norm and "half" not in norm and ".5" not in norm and ",5" not in norm:
        return norm
    for pattern in _HALVES:
        def whole(m: re.Match) -> str:
            n = m.group("n")
            value = (int(n) if n.isdigit() else _HALF_WORDS[n]) + 0.5
            unit = m.group("unit")
            if unit.startswith(("y", "an")):  # (a bare "a"/"an" is a number word, never a unit here)
                n, short = value * 12, "mo"
            elif unit.startswith("mo"):
                n, short = int(value * 30.44), "d"  # whole days, rounded down: the least time
            elif unit.startswith(("w", "sem")) and value * 7 == int(value * 7):
                n, short = value * 7, "d"
            elif unit.startswith(("w", "sem")):
                n, short = value * 7 * 24, "h"
            else:
                n, short = value * 24, "h"
            span = m.group(0)
            for text in (f"{int(n)} {short}", f"{int(n)}{short}"):
                if len(text) <= len(span):
                    return text.ljust(len(span))
            return " " * len(span)  # no room: unread rather than misread ("2,5w" must not become 5 weeks)
        norm = pattern.sub(whole, norm)
    return norm


#: "second post-op day", "1st postoperative day", "premier jour post-opératoire"; "2nd day post-op", "third day after surgery".
_ORDINAL_DAY = re.compile(
    r"(?<![a-z0-9])(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|6th|seventh|7th|premier|1er|deuxieme|2e|2eme|"
    r"troisieme|3e|3eme|quatrieme|4e|4eme|cinquieme|5e|5eme)\s+(?:post[\s-]?op(?:erative)?|post[\s-]?operatoire|postoperatoire)\s+(?:day|jour)"
    r"|(?<![a-z0-9])(premier|1er|deuxieme|2e|2eme|troisieme|3e|3eme|quatrieme|4e|4eme|cinquieme|5e|5eme)\s+jour\s+post[\s-]?op"
    r"|(?<![a-z0-9])(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|6th|seventh|7th)\s+day\s+(?:post|after|following|s/p)(?![a-z])"
)
#: "post-op day two", "day three post TLIF", "POD two".
_DAY_WORD_NUMBER = re.compile(
    r"(?:post[\s-]?op(?:erative)?\s+day|(?<![a-z])pod)\s+(?P<n>one|two|three|four|five|six|seven|eight|nine|ten)(?![a-z])"
    r"|(?<![a-z])day\s+(?P<m>one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:post|after|following|s/p)(?![a-z])"
)
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5, "5th": 5,
             "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "premier": 1, "1er": 1, "deuxieme": 2, "2e": 2, "2eme": 2,
             "troisieme": 3, "3e": 3, "3eme": 3, "quatrieme": 4, "4e": 4, "4eme": 4, "cinquieme": 5, "5e": 5, "5eme": 5}

#: "48h post-op", "3 months after surgery", "à 3 mois de l'arthrodèse", "2 ans après".
_AFTER = re.compile(
    rf"(?<![a-z0-9/.])(\d{{1,3}}(?:[.,]\d)?)\s*(?:{_UNIT})\.?\s*(?P<rel>post|after|apres|de(?![a-z])|d'|since|s/p|s p(?![a-z])|status post|following|out from|out of)"
)
#: "since Tuesday's surgery", "operated on Monday", "opéré mardi", "intervention de lundi": the last such
#: weekday before the study (a week before when it is the study's weekday).
_WEEKDAYS = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6,
             "mon": 0, "tue": 1, "tues": 1, "wed": 2, "weds": 2, "thu": 3, "thur": 3, "thurs": 3, "fri": 4,
             "lundi": 0, "mardi": 1, "mercredi": 2, "jeudi": 3, "vendredi": 4, "samedi": 5, "dimanche": 6}
_WEEKDAY_SURGERY = re.compile(
    r"(?<![a-z])(?:(?:since|on|last|from|after|depuis|de)\s+)?(?P<day>monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche)(?:\s*'?s)?(?:\s+(?:dernier|derniere|last))?\s+"
    r"(?:surgery|operation|op|procedure|fusion|decompression|discectomy|laminectomy|intervention|chirurgie|operation)(?![a-z])"
    r"|(?:operated|operee?|opere|surgery|intervention|chirurgie|op|operation|recalibrage|laminectomie|laminectomy|discectomie|"
    r"discectomy|microdiscectomie|microdiscectomy|arthrodese|fusion|decompression|tlif|plif|acdf|lami|microdisc)\s+"
    r"(?:(?:done|performed|carried out|was|were|faite?|realisee?|pratiquee?)\s+)?(?:on\s+|le\s+|ce\s+|de\s+|du\s+|d\s+)?(?:last\s+)?(?P<day2>monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche)(?![a-z])"
)
_WEEKDAY_BEFORE_LAST = re.compile(
    r"(?<![a-z])(?:the\s+)?(?P<day>monday|tuesday|wednesday|thursday|friday|saturday|sunday)\s+before\s+last(?![a-z])"
    r"|(?<![a-z])(?P<fr>lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche)\s+d\s*'?\s*avant(?![a-z])"
)
#: "operated 3 days ago", "opéré il y a 3 jours".
_AGO = [
    # "il y a environ 10 jours", "2-3 weeks ago" (a range: its lower end, the least time)
    re.compile(rf"il y a\s+(?:environ\s+|presque\s+|pres de\s+|plus de\s+|a peu pres\s+|~\s*)?(\d{{1,3}})(?:\s*(?:-|a|ou)\s*\d{{1,3}})?\s*(?:{_UNIT})(?![a-z])"),
    re.compile(rf"(?<![0-9])(\d{{1,3}})(?:\s*(?:-|to|or)\s*\d{{1,3}})?\s*(?:{_UNIT})\s+(?:ago|back|earlier|prior|previously|before now|out)(?![a-z])"),
    # "voilà 3 jours", "ça fait 3 jours qu'elle a été opérée" (French, Belgian, Québec)
    re.compile(rf"(?<![a-z])(?:voila|ca fait|cela fait|ca va faire|ca fera)\s+(?:environ\s+|presque\s+|deja\s+)?(\d{{1,3}})\s*(?:{_UNIT})(?![a-z])"),
    # "arthrodèse datant de 2 ans", "qui date de 3 mois"
    re.compile(rf"(?<![a-z])(?:datant de|date de|datee de|vieille de|ancienne de)\s+(\d{{1,3}})\s*(?:{_UNIT})(?![a-z])"),
]
#: Numbers written as words ("two days ago", "il y a deux jours", "a fortnight ago", "une semaine après").
_WORD_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "eighteen": 18, "twenty": 20, "thirty": 30,
    "a couple of": 2, "couple of": 2, "a couple": 2, "couple": 2, "a few": 3, "few": 3, "several": 3,
    "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9,
    "dix": 10, "onze": 11, "douze": 12, "quinze": 15, "vingt": 20, "trente": 30, "quelques": 3,
    "une dizaine de": 10, "une quinzaine de": 15, "une vingtaine de": 20, "une couple de": 2, "une couple d": 2, "couple de": 2,
}
_WORD_NUMBER = "|".join(sorted((re.escape(k).replace("\\ ", "\\s+") for k in _WORD_NUMBERS), key=len, reverse=True))
_WORD_UNITS = {"h": r"hours?|heures?", "d": r"days?|jours?|journees?", "w": r"weeks?|semaines?", "f": r"fortnights?",
               "m": r"months?|mois", "y": r"years?|yrs|ans?|annees?"}
_WORD_UNIT = "|".join(f"(?P<{k}>{v})" for k, v in _WORD_UNITS.items())
_UNIT_HOURS_WORD = dict(_UNIT_HOURS, f=24 * 14)
#: "two days ago", "a week back", "il y a deux jours", "three weeks after surgery", "une semaine après l'arthrodèse",
#: "a fortnight ago", "il y a une quinzaine de jours".
_WORD_TIME = [
    re.compile(rf"(?<![a-z])(?:il y a|voila|ca fait|cela fait)\s+(?P<n>{_WORD_NUMBER})\s+(?:{_WORD_UNIT})(?![a-z])"),
    re.compile(rf"(?<![a-z])(?P<n>{_WORD_NUMBER})\s+(?:{_WORD_UNIT})\s+(?:ago|back|earlier|prior|out|auparavant|plus tot)(?![a-z])"),
    re.compile(rf"(?<![a-z])(?P<n>{_WORD_NUMBER})\s+(?:{_WORD_UNIT})\s+(?P<rel>post|after|apres|following|since|s/p|status post)(?![a-z])"),
]
#: A weekday next to a procedure ("L4-5 fusion Tuesday", "discectomie lundi dernier"), not after since/depuis.
_WEEKDAY = re.compile(r"(?<![a-z])(?:(?:on|last|le|ce)\s+)?(?P<day>monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
                      r"lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|tue|tues|wed|weds|thu|thur|thurs|fri|"
                      # session 9 (round 62): "Lumbar discectomy Mon." (never the French "mon" before a noun)
                      r"mon(?=\s*(?:[.,;)]|$)))\.?(?:\s+(?:dernier|derniere|last))?(?![a-z])")
#: A day of the month right after a weekday ("Wednesday the 4th", "mercredi 4", "mercredi le 4"): the date, not the last such weekday.
_DATE_AFTER_WEEKDAY = re.compile(r"\s*,?\s+(?:the\s+|le\s+)?\d{1,2}(?:st|nd|rd|th|er)?(?![0-9/.:h])")
#: A day of the month alone next to a procedure: "microdiscectomy on the 18th", "opéré le 18".
_DAY_OF_MONTH = re.compile(r"(?<![a-z0-9])(?:on\s+)?(?:the\s+)?(?P<en>\d{1,2})(?:st|nd|rd|th)(?![a-z0-9])"
                           r"|(?<![a-z])(?:le|du)\s+(?P<fr>\d{1,2})(?:er)?(?![0-9a-z/]|[.,:]\d|\s*(?:h|heures?|mn|min|mg|ml|mm|cm|%|ans?|jours?|mois|semaines?)(?![a-z]))")
_YESTERDAY = re.compile(r"(?:oper[a-z]*|surgery|chirurgie|intervention)\s+(hier|yesterday|la veille|ce matin|this morning|today|aujourd'hui)")

_MONTHS = {
    "jan": 1, "janv": 1, "janvier": 1, "january": 1, "feb": 2, "fev": 2, "fevr": 2, "fevrier": 2, "february": 2,
    "mar": 3, "mars": 3, "march": 3, "apr": 4, "avr": 4, "avril": 4, "april": 4, "mai": 5, "may": 5,
    "jun": 6, "juin": 6, "june": 6, "jul": 7, "juil": 7, "juillet": 7, "july": 7, "aug": 8, "aout": 8,
    "august": 8, "sep": 9, "sept": 9, "septembre": 9, "september": 9, "oct": 10, "octobre": 10,
    "october": 10, "nov": 11, "novembre": 11, "november": 11, "dec": 12, "decembre": 12, "december": 12,
}
_NUMERIC_DATE = re.compile(r"(?<![0-9/])(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{4}|\d{2}))?(?![0-9/])")
_ISO_DATE = re.compile(r"(?<![0-9])(\d{4})-(\d{2})-(\d{2})(?![0-9])")
_NAMED_DATE = re.compile(r"(?<![0-9])(\d{1,2})(?:er|st|nd|rd|th)?[\s-]+(?:of\s+)?([a-z]{3,9})\.?[\s-]+(\d{4})(?![0-9])")
#: "November 5, 2026", "Nov 5th 2026" (month first, with a year).
_MONTH_DAY_YEAR = re.compile(r"(?<![a-z])([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?![0-9])")
#: A month named alone after in/en/since/early/late ("fusion in September", "opéré en mars"): the last such month.
_MONTH_ALONE = re.compile(r"(?<![a-z])(?:in|en|early|late|mid|end of|beginning of|debut|fin|mi|during)[\s-]+(?:de\s+|d\s*'\s*)?"
                          r"([a-z]{3,9})\.?(?![a-z])(?!\s*[.,/-]?\s*\d)")
_FRENCH = re.compile(r"(?<![a-z])(le|la|du|des|et|opere|operee|pour|sur|avec|sans|depuis|une|douleur|chez|arthrodese)(?![a-z])")
_ENGLISH = re.compile(r"(?<![a-z])(the|of|and|for|with|after|since|operated|surgery|pain|on)(?![a-z])")


@dataclass
class Reading:
    """One estimate of the time since surgery, with where it came from."""

    hours: float
    source: str  # "text" or "surgery"
    text: str
    keyword: str | None = None
    tag: str | None = None
    start: int | None = None
    end: int | None = None

    def describe(self) -> str:
        where = f" in {self.tag} {self.keyword} [{self.start}:{self.end}]" if self.tag else ""
        return f"{self.hours:g} h since surgery from '{self.text}'{where} ({self.source})"


def surgery_reading(surgery: "SurgeryEstimate | dict | None",
                    study_dt: datetime | None) -> tuple[Reading | None, str | None]:
    """The surgery estimate (or a case's surgery record) as a reading, or a note saying why it cannot be used."""
    if not surgery:
        return None, None
    if isinstance(surgery, SurgeryEstimate):
        surgery = surgery.to_dict()
    try:
        when = datetime.fromisoformat(str(surgery["datetime"]))
    except (KeyError, ValueError):
        return None, "surgery record without a usable datetime"
    if study_dt is None:
        return None, "surgery record present but no StudyDate to compare it with"
    hours = (study_dt - when.replace(tzinfo=None)).total_seconds() / 3600
    if hours < 0:
        return None, "surgery record is after the study date: ignored"
    return Reading(round(hours, 1), "surgery", str(surgery.get("source") or surgery["datetime"])), None


def text_readings(fields: list[dict], study_dt: datetime | None) -> tuple[list[Reading], list[str]]:
    """Every time-since-surgery reading found in the text fields, and notes on dates left unknown."""
    readings: list[Reading] = []
    notes: list[str] = []
    for f in fields:
        value = f.get("value") or ""
        norm, index = normalise(value)
        norm = _compound_durations(_halves(_numbers(norm)))

        spans: list[tuple[int, int]] = []

        def add(hours: float, a: int, b: int) -> None:
            if any(a < y and x < b for x, y in spans):
                return  # the same words already gave a reading
            spans.append((a, b))
            start, end = index[a], index[b - 1] + 1
            readings.append(Reading(round(hours, 1), "text", value[start:end], f.get("keyword"), f.get("tag"), start, end))

        for pattern, unit in _RELATIVE:
            for m in pattern.finditer(norm):
                n = next((g for g in m.groups() if g is not None), None)
                if unit == "day2":
                    add(48, m.start(), m.end())
                    continue
                if unit == "W":  # "post-op week 2": the second week, from its first day (the least time, the safer)
                    add(max(int(n) - 1, 0) * 24 * 7 + 24, m.start(), m.end())
                    continue
                add(int(n) * _UNIT_HOURS[unit], m.start(), m.end())
        for m in _BRACKETED.finditer(norm):
            before = norm[max(0, m.start() - 60) : m.start()]
            if _BRACKET_PROCEDURE.search(before) and not _FUTURE.search(before[-40:]):
                n = int(m.group(1))
                unit = next(k for k in _UNITS if m.group(k))
                add(n * _UNIT_HOURS[unit], m.start(), m.end())
        for pattern in (_PROCEDURE_THEN_TIME, _PROCEDURE_TIME_CLAUSE, _PROCEDURE_IN_BRACKET):
            for m in pattern.finditer(norm):
                if not _FUTURE.search(norm[max(0, m.start() - 40) : m.end()]):
                    add(int(m.group("n")) * _UNIT_HOURS[_unit(m)], m.start("n"), m.end())
        for m in _DAY_AFTER_PROCEDURE.finditer(norm):
            if _ORDINAL_BEFORE.search(norm[max(0, m.start() - 20) : m.start()]):
                continue  # "second post-op day after decompression", "3rd day after": read by the ordinal patterns
            if not _FUTURE.search(norm[max(0, m.start() - 40) : m.start()]):
                add(24, m.start(), m.end())
        for m in _ORDINAL_DAY.finditer(norm):
            add((_ORDINALS[m.group(1) or m.group(2) or m.group(3)]) * 24, m.start(), m.end())
        for m in _DAY_WORD_NUMBER.finditer(norm):
            add(_WORD_NUMBERS[m.group("n") or m.group("m")] * 24, m.start(), m.end())
        for m in _AFTER.finditer(norm):
            if _SURGERY.search(norm, m.start("rel"), m.start("rel") + 30):
                add(float(m.group(1).replace(",", ".")) * _UNIT_HOURS[_unit(m)], m.start(), m.end())
        for pattern in _WORD_TIME:
            for m in pattern.finditer(norm):
                if _ONSET_BEFORE.search(norm[max(0, m.start() - 25) : m.start()]):
                    continue
                if "rel" in pattern.groupindex and not _SURGERY.search(norm, m.start("rel"), m.end() + 30):
                    continue  # "three weeks after the accident": what follows is not the operation
                if _near_procedure(norm, m.start(), m.end()) or "rel" in pattern.groupindex:
                    n = _WORD_NUMBERS[re.sub(r"\s+", " ", m.group("n"))]
                    unit = next(k for k in _WORD_UNITS if m.group(k))
                    add(n * _UNIT_HOURS_WORD[unit], m.start(), m.end())
        for pattern in _AGO:
            for m in pattern.finditer(norm):
                if _ONSET_BEFORE.search(norm[max(0, m.start() - 25) : m.start()]):
                    continue  # "pain since 2 days ago", "started 3 days ago": when the complaint began
                if _near_procedure(norm, m.start(), m.end()):
                    add(int(m.group(1)) * _UNIT_HOURS[_unit(m)], m.start(), m.end())
        if study_dt is not None:
            for m in _WEEKDAY_BEFORE_LAST.finditer(norm):  # "fusion the Monday before last": a week before the last such day
                if _near_procedure(norm, m.start(), m.end()):
                    back = (study_dt.weekday() - _WEEKDAYS[m.group("day") or m.group("fr")]) % 7 or 7
                    add((back + 7) * 24, m.start(), m.end())
            for m in _WEEKDAY_SURGERY.finditer(norm):
                if _DATE_AFTER_WEEKDAY.match(norm, m.end()):
                    continue  # session 9 (round 61): "on Wednesday the 4th": the day of the month says which Wednesday
                if _FUTURE.search(norm[max(0, m.start() - 40) : m.end() + 25]) or re.match(r"\s*(?:prochaine?|next)(?![a-z])", norm[m.end() :]):
                    continue  # "sera opéré lundi prochain", "TLIF to be done on Monday": planned
                day = _WEEKDAYS[m.group("day") or m.group("day2")]
                back = (study_dt.weekday() - day) % 7 or 7
                add(back * 24, m.start(), m.end())
        if study_dt is not None:
            for m in _WEEKDAY.finditer(norm):
                if _DATE_AFTER_WEEKDAY.match(norm, m.end()):
                    continue
                if _ONSET_BEFORE.search(norm[max(0, m.start() - 25) : m.start()]) or _OTHER_EVENT_DAY.search(norm[max(0, m.start() - 30) : m.start()]):
                    continue  # "pain since Tuesday", "seen in clinic on Monday"
                if _near_procedure(norm, m.start(), m.end()):
                    back = (study_dt.weekday() - _WEEKDAYS[m.group("day")]) % 7 or 7
                    add(back * 24, m.start(), m.end())
        for m in _YESTERDAY.finditer(norm):
            add(24 if m.group(1) in ("hier", "yesterday", "la veille") else 0, m.start(), m.end())
        for m in _DAY_RE.finditer(norm):
            if re.search(r"(?:since|depuis|from|for|until|jusqu'a|jusqu a)\s*$", norm[max(0, m.start() - 10) : m.start()]):
                continue  # "depuis hier", "since last night": when the complaint began, not the operation
            if m.group(1) == "la veille" and re.match(r"\s+(?:de|d)(?![a-z])", norm[m.end() :]):
                continue  # "hospitalisé la veille de son arthrodèse": the eve of an operation still to come (session 14, round 113)
            window = norm[max(0, m.start() - 30) : m.start()]
            if (_OTHER_EVENT_DAY.search(window) and not _PLACE_OF_SURGERY.search(window)) or _possessive_other(norm, m.end()):
                continue  # "today's lateral", "CT yesterday", "radio de ce matin": the day of an image or a test
            if _near_procedure(norm, m.start(), m.end()):
                add(_DAY_WORDS[re.sub(r"[\s-]+", " ", m.group(1))], m.start(), m.end())
        for m in _DAY_N.finditer(norm):
            if _near_procedure(norm, m.start(), m.end()):
                add(int(m.group(1)) * 24, m.start(), m.end())
        for m in _UK.finditer(norm):
            if int(float(m.group(1))) > 12 and m.group(2) == "12" and _BEFORE_YEARLESS.search(norm[max(0, m.start() - 12) : m.start()]):
                continue  # "TLIF on 28/12": a date (read below), not 28 months
            if int(float(m.group(1))) > 12 and m.group(2) == "12" and _recent_december_day(int(float(m.group(1))), study_dt):
                continue  # session 14: "C4-C6 (vis massas latérales) 17/12" on 18/12 is yesterday's date, not 17 months
            if _near_procedure(norm, m.start(), m.end()):
                add(float(m.group(1)) * _UK_HOURS[m.group(2)], m.start(), m.end())
        if study_dt is not None:
            partial = []
            for m in _MONTH_YEAR.finditer(norm):
                month, year = int(m.group(1)), int(m.group(2))
                if 1 <= month <= 12:
                    partial.append((year, month, m.start(), m.end()))
            for m in _NAMED_MONTH_YEAR.finditer(norm):
                month = _MONTHS.get(m.group(1))
                if month and not re.search(r"\d\s*(?:er)?\s*$", norm[max(0, m.start() - 4) : m.start()]):
                    partial.append((int(m.group(2)), month, m.start(), m.end()))
            for m in _MONTH_ALONE.finditer(norm):
                month = _MONTHS.get(m.group(1))
                if month and m.group(1) not in ("mar", "may", "mai", "jun", "sep", "dec", "oct"):  # "in may": a modal verb
                    # the last such month on or before the study's
                    year = study_dt.year if month <= study_dt.month else study_dt.year - 1
                    partial.append((year, month, m.start(1), m.end(1)))
            month_spans = [(a, b) for *_, a, b in partial]
            for m in _YEAR.finditer(norm):
                if not any(a <= m.start() < b for a, b in month_spans):
                    partial.append((int(m.group(1)), None, m.start(), m.end()))
            for year, month, a, b in partial:
                if not _near_procedure(norm, a, b):
                    continue
                # The least time that can have passed: the end of that month or year (the safer reading).
                end = datetime(year + (month == 12), month % 12 + 1, 1) if month else datetime(year + 1, 1, 1)
                if end <= study_dt:
                    add((study_dt - end).total_seconds() / 3600, a, b)
                elif (month and (year, month) == (study_dt.year, study_dt.month)) or (not month and year == study_dt.year):
                    notes.append(f"partial date in {f.get('tag')} {f.get('keyword')} [{index[a]}:{index[b - 1] + 1}] is this month or year: left unknown")
        for date, a, b, note in _dates(norm, study_dt.year if study_dt else None, study_dt):
            if not (_SURGERY.search(norm[max(0, a - 50) : a]) or _near_procedure(norm, a, b)) or (date is None and not note):
                continue
            if _ONSET_DATE.search(norm[max(0, a - 30) : a]):
                continue  # "leg pain since 14/11", "douleur depuis le 14 novembre": the complaint's date, not the operation's
            if _FUTURE.search(re.split(r"[.;]\s", norm[max(0, a - 40) : a])[-1]):
                continue  # session 7 (round 34): "TLIF booked for 03/12/2026": a planned date, in either reading
            if _IMAGE_DATE_BEFORE.search(norm[max(0, a - 30) : a]):
                continue  # session 7 (round 42): "rupture de vis S1 vue sur la radio du 02/11/2026": an image's date
            if isinstance(date, tuple):
                # DD/MM or MM/DD, nothing in the text tells: a reading after the study is impossible; when both are
                # possible, both are kept (the engine runs each and keeps the higher priority, and says so).
                possible = list(dict.fromkeys(d for d in date if d is not None and study_dt is not None and d <= study_dt))
                if not possible:
                    notes.append(f"ambiguous date (DD/MM or MM/DD) in {f.get('tag')} {f.get('keyword')} [{index[a]}:{index[b - 1] + 1}]: left unknown")
                for d in possible:
                    spans[:] = [sp for sp in spans if sp != (a, b)]
                    add((study_dt - d).total_seconds() / 3600, a, b)
                continue
            if note:
                notes.append(f"{note} in {f.get('tag')} {f.get('keyword')} [{index[a]}:{index[b - 1] + 1}]: left unknown")
            elif study_dt is None:
                notes.append(f"surgery date in {f.get('tag')} but no StudyDate to compare it with: left unknown")
            elif date > study_dt:
                notes.append(f"surgery date in {f.get('tag')} is after the study date: ignored")
            else:
                add((study_dt - date).total_seconds() / 3600, a, b)
        if study_dt is not None:
            for m in _DAY_OF_MONTH.finditer(norm):
                day = int(m.group("en") or m.group("fr"))
                after = norm[m.end() : m.end() + 12].split()
                if not 1 <= day <= 31 or (after and after[0].strip(".,") in _MONTHS) or _ONSET_BEFORE.search(norm[max(0, m.start() - 25) : m.start()]):
                    continue  # a named month follows (read as a date above), or the complaint's onset
                if not _near_procedure(norm, m.start(), m.end()):
                    continue
                # this month, or the previous one when the day is still to come
                year, month = study_dt.year, study_dt.month
                if day > study_dt.day:
                    year, month = (year - 1, 12) if month == 1 else (year, month - 1)
                date = _make(year, month, day)
                if date is not None:
                    add((study_dt - date).total_seconds() / 3600, m.start(), m.end())
    return readings, notes


#: Words that make the time that follows the onset of a complaint ("pain started 3 days ago").
_ONSET_BEFORE = re.compile(
    r"(?<![a-z])(?:since|depuis|from|started|starting|start|began|begun|begin|onset|commence|commencee|debute|debutee|apparu|apparue|"
    r"apparition|came on|come on|developed|noticed|worse|worsening|aggravee?|for)\s*(?:about|around|approx|environ|some)?\s*$"
)
#: ... and before a date: "since 14/11", "depuis le 14 novembre", "pain from Nov 14th".
_ONSET_DATE = re.compile(
    r"(?<![a-z])(?:since|depuis|from|started|starting|began|begun|onset|apparue?|apparition|debut|commence|commencee|developed|noticed)"
    r"\s*(?::\s*)?(?:on\s+|le\s+|the\s+|du\s+|mid\s+|about\s+|around\s+|environ\s+)?$"
)
#: An image, a test or a visit just before a day word: the day is that event's, not the operation's.
#: An image or test named right before a date: the date is that image's ("la radio du 02/11/2026", "CT of 12/10", "MRI dated
#: 3/9/2026"), never the operation's.
_IMAGE_DATE_BEFORE = re.compile(
    r"(?<![a-z])(?:x ?ray|xr|rx|film|radiograph|radio|radiographie|cliche|ct|mri|mr|irm|scan|scanner|tdm|imaging|imagerie|echo|ultrasound|"
    r"doppler|emg|bilan|prise de sang|bloods|labs)\s+(?:(?:du|de|of|dated|from|on|le|taken on|done on|fait le|faite le|realise le|"
    r"realisee le)\s+){1,2}$"
)
#: Session 8 (round 50): where the operation was done ("surgery at a private clinic last week") is no clinic visit.
_PLACE_OF_SURGERY = re.compile(r"(?<![a-z])(?:at|in|dans|a) (?:a |an |the |une |la |le )?(?:private |privee |local |other |another |autre )?"
                               r"(?:clinic|clinique|hospital|hopital)\s*$")
_OTHER_EVENT_DAY = re.compile(
    r"(?<![a-z])(?:x ?ray|xr|rx|film|films|radiograph|radiographs|radio|radios|radiographie|cliche|cliches|tdm|lateral|ap|ct|cts|mri|mr|irm|scan|"
    r"scanner|imaging|imagerie|bloods|labs|bilan|bilan sanguin|prise de sang|review|reviewed|seen|vu|vue|clinic|consultation|"
    r"appointment|rdv|visit|visite|echo|ultrasound|doppler|emg|"
    # session 4 (round 14): the day the read or the report is wanted ("Surgeon wants read today before clinic", "please report
    # today", "interprétation ce jour svp") is no day of the operation
    r"read|reading|report|reported|reporting|result|results|images|study|interpretation|interpreter|lecture|compte rendu|cr|"
    r"resultat|resultats|needed|required|wanted|requested|pls|please|svp|merci)\s*(?:done|taken|performed|from|of|de|du|d|realisee?|fait|faite|it|by|if possible|si possible|if poss)?\s*$"
)
_POSSESSIVE = re.compile(r"\s*'\s*s\s+([a-z]+)|\s+s\s+([a-z]+)")


def _possessive_other(norm: str, end: int) -> bool:
    """"today's lateral", "yesterday's bloods": a day word that owns something other than a procedure."""
    m = _POSSESSIVE.match(norm, end)
    if not m:
        return False
    word = m.group(1) or m.group(2)
    return not _SURGERY.match(word)


_CLAUSE_BREAK = re.compile(r"[,;:\n()]|\.(?:\s|$)| (?:but|mais|now|then|puis|since|depuis|and|et|with|avec) ")
_ASIDE = re.compile(r"\([^()]{1,40}\)")
_FILLER = re.compile(r"^[\s(]*(?:in|en|on|le|the|of|de|du|d|since|depuis|at|a|le)?[\s(]*$")
#: Round 23: what an operation was done with, or at which further levels, continues its clause ("ACDF with cage and plate
#: yesterday", "ALIF L4-5 and L5-S1 done 2 days ago"): the time right after such a tail is the operation's.
_PROCEDURE_DETAIL_TAIL = re.compile(
    r"(?:" + _SURGERY.pattern + r")[a-z]*(?:[\s,()/-]+(?:with|and|avec|et|an?|the|une?|des|de|d|double|single|two|2|bilateral|"
    r"stand[\s-]?alone|peek|titanium|ti|anterior|posterior|percutaneous|percutanees?|cages?|plates?|screws?|rods?|vis|plaques?|tiges?|grafts?|greffe|"
    r"allograft|autograft|bone|instrumentation|fixation|[cdtls]\d{1,2}(?:\s*[-/]\s*[cdtls]?\d{1,2})?|levels?|niveaux?|done|"
    r"performed|fait|faite|realisee?))*[\s,()/-]*$"
)
_DETAIL_JOIN = re.compile(r"(?:with|avec|and|et)\s")


def _clauses(norm: str, a: int, b: int) -> tuple[str, str, str]:
    """(previous clause, the clause holding norm[a:b], next clause) within its sentence (200 characters at most)."""
    lo = max(0, a - 200)
    hi = b + 200
    for end in (". ", ".\n", "\n", ";"):
        cut = norm.rfind(end, lo, a)
        if cut >= 0:
            lo = max(lo, cut + len(end))
        cut = norm.find(end, b, hi)
        if cut >= 0:
            hi = min(hi, cut)
    norm, a, b = norm[lo:hi], a - lo, b - lo
    # A short aside in parentheses that names no procedure, no plan and not the time itself is blanked, so that
    # "laminectomie L3-L4 (sans matériel) d'avant-hier" keeps the procedure and its day in one clause.
    norm = _ASIDE.sub(lambda m: m.group(0) if (m.start() <= a < m.end() or _FUTURE.search(m.group(0)))
                      # session 9 (round 65): a short aside naming the procedure again ("Reprise chirurgicale (redo) L4-L5
                      # il y a 5 jours") joins the clause: its brackets are blanked, its words kept
                      else " " + m.group(0)[1:-1] + " " if _SURGERY.search(m.group(0))
                      else " " * len(m.group(0)), norm)
    breaks = list(_CLAUSE_BREAK.finditer(norm))
    starts = [0] + [m.end() for m in breaks]
    ends = [m.start() for m in breaks] + [len(norm)]
    spans = list(zip(starts, ends))
    k = next((i for i, (x, y) in enumerate(spans) if x <= a < max(y, x + 1)), len(spans) - 1)
    own = norm[spans[k][0] : max(spans[k][1], b)]
    prev = norm[spans[k - 1][0] : spans[k - 1][1]] if k > 0 else ""
    nxt = norm[spans[k + 1][0] : spans[k + 1][1]] if k + 1 < len(spans) else ""
    return prev, own, nxt


def _near_procedure(norm: str, a: int, b: int) -> bool:
    """Is a done (not planned) procedure named in the same clause as norm[a:b]?

    When the time expression stands alone in its clause ("Hier soir, laminectomie",
    "TLIF L4-L5, 2019"), the neighbouring clauses are read instead.
    """
    prev, own, nxt = _clauses(norm, a, b)
    candidates = [own]
    rest = own.replace(norm[a:b], " ", 1)
    if _FILLER.match(rest):
        candidates = [own + " " + nxt, prev + " " + own]
    else:
        before = norm[max(0, a - 120) : a]
        before = before[max(before.rfind(". "), before.rfind(";")) + 1 :]
        tail = _PROCEDURE_DETAIL_TAIL.search(before)
        if tail and _DETAIL_JOIN.search(tail.group(0)) and not _FUTURE.search(before):
            return True
    for window in candidates:
        if _SURGERY.search(window):
            return not _FUTURE.search(window)
    return False


def _unit(m: re.Match) -> str:
    return next(k for k in _UNITS if m.group(k))


_PROCEDURE_END = re.compile(r"(?:lif|acdf|fusion|discectomy|microdiscectomy|laminectomy|decompression|arthrodese|discectomie|"
                            r"laminectomie|operated|operee?|surgery|chirurgie|intervention|op|"
                            # session 7 (round 30): "L5/S1 microdisc 28/11": short and other procedure names
                            r"microdisc|microd|lami|decompr?n?|fixation|instrumentation|plasty|plastie|revision|reprise|"
                            r"screws?|vis|ostheosynthese|osteosynthese|corpectomy|foraminotomy|stabilisation|stabilization)"
                            r"(?:\s+(?:r|l|rt|lt|right|left|g|d|gauche|droite|droit|bilat|bilateral|bilaterale))?"  # session 8: "TLIF R L4/5 24/11"
                            r"(?:\s+[lcts]\d{1,2}(?:\s*[-/]\s*[lcts]?\d{1,2})*)?"  # "Lami L3-4 01/12": the level between
                            r"(?:\s+(?:r|l|rt|lt|right|left|g|d|gauche|droite|droit|bilat|bilateral|bilaterale))?"
                            r"\s*(?:\(|on|le|du|of|dated)?\s*$")
def _recent_december_day(day: int, study_dt) -> bool:
    """Is the 'N/12' of a study done in December or January a day of the last December, at most 60 days before the study
    (a date, read as such below), rather than N months? A number above 12 over 12 is both; the near date is the reading
    that keeps the early rules on."""
    if study_dt is None or not 13 <= day <= 31:
        return False
    year = study_dt.year if study_dt.month == 12 else study_dt.year - 1
    try:
        when = datetime(year, 12, day, tzinfo=study_dt.tzinfo)
    except ValueError:
        return False
    return 0 <= (study_dt - when).days <= 60


_BEFORE_YEARLESS = re.compile(r"(?:\ble|\bdu|\bon|\bsince|\bof|\bthe|\bau|\(\s*op|(?:\bdate|\bdos|\bop|\bsurgery|\boperation|\bintervention|"
                              r"\bchirurgie)\s*[:=])\s*$")  # session 6 (round 24): "(op 12/05)"
_NAMED_DAY_MONTH = re.compile(r"(?<![a-z0-9/])(\d{1,2})(?:er|st|nd|rd|th)?(?:\s+|\s*-\s*)(?:of\s+)?([a-z]{3,9})\.?(?!\s*\d)")
_MONTH_DAY = re.compile(r"(?<![a-z])([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?![0-9/])(?!\s*,?\s*\d{4})")


#: British usage (spelling, NHS words, the UK 2/7 notation): a numeric date is then DD/MM.
_BRITISH = re.compile(
    r"haem|anaes|oedem|orthopaed|paediat|(?<![a-z])(?:gp|a&e|a ?& ?e|mum|theatre|nhs|registrar|ward round)(?![a-z])|"
    r"(?<![0-9/])\d{1,2}/(?:7|52)(?![0-9/])"
)


def _dates(norm: str, year_now: int | None = None, study_dt: datetime | None = None):
    """(datetime | (datetime, datetime) | None, start, end, note) for every date written in the text.

    A numeric date that reads both as DD/MM and MM/DD (neither number above 12, no French or
    British usage in the text) gives both candidates (day first, then month first).

    A day and month without a year ("le 14/11", "18 novembre", "Nov 18th") take the study's
    year; a yearless numeric date counts only after "le", "du", "on", "since"... so that levels
    (L4/5), power grades (3/5) and UK notations (2/7) are never read as dates.
    """
    def yearless(month: int, day: int, at: int, roll: bool = True) -> datetime | None:
        # a day and month without a year: this year's, or last year's when this year's is still to come
        # ("arthrodèse le 28 décembre" read on 5 January), unless the text plans it ("prévue le 02/12": left in the future)
        d = _make(year_now, month, day)
        if roll and d is not None and study_dt is not None and d > study_dt and not _FUTURE.search(norm[max(0, at - 40) : at + 12]):
            last = _make(year_now - 1, month, day)
            if last is not None and (study_dt - last).days <= 183:  # a date written without its year is a recent one
                d = last
        return d

    french = len(_FRENCH.findall(norm)) >= len(_ENGLISH.findall(norm))
    dayfirst = french or bool(_BRITISH.search(norm))  # French and British writers put the day first
    taken: list[tuple[int, int]] = []
    for m in _ISO_DATE.finditer(norm):
        taken.append(m.span())
        yield _make(int(m.group(1)), int(m.group(2)), int(m.group(3))), m.start(), m.end(), None
    for m in _NAMED_DATE.finditer(norm):
        month = _MONTHS.get(m.group(2))
        if month:
            taken.append(m.span())
            yield _make(int(m.group(3)), month, int(m.group(1))), m.start(), m.end(), None
    for m in _MONTH_DAY_YEAR.finditer(norm):
        month = _MONTHS.get(m.group(1))
        if month and not any(a <= m.start() < b for a, b in taken):
            taken.append(m.span())
            yield _make(int(m.group(3)), month, int(m.group(2))), m.start(), m.end(), None
    if year_now is not None:
        for m in _NAMED_DAY_MONTH.finditer(norm):
            month = _MONTHS.get(m.group(2))
            if month and int(m.group(1)) <= 31:
                taken.append(m.span())
                yield yearless(month, int(m.group(1)), m.start()), m.start(), m.end(), None
        for m in _MONTH_DAY.finditer(norm):
            month = _MONTHS.get(m.group(1))
            if month and int(m.group(2)) <= 31 and not any(a <= m.start() < b for a, b in taken):
                taken.append(m.span())
                yield yearless(month, int(m.group(2)), m.start()), m.start(), m.end(), None
    for m in _NUMERIC_DATE.finditer(norm):
        if any(a <= m.start() < b for a, b in taken):
            continue
        if m.group(3) is None:
            a, b = int(m.group(1)), int(m.group(2))
            # "TLIF 11/11", "discectomy (15/11)": a day and month right after a procedure, but never a level (4/5),
            # a power grade (x/5) or a UK notation (x/7, x/12, x/52)
            right_after = (_PROCEDURE_END.search(norm[max(0, m.start() - 25) : m.start()])
                           and (b not in (5, 7, 12) or (b == 12 and (m.group(1).startswith("0") or a > 12)))
                           and not (b == a + 1 and a <= 11))
            if year_now is None or not (_BEFORE_YEARLESS.search(norm[max(0, m.start() - 12) : m.start()]) or right_after):
                continue
            if dayfirst or a > 12:
                yield yearless(b, a, m.start()), m.start(), m.end(), None
            elif b > 12:
                yield yearless(a, b, m.start()), m.start(), m.end(), None
            else:
                # ambiguous DD/MM or MM/DD: a reading after the study is what tells them apart, so no year is rolled back
                yield (yearless(b, a, m.start(), False), yearless(a, b, m.start(), False)), m.start(), m.end(), None
            continue
        a, b, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
        year += 2000 if year < 100 else 0
        if dayfirst or a > 12:
            yield _make(year, b, a), m.start(), m.end(), None
        elif b > 12:
            yield _make(year, a, b), m.start(), m.end(), None
        elif a == b:
            yield _make(year, a, a), m.start(), m.end(), None
        else:
            yield (_make(year, b, a), _make(year, a, b)), m.start(), m.end(), None


def _make(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day)
    except ValueError:
        return None


# ---- the surgery estimate: intraoperative prior, request text, first postoperative prior ----

#: A prior whose description says it is postoperative (accents and case folded first).
POSTOP_PRIOR = re.compile(r"(post-?op\w*|postoperat\w*|\bj\+?\d+\b|\bpod\s?\d+\b|controle arthrodese|apres chirurgie)")


@dataclass
class SurgeryEstimate:
    """When the operation was, as far as the triage can tell, and from what."""

    datetime: str  # ISO
    source: str  # what it was read from, in words
    trust: str  # high: intraoperative study; medium: request text; low: first postoperative study
    has_time: bool
    study_instance_uid: str | None = None  # the prior it comes from
    postop_interval_hours: float | None = None  # from the surgery to the current study
    candidates: list[dict] = field(default_factory=list)  # every reading: datetime, source, trust

    @property
    def evidence_source(self) -> str:
        return f"prior study {self.study_instance_uid}" if self.study_instance_uid else "request text"

    def to_dict(self) -> dict:
        out = {"datetime": self.datetime, "source": self.source, "trust": self.trust}
        if self.study_instance_uid:
            out["study_instance_uid"] = self.study_instance_uid
        out["has_time"] = self.has_time
        if self.postop_interval_hours is not None:
            out["postop_interval_hours"] = self.postop_interval_hours
        out["candidates"] = [dict(c) for c in self.candidates]
        return out


def text_surgery(study, hours: float | None) -> dict | None:
    """The surgery time the request text implies (`hours` before the study), as a candidate for the estimate."""
    when = study_datetime(study)
    if hours is None or when is None:
        return None
    return {"datetime": (when - timedelta(hours=hours)).isoformat(timespec="seconds"), "source": "clinical text"}


def parse_iso(value: str | None) -> tuple[datetime | None, bool]:
    """An ISO date or datetime (or DICOM DA); returns (datetime, has_time)."""
    text = str(value or "").strip()
    if not text:
        return None, False
    try:
        if len(text) == 10 and text[4] == "-":
            return datetime.combine(date.fromisoformat(text), time()), False
        dt = datetime.fromisoformat(text)
        return dt.replace(tzinfo=None), True
    except ValueError:
        return parse_datetime(text, None), False


def prior_label(prior: dict) -> str:
    """"<uid> (XA, 'PER-OP SCOPIE')" for sources and conflicts."""
    mods = "/".join(prior.get("modalities") or []) or "?"
    desc = prior.get("description") or ""
    return f"{prior['study_instance_uid']} ({mods}, {desc!r})" if desc else f"{prior['study_instance_uid']} ({mods})"


def infer_surgery(priors: list[dict], text: dict | None,
                  current_dt: datetime | None = None) -> tuple[SurgeryEstimate | None, list[str]]:
    """The surgery estimate from, in order of trust: the intraoperative study, the text, the first postoperative study.

    `priors` are relevant priors sorted by date with `_dt`, `_intraop` and `_texts` set; `text` is
    `text_surgery()` (or {"date"|"datetime": ISO, "source": ...}). Returns the estimate, which
    keeps every candidate reading (the rules may evaluate each, guide section 2), and conflicts.
    """
    candidates: list[dict] = []
    intraop = [p for p in priors if p["_intraop"] and p["_dt"]]
    if intraop:
        p = intraop[-1]
        candidates.append({"datetime": p["_dt"].isoformat(), "source": f"intraoperative study {prior_label(p)}",
                           "trust": "high", "has_time": bool(p.get("study_time")),
                           "study_instance_uid": p["study_instance_uid"]})
    if text:
        dt, has_time = parse_iso(text.get("datetime") or text.get("date"))
        if dt:
            source = text.get("source") or "request text"
            candidates.append({"datetime": dt.isoformat(), "source": f"text date from {source}",
                               "trust": "medium", "has_time": has_time})
    postop = [p for p in priors if not p["_intraop"] and p["_dt"] and POSTOP_PRIOR.search(fold(" ".join(p["_texts"])))]
    if postop:
        p = postop[0]
        candidates.append({"datetime": datetime.combine(p["_dt"].date(), time()).isoformat(),
                           "source": f"first postoperative study {prior_label(p)} (surgery on or before this date)",
                           "trust": "low", "has_time": False, "study_instance_uid": p["study_instance_uid"]})
    conflicts: list[str] = []
    if not candidates:
        return None, conflicts
    chosen = candidates[0]
    day = datetime.fromisoformat(chosen["datetime"]).date()
    for other in candidates[1:]:
        other_day = datetime.fromisoformat(other["datetime"]).date()
        gap = (other_day - day).days
        if other["trust"] == "low":
            if gap < 0:
                conflicts.append(f"{other['source']} is dated {other_day.isoformat()}, before the surgery date "
                                 f"{day.isoformat()} from {chosen['source']}")
        elif abs(gap) > 1:
            conflicts.append(f"surgery date {other_day.isoformat()} from {other['source']} differs by {abs(gap)} "
                             f"days from {day.isoformat()} from {chosen['source']}")
    interval = None
    if current_dt:
        interval = round((current_dt - datetime.fromisoformat(chosen["datetime"])).total_seconds() / 3600, 1)
    estimate = SurgeryEstimate(chosen["datetime"], chosen["source"], chosen["trust"], chosen["has_time"],
                               chosen.get("study_instance_uid"), interval,
                               [{k: c[k] for k in ("datetime", "source", "trust")} for c in candidates])
    return estimate, conflicts

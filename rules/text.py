"""Clinical text matching: normalisation, tokens, concept mentions and their context.

Text is repaired (mojibake, ftfy) and bounded (16 KB per field, typo tolerance only for
words of at most 40 letters), then normalised (case, accents, ligatures, haem/hem and
oe/e spellings, French elisions) before matching, but every token keeps its offsets in
the repaired text, so a mention points at the characters the clinician wrote.

Each mention gets the ConText attributes (Chapman/Harkema): assertion (affirmed,
uncertain, negated), historical, hypothetical (conditional, purpose, planned) and
experiencer, from the bilingual cue lists in lexicon.yaml. See docs/clinical-nlp.md.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field

from bisect import bisect_left, bisect_right
from functools import lru_cache

import ftfy
from rapidfuzz.distance import OSA

from rules.prefilter import LiteralSet, required_literals

#: Longer normalised words are not read by the lexicon's patterns (no clinical word is that long).
_LONGEST_WORD = 64

_CHAR_MAP = {
    "œ": "oe",
    "æ": "ae",
    "ß": "ss",
    "’": "'",
    "‘": "'",
    "`": "'",
    "ʼ": "'",
    "\u00a0": " ",
    # session 7 (round 35): an em dash separates a form's fields ("Fièvre : non — Troubles sphinctériens : oui") as "|" does
    # (an en dash stays a range: "L4–L5")
    "\u2014": "|",
    # session 8 (round 49): a chart's arrows ("↓ sensation S2-S4 bilat, ↓ anal tone")
    "\u2193": " reduced ",
    "\u2191": " raised ",
}

#: Words, digits, newlines and the punctuation that carries meaning (scope, "?", "J+2", "r/o").
_TOKEN = re.compile(r"[a-z0-9]+|\n|[?+/#.;:,!()|]")

#: Typo correction only for words at least this long (shorter words are too ambiguous).
_FUZZY_MIN = 6
#: ... and at most this long: a longer "word" is noise (or an attack) and is left as it is.
WORD_CAP = 40
#: Characters read per text field and per study; the rest is ignored (and said so).
FIELD_CAP = 16 * 1024
STUDY_CAP = 64 * 1024

#: Signs of UTF-8 text decoded as Latin-1 ("hÃ©matome"): only then is ftfy asked to repair.
_MOJIBAKE = re.compile("[\u00c2-\u00c3][\u0080-\u00bf]|\u00e2[\u0080-\u00bf\u20ac]")  # é, and 3-byte signs ("☐", "’")


#: The same, lower-cased by a system on the way ("rã©tention", "aprã¨s"): "ã" (the lower case of "Ã") before a
#: Latin-1 symbol of 0x80-0xBF, which lower-casing leaves alone; a real "ã" is never followed by one.
_LOWER_MOJIBAKE = re.compile("\u00e3(?=[\u0080-\u00bf])")


#: Punctuation dictated as words and left by speech recognition ("no saddle numbness full stop post op day three",
#: "spondylodiscitis question mark", "point à la ligne"); "virgule" only away from numbers ("sept virgule neuf" is 7.9).
_SPOKEN_PUNCTUATION = re.compile(
    r"(?<![\w'])(?P<w>full stops?|question marks?|new line|new paragraph|next line|comma|commas|semi ?colon|"
    r"point (?:a|à) la ligne|point d'interrogation|point d interrogation|virgule)(?![\w'])", re.IGNORECASE)
_NUMBERISH = re.compile(r"(?:\d|zero|one|two|three|four|five|six|seven|eight|nine|ten|un|une|deux|trois|quatre|cinq|sept|huit|neuf|dix)\W*$",
                        re.IGNORECASE)


def _spoken_punctuation(text: str) -> str:
    """Spoken punctuation as the mark it names, padded with spaces to the same length (offsets hold)."""
    def mark(m: re.Match) -> str:
        w = m.group("w").lower()
        if w == "virgule" and _NUMBERISH.search(text[max(0, m.start() - 8) : m.start()]):
            return m.group(0)
        sign = ("." if w.startswith(("full", "point a", "point à")) else "?" if w.startswith(("question", "point d")) else
                "\n" if w.startswith(("new", "next")) else ";" if w.startswith("semi") else ",")
        return sign.ljust(len(m.group(0)))
    return _SPOKEN_PUNCTUATION.sub(mark, text)


_SPOKEN_LEVEL = re.compile(r"(?<![\w'])(?P<l>[CTLS]) (?P<n>one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)(?![\w'])",
                           re.IGNORECASE)
_LEVEL_NUMBER = {w: str(i) for i, w in enumerate(("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                                                   "eleven", "twelve"), 1)}


def _spoken_levels(text: str) -> str:
    """A vertebral level dictated as a letter and a number word ("L five S one") as written ("L5 S1"), padded (offsets hold).
    Only an upper-case letter: "a lot of pain" or "s one" in lower case are words."""
    def level(m: re.Match) -> str:
        if not m.group("l").isupper():
            return m.group(0)
        return (m.group("l") + _LEVEL_NUMBER[m.group("n").lower()]).ljust(len(m.group(0)))
    return _SPOKEN_LEVEL.sub(level, text)


def repair(text: str) -> str:
    """Text as the clinician wrote it: mojibake repaired (ftfy), spoken punctuation as marks, capped at FIELD_CAP characters."""
    text = text[:FIELD_CAP]
    if _LOWER_MOJIBAKE.search(text):
        text = _LOWER_MOJIBAKE.sub("\u00c3", text)
    if _MOJIBAKE.search(text):
        fixed = ftfy.fix_text(text, normalization=None)
        if len(fixed) <= len(text):
            text = fixed
    low = text.lower()
    if "stop" in low or "comma" in low or "mark" in low or "line" in low or "ligne" in low or "virgule" in low or "colon" in low or "interrogation" in low or "paragraph" in low:
        text = _spoken_punctuation(text)
    if " one" in low or " two" in low or " three" in low or " four" in low or " five" in low or " six" in low or " seven" in low \
            or " eight" in low or " nine" in low or " ten" in low or " eleven" in low or " twelve" in low:
        text = _spoken_levels(text)
    return text


_FOLD: dict[str, str] = {}


def _fold(ch: str) -> str:
    rep = _FOLD.get(ch)
    if rep is None:
        low = ch.lower()
        rep = _CHAR_MAP.get(low)
        if rep is None:
            rep = "".join(c for c in unicodedata.normalize("NFKD", low) if not unicodedata.combining(c))
        if len(_FOLD) < 10_000:
            _FOLD[ch] = rep
    return rep


@lru_cache(maxsize=64)
def normalise(text: str) -> tuple[str, list[int]]:
    """Lower-case, accent- and ligature-free text, and the original index of each character (cached)."""
    if text.isascii():
        folded = text.lower().replace("`", "'")
        if len(folded) == len(text):
            return folded, list(range(len(text)))
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        rep = _fold(ch)
        if len(rep) == 1:
            out.append(rep)
            index.append(i)
        else:
            for c in rep:
                out.append(c)
                index.append(i)
    return "".join(out), index


def fold(text: str | None) -> str:
    """`normalise` without the index, and ASCII only: for matching short descriptions (priors)."""
    folded = normalise(str(text or ""))[0]
    return folded if folded.isascii() else folded.encode("ascii", "ignore").decode()


#: The emergency concepts among rules/safety.yaml's (concept keys, not words; a chosen subset: not bleeding, sepsis or
#: vasopressors): their patterns' words are typo targets.
_EMERGENCY_CONCEPTS = frozenset({"cauda_equina", "saddle_anaesthesia", "sphincter", "paraplegia", "medullary", "conus_infarct",
                                 "haematoma", "motor_deficit", "shock", "airway", "stridor", "neck_swelling"})


def _skeleton(word: str) -> str:
    """The consonants of a word, doubled letters once: "bladder" -> "bldr", "retention" -> "rtntn"."""
    out = []
    for c in word:
        if c in "aeiou" or (out and out[-1] == c):
            continue
        out.append(c)
    return "".join(out)


#: Two-letter vowel-less abbreviations of clinical notes (round 27: "nw L L5 rdclr pn POD2").
_SHORT_ABBREVIATIONS = {"pn": "pain", "nw": "new"}
#: Short words that vowel-less notes abbreviate too ("nw", "pn" are too short; "pwr" power, "wkns" weakness, "lgs" legs).
_SKELETON_EXTRA = ("power", "weakness", "legs", "leg", "numb", "pain", "since", "days", "new", "bilateral", "urine", "urinary",
                   "scan", "please", "lumbar", "saddle", "sensation", "sphincter", "bowel", "catheter", "residual")


def spell(word: str) -> str:
    """British/French spellings folded: haem -> hem, oedema -> edema, anaesthesia -> anesthesia."""
    return word.replace("ae", "e").replace("oe", "e")


#: How often a word must occur in pyspellchecker's English or French frequency list to count as a real word (below it
#: the lists hold rare words and common misspellings).
DICTIONARY_MIN_COUNT = 100


@lru_cache(maxsize=1)
def _dictionaries():
    from spellchecker import SpellChecker

    return SpellChecker(language="en").word_frequency, SpellChecker(language="fr").word_frequency


def dictionary_word(word: str) -> bool:
    """Is this a common word of English or French (pyspellchecker's frequency lists)?"""
    return any(freq[word] >= DICTIONARY_MIN_COUNT for freq in _dictionaries())


@dataclass
class Token:
    norm: str
    raw: str
    start: int
    end: int


#: Order-form check boxes (session 5, round 18): an empty box before an item says it is absent ("[ ] urinary
#: retention", "☐ saddle anaesthesia"): read as the word "no"; a ticked box ("[x]", "☒", "☑", "✓") is read as nothing.
_BOX_EMPTY = re.compile(r"\[\s?_?\s?\]|\(\s\)|[\u2610]")
_BOX_TICKED = re.compile(r"\[\s?[x\u2713\u2714v*]\s?\]|\(\s?[x\u2713\u2714]\s?\)|[\u2611\u2612\u2713\u2714]")


#: Session 7 (round 35): a yes/no pair of boxes after a form's item ("Fièvre : ☐ oui ☒ non", "Retention [x] Y [ ] N"):
#: read as the one answer ticked ("non", "oui"); nothing when neither or both are ticked.
_BOX = rf"(?:{_BOX_EMPTY.pattern}|{_BOX_TICKED.pattern})"  # either kind of box
_YES_NO_BOXES = re.compile(rf"(?P<b1>{_BOX})\s*(?P<a1>oui|yes|y|o|non|no|n)(?![a-z])\s*(?P<b2>{_BOX})\s*(?P<a2>oui|yes|y|o|non|no|n)(?![a-z])")


def _yes_no_boxes(norm: str) -> dict[int, tuple[int, str | None]]:
    """Each yes/no pair of boxes: start -> (end, the ticked answer or None)."""
    out = {}
    for m in _YES_NO_BOXES.finditer(norm):
        yes = {"oui", "yes", "y", "o"}
        if (m.group("a1") in yes) == (m.group("a2") in yes):
            continue  # "oui ... oui": no pair
        ticked = [m.group(a) for b, a in (("b1", "a1"), ("b2", "a2")) if _BOX_TICKED.fullmatch(m.group(b))]
        answer = None
        if len(ticked) == 1:
            answer = "yes" if ticked[0] in yes else "no"
        out[m.start()] = (m.end(), answer)
    return out


#: Words that say "after the operation" as a finding's modifier ("no post-op haematoma").
_POSTOP_MODIFIERS = {"post op", "postop", "post operative", "postoperative", "post operatoire", "postoperatoire", "post-op"}


#: What ends a template's segment: its items are read within one segment ("Red flags: A [ ] B [ ] | Fever: N").
_SEGMENT_END = re.compile(r"[|;\n]|\.(?:\s|$)")


def _boxes_after_items(norm: str, found: list[tuple[int, int, str | None]]) -> dict[int, tuple[int, str | None]]:
    """Session 7 (round 24): a template whose boxes FOLLOW their items ("Saddle anaesthesia [ ] Bladder dysfunction [ ]",
    "Retention: [ ] Saddle: [x]"): an empty box then says its own item, the one before it, is absent. Read per segment:
    the boxes follow their items when the segment's first box comes right after an item's word and its last box ends
    the segment, or when every box (two or more) comes right after a colon. The "no" is put where the item begins (after
    the previous box, or after the segment's heading colon); a ticked box is read as nothing. Other segments keep the
    usual reading (a box before its item)."""
    out: dict[int, tuple[int, str | None]] = {}
    seg_start = 0
    bounds = [m.end() for m in _SEGMENT_END.finditer(norm)] + [len(norm)]
    for seg_end in bounds:
        seg = [(b, e, w) for b, e, w in found if seg_start <= b < seg_end]
        if seg:
            before_first = norm[seg_start : seg[0][0]].rstrip()
            after_last = norm[seg[-1][1] : seg_end].strip(" .|;\n")
            all_after_colon = len(seg) >= 2 and all(norm[seg_start:b].rstrip().endswith(":") for b, _, _ in seg)
            word_then_box = bool(before_first) and before_first[-1].isalnum()
            if (word_then_box and not after_last) or all_after_colon:
                item_start = seg_start
                head = norm.rfind(":", seg_start, seg[0][0]) if word_then_box else -1
                if head >= 0 and norm[head + 1 : seg[0][0]].strip():
                    item_start = head + 1  # "Red flags: Saddle anaesthesia [ ]": the item begins after the heading's colon
                for b, e, w in seg:
                    if all_after_colon:
                        item_start = max([e2 for _, e2, _ in seg if e2 <= b] + [seg_start])
                    at = item_start
                    while at < b and norm[at] == " ":
                        at += 1
                    out[b] = (e, None)
                    if w:
                        out[-1 - at] = (at, w)  # a "no" inserted before the item (negative key: an insertion)
                    item_start = e
            else:
                out.update({b: (e, w) for b, e, w in seg})
        seg_start = seg_end
    return out


def tokenize(text: str) -> list[Token]:
    norm, index = normalise(text)
    tokens = []
    dotted = {m.start() + i for m in _DOTTED.finditer(norm) for i, c in enumerate(m.group()) if c == "."} if "." in norm else set()
    if "..." in norm:  # an ellipsis closed by a bracket ("Pt's sister (also under Mr ...) had a CSF leak": a name left out) ends no sentence
        dotted |= {m.start() + i for m in _ELLIPSIS_IN_BRACKET.finditer(norm) for i in range(len(m.group()))}
    boxes = {}
    pairs: dict[int, tuple[int, str | None]] = {}
    inserts: dict[int, str] = {}  # position in norm -> a word read before the token that starts there
    if "[" in norm or "(" in norm or any(c in norm for c in "\u2610\u2611\u2612\u2713\u2714"):
        pairs = _yes_no_boxes(norm)
        in_pair = lambda a: any(s <= a < e for s, (e, _) in pairs.items())  # noqa: E731
        found = sorted([(m.start(), m.end(), "no") for m in _BOX_EMPTY.finditer(norm) if not in_pair(m.start())]
                       + [(m.start(), m.end(), None) for m in _BOX_TICKED.finditer(norm) if not in_pair(m.start())])
        if found:
            read = _boxes_after_items(norm, found)
            inserts = {at: w for k, (at, w) in read.items() if k < 0}
            boxes = {k: v for k, v in read.items() if k >= 0 and v[0] > k}
        boxes.update(pairs)
    pos = 0
    for m in _TOKEN.finditer(norm):
        if m.start() < pos:
            continue  # inside a check box already read
        box = boxes and next(((b, e, w) for b, (e, w) in boxes.items() if pos <= b <= m.start()), None)
        if box:
            b, e, w = box
            pos = e
            if b not in pairs and tokens and tokens[-1].norm[-1:].isalnum():
                # session 8: a box right after an item's words ends that item ("[ ] saddle numbness [x] retention [ ] normal"):
                # neither the empty box's "no" before it nor a "normal" after it reaches the ticked item
                tokens.append(Token(";", "", index[b], index[b]))
            if w:
                tokens.append(Token(w, text[index[b]:index[e - 1] + 1], index[b], index[e - 1] + 1))
            del boxes[b]
            if m.start() < e:
                continue
        if inserts and m.start() in inserts:
            at = index[m.start()]
            tokens.append(Token(inserts.pop(m.start()), "", at, at))
        start = index[m.start()]
        end = index[m.end() - 1] + 1
        tok = Token(spell(m.group()), text[start:end], start, end)
        if tok.norm == "." and tokens and tokens[-1].norm in _ABBREVIATIONS and tokens[-1].end == start:
            continue  # round 13: the period of an abbreviation ("risks incl. haematoma, CES") ends no sentence nor scope
        if tok.norm == "." and dotted and m.start() in dotted:
            continue  # "e.g.", "i.e.", "p.ex.": the same
        tokens.append(tok)
    return tokens


#: Dotted abbreviations whose periods are no sentence end ("risks e.g. haematoma", "i.e.", "p. ex.").
_DOTTED = re.compile(r"(?<![a-z0-9])(?:e\.\s?g|i\.\s?e|p\.\s?ex|c\.\s?a\.\s?d|n\.\s?b|a\.\s?k\.\s?a)\.?(?![a-z0-9])")
_ELLIPSIS_IN_BRACKET = re.compile(r"\.{3,}(?=\s*\))")
#: Abbreviations whose period is no sentence end ("discussed risks incl. haematoma, CES, dural tear"; "e.g. retention").
_ABBREVIATIONS = {"incl", "inc", "eg", "ie", "approx", "esp", "resp", "cf", "viz", "vs", "nb", "ex", "env", "notamm"}


def term_tokens(term: str) -> tuple[str, ...]:
    return tuple(t.norm for t in tokenize(term))


#: Kin and others a relative who reports never calls the patient ("Wife concerned because her brother developed cauda equina":
#: the brother's; session 10, round 82). A spouse, parent or child word may name the patient after a reporter; these never do.
_NEVER_THE_PATIENT = {"brother", "sister", "cousin", "uncle", "aunt", "nephew", "niece", "neighbour", "neighbor", "friend", "colleague",
                      "roommate", "grandmother", "grandfather", "grandma", "grandpa", "frere", "soeur", "cousine", "oncle", "tante",
                      "neveu", "niece", "voisin", "voisine", "ami", "amie", "collegue"}
_CLAUSE_CONTRAST = {"but", "mais", "however", "although", "though", "while", "whereas", "except", "sauf", "alors", "yet", "still", "toujours", "persists", "persistent", "persistante", "persistant", "ongoing"}
_SENTENCE_END = {".", ";", "\n", "!", "|"}  # "|": the field separator of order templates ("Bladder: N | Fever: N")
#: Words of the present that end a consent item's reach ("New saddle numbness today, a risk discussed at consent" is today's)
_CONSENT_PRESENT = {"now", "today", "new", "since", "currently", "tonight", "overnight", "developed", "has", "had", "presents", "nouvelle",
                    "nouveau", "nouvelles", "depuis", "actuellement", "maintenant", "aujourd", "presente", "but", "mais", "yesterday", "hier"}
#: A new finding ends a history sentence's scope (round 14: "Pre-op imaging reviewed and new saddle numbness").
#: A finding said to have been passing ("transient retention ...; resolved"): Matcher._transient_resolved
_TRANSIENT = {"transient", "transitory", "temporary", "brief", "transitoire", "transitoires", "passager", "passagere", "passageres",
              "temporaire", "temporaires"}
#: what opens a clause that says the finding is normal again ("now legs normal", "maintenant examen normal")
_NOW_NORMAL_OPENERS = {"now", "currently", "today", "maintenant", "actuellement", "desormais"}
_NEW_WORDS = {"new", "newly", "acute", "sudden", "worse", "worsening", "nouvelle", "nouveau", "nouveaux", "nouvelles", "aigue", "brutale",
              "recent", "recente", "developed", "developing", "apparition", "appeared"}
#: Form heads that name a function: only an answer saying it is normal (lexicon cue list normal_answer) negates the finding
#: (round 14).
_FUNCTION_HEADS = {"sensation", "sensibilite", "function", "fonction", "tone", "tonus", "control", "controle"}
_NO_PROGRESSION = {"no", "not", "never", "nor", "pas", "non", "sans", "aucune", "aucun", "nil", "without"}


#: The words that open a conditional's consequent ("If pain recurs, consider CT for pseudarthrosis"), and the words of
#: an "if" clause that is politeness or doubt, never a condition on the finding ("If possible, consider MRI for ?CES").
_CONSEQUENT = {"consider", "then", "envisager", "alors", "discuss", "discuter", "rediscuter", "reconsider", "would", "will", "we", "nous",
               "on", "penser", "think", "evoquer", "rechercher", "to", "a", "re", "reimage", "rescan", "review", "return", "attend", "refer",
               "revoir", "reconvoquer", "consulter", "recontacter",  # session 17: "If worse, to be re-imaged", "si aggravation, à revoir"
               # session 12 (round 95): "Si aggravation neurologique : IRM en urgence pour éliminer un hématome"
               "irm", "mri", "ct", "tdm", "scanner", "scan", "imaging", "imagerie", "repeat", "refaire", "faire", "arrange", "organiser",
               "request", "demander", "contact", "contacter", "call", "appeler", "rappeler", "urgent", "urgente"}  # "If symptoms worsen, would consider ..." (round 86), "Si céphalées ... : penser à" (round 89)
_NO_CONDITION = {"possible", "available", "feasible", "able", "doubt", "concerned", "worried", "unsure", "uncertain", "appropriate",
                 "necessary", "needed", "indicated", "required", "clinically", "possibles", "necessaire", "doute", "besoin",
                 "disponible", "dispo", "any", "urgent", "urgently"}


_ABSENT_WORDS = {"absent", "absente", "absents", "absentes", "inexistant", "inexistante", "inexistants", "inexistantes"}
_BEFORE_SURGERY = {"avant", "before", "pre", "preop", "preoperatively", "prior"}


def _absent_before_surgery(words: list[str], b: int) -> bool:
    """"... absentes avant l'intervention", "absent before surgery": the finding is new since the operation, not negated
    (session 13, round 105: "brûlures et décharges face antérieure de jambe droite (L4), absentes avant l'intervention")."""
    for k in range(b, min(len(words) - 1, b + 8)):
        if words[k] in _SENTENCE_END:
            return False
        if words[k] in _ABSENT_WORDS and words[k + 1] in _BEFORE_SURGERY:
            return True
    return False


#: A benign cause given to a finding ("attributed to spinal anaesthetic", "put down to opioids", "attribuée à la rachianesthésie")
_ATTRIBUTION = (("attributed", "to"), ("put", "down", "to"), ("thought", "due", "to"), ("felt", "due", "to"), ("felt", "to", "be", "due", "to"),
                ("attribue", "a"), ("attribuee", "a"), ("attribues", "a"), ("attribuees", "a"), ("mis", "sur", "le", "compte", "de"),
                ("mise", "sur", "le", "compte", "de"), ("mis", "sur", "le", "compte", "d"), ("mise", "sur", "le", "compte", "d"))


def _past_attribution(words: list[str], c: int) -> int:
    """Past a cause given to the finding at c, up to four words with no comma ("attributed to spinal anaesthetic"), to the
    comma its answer follows; c unchanged when there is none or no comma ends it within the words."""
    for cue in _ATTRIBUTION:
        if tuple(words[c : c + len(cue)]) == cue:
            for j in range(c + len(cue) + 1, min(len(words), c + len(cue) + 5)):
                if words[j] == ",":
                    return j
                if words[j] in _SENTENCE_END or words[j] in (";", ":", "(", ")", "?"):
                    return c
    return c


#: The last word of a risk cue that lists what follows ("complications incl", "risks including", "risques notamment")
_LISTING_WORDS = {"incl", "inc", "including", "include", "includes", "eg", "notamment", "dont", "incluant", "comprenant"}


#: A query's answer right after its finding: excluded ("Suspicion de TVP exclue")
_EXCLUDED_AFTER = {"exclue", "exclu", "exclus", "exclues", "excluded", "eliminee", "elimine", "eliminees", "elimines", "infirmee", "infirme"}


def _list_opener(words: list[str], k: int) -> bool:
    """Does the token at k open a list: a colon, or the dot of "incl." / "e.g." ("Discussed possible complications incl. screw
    malposition, bleeding, infection"; session 12, round 95)?"""
    return words[k] == ":" or (words[k] == "." and k > 0 and words[k - 1] in ("incl", "inc", "eg", "ex", "ie", "g", "notably"))


def _item_length(words: list[str], a: int, b: int) -> int:
    """The words of a list item words[a:b], a slash not counted ("dural tear / CSF leak" is one item of four words)."""
    return sum(1 for w in words[a:b] if w != "/")


def _short_item(words: list[str], k: int, pos: int) -> bool:
    """Is the list item after the comma at k short (at most four words up to the next comma or the mention at pos) and
    free of present or new words up to the mention ("Risks explained: cement leak, new weakness since this morning" is
    today's weakness)?"""
    nxt = next((j for j in range(k + 1, pos) if words[j] == ","), pos)
    return _item_length(words, k + 1, nxt) <= 4 and not any(w in _PRESENT_WORDS for w in words[k + 1 : pos])


def _generic_cases(words: list[str], a: int, b: int) -> bool:
    """Is the finding named as other people's cases: "cases" right after it, or "cases of" / "cas de" right before it
    after "seen" / "vu" ("a theatre nurse who has seen cauda equina cases", "a vu des cas de queue de cheval"; session 12,
    round 93)? "?CES - pathway for CES cases" keeps its first, the patient's, mention."""
    if b < len(words) and words[b] == "cases":
        return True
    before = words[max(0, a - 5) : a]
    return (before[-2:] in (["cases", "of"], ["cas", "de"], ["cas", "d"])
            and any(w in ("seen", "vu", "vus", "nursed", "treated", "managed", "soigne", "traite") for w in before))


def _dated_then_operated(words: list[str], b: int, found: list) -> bool:
    """Is the finding ending at b dated in the past ("3/52 ago", "2 days earlier") and followed, in its sentence, by a named
    operation ("Presented with CES 3/52 ago -> emergency L4/5 discectomy same day": why it was done; session 17, round 130)?"""
    for k in range(b, min(len(words), b + 7)):
        if words[k] in _SENTENCE_END or words[k] in (";", ",", "since", "depuis", "after", "apres", "following", "post"):
            return False  # "numb since her op 24h ago": the time is the operation's
        if any(b <= a2 < k and e2.concepts & OPERATION_CONCEPTS for a2, _, e2 in found):
            return False  # "- op 2 days ago (T8-L2 fixation)": the operation dated, then named in its bracket
        if words[k] in ("ago", "auparavant", "earlier", "previously"):
            for a2, _, e2 in found:
                if k < a2 <= k + 6 and e2.concepts & _PROCEDURE_CONCEPTS and all(
                        w in _DATED_THEN or _LEVEL_LABEL.match(w) or w.isdigit() for w in words[k + 1 : a2]):
                    return True
            return False
    return False


#: Words that may join a dated finding to the operation it led to ("CES 3/52 ago -> emergency L4/5 discectomy same day").
_DATED_THEN = {",", "then", "and", "underwent", "had", "emergency", "urgent", "urgently", "an", "a", "the", "une", "un", "puis", "et",
               "/", "-", ":", "so", "leading", "to", "requiring", "needing", "needed", "required", "went", "for", "en", "urgence", "same",
               "day", "night", "immediate", "immediately"}


def _clause_start_at(words: list[str], k: int) -> int:
    """The first word of the clause that ends at the comma at k (after the last sentence end or punctuation before it)."""
    j = k - 1
    while j >= 0 and words[j] not in _SENTENCE_END and words[j] not in (",", ";", ":", "?", "(", ")"):
        j -= 1
    return j + 1


def _consequent_comma(words: list[str], k: int) -> bool:
    """Does the comma at k close a conditional clause that opens its sentence ("if", "si", "should", "en cas de"), with the
    consequent right after it ("If pain recurs, consider CT for pseudarthrosis": the CT and what it looks for are as
    conditional as the pain; session 11, round 84)?"""
    if k + 1 >= len(words) or words[k + 1] not in _CONSEQUENT:
        return False
    clause = words[_clause_start_at(words, k) : k]
    # session 17 (round 132): "any" is no condition only as "if any doubt/concern" ("If worse or any bladder symptoms, to be
    # re-imaged urgently as a ?haematoma" is a condition)
    return (bool(clause) and (clause[0] in ("if", "si", "should") or clause[:3] == ["en", "cas", "d"] or clause[:3] == ["en", "cas", "de"])
            and not any(w in _NO_CONDITION and (w != "any" or i == 1) for i, w in enumerate(clause)))


def _question_mark_at(words: list[str], b: int) -> int | None:
    """The "?" of a form's question right after a finding ("Céphalées ? Non."), or after its question word ("Cauda equina
    syndrome suspected? answer: NO", session 20, round 149); None when there is none."""
    if b < len(words) and words[b] == "?":
        return b
    if b + 1 < len(words) and words[b] in _ASKED_WORDS and words[b + 1] == "?":
        return b + 1
    return None


def _negated_progression(words: list[str], b: int) -> set[int]:
    """Positions of the words right after a negation in the 15 words after b ("no worse", "not deteriorating", "sans aggravation")."""
    out = set()
    for k in range(b, min(len(words), b + 15)):
        if words[k] in _NO_PROGRESSION:
            out.update(range(k + 1, min(len(words), k + 4)))
    return out


# what ends the scope of what the patient was told (cue list told_before): a contrast or a return to the present, not a
# progression word of the list itself ("a new pain, worse at night, with fever")
_TOLD_END = {"but", "however", "mais", "cependant", "now", "currently", "actuellement", "today", "aujourd", "desormais",
             "whereas", "tandis", "yet"}
_SOFT_END = {":", "?", "but", "however", "mais", "cependant", "now", "currently", "actuellement", "today", "yet",
             "aujourd", "desormais", "whereas", "alors", "tandis", "then", "puis", "since", "depuis", "still", "toujours",
             "encore", "persists", "persiste", "again", "worse", "pire"}


#: Lists of negated findings (Matcher._list_negated): item separators, disjunctions, what ends a list.
_LIST_SEP = {",", "or", "ou", "nor", "ni", "and", "et", "/", "("}
_LIST_DISJ = {"or", "ou", "nor", "ni"}
_LIST_STOP = {"?", "but", "however", "mais", "cependant", "now", "today", "yet", "aujourd", "desormais", "whereas", "alors",
              "tandis", "then", "puis", "since", "depuis", "with", "avec", "except", "sauf", "although", "though", "+",
              "apart", "besides", "hormis", "excepte", "exceptee", "excepting", "aside",
              "has", "have", "had", "reports", "reported", "endorses", "admits", "positive", "positif", "positifs", "positives",
              "present", "presents", "noted", "found", "retrouve", "retrouvee", "presente", "signale", "rapporte", "complains", "apparition", "onset", "developed",
              "developpe", "worse", "aggravation", "now", "currently", "actuellement"}
#: Words that make an item a new finding: a plain "no" does not reach past them (a "denies" list does).
#: words that say a deficit is recovering (text.Matcher.history_after_spans): the grade after them is the old deficit's
_RECOVERING = {"improving", "improved", "recovering", "recovered", "better", "ameliore", "amelioree", "amelioration", "recupere",
               "recuperee", "recuperation", "mieux"}
_LIST_NEW = {"new", "nouvelle", "nouveau", "nouvelles", "nouveaux", "recent", "recente", "increasing", "progressive"}
_LIST_ITEM = 4
#: Concepts that say the patient was operated (procedure or post-operative wording); rules/context.py reads them too.
PROCEDURES = ("discectomy", "decompression", "fusion", "cement", "stimulator", "anterior_cervical", "revision")
#: A named operation, or the words that say one was done ("operated", "post-op").
OPERATION_CONCEPTS = frozenset(PROCEDURES + ("operated",))
_PROCEDURE_CONCEPTS = frozenset(PROCEDURES)  # a named operation ("operated" alone names none)
#: Findings that are often the indication of the operation ("operated for CES", "discectomy for foot drop").
_INDICATIONS = {"cauda_equina", "motor_deficit", "sphincter", "saddle_anaesthesia", "radicular_pain", "paraplegia", "cruralgia",
                "myelopathy_indication", "medullary"}
_OPERE = {"opere", "operee", "operes", "operees"}
#: Words that may stand between "for" and the indication ("for an acute CES", "pour une sciatique L5 gauche").
_INDICATION_MODIFIERS = {"a", "an", "the", "acute", "his", "her", "bilateral", "left", "right", "l", "r", "une", "un", "la", "le",
                         "d", "de", "des", "aigue", "aigu", "gauche", "droite", "g", "incomplete", "complete", "suspected", "emergency",
                         # session 16 (round 126): the region or kind of the indication ("ACDF C5-7 for cervical myelopathy 6 weeks ago")
                         "cervical", "cervicale", "thoracic", "thoracique", "dorsal", "dorsale", "lumbar", "lombaire", "degenerative",
                         "spondylotic", "compressive", "severe", "progressive", "multilevel", "cervicarthrosique"}
#: The past participle that names an operation after its indication ("sciatique opérée le 30/11"), and the words that,
#: between the finding and it, make the operated one the patient ("rétention chez une patiente opérée hier").
_OPERATED_PAST = {"operee", "opere", "operees", "operes", "operated"}
_FINDING_MODIFIERS = {"left", "right", "l", "r", "g", "d", "gauche", "droite", "droit", "bilateral", "bilaterale", "bilat", "hyperalgique",
                      "hyperalgic", "aigue", "aigu", "acute", "severe", "deficitaire", "paralysante", "rebelle", "resistante",
                      "invalidante", "intractable", "refractory", "chronique", "chronic", "tronquee", "irradiante", "radiating"}
#: ... and the words that say when ("opérée le 30/11", "operated on in May", "opéré hier", "operated 2 days ago").
_OPERATED_WHEN = {"le", "en", "il", "on", "in", "hier", "yesterday", "last", "ce", "cette", "a", "j", "the", "avant", "lundi", "mardi",
                  "mercredi", "jeudi", "vendredi", "samedi", "dimanche", "monday", "tuesday", "wednesday", "thursday", "friday",
                  "saturday", "sunday", "urgently", "emergently", "via", "par", "by"}
#: A day label as one token: "pod3", "d3", "j3", "3", "48".
_DAY_LABEL = re.compile(r"^(?:pod|d|j|day)?\d{1,3}$")
#: A spinal level as one token: "l4", "s1", "t12", "c5".
_LEVEL_LABEL = re.compile(r"^[ctls]\d{1,2}$")


def _token_spans(text: str, spans: list[tuple[int, int]]) -> tuple[list[str], list[int], list[tuple[int, int] | None]]:
    """The text's token words and starts, and each character span as token positions [a, b) (None past the last token)."""
    tokens = tokenize(text)
    starts = [t.start for t in tokens]
    places: list[tuple[int, int] | None] = []
    for start, end in spans:
        a = bisect_left(starts, start)
        places.append((a, max(a + 1, bisect_left(starts, end))) if a < len(tokens) else None)
    return [t.norm for t in tokens], starts, places


def _after_levels(words: list[str], b: int) -> int:
    """Past the levels that follow a procedure's name ("TLIF L4-5 to be done on Monday": the cue is the procedure's), and a
    short bracket among them ("Arthrodèse L4-L5 (TLIF) prévue le 22/10", session 14, round 110)."""
    k = b
    while k < len(words) and k - b < 9:
        if _LEVEL_LABEL.match(words[k]) or words[k].isdigit() and len(words[k]) <= 2 or words[k] == "/":
            k += 1
        elif words[k] == "(" and ")" in words[k + 1 : k + 6] and not any(w in _SENTENCE_END for w in words[k + 1 : k + 6]):
            k = words.index(")", k + 1) + 1
        elif words[k] in ("with", "avec", "+") and k + 1 < len(words) and words[k + 1] in _KIT_WORDS:
            # session 21 (round 155): the kit named with the procedure ("Arthrodèse L4-L5 avec vis pédiculaires prévue le ...")
            k += 1
            while k < len(words) and words[k] in _KIT_WORDS and k - b < 12:
                k += 1
        else:
            break
    return k


_KIT_WORDS = {"vis", "pediculaires", "pediculaire", "pedicle", "pedicular", "screw", "screws", "cage", "cages", "tiges", "tige", "rods", "rod",
              "instrumentation", "greffe", "graft", "plaque", "plate", "fixation", "percutaneous", "percutanee", "percutanees", "posterior",
              "posterieure", "and", "et", "une", "a", "des", "de", "interbody", "intersomatique", "peek", "titanium", "titane", "bone"}


def _closed_brackets(words: list[str], lo: int, pos: int) -> set[int]:
    """Positions in [lo, pos) inside a bracket that closes before pos: a cue there is that bracket's, not the finding's
    ("Hb 72 (pre-op 128) 2 units RBC given": the units are today's)."""
    inside, out = False, set()
    for k in range(pos - 1, lo - 1, -1):
        if words[k] in (")", "("):
            inside = words[k] == ")"
        elif inside:
            out.add(k)
    return out
#: An item of a screening template answered no in place, before the next item ("saddle anaesthesia N / fever N").
_TEMPLATE_NO = {"n", "no", "nil", "neg", "non", "none", "absent", "absente", "negative", "negatif", "negative"}
#: The first words of the consent and risk-list cues whose colon opens their list (Matcher._cue_before_colon).
_RISK_HEADS = {"risk", "risks", "risque", "risques", "consented", "consent", "consentement", "complications", "les", "counselled", "counseled",
               "fiche", "leaflet",  # session 13 (round 107): "Fiche d'information remise (signes d'alerte : rétention, ...)"
               "signes", "warning", "precautions"}  # session 19 (round 140): "informé des signes d'alerte devant faire consulter en urgence : anesthésie en selle, ..."
#: "any" before a finding that an instruction follows (Matcher._instruction)
_ANY_WORDS = {"any", "toute", "tout", "toutes", "tous"}
#: Words that join the findings of one negated list ("no fever, chills or rigors", "ni", "ou"); see _negation_interrupted.
_LIST_JOIN = {",", "or", "nor", "and", "ni", "ou", "et", "/", "&", "+", "-", "neither", "either", "any", "aucun", "aucune",
              # ... or make the second finding a complement of the first ("pas de récidive de la sciatique", "no loss of sensation")
              "de", "du", "des", "d", "of", "in", "dans", "au", "aux", "a", "to", "at", "on", "sur", "la", "le", "les", "l", "the"}
#: Words that start a new statement inside a negation's scope when they do not follow the cue at once.
_SCOPE_RESTART = {"new", "nouvelle", "nouveau", "nouvel", "nouvelles", "nouveaux", "now", "maintenant", "actuellement",
                  "currently", "today", "aujourd"}
#: Contractions written without an apostrophe ("cant", "doesnt"): "can t" + "cant" both read (Matcher term variants).
_CONTRACTED = {"can", "don", "doesn", "desn", "didn", "won", "hasn", "haven", "couldn", "isn", "wasn", "hadn", "wouldn", "shouldn"}
#: Pain words: a pain said to be as before the operation persists (inefficacy); only deficits are made pre-operative by
#: preop_same_after (Matcher._preop_same).
_PAIN_WORDS = {"pain", "pains", "painful", "douleur", "douleurs", "douloureux", "douloureuse", "sciatica", "sciatique", "ache", "aching",
               "radiculalgie", "radiculalgia", "cruralgie", "cruralgia", "claudication", "lombalgie", "lombalgies", "lbp", "sciatalgie",
               "brachialgia", "brachialgie", "neuralgia", "nevralgie", "lombosciatique", "lombosciatalgie", "lomboradiculalgie",
               "burning", "brulure", "brulures", "sciatic", "radic", "rad"}
#: The word of a form's question right before its "?" ("Cauda equina syndrome suspected? answer: NO")
_ASKED_WORDS = {"suspected", "present", "suspecte", "suspectee", "presente"}
#: A patient's answer no, right after how the item was asked ("Saddle anaesthesia asked - denies", "Rétention recherchée, niée")
_DENIES_ANSWER = {"denies", "denied", "nie", "niee", "no", "none", "nil", "negative", "neg", "non", "absent", "absente",
                  "absents", "absentes", "negatif"}
#: How a form's items were asked, between the items and the answer ("CES red flags screened at clinic: none").
_SCREENED = {"screened", "checked", "assessed", "asked", "reviewed", "enquired", "examined", "verified", "recherches", "recherchee",
             "recherchees", "verifies", "verifiees", "evalues", "evaluees"}
#: Words that may stand between a finding and its form answer ("CES symptoms: nil", "Red flag signs - none").
_FORM_HEADS = {"symptoms", "symptom", "signs", "sign", "features", "screen", "screening", "check", "flags", "symptomes", "symptome",
               "signes", "signe"} | _FUNCTION_HEADS  # session 4 (round 14): "Saddle sensation: intact", "Anal tone: normal"
#: What may follow a pre-operative comparison cue: it ends its clause ("numbness unchanged from pre-op." / ", ..." / " and ...").
_CUE_CLAUSE_END = {".", ",", ";", ")", "!", "\n", "and", "et", "but", "mais", "-", ":", "/", "so", "donc"}

#: A sentence that opens with one of these headers is past history (a section, as medspaCy's sectionizer reads it).
_HISTORY_HEADERS = [("atcd",), ("atcds",), ("antecedents",), ("antecedent",), ("pmh",), ("psh",), ("past", "medical", "history"),
                    ("past", "history"), ("past", "surgical", "history"), ("medical", "history"), ("h", "/", "o"),
                    ("antecedents", "chirurgicaux"), ("antecedents", "medicaux")]


_SECTION_WORDS = 120


#: Words that put a bracket in the present ("lami 2019 (retention since this morning)").
_PRESENT_WORDS = _NEW_WORDS | {"now", "currently", "today", "actuellement", "maintenant", "but", "mais", "since", "depuis", "yesterday",
                               "hier", "tonight", "overnight", "morning", "matin", "soir", "aujourd", "still", "toujours", "ongoing"}


_WITH = {"with", "avec", "including", "incl", "comprising", "comprenant"}
_LIST_GLUE = {",", "and", "et", "/", "or", "ou", "de", "d", "du", "une", "un", "a", "an", "des", "la", "le", "les", "l"}


_PREOP = re.compile(r"(?<![a-z])(?:pre ?op|pre ?operative|pre ?operatoire|preoperatively|before (?:the )?surgery|avant l intervention|"
                    r"avant l operation|on admission|a l admission)(?![a-z])")


def _preop_sentence(words: list[str], end: int) -> bool:
    """Does the sentence that ends at `end` say the time before the operation (a copied admission note's "Pre-op: ...")?"""
    k = end - 1
    while k >= 0 and words[k] not in _SENTENCE_END:
        k -= 1
    return bool(_PREOP.search(" ".join(words[k + 1 : end])))


def _with_after(words: list[str], history_end: int, pos: int, mask: set[int]) -> bool:
    """Does the mention at pos detail, through "with/avec" right after it, the historical finding (a pre-operative
    cauda equina syndrome) that ended at history_end, joined only by other findings and list words ("pre-operative acute CES with urinary retention and saddle
    anaesthesia")? A present or new word between ("h/o CES with new retention today") makes it today's."""
    if history_end >= pos or words[history_end] not in _WITH:
        return False
    return all((k in mask or words[k] in _LIST_GLUE) and words[k] not in _PRESENT_WORDS for k in range(history_end + 1, pos))


def _bracket_after(words: list[str], history_end: int, pos: int) -> bool:
    """Is words[pos] inside a bracket opened at most 4 words (9 with no comma or present word between) after a historical mention, in the same sentence, that says
    nothing of the present (session 6, round 23: "h/o misplaced L5 screw revised in 2021 (medial breach, radiculopathy
    resolved)")?"""
    for p in range(history_end, min(pos, history_end + 10)):
        if words[p] in _SENTENCE_END or words[p] == ")":
            return False
        if p >= history_end + 5 and words[p] != "(" and (words[p] in _PRESENT_WORDS or words[p] in (",", ";", ":")):
            return False  # a bracket further on (up to 10 words: "h/o retention after her L4/5 discectomy in 2019 (catheterised 24 h, resolved)", session 11) only through words of that history
        if words[p] == "(":
            for q in range(p + 1, min(len(words), p + 40)):
                if words[q] == ")" or words[q] in _SENTENCE_END:
                    return q > pos  # the mention must be inside the bracket
                if words[q] in _PRESENT_WORDS:
                    return False
            return False
    return False


def _in_history_section(words: list[str], pos: int) -> bool:
    """Is words[pos] in a sentence that opens with a history header and a colon ("ATCD: ...", "PMH: ...")?

    A return to the present ("now", "actuellement", "but") before the mention ends the section.
    """
    k = pos - 1
    while k >= 0 and words[k] not in _SENTENCE_END:
        if (words[k] in _SOFT_END - {":"} and not (words[k] == "?" and k > 0 and words[k - 1] == "(")
                or words[k] in ("new", "nouveau", "nouvelle", "today") or k < pos - _SECTION_WORDS):
            # (session 6, round 22: a bracketed query is part of the history line, "PMH: paraparesis 2017 (?conus infarct)")
            return False  # (a "sentence" longer than _SECTION_WORDS is no section: the scan stays bounded, linear in the text)
        k -= 1
    start = k + 1
    for header in _HISTORY_HEADERS:
        n = len(header)
        if tuple(words[start : start + n]) != header or start + n >= pos:
            continue
        colon = start + n
        if words[colon] == "(" and ")" in words[colon : min(pos, colon + 5)]:
            colon = words.index(")", colon) + 1  # "PMH (copied):", "ATCD (dossier) :"
        if colon < pos and words[colon] == ":":
            return True
    return False


#: Words that follow the abbreviation CES in English requests ("CES symptoms", "CES signs").
_AFTER_CES = {"symptoms", "signs", "features", "syndrome", "suspected", "query", "screen", "pathway", "protocol",
              "concerns", "concern", "flags", "risk", "likely", "unlikely", "ruled", "excluded", "possible", "cannot",
              "is", "was", "has", "with", "and", "or", "in", "on", "post", "after", "since", "now", "s/p", "symptom"}


def _french_determiner(tokens: list["Token"], i: int, n: int) -> bool:
    """An upper-case word like "CES" used as the French determiner ("CES DOULEURS", "COMPARER CES EXAMENS").

    The abbreviation is followed by punctuation, an English word, or nothing; the
    determiner by a French plural noun or adjective.
    """
    if n != 1 or i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1].norm
    if not nxt.isalpha() or nxt in _AFTER_CES:
        return False
    prev = tokens[i - 1].norm if i > 0 else ""
    french_before = prev in {"de", "a", "sur", "pour", "comparer", "avec", "entre", "par", "dans", "tous", "toutes", "et"}
    if len(nxt) < 4:  # a short word: only after a French word, or a French noun ("CONTROLE DE CES VIS", "CES OS")
        return french_before or nxt in {"vis", "os", "cas"}
    return nxt.endswith(("s", "x")) or french_before or nxt in {"derniers", "dernieres", "deux", "trois"}


@dataclass
class Mention:
    """One match of a lexicon term in one text field."""

    concepts: frozenset[str]
    text: str
    start: int
    end: int
    keyword: str
    tag: str
    series_uid: str | None
    assertion: str = "affirmed"  # affirmed | uncertain | negated
    history: bool = False  # historical: before the operation, years ago, h/o, resolved
    hypothetical: bool = False  # if / in case of / to prevent / planned or booked (future)
    experiencer: str = "patient"  # patient | other (mother, father, ...)
    corrected: str | None = None  # the lexicon word a typo was read as
    measurement: dict | None = None  # name, value, unit, threshold, reference for a lab/vital reading
    elsewhere: bool = False  # a limb the operated region cannot reach (an arm after a lumbar operation): context._other_limb

    @property
    def raises(self) -> bool:
        """A mention raises rules when it is affirmed or uncertain, current, real, the patient's and in reach of the operation."""
        return (self.assertion != "negated" and not self.history and not self.hypothetical and self.experiencer == "patient"
                and not self.elsewhere)

    @property
    def status(self) -> str:
        """One word for the evidence: negated, hypothetical, other_experiencer, historical, uncertain, affirmed."""
        if self.assertion == "negated":
            return "negated"
        if self.hypothetical:
            return "hypothetical"
        if self.experiencer != "patient":
            return "other_experiencer"
        if self.history:
            return "historical"
        return self.assertion


@dataclass
class _Entry:
    tokens: tuple[str, ...]
    raw: tuple[str, ...] | None  # case-sensitive original tokens (e.g. CES), else None
    concepts: set[str] = field(default_factory=set)
    assertion: str | None = None  # fixed assertion, e.g. "afebrile" is negated fever


class Matcher:
    """Finds lexicon concepts in text, leftmost-longest, and sets their assertion status."""

    def __init__(self, concepts: dict[str, dict], cues: dict[str, list[str]], scope: int, known_words: list[str]):
        self.concepts = concepts
        self.pseudo = {name for name, c in concepts.items() if c.get("pseudo_negation")}
        #: Permanent anatomy (a transitional vertebra, the numbering of the levels): a pre-operative report or a
        #: "known" describes it as it still is, so history cues do not make such a mention past.
        self.anatomy = {name for name, c in concepts.items() if c.get("anatomy")}
        #: Chronic conditions (arachnoiditis, adjacent segment disease): "known", "history of" or a year describe a
        #: condition that is still there (lexicon key `chronic`); a treated or resolved cue still makes it past.
        self.chronic = {name for name, c in concepts.items() if c.get("chronic")}
        #: Structural lesions that stay until they are operated on (a recurrence, a non-union, a migrated cage: lexicon key
        #: `persistent`): "known" (cue list known_before) says they are there now; "h/o", "previous" or a year still make them past.
        self.persistent = {name for name, c in concepts.items() if c.get("persistent")}
        #: concept -> concepts whose terms its patterns replace when they span them (lexicon key `overrides`).
        self.overrides = {name: set(c.get("overrides") or []) for name, c in concepts.items() if c.get("overrides")}
        entries: dict[tuple, _Entry] = {}
        for name, c in concepts.items():
            for kind, assertion in (("terms", None), ("exact", None), ("negated_terms", "negated")):
                for term in c.get(kind) or []:
                    toks = tokenize(term)
                    raw = tuple(t.raw for t in toks) if kind == "exact" else None
                    norms = tuple(t.norm for t in toks)
                    variants = [norms]
                    if raw is None and "t" in norms:
                        # "can t pee" is also written "cant pee" (no apostrophe): both spellings are terms
                        joined, i = [], 0
                        while i < len(norms):
                            if i + 1 < len(norms) and norms[i + 1] == "t" and norms[i] in _CONTRACTED:
                                joined.append(norms[i] + "t")
                                i += 2
                            else:
                                joined.append(norms[i])
                                i += 1
                        if tuple(joined) != norms:
                            variants.append(tuple(joined))
                    for v in variants:
                        key = (v, raw, assertion)
                        entry = entries.setdefault(key, _Entry(key[0], raw, assertion=assertion))
                        entry.concepts.add(name)
        self.index: dict[str, list[_Entry]] = {}
        for e in entries.values():
            if e.tokens:
                self.index.setdefault(e.tokens[0], []).append(e)
        for lst in self.index.values():
            lst.sort(key=lambda e: -len(e.tokens))
        #: Word-order patterns (regular expressions on the normalised text), e.g. "broken right S1 screw".
        #: Spelled as the words are (ae/oe folded), so that a pattern written "does not", "oedematous", "hypoesthésie"
        #: matches the normalised words "des not", "edematous", "hypesthesie".
        self.patterns = [(name, re.compile(spell(p))) for name, c in concepts.items() for p in c.get("patterns") or []]
        #: Per pattern, strings one of which every match contains (rules/prefilter.py): a pattern whose strings are all
        #: absent from a text is not run on it (the scans were 60 % of the engine's time).
        self.pattern_literals = [required_literals(p) for _, p in self.patterns]
        self.all_literals = LiteralSet(self.pattern_literals)
        self.cues = {kind: sorted({term_tokens(t) for t in terms}, key=len, reverse=True) for kind, terms in cues.items()}
        self.breaks = self.cues.pop("scope_breaks", [])
        #: "Retention, resolved.": the words that answer a finding after a comma when they end the sentence.
        self.resolved_answer = {seq[0] for seq in self.cues.pop("resolved_answer", []) if len(seq) == 1}
        #: The same words as one regular-expression alternation (a later entry's "retention resolved": context.py).
        self.resolved_alternation = "|".join(sorted(map(re.escape, self.resolved_answer)))
        #: "Retention, now fully resolved.": the words that may stand between the comma and the resolved word.
        self.resolved_adverbs = {seq[0] for seq in self.cues.pop("resolved_adverbs", []) if len(seq) == 1}
        #: "Saddle sensation: intact": the answers that say a function is normal.
        self.normal_answer = {seq[0] for seq in self.cues.pop("normal_answer", []) if len(seq) == 1}
        known = set(self.cues.get("known_before", []))
        self.cues["history_before_lesion"] = [c for c in self.cues.get("history_before", []) if c not in known]
        # session 22: "connue" after the finding says known as "known" before does ("rupture de tige connue": there now)
        self.cues["history_after_lesion"] = [c for c in self.cues.get("history_after", []) if c not in known]
        #: the cues of each kind by their first word, and by their last word for "does a cue end here" (session 15: it
        #: scanned every cue of the kind)
        self.cue_index: dict[str, dict[str, list[tuple[str, ...]]]] = {}
        self.cue_end_index: dict[str, dict[str, list[tuple[str, ...]]]] = {}
        for kind, seqs in self.cues.items():
            for seq in seqs:
                if seq:
                    self.cue_index.setdefault(kind, {}).setdefault(seq[0], []).append(seq)
                    self.cue_end_index.setdefault(kind, {}).setdefault(seq[-1], []).append(seq)
        self.break_index: dict[str, list[tuple[str, ...]]] = {}
        for seq in self.breaks:
            if seq:
                self.break_index.setdefault(seq[-1], []).append(seq)
        self.break_first: dict[str, list[tuple[str, ...]]] = {}
        for seq in self.breaks:
            if seq:
                self.break_first.setdefault(seq[0], []).append(seq)
        self.scope = scope
        self.after_scope = 4
        self.word_concepts: dict[str, set[str]] = {}
        for e in entries.values():
            for t in e.tokens:
                if len(t) >= _FUZZY_MIN and t.isalpha():
                    self.word_concepts.setdefault(t, set()).update(e.concepts)
        # session 6 (noise test): the literal words of the concepts' patterns are typo targets too ("prvate parts",
        # "nippples", "resiidual" were read only by patterns, which a one-letter typo defeated)
        # (only the emergency concepts the safety net reads: elsewhere a French word "corrected" to an English pattern word
        # loses the French pattern, "dysesthésies" -> "dysesthesias")
        pattern_words = {(w, name) for name, p in self.patterns if name in _EMERGENCY_CONCEPTS
                         for w in re.findall(r"(?<![\\?])\b[a-z]{6,}\b", p.pattern)}
        for w, name in sorted(pattern_words):
            self.word_concepts.setdefault(w, set()).add(name)
        self.vocab = set(self.word_concepts)
        self.by_initial: dict[str, list[str]] = {}
        for word in sorted(self.vocab):
            self.by_initial.setdefault(word[0], []).append(word)
        self.words = {t for e in entries.values() for t in e.tokens}
        self.known = {spell(normalise(w)[0]) for w in known_words} | {t for c in self.cues.values() for s in c for t in s}
        _dictionaries()  # loaded with the rulebook (0.2 s), not at the first typo of the first study
        self._fixes: dict[str, str | None] = {}
        # session 6 (round 27): words written without their vowels ("nw bldr rtntn + prnl nmbnss", "rdclr", "dscctmy"):
        # the lexicon words of each consonant skeleton, and the short words such notes abbreviate that way
        self.by_skeleton: dict[str, set[str]] = {}
        for word in self.words | set(_SKELETON_EXTRA):
            if word.isalpha() and len(word) >= 4:
                self.by_skeleton.setdefault(_skeleton(word), set()).add(word)

    def correct(self, word: str) -> str | None:
        """The lexicon word a small typo stands for, or None when unsure.

        Bounded: words of _FUZZY_MIN-1 .. WORD_CAP letters only, same first letter,
        optimal-string-alignment distance 1 (a transposition counts once; 2 for words of 9 letters or more, which covers dropped
        vowels such as "decompressn"), and every candidate must mean the same thing.
        """
        if word in self._fixes:
            return self._fixes[word]
        if word in _SHORT_ABBREVIATIONS:
            return _SHORT_ABBREVIATIONS[word]
        if word in self.words or word in self.known or not word.isalpha() or len(word) > WORD_CAP:
            return None
        fix = None
        if not any(c in "aeiou" for c in word) and len(_skeleton(word)) >= 3:  # no vowel at all ("parts" is a word)
            fix = self._unvowelled(word)
        if fix is None and len(word) >= _FUZZY_MIN - 1:
            fix = self._closest(word)
        if fix is not None and fix != word and dictionary_word(word):
            # session 9 (round 56): "New inability to urinate" was read "instability"; a word of the English or French
            # dictionary is what it says ("horse" is no "hoarse", "female" no "fecale", "revenir" no "retenir")
            fix = None
        if len(self._fixes) < 50_000:
            self._fixes[word] = fix
        return fix

    def _closest(self, word: str) -> str | None:
        """The lexicon word at the smallest typo distance, if every such candidate means the same thing."""
        k = 2 if len(word) >= 9 else 1
        scored = [
            (OSA.distance(word, v, score_cutoff=k), v) for v in self.by_initial.get(word[0], ()) if abs(len(v) - len(word)) <= k
        ]
        scored = [(d, v) for d, v in scored if d <= k]
        fix = None
        if scored:
            best = min(d for d, _ in scored)
            found = sorted(v for d, v in scored if d == best)
            shared = set.intersection(*(self.word_concepts[w] for w in found))
            if shared:  # every closest candidate means (at least) the same thing
                fix = found[0]
        return fix

    def _unvowelled(self, word: str) -> str | None:
        """The one lexicon word whose consonant skeleton this vowel-less abbreviation is ("bldr" -> bladder), if every
        candidate means the same thing; never a word of fewer than three consonants."""
        found = sorted(self.by_skeleton.get(_skeleton(word), ()))
        if not found or word[0] != found[0][0]:
            return None
        if len(found) > 1:
            shared = set.intersection(*(self.word_concepts.get(w, set()) for w in found))
            if not shared:
                return None
        return found[0]

    def mentions(self, text_field: dict) -> list[Mention]:
        """Every concept mention in one text field ({"keyword","tag","value","series_uid"})."""
        text = repair(text_field.get("value") or "")
        tokens = tokenize(text)
        words = [t.norm for t in tokens]
        fixes: dict[int, str] = {}
        for i, w in enumerate(words):
            fixed = self.correct(w)
            if fixed:
                words[i] = fixed
                fixes[i] = fixed
        found: list[tuple[int, int, _Entry]] = []
        i = 0
        while i < len(words):
            match = None
            for e in self.index.get(words[i], ()):
                n = len(e.tokens)
                if tuple(words[i : i + n]) != e.tokens:
                    continue
                if e.raw is not None and tuple(t.raw for t in tokens[i : i + n]) != e.raw:
                    continue
                if e.raw is not None and _french_determiner(tokens, i, n):
                    continue
                match = e
                break
            if match is None:
                span = self._split_word(words, i)
                if span:
                    found.append((i, i + span[0], span[1]))
                    i += span[0]
                    continue
                i += 1
                continue
            found.append((i, i + len(match.tokens), match))
            i += len(match.tokens)
        if self.patterns:
            # Patterns see the corrected words and, where a typo fix changed a word, the words as written
            # ("fractured" is also a typo-distance neighbour of "fracture").
            variants = [words] + ([[t.norm for t in tokens]] if fixes else [])
            for seq in variants:
                self._patterns(seq, words, found)
            found.sort(key=lambda t: t[0])
            if self.overrides:
                # "calf swollen, ?clot": a concept's pattern that spans a term of a concept it overrides (lexicon key
                # `overrides`) takes that term's place (the clot of a swollen calf is a DVT, not a haematoma)
                drop = set()
                for i, (a, b, e) in enumerate(found):
                    over = set().union(*(self.overrides.get(c, set()) for c in e.concepts))
                    if not over:
                        continue
                    for j, (a2, b2, e2) in enumerate(found):
                        if j != i and a <= a2 and b2 <= b and (a2, b2) != (a, b) and e2.concepts & over:
                            if e2.concepts <= over:
                                drop.add(j)
                            else:
                                # session 8 (round 46): a term of several concepts keeps the ones not overridden ("douleur du
                                # mollet ... doppler sans TVP": no DVT, still a radicular pain)
                                found[j] = (a2, b2, dataclasses.replace(e2, concepts=set(e2.concepts) - over))
                found = [t for j, t in enumerate(found) if j not in drop]
        covered = set()
        mask = set()  # tokens inside any mention: a list of findings continues a conditional's scope
        for a, b, e in found:
            mask.update(range(a, b))
            if e.concepts & self.pseudo:
                covered.update(range(a, b))
        out = []
        starts = [a for a, _, _ in found]  # found is sorted by start: the treated cue's stop set is read from a window (linear)
        # session 7 (round 37): "no post-op haematoma", "[ ] post-op haematoma": a "post-op" right before a finding is that
        # finding's modifier, not a finding that would end the negation's scope
        next_start = {a: found[i + 1][0] for i, (a, _, _) in enumerate(found[:-1])}
        finding_spans = [(a, b) for a, b, e in found if e.concepts and not e.concepts & self.pseudo
                         and not (e.concepts <= {"operated"} and next_start.get(a) == b and " ".join(words[a:b]) in _POSTOP_MODIFIERS)]
        history_end = None  # where the last historical finding ended (a bracket right after it details it)
        history_concepts: set[str] = set()
        hypothetical_end = None  # where the last hypothetical finding ended (the same for a hypothetical one)
        reporter_ends = [b for _, b, e in found if "reporter" in e.concepts]
        finding_ends = {b for _, b, e in found if e.concepts and not e.concepts & self.pseudo}
        for a, b, e in found:
            start, end = tokens[a].start, tokens[b - 1].end
            m = Mention(
                frozenset(e.concepts),
                text[start:end],
                start,
                end,
                text_field.get("keyword", ""),
                text_field.get("tag", ""),
                text_field.get("series_uid"),
                corrected=" ".join(fixes[k] for k in range(a, b) if k in fixes) or None,
            )
            if e.assertion:
                m.assertion = e.assertion
            elif not e.concepts & self.pseudo:
                m.assertion = self._assertion(words, a, b, covered, finding_spans)
            lesion = bool(e.concepts) and e.concepts <= self.persistent  # "known recurrent L4/5 disc": there now
            kind = "history_before_lesion" if lesion else "history_before"
            # session 6 (noise sweep): a "new/acute/sudden" between the history cue and the finding ends the history
            # ("previous spinal surgery date unknown acute paraplegia since this afternoon", no punctuation; but
            # "h/o acute retention": the word right after the cue is the finding's own)
            near = self._nearest_cue(words, a, kind, covered)
            hist_before = near is not None and not any(words[j] in _NEW_WORDS for j in range(near[1] + 1, a))
            if (hist_before and a >= 2 and words[a - 1] == "?" and near[1] < a - 2
                    and (words[a - 2] == "," or any(d in text[tokens[a - 2].end : tokens[a - 1].start] for d in "-–—"))):
                # session 20 (round 139): "Previous report mentions enhancing roots - ?radiculitis": a query opened after a
                # dash or a comma is the referrer's question today, not part of the history before it
                hist_before = False
            if hist_before and near[0] in finding_ends and near[0] < a and self._cue_starts(words, near[0], "treated_after"):
                # session 14 (round 111, dictation without punctuation): "dural tear repaired positional headache worse sitting
                # up": the cue right after a finding is that finding's treatment, not the next finding's history
                hist_before = False
            m.history = (hist_before or self._cue(words, b, "history_after_lesion" if lesion else "history_after", covered, False)
                         or self._cue(words, b, "treated_after", covered, False, sentence=True,
                                      stop={a2 for a2, _, e2 in found[bisect_left(starts, b) : bisect_left(starts, b + 16)]
                                            if e2.concepts & e.concepts})
                         or _in_history_section(words, a)
                         or self._cue(words, a, "history_sentence_before", covered, True, sentence="history", mask=mask))
            if not m.history and self._transient_resolved(words, a, b, covered):
                m.history = True  # "Transient leg weakness on return from theatre ...; fully resolved within 2 h" (session 14)
            via_bracket = False
            if not m.history and history_end is not None and _bracket_after(words, history_end, a):
                m.history = via_bracket = True  # "h/o misplaced L5 screw revised in 2021 (medial breach, ...)": the bracket details that history
            if (not m.history and history_end is not None and e.concepts & _INDICATIONS and "cauda_equina" in history_concepts
                    and _with_after(words, history_end, a, mask) and _preop_sentence(words, history_end)):
                m.history = via_bracket = True  # "pre-operative acute CES with urinary retention and saddle anaesthesia" (session 11, round 87)
            if not m.history and e.concepts & _INDICATIONS and (self._indication(words, a, found) or self._operated_after(words, b, found)
                                                                 or _dated_then_operated(words, b, found)):
                m.history = True  # session 9 (round 57): "operated for foot drop", "discectomy 3 days ago for CES": why it was done
            if not m.history and self._preop_same(words, a, b, found[bisect_left(starts, b) : bisect_left(starts, b + 16)], covered):
                m.history = True  # "numbness of the left foot unchanged from pre-op": the pre-operative deficit, not a new one
            if m.history and e.concepts <= self.anatomy and not self._cue(
                    words, b, "treated_after", covered, False, sentence=True,
                    stop={a2 for a2, _, e2 in found[bisect_left(starts, b) : bisect_left(starts, b + 16)] if e2.concepts & e.concepts}):
                # an anatomical finding stays until it is treated: session 20 (round 140), "2015: wrong-level discectomy
                # (L3/4 instead of L4/5), revised the same week with good outcome" is that history
                m.history = False
            if m.history and e.concepts <= self.chronic and not self._cue(
                    words, b, "treated_after", covered, False, sentence=True) and not self._cue(words, b, "negation_after", covered, False):
                m.history = False
            # "known L5 weakness, now much worse", "déficit préexistant, aggravé depuis hier": a history finding that
            # is said, later in the sentence, to be getting worse is current again
            # (session 4, round 14: a progression word under a negation - "unchanged, no worse", "pas d'aggravation" - is none)
            if m.history and self._cue(words, b, "progression_after", covered | _negated_progression(words, b), False, sentence=True,
                                       stop={a2 for a2, _, _ in found[bisect_left(starts, b) : bisect_left(starts, b + 16)]}):  # up to the next finding
                m.history = False
            m.hypothetical = (self._cue(words, a, "hypothetical_before", covered, True, sentence="soft", mask=mask)
                              or self._cue(words, a, "told_before", covered, True, sentence="told")
                              or self._cue(words, a, "future_before", covered, True)
                              or self._cue(words, _after_levels(words, b) if e.concepts & OPERATION_CONCEPTS else b,
                                           "hypothetical_after", covered, False)
                              or (bool(e.concepts & OPERATION_CONCEPTS) and self._cue(words, _after_levels(words, b), "planned_after", covered, False))
                              or self._instruction(words, a, b, covered))
            if not m.hypothetical and e.concepts and not e.concepts & self.pseudo and self._consent_later(words, b, covered):
                m.hypothetical = True  # "Risk of cauda equina injury and dural tear discussed at consent" (session 13, round 100)
            if not m.hypothetical and hypothetical_end is not None and e.concepts and not e.concepts & self.pseudo and _bracket_after(words, hypothetical_end, a):
                m.hypothetical = True  # "Safety-net given re signs of wound infection (redness, discharge, fever)": the bracket details it (session 11, round 85)
            if m.hypothetical and e.concepts and not e.concepts & self.pseudo:
                hypothetical_end = b
            if self._cue(words, a, "experiencer_before", covered, True, sentence=True) and not any(
                    rb <= a and not any(w in _SENTENCE_END for w in words[rb:a])
                    and not any(w in _NEVER_THE_PATIENT for w in words[rb:a]) for rb in reporter_ends):
                # session 9 (round 54): after a relative who reports ("Daughter at bedside says mum 'can't lift her
                # legs'", "La fille de la patiente appelle : sa mère 'ne sent plus ses jambes'"), the kin word of the
                # same sentence names the patient
                m.experiencer = "other"
            if m.experiencer == "patient" and e.concepts and not e.concepts & self.pseudo and (
                    self._other_after(words, b) or _generic_cases(words, a, b)):
                m.experiencer = "other"  # session 11 (round 84): "the 'new leg weakness' in the letter relates to the patient's father"
            if m.history and e.concepts and not e.concepts & self.pseudo and not via_bracket:
                history_end, history_concepts = b, set(e.concepts)
            out.append(m)
        return out

    def _other_after(self, words: list[str], b: int) -> bool:
        """ConText's experiencer cue after the finding, in its sentence (up to 15 words): the text is said to be another
        person's. Either a cue of its own (cue list experiencer_after: "pasted in error", "erreur de dossier"), or a link
        (experiencer_link_after: "relates to", "belongs to", "concerne") whose object, within four words, is someone an
        experiencer_before cue names ("relates to the patient's father", "belongs to another patient"); never the bare
        "son" (also a French determiner: "se rapporte à son intervention")."""
        alone = self.cue_index.get("experiencer_after", {})
        links = self.cue_index.get("experiencer_link_after", {})
        people = self.cue_index.get("experiencer_before", {})
        for k in range(b, min(len(words), b + 15)):
            if words[k] in _SENTENCE_END:
                return False
            if any(tuple(words[k : k + len(c)]) == c for c in alone.get(words[k], ())):
                return True
            for cue in links.get(words[k], ()):
                if tuple(words[k : k + len(cue)]) != cue:
                    continue
                for i in range(k + len(cue), min(len(words), k + len(cue) + 4)):
                    if words[i] in _SENTENCE_END or words[i] in (",", ";", ":"):
                        break
                    if any(p != ("son",) and tuple(words[i : i + len(p)]) == p for p in people.get(words[i], ())):
                        return True
        return False

    @staticmethod
    def _operated_after(words: list[str], b: int, found: list) -> bool:
        """Is the finding ending at b the object of the operation named right after it: "operated/opéré(e)" within four
        words that only qualify the finding (a side, a level, "hyperalgique"), followed by when ("sciatique L5 droite
        hyperalgique opérée le 30/11": the sciatica was operated; session 11, round 85). "Rétention chez une patiente opérée
        hier", "retention, operated yesterday" and "radicular pain on the operated side" (session 11, round 87) are today's."""
        for k in range(b, min(len(words), b + 5)):
            w = words[k]
            if w in _OPERATED_PAST:
                after = words[k + 1] if k + 1 < len(words) else "."
                return (after in _OPERATED_WHEN or bool(re.fullmatch(r"\d{1,4}", after))) and any(
                    a2 == k and e2.concepts and e2.concepts <= {"operated"} for a2, _, e2 in found)
            if not (w in _FINDING_MODIFIERS or _LEVEL_LABEL.match(w) or (w.isascii() and w.isdigit() and len(w) <= 2)):
                return False  # "radicular pain on the operated side": an adjective, not the operation of the pain
        return False

    def _indication(self, words: list[str], a: int, found: list) -> bool:
        """Is the finding at a the reason a named operation was done: "for" / "pour" right before it (a few modifiers
        apart), and an operation named earlier in the same clause (no comma between), at most 6 words before the "for"?
        ("TLIF yesterday, indwelling catheter for retention": the catheter's reason, today's)"""
        k = a - 1
        while k >= 0 and a - k <= 3 and words[k] in _INDICATION_MODIFIERS:
            k -= 1
        if k >= 0 and words[k] not in ("for", "pour"):
            # session 17 (round 131): the French participle's "de" names the indication ("Opéré en urgence le 02/02/2026 d'un
            # SQC sur hernie L4-L5"): "d"/"de"/"du" among the words before the finding, "opéré(e)(s)" before it in the clause
            j = next((i for i in range(a - 1, k, -1) if words[i] in ("d", "de", "du")), None)
            return j is not None and any(
                b2 <= j and j - b2 <= 10 and "operated" in e2.concepts and words[b2 - 1] in _OPERE
                and not any(w in _SENTENCE_END or w in (",", ":", "(", ";") for w in words[b2:j]) for a2, b2, e2 in found)
        if k < 0:
            return False
        for a2, b2, e2 in found:
            if b2 <= k and k - b2 <= 6 and e2.concepts & OPERATION_CONCEPTS and not any(w in _SENTENCE_END or w in (",", ":", "(") for w in words[b2:k]):
                return True
        return False

    def preop_same_spans(self, text: str, spans: list[tuple[int, int]], others: list["Mention"]) -> list[bool]:
        """`_preop_same` for spans found by another reader (a measurement: "EHL 4/5, unchanged from pre-op"); one
        tokenisation per field, linear in the text."""
        if not spans:
            return []
        words, starts, places = _token_spans(text, spans)
        found = sorted((bisect_left(starts, o.start), max(bisect_left(starts, o.start) + 1, bisect_left(starts, o.end)), None)
                       for o in others)
        firsts = [f[0] for f in found]
        out = []
        for place in places:
            if place is None:
                out.append(False)
                continue
            k = bisect_left(firsts, place[1])
            out.append(self._preop_same(words, place[0], place[1], found[k : k + 16], set()))  # no copy of found's tail
        return out

    def history_after_spans(self, text: str, spans: list[tuple[int, int]]) -> list[bool]:
        """For spans found by another reader (a strength grade): a history cue right after it ("EHL 4/5 ancien", "EHL 4/5
        (baseline)"), or a recovery word right before it in a sentence that names nothing new ("pre-op foot drop ..., now
        improving 4+/5"): the grade is the known, pre-operative deficit's (session 21)."""
        if not spans:
            return []
        words, _, places = _token_spans(text, spans)
        out = []
        for place in places:
            if place is None:
                out.append(False)
                continue
            a, b = place
            hist = (self._cue(words, b, "history_after", set(), False)
                    or tuple(words[b : b + 2]) in (("pre", "op"), ("en", "preop")) or words[b : b + 1] == ["preop"]
                    or tuple(words[b : b + 3]) == ("en", "pre", "op"))  # "(4+/5 pre-op)"
            if not hist and any(w in _RECOVERING for w in words[max(0, a - 3) : a]):
                lo = a
                while lo > 0 and words[lo - 1] not in _SENTENCE_END:
                    lo -= 1
                hi = b
                while hi < len(words) and words[hi] not in _SENTENCE_END:
                    hi += 1
                hist = not any(w in _NEW_WORDS or w in _LIST_NEW for w in words[lo:hi])
            out.append(hist)
        return out

    def _preop_same(self, words: list[str], a: int, b: int, found: list, covered: set[int]) -> bool:
        """A finding said later in its clause to be as it was before the operation (cue list preop_same_after: "numbness
        of the left foot unchanged from pre-op", "hypoesthésie S1 inchangée par rapport au préop") is the pre-operative one.

        The cue reaches the finding through words that are no finding, and through findings joined by "and" only
        ("numbness and weakness unchanged from pre-op"); a finding after a comma or marked new keeps its own reading
        ("New retention, numbness unchanged from pre-op" stays STAT). A negated cue ("not present pre-op", "non présente en préop") or a "new" before the cue ("sciatique nouvelle, ...") is no cue.
        """
        if "preop_same_after" not in self.cue_index:
            return False
        if any(w in _LIST_NEW for w in words[max(0, a - 3) : b]):
            return False
        if any(w in _PAIN_WORDS for w in words[a:b]):
            return False  # a pain "unchanged from pre-op" is a persistence (no change in pain: inefficacy), not a past finding
        hi = b
        for k in range(b, min(len(words), b + 15)):
            if words[k] in _SENTENCE_END or words[k] in ("but", "mais", "however", "cependant", "now", "actuellement"):
                break
            hi = k + 1
        index = self.cue_index["preop_same_after"]
        cue_at = None
        for k in range(b, hi):  # pseudo-trigger spans ("as before surgery" is also a comparison pseudo-trigger) are read
            for cue in index.get(words[k], ()):
                if k + len(cue) <= hi and tuple(words[k : k + len(cue)]) == cue:
                    after = words[k + len(cue)] if k + len(cue) < len(words) else "."
                    if after not in _CUE_CLAUSE_END and after not in ("depuis", "since", "for", "pendant", "durant", "("):
                        break  # "pre-existing diabetes", "as before surgery? No - new": the cue is not about this finding
                        # (its duration may follow: "présent en préopératoire depuis 3 semaines", session 14)
                    if not any(w in ("not", "no", "non", "never", "absent", "absente", "pas", "jamais", "wasn", "wasnt", "isn", "n")
                               for w in words[max(b, k - 3) : k]) and not any(w in _LIST_NEW for w in words[b:k]):
                        cue_at = k  # (a negated cue, "not present pre-op", "wasn't there before surgery", says a new finding)
                    break
            if cue_at is not None:
                break
        if cue_at is None:
            return False
        end = b
        for a2, b2, e2 in found:  # sorted by start: the findings between the mention and the cue
            if a2 < end or (e2 is not None and e2.concepts & self.pseudo):
                continue
            if a2 >= cue_at:
                break
            between = words[end:a2]
            if not (between and all(w in ("and", "et", "or", "ou", "/", "&") for w in between)):
                return False  # "Retention, numbness unchanged from pre-op": the cue is the nearer finding's
            end = max(end, b2)
        return True

    def other_experiencer_before(self, text: str) -> bool:
        """Does the sentence that ends this text name someone else as the experiencer ("La voisine de chambre présente une
        fièvre à 39": the neighbour's temperature; session 10, round 83)? For measurement mentions, read by another reader."""
        words = [t.norm for t in tokenize(text[-300:])]
        return self._cue(words, len(words), "experiencer_before", set(), True, sentence=True)

    def _split_word(self, words: list[str], i: int):
        """(2 or 3, entry): a one-word term written in two or three pieces, as speech recognition and hurried typing split it
        ("disc ectomy", "spondylo disc itis", "hema toma"; session 10, round 77). The pieces are letters, the first is no
        common word, the whole is at least 8 letters and is a one-word term (or one typo from it)."""
        first = words[i]
        if not first.isalpha() or len(first) < 3:
            return None
        joined = first
        for n in (2, 3):
            if i + n - 1 >= len(words) or not words[i + n - 1].isalpha() or len(words[i + n - 1]) < 3:
                return None
            joined += words[i + n - 1]
            if len(joined) < 8 or dictionary_word(words[i + n - 1]):
                continue  # the last piece is a word of its own ("back ache" is two words; "disc ectomy" is not)
            # a typo is tolerated in the whole only when its first piece is no word ("tetra plea gia"; never "transféré d")
            for candidate in (joined, None if dictionary_word(first) else self.correct(joined)):
                for e in self.index.get(candidate or "", ()):
                    if e.tokens == (candidate,) and e.raw is None:
                        return n, e
        return None

    def _patterns(self, seq: list[str], words: list[str], found: list) -> None:
        # a "word" of more than 64 letters is no clinical word: the patterns see a placeholder (an 8,000-letter word made
        # the 500 patterns scan 16 k characters, 0.3-1.2 s a study)
        seq = [w if len(w) <= _LONGEST_WORD else "\u2026" for w in seq]
        norm_text = " ".join(seq)
        starts, pos = [], 0
        for w in seq:
            starts.append(pos)
            pos += len(w) + 1
        by_concept: dict[str, list[tuple[int, int]]] = {}  # spans already found per concept (no scan of all of found per hit)
        for x, y, e in found:
            for c in e.concepts:
                by_concept.setdefault(c, []).append((x, y))
        for k in self.all_literals.candidates(norm_text):  # the patterns that may match, in their order (rules/prefilter.py)
            name, pattern = self.patterns[k]
            for hit in pattern.finditer(norm_text):
                a = bisect_right(starts, hit.start()) - 1
                b = bisect_left(starts, hit.end())
                if a < 0 or b <= a:
                    continue
                spans = by_concept.setdefault(name, [])
                overlap = [(x, y) for x, y in spans if x < b and a < y]
                if overlap and not all(a <= x and y <= b and (x, y) != (a, b) for x, y in overlap):
                    continue
                if overlap:  # a longer hit of the same concept ("haematoma / bleeding source" over "bleeding") takes its terms' place
                    found[:] = [f for f in found if not (name in f[2].concepts and (f[0], f[1]) in overlap and f[2].concepts == {name})]
                    spans[:] = [xy for xy in spans if xy not in overlap]
                spans.append((a, b))
                found.append((a, b, _Entry(tuple(words[a:b]), None, {name})))

    def _cue(self, words: list[str], pos: int, kind: str, covered: set[int], before: bool, sentence: bool | str = False,
             mask: set[int] | None = None, stop: set[int] | None = None) -> bool:
        """Is a cue of this kind within scope before (or after) position pos?

        sentence=True (experiencer, treated): the scope is the sentence, up to 15 words;
        sentence="soft" (hypothetical, as ConText's conditional scope): the sentence, also
        ended by a contrast or a return to the present (but, mais, now, actuellement...), up to 30 words (a consent
        list of risks is long: session 5, round 20).
        """
        index = self.cue_index.get(kind)
        if not index:
            return False
        if before:
            lo = pos
            condition_from = -1  # inside a conditional clause already closed by its consequent's comma: its start
            for k in range(pos - 1, max(-1, pos - 1 - ((30 if sentence in ("soft", "told") else 15) if sentence else self.scope)), -1):
                if k > condition_from >= 0:
                    lo = k  # session 17 (round 129): "if CRP rises again, MRI to r/o infection": the condition's own words
                    continue  # ("again", "worse", "still") do not end it
                if sentence == "told":
                    # session 20 (round 142): what the patient was told runs to the end of its sentence, commas included
                    # ("Patiente informée qu'une douleur différente, nocturne, avec fièvre, ferait évoquer une infection");
                    # a return to the present or a contrast ("now", "actuellement", "mais") ends it
                    if words[k] in _SENTENCE_END or words[k] in _TOLD_END:
                        break
                    lo = k
                    continue
                if sentence:
                    soft = sentence in ("soft", "history")
                    cue_at = self._cue_start_before_colon(words, k, index) if soft and _list_opener(words, k) else None
                    if _list_opener(words, k) and soft and (cue_at is not None or (sentence == "soft" and _consequent_comma(words, k))):
                        lo = k  # "Risques expliqués : hématome, infection": the cue's own colon opens its list
                        if cue_at is not None:
                            # session 16 (round 128): the cue itself may hold a word of the present ("Consented today for:
                            # infection, ..., cauda equina syndrome"): its colon opens the list, so the scope reaches the cue
                            lo = cue_at
                            break
                        continue
                    if (sentence == "soft" and words[k] == "?" and mask is not None and (k + 1) in mask and (k - 1) not in mask
                            and k > 0 and words[k - 1] not in _SENTENCE_END):
                        lo = k  # session 17 (round 132): a query mark that opens a finding ("as a ?haematoma / ?CES pathway")
                        continue
                    if words[k] in _SENTENCE_END or (soft and words[k] in _SOFT_END and not (
                            # session 17 (round 134): "If worse or any new weakness, re-image urgently": the condition's own word
                            sentence == "soft" and k > 0 and words[k - 1] in ("if", "si"))
                            # session 20 (round 147): "If pain recurs in future would then consider CT for loosening": a
                            # conditional's consequent, not a return to the present
                            and not (sentence == "soft" and words[k] == "then" and k > 0 and words[k - 1] in ("would", "will", "could", "might", "may", "should", "we"))
                            ) or (sentence == "history" and words[k] in _NEW_WORDS):
                        break
                    if sentence == "soft" and words[k] == "," and _consequent_comma(words, k):
                        condition_from = _clause_start_at(words, k)
                        lo = k
                        continue
                    if soft and words[k] == "," and (k - 1) not in (mask or set()) and not (
                            sentence == "soft" and _short_item(words, k, pos) and self._in_risk_list(words, k, index)):
                        break  # a comma ends the conditional unless what follows it is one more finding of a list (a consequent's comma: above)
                elif any(tuple(words[k - len(b) + 1 : k + 1]) == b for b in self.break_index.get(words[k], ())):
                    break
                lo = k
            span = range(lo, pos)
        else:
            hi = pos
            extra = 0
            if not sentence:  # session 21 (round 150): "Déficit L5 droit 4/5 ancien": the grade's tokens do not use the scope
                for k in range(pos, min(len(words), pos + self.after_scope + 6)):
                    if words[k].isdigit() or words[k] in ("/", "+", "-"):
                        extra += 1
                    elif k - pos - extra >= self.after_scope:
                        break
                extra = min(extra, 6)
            for k in range(pos, min(len(words), pos + (15 if sentence else self.after_scope + extra))):
                if stop and k in stop:
                    break  # a later mention of the same concept: the cue after it is that mention's
                if sentence:
                    if words[k] in _SENTENCE_END:
                        break
                elif any(tuple(words[k : k + len(b)]) == b for b in self.break_first.get(words[k], ())):
                    # round 13: a cue that itself begins with a break word, or opens a parenthesis, is read
                    # ("paraplegia since MVA 2009", "paraplegia (long-standing)")
                    if not (self._cue_starts(words, k, kind) or (words[k] == "(" and self._cue_starts(words, k + 1, kind))):
                        break
                hi = k + 1
            span = range(pos, hi)
        # session 9 (noise test): a history cue inside a bracket closed before the finding is that bracket's
        bracketed = _closed_brackets(words, span.start, pos) if before and sentence == "history" else set()
        for k in span:
            if k in covered or k in bracketed:
                continue
            # a cause after the mention needs only to start within the scope ("DVT L leg after knee replacement"; session 6,
            # round 23); other cues must fit in it ("foot drop - wasn't there before surgery" is no history)
            # session 12 (round 98): a cue right after the finding may run past a break word in it ("bleeding discussed with pt")
            limit = len(words) if not before and (words[k] in ("after", "apres", "following") or k == pos) else span.stop
            for cue in index.get(words[k], ()):
                n = len(cue)
                if k + n <= limit and tuple(words[k : k + n]) == cue:
                    return True
        return False

    def _assertion(self, words: list[str], a: int, b: int, covered: set[int], spans: list[tuple[int, int]] = ()) -> str:
        if _question_mark_at(words, b) is not None and self._form_answer_no(words, b):
            return "negated"  # "Céphalées ? Non." - a form's question answered no (session 10, round 81)
        ucovered = covered
        neg_index = self.cue_index.get("negation_before", {})
        for k in range(a - 1, max(-1, a - 1 - self.scope), -1):
            if (words[k] == "?" and k + 1 < a and k > 0 and words[k - 1] not in _SENTENCE_END and words[k - 1] not in (",", ":", "(", "?")
                    and any(tuple(words[k + 1 : k + 1 + len(c)]) == c for c in neg_index.get(words[k + 1], ()))):
                # "Fracture near the hardware? No neuro deficit": the "?" closed the question before; the
                # finding after the negation is negated, not uncertain ("? no haematoma", a "?" that opens its clause, is a query)
                ucovered = covered | {k}
                break
        queried = self._cue(words, a, "uncertain_before", ucovered, True)  # read once: the checks below all need it
        if queried and b < len(words) and words[b] in _EXCLUDED_AFTER and (b + 1 >= len(words) or words[b + 1] != "?"):
            return "negated"  # "Suspicion de TVP exclue": the suspicion was excluded (session 12, round 100)
        if not queried and self._negation_right_after(words, b, covered):
            return "negated"  # "DVT not suspected": a negation cue right after the finding holds the uncertainty word it contains (session 13, round 102)
        if queried and self._query_negated(words, a, ucovered, neg_index):
            return "negated"  # "no concern for infection": the negation cue holds the uncertainty cue (session 22, round 174)
        if queried or self._cue(words, b, "uncertain_after", covered, False):
            if self._negation_nearer(words, a, ucovered, covered, spans):
                return "negated"  # "?low-grade infection - no fever": the nearer cue wins (ConText), the "?" is the first finding's
            return "uncertain"
        if self._cue(words, a, "negation_before", covered, True) and not self._negation_interrupted(words, a, covered, spans):
            return "negated"
        if ((self._cue(words, b, "negation_after", covered, False) or self._list_negated(words, a, b, covered))
                and not _absent_before_surgery(words, b)):
            return "negated"
        if self._form_answer_no(words, b):
            return "negated"
        if self._resolved_at_clause_end(words, b, spans):
            return "negated"
        return "affirmed"

    def _negation_right_after(self, words: list[str], b: int, covered: set[int]) -> bool:
        """A negation_after cue that starts right after the finding and is not itself asked ("DVT not suspected", not
        "haematoma ruled out?")."""
        if b >= len(words) or b in covered:
            return False
        for cue in self.cue_index.get("negation_after", {}).get(words[b], ()):
            n = len(cue)
            if tuple(words[b : b + n]) == cue and (b + n >= len(words) or words[b + n] != "?"):
                return True
        return False

    def _resolved_at_clause_end(self, words: list[str], b: int, spans) -> bool:
        """A resolved word that ends the finding's clause, up to eight words after it with no other finding, comma or contrast
        between ("Transient urinary retention after catheter removal on day 1 - resolved, now voiding normally"; session 10,
        round 72). "... not resolved", "... yet to resolve" and "retention, weakness resolved" are not."""
        if not self.resolved_answer:
            return False
        others = {x for x, _ in spans if x >= b}
        for k in range(b, min(len(words), b + 9)):
            w = words[k]
            if k in others or w in _SENTENCE_END or w in (",", ";", ":", "(", ")") or w in _CLAUSE_CONTRAST:
                return False
            if w in self.resolved_answer:
                if words[k - 1] in ("not", "non", "pas", "never", "yet", "un", "partially", "partly", "incompletely"):
                    return False
                return (k + 1 >= len(words) or words[k + 1] in _SENTENCE_END or words[k + 1] in (",", ";", ")")
                        or words[k + 1] in ("after", "apres", "following", "with", "avec", "par", "by", "suite", "sous"))  # "résolue après ablation de sonde" (session 12, round 98)
        return False

    def _consent_later(self, words: list[str], b: int, covered: set[int]) -> bool:
        """A consent cue later in the finding's sentence (up to 20 words), with no word of the present between: the finding is
        an item of a consent discussion ("Risk of cauda equina injury and dural tear discussed at consent"), not today's."""
        index = self.cue_index.get("consent_after", {})
        if not index:
            return False
        for k in range(b, min(len(words), b + 20)):
            if words[k] in _SENTENCE_END or words[k] in _CONSENT_PRESENT or (
                    words[k][:1].isdigit() and words[k - 1] != "in" and (k + 1 >= len(words) or words[k + 1] not in ("in", "%", "sur"))):
                return False  # a measured value is today's ("Retention 900 ml ..., discussed at consent"); a rate ("1 in 1000") is not
            for cue in index.get(words[k], ()):
                if k not in covered and tuple(words[k : k + len(cue)]) == cue:
                    return True
        return False

    def _instruction(self, words: list[str], a: int, b: int, covered: set[int]) -> bool:
        """Is the finding at a..b a safety-net condition: "any" before it in its clause and an instruction after it in its
        sentence ("Advised: any numbness between the legs or loss of bladder control means attend ED the same day";
        session 12, round 89)? Without "any" ("Saddle numbness means attend ED now") the finding stays current."""
        j = a - 1
        while j >= 0 and words[j] not in _SENTENCE_END and words[j] not in (":", ";"):
            j -= 1
        return (any(w in _ANY_WORDS for w in words[j + 1 : a])
                and self._cue(words, b, "instruction_after", covered, False, sentence=True))

    def _in_risk_list(self, words: list[str], k: int, index: dict) -> bool:
        """Is the comma at k a separator of a list of short items (at most four words each) opened by a risk cue's colon
        ("Risks explained to patient: cement leak, cord compression, paraplegia, infection": an item that is no finding,
        "cement leak", does not end the list; session 11, round 87)?"""
        last = k
        longest = 0
        inside = 0  # words inside a closed bracket of an item, not counted in its length ("paraplegia (~1%)")

        def _length(a: int, b: int) -> int:
            return _item_length(words, a, b) - inside

        j = k
        while j > max(-1, k - 41):
            j -= 1
            w = words[j]
            if w == ")" and j > 0:
                # session 16 (round 126): a short bracket inside an item ("Consented: risks include paraplegia (~1%), major
                # bleeding requiring transfusion, infection") is part of that item, not the end of the list
                opening = next((o for o in range(j - 1, max(-1, j - 6), -1) if words[o] in ("(", ")") or words[o] in _SENTENCE_END), None)
                if opening is not None and words[opening] == "(" and opening > 0 and words[opening - 1] not in (",", ":", "("):
                    inside += j - opening + 1
                    j = opening
                    continue
            if (w in _SENTENCE_END and not _list_opener(words, j)) or w in (";", ")"):
                return False
            if w == ",":
                if _length(j + 1, last) > 6 or last - j - 1 < 1:
                    return False
                longest = max(longest, _length(j + 1, last))
                last = j
                inside = 0
            elif w in ("if", "si") and self._cue_ends_at(words, j + 1, index):
                # a list of conditions after a safety-net cue ("Return immediately if numbness in the saddle area, loss of
                # bladder or bowel control, fever >38, wound discharge or severe headache"; session 12, round 97): items
                # of up to six words, none of them present (the caller's _short_item)
                return 1 <= _length(j + 1, last) <= 6
            elif longest > 4:
                continue
            elif w == "(" or _list_opener(words, j):  # "Risques (hématome, infection, migration d'électrode) expliqués" (session 12, round 94)
                # session 15 (round 119): the first item's own risk words are not counted ("Consent discussed: risk of cauda
                # equina injury, bladder dysfunction, dural tear")
                first = j + 1
                if first < last:
                    own = (*index.get(words[first], ()), *self.cue_index.get("uncertain_before", {}).get(words[first], ()))
                    first += next((len(c) for c in own if first + len(c) < last and tuple(words[first : first + len(c)]) == c), 0)
                return 1 <= _length(first, last) <= 4 and self._cue_before_colon(words, j, index)
            elif w in _LISTING_WORDS and self._cue_before_colon(words, j, index):
                # "Discussed possible complications incl. screw malposition, bleeding, infection" (the tokeniser drops the
                # abbreviation's dot; session 12, round 95)
                return 1 <= _length(j + 1, last) <= 4
        return False

    @staticmethod
    def _cue_ends_at(words: list[str], e: int, index: dict) -> bool:
        """Does a cue of this index end exactly at position e (its last word at e - 1)?"""
        for j in range(max(0, e - 8), e):
            for cue in index.get(words[j], ()):
                if j + len(cue) == e and tuple(words[j:e]) == cue:
                    return True
        return False

    @staticmethod
    def _cue_before_colon(words: list[str], k: int, index: dict) -> bool:
        """Does a risk-list cue of this index ("risks explained", "risques expliqués", "consented") end right before the
        colon at k, or with it? Up to six words may stand between the cue and its colon, none of them ending a clause
        ("Risques expliqués au patient avant l'intervention : hématome, ..."; session 10, round 71)."""
        return Matcher._cue_start_before_colon(words, k, index) is not None

    @staticmethod
    def _cue_start_before_colon(words: list[str], k: int, index: dict) -> int | None:
        """Where the risk-list cue of `_cue_before_colon` begins (None when there is none)."""
        for j in range(max(0, k - 12), k + 1):
            for cue in index.get(words[j], ()):
                end = j + len(cue)
                if (k - 6 <= end <= k + 1 and tuple(words[j:end]) == cue and cue[0] in _RISK_HEADS
                        and not any(w in _SENTENCE_END or w in (",", ";", ":") for w in words[end:k])):
                    return j
        return None

    def _nearest_cue(self, words: list[str], a: int, kind: str, covered: set[int]) -> tuple[int, int] | None:
        """(start, end) of the nearest cue of this kind before position a, within the plain scope (None when there is none)."""
        index = self.cue_index.get(kind, {})
        lo = max(0, a - self.scope)
        bracketed = _closed_brackets(words, lo, a)  # a cue in a closed bracket is that bracket's
        for k in range(a - 1, lo - 1, -1):
            if any(tuple(words[k - len(x) + 1 : k + 1]) == x for x in self.break_index.get(words[k], ())):
                return None
            if k in covered or k in bracketed or words[k] in (")", "("):
                continue
            for cue in index.get(words[k], ()):
                if k + len(cue) <= a and tuple(words[k : k + len(cue)]) == cue:
                    return k, k + len(cue)
        return None

    def _query_negated(self, words: list[str], a: int, ucovered: set[int], neg_index: dict) -> bool:
        """Is the nearest uncertainty cue before a inside a longer negation cue ("no concern for", "not concerned about")?"""
        q = self._nearest_cue(words, a, "uncertain_before", ucovered)
        if q is None:
            return False
        for k in range(max(0, q[0] - 3), q[0]):
            for cue in neg_index.get(words[k], ()):
                if q[1] <= k + len(cue) <= a and tuple(words[k : k + len(cue)]) == cue:
                    return True
        return False

    def _negation_nearer(self, words: list[str], a: int, ucovered: set[int], covered: set[int], spans) -> bool:
        """A negation cue nearer to the finding than the uncertainty cue, with another finding between the two: the
        uncertainty belongs to that finding ("?low-grade infection - no fever"; "? no haematoma" stays a query)."""
        q = self._nearest_cue(words, a, "uncertain_before", ucovered)
        n = self._nearest_cue(words, a, "negation_before", covered)
        if q is None or n is None or n[0] <= q[0]:
            return False
        q, n = q[0], n[0]
        if not any(q < x and y <= n for x, y in spans):
            return False
        return not self._negation_interrupted(words, a, covered, spans)

    def _negation_interrupted(self, words: list[str], a: int, covered: set[int], spans) -> bool:
        """Does the nearest negation cue before position a stop short of it? (session 5: text without punctuation)

        In "no fever saddle numbness", "lami yesterday no drain output new retention" or "sans ostéosynthèse
        paraparésie" the cue negates the first finding only: a finding reached through another finding with no list
        word between them (",", "or", "and", "ni", "ou", "/"), or through a "new"/"now" that does not follow the cue
        at once ("no new weakness" stays negated), is not negated. Lists keep their negation ("no fever, chills or
        rigors", "pas de fièvre ni de frissons"). Unknown is never negative: an unsure scope does not negate.
        """
        cue = self._nearest_cue(words, a, "negation_before", covered)
        if cue is None:
            return False
        cue_end = cue[1]
        if any(x <= cue_end - 1 < y <= a for x, y in spans):
            return True  # the cue is a word of an earlier finding's own term ("sans ostéosynthèse paraparésie"): it ends there
        if any(w in _SCOPE_RESTART for w in words[cue_end + 1 : a]):
            return True  # "no fever new retention" ("no new weakness": the "new" right after the cue is negated with it)
        between = sorted((x, y) for x, y in spans if cue_end <= x and y <= a and (x, y) != (a, a))
        merged: list[list[int]] = []
        for x, y in between:
            if merged and x < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], y)
            else:
                merged.append([x, y])
        ends = [y for _, y in merged]
        starts = [x for x, _ in merged[1:]] + [a]
        for end, start in zip(ends, starts):
            if not any(w in _LIST_JOIN for w in words[end:start]):
                return True
        return False

    def _form_answer_no(self, words: list[str], b: int) -> bool:
        """A form field answered no: "Fever: no", "Rétention : non.", "Weakness - none" (the answer ends the clause)."""
        k = b
        q = _question_mark_at(words, b)
        if q is not None:
            k = q
            if k + 3 < len(words) and words[k + 1] in ("answer", "answered", "reponse", "repondu") and words[k + 2] == ":":
                k += 2
            # session 10 (round 81): a form's question answered no, the answer ending its clause ("Céphalées ? Non. Fièvre ? Non.");
            # "?" alone, or followed by anything else ("Haematoma? No idea"), is uncertainty: kept raised
            return (k + 1 < len(words) and words[k + 1] in ("no", "non", "nil", "negative", "negatif", "neg", "none", "aucun", "aucune")
                    and (k + 2 >= len(words) or words[k + 2] in _SENTENCE_END or words[k + 2] in (",", "|")))
        if (k < len(words) and words[k] in _TEMPLATE_NO
                and (k + 1 >= len(words) or words[k + 1] in _SENTENCE_END or words[k + 1] in ("/", ",", ")")
                     # session 14 (round 113): the answer explained in a bracket ("Urinary retention - No (voiding, PVR 40 mL)")
                     or (words[k + 1] == "(" and k + 2 < len(words) and words[k + 2] != "?"))):
            return True  # session 5 (round 20): a screening template's item answered in place ("saddle anaesthesia N / sphincter N")
        c = b  # the comma that an answer follows, after the item's heads ("CES red flags, none present")
        while (c < len(words) and c - b < 2 and (words[c] in _FORM_HEADS or words[c] == "red") and c + 1 < len(words)
               and words[c + 1] in (",", *_FORM_HEADS)):
            c += 1
        while c < len(words) and c - b < 3 and (_DAY_LABEL.match(words[c]) or _LEVEL_LABEL.match(words[c]) or words[c] in ("on", "day", "pod", "jour")):
            c += 1  # session 9 (round 57): the day it happened between the item and its answer ("tingling POD1, fully resolved")
        c = _past_attribution(words, c)  # session 12 (round 95): "saddle numbness POD1 attributed to spinal anaesthetic, fully resolved"
        if c + 1 < len(words) and words[c] == ",":
            # "Retention, resolved." / "Foot drop, now fully resolved": a resolved word that ends the sentence answers it
            j = c + 1
            while j < len(words) and words[j] in self.resolved_adverbs and j - c <= 3:
                j += 1
            if j < len(words) and words[j] in self.resolved_answer:
                e = j + 1
                if e < len(words) and words[e] in ("by", "on", "at", "within", "in", "a", "au", "en", "le", "since"):
                    e += 1  # "... resolved by POD3", "résolu à J3", "resolved within 48 h"
                    while e < len(words) and e - j <= 4 and (_DAY_LABEL.match(words[e]) or words[e] in ("day", "pod", "jour", "h", "hours", "days", "jours")):
                        e += 1
                if e >= len(words) or words[e] in _SENTENCE_END or words[e] == ")":  # "(... méningocèle, résolus)"
                    return True
            # session 6 (round 29): "CES red flags, none present." / "saddle numbness, nil." - a list answered no at its end
            for cue in self.cue_index.get("negation_answer", {}).get(words[c + 1], ()):
                n = len(cue)
                e = c + 1 + n
                while e < len(words) and words[e] in ("present", "currently", "today", "now", "noted", "found", "reported"):
                    e += 1
                if tuple(words[c + 1 : c + 1 + n]) == cue and (e >= len(words) or words[e] in _SENTENCE_END):
                    return True
        function = False
        while k < len(words) and k - b < 3 and (words[k] in _FORM_HEADS or (words[k] == "red" and k + 1 < len(words) and words[k + 1] in _FORM_HEADS)):
            function = function or words[k] in _FUNCTION_HEADS
            k += 1  # "CES symptoms: nil", "Red flag signs - none"
        if k < len(words) and k == b and words[k] in _SCREENED and k + 1 < len(words) and words[k + 1] in _DENIES_ANSWER and (
                k + 2 >= len(words) or words[k + 2] in _SENTENCE_END or words[k + 2] == ","):
            return True  # session 20 (developers): "Saddle anaesthesia asked - denies" (the dash is no token)
        if k < len(words) and k >= b and words[k] in _SCREENED:
            # session 16 (round 126): how the items were asked, before the answer ("CES red flags screened at clinic: none")
            e = next((j for j in range(k + 1, min(len(words), k + 5)) if words[j] in (":", "=", "-") or words[j] in _SENTENCE_END), None)
            if e is not None and words[e] in (":", "=", "-"):
                k = e
        if k >= len(words) or words[k] not in (":", "=", "-"):
            return False
        k += 1
        for cue in self.cue_index.get("negation_answer", {}).get(words[k] if k < len(words) else "", ()):
            n = len(cue)
            if function and cue[0] not in self.normal_answer:
                continue  # "Saddle sensation: absent", "Anal tone: nil": the function is lost, not the finding denied
            if tuple(words[k : k + n]) == cue and (k + n >= len(words) or words[k + n] in _SENTENCE_END or words[k + n] in (",", "/", "(")):
                return True
        return False

    def _list_end(self, words: list[str], b: int) -> tuple[int, bool]:
        """(index after the last item, disjunctive?) of a list of short items that continues at b."""
        k, seg, disj = b, 0, False
        closing = self.cue_index.get("negation_list_after", {})
        while k < len(words) and k - b < 40:
            w = words[k]
            if w in _SENTENCE_END or w in _LIST_STOP or w in (")", "-"):
                break
            if any(tuple(words[k : k + len(c)]) == c and (k + len(c) == len(words) or words[k + len(c)] in _SENTENCE_END)
                   for c in closing.get(w, ())):
                break  # session 9 (round 54): "saddle anaesthesia / retention / weakness - NONE." (a dash is no token)
            if w in _LIST_SEP:
                disj = disj or w in _LIST_DISJ
                seg = 0
            else:
                seg += 1
                if seg > _LIST_ITEM:
                    break
            k += 1
        return k, disj

    def _list_negated(self, words: list[str], a: int, b: int, covered: set[int]) -> bool:
        """ConText over a list: "Denies: saddle anaesthesia, bowel/bladder dysfunction, weakness, fever",
        "neg for fever, drainage, urinary retention", "no fever, chills or sweats", "pas de fièvre, de
        frissons ni de ...", "(saddle numbness, bladder dysfunction, fever) - none currently".

        Every item of a list of short items (at most _LIST_ITEM words each, separated by commas,
        and/or/ni/slashes) is negated when the list opens with a list negation (`negation_list_before`:
        denies, negative for...), or opens with a plain negation (no, pas de, sans) and is
        disjunctive (... or / ni ...), or is closed by `negation_list_after` ("- none", "all negative").
        A contrast (but, mais, now, with, except...) or the end of the sentence ends the list.
        """
        j = b
        while (j < len(words) and words[j] not in _SENTENCE_END and words[j] != ")"
               and (words[j] not in _LIST_SEP or words[j] in ("and", "et")) and j - b < 8):
            if words[j] in _LIST_STOP:
                return False  # "saddle anaesthesia now present", "neck swelling noted": this item is affirmed
            j += 1
        k, seg = a - 1, 0
        last_sep = None  # the separator just before the mention's item
        crossed = False  # a separator lies between the cue and the mention: the mention is a later item
        weak_ok = not any(words[j] in _LIST_NEW for j in range(a, b))  # "no fever, new retention": a new finding
        while k >= 0 and a - k < 40:
            w = words[k]
            if w in _SENTENCE_END or w in _LIST_STOP:
                break
            if w in _LIST_NEW:
                weak_ok = False
            if k not in covered:
                if self._cue_ending(words, k, "negation_list_before"):
                    end, _ = self._list_end(words, b)
                    seps = [words[j] for j in range(k + 1, end) if words[j] in _LIST_SEP]
                    if not any(w in _LIST_DISJ or w in ("and", "et") for w in seps) and seps.count(",") + seps.count("/") < 2:
                        # "neg for fever, bilateral leg weakness": two items by a comma is ambiguous, unless the second
                        # is one plain word that ends the sentence ("Denies fever, chills.": session 22, round 171)
                        return (weak_ok and a >= 1 and words[a - 1] == "," and b == a + 1 == end
                                and (end == len(words) or words[end] in _SENTENCE_END))
                    return True
                if crossed and weak_ok and self._cue_ending(words, k, "negation_before"):
                    _, disj = self._list_end(words, b)
                    if disj or last_sep in _LIST_DISJ:  # "no A, B or C": up to the item after "or", no further
                        return True
            if (w in _LIST_SEP or w == ":") and last_sep is None:
                last_sep = w
            if w in _LIST_SEP or w == ":":
                if w == ":" and not (self._cue_ending(words, k - 1, "negation_list_before")
                                     or self._cue_ending(words, k - 1, "negation_before")):
                    break
                crossed = crossed or w != ":"
                seg = 0
            else:
                seg += 1
                if seg > _LIST_ITEM + 1:
                    break
            k -= 1
        end, _ = self._list_end(words, b)
        start = a
        while start > 0 and a - start < 40 and words[start - 1] not in _SENTENCE_END and words[start - 1] not in ("(", ":"):
            start -= 1
        if not any(words[j] in (",", "or", "and", "ou", "et", "/") for j in range(start, end)):
            return False  # a single finding, not a list
        k = end
        while k < len(words) and words[k] in (")", "-", ",", ":"):
            k += 1
        # "Red flags (saddle numbness, bladder change, weakness) explained - none present": what was done with the list
        # (lexicon cues negation_list_between) may stand before the closing negation
        for cue in self.cue_index.get("negation_list_between", {}).get(words[k] if k < len(words) else "", ()):
            if tuple(words[k : k + len(cue)]) == cue:
                k += len(cue)
                while k < len(words) and words[k] in (")", "-", ",", ":"):
                    k += 1
                break
        if k < len(words):
            for cue in self.cue_index.get("negation_list_after", {}).get(words[k], ()):
                if tuple(words[k : k + len(cue)]) == cue:
                    return True
        return False

    def _transient_resolved(self, words: list[str], a: int, b: int, covered: set[int]) -> bool:
        """A finding called transient whose next clause, after a semicolon or a dash, opens with its resolution: "Transient
        bilateral leg numbness/weakness on return from theatre attributed to the epidural infusion; fully resolved within 2 h
        of stopping it" (session 14, round 101). The adjective stands up to six words before the finding ("transient leg numbness/weakness")
        or inside it ("faiblesse transitoire des deux jambes"), in its clause;
        the resolution is a resolved word or a treated cue right after the semicolon (adverbs such as "fully" between)."""
        start = next((k for k in range(min(len(words), b + 2) - 1, max(-1, a - 7), -1) if words[k] in _TRANSIENT), None)  # or after ("faiblesse transitoire")
        if start is None or any(words[k] in _SENTENCE_END for k in range(min(start, b), max(start, b))):
            return False
        end = next((k for k in range(b, min(len(words), b + 20)) if words[k] in _SENTENCE_END), None)
        if end is None or words[end] != ";":
            return False
        j = end + 1
        while j < len(words) and words[j] in self.resolved_adverbs and j - end <= 3:
            j += 1
        if any(w in _NOW_NORMAL_OPENERS for w in words[end + 1 : j + 1]):
            # session 15 (round 118): "Transient leg tingling yesterday, haematoma ruled out on CT; now legs normal"
            return any(words[k] in self.normal_answer for k in range(j, min(len(words), j + 3))
                       if not any(w in _SENTENCE_END or w == "," for w in words[j:k]))
        return j < len(words) and j not in covered and (words[j] in self.resolved_answer or self._cue_starts(words, j, "treated_after"))

    def _cue_starts(self, words: list[str], k: int, kind: str) -> bool:
        """Does a cue of this kind begin at words[k]?"""
        if k >= len(words):
            return False
        return any(tuple(words[k : k + len(cue)]) == cue for cue in self.cue_index.get(kind, {}).get(words[k], ()))

    def _cue_ending(self, words: list[str], k: int, kind: str) -> bool:
        """Does a cue of this kind end at words[k]?"""
        if k < 0 or k >= len(words):
            return False
        for cue in self.cue_end_index.get(kind, {}).get(words[k], ()):
            n = len(cue)
            if k - n + 1 >= 0 and tuple(words[k - n + 1 : k + 1]) == cue:
                return True
        return False

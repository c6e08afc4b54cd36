"""Reading and validating the rule files, with file:line in every error.

A rule directory holds YAML files with any of these top-level sections:
``settings`` (window lengths and other defaults), ``cues`` (negation, uncertainty,
history and scope words), ``concepts`` (the lexicon), ``known_words`` (real words
never read as typos), ``family`` and ``rules``.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rules.model import FLAG_CODES, Priority

WINDOWS = ("early", "inefficacy", "late")
PROCEDURES = ("discectomy", "decompression", "fusion")
STATUSES = ("yes", "no", "unknown")
PRIOR_ROLES = ("preoperative", "intraoperative", "postoperative_reference", "recent_comparable")
CUE_KINDS = (
    "negation_before",
    "negation_after",
    "uncertain_before",
    "uncertain_after",
    "history_before",
    "history_after",
    "treated_after",
    "progression_after",
    "negation_answer",
    "hypothetical_before",
    "future_before",
    "told_before",
    "hypothetical_after",
    "planned_after",
    "instruction_after",
    "experiencer_before",
    "experiencer_after",
    "experiencer_link_after",
    "consent_after",
    "negation_list_before",
    "negation_list_after",
    "negation_list_between",
    "history_sentence_before",
    "history_cause_between",
    "known_before",
    "preop_same_after",
    "normal_answer",
    "resolved_answer",
    "resolved_adverbs",
    "scope_breaks",
)
TEMPLATE_FIELDS = {"rule", "title", "flags", "matched", "window", "interval", "priority"}
DEFAULT_EXPLAIN = "Suspected {flags}: the request mentions {matched} (window {window}, {interval}). {priority} read suggested."
DEFAULT_SETTINGS = {"EARLY_WINDOW_DAYS": 7, "NEGATION_SCOPE_TOKENS": 6}


class RulebookError(Exception):
    """An invalid rule file; str(err) is "path/to/file.yaml:LINE: message"."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}")


class _Map(dict):
    """A YAML mapping that remembers the line of itself and of each key."""

    line = 0
    lines: dict


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loader where yes/no/on/off stay words (only true/false are booleans); libyaml's parser where PyYAML has it
    (the rule files parse in a tenth of the time: every worker process loads them at start)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.MarkedYAMLError(problem=f"duplicate key '{key}'", problem_mark=key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path):
    """Parse one YAML file; syntax errors become RulebookError with the line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise RulebookError(path, mark.line + 1 if mark else 1, err.problem or str(err)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RulebookError(path, 1, str(err)) from None


def rule_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def content_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()[:12]


@dataclass
class Escalation:
    if_any: list[str]
    priority: Priority
    window: list[str]


@dataclass
class Rule:
    id: str
    title: str
    reference: str
    scenario: str
    file: str
    line: int
    window: list[str]
    postoperative: list[str] = field(default_factory=lambda: ["yes"])
    procedure: list[str] = field(default_factory=list)
    instrumented: list[str] = field(default_factory=lambda: list(STATUSES))
    any_of: list[str] = field(default_factory=list)
    assertion: list[str] = field(default_factory=list)  # any_of counts only mentions with these assertions (affirmed, uncertain); empty: both
    all_of: list[str] = field(default_factory=list)
    none_of: list[str] = field(default_factory=list)
    if_flags: list[str] = field(default_factory=list)
    modality: list[str] = field(default_factory=list)
    modality_only: list[str] = field(default_factory=list)
    modality_missing: list[str] = field(default_factory=list)
    acquisition_has: list[str] = field(default_factory=list)
    acquisition_lacks: list[str] = field(default_factory=list)
    interval_min_days: float | None = None
    interval_max_days: float | None = None
    interval_unknown_runs: bool = False  # interval {unknown: run}: the bounds apply only when the time is known
    priors_have: list[str] = field(default_factory=list)
    priors_lack: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    priority: Priority | None = None
    escalate: list[Escalation] = field(default_factory=list)
    recommend: list[str] = field(default_factory=list)
    observation: str | None = None
    note: str | None = None
    explain: str = DEFAULT_EXPLAIN
    unknown_time: str = "emergency_only"  # early-only rule when the time is unknown: emergency_only | run


@dataclass
class Source:
    """Everything read from a rule directory."""

    settings: dict
    cues: dict[str, list[str]]
    concepts: dict[str, dict]
    known_words: list[str]
    rules: list[Rule]
    files: list[Path]
    errors: list[RulebookError]
    safety: list[dict] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)


_RULE_KEYS = {
    "id", "title", "reference", "scenario", "window", "postoperative", "procedure", "instrumented",
    "any_of", "assertion", "all_of", "none_of", "if_flags", "modality", "modality_only", "modality_missing",
    "acquisition_has", "acquisition_lacks", "interval", "priors_have", "priors_lack", "flags",
    "priority", "escalate", "recommend", "observation", "note", "explain", "unknown_time",
}
_CONCEPT_KEYS = {"terms", "exact", "negated_terms", "course", "pseudo_negation", "group", "note", "patterns", "anatomy", "overrides", "chronic", "persistent"}
_TOP_KEYS = {"settings", "cues", "concepts", "known_words", "word_lists", "family", "rules", "safety_net", "measurements"}
_SAFETY_KEYS = {"id", "concepts", "with_any", "without_any", "unless_denied", "procedure", "windows", "postoperative", "priority", "flags", "reference", "note"}
_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


def read(directory: Path) -> Source:
    """Read and validate every rule file; all problems are collected in Source.errors."""
    files = rule_files(directory)
    src = Source(dict(DEFAULT_SETTINGS), {}, {}, [], [], files, [])
    raw_rules: list[tuple[Path, _Map, str]] = []
    concept_lines: dict[str, tuple[Path, int]] = {}
    if not files:
        src.errors.append(RulebookError(directory, 0, "no rule files (*.yaml) in this directory"))
    docs: list[tuple[Path, object]] = []
    word_lists: dict[str, str] = {}  # name -> "(?:longest|...|word)", for {{name}} in concept patterns
    for path in files:
        try:
            doc = read_yaml(path)
        except RulebookError as err:
            src.errors.append(err)
            continue
        docs.append((path, doc))
        for name, words in ((doc.get("word_lists") or {}).items() if isinstance(doc, _Map) else ()):
            if not _strings(words) or name in word_lists:
                src.errors.append(RulebookError(path, doc["word_lists"].lines[name],
                                                f"word list '{name}' must be a list of words, defined once"))
                continue
            word_lists[name] = "(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w))) + ")"
    for path, doc in docs:
        if not isinstance(doc, _Map):
            src.errors.append(RulebookError(path, 1, "a rule file must be a mapping of sections"))
            continue
        for key in doc:
            if key not in _TOP_KEYS:
                src.errors.append(RulebookError(path, doc.lines[key], f"unknown section '{key}' (expected one of {sorted(_TOP_KEYS)})"))
        for name, value in (doc.get("settings") or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                src.errors.append(RulebookError(path, doc["settings"].lines[name], f"setting {name} must be a non-negative number"))
            src.settings[name] = value
        for kind, terms in (doc.get("cues") or {}).items():
            line = doc["cues"].lines[kind]
            if kind not in CUE_KINDS:
                src.errors.append(RulebookError(path, line, f"unknown cue list '{kind}' (expected one of {list(CUE_KINDS)})"))
            elif not _strings(terms):
                src.errors.append(RulebookError(path, line, f"cue list '{kind}' must be a list of words"))
            else:
                src.cues.setdefault(kind, []).extend(terms)
        if "known_words" in doc:
            if _strings(doc["known_words"]):
                src.known_words.extend(doc["known_words"])
            else:
                src.errors.append(RulebookError(path, doc.lines["known_words"], "known_words must be a list of words"))
        for name, concept in (doc.get("concepts") or {}).items():
            line = doc["concepts"].lines[name]
            if name in concept_lines:
                other = concept_lines[name]
                src.errors.append(RulebookError(path, line, f"concept '{name}' already defined at {other[0]}:{other[1]}"))
                continue
            concept_lines[name] = (path, line)
            if isinstance(concept, _Map) and isinstance(concept.get("patterns"), list):
                try:
                    concept["patterns"] = [_expand_word_lists(p, word_lists) if isinstance(p, str) else p
                                           for p in concept["patterns"]]
                except KeyError as exc:
                    src.errors.append(RulebookError(path, concept.lines["patterns"],
                                                    f"concept '{name}': unknown word list {{{{{exc.args[0]}}}}}"))
            src.errors.extend(_check_concept(path, line, name, concept))
            src.concepts[name] = concept if isinstance(concept, dict) else {}
        for item in doc.get("safety_net") or []:
            src.safety.append(dict(item, _file=str(path), _line=getattr(item, "line", 1)))
        for item in doc.get("measurements") or []:
            src.measurements.append(dict(item, _file=str(path), _line=getattr(item, "line", 1)))
        rules = doc.get("rules")
        if rules is not None and not isinstance(rules, list):
            src.errors.append(RulebookError(path, doc.lines["rules"], "'rules' must be a list"))
            rules = []
        for item in rules or []:
            raw_rules.append((path, item, str(doc.get("family") or path.stem)))
    for item in src.safety:
        path, line = item["_file"], item["_line"]
        for key in item:
            if key not in _SAFETY_KEYS and not key.startswith("_"):
                src.errors.append(RulebookError(path, line, f"unknown safety_net key '{key}'"))
        if not item.get("id") or not item.get("concepts") or not item.get("reference"):
            src.errors.append(RulebookError(path, line, "a safety_net entry needs id, concepts and reference"))
        for c in list(item.get("concepts") or []) + list(item.get("with_any") or []) + list(item.get("without_any") or []) + list(item.get("unless_denied") or []):
            if c not in src.concepts:
                src.errors.append(RulebookError(path, line, f"unknown concept '{c}' in safety_net {item.get('id')}"))
        for code in item.get("flags") or []:
            if code not in FLAG_CODES:
                src.errors.append(RulebookError(path, line, f"unknown flag code '{code}' in safety_net {item.get('id')}"))
        for v in item.get("postoperative") or []:
            if v not in STATUSES:
                src.errors.append(RulebookError(path, line, f"postoperative must be yes, no or unknown in safety_net {item.get('id')}"))
        for w in item.get("windows") or []:
            if w not in WINDOWS + ("unknown",):
                src.errors.append(RulebookError(path, line, f"unknown window '{w}' in safety_net {item.get('id')}"))
        try:
            item["priority"] = Priority.parse(item.get("priority", ""))
        except KeyError:
            src.errors.append(RulebookError(path, line, f"safety_net {item.get('id')}: priority must be STAT or URGENT"))
    for item in src.measurements:
        path, line = item["_file"], item["_line"]
        for t in item.get("thresholds") or []:
            if t.get("concept") not in src.concepts:
                src.errors.append(RulebookError(path, line, f"unknown concept '{t.get('concept')}' in measurement {item.get('name')}"))
        index = item.get("shock_index")
        if index is not None and (not isinstance(index, dict) or index.get("concept") not in src.concepts or not index.get("reference")
                                  or not any(m.get("name") == index.get("with") for m in src.measurements)
                                  or not isinstance(index.get("above_or_equal"), (int, float))):
            src.errors.append(RulebookError(path, line, f"measurement {item.get('name')}: shock_index needs 'with' (another measurement), "
                                                        "'above_or_equal', a known 'concept' and a 'reference'"))
        if not item.get("reference"):
            src.errors.append(RulebookError(path, line, f"measurement {item.get('name')} needs a reference"))
    seen: dict[str, tuple[Path, int]] = {}
    for path, item, family in raw_rules:
        if not isinstance(item, _Map):
            src.errors.append(RulebookError(path, 1, "each rule must be a mapping"))
            continue
        errors: list[RulebookError] = []
        rule = _rule(path, item, src, errors)
        if rule is not None and rule.id in seen:
            other = seen[rule.id]
            errors.append(RulebookError(path, item.line, f"duplicate rule id '{rule.id}' (first at {other[0]}:{other[1]})"))
        src.errors.extend(errors)
        if rule is not None and not errors:
            seen[rule.id] = (path, item.line)
            src.rules.append(rule)
    return src


_WORD_LIST = re.compile(r"\{\{([a-z_]+)\}\}")


def _expand_word_lists(pattern: str, word_lists: dict[str, str]) -> str:
    """{{name}} in a pattern becomes the word list's alternation (KeyError for an unknown name)."""
    return _WORD_LIST.sub(lambda m: word_lists[m.group(1)], pattern)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and (v.strip() or v == "\n") for v in value)


def _check_concept(path: Path, line: int, name: str, concept) -> list[RulebookError]:
    if not isinstance(concept, _Map):
        return [RulebookError(path, line, f"concept '{name}' must be a mapping with 'terms'")]
    errors = []
    for key in concept:
        if key not in _CONCEPT_KEYS:
            errors.append(RulebookError(path, concept.lines[key], f"unknown concept key '{key}' (expected one of {sorted(_CONCEPT_KEYS)})"))
    for key in ("terms", "exact", "negated_terms"):
        if key in concept and not _strings(concept[key]):
            errors.append(RulebookError(path, concept.lines[key], f"'{key}' of concept '{name}' must be a list of words"))
    for pattern in concept.get("patterns") or []:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            errors.append(RulebookError(path, concept.lines["patterns"], f"bad pattern in concept '{name}': {exc}"))
    if not any(concept.get(k) for k in ("terms", "exact", "negated_terms", "patterns")):
        errors.append(RulebookError(path, line, f"concept '{name}' has no terms: it can never match"))
    if "course" in concept and concept["course"] not in WINDOWS:
        errors.append(RulebookError(path, concept.lines["course"], f"course must be one of {list(WINDOWS)}"))
    return errors


def _rule(path: Path, item: _Map, src: Source, errors: list[RulebookError]) -> Rule | None:
    def err(key: str | None, message: str) -> None:
        errors.append(RulebookError(path, item.lines.get(key, item.line) if key else item.line, message))

    for key in item:
        if key not in _RULE_KEYS:
            err(key, f"unknown rule key '{key}'")
    for key in ("id", "title", "reference", "scenario", "window"):
        if key not in item:
            err(None, f"rule is missing '{key}'")
    if errors:
        return None
    rid = str(item["id"])
    if not _ID.match(rid):
        err("id", f"rule id '{rid}' must look like family.name (lower case, digits, _ and .)")
    if not re.search(r"\d{3}_[0-9a-f]{16}\.txt|\[practice\]", str(item["reference"])):
        err("reference", "reference must cite a source file (e.g. 000_9aacee4264ab9a02.txt, section) or [practice]")

    def words(key: str, allowed=None, what="value") -> list[str]:
        value = item.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not _strings(value):
            err(key, f"'{key}' must be a list")
            return []
        for v in value:
            if allowed is not None and v not in allowed:
                err(key, f"unknown {what} '{v}' in '{key}'")
        return list(value)

    concepts = src.concepts
    if item.get("unknown_time", "emergency_only") not in ("emergency_only", "run"):
        err("unknown_time", "unknown_time must be emergency_only or run")
    rule = Rule(
        id=rid,
        title=str(item["title"]),
        reference=str(item["reference"]),
        scenario=str(item["scenario"]),
        file=str(path),
        line=item.line,
        window=words("window", WINDOWS + ("any",), "window"),
    )
    if "postoperative" in item:
        rule.postoperative = words("postoperative", STATUSES, "status")
    if "instrumented" in item:
        rule.instrumented = words("instrumented", STATUSES, "status")
    rule.procedure = words("procedure", PROCEDURES, "procedure")
    for key in ("any_of", "all_of", "none_of", "acquisition_has", "acquisition_lacks"):
        setattr(rule, key, words(key, concepts, "concept"))
    rule.assertion = words("assertion", ("affirmed", "uncertain"), "assertion")
    if rule.assertion and not rule.any_of:
        err("assertion", "'assertion' filters the mentions of 'any_of': the rule has no 'any_of'")
    rule.if_flags = words("if_flags", FLAG_CODES, "flag code")
    rule.flags = words("flags", FLAG_CODES, "flag code")
    for key in ("modality", "modality_only", "modality_missing"):
        setattr(rule, key, words(key))
    rule.priors_have = words("priors_have", PRIOR_ROLES, "prior role")
    rule.priors_lack = words("priors_lack", PRIOR_ROLES, "prior role")
    rule.recommend = words("recommend")
    rule.unknown_time = str(item.get("unknown_time", "emergency_only"))
    for key in ("observation", "note", "explain"):
        if key in item:
            if not isinstance(item[key], str):
                err(key, f"'{key}' must be text")
            else:
                setattr(rule, key, item[key].strip())
    if "priority" in item:
        rule.priority = _priority(item["priority"], lambda m: err("priority", m))
    interval = item.get("interval")
    if interval is not None:
        if not isinstance(interval, _Map) or set(interval) - {"min_days", "max_days", "unknown"}:
            err("interval", "interval takes min_days and/or max_days (a number or a setting name), and unknown (run or skip)")
        elif interval.get("unknown", "skip") not in ("run", "skip"):
            err("interval", "interval's unknown is run (the rule runs when the time since surgery is unknown) or skip (default)")
        else:
            rule.interval_unknown_runs = interval.get("unknown") == "run"
            for key in ("min_days", "max_days"):
                if key in interval:
                    value = interval[key]
                    if isinstance(value, str):
                        if value not in src.settings:
                            err("interval", f"unknown setting '{value}'")
                            continue
                        value = src.settings[value]
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        err("interval", f"{key} must be a number or a setting name")
                        continue
                    setattr(rule, f"interval_{key}", float(value))
    for esc in item.get("escalate") or []:
        if not isinstance(esc, _Map) or "if_any" not in esc or "priority" not in esc or set(esc) - {"if_any", "priority", "window"}:
            err("escalate", "each escalation needs if_any (concepts) and priority, optionally window")
            continue
        cs = esc["if_any"] if isinstance(esc["if_any"], list) else [esc["if_any"]]
        for c in cs:
            if c not in concepts:
                errors.append(RulebookError(path, esc.lines["if_any"], f"unknown concept '{c}' in escalation"))
        win = esc.get("window", ["any"])
        win = win if isinstance(win, list) else [win]
        for w in win:
            if w not in WINDOWS + ("any",):
                errors.append(RulebookError(path, esc.lines["window"], f"unknown window '{w}' in escalation"))
        p = _priority(esc["priority"], lambda m: errors.append(RulebookError(path, esc.lines["priority"], m)))
        if p is not None:
            if rule.priority is not None and p <= rule.priority:
                errors.append(RulebookError(path, esc.lines["priority"], f"unreachable escalation: {p.name} is not above the rule's {rule.priority.name}"))
            rule.escalate.append(Escalation(list(cs), p, list(win)))
    _consistency(rule, src.settings, err)
    return rule


def _priority(value, err) -> Priority | None:
    try:
        return Priority.parse(value)
    except KeyError:
        err(f"priority must be STAT, URGENT or ROUTINE, not '{value}'")
        return None


def _consistency(rule: Rule, settings: dict, err) -> None:
    """Contradictory or unreachable conditions, and rules without an outcome."""
    if not (rule.any_of or rule.all_of or rule.if_flags):
        err(None, "rule has no trigger (any_of, all_of or if_flags): it can never fire")
    if not (rule.flags or rule.recommend or rule.observation):
        err(None, "rule has no outcome (flags, recommend or observation)")
    if rule.flags and rule.priority is None:
        err("flags", "a rule that raises flags needs a priority")
    if "any" in rule.window and len(rule.window) > 1:
        err("window", "'any' already covers every window")
    for a, b in (("any_of", "none_of"), ("all_of", "none_of"), ("acquisition_has", "acquisition_lacks"),
                 ("modality", "modality_missing"), ("modality_only", "modality_missing"), ("priors_have", "priors_lack")):
        both = set(getattr(rule, a)) & set(getattr(rule, b))
        if both:
            err(b, f"contradictory conditions: {sorted(both)} in both {a} and {b}")
    if rule.procedure and "yes" not in rule.postoperative:
        err("procedure", "contradictory conditions: a procedure is required but postoperative excludes 'yes'")
    if "yes" not in rule.postoperative and "yes" in rule.instrumented and "unknown" not in rule.instrumented and "no" not in rule.instrumented:
        err("instrumented", "contradictory conditions: an instrumented spine has been operated")
    if rule.window == ["early"] and (rule.interval_min_days or 0) > settings["EARLY_WINDOW_DAYS"]:
        err("interval", "unreachable: min_days is beyond the early window (EARLY_WINDOW_DAYS)")
    for esc in rule.escalate:
        if "any" not in rule.window + esc.window and not set(esc.window) & set(rule.window):
            err("escalate", f"unreachable escalation: window {esc.window} never overlaps the rule's {rule.window}")
    if rule.procedure == ["fusion"] and rule.instrumented == ["no"]:
        err("instrumented", "contradictory conditions: fusion with instrumented: [no]")
    if rule.interval_min_days is not None and rule.interval_max_days is not None and rule.interval_min_days > rule.interval_max_days:
        err("interval", "contradictory conditions: min_days is above max_days")
    if rule.modality and rule.modality_only and not set(rule.modality) & set(rule.modality_only):
        err("modality_only", "contradictory conditions: modality and modality_only do not overlap")
    if set(rule.flags) & set(rule.if_flags):
        err("if_flags", "a rule cannot be triggered by the flags it raises")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(rule.explain) if f is not None}
    except ValueError as e:
        err("explain", f"bad template: {e}")
        return
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        err("explain", f"unknown template field(s) {sorted(unknown)}; use {sorted(TEMPLATE_FIELDS)}")

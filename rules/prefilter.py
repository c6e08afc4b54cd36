"""Required literals of a regular expression: a cheap test that lets the lexicon skip a pattern that cannot match.

The lexicon runs about 500 word-order patterns over every text field; most of them cannot match most texts, and the
scans were 60 % of the engine's time (session 9). `required_literals(pattern)` reads the pattern's parse tree and
returns a set of strings such that **every match contains at least one of them** (or None when no such set is known).
`LiteralSet.present(text)` then tests every pattern's literals against a text at once, on the lower-cased text with
lower-cased literals, so that "none present" is a sufficient reason to skip whatever the pattern's case flags.

It may only ever say "maybe" too often, never "no" wrongly: an alternative, a repeat that may occur zero times, a
character class, a lookaround or a back-reference contributes no literal; a sequence contributes its best element
(the longest literal run, or the best requirement of a group or branch that must occur).
"""

from __future__ import annotations

import re
from re import _constants as C  # noqa: N812 (the parser's op codes)
from re import _parser as parser

#: A requirement: any one of these strings is in every match.
Literals = frozenset


def required_literals(pattern: str | re.Pattern) -> Literals | None:
    """Strings at least one of which every match of `pattern` contains (lower-cased), or None if none is known."""
    source, flags = (pattern.pattern, pattern.flags) if isinstance(pattern, re.Pattern) else (pattern, 0)
    if isinstance(source, bytes):
        return None
    try:
        tree = parser.parse(source, flags & ~re.UNICODE if flags else 0)
    except (re.error, TypeError, ValueError):
        return None
    if tree.state.flags & re.VERBOSE:
        return None  # whitespace is not literal there: not worth the care, no pattern of ours is verbose
    return _sequence(list(tree))


class LiteralSet:
    """The literals of many patterns, tested against a text once: `present(text)` is the set of them it contains; a
    pattern whose literals are disjoint from it cannot match (about 2,000 substring tests a text, instead of one
    Python call per pattern and literal)."""

    def __init__(self, requirements: list[Literals | None]):
        self.literals = tuple(sorted(set().union(*(r for r in requirements if r is not None))))
        #: session 15: literals of three characters or more are looked for only when their first three characters are in
        #: the text (a set of the text's trigrams costs one pass; most of the 2,000 substring tests are then not made)
        self._short = tuple(lit for lit in self.literals if len(lit) < 3)
        self._by_head: dict[str, tuple[str, ...]] = {}
        for lit in self.literals:
            if len(lit) >= 3:
                self._by_head[lit[:3]] = (*self._by_head.get(lit[:3], ()), lit)
        #: which requirements (by their index in the list given) each literal satisfies; None requirements always run
        self._owners: dict[str, list[int]] = {}
        self._always = [i for i, r in enumerate(requirements) if r is None]
        for i, r in enumerate(requirements):
            for lit in r or ():
                self._owners.setdefault(lit, []).append(i)

    def present(self, text: str) -> set[str]:
        low = text.lower()
        found = {lit for lit in self._short if lit in low}
        heads = {low[i : i + 3] for i in range(len(low) - 2)}
        for head in heads.intersection(self._by_head):
            found.update(lit for lit in self._by_head[head] if lit in low)
        return found

    def candidates(self, text: str) -> list[int]:
        """The indices, in order, of the requirements that may be met in `text` (None requirements included): the
        patterns worth running on it."""
        picked = set(self._always)
        for lit in self.present(text):
            picked.update(self._owners[lit])
        return sorted(picked)


def _better(a: Literals | None, b: Literals | None) -> Literals | None:
    """The more selective requirement: the one whose shortest literal is longer, then the one with fewer strings."""
    if a is None:
        return b
    if b is None:
        return a
    key = lambda s: (min(len(x) for x in s), -len(s))  # noqa: E731
    return a if key(a) >= key(b) else b


def _sequence(items: list) -> Literals | None:
    best: Literals | None = None
    run: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            run.append(chr(av))
            continue
        if run:
            best = _better(best, frozenset({"".join(run).lower()}))
            run = []
        best = _better(best, _item(op, av))
    if run:
        best = _better(best, frozenset({"".join(run).lower()}))
    if best is not None and any(not s for s in best):
        return None
    return best


def _item(op, av) -> Literals | None:
    if op is C.SUBPATTERN:
        return _sequence(list(av[-1]))
    if op is C.ATOMIC_GROUP:
        return _sequence(list(av))
    if op is C.BRANCH:
        alternatives = [_sequence(list(alt)) for alt in av[1]]
        if any(a is None for a in alternatives):
            return None
        return frozenset().union(*alternatives)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, _high, sub = av
        return _sequence(list(sub)) if low >= 1 else None
    if op is C.IN:
        # a class of one character (or one letter in both cases) is a literal: "[s]", "[ ]"
        chars = {chr(v) for o, v in av if o is C.LITERAL} if all(o is C.LITERAL for o, _ in av) else set()
        lowered = {c.lower() for c in chars}
        return frozenset(lowered) if len(lowered) == 1 else None
    return None  # any character, a class, a lookaround, an anchor, a back-reference: nothing required

"""ConText/NegEx-style context of a mention: negated, possible (uncertain), family history, historical.

A cue (resource table `resources/matching/context_{lang}.tsv`, longest phrase first) opens a scope in its
direction (forward, backward or both) that ends at the clause boundary: sentence punctuation (. ; : ? ! and
line breaks), a termination word (`but`, `however`, `pero`, ...), another cue, or `MAX_SCOPE_WORDS` words.
Pseudo-cues ("no change", "gram negative") are consumed so that the cue inside them does not fire.

The result is a feature of each mention (the matcher keeps the code and reports the cue; a re-ranker or the
matcher's dev-tuned penalty decides what it is worth), never a silent drop.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cache

from icdcoder.matching.normalize import _resource_lines, fold

CATEGORIES = ("negated", "possible", "family", "historical")
MAX_SCOPE_WORDS = 8
_TOKEN = re.compile(r"\b[a-z]/[a-z]\b|[a-z0-9]+|[.;:?!\n]")
_BOUNDARY = frozenset(".;:?!\n")


@dataclass(frozen=True)
class Scope:
    """A cue of `category` at raw span [cue_start, cue_end) governing the raw span [start, end)."""

    category: str
    cue_start: int
    cue_end: int
    start: int
    end: int


class ContextRules:
    """The cue table of one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.cues: dict[tuple[str, ...], tuple[str, str]] = {}
        for row in _resource_lines(f"context_{lang}.tsv"):
            if len(row) >= 3:
                self.cues[tuple(_TOKEN.findall(row[0]))] = (row[1], row[2])
        self.max_len = max((len(k) for k in self.cues), default=1)

    def scopes(self, text: str) -> list[Scope]:
        """Every cue's scope in `text` (raw offsets)."""
        toks = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(fold(text))]
        words = [t for t, _, _ in toks]
        # cue occurrences: (first token, last token + 1, category, direction)
        found: list[tuple[int, int, str, str]] = []
        i = 0
        while i < len(toks):
            for size in range(min(self.max_len, len(toks) - i), 0, -1):
                hit = self.cues.get(tuple(words[i : i + size]))
                if hit is not None:
                    found.append((i, i + size, hit[0], hit[1]))
                    i += size
                    break
            else:
                i += 1
        stops = {a for a, _, cat, _ in found if cat != "pseudo"} | {
            i for i, w in enumerate(words) if w in _BOUNDARY
        }
        for a, b, cat, _ in found:
            if cat in ("terminate",):
                stops.update(range(a, b))
        out: list[Scope] = []
        for a, b, cat, direction in found:
            if cat not in CATEGORIES:
                continue
            if direction in ("forward", "both"):
                end = b
                while end < len(toks) and end not in stops and end - b < MAX_SCOPE_WORDS:
                    end += 1
                if end > b:
                    out.append(Scope(cat, toks[a][1], toks[b - 1][2], toks[b][1], toks[end - 1][2]))
            if direction in ("backward", "both"):
                start = a
                while start > 0 and (start - 1) not in stops and a - start < MAX_SCOPE_WORDS:
                    start -= 1
                if start < a:
                    out.append(Scope(cat, toks[a][1], toks[b - 1][2], toks[start][1], toks[a - 1][2]))
        return out


@cache
def get_context_rules(lang: str) -> ContextRules:
    return ContextRules(lang)


class ContextIndex:
    """Scopes of one note, for quick "which categories cover this span" queries."""

    def __init__(self, scopes: list[Scope]) -> None:
        self.scopes = sorted(scopes, key=lambda s: s.start)
        self._starts = [s.start for s in self.scopes]
        self._longest = max((s.end - s.start for s in self.scopes), default=0)

    def categories(self, start: int, end: int) -> set[str]:
        """Categories of the scopes that contain [start, end) (a mention inside its cue's scope)."""
        out = set()
        for s in self.scopes[: bisect_right(self._starts, start)]:
            if s.start <= start and end <= s.end:
                out.add(s.category)
        return out

    def span_context(self, start: int, end: int) -> str | None:
        """The category (first of `CATEGORIES` on a tie) whose scopes cover at least half of [start, end) once
        its cues' own characters are left out, or None. For evidence phrases, which often include the cue
        ("No lymphadenopathy or metastases"), unlike matcher mentions, which `categories` tests."""
        # only scopes starting in [start - longest, end) can overlap: two bisections, not a scan of the note
        near = self.scopes[bisect_left(self._starts, start - self._longest) : bisect_left(self._starts, end)]
        best, found = 0.0, None
        for cat in CATEGORIES:
            scopes = [s for s in near if s.category == cat and start < s.end]
            if not scopes:
                continue
            cue_chars = _covered(start, end, [(s.cue_start, s.cue_end) for s in scopes])
            rest = (end - start) - cue_chars
            if rest <= 0:
                continue
            share = _covered(start, end, [(s.start, s.end) for s in scopes]) / rest
            if share >= 0.5 and share > best:
                best, found = share, cat
        return found


def _covered(start: int, end: int, ranges: list[tuple[int, int]]) -> int:
    """Characters of [start, end) inside the union of `ranges`."""
    total, last = 0, start
    for a, b in sorted(ranges):
        a, b = max(a, last), min(b, end)
        if b > a:
            total += b - a
            last = b
    return total


def context_of(text: str, lang: str) -> ContextIndex:
    """The context scopes of a note."""
    return ContextIndex(get_context_rules(lang).scopes(text))

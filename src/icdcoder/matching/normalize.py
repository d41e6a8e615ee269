"""Text normalisation for dictionary matching, with every word pointing back into the raw note.

Steps, the same for code terms and for notes (so both sides meet on one form):
1. fold: lower case, accents removed (`Células` -> `celulas`), one folded character per raw character, so a
   folded offset is a raw offset (characters that decompose into several base letters, e.g. `ß`, keep only
   their first letter);
2. words: runs of letters/digits, plus slash abbreviations of one letter each side (`w/o`, `d/t`, `s/p`);
3. rewrites (resource tables, `resources/matching/`): abbreviations (`htn` -> `hypertension`) and phrases
   (`malignant neoplasm` -> `cancer`); the longest phrase wins and every word it produces carries the span
   of the words it replaced;
4. stop words dropped, then Snowball stemming (English or Spanish): `fractures` and `fracture` meet on
   `fractur`; organ adjectives then meet their noun on the stem (`renal`, `renales` -> `kidney`, `rinon`).

Modifier phrases ("unspecified", "NOS", "other", "no especificado") are found by `modifiers`, for the
specificity rules of the matcher: they are not words to match.
"""

from __future__ import annotations

import importlib.resources
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import snowballstemmer

from icdcoder.errors import ConfigError

LANGS = ("en", "es")
_WORD = re.compile(r"\b[a-z]/[a-z]\b|[a-z0-9]+")
_STEMMER_NAMES = {"en": "english", "es": "spanish"}
_EXCLUSION = re.compile(r"\b(?:except|excepto|excluding|other than)\b[^,;()]*")


@dataclass(frozen=True)
class Word:
    """A matching key (stemmed, canonical) and the raw character span [start, end) it came from."""

    key: str
    start: int
    end: int


def fold(text: str) -> str:
    """Lower-cased, accent-free text of exactly the same length as `text` (offsets are shared)."""
    out = []
    for ch in text:
        low = ch.lower()
        if len(low) != 1:  # e.g. 'İ' lower-cases to two characters
            low = low[0]
        if low.isascii():
            out.append(low)
            continue
        base = unicodedata.normalize("NFD", low)
        kept = [c for c in base if not unicodedata.combining(c)]
        out.append(kept[0] if kept else " ")
    return "".join(out)


def _resource_lines(name: str) -> list[list[str]]:
    path = importlib.resources.files("icdcoder") / "resources" / "matching" / name
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rows.append([fold(part.strip()) for part in line.split("\t")])
    return rows


class Normalizer:
    """Folding, words, rewrites, stop words and stemming of one language (`en`, `es`). Cheap to share:
    use `get_normalizer(lang)`."""

    def __init__(self, lang: str) -> None:
        if lang not in LANGS:
            raise ConfigError(f"no matching tables for language {lang!r}.", fix=f"use one of {LANGS}.")
        self.lang = lang
        # rewrites: tuple of folded source words -> folded target words (phrases, then abbreviations, whose
        # expansions are themselves rewritten: HTA -> hipertension arterial -> hipertension)
        self.rewrites: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.upper_only: set[tuple[str, ...]] = set()  # abbreviations that are also words (ALL, TC)
        self.max_rewrite = 1
        self._stemmer = snowballstemmer.stemmer(_STEMMER_NAMES[lang])
        self._stems: dict[str, str] = {}
        self.stopwords = frozenset(r[0] for r in _resource_lines(f"stopwords_{lang}.txt"))
        for table in (f"phrases_{lang}.tsv", f"abbreviations_{lang}.tsv"):
            for row in _resource_lines(table):
                if len(row) >= 2 and row[0] and row[1]:
                    target = tuple(w for w, _, _ in self.rewrite([(w, 0, 0) for w in _WORD.findall(row[1])]))
                    source = tuple(_WORD.findall(row[0]))
                    self.rewrites.setdefault(source, target)
                    if len(row) >= 3 and row[2] == "upper":
                        self.upper_only.add(source)
            self.max_rewrite = max((len(k) for k in self.rewrites), default=1)
        # organ adjectives meet their noun on the stem (renal, renales -> stem of kidney / rinon)
        self.organs = {
            self.stem(row[0]): self.stem(row[1])
            for row in _resource_lines(f"organs_{lang}.tsv")
            if len(row) >= 2
        }
        self.modifier_phrases: list[tuple[str, tuple[str, ...]]] = sorted(
            ((row[0], tuple(_WORD.findall(row[1]))) for row in _resource_lines(f"modifiers_{lang}.txt")),
            key=lambda kv: -len(kv[1]),
        )

    def stem(self, word: str) -> str:
        s = self._stems.get(word)
        if s is None:
            s = word if word.isdigit() else self._stemmer.stemWord(word)
            self._stems[word] = s
        return s

    def raw_words(self, text: str) -> list[tuple[str, int, int]]:
        """Folded words with their raw spans."""
        return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(fold(text))]

    def rewrite(
        self, words: list[tuple[str, int, int]], text: str | None = None
    ) -> list[tuple[str, int, int]]:
        """Apply the rewrite tables (longest phrase first, left to right). With the raw `text`, an
        `upper` abbreviation is expanded only where it is written in capitals."""
        out: list[tuple[str, int, int]] = []
        i, n = 0, len(words)
        while i < n:
            for size in range(min(self.max_rewrite, n - i), 0, -1):
                source = tuple(w for w, _, _ in words[i : i + size])
                target = self.rewrites.get(source)
                if (
                    target is not None
                    and source in self.upper_only
                    and text is not None
                    and not text[words[i][1] : words[i + size - 1][2]].isupper()
                ):
                    target = None
                if target is not None:
                    start, end = words[i][1], words[i + size - 1][2]
                    out.extend((t, start, end) for t in target)
                    i += size
                    break
            else:
                out.append(words[i])
                i += 1
        return out

    def words(self, text: str) -> list[Word]:
        """Matching keys of `text` (rewritten, stop words dropped, stemmed) with raw spans."""
        out = []
        # twice: an expanded abbreviation may start a phrase ("DM tipo 2" -> "diabetes tipo 2" -> ...)
        for w, a, b in self.rewrite(self.rewrite(self.raw_words(text), text), text):
            if w not in self.stopwords:
                stem = self.stem(w)
                out.append(Word(self.organs.get(stem, stem), a, b))
        return out

    def modifiers(self, text: str) -> tuple[set[str], str]:
        """(kinds of modifier phrases found: "unspecified", "other"; the text with them blanked out). An
        exclusion ("except renal pelvis", "excepto de la pelvis renal") is cut up to the next comma: it
        names what the code is not, so a note need not say it."""
        words = [w for w, _, _ in self.raw_words(_EXCLUSION.sub(" ", fold(text)))]
        kinds: set[str] = set()
        keep = [True] * len(words)
        for kind, phrase in self.modifier_phrases:
            k = len(phrase)
            for i in range(len(words) - k + 1):
                if all(keep[i : i + k]) and tuple(words[i : i + k]) == phrase:
                    kinds.add(kind)
                    keep[i : i + k] = [False] * k
        return kinds, " ".join(w for w, ok in zip(words, keep, strict=True) if ok)


@cache
def get_normalizer(lang: str) -> Normalizer:
    return Normalizer(lang)

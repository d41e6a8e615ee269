"""Mention memory: (mention text -> code) pairs learned from annotated evidence spans, found again in notes.

What it learns (from the train split's evidence only, e.g. CodiEsp's X file): every distinct mention, folded
(case, accents) and cut into words, with the codes it was annotated with and how often. Then, on train
notes, how often each mention is found at all and how often the note found in carries each of its codes: the
mention's *precision* for the code, smoothed towards a prior (`(n_with_code + a * prior) / (n_found + a)`).

How it finds mentions in a new note:
- **exact**: the folded words of the note, joined by single spaces, run through an Aho-Corasick automaton
  of the folded mentions; a hit must start and end on word boundaries. Similarity 1.
- **fuzzy**: word by word, order free, so a Spanish mention still hits its English translation through
  cognates ("carcinoma de celulas renales" ~ "renal cell carcinoma"). Two words match when the Dice
  coefficient of their character n-grams (word padded with `#`) reaches `word_sim`; words of 3 characters
  or fewer must be equal. A mention's similarity in a window of the note is the mean, over its content
  words (function words left out), of the best match of each word inside the window; the window is
  `len(mention words) + max_gap` note words long. Hits below `min_similarity` are dropped.
- `longest_only`: a hit lying inside a longer hit of another mention is dropped (the longer mention is the
  more specific one).

How codes are scored: each hit of mention m gives code c the weight q = similarity ** gamma * precision(m, c);
a code's score is the noisy-or 1 - prod(1 - q) over its hits. Its evidence is the hits' character spans
into the raw note, strongest first; its features are the best similarity, the number of hits and the best
precision (for a re-ranker).

Everything learned is JSON (`to_json` / `from_json`); the automaton and n-gram index are rebuilt from it.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import ahocorasick

from icdcoder.errors import DataError
from icdcoder.matching.normalize import fold  # the matcher's folding: one character per character

FORMAT_VERSION = 1
_WORD = re.compile(r"[^\W_]+")
Span = tuple[int, int]


@dataclass(frozen=True)
class Word:
    """A folded word and its character span in the raw text."""

    text: str
    start: int
    end: int


def words(text: str) -> list[Word]:
    """Folded words (runs of letters and digits) with their raw character offsets."""
    return [Word(fold(m.group()), m.start(), m.end()) for m in _WORD.finditer(text)]


def canonical(text: str) -> str:
    """A mention's key: its folded words joined by single spaces."""
    return " ".join(w.text for w in words(text))


@functools.cache
def function_words() -> frozenset[str]:
    res = importlib.resources.files("icdcoder") / "resources" / "mention_memory" / "function_words.txt"
    lines = res.read_text(encoding="utf-8").splitlines()
    return frozenset(fold(x.strip()) for x in lines if x.strip() and not x.startswith("#"))


def ngrams(word: str, n: int) -> set[str]:
    padded = f"#{word}#"
    if len(padded) <= n:
        return {padded}
    return {padded[i : i + n] for i in range(len(padded) - n + 1)}


@dataclass(frozen=True)
class MemoryParams:
    """Hyperparameters; `min_similarity`, `longest_only` and `gamma` are tuned on dev by `tune`."""

    ngram: int = 3
    word_sim: float = 0.5  # floor of the character n-gram Dice for two words to match
    min_similarity: float = 0.8  # mention-level similarity a fuzzy hit needs (1.0: exact hits only)
    max_gap: int = 2  # extra note words a fuzzy window may hold beyond the mention's length
    longest_only: bool = True
    gamma: float = 2.0  # sharpness of the similarity in a hit's weight
    smoothing: float = 1.0  # pseudo-count of the precision prior
    prior: float = 0.5  # precision of a mention never found in train notes
    fuzzy: bool = True

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MemoryParams:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass(frozen=True)
class Hit:
    """Mention `mention` found at raw characters [start, end) with `similarity` (1.0 when exact)."""

    mention: int
    start: int
    end: int
    similarity: float
    exact: bool


@dataclass
class CodeEvidence:
    """One code's score in a note, the spans that fired (strongest first) and re-ranker features."""

    score: float
    spans: list[Span] = field(default_factory=list)
    similarity: float = 0.0
    mentions: int = 0
    precision: float = 0.0

    def features(self) -> dict[str, float]:
        return {
            "memory_similarity": self.similarity,
            "memory_mentions": float(self.mentions),
            "memory_precision": self.precision,
        }


class MentionMemory:
    """The learned table (mention -> code counts, precision counts) and its matchers (module docstring)."""

    def __init__(
        self,
        mentions: list[str],
        code_counts: list[dict[str, int]],
        params: MemoryParams | None = None,
        found: list[int] | None = None,
        found_with_code: list[dict[str, int]] | None = None,
    ) -> None:
        if len(code_counts) != len(mentions):
            raise DataError("mention memory: one code table per mention is needed.")
        self.mentions = mentions
        self.code_counts = code_counts
        self.params = params or MemoryParams()
        self.found = found if found is not None else [0] * len(mentions)
        self.found_with_code = found_with_code if found_with_code is not None else [{} for _ in mentions]
        self._build()

    # ------------------------------------------------------------------------------------------ learning

    @classmethod
    def learn(cls, pairs: Iterable[tuple[str, str]], params: MemoryParams | None = None) -> MentionMemory:
        """Build the table from (mention text, code key) pairs, e.g. every evidence span of the train split.
        Mentions are keyed by their folded words; empty ones are skipped."""
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for text, code in pairs:
            key = canonical(text)
            if len(key) >= 2:
                table[key][code] += 1
        keys = sorted(table)
        return cls(keys, [dict(sorted(table[k].items())) for k in keys], params)

    def fit_precision(self, notes: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Count, over (note text, note codes) pairs (the train split), in how many notes each mention is
        found (at the current params) and how many of those carry each of its codes."""
        self.found = [0] * len(self.mentions)
        self.found_with_code = [{} for _ in self.mentions]
        for text, codes in notes:
            self._count(self.find(text), set(codes), self.found, self.found_with_code)

    def _count(
        self, hits: Sequence[Hit], codes: set[str], found: list[int], with_code: list[dict[str, int]]
    ) -> None:
        for m in {h.mention for h in hits}:
            found[m] += 1
            for c in self.code_counts[m]:
                if c in codes:
                    with_code[m][c] = with_code[m].get(c, 0) + 1

    def precision(self, mention: int, code: str) -> float:
        p = self.params
        hits = self.found_with_code[mention].get(code, 0)
        return (hits + p.smoothing * p.prior) / (self.found[mention] + p.smoothing)

    def codes(self) -> list[str]:
        """Every code the memory can propose, sorted."""
        return sorted({c for table in self.code_counts for c in table})

    # ---------------------------------------------------------------------------------------- matching

    def _build(self) -> None:
        p = self.params
        stop = function_words()
        self._automaton: Any = None
        if self.mentions:
            auto = ahocorasick.Automaton()
            for i, m in enumerate(self.mentions):
                auto.add_word(f" {m} ", (i, len(m)))
            auto.make_automaton()
            self._automaton = auto
        # Fuzzy index: mention -> its distinct content words (ids into a word vocabulary) and how many
        # words it has; word -> mentions; n-gram -> words (with the word's n-gram count).
        vocab: dict[str, int] = {}
        self._content: list[list[int]] = []
        self._length: list[int] = []
        self._word_mentions: list[list[int]] = []
        for i, m in enumerate(self.mentions):
            ws = m.split(" ")
            content = [w for w in ws if w not in stop] or ws
            ids: list[int] = []
            for w in content:
                wid = vocab.setdefault(w, len(vocab))
                if wid == len(self._word_mentions):
                    self._word_mentions.append([])
                if wid not in ids:
                    ids.append(wid)
                    self._word_mentions[wid].append(i)
            self._content.append(ids)
            self._length.append(len(ws))
        self._vocab = vocab
        self._gram_count: list[int] = [0] * len(vocab)
        self._postings: dict[str, list[int]] = defaultdict(list)
        for w, wid in vocab.items():
            grams = ngrams(w, p.ngram)
            self._gram_count[wid] = len(grams)
            if len(w) > 3:
                for g in grams:
                    self._postings[g].append(wid)

    def find(self, text: str, min_similarity: float | None = None) -> list[Hit]:
        """Every hit in `text` (exact, then fuzzy ones not on top of an exact hit of the same mention),
        with similarity >= `min_similarity` (default: the params'), before `longest_only`."""
        floor = self.params.min_similarity if min_similarity is None else min_similarity
        ws = words(text)
        hits = self._exact(ws)
        if self.params.fuzzy and floor < 1.0 and ws:
            taken: dict[int, list[Span]] = defaultdict(list)
            for h in hits:
                taken[h.mention].append((h.start, h.end))
            for h in self._fuzzy(ws, floor):
                if not any(a < h.end and h.start < b for a, b in taken[h.mention]):
                    hits.append(h)
        return hits

    def _exact(self, ws: list[Word]) -> list[Hit]:
        if self._automaton is None or not ws:
            return []
        # " w1 w2 ... " with the character position of every word start, so a hit maps back to words.
        starts: dict[int, int] = {}
        pos = 1
        for i, w in enumerate(ws):
            starts[pos] = i
            pos += len(w.text) + 1
        joined = " " + " ".join(w.text for w in ws) + " "
        hits = []
        for end, (mention, length) in self._automaton.iter(joined):
            first = starts[end - length]  # the pattern is " m ": its word starts one after its space
            last = first + self._length[mention] - 1
            hits.append(Hit(mention, ws[first].start, ws[last].end, 1.0, True))
        return hits

    def _word_matches(self, ws: list[Word]) -> dict[int, list[tuple[int, float]]]:
        """Mention word id -> (note word position, similarity) for every note word that matches it."""
        p = self.params
        stop = function_words()
        sims: dict[str, list[tuple[int, float]]] = {}
        for form in {w.text for w in ws if w.text not in stop}:
            found: dict[int, float] = {}
            exact = self._vocab.get(form)
            if exact is not None:
                found[exact] = 1.0
            if len(form) > 3:
                grams = ngrams(form, p.ngram)
                common: Counter[int] = Counter()
                for g in grams:
                    common.update(self._postings.get(g, ()))
                for wid, k in common.items():
                    s = 2.0 * k / (len(grams) + self._gram_count[wid])
                    if s >= p.word_sim and s > found.get(wid, 0.0):
                        found[wid] = s
            sims[form] = list(found.items())
        out: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for pos, w in enumerate(ws):
            for wid, s in sims.get(w.text, ()):
                out[wid].append((pos, s))
        return out

    def _fuzzy(self, ws: list[Word], floor: float) -> list[Hit]:
        p = self.params
        matches = self._word_matches(ws)
        candidates = {m for wid in matches for m in self._word_mentions[wid]}
        hits: list[Hit] = []
        for m in sorted(candidates):
            content = self._content[m]
            best = [max((s for _, s in matches.get(wid, ())), default=0.0) for wid in content]
            if sum(best) / len(content) < floor:
                continue  # even the best match of every word anywhere in the note is not enough
            width = self._length[m] + p.max_gap
            anchors = sorted({pos for wid in content for pos, _ in matches.get(wid, ())})
            found: list[tuple[float, int, int]] = []
            for a in anchors:
                total, lo, hi = 0.0, a, a
                for wid in content:
                    s_best, at = 0.0, -1
                    for pos, s in matches.get(wid, ()):
                        if a <= pos < a + width and s > s_best:
                            s_best, at = s, pos
                    if at >= 0:
                        total += s_best
                        lo, hi = min(lo, at), max(hi, at)
                sim = total / len(content)
                if sim >= floor:
                    found.append((sim, lo, hi))
            # Overlapping windows of one mention are one hit: keep the best, then the next disjoint one.
            kept: list[tuple[float, int, int]] = []
            for sim, lo, hi in sorted(found, key=lambda x: (-x[0], x[1])):
                if all(hi < klo or lo > khi for _, klo, khi in kept):
                    kept.append((sim, lo, hi))
            hits.extend(Hit(m, ws[lo].start, ws[hi].end, round(sim, 6), False) for sim, lo, hi in kept)
        return hits

    # ----------------------------------------------------------------------------------------- scoring

    def select(self, hits: Sequence[Hit], min_similarity: float, longest_only: bool) -> list[Hit]:
        """Hits at or above `min_similarity`; with `longest_only`, none strictly inside a longer one."""
        kept = [h for h in hits if h.similarity >= min_similarity]
        if not longest_only:
            return kept
        return [
            h
            for h in kept
            if not any(
                o.start <= h.start and h.end <= o.end and (o.end - o.start) > (h.end - h.start) for o in kept
            )
        ]

    def score(self, hits: Sequence[Hit]) -> dict[str, CodeEvidence]:
        """Per code: noisy-or of the hits' weights, their spans (strongest first) and features."""
        gamma = self.params.gamma
        weighted: dict[str, list[tuple[float, Hit, float]]] = defaultdict(list)
        for h in hits:
            for code in self.code_counts[h.mention]:
                prec = self.precision(h.mention, code)
                weighted[code].append((h.similarity**gamma * prec, h, prec))
        out: dict[str, CodeEvidence] = {}
        for code, items in weighted.items():
            items.sort(key=lambda x: (-x[0], x[1].start))
            miss = math.prod(1.0 - q for q, _, _ in items)
            spans: list[Span] = []
            for _, h, _ in items:
                if (h.start, h.end) not in spans:
                    spans.append((h.start, h.end))
            out[code] = CodeEvidence(
                score=1.0 - miss,
                spans=spans,
                similarity=max(h.similarity for _, h, _ in items),
                mentions=len(items),
                precision=max(pr for _, _, pr in items),
            )
        return out

    def code_text(self, text: str) -> dict[str, CodeEvidence]:
        """Find, select and score in one call, at the memory's params."""
        p = self.params
        return self.score(self.select(self.find(text), p.min_similarity, p.longest_only))

    # ------------------------------------------------------------------------------------------ tuning

    def tune(
        self,
        train: Sequence[tuple[str, Sequence[str]]],
        dev: Sequence[tuple[str, Sequence[str]]],
        min_similarity: Sequence[float] = (0.6, 0.7, 0.8, 0.9, 1.0),
        longest_only: Sequence[bool] = (True, False),
        gamma: Sequence[float] = (1.0, 2.0, 4.0),
    ) -> list[dict[str, Any]]:
        """Pick `min_similarity`, `longest_only` and `gamma` by dev MAP (organisers' definition: every gold
        code counts), fit precision on `train` at the chosen ones, and return the grid's scores.

        Notes are matched once at the lowest similarity; each grid point only filters those hits."""
        floor = min(min_similarity)
        train_hits = [self.find(t, floor) for t, _ in train]
        dev_hits = [self.find(t, floor) for t, _ in dev]
        grid: list[dict[str, Any]] = []
        best: tuple[float, MemoryParams] | None = None
        for ms in sorted(min_similarity, reverse=True):
            for lo in longest_only:
                found = [0] * len(self.mentions)
                with_code: list[dict[str, int]] = [{} for _ in self.mentions]
                for hs, (_, codes) in zip(train_hits, train, strict=True):
                    self._count(self.select(hs, ms, lo), set(codes), found, with_code)
                self.found, self.found_with_code = found, with_code
                for g in gamma:
                    self.params = replace(self.params, min_similarity=ms, longest_only=lo, gamma=g)
                    aps = [
                        average_precision(self.score(self.select(hs, ms, lo)), codes)
                        for hs, (_, codes) in zip(dev_hits, dev, strict=True)
                    ]
                    score = sum(aps) / len(aps) if aps else 0.0
                    grid.append({"min_similarity": ms, "longest_only": lo, "gamma": g, "dev_map": score})
                    if best is None or score > best[0] + 1e-12:
                        best = (score, self.params)
        if best is not None:
            self.params = best[1]
            found = [0] * len(self.mentions)
            with_code = [{} for _ in self.mentions]
            for hs, (_, codes) in zip(train_hits, train, strict=True):
                chosen = self.select(hs, best[1].min_similarity, best[1].longest_only)
                self._count(chosen, set(codes), found, with_code)
            self.found, self.found_with_code = found, with_code
        return grid

    # ------------------------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "icdcoder-mention-memory",
            "version": FORMAT_VERSION,
            "params": asdict(self.params),
            "mentions": [
                {"text": m, "codes": c, "found": f, "found_with_code": fc}
                for m, c, f, fc in zip(
                    self.mentions, self.code_counts, self.found, self.found_with_code, strict=True
                )
            ],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MentionMemory:
        if obj.get("format") != "icdcoder-mention-memory" or obj.get("version") != FORMAT_VERSION:
            raise DataError(
                "not a mention memory of this version.",
                fix="retrain the model with this icdcoder version.",
            )
        rows = obj["mentions"]
        return cls(
            [str(r["text"]) for r in rows],
            [{str(k): int(v) for k, v in r["codes"].items()} for r in rows],
            MemoryParams.from_json(obj["params"]),
            [int(r["found"]) for r in rows],
            [{str(k): int(v) for k, v in r["found_with_code"].items()} for r in rows],
        )


def average_precision(scored: dict[str, CodeEvidence], gold: Sequence[str]) -> float:
    """The CodiEsp organisers' AP of one note: codes ranked by score (ties by key), precision at each hit,
    divided by the number of gold codes (gold codes never proposed count as misses)."""
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    ranked = sorted(scored, key=lambda c: (-scored[c].score, c))
    hits, total = 0, 0.0
    for rank, code in enumerate(ranked, start=1):
        if code in gold_set:
            hits += 1
            total += hits / rank
    return total / len(gold_set)

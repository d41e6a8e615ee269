"""The term index: every code's terms as bags of normalised word keys, found in a note's sentences.

Build: each term text loses its modifier phrases ("unspecified", "NOS", "other": they become flags of the
code, see `TermIndex.flags`), goes through `Normalizer.words` and becomes the *set* of its keys (word order
free). Terms with the same key set are stored once, with every code they belong to. Each key gets an idf
over terms, idf = ln(1 + n_terms / df), so a term's rare words weigh most. A term is filed under its two
rarest keys (its anchors).

Match (one note): the note's keys are split into sentences (. ; : ? ! followed by a space, line breaks). In a
sentence, the candidate terms are those anchored on a key of the sentence; for all candidates at once
(numpy, CSR gathers) the idf-weighted coverage of the term by the sentence's keys is computed; a candidate
with coverage >= `min_coverage` becomes a match: for each of its keys present, the occurrence nearest the
term's anchor occurrence, then keys farther than `window(len)` words from the anchor are dropped and the
coverage recomputed. Then subsumption: a match whose word positions are a strict subset of another match's
positions, with no higher coverage, is marked `subsumed` ("pain" inside "abdominal pain"); the matcher
drops it by default (a dev-tuned weight may keep it low).

Inverted index rather than Aho-Corasick because matching must be free of word order ("carcinoma of the
kidney" vs "kidney carcinoma") and partial; an Aho-Corasick automaton needs exact sequences.

Saved as one .npz (no pickles, `allow_pickle=False`) in a cache folder keyed by a fingerprint of its inputs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icdcoder.matching.normalize import Normalizer, Word

log = logging.getLogger(__name__)

INDEX_VERSION = 1
_PARENTHETICAL = re.compile(r"\s*[(\[][^()\[\]]*[)\]]")
_SENTENCE_END = re.compile(r"[.;:?!](?=\s|$)|\n")
_CLAUSE_END = re.compile(r"[.;:?!,](?=\s|$)|\n|\(|\)")
FLAG_UNSPECIFIED, FLAG_OTHER = 1, 2


def window(n_keys: int) -> int:
    """How far (in note words, stop words left out) a term's keys may lie from its anchor."""
    return n_keys + 2


@dataclass
class Match:
    """A term found in a note: its id, coverage, the note words used (indices) and their raw span."""

    term: int
    coverage: float
    positions: frozenset[int]
    start: int
    end: int
    subsumed: bool = False  # its words are a strict subset of a longer match's words


class TermIndex:
    """Terms of a label space as key bags, with codes, idf and anchors (see module doc)."""

    def __init__(
        self,
        keys: list[str],
        term_ptr: np.ndarray,
        term_keys: np.ndarray,
        code_ptr: np.ndarray,
        code_idx: np.ndarray,
        code_weight: np.ndarray,
        flags: np.ndarray,
        n_codes: int,
    ) -> None:
        self.keys = keys
        self.key_id = {k: i for i, k in enumerate(keys)}
        self.term_ptr, self.term_keys = term_ptr, term_keys
        self.code_ptr, self.code_idx, self.code_weight = code_ptr, code_idx, code_weight
        self.flags = flags  # [C] uint8: FLAG_UNSPECIFIED | FLAG_OTHER from the code's title
        self.n_codes = n_codes
        n_terms = len(term_ptr) - 1
        df = np.bincount(term_keys, minlength=len(keys)).astype(np.float64)
        self.idf = np.log1p(n_terms / np.maximum(df, 1.0)).astype(np.float32)
        term_of = np.repeat(np.arange(n_terms), np.diff(term_ptr))
        self.term_len = np.diff(term_ptr).astype(np.int32)
        self.term_idf = np.bincount(term_of, weights=self.idf[term_keys], minlength=n_terms).astype(
            np.float32
        )
        # anchors: each term under its two rarest keys
        anchor_terms: list[list[int]] = [[] for _ in keys]
        for t in range(n_terms):
            ks = term_keys[term_ptr[t] : term_ptr[t + 1]]
            for k in ks[np.argsort(-self.idf[ks], kind="stable")[:2]]:
                anchor_terms[int(k)].append(t)
        self.anchor_ptr = np.zeros(len(keys) + 1, dtype=np.int64)
        self.anchor_ptr[1:] = np.cumsum([len(a) for a in anchor_terms])
        self.anchor_terms = np.asarray([t for a in anchor_terms for t in a], dtype=np.int32)

    @property
    def n_terms(self) -> int:
        return len(self.term_ptr) - 1

    # -- build
    @classmethod
    def build(
        cls,
        normalizer: Normalizer,
        label_keys: Sequence[str],
        terms_of: Callable[[int], list[tuple[str, float]]],
        title_of: Callable[[int], str],
    ) -> TermIndex:
        """Index the terms `terms_of(i)` (text, weight) of each code i of `label_keys`."""
        key_id: dict[str, int] = {}
        term_id: dict[tuple[int, ...], int] = {}
        term_codes: list[dict[int, float]] = []
        flags = np.zeros(len(label_keys), dtype=np.uint8)
        for i in range(len(label_keys)):
            kinds, _ = normalizer.modifiers(title_of(i))
            flags[i] = (FLAG_UNSPECIFIED if "unspecified" in kinds else 0) | (
                FLAG_OTHER if "other" in kinds else 0
            )
            for text, weight in terms_of(i):
                # "hypertension (arterial) (benign)": the parenthesised words are nonessential modifiers
                for variant in dict.fromkeys((text, _PARENTHETICAL.sub("", text))):
                    _, stripped = normalizer.modifiers(variant)
                    words = normalizer.words(stripped)
                    ids = sorted({key_id.setdefault(w.key, len(key_id)) for w in words})
                    if not ids:
                        continue
                    t = term_id.setdefault(tuple(ids), len(term_id))
                    if t == len(term_codes):
                        term_codes.append({})
                    term_codes[t][i] = max(weight, term_codes[t].get(i, 0.0))
        sigs = sorted(term_id, key=term_id.__getitem__)
        term_ptr = np.zeros(len(sigs) + 1, dtype=np.int64)
        term_ptr[1:] = np.cumsum([len(s) for s in sigs])
        code_ptr = np.zeros(len(sigs) + 1, dtype=np.int64)
        code_ptr[1:] = np.cumsum([len(c) for c in term_codes])
        return cls(
            keys=sorted(key_id, key=key_id.__getitem__),
            term_ptr=term_ptr,
            term_keys=np.asarray([k for s in sigs for k in s], dtype=np.int32),
            code_ptr=code_ptr,
            code_idx=np.asarray([c for tc in term_codes for c in tc], dtype=np.int32),
            code_weight=np.asarray([w for tc in term_codes for w in tc.values()], dtype=np.float32),
            flags=flags,
            n_codes=len(label_keys),
        )

    # -- save / load
    def save(self, path: Path) -> None:
        from icdcoder.io import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb", encoding=None) as fh:
            np.savez(
                fh,
                version=np.asarray([INDEX_VERSION, self.n_codes]),
                keys=np.asarray(self.keys, dtype=np.str_),
                term_ptr=self.term_ptr,
                term_keys=self.term_keys,
                code_ptr=self.code_ptr,
                code_idx=self.code_idx,
                code_weight=self.code_weight,
                flags=self.flags,
            )

    @classmethod
    def load(cls, path: Path) -> TermIndex | None:
        """The saved index, or None when it is missing, unreadable or of another version."""
        try:
            with np.load(path, allow_pickle=False) as z:
                version, n_codes = (int(v) for v in z["version"])
                if version != INDEX_VERSION:
                    return None
                return cls(
                    keys=[str(k) for k in z["keys"]],
                    term_ptr=z["term_ptr"],
                    term_keys=z["term_keys"],
                    code_ptr=z["code_ptr"],
                    code_idx=z["code_idx"],
                    code_weight=z["code_weight"],
                    flags=z["flags"],
                    n_codes=n_codes,
                )
        except (OSError, KeyError, ValueError) as exc:
            if path.exists():
                log.warning("ignoring unreadable term index %s: %s", path, exc)
            return None

    # -- match
    def codes_of(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.code_ptr[term], self.code_ptr[term + 1]
        return self.code_idx[a:b], self.code_weight[a:b]

    def match(
        self, words: list[Word], text: str, min_coverage: float, *, clauses: bool = True
    ) -> list[Match]:
        """Terms found in a note (its `words` from the same normalizer; `text` for sentence ends). With
        `clauses`, commas and brackets also end a matching window ("nephrolithiasis, hematuria or urinary
        tract infections" is a list, not one term)."""
        ends = [m.start() for m in (_CLAUSE_END if clauses else _SENTENCE_END).finditer(text)]
        out: list[Match] = []
        sentence: list[int] = []
        e = 0
        for i, w in enumerate(words):
            while e < len(ends) and ends[e] < w.start:
                e += 1
                if sentence:
                    out.extend(self._match_sentence(words, sentence, min_coverage))
                    sentence = []
            sentence.append(i)
        if sentence:
            out.extend(self._match_sentence(words, sentence, min_coverage))
        return out

    def _match_sentence(self, words: list[Word], positions: list[int], min_coverage: float) -> list[Match]:
        occ: dict[int, list[int]] = defaultdict(list)
        for p in positions:
            k = self.key_id.get(words[p].key)
            if k is not None:
                occ[k].append(p)
        if not occ:
            return []
        present = np.fromiter(occ, dtype=np.int64)
        lists = [self.anchor_terms[self.anchor_ptr[k] : self.anchor_ptr[k + 1]] for k in present]
        cand = np.unique(np.concatenate(lists)) if lists else np.zeros(0, dtype=np.int32)
        if not len(cand):
            return []
        lens = self.term_len[cand]
        starts = self.term_ptr[cand]
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        flat = self.term_keys[offsets + np.arange(int(lens.sum()))]
        hit = np.isin(flat, present)
        seg = np.concatenate(([0], np.cumsum(lens)[:-1]))
        covered = np.add.reduceat(np.where(hit, self.idf[flat], 0.0), seg)
        coverage = covered / np.maximum(self.term_idf[cand], 1e-9)
        found: list[Match] = []
        for j in np.nonzero(coverage >= min_coverage - 1e-6)[0]:
            m = self._place(int(cand[j]), occ, words)
            if m is not None and m.coverage >= min_coverage - 1e-6:
                found.append(m)
        _mark_subsumed(found)
        return found

    def _place(self, term: int, occ: dict[int, list[int]], words: list[Word]) -> Match | None:
        ks = self.term_keys[self.term_ptr[term] : self.term_ptr[term + 1]]
        here = [int(k) for k in ks if int(k) in occ]
        if not here:
            return None
        anchor = max(here, key=lambda k: self.idf[k])
        a = occ[anchor][0]
        limit = window(len(ks))
        pos: list[int] = []
        got = 0.0
        for k in here:
            p = min(occ[k], key=lambda q: abs(q - a))
            if abs(p - a) <= limit:
                pos.append(p)
                got += float(self.idf[k])
        cov = got / max(float(self.term_idf[term]), 1e-9)
        return Match(
            term, cov, frozenset(pos), min(words[p].start for p in pos), max(words[p].end for p in pos)
        )


def _mark_subsumed(found: list[Match]) -> None:
    """Mark a match whose positions are a strict subset of a match with at least its coverage. Many terms
    hit the same words, so this works on the distinct position sets."""
    if len(found) < 2:
        return
    best: dict[frozenset[int], float] = {}
    for m in found:
        best[m.positions] = max(m.coverage, best.get(m.positions, 0.0))
    by_pos: dict[int, list[frozenset[int]]] = defaultdict(list)
    for pos in best:
        for p in pos:
            by_pos[p].append(pos)
    above: dict[frozenset[int], float] = {}  # best coverage among strict supersets
    for pos in best:
        first = next(iter(pos))
        above[pos] = max((best[t] for t in by_pos[first] if len(t) > len(pos) and pos < t), default=-1.0)
    for m in found:
        m.subsumed = above[m.positions] >= m.coverage - 1e-6


def fingerprint(*parts: str) -> str:
    """Cache key of an index from the texts that determine it."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]

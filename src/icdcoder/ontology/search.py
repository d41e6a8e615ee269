"""Free-text search over code titles and synonyms: an inverted index with idf-weighted word coverage.

Score of a code for a query = (idf-weighted share of the query words found among the code's texts, each
text kind weighted: title 1.0, expanded short title 0.9, synonyms 0.7), damped by the title words the query
did not ask for, so "essential hypertension" ranks `401.9 Unspecified essential hypertension` above longer
titles that also contain both words. Postings live in numpy arrays (compact, vectorised scoring).

Building the index of ICD-10-CM or ICD-10-PCS takes seconds, so built indexes are kept on disk (`save` /
`load`: one `.npz` of plain arrays, read with `allow_pickle=False`).
"""

from __future__ import annotations

import logging
import math
import re
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from icdcoder.io import atomic_write
from icdcoder.ontology.synonyms import STOPWORDS

log = logging.getLogger(__name__)

_WORD = re.compile(r"[0-9a-z]+")
_LENGTH_DAMPING = 0.05


def _fold(word: str) -> str:
    """Crude plural folding (fractures -> fracture), enough for title search; "" for a stopword."""
    if word in STOPWORDS:
        return ""
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_FOLDED: dict[str, str] = {}  # word -> folded word; titles share a small vocabulary


def search_tokens(text: str) -> list[str]:
    """Lower-case, stopword-free, plural-folded words of `text` (order kept, repeats dropped)."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.casefold()):
        f = _FOLDED.get(w)
        if f is None:
            f = _FOLDED[w] = _fold(w)
        if f:
            seen[f] = None
    return list(seen)


class SearchIndex:
    """Inverted index over one system's codes (CSR postings: token -> documents with weights)."""

    def __init__(
        self,
        codes: list[str],
        vocab: dict[str, int],
        doc_ids: np.ndarray,
        weights: np.ndarray,
        indptr: np.ndarray,
        lengths: np.ndarray,
    ) -> None:
        self.codes = codes
        self.vocab = vocab
        self.doc_ids = doc_ids
        self.weights = weights
        self.indptr = indptr
        self.lengths = lengths
        n = max(len(codes), 1)
        df = np.diff(indptr)
        self.idf = np.log1p(n / np.maximum(df, 1)).astype(np.float32)
        self.max_idf = float(math.log1p(n))

    @classmethod
    def build(cls, codes: list[str], texts_of: Callable[[str], Iterable[tuple[str, float]]]) -> SearchIndex:
        """Index `codes`; `texts_of(code)` yields (text, weight) pairs, the title first."""
        vocab: dict[str, int] = {}
        tok_ids, doc_ids, weights = array("i"), array("i"), array("f")
        lengths = array("i")
        token_cache: dict[str, list[str]] = {}  # linked titles repeat across codes
        for d, code in enumerate(codes):
            best: dict[str, float] = {}
            title_len = -1
            for text, weight in texts_of(code):
                toks = token_cache.get(text)
                if toks is None:
                    toks = token_cache[text] = search_tokens(text)
                if title_len < 0:
                    title_len = len(toks)  # the first text is the title
                for t in toks:
                    if best.get(t, 0.0) < weight:
                        best[t] = weight
            lengths.append(max(title_len, 0))
            tok_ids.extend([vocab.setdefault(t, len(vocab)) for t in best])
            doc_ids.extend([d] * len(best))
            weights.extend(best.values())
        tok = np.frombuffer(tok_ids, dtype=np.int32)
        order = np.argsort(tok, kind="stable")
        df = np.bincount(tok, minlength=len(vocab))
        return cls(
            codes,
            vocab,
            np.frombuffer(doc_ids, dtype=np.int32)[order],
            np.frombuffer(weights, dtype=np.float32)[order],
            np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
            np.frombuffer(lengths, dtype=np.int32).astype(np.float32),
        )

    def save(self, path: Path) -> None:
        """Write the index as one `.npz` of plain arrays, atomically."""
        words = sorted(self.vocab, key=self.vocab.__getitem__)
        with atomic_write(path, "wb", encoding=None) as fh:
            np.savez(
                fh,
                codes=np.array(self.codes, dtype=str),
                words=np.array(words, dtype=str),
                doc_ids=self.doc_ids,
                weights=self.weights,
                indptr=self.indptr,
                lengths=self.lengths,
            )

    @classmethod
    def load(cls, path: Path) -> SearchIndex | None:
        """Read a saved index; None (and a log line) when the file is missing or damaged."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                codes = [str(c) for c in data["codes"]]
                words = [str(w) for w in data["words"]]
                index = cls(
                    codes,
                    {w: i for i, w in enumerate(words)},
                    data["doc_ids"].astype(np.int32),
                    data["weights"].astype(np.float32),
                    data["indptr"].astype(np.int64),
                    data["lengths"].astype(np.float32),
                )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring damaged search index cache %s (%s); rebuilding", path, exc)
            return None
        if len(index.indptr) != len(words) + 1 or len(index.lengths) != len(codes):
            log.warning("ignoring inconsistent search index cache %s; rebuilding", path)
            return None
        return index

    def query(self, text: str, limit: int) -> list[tuple[str, float]]:
        """Best `limit` codes with scores in (0, 1], best first; [] when no query word is known."""
        words = search_tokens(text)
        if not words or limit <= 0:
            return []
        scores = np.zeros(len(self.codes), dtype=np.float32)
        matched = np.zeros(len(self.codes), dtype=np.float32)
        total = 0.0
        for w in words:
            t = self.vocab.get(w)
            if t is None:
                total += self.max_idf  # an unknown word still counts against coverage
                continue
            lo, hi = self.indptr[t], self.indptr[t + 1]
            docs = self.doc_ids[lo:hi]
            scores[docs] += self.idf[t] * self.weights[lo:hi]
            matched[docs] += 1.0
            total += float(self.idf[t])
        if not scores.any():
            return []
        extra = np.maximum(self.lengths - matched, 0.0)
        final = scores / total / (1.0 + _LENGTH_DAMPING * extra)
        k = min(limit, int(np.count_nonzero(final)))
        top = np.argpartition(-final, k - 1)[:k]
        top = top[np.lexsort((top, -final[top]))]  # by score, ties by code order
        return [(self.codes[i], round(float(final[i]), 4)) for i in top]

"""PLANT's static "brain": mutual information between token presence and label presence (seed 004, App. A.2).

For every (token t, label l) pair the training notes give a 2×2 contingency table of binary presence
(token in the note or not × label on the note or not). From its pmf p(T, L):

    I(T; L) = Σ_{x,y} p(x, y) · log(p(x, y) / (p(x) p(y)))        (natural log; 0·log 0 = 0)
    H_T, H_L = the binary entropies of token and label presence
    brain "jaccard" = I / (H_T + H_L − I)    (the authors' `mutual_info_jaccard`; planted attention S)
    brain "label_entropy" = I / H_L           (saved by the authors as a variant)
    brain "mi" = I                            (the paper's g in App. A.2)

Counts come from one sparse product X^T Y (X: notes × vocabulary presence, Y: notes × labels), computed in
chunks of labels, so memory is O(V × chunk) whatever the number of codes (the authors used chunks of 200).
Only the `top_tokens` best tokens per label are kept (a [C, m] table): planted attention looks at the
top 5 note tokens per label, so the tail of near-zero values never matters, and 9,000 codes × 50k tokens
would otherwise be a 1.8 GB dense matrix. `top_tokens=0` keeps every token (small vocabularies, tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

BrainKind = Literal["jaccard", "label_entropy", "mi"]
_EPS = 1e-15  # as the authors' info_gain.py


def presence_matrix(rows: Sequence[Sequence[int] | np.ndarray], n_cols: int) -> sp.csr_matrix:
    """Binary CSR [len(rows), n_cols]: 1 where the column id occurs in the row (duplicates count once)."""
    indptr = [0]
    cols: list[np.ndarray] = []
    for r in rows:
        u = np.unique(np.asarray(r, dtype=np.int64))
        if u.size and (u[0] < 0 or u[-1] >= n_cols):
            raise ValueError(f"id out of range [0, {n_cols}) in presence matrix")
        cols.append(u)
        indptr.append(indptr[-1] + u.size)
    indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices, np.asarray(indptr)), shape=(len(rows), n_cols))


def _xlogx_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p · log(p / q), 0 where p == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * np.log((p + _EPS) / (q + _EPS))
    return np.where(p > 0, out, 0.0)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy of presence probability p (natural log)."""
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(q > 0, q * np.log(q), 0.0))
    return np.asarray(h)


def mutual_information(
    n11: np.ndarray, n_token: np.ndarray, n_label: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """I(T; L), H_T and H_L from counts. n11 [V, C] notes with both; n_token [V]; n_label [C].

    Returns (I [V, C], H_T [V, 1], H_L [1, C]), float64.
    """
    n = float(n_docs)
    a = np.asarray(n11, dtype=np.float64)
    nt = np.asarray(n_token, dtype=np.float64)[:, None]
    nl = np.asarray(n_label, dtype=np.float64)[None, :]
    pt, pl = nt / n, nl / n
    cells = (  # (joint count, token marginal prob, label marginal prob) for the four cells
        (a, pt, pl),
        (nt - a, pt, 1 - pl),
        (nl - a, 1 - pt, pl),
        (n - nt - nl + a, 1 - pt, 1 - pl),
    )
    mi = sum(_xlogx_ratio(c / n, mt * ml) for c, mt, ml in cells)
    return np.asarray(mi), _entropy(pt), _entropy(pl)


def normalise(kind: BrainKind, mi: np.ndarray, h_token: np.ndarray, h_label: np.ndarray) -> np.ndarray:
    """The brain value for each pair; 0 where the denominator is 0 (a token or label in no note or in all)."""
    if kind == "mi":
        return mi
    den = h_token + h_label - mi if kind == "jaccard" else np.broadcast_to(h_label, mi.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 1e-12, mi / den, 0.0)
    return np.asarray(out)


@dataclass
class Brain:
    """Per label, its best tokens and their brain values: token_ids [C, m], values [C, m] (descending)."""

    token_ids: np.ndarray
    values: np.ndarray
    kind: str

    @property
    def n_labels(self) -> int:
        return int(self.token_ids.shape[0])

    def dense(self, vocab_size: int) -> np.ndarray:
        """[V, C] with zeros outside the kept tokens (small vocabularies and tests only)."""
        out = np.zeros((vocab_size, self.n_labels), dtype=np.float32)
        cols = np.broadcast_to(np.arange(self.n_labels)[:, None], self.token_ids.shape)
        out[self.token_ids, cols] = self.values
        return out


def compute_brain(
    doc_tokens: Sequence[Sequence[int] | np.ndarray],
    doc_labels: Sequence[Sequence[int]],
    vocab_size: int,
    n_labels: int,
    *,
    kind: BrainKind = "jaccard",
    top_tokens: int = 2000,
    label_chunk: int = 200,
    ignore_tokens: Sequence[int] = (0,),
) -> Brain:
    """The brain over training notes, label chunk by label chunk (memory O(V × label_chunk)).

    `ignore_tokens` (padding, unknown) get value 0 and are never among a label's best tokens.
    """
    if len(doc_tokens) != len(doc_labels):
        raise ValueError("doc_tokens and doc_labels differ in length")
    n_docs = len(doc_tokens)
    x = presence_matrix(doc_tokens, vocab_size).tocsc()
    y = presence_matrix(doc_labels, n_labels).tocsc()
    n_token = np.asarray(x.sum(axis=0)).ravel()
    n_label = np.asarray(y.sum(axis=0)).ravel()
    xt = x.T.tocsr()
    m = vocab_size if top_tokens <= 0 else min(top_tokens, vocab_size)
    ids = np.zeros((n_labels, m), dtype=np.int64)
    vals = np.zeros((n_labels, m), dtype=np.float32)
    ignore = np.asarray(list(ignore_tokens), dtype=np.int64)
    for start in range(0, n_labels, label_chunk):
        stop = min(start + label_chunk, n_labels)
        n11 = np.asarray((xt @ y[:, start:stop]).todense())  # [V, chunk]
        mi, ht, hl = mutual_information(n11, n_token, n_label[start:stop], max(n_docs, 1))
        brain = normalise(kind, mi, ht, hl).astype(np.float32)
        if ignore.size:
            brain[ignore] = -np.inf  # never selected; stored as 0 below
        if m < vocab_size:
            top = np.argpartition(-brain, m - 1, axis=0)[:m]  # [m, chunk]
        else:
            top = np.broadcast_to(np.arange(vocab_size)[:, None], brain.shape)
        top_vals = np.take_along_axis(brain, top, axis=0)
        order = np.argsort(-top_vals, axis=0, kind="stable")
        ids[start:stop] = np.take_along_axis(top, order, axis=0).T
        vals[start:stop] = np.take_along_axis(top_vals, order, axis=0).T
    vals[~np.isfinite(vals)] = 0.0
    return Brain(token_ids=ids, values=vals, kind=kind)

"""Rank-based computations on score matrices: ROC-AUC and per-document ranking of gold codes.

Everything here works on a float32 score matrix `scores[N, C]` and a boolean gold matrix `targets[N, C]`
and is vectorised around `np.sort` of 64-bit integer keys (SIMD-sorted, far faster than `argsort`):
a float32 score is mapped to a uint32 whose unsigned order is the float order (`ordered_u32`), and the key
packs "which row / column" in the high bits, so one flat sort plus `np.searchsorted` answers "how many
entries of this row (or column) score below this one" for all gold entries at once.

Conventions
- ROC-AUC is the Mann–Whitney statistic with ties counted as one half, which equals
  `sklearn.metrics.roc_auc_score` (trapezoidal ROC). It is NaN when there is no positive or no negative.
- Ranking is strict: scores descending, equal scores broken by label-space column order (lower column
  first), exactly as a stable sort of `-scores` would order them. Rank 1 is the top-scored code.

"Scopes" are column subsets (boolean masks over C) evaluated together; work shared between scopes is
done once per group of columns that belong to the same scopes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CHUNK_ENTRIES = 2_000_000  # matrix entries per chunk: bounds the temporary uint64 keys to ~16 MB


def ordered_u32(x: np.ndarray) -> np.ndarray:
    """Map float32 values to uint32 so that unsigned integer order equals float order (-0.0 == +0.0)."""
    u = (np.asarray(x, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0
    # Negative floats: flip every bit; others: set the sign bit. Done in place, four cheap passes.
    mask = u >> np.uint32(31)
    np.negative(mask, out=mask)
    mask |= np.uint32(0x80000000)
    mask ^= u
    return mask


def from_ordered_u32(o: np.ndarray) -> np.ndarray:
    """Inverse of `ordered_u32`."""
    o = (np.asarray(o) & 0xFFFFFFFF).astype(np.uint32)
    u = np.where(o >> np.uint32(31), o & np.uint32(0x7FFFFFFF), ~o).astype(np.uint32)
    return u.view(np.float32)


def column_sorted_keys(block: np.ndarray) -> np.ndarray:
    """Sorted keys `(column << 32) | ordered_u32(value)` of a [N, w] block: column by column, ascending.

    Each column is sorted on its own (fast row sorts of the transposed uint32 block); the column index in
    the high bits then makes the flat array globally sorted, ready for one `np.searchsorted`.
    """
    by_col = np.ascontiguousarray(ordered_u32(block).T)
    by_col.sort(axis=1)
    keys = by_col.astype(np.uint64)
    keys |= np.arange(block.shape[1], dtype=np.uint64)[:, None] << np.uint64(32)
    return keys.ravel()


def column_keys(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Keys comparable with `column_sorted_keys` for single values in the given (block-local) columns."""
    return ordered_u32(values).astype(np.uint64) | (columns.astype(np.uint64) << np.uint64(32))


def _column_chunks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    width = max(1, CHUNK_ENTRIES // max(1, n_rows))
    return [(c0, min(n_cols, c0 + width)) for c0 in range(0, n_cols, width)]


def auc_per_code(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column (NaN for a column without both a positive and a negative row)."""
    n, c = scores.shape
    out = np.full(c, np.nan, dtype=np.float64)
    for c0, c1 in _column_chunks(n, c):
        block, gold = scores[:, c0:c1], targets[:, c0:c1]
        n_pos = gold.sum(axis=0)
        keys = column_sorted_keys(block)
        rows, cols = np.nonzero(gold)
        pos_keys = np.sort(column_keys(block[rows, cols], cols))  # sorted needles search faster
        pos_sorted = pos_keys
        col = (pos_keys >> np.uint64(32)).astype(np.int64)
        # Entries of the same column below / at-or-below each positive (keys of earlier columns are all
        # smaller, hence the offsets: col * n for all entries, positives of earlier columns for positives).
        pos_offset = np.concatenate(([0], np.cumsum(n_pos)[:-1]))[col]
        less = np.searchsorted(keys, pos_keys, "left") - col * n
        le = np.searchsorted(keys, pos_keys, "right") - col * n
        pos_less = np.searchsorted(pos_sorted, pos_keys, "left") - pos_offset
        pos_le = np.searchsorted(pos_sorted, pos_keys, "right") - pos_offset
        neg_less, neg_le = less - pos_less, le - pos_le
        u = np.bincount(col, weights=neg_less + 0.5 * (neg_le - neg_less), minlength=c1 - c0)
        n_neg = n - n_pos
        ok = (n_pos > 0) & (n_neg > 0)
        out[c0:c1][ok] = u[ok] / (n_pos[ok].astype(np.float64) * n_neg[ok])
    return out


def _scope_groups(scopes: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[list[int]]]:
    """Split columns into groups with identical scope membership.

    Returns the column indices of each group (groups in no scope are dropped) and, per scope, the list of
    group ids it is the union of.
    """
    signature = np.zeros(len(scopes[0]), dtype=np.int64)
    for s, mask in enumerate(scopes):
        signature |= np.asarray(mask, dtype=np.int64) << s
    groups: list[np.ndarray] = []
    members: list[list[int]] = [[] for _ in scopes]
    for sig in np.unique(signature):
        if sig == 0:
            continue
        groups.append(np.flatnonzero(signature == sig))
        for s in range(len(scopes)):
            if (int(sig) >> s) & 1:
                members[s].append(len(groups) - 1)
    return groups, members


def micro_auc_by_scope(scores: np.ndarray, targets: np.ndarray, scopes: Sequence[np.ndarray]) -> list[float]:
    """Micro ROC-AUC (all entries of the scope's columns raveled) for each scope mask."""
    groups, members = _scope_groups(scopes)
    col_group = np.full(scores.shape[1], -1, dtype=np.int64)
    for g, cols in enumerate(groups):
        col_group[cols] = g
    rr, cc = np.nonzero(targets)
    allpos, pos_group = scores[rr, cc], col_group[cc]
    order = np.argsort(allpos, kind="stable")  # sorted needles make np.searchsorted several times faster
    allpos, pos_group = allpos[order], pos_group[order]
    n_entries = np.array([scores.shape[0] * len(cols) for cols in groups], dtype=np.int64)
    n_pos = np.bincount(pos_group[pos_group >= 0], minlength=len(groups)).astype(np.int64)
    # Per group g and every positive value v (of any group): entries of g below / at-or-below v.
    neg_less = np.zeros((len(groups), len(allpos)), dtype=np.int64)
    neg_le = np.zeros((len(groups), len(allpos)), dtype=np.int64)
    for g, cols in enumerate(groups):
        values = np.take(scores, cols, axis=1).ravel()
        values.sort()
        pos_sorted = np.sort(allpos[pos_group == g])
        neg_less[g] = np.searchsorted(values, allpos, "left") - np.searchsorted(pos_sorted, allpos, "left")
        neg_le[g] = np.searchsorted(values, allpos, "right") - np.searchsorted(pos_sorted, allpos, "right")
        del values
    out: list[float] = []
    for gids in members:
        in_scope = np.isin(pos_group, gids)
        p = int(n_pos[gids].sum())
        neg = int(n_entries[gids].sum()) - p
        if p == 0 or neg == 0:
            out.append(float("nan"))
            continue
        less = neg_less[gids][:, in_scope].sum(axis=0)
        ties = neg_le[gids][:, in_scope].sum(axis=0) - less
        out.append(float((less.sum() + 0.5 * ties.sum()) / (float(p) * float(neg))))
    return out


@dataclass
class DocRanking:
    """Per-document ranking outcome within one scope (arrays of length N documents)."""

    n_gold: np.ndarray  # gold codes of the document in the scope, including extra (unrankable) gold codes
    hits: dict[int, np.ndarray]  # k -> gold codes among the top k
    r_hits: np.ndarray  # gold codes among the top n_gold (R-precision numerator)
    ap: np.ndarray  # average precision (0 where n_gold == 0)
    has_output: np.ndarray  # False where the model output no ranked list for the document


def rank_gold_by_scope(
    scores: np.ndarray,
    targets: np.ndarray,
    scopes: Sequence[np.ndarray],
    ks: Sequence[int],
    *,
    extra_gold: Sequence[np.ndarray | None] | None = None,
    depths: Sequence[int | None] | None = None,
    has_output: np.ndarray | None = None,
) -> list[DocRanking]:
    """Rank every scope's codes per document and return where the gold codes land.

    AP of a document is the trec_eval / CodiEsp definition over the ranked list of the scope's codes, cut at
    the scope's depth (None = the full list): AP = (1/|gold|) Σ_{ranks k <= depth holding a gold code} P@k.
    `extra_gold[s]` [N] counts gold codes the scope cannot rank (outside the label space): they add to |gold|
    (AP, R@k and R-precision denominators) and never hit. Documents with `has_output` False have no ranked
    list: no hits, AP 0.
    """
    n, c = scores.shape
    extra = list(extra_gold) if extra_gold is not None else [None] * len(scopes)
    cut = list(depths) if depths is not None else [None] * len(scopes)
    output = np.ones(n, bool) if has_output is None else np.asarray(has_output, bool)
    groups, members = _scope_groups(scopes)
    col_group = np.full(c, -1, dtype=np.int64)
    for g, cols in enumerate(groups):
        col_group[cols] = g
    col_bits = max(1, (c - 1).bit_length())
    row_bits = 64 - 32 - col_bits
    rows_per_chunk = int(min(1 << row_bits, max(1, CHUNK_ENTRIES // max(1, c))))
    out = [
        DocRanking(
            n_gold=np.zeros(n, np.int64),
            hits={k: np.zeros(n, np.int64) for k in ks},
            r_hits=np.zeros(n, np.int64),
            ap=np.zeros(n, np.float64),
            has_output=output,
        )
        for _ in scopes
    ]
    shift_val, shift_row = np.uint64(col_bits), np.uint64(32 + col_bits)
    for r0 in range(0, n, rows_per_chunk):
        r1 = min(n, r0 + rows_per_chunk)
        block, gold = scores[r0:r1], targets[r0:r1]
        rr, cc = np.nonzero(gold)  # row-major: gold entries grouped by row
        gold_keys = (
            (rr.astype(np.uint64) << shift_row)
            | ((~ordered_u32(block[rr, cc])).astype(np.uint64) << shift_val)
            | cc.astype(np.uint64)
        )
        # above[g, i]: codes of group g ranked above gold entry i in its row.
        above = np.zeros((len(groups), len(rr)), dtype=np.int64)
        local_rows = np.arange(r1 - r0, dtype=np.uint64)[:, None]
        for g, cols in enumerate(groups):
            desc = ordered_u32(np.take(block, cols, axis=1))
            np.invert(desc, out=desc)
            keys = desc.astype(np.uint64)
            keys <<= shift_val
            keys |= cols.astype(np.uint64)[None, :]
            keys |= local_rows << shift_row
            keys = keys.ravel()
            keys.sort()
            above[g] = np.searchsorted(keys, gold_keys, "left") - rr * len(cols)
        for s, gids in enumerate(members):
            sel = np.isin(col_group[cc], gids)
            rows = rr[sel]
            rank = above[gids][:, sel].sum(axis=0) + 1
            res = out[s]
            n_ranked = np.bincount(rows, minlength=r1 - r0)
            n_gold = n_ranked + (0 if extra[s] is None else np.asarray(extra[s], np.int64)[r0:r1])
            res.n_gold[r0:r1] = n_gold
            # documents without output rank nothing: drop their gold entries from the hit counts
            live = output[r0:r1][rows]
            rows, rank = rows[live], rank[live]
            for k in ks:
                res.hits[k][r0:r1] = np.bincount(rows[rank <= k], minlength=r1 - r0)
            res.r_hits[r0:r1] = np.bincount(rows[rank <= n_gold[rows]], minlength=r1 - r0)
            order = np.lexsort((rank, rows))
            rows, rank = rows[order], rank[order]
            first = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=r1 - r0))[:-1]))
            position = np.arange(len(rows)) - first[rows] + 1  # i-th gold code in rank order
            within = rank <= cut[s] if cut[s] is not None else np.ones(len(rank), bool)
            ap_sum = np.bincount(rows[within], weights=(position / rank)[within], minlength=r1 - r0)
            res.ap[r0:r1] = np.divide(ap_sum, n_gold, out=np.zeros(r1 - r0), where=n_gold > 0)
    return out


def ranking_summary(
    ranking: DocRanking, ks: Sequence[int], *, drop_docs_without_gold: bool, predicted_only_map: bool = False
) -> Mapping[str, float]:
    """Average the per-document ranking outcome into P@k, R@k, R-precision and MAP.

    Documents without gold codes are always skipped for R@k, R-precision and MAP (they are undefined);
    for P@k they count (as 0) unless `drop_docs_without_gold`. Documents without output count (as 0).
    `predicted_only_map` adds `map_predicted_notes`: MAP over the documents that have an output only (the
    CodiEsp script's mean over the documents present in the prediction file).
    """
    has_gold = ranking.n_gold > 0
    n_ranked = int(has_gold.sum())
    res: dict[str, float] = {"n_docs_ranked": float(n_ranked)}
    p_docs = has_gold if drop_docs_without_gold else np.ones_like(has_gold)
    for k in ks:
        res[f"p@{k}"] = float(ranking.hits[k][p_docs].mean() / k) if p_docs.any() else float("nan")
    for k in ks:
        res[f"r@{k}"] = _mean(ranking.hits[k][has_gold] / ranking.n_gold[has_gold])
    res["r_precision"] = _mean(ranking.r_hits[has_gold] / ranking.n_gold[has_gold])
    res["map"] = _mean(ranking.ap[has_gold])
    if predicted_only_map:
        res["map_predicted_notes"] = _mean(ranking.ap[has_gold & ranking.has_output])
    return res


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")

"""Candidate generation: the union of every source's top-K codes per note, and how much gold it keeps.

A source's output for one note is a `SourceRanking`: code key -> score (higher = more likely), already
restricted to its top K codes, plus optional per-code side features (the matcher's coverage, negation cue,
...). The union keeps a deterministic order (best rank over the sources, then key), so the same inputs
always give the same candidate list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from icdcoder.errors import DataError


@dataclass
class SourceRanking:
    """One source's top codes for one note."""

    scores: dict[str, float] = field(default_factory=dict)  # code key -> score, at most K entries
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # code key -> side features
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # code key -> evidence spans

    def ranks(self) -> dict[str, int]:
        """1-based rank of each code (ties broken by key, for determinism)."""
        order = sorted(self.scores, key=lambda k: (-self.scores[k], k))
        return {k: r for r, k in enumerate(order, 1)}


def top_k_rows(probs: np.ndarray, keys: Sequence[str], k: int, min_score: float = 0.0) -> list[SourceRanking]:
    """Top-k codes of every row of a dense [N, C] score matrix (scores <= min_score are dropped, so an
    empty source stays empty)."""
    if probs.ndim != 2 or probs.shape[1] != len(keys):
        raise DataError(f"score matrix of shape {probs.shape} does not match {len(keys)} code keys.")
    k = min(k, probs.shape[1])
    out = []
    for row in probs:
        idx = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        out.append(SourceRanking({keys[i]: float(row[i]) for i in idx if row[i] > min_score}))
    return out


def truncate(ranking: SourceRanking, k: int) -> SourceRanking:
    """The top-k part of a ranking (features kept for the codes that remain)."""
    keep = sorted(ranking.scores, key=lambda c: (-ranking.scores[c], c))[:k]
    return SourceRanking(
        {c: ranking.scores[c] for c in keep},
        {c: ranking.features[c] for c in keep if c in ranking.features},
        {c: ranking.spans[c] for c in keep if c in ranking.spans},
    )


def union_candidates(per_source: Mapping[str, SourceRanking], max_candidates: int | None = None) -> list[str]:
    """Union of the sources' codes for one note, ordered by best rank over the sources, then by how many
    sources propose the code, then key; cut to `max_candidates` if given."""
    best: dict[str, tuple[int, int]] = {}
    for ranking in per_source.values():
        for code, rank in ranking.ranks().items():
            r, n = best.get(code, (1 << 30, 0))
            best[code] = (min(r, rank), n + 1)
    order = sorted(best, key=lambda c: (best[c][0], -best[c][1], c))
    return order if max_candidates is None else order[:max_candidates]


@dataclass
class RecallReport:
    """Share of gold codes found among candidates, overall and for zero-/few-shot codes."""

    n_gold: int
    found: int
    n_zero_shot: int
    found_zero_shot: int
    n_few_shot: int
    found_few_shot: int
    mean_candidates: float

    def as_dict(self) -> dict[str, float]:
        def div(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "recall": div(self.found, self.n_gold),
            "recall_zero_shot": div(self.found_zero_shot, self.n_zero_shot),
            "recall_few_shot": div(self.found_few_shot, self.n_few_shot),
            "n_gold": float(self.n_gold),
            "n_zero_shot": float(self.n_zero_shot),
            "n_few_shot": float(self.n_few_shot),
            "mean_candidates": self.mean_candidates,
        }


def candidate_recall(
    candidates: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    train_counts: Mapping[str, int],
    few_shot_max: int = 5,
) -> RecallReport:
    """Recall of the gold (note, code) pairs by the candidate lists. Zero-shot: codes never in training;
    few-shot: 1..`few_shot_max` training occurrences."""
    if len(candidates) != len(gold):
        raise DataError(f"{len(candidates)} candidate lists for {len(gold)} notes.")
    n = f = nz = fz = nf = ff = 0
    for cands, golds in zip(candidates, gold, strict=True):
        cset = set(cands)
        for code in set(golds):
            hit = code in cset
            count = train_counts.get(code, 0)
            n, f = n + 1, f + hit
            if count == 0:
                nz, fz = nz + 1, fz + hit
            elif count <= few_shot_max:
                nf, ff = nf + 1, ff + hit
    mean = float(np.mean([len(c) for c in candidates])) if candidates else 0.0
    return RecallReport(n, f, nz, fz, nf, ff, mean)


def ranked_map(rankings: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    """The CodiEsp organisers' MAP of ranked code lists: per note, AP = Σ over ranks k holding a gold code
    of (gold codes within the top k) / k, divided by the number of gold codes (gold codes never ranked
    score 0); the mean over notes with at least one gold code. Repeated codes keep their first rank."""
    aps = []
    for ranked, golds in zip(rankings, gold, strict=True):
        gset = set(golds)
        if not gset:
            continue
        hits, total = 0, 0.0
        for rank, code in enumerate(dict.fromkeys(ranked), 1):
            if code in gset:
                hits += 1
                total += hits / rank
        aps.append(total / len(gset))
    return float(np.mean(aps)) if aps else float("nan")

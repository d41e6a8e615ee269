"""Quantification: each code's prevalence in a collection of notes, not which notes have it (Gomes et al.,
EACL 2024, §quantification; `Scripts/quantification.py`, `Helpers/quant_helpers.py`; SEED_NOTES §4.4).

Estimators, per code, from the model's (calibrated) probabilities p [N, C] and decisions d [N, C]:

- `cc`    classify and count: mean of the decisions (the model's dev-tuned thresholds; the seed used 0.5).
- `pcc`   probabilistic classify and count: mean probability.
- `acc`   adjusted CC (Forman 2008): (CC − fpr) / (tpr − fpr), clipped to [0, 1], with the decisions' true
          and false positive rates estimated on dev. Where dev cannot tell them apart (tpr − fpr ≤ 0.01, or
          a code without dev positives or negatives) it falls back to CC.
- `pacc`  probabilistic ACC (Bella et al. 2010): (PCC − p̄⁺) / (p̄⁺ − p̄⁻), with p̄⁺ / p̄⁻ the mean probability of
          the dev positives / negatives; same clipping and fall-back (to PCC).
- `mlp`   the seed's MLP quantifier (models/quantifier.py) maps the PCC vector to prevalences.

Intervals: a percentile bootstrap over the collection's notes (`n_boot` resamples, seeded), i.e. how much
the estimate depends on which notes happened to be in the collection. The dev rates of ACC/PACC are taken
as exact (their own uncertainty is not propagated).

Errors, as the seed computes them (per sample, averaged over codes, then over samples):
- AE  = |p̂ − p|;
- RAE = ½ (|p̂ − p| / p + |p̂ − p| / (1 − p)) with both smoothed as p ← (ε + p)/(2ε + 1), ε = 1/(2|S|) for a
  sample of |S| notes (the binary relative absolute error of both classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.thresholds import as_numpy

METHODS: tuple[str, ...] = ("cc", "pcc", "acc", "pacc")
ADJUST_MIN_GAP = 0.01  # below this tpr − fpr the adjustment divides by noise: fall back to CC / PCC


@dataclass(frozen=True)
class QuantStats:
    """Per-code rates measured on dev, what ACC and PACC need."""

    tpr: list[float]  # P(d = 1 | y = 1)
    fpr: list[float]  # P(d = 1 | y = 0)
    ptpr: list[float]  # mean probability of the dev positives
    pfpr: list[float]  # mean probability of the dev negatives
    n_pos: list[int]
    n_neg: list[int]
    fit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tpr": self.tpr,
            "fpr": self.fpr,
            "ptpr": self.ptpr,
            "pfpr": self.pfpr,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "fit": self.fit,
        }

    @classmethod
    def from_dict(cls, raw: Any, n_codes: int, source: str = "quantification.json") -> QuantStats:
        keys = ("tpr", "fpr", "ptpr", "pfpr", "n_pos", "n_neg")
        if not isinstance(raw, dict) or any(not isinstance(raw.get(k), list) for k in keys):
            raise ModelDirError(f"quantification statistics lack one of {', '.join(keys)}.", path=source)
        if any(len(raw[k]) != n_codes for k in keys):
            raise ModelDirError(
                f"quantification statistics are for another label space (expected {n_codes} codes).",
                path=source,
                fix="recompute them with `icdcoder quantify ... --data DATA --save-stats`.",
            )
        rates = {k: [float(v) for v in raw[k]] for k in keys[:4]}
        return cls(
            tpr=rates["tpr"],
            fpr=rates["fpr"],
            ptpr=rates["ptpr"],
            pfpr=rates["pfpr"],
            n_pos=[int(v) for v in raw["n_pos"]],
            n_neg=[int(v) for v in raw["n_neg"]],
            fit=dict(raw.get("fit", {})),
        )


def fit_quant_stats(probs: Any, decisions: Any, targets: Any) -> QuantStats:
    """Dev rates per code from calibrated probabilities, decisions and 0/1 targets, all [N, C]."""
    p = as_numpy(probs, np.float64)
    d = as_numpy(decisions).astype(np.float64)
    y = as_numpy(targets).astype(bool)
    if not (p.shape == d.shape == y.shape) or p.ndim != 2:
        raise ValueError(
            f"probs, decisions and targets must be [N, C] alike, got {p.shape}, {d.shape}, {y.shape}"
        )
    n_pos = y.sum(0)
    n_neg = (~y).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(n_pos > 0, (d * y).sum(0) / n_pos, np.nan)
        fpr = np.where(n_neg > 0, (d * ~y).sum(0) / n_neg, np.nan)
        ptpr = np.where(n_pos > 0, (p * y).sum(0) / n_pos, np.nan)
        pfpr = np.where(n_neg > 0, (p * ~y).sum(0) / n_neg, np.nan)
    return QuantStats(
        [float(v) for v in tpr],
        [float(v) for v in fpr],
        [float(v) for v in ptpr],
        [float(v) for v in pfpr],
        [int(v) for v in n_pos],
        [int(v) for v in n_neg],
        {"notes": float(p.shape[0])},
    )


def adjust(raw: np.ndarray, tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """(raw − fpr) / (tpr − fpr) clipped to [0, 1]; `raw` itself where the rates are missing or too close."""
    tpr, fpr = np.asarray(tpr, dtype=np.float64), np.asarray(fpr, dtype=np.float64)
    gap = tpr - fpr
    ok = np.isfinite(gap) & (gap > ADJUST_MIN_GAP)
    with np.errstate(invalid="ignore", divide="ignore"):
        adjusted = np.clip((raw - fpr) / np.where(ok, gap, 1.0), 0.0, 1.0)
    return np.where(ok, adjusted, raw)


def point_estimates(
    probs: np.ndarray, decisions: np.ndarray, stats: QuantStats | None, methods: Sequence[str]
) -> dict[str, np.ndarray]:
    """Prevalence [C] per method for probabilities / decisions [N, C] (ACC/PACC need `stats`)."""
    cc = decisions.mean(0)
    pcc = probs.mean(0)
    out: dict[str, np.ndarray] = {}
    for m in methods:
        if m == "cc":
            out[m] = cc
        elif m == "pcc":
            out[m] = pcc
        elif m in ("acc", "pacc"):
            if stats is None:
                raise ValueError(f"{m} needs dev statistics (tpr/fpr); fit them with fit_quant_stats.")
            out[m] = (
                adjust(cc, np.asarray(stats.tpr), np.asarray(stats.fpr))
                if m == "acc"
                else adjust(pcc, np.asarray(stats.ptpr), np.asarray(stats.pfpr))
            )
        else:
            raise ValueError(f"unknown quantification method {m!r}; use {', '.join(METHODS)}.")
    return out


@dataclass
class Estimate:
    """One method's prevalence per code with a bootstrap interval."""

    value: np.ndarray  # [C]
    low: np.ndarray
    high: np.ndarray


def estimate_prevalence(
    probs: Any,
    decisions: Any,
    stats: QuantStats | None = None,
    methods: Sequence[str] = METHODS,
    *,
    extra: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each method's prevalence per code in this collection, with a `level` percentile bootstrap interval
    over its notes (see the module docstring). `extra`: name → a map from the PCC vector [C] to prevalences
    (the MLP quantifier)."""
    p = as_numpy(probs, np.float64)
    d = as_numpy(decisions).astype(np.float64)
    if p.ndim != 2 or p.shape != d.shape or p.shape[0] == 0:
        raise ValueError(f"need probabilities and decisions [N ≥ 1, C] alike, got {p.shape} and {d.shape}")
    extra = extra or {}

    def all_estimates(pp: np.ndarray, dd: np.ndarray) -> dict[str, np.ndarray]:
        est = point_estimates(pp, dd, stats, methods)
        pcc = pp.mean(0)
        est.update({name: np.asarray(fn(pcc), dtype=np.float64) for name, fn in extra.items()})
        return est

    point = all_estimates(p, d)
    rng = np.random.default_rng(seed)
    n = p.shape[0]
    boots: dict[str, list[np.ndarray]] = {m: [] for m in point}
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        for m, v in all_estimates(p[idx], d[idx]).items():
            boots[m].append(v)
    alpha = (1.0 - level) / 2
    out = {}
    for m in point:
        if n_boot:
            lo, hi = np.quantile(np.stack(boots[m]), [alpha, 1 - alpha], axis=0)
        else:
            lo = hi = point[m]
        out[m] = Estimate(point[m], np.minimum(lo, point[m]), np.maximum(hi, point[m]))
    return out


# -- errors --------------------------------------------------------------------------------------------------
def smooth(p: np.ndarray, sample_size: int) -> np.ndarray:
    """The seed's smoothing (ε + p)/(2ε + 1) with ε = 1/(2·sample_size)."""
    eps = 1.0 / (2.0 * sample_size)
    return (eps + np.asarray(p, dtype=np.float64)) / (2.0 * eps + 1.0)


def absolute_error(true: Any, est: Any) -> float:
    """Mean over codes of |p̂ − p| for one sample."""
    return float(np.mean(np.abs(np.asarray(est, np.float64) - np.asarray(true, np.float64))))


def relative_absolute_error(true: Any, est: Any, sample_size: int) -> float:
    """Mean over codes of ½(|p̂ − p|/p + |p̂ − p|/(1 − p)), both smoothed for a sample of `sample_size`."""
    p = smooth(np.asarray(true, np.float64), sample_size)
    q = smooth(np.asarray(est, np.float64), sample_size)
    return float(np.mean(0.5 * (np.abs(q - p) / p + np.abs(q - p) / (1.0 - p))))


def random_subsets(n: int, count: int, seed: int = 0, min_size: int = 1) -> list[np.ndarray]:
    """`count` random samples of notes, each of a size drawn uniformly in [min_size, n] (the seed's
    protocol: 5,000 samples of val to train the MLP, 1,000 of test to evaluate), without replacement."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=int(rng.integers(min_size, n + 1)), replace=False) for _ in range(count)]


def evaluate_quantifiers(
    probs: Any,
    decisions: Any,
    targets: Any,
    samples: Sequence[np.ndarray],
    stats: QuantStats | None = None,
    methods: Sequence[str] = METHODS,
    extra: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean AE and RAE of each method over `samples` (index arrays into the notes). `extra`: name → a
    function mapping a sample's PCC vector [C] to prevalences [C] (the MLP quantifier)."""
    p = as_numpy(probs, np.float64)
    d = as_numpy(decisions).astype(np.float64)
    y = as_numpy(targets).astype(np.float64)
    names = [*methods, *(extra or {})]
    ae: dict[str, list[float]] = {m: [] for m in names}
    rae: dict[str, list[float]] = {m: [] for m in names}
    for s in samples:
        true = y[s].mean(0)
        est = point_estimates(p[s], d[s], stats, methods)
        for name, fn in (extra or {}).items():
            est[name] = np.asarray(fn(p[s].mean(0)), dtype=np.float64)
        for m in names:
            ae[m].append(absolute_error(true, est[m]))
            rae[m].append(relative_absolute_error(true, est[m], len(s)))
    return {m: {"ae": float(np.mean(ae[m])), "rae": float(np.mean(rae[m]))} for m in names}

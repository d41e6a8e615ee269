"""Post-hoc probability calibration fitted on dev, and calibration metrics (ECE, per-code ECE, Brier).

A model's sigmoid outputs are scores first: trained with BCE on rare codes and selected on a ranking metric,
they are usually over- or under-confident. A `Calibrator` maps a probability p to σ(a·logit(p) + b):

- `none`         a = 1, b = 0 (identity; the stored probabilities are the model's own).
- `temperature`  a = 1/T, b = 0, one T for all codes (Guo et al., 2017), T minimising dev BCE.
- `platt`        a > 0 and b for all codes (Platt, 1999), minimising dev BCE.
- `platt_per_code`  the global Platt map, replaced by a code's own (a_c, b_c) for every code with at least
                 `min_positives` dev positives and as many negatives, when that map lowers the code's own
                 dev BCE (an option: the per-code maps differ, so rankings within a note can change).

Both fitted maps are strictly increasing, so every ranking metric and AUC is unchanged and a global threshold
tuned after calibration makes the same dev decisions as one tuned before; only the probabilities a user reads
change. One map is shared by all codes because most codes have a handful of dev positives (a per-code fit
would overfit them). Fitting uses the dev split, like threshold tuning: test is never read.

Metrics (update/compute, batch by batch; bins are [k/n, (k+1)/n) with p = 1 in the last bin, L1 norm, as
torchmetrics' `CalibrationError(n_bins=20, norm="l1")` that MSAM used):

- `ece`    expected calibration error of all (document, code) probabilities pooled:
           Σ_bins (n_bin / N) · |mean p − mean y| over the bin.
- `mece`   mean over every code of the label space of that code's binary ECE (MSAM's "mece"; the seed's
           code averaged only the first 50 classes, a bug not reproduced here).
- `brier`  mean of (p − y)² over all documents × codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.thresholds import as_numpy

CalibrationMethod = Literal["none", "temperature", "platt", "platt_per_code"]
METHODS: tuple[str, ...] = ("none", "temperature", "platt", "platt_per_code")
PER_CODE_MIN_POSITIVES = 20  # dev positives (and negatives) a code needs for its own Platt map
DEFAULT_BINS = 20
METRIC_KEYS: tuple[str, ...] = ("ece", "mece", "brier")  # what `CalibrationMetrics.compute` returns
# Probabilities are clipped this far from 0 and 1 before taking logits (float32 sigmoids saturate at 1.0).
_EPS = 1e-12
# A fit reads at most this many (document, code) entries, sampled with a fixed seed: it bounds memory at
# MIMIC-III full scale (3,372 dev notes × 8,921 codes = 30 M entries) and changes T by far less than its
# run-to-run spread.
MAX_FIT_ENTRIES = 8_000_000


def _logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits z against 0/1 targets y."""
    return float(-np.mean(np.where(y, log_expit(z), log_expit(-z))))


@dataclass(frozen=True)
class Calibrator:
    """p ↦ σ(slope · logit(p) + intercept); stored as calibration.json in the model directory."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    fit: dict[str, float] = field(default_factory=dict)  # what it was fitted on, dev BCE before/after
    # platt_per_code: (a_c, b_c) per code in label order; the global (slope, intercept) where not fitted
    slopes: list[float] | None = None
    intercepts: list[float] | None = None

    @property
    def temperature(self) -> float:
        return 1.0 / self.slope

    def apply(self, probs: Any) -> np.ndarray:
        """Calibrated float32 probabilities of the same shape."""
        p = as_numpy(probs, np.float32)
        if self.method == "none":
            return p
        if self.slopes is not None and self.intercepts is not None:
            if p.shape[-1] != len(self.slopes):
                raise ValueError(
                    f"per-code calibration for {len(self.slopes)} codes applied to {p.shape[-1]}."
                )
            a, b = np.asarray(self.slopes), np.asarray(self.intercepts)
            return expit(a * _logit(p) + b).astype(np.float32)
        return expit(self.slope * _logit(p) + self.intercept).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "slope": self.slope,
            "intercept": self.intercept,
            "fit": self.fit,
        }
        if self.slopes is not None:
            out["slopes"], out["intercepts"] = self.slopes, self.intercepts
        return out

    @classmethod
    def from_dict(cls, raw: Any, source: str = "calibration.json") -> Calibrator:
        if not isinstance(raw, dict) or raw.get("method") not in METHODS:
            raise ModelDirError(
                f"calibration has no valid method (expected one of {', '.join(METHODS)}).", path=source
            )
        try:
            slope, intercept = float(raw.get("slope", 1.0)), float(raw.get("intercept", 0.0))
        except (TypeError, ValueError):
            raise ModelDirError("calibration slope/intercept are not numbers.", path=source) from None
        if not (np.isfinite(slope) and np.isfinite(intercept) and slope > 0):
            raise ModelDirError(
                f"calibration needs a finite positive slope and finite intercept (got {slope}, {intercept}).",
                path=source,
            )
        fit = {str(k): float(v) for k, v in dict(raw.get("fit", {})).items()}
        if raw["method"] != "platt_per_code":
            return cls(str(raw["method"]), slope, intercept, fit)
        try:
            slopes = [float(v) for v in raw["slopes"]]
            intercepts = [float(v) for v in raw["intercepts"]]
        except (KeyError, TypeError, ValueError):
            raise ModelDirError("per-code calibration lacks its slopes/intercepts.", path=source) from None
        ok = len(slopes) == len(intercepts) and all(np.isfinite(slopes)) and all(np.isfinite(intercepts))
        if not ok or min(slopes, default=1.0) <= 0:
            raise ModelDirError(
                "per-code calibration needs finite positive slopes, one per code.", path=source
            )
        return cls("platt_per_code", slope, intercept, fit, slopes, intercepts)


def _fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a > 0, b) minimising the mean BCE of σ(a·z + b) against 0/1 targets y."""
    yf = y.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta[0]), theta[1]
        u = a * z + b
        r = expit(u) - yf  # d BCE / d u
        return _bce(u, y), np.array([float(np.mean(r * z)) * a, float(np.mean(r))])

    res = minimize(objective, np.zeros(2), jac=True, method="L-BFGS-B")
    return float(np.exp(res.x[0])), float(res.x[1])


def fit_calibrator(
    probs: Any,
    targets: Any,
    method: str = "temperature",
    *,
    seed: int = 0,
    min_positives: int = PER_CODE_MIN_POSITIVES,
) -> Calibrator:
    """Fit `method` on (dev) probabilities [N, C] and 0/1 targets [N, C] by minimising mean BCE."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "platt_per_code":
        return _fit_per_code(probs, targets, seed, min_positives)
    p = as_numpy(probs, np.float32).ravel()
    y = as_numpy(targets).astype(bool).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probs and targets differ in size ({p.size} vs {y.size}).")
    if method == "none" or p.size == 0 or y.all() or not y.any():
        # nothing to fit on (no dev positives or no negatives): keep the model's probabilities
        return Calibrator("none", fit={"entries": float(p.size)})
    if p.size > MAX_FIT_ENTRIES:
        pick = np.random.default_rng(seed).choice(p.size, MAX_FIT_ENTRIES, replace=False)
        p, y = p[pick], y[pick]
    z = _logit(p)
    before = _bce(z, y)
    if method == "temperature":
        # BCE is convex in the slope; search log-slope so T stays positive.
        res = minimize_scalar(lambda s: _bce(np.exp(s) * z, y), bounds=(-7.0, 7.0), method="bounded")
        slope, intercept = float(np.exp(res.x)), 0.0
    else:
        slope, intercept = _fit_platt(z, y)
    after = _bce(slope * z + intercept, y)
    if after > before:  # never worse on dev than the identity
        return Calibrator("none", fit={"entries": float(p.size), "dev_bce": before})
    return Calibrator(
        method, slope, intercept, {"entries": float(p.size), "dev_bce_before": before, "dev_bce_after": after}
    )


def _fit_per_code(probs: Any, targets: Any, seed: int, min_positives: int) -> Calibrator:
    """The global Platt map, then a code's own map where it has `min_positives` dev positives and
    negatives and its own map lowers that code's dev BCE."""
    p = as_numpy(probs, np.float32)
    y = as_numpy(targets).astype(bool)
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(
            f"per-code calibration needs probs and targets [N, C] alike, got {p.shape}, {y.shape}."
        )
    glob = fit_calibrator(p, y, "platt", seed=seed)
    a0, b0 = glob.slope, glob.intercept
    slopes, intercepts = [a0] * p.shape[1], [b0] * p.shape[1]
    n_pos = y.sum(0)
    fitted = 0
    for j in np.flatnonzero((n_pos >= min_positives) & (p.shape[0] - n_pos >= min_positives)):
        z, yj = _logit(p[:, j]), y[:, j]
        a, b = _fit_platt(z, yj)
        if _bce(a * z + b, yj) < _bce(a0 * z + b0, yj):
            slopes[j], intercepts[j] = a, b
            fitted += 1
    fit = {**glob.fit, "codes_own_map": float(fitted), "min_positives": float(min_positives)}
    return Calibrator("platt_per_code", a0, b0, fit, slopes, intercepts)


class CalibrationMetrics:
    """ECE, mean per-code ECE and Brier score, accumulated batch by batch (memory: codes × bins)."""

    def __init__(self, n_codes: int, n_bins: int = DEFAULT_BINS) -> None:
        self.n_codes, self.n_bins = n_codes, n_bins
        self.reset()

    def reset(self) -> None:
        shape = (self.n_codes, self.n_bins)
        self._count = np.zeros(shape, dtype=np.float64)
        self._sum_p = np.zeros(shape, dtype=np.float64)
        self._sum_y = np.zeros(shape, dtype=np.float64)
        self._sq = 0.0
        self._n = 0

    def update(self, probs: Any, targets: Any) -> None:
        p = as_numpy(probs, np.float32)
        y = as_numpy(targets).astype(np.float64)
        if p.ndim != 2 or p.shape[1] != self.n_codes or p.shape != y.shape:
            raise ValueError(
                f"expected probs and targets of shape [N, {self.n_codes}], got {p.shape} and {y.shape}."
            )
        b = np.minimum((p.astype(np.float64) * self.n_bins).astype(np.int64), self.n_bins - 1)
        flat = (np.arange(self.n_codes, dtype=np.int64)[None, :] * self.n_bins + b).ravel()
        size = self.n_codes * self.n_bins
        self._count += np.bincount(flat, minlength=size).reshape(self._count.shape)
        self._sum_p += np.bincount(flat, weights=p.ravel().astype(np.float64), minlength=size).reshape(
            self._count.shape
        )
        self._sum_y += np.bincount(flat, weights=y.ravel(), minlength=size).reshape(self._count.shape)
        self._sq += float(np.sum((p - y) ** 2))
        self._n += p.shape[0]

    @staticmethod
    def _ece(count: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray) -> np.ndarray:
        """ECE along the last axis (bins): Σ |Σp − Σy| / Σcount, i.e. Σ (n_b/N)·|mean p − mean y|."""
        total = count.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(sum_p - sum_y).sum(-1) / total

    def compute(self) -> dict[str, float]:
        if self._n == 0 or self.n_codes == 0:
            return dict.fromkeys(METRIC_KEYS, float("nan"))
        pooled = self._ece(self._count.sum(0), self._sum_p.sum(0), self._sum_y.sum(0))
        per_code = self._ece(self._count, self._sum_p, self._sum_y)
        return {
            "ece": float(pooled),
            "mece": float(np.mean(per_code)),
            "brier": self._sq / (self._n * self.n_codes),
        }


def calibration_metrics(probs: Any, targets: Any, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """`ece`, `mece` and `brier` of probabilities [N, C] against 0/1 targets [N, C] in one call."""
    p = as_numpy(probs, np.float32)
    m = CalibrationMetrics(p.shape[1] if p.ndim == 2 else 0, n_bins)
    if p.ndim == 2 and p.shape[0]:
        m.update(p, targets)
    return m.compute()

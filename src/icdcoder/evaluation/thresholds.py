"""Decision thresholds: exact micro-F1 tuning on dev, per-code tuning, and the saved `Thresholds` object.

Decision rule, everywhere in icdcoder: a code is predicted when `float32(prob) >= threshold`. Scores are
compared in float32 (the dtype models produce), and every tuned threshold is a float32-representable value,
so a threshold read back from JSON reproduces the dev decisions bit for bit.

Exact sweep. With P gold positives, predicting every score >= t gives F1(t) = 2·TP(t) / (#predicted(t) + P).
Between two consecutive distinct *positive* scores TP is constant while #predicted only grows as t falls,
so the optimum is attained with t just at or below some positive's score v: it suffices to evaluate every
distinct positive score v, with #predicted = #scores >= v and TP = #positive scores >= v, which two sorts
and binary searches give in O(N log N) for N = docs × codes. Among equal optima the highest cut wins
(fewest predicted codes). The threshold returned for the winning cut v is the midpoint between v and the
next lower distinct score (any score, positive or not), so it has the same dev decisions as `>= v` but a
margin on both sides; if no score is below v (predict everything) it is v itself. With no positive at all
the `default` threshold is returned.

Per-code thresholds apply the same sweep to each code's column; codes without a positive in dev keep the
global threshold (they are simply absent from `per_code`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np

from icdcoder.errors import DataError, ModelDirError
from icdcoder.evaluation import ranking
from icdcoder.evaluation.ranking import column_keys, column_sorted_keys, from_ordered_u32
from icdcoder.io import read_json, write_json

ThresholdKind = Literal["global", "per_code"]
_KINDS = ("global", "per_code")


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array from a numpy array, list or torch tensor (detached, moved to CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 / float16 have no numpy view
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _cuts_between(values: np.ndarray, lowers: np.ndarray) -> np.ndarray:
    """Float32 thresholds t with lower < t <= value: the midpoint, or `value` where rounding collapses it
    or where there is no lower score (`lowers` NaN)."""
    v = np.asarray(values, dtype=np.float32)
    lo = np.asarray(lowers, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        mid = ((lo.astype(np.float64) + v) / 2.0).astype(np.float32)
        ok = (lo < mid) & (mid <= v)  # False where lo is NaN
    return np.where(ok, mid, v)


@dataclass(frozen=True)
class SweepResult:
    """The best cut found by an exact sweep."""

    threshold: float
    f1: float


def tune_global_threshold(
    probs: Any, targets: Any, *, default: float = 0.5, extra_gold: int = 0
) -> SweepResult:
    """The threshold maximising micro-F1 of `probs >= t` against `targets` (exact sweep, see module doc).

    `extra_gold` gold codes that no column can predict (outside the label space) count as misses: they add to
    the F1 denominator, which moves the optimum (the headline micro-F1 counts them)."""
    scores = as_numpy(probs, np.float32)
    gold = as_numpy(targets).astype(bool)
    _check_pair(scores, gold)
    pos = np.sort(scores[gold], axis=None)
    n_pos = len(pos)
    if n_pos == 0:
        return SweepResult(float(np.float32(default)), 0.0)
    allv = np.sort(scores, axis=None)
    cand = np.unique(pos)  # ascending distinct positive scores
    n_pred = allv.size - np.searchsorted(allv, cand, "left")
    tp = n_pos - np.searchsorted(pos, cand, "left")
    f1 = 2.0 * tp / (n_pred + n_pos + extra_gold)
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # last = highest cut among ties
    below = int(np.searchsorted(allv, cand[best], "left"))
    lower = allv[below - 1] if below > 0 else np.float32(np.nan)
    return SweepResult(float(_cuts_between(cand[best : best + 1], np.array([lower]))[0]), float(f1[best]))


def tune_per_code_thresholds(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the threshold maximising that code's F1 (exact sweep) and the F1 reached.

    Returns float64 arrays of length C; both are NaN for columns without a positive.
    """
    scores = as_numpy(probs, np.float32)
    gold = as_numpy(targets).astype(bool)
    _check_pair(scores, gold)
    n, c = scores.shape
    thresholds = np.full(c, np.nan)
    best_f1 = np.full(c, np.nan)
    width = max(1, ranking.CHUNK_ENTRIES // max(1, n))
    for c0 in range(0, c, width):
        c1 = min(c, c0 + width)
        block, g = scores[:, c0:c1], gold[:, c0:c1]
        keys = column_sorted_keys(block)
        n_pos = g.sum(axis=0)
        rows, cols = np.nonzero(g)
        pos_keys = np.sort(column_keys(block[rows, cols], cols))
        if len(pos_keys) == 0:
            continue
        col = (pos_keys >> np.uint64(32)).astype(np.int64)
        offset = np.concatenate(([0], np.cumsum(n_pos)[:-1]))[col]
        at = np.searchsorted(keys, pos_keys, "left")
        n_pred = n - (at - col * n)
        tp = n_pos[col] - (np.searchsorted(pos_keys, pos_keys, "left") - offset)
        f1 = 2.0 * tp / (n_pred + n_pos[col])
        # Best per column, ties to the highest score: sort by (column, f1, key) and keep each column's last.
        order = np.lexsort((pos_keys, f1, col))
        last = order[np.r_[col[order][1:] != col[order][:-1], True]]
        j = col[last]
        below = at[last]
        has_lower = below > j * n
        lowers = np.where(has_lower, from_ordered_u32(keys[np.maximum(below - 1, 0)]), np.float32(np.nan))
        thresholds[c0 + j] = _cuts_between(from_ordered_u32(pos_keys[last]), lowers)
        best_f1[c0 + j] = f1[last]
    return thresholds, best_f1


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds saved in a model directory.

    JSON form: `{"kind": "global"|"per_code", "global": float, "per_code": {"system:code": float}}`.
    For `per_code`, codes missing from the map use the global threshold.
    """

    kind: ThresholdKind = "global"
    global_threshold: float = 0.5
    per_code: Mapping[str, float] = field(default_factory=dict)

    def vector(self, code_keys: Sequence[str]) -> np.ndarray:
        """The float32 threshold of each code in `code_keys` order."""
        if self.kind == "global":
            return np.full(len(code_keys), self.global_threshold, dtype=np.float32)
        g = self.global_threshold
        return np.array([self.per_code.get(k, g) for k in code_keys], dtype=np.float32)

    def apply(self, probs: Any, code_keys: Sequence[str]) -> np.ndarray:
        """Boolean decisions `probs >= threshold` for a [B, C] (or [C]) array with columns `code_keys`."""
        return decisions(probs, self.vector(code_keys))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "global": float(self.global_threshold),
            "per_code": {k: float(v) for k, v in self.per_code.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, *, path: str | Path | None = None) -> Thresholds:
        """Validate and build; faults raise `ModelDirError` naming the field."""
        fix = (
            'expected {"kind": "global"|"per_code", "global": <number>, "per_code": {<code key>: <number>}}.'
        )
        if not isinstance(data, dict):
            raise ModelDirError("thresholds must be a JSON object.", path=path, fix=fix)
        kind = data.get("kind")
        if kind not in _KINDS:
            raise ModelDirError(f"thresholds field 'kind' is {kind!r}.", path=path, fix=fix)
        g = data.get("global")
        if not _is_number(g):
            raise ModelDirError(
                f"thresholds field 'global' is {g!r}, not a finite number.", path=path, fix=fix
            )
        per_code = data.get("per_code", {})
        if not isinstance(per_code, dict):
            raise ModelDirError("thresholds field 'per_code' is not an object.", path=path, fix=fix)
        for key, value in per_code.items():
            if not _is_number(value):
                raise ModelDirError(
                    f"thresholds field 'per_code' has {value!r} for {key!r}, not a finite number.",
                    path=path,
                    fix=fix,
                )
        if kind == "global" and per_code:
            raise ModelDirError(
                "thresholds of kind 'global' carry per-code values.",
                path=path,
                fix="set 'kind' to 'per_code' or empty 'per_code'.",
            )
        return cls(kind, float(g), {str(k): float(v) for k, v in per_code.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Thresholds:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"thresholds are not valid JSON: {exc.msg}.") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        return cls.from_dict(read_json(path), path=path)


def tune_thresholds(
    probs: Any,
    targets: Any,
    code_keys: Sequence[str],
    *,
    kind: ThresholdKind = "global",
    default: float = 0.5,
    extra_gold: int = 0,
) -> Thresholds:
    """Tune on dev: the micro-F1-optimal global threshold, plus per-code thresholds if `kind="per_code"`.
    `extra_gold`: gold codes outside the columns, counted as misses (see `tune_global_threshold`)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    scores = as_numpy(probs, np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(code_keys):
        raise DataError(f"scores have shape {scores.shape}, expected [docs, {len(code_keys)} codes].")
    glob = tune_global_threshold(scores, targets, default=default, extra_gold=extra_gold).threshold
    if kind == "global":
        return Thresholds("global", glob)
    per, _ = tune_per_code_thresholds(scores, targets)
    return Thresholds(
        "per_code", glob, {k: float(t) for k, t in zip(code_keys, per, strict=True) if not math.isnan(t)}
    )


def threshold_vector(threshold: float | np.ndarray | Thresholds, code_keys: Sequence[str]) -> np.ndarray:
    """Resolve a scalar, a per-code vector or a `Thresholds` into a float32 vector over `code_keys`."""
    if isinstance(threshold, Thresholds):
        return threshold.vector(code_keys)
    vec = np.asarray(threshold, dtype=np.float32)
    if vec.ndim == 0:
        return np.full(len(code_keys), vec, dtype=np.float32)
    if vec.shape != (len(code_keys),):
        raise ValueError(f"threshold vector has shape {vec.shape}, expected ({len(code_keys)},)")
    return vec


def decisions(
    probs: Any, thresholds: float | np.ndarray | Thresholds, code_keys: Sequence[str] | None = None
) -> np.ndarray:
    """Boolean decisions `float32(probs) >= threshold` (scalar, per-column vector or `Thresholds`).

    A `Thresholds` object needs the `code_keys` naming the columns.
    """
    scores = as_numpy(probs, np.float32)
    if isinstance(thresholds, Thresholds):
        if code_keys is None:
            raise ValueError("decisions() with a Thresholds object needs code_keys")
        return scores >= thresholds.vector(code_keys)
    return scores >= np.asarray(thresholds, dtype=np.float32)


def _check_pair(scores: np.ndarray, gold: np.ndarray) -> None:
    if scores.shape != gold.shape or scores.ndim != 2:
        raise DataError(f"scores {scores.shape} and targets {gold.shape} must be 2-D of the same shape.")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or infinite values.", fix="check the model outputs.")


def _is_number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

"""Evaluation: batch-updatable metrics (`MetricCollection`) and decision thresholds (`Thresholds`).

See `metrics.py` for the result-key scheme and metric definitions, `thresholds.py` for the exact
micro-F1 threshold sweep and the `prob >= threshold` decision rule.
"""

from icdcoder.evaluation.metrics import (
    DEFAULT_KS,
    MetricCollection,
    code_system,
    compute_metrics,
    confusion_counts,
    per_code_prf,
    prf_from_counts,
)
from icdcoder.evaluation.thresholds import (
    SweepResult,
    Thresholds,
    decisions,
    threshold_vector,
    tune_global_threshold,
    tune_per_code_thresholds,
    tune_thresholds,
)

__all__ = [
    "DEFAULT_KS",
    "MetricCollection",
    "SweepResult",
    "Thresholds",
    "code_system",
    "compute_metrics",
    "confusion_counts",
    "decisions",
    "per_code_prf",
    "prf_from_counts",
    "threshold_vector",
    "tune_global_threshold",
    "tune_per_code_thresholds",
    "tune_thresholds",
]

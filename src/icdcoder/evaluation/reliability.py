"""Reliability diagrams: how often a code is right when the model says p, per probability bin.

The bins are those of the ECE in calibration.py ([k/n, (k+1)/n), p = 1 in the last bin, 20 by default), so
the diagram and the reported ECE describe the same numbers: ECE = Σ_bins (n_bin / N) · |mean p − mean y|.
Drawn with matplotlib's Agg backend (no display needed) into a PNG written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icdcoder.evaluation.calibration import DEFAULT_BINS
from icdcoder.evaluation.thresholds import as_numpy
from icdcoder.io import atomic_write


@dataclass(frozen=True)
class ReliabilityBins:
    count: np.ndarray  # [n_bins] entries per bin
    mean_p: np.ndarray  # mean probability per bin (nan where empty)
    mean_y: np.ndarray  # observed frequency per bin (nan where empty)

    @property
    def ece(self) -> float:
        n = self.count.sum()
        full = self.count > 0
        return (
            float(np.sum(self.count[full] / n * np.abs(self.mean_p[full] - self.mean_y[full]))) if n else 0.0
        )


def reliability_bins(probs: Any, targets: Any, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Pooled (all documents × codes) bins of probabilities against 0/1 targets of the same shape."""
    p = as_numpy(probs, np.float64).ravel()
    y = as_numpy(targets).astype(np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probs and targets differ in size ({p.size} vs {y.size}).")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        mean_y = np.bincount(b, weights=y, minlength=n_bins) / count
    return ReliabilityBins(count, mean_p, mean_y)


def plot_reliability(curves: dict[str, ReliabilityBins], path: str | Path, title: str = "") -> Path:
    """One PNG: observed frequency against mean probability per bin for each named curve (e.g. before and
    after calibration, with its ECE in the legend), the diagonal of perfect calibration, and below it the
    number of entries per bin (log scale: most entries sit in the first bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    n_bins = 0
    for i, (name, bins) in enumerate(curves.items()):
        n_bins = len(bins.count)
        full = bins.count > 0
        top.plot(
            bins.mean_p[full],
            bins.mean_y[full],
            marker="o",
            markersize=4,
            label=f"{name} (ECE {bins.ece:.4f})",
        )
        centres = (np.arange(n_bins) + 0.5) / n_bins
        width = 1.0 / n_bins / max(1, len(curves))
        bottom.bar(centres - 0.5 / n_bins + (i + 0.5) * width, bins.count, width=width, label=name)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency of the code")
    top.set_title(title or "Reliability diagram")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel(f"predicted probability ({n_bins} bins)")
    bottom.set_ylabel("entries")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode="wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path

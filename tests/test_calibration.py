"""Calibration metrics against hand-computed values, and the fitted calibrators on data with a known
miscalibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.calibration import (
    CalibrationMetrics,
    Calibrator,
    calibration_metrics,
    fit_calibrator,
)

# Two documents × two codes. With 2 bins, [0, 0.5) and [0.5, 1]:
#   pooled: bin 0 holds (0.1, y0), (0.3, y1): |0.4 - 1| = 0.6;
#           bin 1 holds (0.9, y1), (0.8, y1): |1.7 - 2| = 0.3
#           ECE = (0.6 + 0.3) / 4 = 0.225
#   code 0: (0.1, 0) in bin 0, (0.8, 1) in bin 1: (0.1 + 0.2) / 2 = 0.15
#   code 1: (0.9, 1) in bin 1, (0.3, 1) in bin 0: (0.1 + 0.7) / 2 = 0.4      mean per-code ECE = 0.275
#   Brier: (0.01 + 0.01 + 0.04 + 0.49) / 4 = 0.1375
PROBS = np.array([[0.1, 0.9], [0.8, 0.3]], dtype=np.float32)
GOLD = np.array([[0, 1], [1, 1]])


def test_metrics_by_hand() -> None:
    m = calibration_metrics(PROBS, GOLD, n_bins=2)
    assert m["ece"] == pytest.approx(0.225, abs=1e-6)
    assert m["mece"] == pytest.approx(0.275, abs=1e-6)
    assert m["brier"] == pytest.approx(0.1375, abs=1e-6)


def test_bin_edges_left_closed_and_one_in_the_last_bin() -> None:
    # 0.5 falls in [0.5, 1] and 1.0 in the last bin: both bins then hold one entry each with |p - y| = 0.5.
    m = calibration_metrics(np.array([[0.5], [1.0]], dtype=np.float32), np.array([[1], [1]]), n_bins=2)
    assert m["ece"] == pytest.approx((0.5 + 0.0) / 2)
    m = calibration_metrics(np.array([[0.25], [0.75]], dtype=np.float32), np.array([[0], [1]]), n_bins=2)
    assert m["ece"] == pytest.approx(0.25)  # (0.25 + 0.25) / 2: one entry in each bin


def test_streaming_equals_one_shot_and_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((37, 6)).astype(np.float32)
    y = (rng.random((37, 6)) < p).astype(int)
    m = CalibrationMetrics(6, n_bins=10)
    for lo in range(0, 37, 5):
        m.update(p[lo : lo + 5], y[lo : lo + 5])
    streamed, whole = m.compute(), calibration_metrics(p, y, n_bins=10)
    for k in ("ece", "mece", "brier"):
        assert streamed[k] == pytest.approx(whole[k], rel=1e-12)

    def ece(pv: np.ndarray, yv: np.ndarray) -> float:
        total = 0.0
        for b in range(10):
            inside = (pv >= b / 10) & ((pv < (b + 1) / 10) | (b == 9))
            if inside.any():
                total += inside.sum() / len(pv) * abs(pv[inside].mean() - yv[inside].mean())
        return total

    assert whole["ece"] == pytest.approx(ece(p.ravel().astype(float), y.ravel()), rel=1e-9)
    per_code = [ece(p[:, c].astype(float), y[:, c]) for c in range(6)]
    assert whole["mece"] == pytest.approx(float(np.mean(per_code)), rel=1e-9)
    assert whole["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-6)


def test_empty_input_is_nan() -> None:
    assert np.isnan(CalibrationMetrics(3).compute()["ece"])
    with pytest.raises(ValueError, match="shape"):
        CalibrationMetrics(3).update(np.zeros((2, 4)), np.zeros((2, 4)))


def _miscalibrated(slope: float, intercept: float, n: int = 400_000) -> tuple[np.ndarray, np.ndarray]:
    """Targets drawn from σ(z); the model reports σ((z - intercept) / slope), so σ(slope·logit + intercept)
    recovers the truth."""
    rng = np.random.default_rng(1)
    z = rng.normal(-2.0, 2.0, n)
    y = rng.random(n) < expit(z)
    probs = expit((z - intercept) / slope).astype(np.float32)
    return probs.reshape(-1, 4), y.reshape(-1, 4)


def test_temperature_recovers_a_known_overconfidence() -> None:
    probs, y = _miscalibrated(slope=0.4, intercept=0.0)  # logits 2.5× too large: T = 2.5
    cal = fit_calibrator(probs, y, "temperature")
    assert cal.method == "temperature"
    assert cal.temperature == pytest.approx(2.5, rel=0.03)
    assert cal.fit["dev_bce_after"] < cal.fit["dev_bce_before"]
    before, after = calibration_metrics(probs, y), calibration_metrics(cal.apply(probs), y)
    assert after["ece"] < before["ece"] / 3 and after["brier"] < before["brier"]


def test_platt_recovers_slope_and_intercept() -> None:
    probs, y = _miscalibrated(slope=0.5, intercept=1.0)
    cal = fit_calibrator(probs, y, "platt")
    assert cal.slope == pytest.approx(0.5, rel=0.03)
    assert cal.intercept == pytest.approx(1.0, abs=0.05)


def test_calibration_keeps_every_ranking() -> None:
    probs, y = _miscalibrated(slope=0.4, intercept=0.3, n=4_000)
    for method in ("temperature", "platt"):
        out = fit_calibrator(probs, y, method).apply(probs)
        assert out.dtype == np.float32 and out.shape == probs.shape
        order = np.argsort(probs, axis=None, kind="stable")
        assert np.all(np.diff(out.ravel()[order]) >= 0)  # non-decreasing along the raw order


def test_degenerate_dev_data_keeps_the_identity() -> None:
    p = np.full((3, 2), 0.2, dtype=np.float32)
    assert fit_calibrator(p, np.zeros((3, 2)), "temperature").method == "none"  # no positives
    assert fit_calibrator(p, np.ones((3, 2)), "platt").method == "none"  # no negatives
    identity = fit_calibrator(p, np.array([[1, 0], [0, 0], [0, 1]]), "none")
    assert identity.method == "none"
    np.testing.assert_array_equal(identity.apply(p), p)
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator(p, np.zeros((3, 2)), "isotonic")


def test_round_trip_and_refusal_of_bad_files() -> None:
    cal = Calibrator("platt", 0.5, -1.25, {"entries": 10.0})
    assert Calibrator.from_dict(cal.to_dict()) == cal
    bad_files = ({"method": "magic"}, {"method": "platt", "slope": -1.0}, {"method": "platt", "slope": "x"})
    for bad in (*bad_files, []):
        with pytest.raises(ModelDirError, match="calibration"):
            Calibrator.from_dict(bad)

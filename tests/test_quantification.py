"""Quantification estimators and errors on hand-computed values (evaluation/quantification.py)."""

from __future__ import annotations

import numpy as np
import pytest

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.quantification import (
    QuantStats,
    absolute_error,
    estimate_prevalence,
    evaluate_quantifiers,
    fit_quant_stats,
    point_estimates,
    random_subsets,
    relative_absolute_error,
    smooth,
)

PROBS = np.array([[0.9, 0.1], [0.6, 0.2], [0.2, 0.7], [0.1, 0.4]])
DECISIONS = PROBS >= 0.5


def test_dev_statistics_hand_computed() -> None:
    dev = np.array([[0.8, 0.6], [0.3, 0.2], [0.6, 0.1], [0.1, 0.9]])
    y = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    s = fit_quant_stats(dev, dev >= 0.5, y)
    assert s.tpr == [1.0, 1.0] and s.fpr == [0.0, 0.0]
    np.testing.assert_allclose(s.ptpr, [0.7, 0.75])
    np.testing.assert_allclose(s.pfpr, [0.2, 0.15])
    assert s.n_pos == [2, 2] and s.n_neg == [2, 2]
    again = QuantStats.from_dict(s.to_dict(), 2)
    assert again == s
    with pytest.raises(ModelDirError, match="another label space"):
        QuantStats.from_dict(s.to_dict(), 3)


def test_cc_pcc_acc_pacc_hand_computed() -> None:
    stats = QuantStats([0.8, 0.5], [0.1, 0.2], [0.7, 0.6], [0.2, 0.25], [5, 5], [5, 5])
    est = point_estimates(PROBS, DECISIONS.astype(float), stats, ["cc", "pcc", "acc", "pacc"])
    np.testing.assert_allclose(est["cc"], [0.5, 0.25])
    np.testing.assert_allclose(est["pcc"], [0.45, 0.35])
    np.testing.assert_allclose(est["acc"], [0.4 / 0.7, 0.05 / 0.3])
    np.testing.assert_allclose(est["pacc"], [0.25 / 0.5, 0.1 / 0.35])


def test_adjustment_clips_and_falls_back() -> None:
    # code 0: CC 0.5 below fpr 0.6 → clipped to 0; code 1: tpr = fpr (no signal) → CC itself;
    # a code without dev positives (nan rates) → CC
    stats = QuantStats([0.9, 0.3], [0.6, 0.3], [float("nan"), 0.5], [0.1, 0.2], [3, 3], [3, 3])
    est = point_estimates(PROBS, DECISIONS.astype(float), stats, ["acc", "pacc"])
    np.testing.assert_allclose(est["acc"], [0.0, 0.25])
    np.testing.assert_allclose(est["pacc"], [0.45, (0.35 - 0.2) / 0.3])
    with pytest.raises(ValueError, match="needs dev statistics"):
        point_estimates(PROBS, DECISIONS.astype(float), None, ["acc"])


def test_errors_with_the_seeds_smoothing_hand_computed() -> None:
    true, est = np.array([0.5, 0.0]), np.array([0.45, 0.35])
    assert absolute_error(true, est) == pytest.approx(0.2)
    # ε = 1/8: smoothed true [0.5, 0.1], est [0.46, 0.38]
    np.testing.assert_allclose(smooth(true, 4), [0.5, 0.1])
    np.testing.assert_allclose(smooth(est, 4), [0.46, 0.38])
    code0 = 0.5 * (0.04 / 0.5 + 0.04 / 0.5)
    code1 = 0.5 * (0.28 / 0.1 + 0.28 / 0.9)
    assert relative_absolute_error(true, est, 4) == pytest.approx((code0 + code1) / 2)


def test_bootstrap_intervals_contain_the_estimate_and_collapse_on_identical_notes() -> None:
    out = estimate_prevalence(PROBS, DECISIONS, methods=["cc", "pcc"], n_boot=100, seed=1)
    for e in out.values():
        assert np.all(e.low <= e.value) and np.all(e.value <= e.high) and np.all(e.high <= 1)
    assert np.all(out["pcc"].high > out["pcc"].low)
    same = estimate_prevalence(np.tile(PROBS[:1], (5, 1)), np.tile(DECISIONS[:1], (5, 1)), methods=["pcc"])
    np.testing.assert_allclose(same["pcc"].low, same["pcc"].high)
    # seeded: the same interval twice
    again = estimate_prevalence(PROBS, DECISIONS, methods=["cc", "pcc"], n_boot=100, seed=1)
    np.testing.assert_array_equal(again["pcc"].low, out["pcc"].low)


def test_random_subsets_and_evaluation() -> None:
    subsets = random_subsets(10, 50, seed=0)
    assert len(subsets) == 50 and all(1 <= len(s) <= 10 and len(set(s)) == len(s) for s in subsets)
    assert len({len(s) for s in subsets}) > 3
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    res = evaluate_quantifiers(
        PROBS, DECISIONS, y, [np.arange(4)], methods=["cc", "pcc"], extra={"true": lambda _: y.mean(0)}
    )
    assert res["pcc"]["ae"] == pytest.approx(absolute_error(y.mean(0), PROBS.mean(0)))
    assert res["cc"]["ae"] == pytest.approx(0.0) and res["true"]["rae"] == pytest.approx(0.0)

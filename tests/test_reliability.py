"""Calibration you can see: reliability bins and diagram, per-code Platt scaling, and `icdcoder calibrate`
writing the diagram."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from typer.testing import CliRunner

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.calibration import Calibrator, calibration_metrics, fit_calibrator
from icdcoder.evaluation.reliability import plot_reliability, reliability_bins


def test_bins_and_ece_hand_computed() -> None:
    p = np.array([[0.02, 0.07, 0.5, 0.97, 1.0]])
    y = np.array([[0, 1, 1, 1, 0]])
    bins = reliability_bins(p, y, n_bins=10)
    assert bins.count.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    np.testing.assert_allclose(bins.mean_p[[0, 5, 9]], [0.045, 0.5, 0.985])
    np.testing.assert_allclose(bins.mean_y[[0, 5, 9]], [0.5, 1.0, 0.5])
    assert np.isnan(bins.mean_p[1])
    # 2/5·|0.045 − 0.5| + 1/5·0.5 + 2/5·|0.985 − 0.5| = 0.476, the pooled ECE of calibration.py
    assert bins.ece == pytest.approx(0.476)
    assert calibration_metrics(p.T, y.T, n_bins=10)["ece"] == pytest.approx(0.476)


def test_diagram_is_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.random((200, 3))
    y = rng.random((200, 3)) < p**2
    out = plot_reliability(
        {"before": reliability_bins(p, y), "after": reliability_bins(p**2, y)}, tmp_path / "d" / "r.png"
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def _codes(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Three codes whose true log-odds are a_c·z + b_c of the model's logit z: code 2 is rare on dev."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(n, 3))
    true = np.stack([0.5 * z[:, 0] + 1.0, 2.0 * z[:, 1] - 1.0, 1.0 * z[:, 2] - 9.0], axis=1)
    y = rng.random((n, 3)) < expit(true)
    return expit(z), y


def test_per_code_platt_recovers_each_codes_map_and_falls_back_for_rare_codes() -> None:
    p, y = _codes()
    assert y[:, 2].sum() < 40
    cal = fit_calibrator(p, y, "platt_per_code", min_positives=50)
    assert cal.slopes is not None and cal.intercepts is not None
    assert cal.slopes[0] == pytest.approx(0.5, abs=0.05) and cal.intercepts[0] == pytest.approx(1.0, abs=0.08)
    assert cal.slopes[1] == pytest.approx(2.0, abs=0.15) and cal.intercepts[1] == pytest.approx(-1.0, abs=0.1)
    assert (cal.slopes[2], cal.intercepts[2]) == (cal.slope, cal.intercept)  # the global Platt map
    assert cal.fit["codes_own_map"] == 2
    glob = fit_calibrator(p, y, "platt")
    assert (cal.slope, cal.intercept) == (glob.slope, glob.intercept)
    assert calibration_metrics(cal.apply(p), y)["mece"] < calibration_metrics(glob.apply(p), y)["mece"]
    # each code's map is increasing: the ranking of notes within a code is kept
    for j in range(3):
        assert np.array_equal(
            np.argsort(p[:500, j], kind="stable"), np.argsort(cal.apply(p[:500])[:, j], kind="stable")
        )
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    with pytest.raises(ValueError, match="3 codes applied to 2"):
        cal.apply(p[:, :2])
    bad = {**cal.to_dict(), "slopes": [1.0, -1.0, 1.0]}
    with pytest.raises(ModelDirError, match="positive slopes"):
        Calibrator.from_dict(bad)
    with pytest.raises(ModelDirError, match="slopes/intercepts"):
        Calibrator.from_dict({"method": "platt_per_code", "slope": 1.0, "intercept": 0.0})


def test_calibrate_writes_the_diagram_and_a_per_code_map(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from icdcoder.cli import app
    from icdcoder.inference.predictor import Predictor
    from test_serving import trained_tiny_model

    src = trained_tiny_model(tmp_path_factory)
    model = tmp_path / "run" / "model"
    shutil.copytree(src, model)
    data = src.parent.parent / "data"
    args = [
        "calibrate",
        str(model),
        "--data",
        str(data),
        "--method",
        "platt_per_code",
        "--min-positives",
        "3",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    png = tmp_path / "run" / "reliability-dev.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and "reliability diagram" in res.output
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["method"] == "platt_per_code" and len(cal["slopes"]) == len(Predictor(model).labels)
    res = CliRunner().invoke(app, [*args[:-2], "--method", "platt", "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0 and (tmp_path / "p.png").is_file()
    res = CliRunner().invoke(
        app,
        ["evaluate", str(model), "--data", str(data), "--split", "test", "--plots", str(tmp_path / "plots")],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plots" / "reliability-test.png").read_bytes()[:4] == b"\x89PNG"

"""How far post-hoc calibration moves a trained model's probabilities: for each run directory, fit every
calibration method on the dev split (as training does) and report dev-fitted parameters and the test ECE,
mean per-code ECE and Brier score of the uncalibrated and calibrated probabilities. Rankings, AUC and the
decisions at a dev-tuned threshold do not change (the maps are strictly increasing), so only these three
move.

    .venv/bin/python benchmarks/calibration_effect.py runs/codiesp/codiesp-d/tfidf/seed0 ... [--json OUT]
    .venv/bin/python benchmarks/calibration_effect.py --from-json OUT1 OUT2   # tables again, no model run

Prints one row per run and method, then mean ± sample std over the seeds of each (dataset, model, method).

Works on any run directory, also one trained before calibration existed (its model directory has no
calibration.json); the dataset is the one the run's config names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def measure(run_dir: Path) -> list[dict[str, Any]]:
    from icdcoder.evaluation.calibration import METHODS, calibration_metrics, fit_calibrator
    from icdcoder.modeldir import load_model_dir
    from icdcoder.training.data import target_matrix
    from icdcoder.training.evaluate import model_dir_probs
    from icdcoder.training.pipeline import open_dataset

    lm = load_model_dir(run_dir / "model")
    data = open_dataset(lm.config.data).path
    dev, dev_raw = model_dir_probs(lm, data, "dev")
    test, test_raw = model_dir_probs(lm, data, "test")
    dev_y, test_y = target_matrix(dev, len(lm.labels)), target_matrix(test, len(lm.labels))
    rows = []
    for method in METHODS:
        cal = fit_calibrator(dev_raw, dev_y, method, seed=lm.config.train.seed)
        test_probs = cal.apply(test_raw)
        rows.append(
            {
                "run": str(run_dir),
                "model": lm.config.model["name"],
                "dataset": lm.config.dataset_name,
                "seed": lm.config.train.seed,
                "method": method,
                "fitted": cal.method,
                "slope": cal.slope,
                "intercept": cal.intercept,
                "dev": calibration_metrics(cal.apply(dev_raw), dev_y),
                "test": calibration_metrics(test_probs, test_y),
                "test_mean_prob": float(np.mean(test_probs)),
                "test_prevalence": float(np.mean(test_y)),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", nargs="+", type=Path, default=[])
    a = ap.parse_args()
    rows = [r for run in a.runs for r in measure(run)]
    rows += [r for path in a.from_json for r in json.loads(path.read_text())]
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=2))
    print(
        "| dataset | model | seed | calibration | a | b | test ECE | test mECE | test Brier "
        "| mean p / prevalence |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        print(
            f"| {r['dataset']} | {r['model']} | {r['seed']} | {r['method']} | {r['slope']:.3f} | "
            f"{r['intercept']:.3f} | {t['ece']:.5f} | {t['mece']:.5f} | {t['brier']:.5f} | "
            f"{r['test_mean_prob'] / r['test_prevalence']:.2f} |"
        )

    print()
    summary(rows)


def summary(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["method"]), []).append(r)

    def ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
        v = np.asarray(values) * scale
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        return f"{float(np.mean(v)):.{digits}f} ± {sd:.{digits}f}"

    print(
        "| dataset | model | calibration | seeds | a | test ECE ×10³ | test mECE ×10³ | test Brier ×10³ "
        "| mean p / prevalence |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (dataset, model, method), rs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        print(
            f"| {dataset} | {model} | {method} | {seeds} | {ms([r['slope'] for r in rs])} | "
            f"{ms([r['test']['ece'] for r in rs], 1e3)} | {ms([r['test']['mece'] for r in rs], 1e3)} | "
            f"{ms([r['test']['brier'] for r in rs], 1e3, 3)} | "
            f"{ms([r['test_mean_prob'] / r['test_prevalence'] for r in rs])} |"
        )


if __name__ == "__main__":
    main()

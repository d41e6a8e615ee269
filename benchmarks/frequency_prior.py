"""The label-frequency prior as a reference row: every test note gets the same ranking, by training count.

    .venv/bin/python benchmarks/frequency_prior.py RUN_DIR [RUN_DIR ...]

Reads a finished run's model/labels.json (training counts) and predictions_test.parquet (gold codes), so the
prior is scored on exactly the test documents and code columns the model was scored on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from icdcoder.evaluation.metrics import compute_metrics
from icdcoder.training.evaluate import read_predictions

KEYS = ("auc_micro", "p@5", "p@8", "r_precision", "map")


def prior_metrics(run: Path) -> dict[str, float]:
    ids, gold, _, keys = read_predictions(run / "predictions_test.parquet")
    counts = np.array(
        [c["train_count"] for c in json.loads((run / "model/labels.json").read_text())["codes"]]
    )
    columns = {k: i for i, k in enumerate(keys)}
    y = np.zeros((len(ids), len(keys)), dtype=np.int8)
    for row, codes in enumerate(gold):
        y[row, [columns[k] for k in codes if k in columns]] = 1
    unseen = [[k for k in codes if k not in columns] for codes in gold]  # count as misses (headline MAP)
    p = np.broadcast_to((counts / counts.sum()).astype(np.float32), y.shape)
    return compute_metrics(p, y, keys, unseen=unseen)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        m = prior_metrics(Path(arg))
        print(arg, " ".join(f"{k}={100 * m[k]:.1f}" for k in KEYS))

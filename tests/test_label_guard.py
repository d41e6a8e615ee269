"""A guard for the central claim (issue 16): every choice of a run is made on dev. Changing the test split's
labels must change neither the selected epoch, the calibration, the thresholds nor the dev metrics, only the
test metrics."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from icdcoder.data.prepared import write_prepared
from icdcoder.training.config import parse_config
from icdcoder.training.pipeline import run_experiment
from test_serving import PHRASES, make_documents

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(root: Path, docs: list) -> dict:
    data = root / "data"
    write_prepared(data, docs, source="unit")
    cfg = parse_config(
        {
            "data": {"source": "prepared", "path": str(data), "max_tokens": 200},
            "embeddings": {"word2vec": False},
            "model": {"name": "caml", "embed_dim": 8, "num_filters": 8, "kernel_size": 3, "dropout": 0.0},
            "train": {"epochs": 4, "lr": 0.02, "batch_size": 8, "patience": 0, "progress": False, "seed": 3},
            "dataset_name": "guard",
        }
    )
    summary = run_experiment(cfg, root / "run")
    summary["thresholds"] = json.loads((root / "run" / "model" / "thresholds.json").read_text())
    summary["history"] = [
        json.loads(line) for line in (root / "run" / "metrics.jsonl").open() if '"dev"' in line
    ]
    return summary


def test_test_labels_do_not_reach_any_choice(tmp_path: Path) -> None:
    docs = make_documents(90, seed=7)
    rng = random.Random(0)
    codes = list(PHRASES)
    relabelled = [
        dataclasses.replace(d, codes=rng.sample(codes, rng.randint(1, 3))) if d.split == "test" else d
        for d in docs
    ]
    assert [d.codes for d in docs if d.split == "test"] != [d.codes for d in relabelled if d.split == "test"]
    a, b = _run(tmp_path / "a", docs), _run(tmp_path / "b", relabelled)
    assert a["best_epoch"] == b["best_epoch"]
    assert a["calibration"] == b["calibration"]
    assert a["thresholds"] == b["thresholds"]
    assert a["dev"] == b["dev"]
    strip = [
        {k: v for k, v in r.items() if k not in ("train_seconds", "time", "elapsed")} for r in a["history"]
    ]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("train_seconds", "time", "elapsed")} for r in b["history"]
    ]
    assert a["test"]["map"] != b["test"]["map"]  # the change did reach the test metrics

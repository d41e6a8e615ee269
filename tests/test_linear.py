"""The linear model solved to its optimum (issue 17): features, the solver against scikit-learn, the
row-space reduction against the primal, and a run through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.models.base import Batch, ModelContext, build_model
from icdcoder.models.init import prior_log_odds
from icdcoder.models.linear import count_bigrams
from icdcoder.training.solver import RowSpace, solve_block

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prior_log_odds_hand_computed() -> None:
    got = prior_log_odds([1, 5, 0, 10], 10)
    want = [math.log(1 / 9), 0.0, math.log(0.5 / 9.5), math.log(9.5 / 0.5)]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)


def test_count_bigrams_min_df_and_skips() -> None:
    docs = [np.array([2, 3, 4, 2, 3]), np.array([2, 3, 1, 4]), np.array([5])]
    keys, df = count_bigrams(docs, vocab_size=10, min_df=1, skip=(0, 1))
    # (2,3) in both notes (counted once per note), (3,4), (4,2) in the first; (3,1), (1,4) hold <unk>.
    assert keys == [23, 34, 42] and df == [2, 1, 1]
    assert count_bigrams(docs, 10, min_df=2, skip=(0, 1)) == ([23], [2])


def _batch(rows: list[list[int]]) -> Batch:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    mask = ids != 0
    return Batch(ids, mask, mask.sum(1), [str(i) for i in range(len(rows))])


def test_bigram_columns_counted_after_the_words() -> None:
    ctx = ModelContext(
        label_keys=["icd10cm:A00"], vocab_size=6, token_doc_freq=[0, 0, 2, 2, 1, 1], n_train_docs=2
    )
    ctx.extras = {"bigram_keys": [2 * 6 + 3, 3 * 6 + 4], "bigram_doc_freq": [2, 1]}
    model = build_model({"name": "linear", "ngrams": 2}, ctx)
    counts, _ = model.counts(_batch([[2, 3, 2, 3, 4], [4, 3]]))  # type: ignore[operator]
    assert counts.shape == (2, 8)
    assert counts[0].tolist() == [0, 0, 2, 2, 1, 0, 2, 1]  # words 2,3,3... then (2,3)×2, (3,4)×1
    assert counts[1].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]  # (4,3) is not a kept bigram
    # One idf over all columns: bigram (3,4) has df 1 like word 4, so the same idf.
    assert model.idf[7] == pytest.approx(float(model.idf[4]))
    # Evidence sums to 1 per code over real tokens and is non-negative.
    with torch.no_grad():
        model.linear.weight.fill_(1.0)  # type: ignore[operator]
    model.eval()
    att = model(_batch([[2, 3, 4]])).attention
    assert att is not None and float(att.detach().sum()) == pytest.approx(1.0) and bool((att >= 0).all())


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    dense = rng.random((30, 80)) * (rng.random((30, 80)) < 0.15)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True).clip(1e-12)
    y = (rng.random((30, 3)) < 0.3).astype(np.float64)
    y[0], y[1] = 1.0, 0.0  # every code has a positive and a negative
    return torch.tensor(dense), torch.tensor(y)


def test_solver_matches_scikit_learn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _problem()
    c = 10.0
    w, b, _, _ = solve_block(x, y, torch.zeros(3, 80), torch.zeros(3), c, max_iter=500, tol=1e-9)
    for j in range(3):
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x.numpy(), y[:, j].numpy())
        assert np.allclose(w[j].numpy(), ref.coef_[0], atol=1e-4)
        assert b[j].item() == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_row_space_reduction_gives_the_primal_optimum() -> None:
    x, y = _problem(1)
    c = 100.0
    w, b, _, _ = solve_block(x, y, torch.zeros(3, 80), torch.zeros(3), c, max_iter=1000, tol=1e-10)
    rs = RowSpace.of(x.float().to_sparse())
    z, bz, _, _ = solve_block(
        rs.design, y, torch.zeros(3, rs.design.shape[1]), torch.zeros(3), c, 1000, 1e-10
    )
    w_back = rs.weights(x.float().to_sparse(), z)
    assert torch.allclose(w_back.double(), w, atol=1e-3)
    assert torch.allclose(bz, b, atol=1e-4)


def test_linear_trains_through_the_cli_and_selects_c_on_dev(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(tiny_dataset)},
        "embeddings": {"word2vec": False},
        "model": {"name": "linear", "ngrams": 2, "bigram_min_df": 1, "c_grid": [0.01, 100.0]},
        "train": {"seed": 0, "monitor": "map", "progress": False, "num_threads": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["c"] for r in records] == [0.01, 100.0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    best = max(records, key=lambda r: r["dev_map"])
    assert run["best_epoch"] == best["epoch"]
    # The cue words make the tiny task learnable: the solved model is far above chance on test.
    assert run["test"]["map"] > 0.8
    ctx = json.loads((tmp_path / "run" / "model" / "context.json").read_text())
    assert len(ctx["extras"]["bigram_keys"]) > 0
    pred = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "run" / "model"), "--data", str(tiny_dataset), "--json"]
    )
    assert pred.exit_code == 0, pred.output

"""MSAM's joint classification + quantification: the group memory (running PCC and prevalence, resets at group
end and epoch boundaries), the CLQ loss term, starting from a trained MSAM and a separately fitted MLP, and
the MLP quantifier fitted on random dev subsets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from icdcoder.models.base import ModelContext, build_model
from icdcoder.models.msam import MSAM
from icdcoder.models.quantifier import QuantificationMemory
from icdcoder.training.quantifier import load_quantifier, save_quantifier, train_mlp_quantifier
from test_msam import KEYS, V, make_batch, synonym_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_memory_running_means_hand_computed_and_reset_at_group_end() -> None:
    mem = QuantificationMemory(2, group_min=3, group_max=3)
    assert mem.group_size == 3 and mem.resets == 1
    p = torch.tensor([[0.2, 0.9], [0.4, 0.1], [0.9, 0.5], [0.3, 0.3]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    pcc, prev = mem.step(p[:1], y[:1])
    torch.testing.assert_close(pcc, p[:1]) and torch.testing.assert_close(prev, y[:1])
    pcc, prev = mem.step(p[1:3], y[1:3])  # a batch of two: each row sees the group up to itself
    torch.testing.assert_close(pcc, torch.stack([p[:2].mean(0), p[:3].mean(0)]))
    torch.testing.assert_close(prev, torch.stack([y[:2].mean(0), y[:3].mean(0)]))
    # the third note filled the group of 3: reset, the fourth starts a new group
    assert mem.count == 0 and mem.resets == 2
    pcc, prev = mem.step(p[3:], y[3:])
    torch.testing.assert_close(pcc, p[3:]) and torch.testing.assert_close(prev, y[3:])


def test_only_the_current_batch_carries_gradient() -> None:
    mem = QuantificationMemory(1, group_min=10, group_max=10)
    first = torch.tensor([[0.3]], requires_grad=True)
    second = torch.tensor([[0.5]], requires_grad=True)
    mem.step(first, torch.ones(1, 1))
    pcc, _ = mem.step(second, torch.zeros(1, 1))
    pcc.sum().backward()
    assert first.grad is None and second.grad is not None and float(second.grad) == pytest.approx(0.5)


def test_group_sizes_are_uniform_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    mem = QuantificationMemory(1, group_min=2, group_max=5, generator=gen)
    sizes = set()
    for _ in range(200):
        sizes.add(mem.group_size)
        mem.reset()
    assert sizes == {2, 3, 4, 5}
    with pytest.raises(ValueError):
        QuantificationMemory(1, 3, 2)


def _clq_model(**kw: Any) -> MSAM:
    emb = np.random.default_rng(3).normal(size=(V, 6)).astype(np.float32)
    ctx = ModelContext(
        label_keys=KEYS, vocab_size=V, embeddings=emb, label_synonym_token_ids=synonym_rows(2), n_train_docs=9
    )
    cfg = {"name": "msam", "encoder": "lstm", "embed_dim": 6, "rnn_dim": 8, "synonyms": 2, "clq": True, **kw}
    torch.manual_seed(0)
    model = build_model(cfg, ctx)
    assert isinstance(model, MSAM)
    return model


def test_clq_loss_term_and_resets_at_epoch_boundaries() -> None:
    model = _clq_model(clq_group_min=100, clq_group_max=100).train()
    assert model.memory is not None and model.memory.group_max == 100
    batch = make_batch([5, 4, 6])
    model.set_training_progress(0, 10, epoch=0)
    resets = model.memory.resets
    out = model(batch)
    terms = model.losses(batch, out)
    assert set(terms) == {"bce", "quant"} and model.memory.count == 3
    # λ·Huber_δ(MLP(running PCC), running prevalence), recomputed by hand
    probs = torch.sigmoid(out.logits)
    n = torch.arange(1, 4, dtype=probs.dtype)[:, None]
    assert batch.targets is not None
    want = 100.0 * torch.nn.functional.huber_loss(
        model.quantifier(probs.cumsum(0) / n),
        batch.targets.cumsum(0) / n,
        delta=0.5,  # type: ignore[misc]
    )
    torch.testing.assert_close(terms["quant"], want)
    model.set_training_progress(1, 10, epoch=0)  # same epoch: the group goes on
    assert model.memory.count == 3 and model.memory.resets == resets
    model.set_training_progress(2, 10, epoch=1)  # new epoch: reset
    assert model.memory.count == 0 and model.memory.resets == resets + 1
    model.eval()  # evaluation never touches the memory
    model.losses(batch, model(batch))
    assert model.memory.count == 0
    # the default group range is [1, number of training notes]
    assert _clq_model().memory.group_max == 9  # type: ignore[union-attr]


def test_mlp_quantifier_fits_random_subsets_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.random((300, 4)) < np.array([0.05, 0.2, 0.5, 0.1])
    probs = np.clip(0.6 * y + 0.2 + rng.normal(0, 0.1, y.shape), 0.01, 0.99)  # biased: PCC overestimates
    mlp, info = train_mlp_quantifier(probs, y, hidden=8, n_samples=300, epochs=60, lr=0.01, seed=0)
    assert info["epochs_run"] >= 2 and info["n_codes"] == 4
    from icdcoder.evaluation.quantification import evaluate_quantifiers, random_subsets
    from icdcoder.inference.quantify import mlp_estimator

    res = evaluate_quantifiers(
        probs,
        probs > 0.5,
        y,
        random_subsets(300, 100, seed=5),
        methods=["pcc"],
        extra={"mlp": mlp_estimator(mlp)},
    )
    assert res["mlp"]["ae"] < res["pcc"]["ae"]
    path = save_quantifier(tmp_path / "q.safetensors", mlp, info)
    again, info2 = load_quantifier(path)
    assert info2 == json.loads(json.dumps(info))
    x = torch.rand(3, 4)
    torch.testing.assert_close(again(x), mlp(x))


def test_clq_starts_from_a_trained_msam_and_a_fitted_mlp(tmp_path: Path) -> None:
    from conftest import make_docs
    from icdcoder.cli import app
    from icdcoder.data.prepared import write_prepared

    data = tmp_path / "data"
    write_prepared(
        data, make_docs(24, 1, "train") + make_docs(10, 2, "dev") + make_docs(6, 3, "test"), source="u"
    )
    base = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(data), "max_tokens": 40},
        "embeddings": {"word2vec": False},
        "model": {
            "name": "msam",
            "encoder": "lstm",
            "embed_dim": 8,
            "rnn_dim": 8,
            "synonyms": 2,
            "synonym_selection": "random",
        },
        "train": {"epochs": 1, "batch_size": 8, "progress": False},
    }
    runner = CliRunner()
    (tmp_path / "msam.yaml").write_text(yaml.safe_dump(base))
    res = runner.invoke(app, ["train", str(tmp_path / "msam.yaml"), "--out", str(tmp_path / "msam")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    src = tmp_path / "msam" / "model"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("essential hypertension and acute kidney failure", encoding="utf-8")
    args = [
        "quantify",
        str(src),
        str(notes),
        "--data",
        str(data),
        "--fit-mlp",
        "--mlp-samples",
        "50",
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    assert json.loads(res.stdout)["methods"] == ["cc", "pcc", "acc", "pacc", "mlp"]
    mlp_file = src / "quantifier.safetensors"

    # CLQ: from both, selected on the lowest mean per-code ECE over all codes
    clq = {
        **base,
        "model": {**base["model"], "clq": True, "clq_init": str(src), "clq_mlp_init": str(mlp_file)},
    }
    clq["train"] = {**base["train"], "monitor": "mece", "lr": 1e-9}
    (tmp_path / "clq.yaml").write_text(yaml.safe_dump(clq))
    res = runner.invoke(app, ["train", str(tmp_path / "clq.yaml"), "--out", str(tmp_path / "clq")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    before, after = (
        load_file(src / "model.safetensors"),
        load_file(tmp_path / "clq" / "model" / "model.safetensors"),
    )
    mlp = load_file(mlp_file)
    for k, v in before.items():  # lr ≈ 0: the weights are still the ones it started from
        torch.testing.assert_close(after[k], v, atol=1e-5, rtol=1e-5)
    for k, v in mlp.items():
        torch.testing.assert_close(after[f"quantifier.{k}"], v, atol=1e-5, rtol=1e-5)
    run = json.loads((tmp_path / "clq" / "run.json").read_text())
    assert "mece" in json.dumps(run)
    # starting from an MSAM of another shape is refused, naming the file
    clq["model"] = {**clq["model"], "synonyms": 4}
    (tmp_path / "clq4.yaml").write_text(yaml.safe_dump(clq))
    res = runner.invoke(app, ["train", str(tmp_path / "clq4.yaml"), "--out", str(tmp_path / "clq4")])
    assert res.exit_code != 0 and "another architecture" in str(res.exception)

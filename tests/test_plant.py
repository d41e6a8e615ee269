"""PLANT: inattention, the stateful decoder (segments = at once), gradients, schedule, CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import CUES, FILLER
from icdcoder.cli import app
from icdcoder.models.awd_lstm import AWDConfig, LMTrainConfig, cached_language_model
from icdcoder.models.base import Batch, ModelContext, TrainingCorpus, build_model
from icdcoder.models.plant import PLANT, reverse_rows, segment_mask, select_topk
from icdcoder.training.config import TrainConfig
from icdcoder.training.trainer import build_optimizer

V, C = 30, 5
SMALL: dict[str, Any] = {
    "name": "plant",
    "emb_dim": 8,
    "hidden": 12,
    "n_layers": 2,
    "l2r_dim": 6,
    "l2r_epochs": 5,
    "l2r_list_size": 8,
    "lm_epochs": 1,
    "lm_batch_size": 2,
    "lm_bptt": 8,
    "static_inattn": 2,
    "diff_inattn": 3,
    "bptt": 4,
    "grad_segments": 2,
    "brain_top_tokens": 10,
}


def corpus(n: int = 30, seed: int = 0) -> tuple[list[np.ndarray], list[list[int]]]:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(2, V, size=int(rng.integers(3, 20))).astype(np.int64) for _ in range(n)]
    return docs, [sorted({int(x) - 2 for x in d if 2 <= x < 2 + C}) for d in docs]


def batch(docs: list[list[int]], targets: list[list[int]] | None = None, extra_pad: int = 0) -> Batch:
    width = max(len(d) for d in docs) + extra_pad
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros(len(docs), width, dtype=torch.bool)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d)
        mask[i, : len(d)] = True
    y = None
    if targets is not None:
        y = torch.zeros(len(docs), C)
        for i, t in enumerate(targets):
            y[i, t] = 1.0
    return Batch(ids, mask, mask.sum(1), [f"d{i}" for i in range(len(docs))], y)


def fitted(tmp_path: Path, **kw: Any) -> PLANT:
    torch.manual_seed(0)
    ctx = ModelContext(label_keys=[f"icd10cm:A0{i}" for i in range(C)], vocab_size=V)
    model = build_model({**SMALL, **kw}, ctx)
    assert isinstance(model, PLANT)
    docs, targets = corpus()
    model.fit_priors(TrainingCorpus(docs, targets, [], [f"w{i}" for i in range(V)], 0, tmp_path / "lm"))
    return model


def test_inattention_keeps_top_k_per_label_with_ties_to_the_earlier_token() -> None:
    # One note, one label, scores over 6 tokens read in two segments of 3: [1, 5, 3 | 5, 0, 4], k = 3.
    seg1 = torch.tensor([[[1.0, 5.0, 3.0]]])
    seg2 = torch.tensor([[[5.0, 0.0, 4.0]]])
    keep = select_topk(seg1, None, 3, 0)
    scores, pos = select_topk(seg2, keep, 3, 3)
    assert scores.tolist() == [[[5.0, 5.0, 4.0]]]
    assert pos.tolist() == [[[1, 3, 5]]]  # the tie at 5 keeps both; 4 (position 5) beats 3 (position 2)
    at_once = select_topk(torch.cat([seg1, seg2], 2), None, 3, 0)
    assert at_once[1].tolist() == pos.tolist()
    # Ties beyond k go to the earlier position.
    tied = select_topk(torch.tensor([[[2.0, 2.0, 2.0]]]), None, 2, 0)
    assert tied[1].tolist() == [[[0, 1]]]
    valid = torch.ones_like(pos, dtype=torch.bool)
    assert segment_mask(pos, valid, 3, 3).tolist() == [[[True, False, True]]]
    assert segment_mask(pos, valid, 0, 3).tolist() == [[[False, True, False]]]


def test_static_attention_uses_only_the_top_k_brain_tokens(tmp_path: Path) -> None:
    model = fitted(tmp_path, sources=["static"])
    model.eval()
    docs, _ = corpus()
    b = batch([docs[0].tolist()])
    with torch.no_grad():
        ev = model(b).attention
    assert ev is not None
    nonzero = (ev[0] > 0).sum(-1)
    assert int(nonzero.max()) <= 2  # static_inattn = 2 tokens per label
    brain = model.brain_lookup(b.token_ids)[0]  # [C, T]
    for c in range(C):
        picked = ev[0, c] > 0
        if picked.any():  # the kept tokens have the label's largest brain values in the note
            assert float(brain[c][picked].min()) >= float(brain[c][~picked].max()) - 1e-7


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"bidirectional": True},
        {"inattention": False},
        {"learned_inattn": 3, "planted_tokens": "lm_argmax"},
        {"l2r": "mlp"},
        {"sources": ["learned"]},  # A only: the LAAT-like ablation on the same encoder
    ],
)
def test_note_read_in_segments_equals_note_read_at_once(tmp_path: Path, kw: dict[str, Any]) -> None:
    model = fitted(tmp_path, **kw)
    model.eval()
    docs, _ = corpus(6, seed=3)
    b = batch([d.tolist() for d in docs], extra_pad=3)
    with torch.no_grad():
        segmented = model(b)
        model.cfg = model.cfg.model_copy(update={"bptt": 1000})
        at_once = model(b)
        unpadded = model(batch([docs[0].tolist()]))
    torch.testing.assert_close(segmented.logits, at_once.logits, atol=1e-5, rtol=1e-5)
    assert segmented.attention is not None and at_once.attention is not None
    torch.testing.assert_close(segmented.attention, at_once.attention, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unpadded.logits[0], at_once.logits[0], atol=1e-5, rtol=1e-5)
    sums = segmented.attention.sum(-1)  # a mean of normalised sources (S is 0 without positive brain values)
    assert float(sums.max()) <= 1 + 1e-5 and float(sums.min()) > 0


def test_gradients_stop_before_the_last_segments_and_reach_the_planted_parts(tmp_path: Path) -> None:
    model = fitted(tmp_path, grad_segments=1, bptt=4, inattention=False)
    model.train()
    early, late = [2] * 4, [3] * 4  # token 2 only in the first segment, token 3 only in the last one
    b = batch([early + [9] * 4 + late], [[0]])
    out = model(b)
    sum(model.losses(b, out).values()).backward()
    emb = model.branches[0].encoder.embedding.weight.grad
    assert emb is not None
    assert float(emb[2].abs().sum()) == 0.0 and float(emb[3].abs().sum()) > 0.0
    branch = model.branches[0]
    assert branch.l2r.token_factors.weight.grad is not None
    assert branch.queries.grad is not None and branch.output.weight.grad is not None
    assert not branch.lm_bias.requires_grad


def test_overfits_a_tiny_batch(tmp_path: Path) -> None:
    model = fitted(tmp_path)
    model.train()
    docs, targets = corpus(8, seed=5)
    b = batch([d.tolist() for d in docs], targets)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = last = 0.0
    for step in range(60):
        loss = sum(model.losses(b, model(b)).values())
        assert isinstance(loss, torch.Tensor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if step == 0 else first
        last = float(loss.detach())
    assert last < 0.35 * first


def test_discriminative_rates_and_gradual_unfreezing(tmp_path: Path) -> None:
    model = fitted(tmp_path, lr_decay=2.0, l2r_lr_mult=0.5)
    groups = model.optimizer_groups()
    names = [g[0] for g in groups]
    assert names == ["decoder", "l2r", "lstm2", "lstm1", "embedding"]
    assert [g[2] for g in groups] == [1.0, 0.5, 0.5, 0.25, 0.125]
    opt = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.01))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(model.branches[0].encoder.embedding.weight)] == pytest.approx(0.0125)
    assert lr_of[id(model.branches[0].queries)] == pytest.approx(0.1)
    covered = {id(p) for g in opt.param_groups for p in g["params"]}
    assert covered == {id(p) for p in model.parameters() if p.requires_grad}
    model.set_training_progress(0, 10, 0)
    assert model.branches[0].queries.requires_grad
    assert not model.branches[0].l2r.label_factors.requires_grad
    assert not model.branches[0].encoder.embedding.weight.requires_grad
    model.set_training_progress(5, 10, 2)
    assert model.branches[0].encoder.layers[1].weight_ih_l0.requires_grad
    assert not model.branches[0].encoder.layers[0].weight_ih_l0.requires_grad
    model.set_training_progress(9, 10, 4)
    assert model.branches[0].encoder.embedding.weight.requires_grad


def test_reverse_rows_is_an_involution_within_lengths() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    lengths = torch.tensor([3, 2])
    assert reverse_rows(x, lengths).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert torch.equal(reverse_rows(reverse_rows(x, lengths), lengths), x)


def test_language_model_is_cached_by_fingerprint(tmp_path: Path) -> None:
    docs, _ = corpus()
    words = [f"w{i}" for i in range(V)]
    arch = AWDConfig(emb_dim=8, hidden=12, n_layers=2)
    train = LMTrainConfig(epochs=1, bptt=8, batch_size=2)
    lm1, meta1 = cached_language_model(words, docs, arch, train, backward=False, cache_dir=tmp_path)
    lm2, meta2 = cached_language_model(words, docs, arch, train, backward=False, cache_dir=tmp_path)
    assert meta1["fingerprint"] == meta2["fingerprint"]
    for a, b in zip(lm1.state_dict().values(), lm2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, meta3 = cached_language_model(words, docs[:-1], arch, train, backward=False, cache_dir=tmp_path)
    _, meta4 = cached_language_model(words, docs, arch, train, backward=True, cache_dir=tmp_path)
    assert len({meta1["fingerprint"], meta3["fingerprint"], meta4["fingerprint"]}) == 3


def test_train_save_predict_a_longer_note_through_the_cli(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path / "cache"))
    model = {**SMALL, "l2r_epochs": 3, "bptt": 16, "grad_segments": 2, "bidirectional": True}
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(tiny_dataset), "max_tokens": 100000},
        "embeddings": {"word2vec": False},
        "model": model,
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.01, "seed": 0, "progress": False, "num_threads": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"mi_seconds", "l2r_seconds", "lm_forward", "lm_backward"} <= set(summary["priors"])
    # A note far longer than any training note (those have < 50 words).
    words = [FILLER[i % len(FILLER)] for i in range(3000)]
    cue = next(iter(CUES.values()))
    text = " ".join(words[:1500] + cue.split() + words[1500:]) + "."
    note = tmp_path / "long.txt"
    note.write_text(text, encoding="utf-8")
    res = runner.invoke(app, ["predict", str(tmp_path / "run" / "model"), str(note), "--format", "json"])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    rows = json.loads(res.output)
    assert rows[0]["codes"]
    for code in rows[0]["codes"]:
        for span in code["evidence"]:
            assert 0 <= span["start"] < span["end"] <= len(text)
    # The same model evaluates on the prepared data and serves the long note over HTTP.
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "run" / "model"),
            "--data",
            str(tiny_dataset),
            "--split",
            "test",
            "--json",
        ],
    )
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    metrics = json.loads(res.output[res.output.index("{") :])
    assert metrics["map"] == pytest.approx(summary["test"]["map"], abs=1e-6)
    from fastapi.testclient import TestClient

    from icdcoder.inference.predictor import Predictor
    from icdcoder.serving.app import create_app

    with TestClient(create_app(Predictor(tmp_path / "run" / "model"))) as client:
        r = client.post("/v1/code", json={"text": text, "top_k": 3})
    assert r.status_code == 200, r.text
    served = r.json()["codes"]
    assert [c["key"] for c in served] == [c["key"] for c in rows[0]["codes"][:3]]


def test_prior_bias_initialisation() -> None:
    ctx = ModelContext(
        label_keys=[f"icd10cm:A0{i}" for i in range(C)],
        vocab_size=V,
        n_train_docs=10,
        label_train_counts=[1, 2, 5, 9, 0],
        init_from_pretrained=True,
    )
    model = build_model({**SMALL, "bias_init": "prior", "bidirectional": True}, ctx)
    expected = torch.log(torch.tensor([1, 2, 5, 9, 0.5]) / (10 - torch.tensor([1, 2, 5, 9, 0.5])))
    for branch in model.branches:  # type: ignore[union-attr]
        torch.testing.assert_close(branch.output.bias.detach(), expected)

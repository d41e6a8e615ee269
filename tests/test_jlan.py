"""JLAN: the joint-gate constraint, the T-loss schedule inside the model, the trainer's progress hook, the
common model checks for every ablation, and an end-to-end run through the CLI and the Predictor."""

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icdcoder.errors import ConfigError
from icdcoder.models.base import IcdModel, ModelContext, build_model
from icdcoder.models.jlan import JLAN, constrain_gates
from icdcoder.models.losses import truncated_bce_with_logits

sys.path.insert(0, str(Path(__file__).parent))
from test_models import make_batch

KEYS = ["icd10cm:I10", "icd10cm:E11.9", "icd10cm:J44.9", "icd10cm:N18.3", "icd10pcs:0DT60ZZ"]
VOCAB = 40
DIM = 8
SMALL: dict[str, Any] = {"embed_dim": DIM, "hidden_size": DIM, "d_a": 5, "mlp_hidden": 6, "mlp_out": 4}
DOCS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 5, 14], [15], []]
TARGETS = [[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
MODES = ["joint", "sum", "label", "self"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_ctx(**kw: Any) -> ModelContext:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    emb[0] = 0.0
    args: dict[str, Any] = {
        "label_keys": KEYS,
        "vocab_size": VOCAB,
        "embeddings": emb,
        "label_token_ids": [[20, 21], [22, 23, 24], [25], [26, 27], [28, 29, 30]],
    }
    args.update(kw)
    return ModelContext(**args)


def build(ctx: ModelContext | None = None, **kw: Any) -> JLAN:
    torch.manual_seed(0)
    model = build_model({"name": "jlan", **SMALL, **kw}, ctx or make_ctx())
    assert isinstance(model, JLAN)
    return model


# -- joint learning: 0 < α + β ≤ 1 ------------------------------------------------------------------------


def test_gate_constraint_by_hand() -> None:
    alpha = torch.tensor([0.3, 0.8, 0.5, 1e-6])
    beta = torch.tensor([0.4, 0.6, 0.5, 1e-6])
    a, b = constrain_gates(alpha, beta)
    # sums ≤ 1 are left alone; 0.8 + 0.6 = 1.4 is rescaled onto 1 keeping the 4:3 ratio
    torch.testing.assert_close(a, torch.tensor([0.3, 0.8 / 1.4, 0.5, 1e-6]))
    torch.testing.assert_close(b, torch.tensor([0.4, 0.6 / 1.4, 0.5, 1e-6]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-30, 30), st.floats(-30, 30)), min_size=1, max_size=20))
def test_gate_constraint_holds_for_any_gate_logits(pairs: list[tuple[float, float]]) -> None:
    x = torch.tensor(pairs, dtype=torch.float64)
    alpha, beta = torch.sigmoid(x[:, 0]), torch.sigmoid(x[:, 1])
    a, b = constrain_gates(alpha, beta)
    total = a + b
    assert torch.all(total > 0) and torch.all(total <= 1 + 1e-12)
    torch.testing.assert_close(a * beta, b * alpha)  # the ratio α : β is kept


def test_model_gates_respect_the_constraint_when_both_saturate() -> None:
    model = build().eval()
    with torch.no_grad():  # push both gates to ~1: the raw sum ~2 must come out as 1
        model.gate_self.bias.fill_(10.0)
        model.gate_label.bias.fill_(10.0)
        out = model(make_batch(DOCS))
    alpha, beta = out.extras["alpha"], out.extras["beta"]
    assert alpha.shape == beta.shape == (4, 5)
    torch.testing.assert_close(alpha + beta, torch.ones(4, 5))
    with torch.no_grad():  # both gates ~0.5 or below: untouched sigmoids
        model.gate_self.bias.fill_(-10.0)
        model.gate_label.bias.fill_(-10.0)
        out = model(make_batch(DOCS))
    total = out.extras["alpha"] + out.extras["beta"]
    assert torch.all(total > 0) and torch.all(total < 0.01)


@pytest.mark.parametrize(("weights", "output"), [("linear", "shared"), ("softmax", "labelwise")])
def test_joint_representation_is_the_gated_sum(weights: str, output: str) -> None:
    # M = α M^S + β M^L and the logits are the sum-pooled two-layer MLP of M: recomputed by hand. Label
    # attention: M^L = [softmax(B→) H→ ; softmax(B←) H←] with B = C H, or [B→ H→ ; B← H←] / n (linear).
    # Output: Z = tanh(FC1 M); labelwise ŷ_c = Σ_j W_cj Z_cj + b_c, shared ŷ_c = Σ_j FC2(Z_c)_j.
    model = build(label_weights=weights, output=output).eval()
    batch = make_batch(DOCS[:2])
    with torch.no_grad():
        out = model(batch)
        h = model.encode(batch)
        k = DIM
        m_self, t_self = model.self_attention(h, batch.mask)
        scores_f = torch.einsum("btk,ck->bct", h[..., :k], model.code_embed)
        scores_b = torch.einsum("btk,ck->bct", h[..., k:], model.code_embed)
        neg = ~batch.mask[:, None, :]
        t_f = F.softmax(scores_f.masked_fill(neg, -1e9), dim=-1)
        t_b = F.softmax(scores_b.masked_fill(neg, -1e9), dim=-1)
        if weights == "softmax":
            m_label = torch.cat([t_f @ h[..., :k], t_b @ h[..., k:]], dim=-1)
        else:
            n = batch.mask.sum(1)[:, None, None].float()
            w_f, w_b = scores_f.masked_fill(neg, 0) / n, scores_b.masked_fill(neg, 0) / n
            m_label = torch.cat([w_f @ h[..., :k], w_b @ h[..., k:]], dim=-1)
        a = torch.sigmoid(m_self @ model.gate_self.weight[0] + model.gate_self.bias)
        b = torch.sigmoid(m_label @ model.gate_label.weight[0] + model.gate_label.bias)
        scale = (a + b).clamp_min(1.0)
        a, b = a / scale, b / scale
        fused = a[..., None] * m_self + b[..., None] * m_label
        z = torch.tanh(model.fc1(fused))
        if output == "labelwise":
            logits = (model.fc2.weight * z).sum(-1) + model.fc2.bias
        else:
            logits = (z @ model.fc2.weight.T + model.fc2.bias).sum(-1)
        attention = (a[..., None] * t_self + b[..., None] * (t_f + t_b) / 2) / (a + b)[..., None]
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)
    assert out.attention is not None
    torch.testing.assert_close(out.attention, attention, atol=1e-6, rtol=1e-5)


# -- denoising: the schedule inside the model ----------------------------------------------------------


def test_drop_rate_follows_the_schedule() -> None:
    model = build()
    assert model.drop_rate() == 0.0  # no progress reported yet: plain BCE
    model.set_training_progress(5, 100, 0)
    assert model.drop_rate() == pytest.approx(0.075)
    model.set_training_progress(40, 100, 3)
    assert model.drop_rate() == pytest.approx(0.15)
    slow = build(tloss_max_rate=0.2, tloss_warmup=0.5)
    slow.set_training_progress(25, 100, 1)
    assert slow.drop_rate() == pytest.approx(0.1)
    off = build(denoise=False)
    off.set_training_progress(40, 100, 3)
    assert off.drop_rate() == 0.0


def test_loss_is_truncated_in_training_and_plain_in_eval() -> None:
    model = build()
    batch = make_batch(DOCS, TARGETS)
    model.set_training_progress(50, 100, 2)  # D_T = 0.15; 6 positives → floor(0.9) = 0 dropped
    model.train()
    out = model(batch)
    assert set(model.losses(batch, out)) == {"tloss"}
    big = make_batch(DOCS * 3, TARGETS * 3)  # 18 positives → floor(2.7) = 2 dropped
    out = model(big)
    assert big.targets is not None
    expected = truncated_bce_with_logits(out.logits, big.targets, 0.15)
    torch.testing.assert_close(model.losses(big, out)["tloss"], expected)
    plain = F.binary_cross_entropy_with_logits(out.logits, big.targets)
    assert abs(expected.item() - plain.item()) > 1e-4  # the two largest positive terms are gone
    model.eval()
    torch.testing.assert_close(model.losses(big, out)["tloss"], plain)
    off = build(denoise=False)
    assert set(off.losses(big, off(big))) == {"bce"}


def test_document_mode_drops_whole_documents() -> None:
    model = build(tloss_mode="document", tloss_warmup=0.0, tloss_max_rate=0.5).train()
    model.set_training_progress(0, 10, 0)
    batch = make_batch(DOCS, TARGETS)
    out = model(batch)
    assert batch.targets is not None
    losses = F.binary_cross_entropy_with_logits(out.logits, batch.targets, reduction="none")
    kept = losses.mean(1).argsort()[:2]  # floor(0.5 × 4) = 2 worst documents dropped
    torch.testing.assert_close(model.losses(batch, out)["tloss"], losses[kept].mean())


def test_trainer_reports_progress_before_every_micro_batch(tmp_path: Path) -> None:
    from icdcoder.training.config import TrainConfig
    from icdcoder.training.trainer import Trainer
    from tiny_model import tiny_ctx, tiny_split

    ctx = tiny_ctx()
    model = build(ctx, label_init="random")
    calls: list[tuple[int, int, int]] = []
    real = model.set_training_progress

    def spy(step: int, total_steps: int, epoch: int) -> None:
        calls.append((step, total_steps, epoch))
        real(step, total_steps, epoch)

    model.set_training_progress = spy
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum=2, patience=0, progress=False, seed=1)
    Trainer(
        model, tiny_split(16, seed=1), tiny_split(8, seed=2), cfg, tmp_path, lambda p: {"f1_micro": 0.0}
    ).fit()
    # 16 docs / micro-batch 2 = 8 micro-batches = 4 steps per epoch, 8 planned steps
    assert len(calls) == 16
    assert calls[:4] == [(0, 8, 0), (0, 8, 0), (1, 8, 0), (1, 8, 0)]
    assert calls[8:10] == [(4, 8, 1), (4, 8, 1)]
    assert model._progress == (7, 8)


# -- common checks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_evidence_attention(mode: str) -> None:
    model = build(attention=mode).eval()
    with torch.no_grad():
        out = model(make_batch(DOCS, TARGETS))
    assert out.logits.shape == (4, 5) and torch.isfinite(out.logits).all()
    assert out.attention is not None and out.attention.shape == (4, 5, 7)
    sums = out.attention.sum(-1)
    torch.testing.assert_close(sums[:3], torch.ones(3, 5))  # rows are distributions over real tokens
    assert torch.all(sums[3] == 0)  # an empty note: no evidence, no NaN
    assert torch.all(out.attention[1, :, 4:] == 0) and torch.all(out.attention[2, :, 1:] == 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weights", ["linear", "softmax"])
def test_padding_and_batching_do_not_change_outputs(mode: str, weights: str) -> None:
    model = build(attention=mode, num_res_blocks=2, label_weights=weights).eval()
    with torch.no_grad():
        ref = model(make_batch(DOCS))
        padded = model(make_batch(DOCS, extra_pad=6))
        torch.testing.assert_close(padded.logits, ref.logits, atol=1e-5, rtol=1e-5)
        assert ref.attention is not None and padded.attention is not None
        torch.testing.assert_close(padded.attention[..., :7], ref.attention, atol=1e-5, rtol=1e-5)
        assert torch.all(padded.attention[..., 7:] == 0)
        for i, doc in enumerate(DOCS):
            alone = model(make_batch([doc]))
            torch.testing.assert_close(alone.logits[0], ref.logits[i], atol=1e-5, rtol=1e-5)


def test_long_notes_stay_finite() -> None:
    model = build().eval()
    doc = [int(x) for x in np.random.default_rng(1).integers(1, VOCAB, size=2500)]
    with torch.no_grad():
        out = model(make_batch([doc, [3]]))
    assert out.attention is not None and out.attention.shape == (2, 5, 2500)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.attention).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "extra",
    [{}, {"code_bias": True, "num_res_blocks": 0}, {"output": "labelwise", "res_block": "multirescnn"}],
)
def test_gradients_reach_every_parameter(mode: str, extra: dict[str, Any]) -> None:
    model = build(attention=mode, **extra).train()
    model.set_training_progress(50, 100, 1)
    batch = make_batch(DOCS, TARGETS)
    total = sum(model.losses(batch, model(batch)).values())
    assert isinstance(total, torch.Tensor)
    total.backward()
    names = {n for n, _ in model.named_parameters()}
    assert ("self_attention.queries" in names) == (mode != "label")
    assert ("code_embed" in names) == (mode != "self")
    assert ("gate_self.weight" in names) == (mode == "joint")
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", MODES)
def test_overfits_a_tiny_batch(mode: str) -> None:
    # Dropout on 8-d embeddings slows a 60-step fit. No one-token note: with the shared output layer every
    # code of such a note gets the same self-attention context, so "self" could not fit its targets.
    model = build(attention=mode, dropout=0.0).train()
    batch = make_batch(DOCS[:2], TARGETS[:2])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = last = 0.0
    for step in range(60):
        model.set_training_progress(step, 60, 0)
        opt.zero_grad()
        out = model(batch)
        loss = sum(model.losses(batch, out).values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
        assert batch.targets is not None
        bce = F.binary_cross_entropy_with_logits(out.logits, batch.targets).item()
        first = bce if step == 0 else first
        last = bce
    assert last < 0.5 * first, (first, last)


def test_code_vectors_start_from_the_descriptions() -> None:
    ctx = make_ctx()
    model = build(ctx)
    assert ctx.embeddings is not None
    for i, toks in enumerate(ctx.label_token_ids):
        expected = torch.from_numpy(ctx.embeddings[toks].mean(axis=0))
        torch.testing.assert_close(model.code_embed.data[i], expected)
    rand = build(ctx, label_init="random")
    assert not torch.allclose(rand.code_embed.data[0], model.code_embed.data[0])
    no_titles = build(make_ctx(label_token_ids=[]))  # no descriptions: random start
    assert no_titles.code_embed.shape == (5, DIM)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="kernal_size"):
        build_model({"name": "jlan", "kernal_size": 3}, make_ctx())
    with pytest.raises(ConfigError, match=r"model\.attention"):
        build_model({"name": "jlan", "attention": "both"}, make_ctx())
    with pytest.raises(ConfigError, match="tloss_max_rate"):
        build_model({"name": "jlan", "tloss_max_rate": 1.5}, make_ctx())
    with pytest.raises(ConfigError, match=r"embed_dim \(8\) = hidden_size \(6\)"):
        build(hidden_size=6)
    with pytest.raises(ConfigError, match="2 code descriptions for 5 codes"):
        build(make_ctx(label_token_ids=[[1], [2]]))
    assert build(hidden_size=6, label_init="random").code_embed.shape == (5, 6)


def test_published_defaults() -> None:
    cfg = build_model({"name": "jlan"}, make_ctx(embeddings=None)).config.model_dump()
    assert (cfg["embed_dim"], cfg["hidden_size"], cfg["d_a"], cfg["num_res_blocks"]) == (256, 256, 200, 1)
    assert (cfg["attention"], cfg["denoise"], cfg["tloss_max_rate"]) == ("joint", True, 0.15)
    assert (cfg["tloss_mode"], cfg["tloss_scope"], cfg["tloss_warmup"]) == ("entry", "positive", 0.1)
    assert (cfg["output"], cfg["label_weights"], cfg["label_init"]) == ("shared", "linear", "description")
    assert cfg["res_block"] == "plain"


# -- end to end: CLI train on a prepared dataset, save, predict -------------------------------------------

WORDS = {
    "icd10cm:I10": "hypertension blood pressure elevated",
    "icd10cm:E11.9": "diabetes glucose insulin metformin",
    "icd10cm:J44.9": "copd emphysema dyspnea inhaler",
}
FILLER = "patient admitted today stable discharged home follow clinic review".split()


def _write_dataset(path: Path) -> None:
    from icdcoder.data.document import Document
    from icdcoder.data.prepared import write_prepared

    rng = np.random.default_rng(0)
    keys = list(WORDS)
    docs = []
    for i in range(48):
        split = "train" if i < 32 else "dev" if i < 40 else "test"
        codes = [k for k in keys if rng.random() < 0.45] or [keys[i % 3]]
        words = list(rng.choice(FILLER, size=12))
        for k in codes:
            words += WORDS[k].split()
        rng.shuffle(words)
        docs.append(Document(f"n{i}", " ".join(words) + ".", codes, split))
    write_prepared(path, docs, source="unit")


def test_trains_saves_and_predicts_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icdcoder.cli import app
    from icdcoder.inference.predictor import Predictor

    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _write_dataset(data)
    config = tmp_path / "jlan.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset_name": "synthetic",
                "data": {"source": "prepared", "path": str(data), "max_tokens": 2500},
                "embeddings": {"word2vec": False},
                "model": {"name": "jlan", **SMALL},
                "train": {"epochs": 4, "batch_size": 4, "lr": 0.01, "patience": 0, "progress": False},
            }
        )
    )
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(config), "--out", str(run), "--set", "train.num_threads=1"]
    )
    assert result.exception is None, result.exception
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "run.json").read_text())
    assert summary["model"] == "jlan" and summary["n_labels"] == 3
    assert 0 <= summary["test"]["f1_micro"] <= 1
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r["kind"] == "dev"]
    train = [r for r in records if r["kind"] == "train"]
    assert len(dev) == 4 and all("dev_bce" in r and "train_tloss" in r for r in dev)
    assert all(0 < r["dev_bce"] < 5 for r in dev)
    assert dev[-1]["train_tloss"] < dev[0]["train_tloss"]  # it learns (quality is not the point here)
    assert train[0]["tloss"] > 0 and len(train) == 4 * 8  # 32 train notes / batch 4, each step logged

    # The saved model directory predicts a new note: the same probabilities as the trained model in memory
    # would give, ranked, with evidence spans inside the note.
    predictor = Predictor(run / "model")
    note = "Follow up: diabetes on metformin, glucose fine; no copd."
    [pred] = predictor.predict([("new", note)], top_k=3)
    assert sorted(c.key for c in pred.codes) == sorted(WORDS)
    probs = [c.probability for c in pred.codes]
    assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)
    for code in pred.codes:
        assert code.evidence and all(0 <= s.start < s.end <= len(note) for s in code.evidence)
    [again] = Predictor(run / "model").predict([("new", note)], top_k=3)
    assert [c.probability for c in again.codes] == probs  # eval mode: deterministic


def test_registered() -> None:
    from icdcoder.models.base import get_model_class

    assert get_model_class("jlan") is JLAN
    assert issubclass(JLAN, IcdModel)


@pytest.mark.parametrize(("layers", "bidirectional"), [(1, True), (2, True), (2, False)])
def test_bilstm_encoder_matches_packed_sequences(layers: int, bidirectional: bool) -> None:
    # The shared BiLSTMEncoder runs the backward direction on rows reversed within their length instead of
    # packing (packed LSTM backward is quadratic in length on CPU); outputs and gradients must be the same.
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from icdcoder.models.encoders import BiLSTMEncoder

    torch.manual_seed(0)
    enc = BiLSTMEncoder(6, 5, num_layers=layers, dropout=0.3, bidirectional=bidirectional).eval()
    x = torch.randn(4, 9, 6, requires_grad=True)
    lengths = torch.tensor([9, 4, 1, 7])
    mask = torch.arange(9)[None, :] < lengths[:, None]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref, _ = pad_packed_sequence(enc.lstm(packed)[0], batch_first=True, total_length=9)
    out = enc(x, mask)
    torch.testing.assert_close(out, ref * mask[..., None], atol=1e-6, rtol=1e-5)
    (grad_ref,) = torch.autograd.grad((ref * mask[..., None]).square().sum(), x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(grad, grad_ref, atol=1e-6, rtol=1e-5)


def test_label_noise_corruption_is_seeded_and_keeps_dev_clean() -> None:
    import importlib.util

    from icdcoder.data.document import Document, Evidence

    path = Path(__file__).parents[1] / "benchmarks" / "jlan_noise.py"
    spec = importlib.util.spec_from_file_location("jlan_noise", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    codes = [f"icd10cm:A0{i}" for i in range(8)]
    docs = [
        Document(
            f"t{i}",
            "x",
            [codes[i % 8], codes[(i + 3) % 8]],
            "train",
            evidence=[Evidence(codes[i % 8], ((0, 1),), "x")],
        )
        for i in range(200)
    ] + [Document("d0", "x", [codes[0]], "dev")]
    noisy, report = mod.corrupt_labels(docs, 0.2, seed=5)
    again, _ = mod.corrupt_labels(docs, 0.2, seed=5)
    assert [d.codes for d in noisy] == [d.codes for d in again]  # reproducible
    assert report["train_assignments"] == 400
    assert 0.15 < report["replaced_share"] < 0.25
    changed = sum(len(set(a.codes) - set(b.codes)) for a, b in zip(noisy, docs, strict=True))
    assert changed == report["replaced"]
    assert all(len(set(d.codes)) == 2 for d in noisy[:200])  # a replacement is never a duplicate
    assert noisy[-1] is docs[-1]  # dev untouched
    for a in noisy[:200]:
        assert all(e.code in a.codes for e in a.evidence)  # evidence of replaced codes dropped
    clean, rep0 = mod.corrupt_labels(docs, 0.0, seed=5)
    assert rep0["replaced"] == 0 and [d.codes for d in clean][:200] == [sorted(d.codes) for d in docs[:200]]

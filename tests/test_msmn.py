"""MSMN: lean vs reference equivalence, heads/synonyms/scoring switches, R-Drop terms, the eval cache, and the
train → model directory → predict path through the CLI on a tiny prepared dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, ModelContext, build_model
from icdcoder.models.msmn import MSMN, rdrop_kl, synonym_chunks

V = 40
KEYS = [f"icd10cm:A0{i}" for i in range(7)]


pytestmark = pytest.mark.usefixtures("one_thread")


def synonyms(m: int, n_codes: int = len(KEYS), absent: bool = True, seed: int = 0) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    rows = [
        [[int(x) for x in rng.integers(2, V, size=int(rng.integers(1, 6)))] for _ in range(m)]
        for _ in range(n_codes)
    ]
    if absent and m > 2:  # absent slots (synonym_policy "drop"); every code keeps one
        rows[2][m - 1] = []
        rows[5][1] = rows[5][2] = []
    return rows


def make_model(m: int = 4, absent: bool = True, **kw: Any) -> MSMN:
    ctx = ModelContext(label_keys=KEYS, vocab_size=V, label_synonym_token_ids=synonyms(m, absent=absent))
    cfg: dict[str, Any] = {
        "name": "msmn",
        "embed_dim": 6,
        "rnn_dim": 8,
        "num_layers": 2,
        "attention_dim": 16,
        "synonyms": m,
        "embed_dropout": 0.0,
        "lstm_dropout": 0.0,
        "rep_dropout": 0.0,
        "rdrop_alpha": 0.0,
        "label_chunk_size": 3,  # does not divide 7 codes
        "synonym_chunk_size": 4,
    }
    cfg.update(kw)
    torch.manual_seed(0)
    model = build_model(cfg, ctx)
    assert isinstance(model, MSMN)
    return model


def make_batch(lengths: list[int], width: int | None = None, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.randint(2, V, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    ids[~mask] = 0
    targets = (torch.rand(len(lengths), len(KEYS), generator=g) > 0.6).float()
    return Batch(ids, mask, mask.sum(1), [f"d{i}" for i in range(len(lengths))], targets)


def run(model: MSMN, batch: Batch, reference: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.reference = reference
    model.zero_grad()
    out = model(batch)
    torch.stack(list(model.losses(batch, out).values())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize("scoring", ["biaffine", "dot", "labelwise"])
def test_lean_equals_reference_forward_and_gradients(scoring: str) -> None:
    model = make_model(scoring=scoring)
    model.train()
    batch = make_batch([9, 5, 1], width=11)  # padding, and a one-token note
    lean_logits, lean_grads = run(model, batch, reference=False)
    ref_logits, ref_grads = run(model, batch, reference=True)
    torch.testing.assert_close(lean_logits, ref_logits, atol=1e-5, rtol=0)
    assert lean_grads.keys() == ref_grads.keys() == {n for n, _ in model.named_parameters()}
    for name in ref_grads:
        torch.testing.assert_close(lean_grads[name], ref_grads[name], atol=1e-5, rtol=0, msg=name)
        assert ref_grads[name].abs().sum() > 0, name


def test_lean_equals_reference_attention_in_eval() -> None:
    model = make_model().eval()
    batch = make_batch([9, 5, 1], width=11)
    with torch.no_grad():
        model.reference = False
        lean = model(batch)
        model.reference = True
        ref = model(batch)
    assert lean.attention is not None and ref.attention is not None
    assert lean.attention.shape == (3, len(KEYS), 11)
    torch.testing.assert_close(lean.logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(lean.attention, ref.attention, atol=1e-6, rtol=0)
    assert float(lean.attention[:, :, 9:].abs().max()) == 0.0  # padding gets no weight
    assert float(lean.attention[2, :, 1:].abs().max()) == 0.0
    # the max over heads of per-head distributions: each row lies between 1 and the number of heads
    sums = lean.attention[0].sum(-1)
    assert bool((sums >= 1 - 1e-5).all()) and bool((sums <= 4 + 1e-5).all())


def test_absent_synonyms_are_masked_out() -> None:
    """A code's absent slot must not change anything: compare with the same code given fewer heads' worth."""
    model = make_model().eval()
    batch = make_batch([6, 4])
    with torch.no_grad():
        base = model(batch).logits
        # changing the (unused) features of an absent slot changes nothing
        model.syn_ids[model.syn_slot == 2 * 4 + 3] = 7
        assert int((model.syn_slot == 2 * 4 + 3).sum()) == 0  # absent slots are never encoded
        q = model.synonym_features()
        assert float(q[2, 3].abs().max()) == 0.0 and float(q[5, 1:3].abs().max()) == 0.0
        model.train().eval()
        torch.testing.assert_close(model(batch).logits, base)


def test_synonym_chunks_hand_computed() -> None:
    lengths = [5] * 3 + [4] * 6 + [3] * 2 + [2] + [1] * 9  # sorted by descending length
    # CPU: lengths with >= 4 synonyms: unpacked equal-length chunks of <= 4; rarer lengths pooled and packed
    assert synonym_chunks(lengths, 4, by_length=True) == [
        (0, 3, True),
        (3, 7, False),
        (7, 9, False),
        (9, 12, True),
        (12, 16, False),
        (16, 20, False),
        (20, 21, False),
    ]
    assert synonym_chunks(lengths, 8, by_length=False) == [(0, 8, True), (8, 16, True), (16, 21, True)]
    assert synonym_chunks([3, 3], 4096, by_length=True) == [(0, 2, True)]


def test_padding_does_not_change_outputs_in_eval() -> None:
    model = make_model().eval()
    batch = make_batch([7, 3])
    padded = Batch(F.pad(batch.token_ids, (0, 8)), F.pad(batch.mask, (0, 8)), batch.lengths, batch.doc_ids)
    with torch.no_grad():
        a, b = model(batch), model(padded)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    assert a.attention is not None and b.attention is not None
    torch.testing.assert_close(a.attention, b.attention[:, :, :7], atol=1e-6, rtol=0)


@pytest.mark.parametrize("m", [1, 2, 4, 8, 16])
def test_synonym_count_ablation(m: int) -> None:
    model = make_model(m=m, absent=False)
    assert model.u_reduce.out_features == 16 // m
    out = model.train()(make_batch([5, 3]))
    assert out.logits.shape == (2, len(KEYS))


def test_heads_must_divide_attention_dim() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        make_model(m=3, attention_dim=16)


def test_scoring_switches_parameters() -> None:
    assert hasattr(make_model(scoring="biaffine"), "biaffine_w")
    dot = make_model(scoring="dot")
    assert not hasattr(dot, "biaffine_w") and hasattr(dot, "biaffine_b")
    lw = make_model(scoring="labelwise")
    assert not hasattr(lw, "biaffine_b") and lw.output.weight.shape == (len(KEYS), 16)


def test_missing_synonyms_in_context_are_refused() -> None:
    ctx = ModelContext(label_keys=KEYS, vocab_size=V)
    with pytest.raises(ConfigError, match="tokenised synonyms"):
        build_model({"name": "msmn", "synonyms": 4, "attention_dim": 16}, ctx)


def test_rdrop_kl_hand_computed() -> None:
    a = torch.tensor([[0.0, 2.0]])
    b = torch.tensor([[1.0, 2.0]])
    # Bernoulli: ½ (σ(0) − σ(1)) (0 − 1) for the first entry, 0 for the second; mean over 2 entries
    expected = 0.5 * (0.5 - 1 / (1 + math.exp(-1))) * (0 - 1) / 2
    assert rdrop_kl(a, b, "bernoulli").item() == pytest.approx(expected)
    p, q = F.softmax(a, -1), F.softmax(b, -1)
    kl = lambda x, y: float((x * (x / y).log()).sum())  # noqa: E731
    # the authors' compute_kl_loss: each direction's element-wise KL averaged over the B × C = 2 entries
    assert rdrop_kl(a, b, "softmax_labels").item() == pytest.approx(0.5 * (kl(p, q) + kl(q, p)) / 2)
    # a mean, not a sum: repeating the batch leaves it unchanged
    assert rdrop_kl(torch.cat([a, a]), torch.cat([b, b]), "softmax_labels").item() == pytest.approx(
        rdrop_kl(a, b, "softmax_labels").item()
    )
    assert rdrop_kl(a, a, "bernoulli").item() == 0.0


@pytest.mark.parametrize("kind", ["bernoulli", "softmax_labels"])
def test_rdrop_two_passes_and_loss_terms(kind: str) -> None:
    model = make_model(rdrop_alpha=5.0, rdrop_kl=kind, embed_dropout=0.5, rep_dropout=0.5).train()
    batch = make_batch([6, 4])
    out = model(batch)
    second = out.extras["logits_rdrop"]
    assert out.attention is None and second.shape == out.logits.shape
    assert not torch.allclose(out.logits, second)  # different dropout masks
    terms = model.losses(batch, out)
    assert set(terms) == {"bce", "rdrop"}
    assert batch.targets is not None
    bce = 0.5 * (
        F.binary_cross_entropy_with_logits(out.logits, batch.targets)
        + F.binary_cross_entropy_with_logits(second, batch.targets)
    )
    torch.testing.assert_close(terms["bce"], bce)
    torch.testing.assert_close(terms["rdrop"], 5.0 * rdrop_kl(out.logits, second, kind))
    assert float(terms["rdrop"].detach()) > 0
    model.eval()
    with torch.no_grad():
        assert "logits_rdrop" not in model(batch).extras
    assert set(make_model().train().losses(batch, make_model().train()(batch))) == {"bce"}


def test_eval_cache_reused_and_invalidated(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model().eval()
    calls = []
    original = MSMN.synonym_features

    def counting(self: MSMN) -> torch.Tensor:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(MSMN, "synonym_features", counting)
    batch = make_batch([5, 3])
    with torch.no_grad():
        first = model(batch).logits
        model(batch)
    assert len(calls) == 1  # encoded once for evaluation
    with torch.no_grad():
        model.u_reduce.weight.add_(0.5)  # e.g. an optimizer step or load_state_dict while in eval mode
        changed = model(batch).logits
    assert len(calls) == 2 and not torch.allclose(first, changed)
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    model.train()
    model.eval()
    with torch.no_grad():
        model(batch)
    assert len(calls) == 3
    model(batch)  # gradients enabled: never served from the cache
    assert len(calls) == 4


def test_overfits_a_tiny_batch() -> None:
    model = make_model(label_chunk_size=512, synonym_chunk_size=4096)
    batch = make_batch([8, 6, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=0.03)
    losses = []
    for _ in range(40):
        model.train()
        terms = model.losses(batch, model(batch))
        loss = sum(terms.values())
        assert isinstance(loss, torch.Tensor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(terms["bce"].detach()))
    assert losses[-1] < 0.45 * losses[0]


def test_extend_context_with_a_user_synonym_file(tmp_path: Path) -> None:
    path = tmp_path / "syn.tsv"
    path.write_text("icd10cm:A00\tcholera due to vibrio\nicd10cm:A00\t123 456\n", encoding="utf-8")
    ctx = ModelContext(label_keys=["icd10cm:A00", "icd10cm:A01"], vocab_size=V, label_token_ids=[[5, 6], [7]])
    cfg = MSMN.Config.model_validate(
        {
            "name": "msmn",
            "synonyms": 3,
            "synonym_source": str(path),
            "synonym_policy": "drop",
            "attention_dim": 6,
        }
    )
    words = {"cholera": 11, "due": 12, "to": 13, "vibrio": 14, "typhoid": 15, "fever": 16}

    def encode(text: str) -> list[int]:  # drops numbers, like the real tokenizer
        return [words.get(w, 1) for w in text.lower().split() if not w.isdigit()]

    MSMN.extend_context(cfg, ctx, ["Cholera", "Typhoid fever"], encode)
    # A00: title, file synonym, and "123 456" (only numbers → the title's tokens); A01: title only + 2 absent
    assert ctx.label_synonym_token_ids == [[[11], [11, 12, 13, 14], [5, 6]], [[15, 16], [], []]]
    saved = ctx.extras["label_synonyms"]
    assert saved["sources"][1] == ["title", "absent", "absent"]
    assert saved["report"]["missing_codes"] == 1
    json.dumps(ctx.extras)  # saved in context.json
    model = build_model(cfg, ctx)
    assert isinstance(model, MSMN)
    assert model.present.tolist() == [[True, True, True], [True, False, False]]


# -- end to end: CLI train → model directory → predict ----------------------------------------------------
WORDS = ["fever", "cough", "pain", "chest", "renal", "failure", "diabetes", "insulin", "fracture", "femur"]
CODES = {"icd10cm:R50.9": ["fever"], "icd10cm:R07.9": ["chest", "pain"], "icd10cm:N19": ["renal", "failure"]}


def _docs(n: int, split: str, seed: int) -> list[Any]:
    from icdcoder.data.document import Document

    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        codes = [c for c in CODES if rng.random() < 0.5] or ["icd10cm:R50.9"]
        words = list(rng.choice(WORDS, size=12))
        for c in codes:
            words += CODES[c]
        rng.shuffle(words)
        docs.append(
            Document(
                id=f"{split}{i}", text="Patient note: " + " ".join(words) + ".", codes=codes, split=split
            )
        )
    return docs


def test_train_and_predict_through_the_cli(tmp_path: Path) -> None:
    from icdcoder.cli import app
    from icdcoder.data.prepared import write_prepared

    data = tmp_path / "data"
    write_prepared(data, _docs(16, "train", 0) + _docs(6, "dev", 1) + _docs(4, "test", 2), source="unit")
    config = yaml.safe_load(Path("configs/codiesp-d/msmn.yaml").read_text(encoding="utf-8"))
    config["data"] = {"source": "prepared", "path": str(data)}
    config_path = tmp_path / "msmn.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_dir = tmp_path / "run"
    overrides = [
        "embeddings.word2vec=false",
        "model.embed_dim=8",
        "model.rnn_dim=8",
        "model.attention_dim=8",
        "train.epochs=1",
        "train.batch_size=4",
        "train.progress=false",
    ]
    args = ["train", str(config_path), "--out", str(run_dir)]
    for o in overrides:
        args += ["--set", o]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert summary["model"] == "msmn" and "test" in summary
    context = json.loads((run_dir / "model" / "context.json").read_text(encoding="utf-8"))
    assert len(context["label_synonym_token_ids"]) == 3
    assert all(len(r) == 4 for r in context["label_synonym_token_ids"])
    assert context["extras"]["label_synonyms"]["texts"][0][0]  # long title first, with provenance
    note = tmp_path / "note.txt"
    note.write_text("Chest pain and fever since yesterday, no renal failure.", encoding="utf-8")
    res = runner.invoke(app, ["predict", str(run_dir / "model"), str(note), "--format", "json"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.output)
    assert pred[0]["id"] == "note" and {c["key"] for c in pred[0]["codes"]} == set(CODES)
    assert all(c["evidence"] for c in pred[0]["codes"])  # spans from the max-over-heads attention

"""MSAM: the authors' equations on hand-made tensors, chunking, padding, the frozen synonym matrix, the
prior-initialised bias, the chunked Hugging Face encoder (max over windows) and training end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, ModelContext, build_model, get_model_class, validate_model_config
from icdcoder.models.msam import MSAM
from test_plm_icd import _batch, make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")

V = 30
KEYS = [f"icd10cm:A0{i}" for i in range(7)]


def synonym_rows(m: int, seed: int = 0) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    return [
        [[int(x) for x in rng.integers(2, V, size=int(rng.integers(1, 5)))] for _ in range(m)] for _ in KEYS
    ]


def make_model(m: int = 2, **kw: Any) -> MSAM:
    emb = np.random.default_rng(3).normal(size=(V, 6)).astype(np.float32)
    ctx = ModelContext(label_keys=KEYS, vocab_size=V, embeddings=emb, label_synonym_token_ids=synonym_rows(m))
    cfg: dict[str, Any] = {
        "name": "msam",
        "encoder": "lstm",
        "embed_dim": 6,
        "rnn_dim": 8,
        "embed_dropout": 0.0,
        "synonyms": m,
        "label_chunk_size": 3,  # does not divide 7 codes
    }
    cfg.update(kw)
    torch.manual_seed(0)
    model = build_model(cfg, ctx)
    assert isinstance(model, MSAM)
    return model


def make_batch(lengths: list[int], width: int | None = None, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.randint(2, V, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    ids[~mask] = 0
    targets = (torch.rand(len(lengths), len(KEYS), generator=g) > 0.6).float()
    return Batch(ids, mask, mask.sum(1), [f"d{i}" for i in range(len(lengths))], targets)


def authors_logits(model: MSAM, h: torch.Tensor) -> torch.Tensor:
    """The authors' MultiSynonymsAttention + SynonymsScaledDotProductAttention, transcribed (no mask)."""
    q, n_heads, d_k = model.synonym_matrix, model.heads, model.d_k
    c, b = q.shape[0], h.shape[0]
    q_s = model.w_q(q).view(c, -1, n_heads, d_k).transpose(1, 2)  # [C, heads, S, d_k]
    k_s = model.w_k(h).view(b, -1, n_heads, d_k).transpose(1, 2)  # [B, heads, T, d_k]
    wql = model.w_v(q.mean(dim=1))
    values = h.view(b, -1, n_heads, d_k).transpose(1, 2)
    scores = torch.einsum("bzth,czsh->bczst", torch.tanh(k_s), q_s)
    attn = torch.softmax(scores, dim=-1)
    context = torch.einsum("bzth,bczst->bczsh", torch.tanh(values), attn).mean(dim=3)  # AvgPool3d over S
    context = context.reshape(b, c, n_heads * d_k)  # `.view`: heads concatenated per code
    return torch.einsum("bch,ch->bc", context, wql)


def test_matches_the_authors_equations_on_unpadded_notes() -> None:
    model = make_model(m=2).eval()
    batch = make_batch([6, 6])
    with torch.no_grad():
        out = model(batch)
        h = model.text(model.embed(batch.token_ids, batch.mask), batch.mask)
        expected = authors_logits(model, h)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    assert out.attention is not None and out.attention.shape == (2, len(KEYS), 6)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, len(KEYS)))


def test_head_count_is_m_and_must_divide_the_hidden_size() -> None:
    assert make_model(m=4).heads == 4 and make_model(m=4).d_k == 2
    with pytest.raises(ConfigError, match="not divisible"):
        make_model(m=3)


def test_code_chunks_and_padding_do_not_change_outputs() -> None:
    model = make_model(m=2).eval()
    batch = make_batch([3, 7, 5])
    with torch.no_grad():
        ref = model(batch).logits
        model.cfg = model.cfg.model_copy(update={"label_chunk_size": 100})
        torch.testing.assert_close(model(batch).logits, ref)
        pad = torch.nn.functional.pad
        wide = Batch(pad(batch.token_ids, (0, 4)), pad(batch.mask, (0, 4)), batch.lengths, batch.doc_ids)
        torch.testing.assert_close(model(wide).logits, ref, atol=1e-5, rtol=1e-5)
        alone = Batch(batch.token_ids[:1, :3], batch.mask[:1, :3], batch.lengths[:1], ["d0"])
        torch.testing.assert_close(model(alone).logits[0], ref[0], atol=1e-5, rtol=1e-5)


def test_synonym_matrix_is_frozen_mean_of_initial_word_vectors() -> None:
    model = make_model(m=2)
    rows = synonym_rows(2)
    emb = model.embed.embedding.weight.detach()
    want = torch.stack([torch.stack([emb[torch.tensor(ids)].mean(0) for ids in row]) for row in rows])
    torch.testing.assert_close(model.synonym_matrix, want)
    assert "synonym_matrix" in model.state_dict()  # saved with the weights: never recomputed at load
    assert all(p is not model.synonym_matrix for p in model.parameters())
    # training changes the parameters, never the matrix
    batch = make_batch([5, 4])
    before = model.synonym_matrix.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        loss = sum(model.losses(batch, model(batch)).values())
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    torch.testing.assert_close(model.synonym_matrix, before)


def test_checkpointed_training_path_gives_the_eval_gradients() -> None:
    model = make_model(m=2)
    batch = make_batch([5, 4])
    model.train()
    model.zero_grad()
    model.losses(batch, model(batch))["bce"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert {"w_q.weight", "w_k.weight", "w_v.weight", "embed.embedding.weight"} <= set(grads)
    model.zero_grad()
    with model.scores_only():  # eval-style path (no checkpoint): same numbers
        model.eval()
        out = model(batch)
        model.losses(batch, out)["bce"].backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


def test_prior_bias_option() -> None:
    model = make_model(m=2)
    assert model.bias is None and not any(n == "bias" for n, _ in model.named_parameters())
    emb = np.zeros((V, 6), dtype=np.float32)
    ctx = ModelContext(
        label_keys=KEYS,
        vocab_size=V,
        embeddings=emb,
        label_synonym_token_ids=synonym_rows(2),
        n_train_docs=10,
        label_train_counts=[1, 5, 0, 10, 2, 2, 9],
    )
    cfg = {"name": "msam", "encoder": "cnn", "embed_dim": 6, "num_filters": 4, "kernel_size": 3}
    cfg["synonyms"] = 2
    prior = build_model({**cfg, "bias": "prior"}, ctx)
    assert isinstance(prior, MSAM) and prior.bias is not None
    # log(p/(1-p)) with counts clipped to [0.5, 9.5]
    want = [np.log(1 / 9), 0.0, np.log(0.5 / 9.5), np.log(9.5 / 0.5), np.log(2 / 8), np.log(2 / 8), np.log(9)]
    np.testing.assert_allclose(prior.bias.detach().numpy(), want, rtol=1e-5)
    # training without the counts is refused rather than silently starting at 0
    ctx.init_from_pretrained = True
    ctx.label_train_counts = []
    with pytest.raises(ConfigError, match="training label counts"):
        build_model({**cfg, "bias": "prior"}, ctx)


# -- the chunked Hugging Face encoder ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def _hf_model(path: Path, **cfg: Any) -> MSAM:
    from icdcoder.text.hf_tokenizer import HFTokenizer

    config = {"name": "msam", "encoder": "hf", "pretrained": str(path), "synonyms": 2, "window": 4}
    config.update(stride=2, synonym_selection="random")
    config.update(cfg)
    cls = get_model_class("msam")
    keys = ["icd10cm:I10", "icd10cm:R50.9", "icd10cm:N17.9"]
    ctx = ModelContext(label_keys=keys, vocab_size=0, init_from_pretrained=True)
    tok = HFTokenizer.from_pretrained(path)
    vocab = tok.vocab()
    titles = ["essential hypertension", "fever", "acute kidney failure"]
    ctx.label_token_ids = [vocab.encode(tok.words(t)) for t in titles]
    cls.extend_context(validate_model_config(cls, config), ctx, titles, lambda s: vocab.encode(tok.words(s)))
    torch.manual_seed(0)
    model = build_model(config, ctx)
    assert isinstance(model, MSAM)
    return model


def test_chunk_encoding_max_pools_window_logits(bert_dir: Path) -> None:
    from icdcoder.text.hf_tokenizer import HFTokenizer

    tok = HFTokenizer.from_pretrained(bert_dir)
    model = _hf_model(bert_dir).eval()
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(
        lambda _m, args, kwargs, _out: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    long = "essential hypertension and acute kidney failure ."  # 7 subwords: windows [0,4) [2,6) [4,7)
    short = "fever ."
    both = _batch(tok, [long, short])
    with torch.no_grad():
        out = model(both)
    assert seen == [(4, 6)]  # 3 windows + 1, each with [CLS] and [SEP]
    # each window alone is a note of one window: the note's logits are the max over them
    ids = both.token_ids[0]
    singles = []
    with torch.no_grad():
        for a, b in [(0, 4), (2, 6), (4, 7)]:
            part = ids[a:b][None]
            mask = torch.ones_like(part, dtype=torch.bool)
            singles.append(model(Batch(part, mask, mask.sum(1), ["w"])).logits[0])
    torch.testing.assert_close(out.logits[0], torch.stack(singles).amax(0), atol=1e-5, rtol=1e-5)
    assert out.attention is not None and out.attention.shape == (2, 3, 7)
    assert torch.all(out.attention[1, :, 2:] == 0)
    # the synonym matrix is the pretrained [CLS] of each synonym, frozen
    assert model.synonym_matrix.shape == (3, 2, 16) and not model.synonym_matrix.requires_grad


def _write_data(tmp_path: Path) -> Path:
    from conftest import make_docs
    from icdcoder.data.prepared import write_prepared

    data = tmp_path / "data"
    docs = make_docs(24, 1, "train") + make_docs(8, 2, "dev") + make_docs(6, 3, "test")
    write_prepared(data, docs, source="u")
    return data


def test_train_with_mdp_synonyms_and_predict_through_the_cli(bert_dir: Path, tmp_path: Path) -> None:
    from icdcoder.cli import app

    data = _write_data(tmp_path)
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(data), "max_tokens": 40},
        "embeddings": {"word2vec": False},
        "model": {
            "name": "msam",
            "encoder": "lstm",
            "embed_dim": 8,
            "rnn_dim": 8,
            "synonyms": 2,
            "synonym_selection": "mdp",
            "mdp_encoder": str(bert_dir),  # a local sentence encoder measures diversity
            "bias": "none",
        },
        "train": {"epochs": 1, "batch_size": 8, "progress": False},
    }
    path = tmp_path / "msam.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    context = json.loads((tmp_path / "run" / "model" / "context.json").read_text())
    mdp = context["extras"]["mdp"]
    assert mdp["provenance"]["embedder"].startswith("hf:tiny-bert:mean:")
    assert len(mdp["solver"]) == 5 and mdp["summary"]["codes"] == 5  # the 5 codes of the tiny data
    assert set(mdp["solver"]) <= {"exact", "greedy_swap", "all", "all_embedded"}
    note = tmp_path / "note.txt"
    note.write_text("Essential hypertension and fever.", encoding="utf-8")
    res = runner.invoke(app, ["predict", str(tmp_path / "run" / "model"), str(note), "--format", "json"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.output)
    assert pred[0]["codes"] and all(c["evidence"] for c in pred[0]["codes"][:2])


def test_mdp_without_embeddings_is_a_config_error() -> None:
    cls = get_model_class("msam")
    cfg = validate_model_config(cls, {"name": "msam", "encoder": "lstm", "synonym_selection": "mdp"})
    ctx = ModelContext(label_keys=KEYS[:1], vocab_size=V)
    with pytest.raises(ConfigError, match="needs embeddings"):
        cls.extend_context(cfg, ctx, ["title"], lambda s: [2])


def test_chunked_transformer_msam_trains_and_predicts_without_its_folder(
    bert_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from icdcoder.cli import app

    folder = tmp_path / "bert"
    shutil.copytree(bert_dir, folder)
    data = _write_data(tmp_path)
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(data), "max_tokens": 40},
        "embeddings": {"word2vec": False},
        "model": {
            "name": "msam",
            "encoder": "hf",
            "pretrained": str(folder),
            "window": 16,
            "stride": 8,
            "synonyms": 2,
            "synonym_selection": "mdp",  # diversity in the encoder's own [CLS] space, as the authors did
            "bias": "prior",
        },
        "train": {"epochs": 1, "batch_size": 8, "progress": False, "lr": 0.001},
    }
    path = tmp_path / "msam_hf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    context = json.loads((tmp_path / "run" / "model" / "context.json").read_text())
    assert context["extras"]["mdp"]["provenance"]["embedder"].startswith("hf:bert:cls:")
    shutil.rmtree(folder)  # the synonym matrix and the encoder's weights live in the model directory
    note = tmp_path / "note.txt"
    note.write_text("Essential hypertension and acute kidney failure, fever.", encoding="utf-8")
    res = runner.invoke(app, ["predict", str(tmp_path / "run" / "model"), str(note), "--format", "json"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.output)[0]
    assert pred["codes"] and all(
        note.read_text()[e["start"] : e["end"]] == e["text"] for c in pred["codes"] for e in c["evidence"]
    )

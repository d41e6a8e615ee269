import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, IcdModel, ModelContext, build_model, model_names
from icdcoder.models.caml import DRCAML
from icdcoder.models.encoders import SameConv1d
from icdcoder.models.laat import JointLAAT, level0_key
from icdcoder.models.tfidf import TfidfLogReg

KEYS = [
    "icd9cm-dx:401.9",
    "icd9cm-dx:401.1",
    "icd9cm-dx:428.0",
    "icd9cm-dx:428.22",
    "icd9cm-proc:96.04",
    "icd9cm-proc:96.71",
    "icd10cm:I10",
]
VOCAB = 50
SMALL: dict[str, dict[str, Any]] = {
    "caml": {"embed_dim": 8, "num_filters": 6, "kernel_size": 4},
    "dr_caml": {"embed_dim": 8, "num_filters": 6, "kernel_size": 4, "desc_lambda": 0.1},
    "multirescnn": {"embed_dim": 8, "filter_sizes": [3, 4], "num_filters": 4},
    "laat": {"embed_dim": 8, "hidden_size": 6, "d_a": 5},
    "joint_laat": {"embed_dim": 8, "hidden_size": 6, "d_a": 5, "level_projection_size": 3},
    "tfidf": {},
}
NAMES = list(SMALL)
DOCS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 5, 16], [17], []]
TARGETS = [[1, 0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0]]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_ctx(**kw: Any) -> ModelContext:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(VOCAB, 8)).astype(np.float32)
    emb[0] = 0.0
    doc_freq = [0] + [int(x) for x in rng.integers(1, 4, size=VOCAB - 1)]
    args: dict[str, Any] = {
        "label_keys": KEYS,
        "vocab_size": VOCAB,
        "embeddings": emb,
        "label_token_ids": [[20, 21], [20, 22], [23, 24, 25], [23], [26, 27], [26, 28, 29, 30], [31]],
        "token_doc_freq": doc_freq,
        "n_train_docs": 5,
    }
    args.update(kw)
    return ModelContext(**args)


def make_batch(docs: list[list[int]], targets: list[list[int]] | None = None, extra_pad: int = 0) -> Batch:
    width = max(1, *(len(d) for d in docs)) + extra_pad
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros(len(docs), width, dtype=torch.bool)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d, dtype=torch.long)
        mask[i, : len(d)] = True
    return Batch(
        token_ids=ids,
        mask=mask,
        lengths=mask.sum(1),
        doc_ids=[f"d{i}" for i in range(len(docs))],
        targets=None if targets is None else torch.tensor(targets, dtype=torch.float32),
    )


def build(name: str, ctx: ModelContext | None = None, **kw: Any) -> IcdModel:
    torch.manual_seed(0)
    return build_model({"name": name, **SMALL[name], **kw}, ctx or make_ctx())


def test_registry_has_all_baselines() -> None:
    assert set(NAMES) <= set(model_names())


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_attention_over_token_positions(name: str) -> None:
    model = build(name).eval()
    batch = make_batch(DOCS, TARGETS)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (4, 7) and out.logits.dtype == torch.float32
    assert out.attention is not None
    assert out.attention.shape == (4, 7, 9) and out.attention.dtype == torch.float32
    assert torch.all(out.attention[~batch.mask[:, None, :].expand_as(out.attention)] == 0)
    sums = out.attention.sum(-1)
    if name == "tfidf":  # positive-evidence shares: 1, or 0 when no token supports the code (zero init)
        assert torch.all((sums - 1).abs().lt(1e-5) | sums.eq(0))
    else:
        torch.testing.assert_close(sums[:3], torch.ones(3, 7))
        assert torch.all(sums[3] == 0)  # empty note: no evidence, no NaN
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_padding_and_batching_do_not_change_outputs(name: str) -> None:
    model = build(name).eval()
    with torch.no_grad():
        ref = model(make_batch(DOCS))
        padded = model(make_batch(DOCS, extra_pad=5))
        torch.testing.assert_close(padded.logits, ref.logits, atol=1e-5, rtol=1e-5)
        assert ref.attention is not None and padded.attention is not None
        torch.testing.assert_close(padded.attention[..., :9], ref.attention, atol=1e-5, rtol=1e-5)
        assert torch.all(padded.attention[..., 9:] == 0)
        for i, doc in enumerate(DOCS):
            alone = model(make_batch([doc]))
            torch.testing.assert_close(alone.logits[0], ref.logits[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_lengths_from_1_to_4000(name: str) -> None:
    model = build(name).eval()
    rng = np.random.default_rng(1)
    long_doc = [int(x) for x in rng.integers(1, VOCAB, size=4000)]
    with torch.no_grad():
        for docs in ([[3]], [long_doc, [4, 5]]):
            out = model(make_batch(docs))
            assert out.attention is not None
            assert out.attention.shape == (len(docs), 7, max(len(d) for d in docs))
            assert torch.isfinite(out.logits).all() and torch.isfinite(out.attention).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = build(name).train()
    batch = make_batch(DOCS, TARGETS)
    out = model(batch)
    total = sum(model.losses(batch, out).values())
    assert isinstance(total, torch.Tensor)
    total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_tiny_batch(name: str) -> None:
    model = build(name).train()
    batch = make_batch(DOCS[:3], TARGETS[:3])
    opt = torch.optim.Adam(model.parameters(), lr=0.1 if name == "tfidf" else 0.01)
    first = last = 0.0
    for step in range(50):
        opt.zero_grad()
        out = model(batch)
        terms = model.losses(batch, out)
        loss = sum(terms.values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
        if step == 0:
            first = terms["bce"].item()
        last = terms["bce"].item()
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("caml", {"bce"}),
        ("dr_caml", {"bce", "desc_reg"}),
        ("multirescnn", {"bce"}),
        ("laat", {"bce"}),
        ("joint_laat", {"bce", "bce_level0"}),
        ("tfidf", {"bce"}),
    ],
)
def test_loss_names(name: str, expected: set[str]) -> None:
    model = build(name)
    batch = make_batch(DOCS, TARGETS)
    terms = model.losses(batch, model(batch))
    assert set(terms) == expected
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_is_named(name: str) -> None:
    with pytest.raises(ConfigError, match="kernal_size"):
        build_model({"name": name, "kernal_size": 3}, make_ctx())


def test_bad_config_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"model\.num_filters"):
        build_model({"name": "caml", "num_filters": 0}, make_ctx())
    with pytest.raises(ConfigError, match="unknown model"):
        build_model({"name": "camel"}, make_ctx())


def test_published_defaults() -> None:
    ctx = make_ctx(embeddings=None)
    assert build_model({"name": "caml"}, ctx).config.model_dump() == {
        "name": "caml",
        "embed_dim": 100,
        "freeze_embeddings": False,
        "kernel_size": 10,
        "num_filters": 50,
        "dropout": 0.2,
        "attention_layer_norm": False,
        # informed initialisation (issue 17): off by default, the published initialisation
        "bias_init": "zero",
        "code_init": "random",
        "code_init_synonyms": 4,
    }
    dr = build_model({"name": "dr_caml"}, ctx).config
    assert dr.model_dump()["desc_lambda"] == 0.01
    mr = build_model({"name": "multirescnn"}, ctx).config.model_dump()
    assert mr["filter_sizes"] == (3, 5, 9, 15, 19, 25) and mr["num_filters"] == 50 and mr["dropout"] == 0.2
    jl = build_model({"name": "joint_laat"}, ctx).config.model_dump()
    assert (jl["hidden_size"], jl["d_a"], jl["dropout"], jl["level_projection_size"]) == (512, 512, 0.3, 128)


def test_embeddings_initialised_from_context_and_checked() -> None:
    ctx = make_ctx()
    model = build("caml", ctx)
    weight = model.embed.embedding.weight.detach().numpy()
    assert ctx.embeddings is not None
    np.testing.assert_array_equal(weight, ctx.embeddings)
    with pytest.raises(ConfigError, match="embed_dim is 16 but the pre-trained word vectors have 8"):
        build("laat", ctx, embed_dim=16)
    with pytest.raises(ConfigError, match="shape"):
        build("caml", make_ctx(embeddings=np.zeros((VOCAB + 1, 8), dtype=np.float32)))
    frozen = build("caml", ctx, freeze_embeddings=True)
    assert not frozen.embed.embedding.weight.requires_grad


def test_caml_matches_the_authors_formula_on_an_unpadded_note() -> None:
    # caml-mimic ConvAttnPool.forward: tanh(conv) → softmax(U·H) → m = α H → y = Σ(final.w ⊙ m) + b.
    model = build("caml", kernel_size=3).eval()
    batch = make_batch([DOCS[0]])
    with torch.no_grad():
        out = model(batch)
        x = model.embed.embedding(batch.token_ids).transpose(1, 2)
        conv = model.encoder.conv.conv
        h = torch.tanh(F.conv1d(x, conv.weight, conv.bias, padding=1)).transpose(1, 2)
        alpha = F.softmax(model.attention.queries @ h.transpose(1, 2), dim=2)
        y = (model.output.weight * (alpha @ h)).sum(2) + model.output.bias
    torch.testing.assert_close(out.logits, y)
    assert out.attention is not None
    torch.testing.assert_close(out.attention, alpha)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 10])
def test_same_conv_equals_first_t_outputs_of_symmetric_padding(k: int) -> None:
    torch.manual_seed(0)
    conv = SameConv1d(3, 2, k)
    x = torch.randn(2, 3, 7)
    ref = F.conv1d(x, conv.conv.weight, conv.conv.bias, padding=k // 2)[..., :7]
    torch.testing.assert_close(conv(x), ref)


def test_dr_caml_regulariser_hand_checked() -> None:
    # 1-d embeddings, one filter of width 1: z_c = 2 · max_t tanh(e_t) + 0.1 over the description's tokens.
    lam = 0.5
    ctx = make_ctx(embeddings=None, label_token_ids=[[1, 2], [3], [4, 5, 6], [7], [8], [9], [10]])
    torch.manual_seed(0)
    model = build_model(
        {"name": "dr_caml", "embed_dim": 1, "num_filters": 1, "kernel_size": 1, "desc_lambda": lam}, ctx
    )
    assert isinstance(model, DRCAML)
    with torch.no_grad():
        model.desc_embed.embedding.weight.copy_(-0.1 * torch.arange(VOCAB, dtype=torch.float32)[:, None])
        model.desc_encoder.conv.conv.weight.fill_(1.0)
        model.desc_encoder.conv.conv.bias.fill_(0.0)
        model.desc_fc.weight.fill_(2.0)
        model.desc_fc.bias.fill_(0.1)
        model.output.weight.copy_(torch.tensor([[0.0], [0.5], [-0.5], [1.0], [0.0], [0.0], [0.0]]))
    targets = torch.zeros(3, 7)
    targets[0, [0, 2]] = 1.0
    targets[1, 0] = 1.0  # document 2 has no codes
    # Padding of the 2-token description (a 0 after tanh) must not win the max over negative values.
    z0 = 2 * math.tanh(-0.1) + 0.1
    z2 = 2 * math.tanh(-0.4) + 0.1
    d0, d2 = (z0 - 0.0) ** 2, (z2 + 0.5) ** 2
    got = model.description_regulariser(targets)
    assert got.item() == pytest.approx(lam * (2 * d0 + d2) / 3, rel=1e-6)  # mean over the 3 positive pairs

    code_model = build_model(
        {
            "name": "dr_caml",
            "embed_dim": 1,
            "num_filters": 1,
            "kernel_size": 1,
            "desc_lambda": lam,
            "desc_reg_reduction": "caml_code",
        },
        ctx,
    )
    code_model.load_state_dict(model.state_dict())
    # caml-mimic: per document Σ_positive ||z − β||² / num_filters, averaged over documents with codes.
    assert code_model.description_regulariser(targets).item() == pytest.approx(
        lam * ((d0 + d2) + d0) / 2, rel=1e-6
    )
    assert model.description_regulariser(torch.zeros(2, 7)).item() == 0.0

    got.backward()
    assert model.output.weight.grad is not None and model.desc_fc.weight.grad is not None
    assert model.output.weight.grad[1].abs().sum() == 0  # only positive codes are pulled


def test_dr_caml_without_descriptions_fails_when_training() -> None:
    model = build("dr_caml", make_ctx(label_token_ids=[]))
    batch = make_batch(DOCS, TARGETS)
    with pytest.raises(ConfigError, match="label_token_ids"):
        model.losses(batch, model(batch))
    with pytest.raises(ConfigError, match="2 code descriptions for 7 codes"):
        build("dr_caml", make_ctx(label_token_ids=[[1], [2]]))


def test_joint_laat_level0_codes_and_targets() -> None:
    model = build("joint_laat")
    assert isinstance(model, JointLAAT)
    assert model.level0_keys == ["icd10cm:I10", "icd9cm-dx:401", "icd9cm-dx:428", "icd9cm-proc:96"]
    assert model.parent_index.tolist() == [1, 1, 2, 2, 3, 3, 0]
    level0 = model.level0_targets(torch.tensor(TARGETS, dtype=torch.float32))
    assert level0.tolist() == [[1, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]]
    out = model(make_batch(DOCS))
    assert out.extras["level0_logits"].shape == (4, 4)
    assert "parent_index" not in model.state_dict()  # rebuilt from the label space


def test_level0_key() -> None:
    assert level0_key("icd9cm-dx:401.9") == "icd9cm-dx:401"
    assert level0_key("icd9cm-dx:E849.7") == "icd9cm-dx:E849"
    assert level0_key("icd9cm-proc:96.04") == "icd9cm-proc:96"
    assert level0_key("icd10cm:N44.8") == "icd10cm:N44"
    assert level0_key("icd10pcs:0DTJ4ZZ") == "icd10pcs:0DT"
    assert level0_key("icd10cm:I10") == "icd10cm:I10"


def _tfidf_ctx(docs: list[list[int]], vocab: int) -> ModelContext:
    df = [sum(1 for d in docs if v in d) for v in range(vocab)]
    return ModelContext(label_keys=KEYS, vocab_size=vocab, token_doc_freq=df, n_train_docs=len(docs))


def test_tfidf_features_hand_computed() -> None:
    docs = [[1, 1, 2], [2, 3]]
    model = build_model({"name": "tfidf"}, _tfidf_ctx(docs, 6))
    assert isinstance(model, TfidfLogReg)
    idf1 = math.log(3 / 2) + 1  # df 1 of n = 2
    idf2 = math.log(3 / 3) + 1  # df 2
    # ids absent from the training documents (pad 0, 4, 5) are outside the fitted vocabulary: idf 0
    torch.testing.assert_close(model.idf, torch.tensor([0.0, idf1, idf2, idf1, 0.0, 0.0]))
    x0 = torch.tensor([0.0, (1 + math.log(2)) * idf1, 1.0 * idf2, 0.0, 0.0, 0.0])  # tf 1 + ln 2 for id 1
    x1 = torch.tensor([0.0, 0.0, 1.0 * idf2, 1.0 * idf1, 0.0, 0.0])
    expected = torch.stack([x0 / x0.norm(), x1 / x1.norm()])
    torch.testing.assert_close(model.features(make_batch(docs, extra_pad=3)), expected)


def test_tfidf_features_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    vocab = 30
    train = [[int(x) for x in rng.integers(1, vocab, size=n)] for n in (5, 12, 20, 7, 1, 15)]
    test_docs = [[int(x) for x in rng.integers(1, vocab, size=n)] for n in (9, 3)]
    vec = TfidfVectorizer(
        analyzer=lambda doc: [str(i) for i in doc], sublinear_tf=True, smooth_idf=True, norm="l2"
    )
    vec.fit(train)
    model = build_model({"name": "tfidf"}, _tfidf_ctx(train, vocab))
    assert isinstance(model, TfidfLogReg)
    ours = model.features(make_batch(train + test_docs, extra_pad=2)).numpy()
    ref = vec.transform(train + test_docs).toarray()
    cols = [int(t) for t in vec.get_feature_names_out()]
    np.testing.assert_allclose(ours[:, cols], ref, rtol=1e-5, atol=1e-6)
    unseen = [v for v in range(vocab) if v not in cols]
    assert unseen and any(v in d for d in test_docs for v in unseen)  # out-of-vocabulary ids are ignored
    assert np.all(ours[:, unseen] == 0)


def test_tfidf_evidence_shares() -> None:
    docs = [[1, 1, 2, 3], [2, 3]]
    model = build_model({"name": "tfidf"}, _tfidf_ctx(docs, 6))
    assert isinstance(model, TfidfLogReg)
    with torch.no_grad():
        model.linear.weight[0] = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.0, 0.0])
    model.eval()
    batch = make_batch([docs[0]], extra_pad=1)
    x = model.features(batch)[0]
    with torch.no_grad():
        out = model(batch)
    assert out.attention is not None
    raw = torch.tensor([x[1] / 2, x[1] / 2, 0.0, 2 * x[3], 0.0])  # id 1 twice; id 2 has a negative weight
    torch.testing.assert_close(out.attention[0, 0], raw / raw.sum())
    assert torch.all(out.attention[0, 1:] == 0)  # zero weights: no evidence
    assert model.train()(batch).attention is None  # default: evidence only in eval mode
    always = build_model({"name": "tfidf", "output_attention": "always"}, _tfidf_ctx(docs, 6)).train()
    assert always(batch).attention is not None
    assert "idf" in model.state_dict()  # learned from the training data: saved with the weights


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_roundtrip_with_load_time_context(name: str, tmp_path: Path) -> None:
    model = build(name).eval()
    with torch.no_grad():  # move off the initial values (TF-IDF starts at zero)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = make_batch(DOCS)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    # At load time the context has no pre-trained vectors (and may lack descriptions / frequencies).
    torch.manual_seed(1)
    loaded = build_model(
        {"name": name, **SMALL[name]}, make_ctx(embeddings=None, token_doc_freq=[], n_train_docs=0)
    ).eval()
    loaded.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits)


@pytest.mark.parametrize("name", NAMES)
def test_scores_only_keeps_logits_and_restores_attention(name: str) -> None:
    # Dev/test scoring runs forward inside `scores_only()`: same logits, and the evidence output may be
    # skipped; leaving the block (even by an exception) turns evidence back on.
    m = build(name).eval()
    batch = make_batch([[5, 6, 7, 8], [9, 10]])
    with torch.no_grad():
        full = m(batch)
        with m.scores_only():
            assert m.attention_enabled is False
            fast = m(batch)
        torch.testing.assert_close(fast.logits, full.logits)
        with pytest.raises(RuntimeError), m.scores_only():
            raise RuntimeError("boom")
        assert m.attention_enabled is True
        assert m(batch).attention is not None
    if name == "tfidf":  # the model whose evidence is extra work, not a by-product of scoring
        assert fast.attention is None


def test_tfidf_evidence_rows_equal_the_full_attention_rows() -> None:
    # The predictor asks TF-IDF for the evidence of the shown codes only; it must be the same numbers.
    m = build("tfidf").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
        batch = make_batch(DOCS, TARGETS)
        full = m(batch).attention
        assert full is not None and m.has_evidence_rows()
        for row in range(len(DOCS)):
            codes = [6, 0, 3]
            torch.testing.assert_close(m.evidence_rows(batch, row, codes), full[row, codes])
        assert m.evidence_rows(batch, 0, []).shape == (0, full.shape[-1])
    assert not build("caml").has_evidence_rows()

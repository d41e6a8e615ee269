"""ISD (Zhou et al. 2021): each equation on hand-made tensors, the common model checks, and a tiny end-to-end
train → save → predict run through the CLI."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, ModelOutput, build_model
from icdcoder.models.isd import ISD, attention_std, mix_probabilities
from icdcoder.models.isd_parts import (
    CompletionBatch,
    block_self_mask,
    hungarian_distillation,
    sample_completion,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_models import DOCS, KEYS, TARGETS, make_batch, make_ctx

SMALL: dict[str, Any] = {"embed_dim": 8, "hidden_dim": 16, "n_queries": 4, "decoder_ff_dim": 32}
FULL_TERMS = {"bce", "bce_teacher", "distill", "completion_missing", "completion_false"}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(**kw: Any) -> ISD:
    torch.manual_seed(0)
    model = build_model({"name": "isd", **SMALL, **kw}, make_ctx())
    assert isinstance(model, ISD)
    return model


def no_dropout() -> dict[str, float]:
    return {"dropout": 0.0, "attention_dropout": 0.0, "decoder_dropout": 0.0}


# -- common model checks -------------------------------------------------------------------------------------
def test_shapes_and_attention_over_token_positions() -> None:
    model = build().eval()
    batch = make_batch(DOCS, TARGETS)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (4, 7) and torch.isfinite(out.logits).all()
    assert out.attention is not None and out.attention.shape == (4, 7, 9)
    assert torch.all(out.attention[~batch.mask[:, None, :].expand_as(out.attention)] == 0)
    torch.testing.assert_close(out.attention.sum(-1)[:3], torch.ones(3, 7))
    assert torch.all(out.attention[3] == 0)  # empty note: no evidence, no NaN
    assert model.train()(batch).attention is None  # evidence only in eval mode by default


@pytest.mark.parametrize("kw", [{}, {"label_branch": True}, {"n_queries": "parents"}])
def test_padding_and_batching_do_not_change_outputs(kw: dict[str, Any]) -> None:
    model = build(**kw).eval()
    with torch.no_grad():
        ref = model(make_batch(DOCS))
        padded = model(make_batch(DOCS, extra_pad=5))
        torch.testing.assert_close(padded.logits, ref.logits, atol=1e-5, rtol=1e-5)
        assert ref.attention is not None and padded.attention is not None
        torch.testing.assert_close(padded.attention[..., :9], ref.attention, atol=1e-5, rtol=1e-5)
        for i, doc in enumerate(DOCS):
            alone = model(make_batch([doc]))
            torch.testing.assert_close(alone.logits[0], ref.logits[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"label_branch": True}, {"n_queries": "parents", "distill_on": "shared"}])
def test_gradients_reach_every_parameter(kw: dict[str, Any]) -> None:
    model = build(**kw).train()
    batch = make_batch(DOCS, TARGETS)
    terms = model.losses(batch, model(batch))
    assert set(terms) == FULL_TERMS
    sum(terms.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_overfits_a_tiny_batch() -> None:
    model = build().train()
    batch = make_batch(DOCS[:3], TARGETS[:3])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = last = 0.0
    for step in range(50):
        opt.zero_grad()
        terms = model.losses(batch, model(batch))
        sum(terms.values()).backward()
        opt.step()
        first = terms["bce"].item() if step == 0 else first
        last = terms["bce"].item()
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, FULL_TERMS),
        ({"self_distillation": "teacher_only"}, FULL_TERMS - {"distill"}),
        ({"self_distillation": "off"}, {"bce", "completion_missing", "completion_false"}),
        ({"completion_tasks": False}, {"bce", "bce_teacher", "distill"}),
        ({"decoder_layers": 0, "completion_tasks": False}, {"bce", "bce_teacher", "distill"}),
    ],
)
def test_table3_ablations_change_the_loss_terms(kw: dict[str, Any], expected: set[str]) -> None:
    model = build(**kw).train()
    batch = make_batch(DOCS, TARGETS)
    terms = model.losses(batch, model(batch))
    assert set(terms) == expected
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert set(model.eval().losses(batch, model(batch))) == {"bce"}  # no teacher/completion at inference
    assert (len(model.decoder) == 0) == (kw.get("decoder_layers") == 0)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="kernal_sizes"):
        build_model({"name": "isd", "kernal_sizes": [3]}, make_ctx())
    with pytest.raises(ConfigError, match="completion_tasks need the decoder"):
        build_model({"name": "isd", "decoder_layers": 0}, make_ctx())
    with pytest.raises(ConfigError, match="divisible by the 4 kernel sizes"):
        build_model({"name": "isd", "hidden_dim": 10}, make_ctx())
    with pytest.raises(ConfigError, match="n_queries"):
        build_model({"name": "isd", "n_queries": "grandparents"}, make_ctx())
    with pytest.raises(ConfigError, match="2 code descriptions for 7 codes"):
        build_model({"name": "isd", **SMALL}, make_ctx(label_token_ids=[[1], [2]]))
    student_only = build_model(
        {"name": "isd", **SMALL, "self_distillation": "off"}, make_ctx(label_token_ids=[])
    )
    student_only.losses(make_batch(DOCS, TARGETS), student_only(make_batch(DOCS, TARGETS)))
    teacher = build_model({"name": "isd", **SMALL}, make_ctx(label_token_ids=[]))
    with pytest.raises(ConfigError, match="self_distillation: off"):
        teacher(make_batch(DOCS, TARGETS))


def test_yaml_off_means_off() -> None:
    from icdcoder.training.config import apply_overrides

    raw = apply_overrides({"model": {"name": "isd"}}, ["model.self_distillation=off"])
    assert raw["model"]["self_distillation"] is False  # what YAML makes of a bare `off`
    assert (
        build_model({**raw["model"], **SMALL}, make_ctx()).config.model_dump()["self_distillation"] == "off"
    )


def test_published_defaults() -> None:
    cfg = build_model({"name": "isd"}, make_ctx(embeddings=None)).config.model_dump()
    assert cfg["kernel_sizes"] == (5, 7, 9, 11) and cfg["hidden_dim"] == 256 and cfg["n_queries"] == 64
    assert (cfg["decoder_layers"], cfg["decoder_heads"], cfg["decoder_ff_dim"]) == (2, 1, 1024)
    assert (cfg["lambda_pred"], cfg["lambda_teacher"], cfg["lambda_distill"]) == (0.5, 0.5, 1e-3)
    assert (cfg["lambda_missing"], cfg["lambda_removal"]) == (5e-4, 5e-4)
    assert cfg["max_train_codes"] is None and cfg["self_distillation"] == "full"


# -- Eq. 1-2, code embeddings, Table 4 parents ---------------------------------------------------------------
def test_encoder_is_four_tanh_convolutions_concatenated() -> None:
    model = build().eval()
    batch = make_batch([DOCS[0]])
    with torch.no_grad():
        h = model.encode(batch.token_ids, batch.mask)
        x = model.embed.embedding(batch.token_ids).transpose(1, 2)
        parts = []
        for conv, k in zip(model.convs, (5, 7, 9, 11), strict=True):
            c = conv.conv.conv
            parts.append(torch.tanh(F.conv1d(x, c.weight, c.bias, padding=k // 2)).transpose(1, 2))
    assert h.shape == (1, 9, 16)
    torch.testing.assert_close(h, torch.cat(parts, dim=-1))


def test_code_embeddings_keep_the_geometry_of_description_means() -> None:
    ctx = make_ctx()
    model = build()
    assert ctx.embeddings is not None
    means = np.stack([ctx.embeddings[t].mean(0) for t in ctx.label_token_ids])  # 8-d word2vec means
    e = model.code_emb.detach().numpy()  # mapped to 16-d by a map with orthonormal rows
    np.testing.assert_allclose(e @ e.T, means @ means.T, rtol=1e-4, atol=1e-4)


def test_parent_queries_start_at_their_codes_mean() -> None:
    model = build(n_queries="parents")
    assert model.parent_keys == ["icd10cm:I10", "icd9cm-dx:401", "icd9cm-dx:428", "icd9cm-proc:96"]
    e, q = model.code_emb.detach(), model.queries.detach()
    assert model.n_queries == 4
    torch.testing.assert_close(q[1], (e[0] + e[1]) / 2)
    torch.testing.assert_close(q[2], (e[2] + e[3]) / 2)
    torch.testing.assert_close(q[0], e[6])


# -- Eq. 3-7 and 11: shared attention and scoring ------------------------------------------------------------
def _identity_attention(model: ISD) -> None:
    with torch.no_grad():
        for lin in (
            model.shared_attention.q_proj,
            model.shared_attention.k_proj,
            model.shared_attention.v_proj,
            model.shared_attention.out_proj,
        ):
            lin.weight.copy_(torch.eye(lin.weight.shape[0]))
            lin.bias.zero_()


def test_shared_attention_scoring_by_hand() -> None:
    ctx = make_ctx(label_keys=KEYS[:3], label_token_ids=[[1], [2], [3]], embeddings=None)
    torch.manual_seed(0)
    model = build_model(
        {"name": "isd", "embed_dim": 4, "hidden_dim": 4, "kernel_sizes": [1, 3], "n_queries": 2}
        | {"decoder_layers": 0, "completion_tasks": False, "output_attention": "always"},
        ctx,
    )
    assert isinstance(model, ISD)
    model.eval()
    _identity_attention(model)  # the paper's Eq. 3-5 have no projections; the authors' MHA adds them
    r2l3 = math.sqrt(4) * math.log(3)  # q·h / √d = ln 3
    with torch.no_grad():
        model.queries.copy_(torch.tensor([[r2l3, 0, 0, 0], [0, r2l3, 0, 0]]))
        model.code_emb.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [1, -1, 0, 0]]))
        model.code_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    h = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [5, 5, 5, 5]]])  # third token is padding
    mask = torch.tensor([[True, True, False]])
    with torch.no_grad():
        shared, refined, alpha, _ = model.represent(h, mask)
        logits, choice, _ = model.score(refined)
    # Eq. 4: α_1 = softmax(ln 3, 0) = (3/4, 1/4), α_2 = (1/4, 3/4); padding gets 0.
    torch.testing.assert_close(alpha[0], torch.tensor([[0.75, 0.25, 0], [0.25, 0.75, 0]]))
    # Eq. 5: h^S_i = α_i H.
    torch.testing.assert_close(shared[0], torch.tensor([[0.75, 0.25, 0, 0], [0.25, 0.75, 0, 0]]))
    torch.testing.assert_close(refined, shared)  # no decoder
    # Eq. 6: s_c = max_k h^S_k · e_c (+ b_c):
    # code 0 → max(3/4, 1/4); code 1 → max(1/2, 3/2); code 2 → max(1/2, −1/2).
    torch.testing.assert_close(logits[0], torch.tensor([0.75 + 0.1, 1.5 - 0.2, 0.5 + 0.3]))
    assert choice[0].tolist() == [0, 1, 0]
    # Evidence: each code gets the attention of the query that won its max.
    batch = Batch(torch.tensor([[1, 2, 0]]), mask, mask.sum(1), ["d"], None)
    with torch.no_grad():
        h_batch = model.encode(batch.token_ids, batch.mask)
        _, ref, a, _ = model.represent(h_batch, batch.mask)
        out = model(batch)
    assert out.attention is not None
    winners = torch.einsum("nqd,cd->nqc", ref, model.code_emb).argmax(1)[0]
    for c in range(3):
        torch.testing.assert_close(out.attention[0, c], a[0, int(winners[c])])
    # Eq. 7: the probability is σ(s_c).
    torch.testing.assert_close(torch.sigmoid(out.logits), torch.sigmoid(model.score(ref)[0]))


def test_label_branch_mixes_probabilities() -> None:
    a = torch.tensor([-40.0, -1.0, 0.0, 2.0, 50.0])
    b = torch.tensor([30.0, 3.0, 0.0, -2.0, 45.0])
    p = 0.5 * torch.sigmoid(a.double()) + 0.5 * torch.sigmoid(b.double())
    q = 0.5 * torch.sigmoid(-a.double()) + 0.5 * torch.sigmoid(-b.double())  # 1 − p without cancellation
    torch.testing.assert_close(
        mix_probabilities(a, b).double(), torch.log(p) - torch.log(q), rtol=1e-5, atol=1e-5
    )
    model = build(label_branch=True).train()
    batch = make_batch(DOCS, TARGETS)
    out = model(batch)
    torch.testing.assert_close(
        out.logits, mix_probabilities(out.extras["share_logits"], out.extras["label_logits"])
    )


# -- Eq. 13-14: Hungarian distillation ----------------------------------------------------------------------
def test_hungarian_matching_equals_brute_force_over_permutations() -> None:
    torch.manual_seed(3)
    student = torch.randn(3, 5, 6, requires_grad=True)
    teacher = torch.randn(3, 5, 6, requires_grad=True)
    valid = torch.tensor([True, False, True])
    loss, assignments = hungarian_distillation(student, teacher, valid)
    cos = F.cosine_similarity(student.detach()[:, :, None], teacher.detach()[:, None], dim=-1)  # [B, Q, Q]
    best = []
    for b in (0, 2):
        perms = itertools.permutations(range(5))
        scores = {p: float(cos[b, range(5), list(p)].mean()) for p in perms}
        winner = max(scores, key=lambda p: scores[p])
        best.append(1 - scores[winner])
        assert tuple(assignments[len(best) - 1].tolist()) == winner
    assert loss.item() == pytest.approx(sum(best) / 2, abs=1e-6)  # example 1 (invalid) is left out
    loss.backward()
    assert student.grad is not None and teacher.grad is not None  # similarities are differentiated
    assert (
        student.grad[1].abs().sum() == 0
        and student.grad[0].abs().sum() > 0
        and student.grad[2].abs().sum() > 0
    )


def test_hungarian_by_hand_finds_the_swapped_match() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [3.0, 0.0]]])  # same directions, other order and norms
    loss, (assign,) = hungarian_distillation(student, teacher, torch.tensor([True]))
    assert assign.tolist() == [1, 0] and loss.item() == pytest.approx(0.0, abs=1e-6)
    none, _ = hungarian_distillation(student, teacher, torch.tensor([False]))
    assert none.item() == 0.0


def test_distillation_covers_every_example_and_the_teacher_reads_descriptions() -> None:
    model = build(**no_dropout()).train()
    batch = make_batch(DOCS, TARGETS)
    torch.manual_seed(1)
    out = model(batch)
    # Teacher tokens: each gold code's description encoded separately, concatenated (order shuffled).
    h_t, mask_t = model.teacher_input(batch.targets)
    desc = model.desc_mask.sum(1)
    assert mask_t.sum(1).tolist() == [
        int(desc[[0, 2, 6]].sum()),
        int(desc[[1, 4]].sum()),
        int(desc[[3, 5]].sum()),
        0,
    ]
    for c in (0, 2, 6):
        ids, m = model.desc_ids[c : c + 1], model.desc_mask[c : c + 1]
        alone = model.encode(ids, m)[0, : int(m.sum())]
        assert any(torch.allclose(alone, h_t[0, s : s + len(alone)], atol=1e-6) for s in range(h_t.shape[1]))
    # The teacher depends on the gold codes, not on the note (the authors' code fed the note).
    other = make_batch([[40, 41, 42], [43], [44, 45], []], TARGETS)
    torch.manual_seed(1)
    out2 = model(other)
    torch.testing.assert_close(out2.extras["teacher_logits"], out.extras["teacher_logits"])
    # The distillation gradient reaches the shared vectors of every example with codes, not only the first.
    shared = torch.randn(4, 4, 16, requires_grad=True)
    loss, _ = hungarian_distillation(shared, torch.randn(4, 4, 16), batch.targets.sum(1) > 0)
    loss.backward()
    assert shared.grad is not None
    assert [bool(g.abs().sum() > 0) for g in shared.grad] == [True, True, True, False]


# -- Eq. 9-10: code completion -------------------------------------------------------------------------------
def test_completion_sequences_and_the_none_class() -> None:
    c = 6
    targets = torch.zeros(3, c)
    targets[0, [1, 3, 4]] = 1
    targets[2] = 1  # every code is gold: no wrong code to add
    torch.manual_seed(0)
    comp = sample_completion(targets, c, length=40, noise=False)
    # Missing code: the mask token (index C) first, the target a gold code, the context the other gold codes.
    assert comp.codes[0, 0, 0] == c and comp.position[0, 0] == 0 and comp.valid[0, 0]
    missing = int(comp.target[0, 0])
    assert missing in {1, 3, 4}
    assert sorted(comp.codes[0, 0, 1:3].tolist()) == sorted({1, 3, 4} - {missing})
    assert comp.mask[0, 0].tolist()[:4] == [True, True, True, False]
    # Wrong code: the gold codes plus one non-gold code, whose position must predict the none class C.
    seq = comp.codes[0, 1, :4].tolist()
    assert sorted(seq[:3]) == [1, 3, 4] and seq[3] not in {1, 3, 4} and comp.position[0, 1] == 3
    assert comp.target[0, 1] == c and comp.valid[0, 1]
    assert comp.valid[1].tolist() == [False, True] and comp.codes[1, 1, 0] not in {1, 3, 4}  # no gold codes
    assert comp.target[1, 1] == c and comp.position[1, 1] == 0
    assert comp.valid[2].tolist() == [True, False]
    # Sequences are cut to `length` codes (the wrong code included).
    many = torch.zeros(1, 60)
    many[0, :50] = 1
    long = sample_completion(many, 60, length=40, noise=False)
    assert long.mask[0].sum(1).tolist() == [40, 40] and long.position[0, 1] == 39


def test_completion_noise_never_reveals_the_target() -> None:
    torch.manual_seed(0)
    targets = torch.zeros(1, 8)
    targets[0, :6] = 1
    changed = 0
    for _ in range(200):
        comp = sample_completion(targets, 8, noise=True)
        seq, target = comp.codes[0, 0, :6].tolist(), int(comp.target[0, 0])
        assert seq[0] == 8 and target not in seq[1:]
        assert seq[4:] == [g for g in seq[4:] if g < 6 and g != target]  # m ≤ n // 2 = 3: positions ≥ 3 kept
        changed += len(set(seq[1:]) - set(range(6)))
    assert changed > 0  # random non-gold codes do appear


def test_completion_loss_by_hand() -> None:
    model = build(**no_dropout())
    with torch.no_grad():
        model.code_emb.zero_()
        model.code_emb[:, 0] = torch.arange(7, dtype=torch.float32)  # e_c = (c, 0, ...)
        model.mask_emb.zero_()
        model.mask_emb[1] = 1.0  # e_mask = (0, 1, 0, ...)
        model.code_bias.zero_()
        model.mask_bias.fill_(0.5)
    comp = CompletionBatch(
        codes=torch.zeros(1, 2, 2, dtype=torch.long),
        mask=torch.ones(1, 2, 2, dtype=torch.bool),
        position=torch.tensor([[0, 1]]),
        target=torch.tensor([[3, 7]]),  # code 3; the none class C = 7
        valid=torch.tensor([[True, True]]),
    )
    out = torch.zeros(1, 2, 2, 16)
    out[0, 0, 0, 0] = 0.5  # logits over codes: 0.5·c; none: 0.5
    out[0, 1, 1, 1] = 2.0  # logits over codes: 0; none: 2 + 0.5
    terms = model.completion_losses(comp, out)
    z0 = torch.tensor([0.5 * c for c in range(7)] + [0.5])
    z1 = torch.tensor([0.0] * 7 + [2.5])
    assert terms["completion_missing"].item() == pytest.approx(float(-(z0.log_softmax(0)[3])), rel=1e-6)
    assert terms["completion_false"].item() == pytest.approx(float(-(z1.log_softmax(0)[7])), rel=1e-6)


def test_completion_blocks_share_the_decoder_pass_without_mixing() -> None:
    model = build(**no_dropout()).train()
    batch = make_batch(DOCS, TARGETS)
    with torch.no_grad():
        h = model.encode(batch.token_ids, batch.mask)
        assert batch.targets is not None
        comp = sample_completion(batch.targets, 7, 40, True)
        _, ref_alone, _, _ = model.represent(h, batch.mask)
        _, ref_joint, _, comp_out = model.represent(h, batch.mask, comp)
        torch.testing.assert_close(ref_joint, ref_alone, atol=1e-5, rtol=1e-5)  # shared vectors unaffected
        # A completion sequence decoded on its own gives the same outputs.
        table = torch.cat([model.code_emb, model.mask_emb[None]])
        x = table[comp.codes[0, 1]][None]
        for layer in model.decoder:
            x = layer(x, comp.mask[0, 1][None], h[:1], batch.mask[:1])
        assert comp_out is not None
        n = int(comp.mask[0, 1].sum())
        torch.testing.assert_close(comp_out[0, 1, :n], x[0, :n], atol=1e-5, rtol=1e-5)
    mask = block_self_mask([2, 1], torch.tensor([[True, True, False]]))
    assert mask[0].tolist() == [[True, True, False], [True, True, False], [False, False, False]]


# -- Eq. 15, training-only truncation, Table 6 --------------------------------------------------------------
def test_loss_weighting_eq15() -> None:
    lam = {"lambda_pred": 0.3, "lambda_teacher": 0.7, "lambda_distill": 0.01, "lambda_missing": 0.2}
    model = build(**lam, lambda_removal=0.4)
    batch = make_batch(DOCS[:2], TARGETS[:2])
    y = batch.targets
    assert y is not None
    s, t = torch.randn(2, 7), torch.randn(2, 7)
    extras = {
        "share_logits": s,
        "teacher_logits": t,
        "distill": torch.tensor(0.25),
        "completion_missing": torch.tensor(1.5),
        "completion_false": torch.tensor(2.5),
    }
    terms = model.losses(batch, ModelOutput(logits=s, extras=extras))
    bce = F.binary_cross_entropy_with_logits
    assert terms["bce"].item() == pytest.approx(0.3 * bce(s, y).item(), rel=1e-6)
    assert terms["bce_teacher"].item() == pytest.approx(0.7 * bce(t, y).item(), rel=1e-6)
    assert terms["distill"].item() == pytest.approx(0.01 * 0.25)
    assert terms["completion_missing"].item() == pytest.approx(0.2 * 1.5)
    assert terms["completion_false"].item() == pytest.approx(0.4 * 2.5)
    # The label branch: each path's BCE is the mean of its two branches' BCE.
    branch = build(label_branch=True)
    lab = torch.randn(2, 7)
    got = branch.losses(batch, ModelOutput(logits=s, extras={"share_logits": s, "label_logits": lab}))
    assert got["bce"].item() == pytest.approx(0.5 * 0.5 * (bce(s, y) + bce(lab, y)).item(), rel=1e-6)


def test_gold_code_truncation_is_training_only() -> None:
    model = build(max_train_codes=2, **no_dropout())
    y = torch.tensor([[1.0, 1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0]])
    assert model.train_targets(y).tolist() == [[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]]
    batch = make_batch(DOCS[:2], y.tolist())
    out = model.train()(batch)
    assert out.extras["train_targets"].tolist() == model.train_targets(y).tolist()
    with torch.no_grad():  # evaluation never sees targets: the same logits with or without them
        a = model.eval()(batch).logits
        batch.targets = None
        torch.testing.assert_close(model(batch).logits, a)


def test_attention_std_by_hand() -> None:
    w = torch.tensor([[[0.5, 0.25, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])
    std = attention_std(w, mask)
    expected = math.sqrt(((0.5 - 1 / 3) ** 2 + 2 * (0.25 - 1 / 3) ** 2) / 3)
    torch.testing.assert_close(std, torch.tensor([[expected, 0.0]]))


# -- end to end through the CLI ------------------------------------------------------------------------------
def _prepared(tmp_path: Path) -> Path:
    from icdcoder.data.document import Document
    from icdcoder.data.prepared import write_prepared

    rng = np.random.default_rng(0)
    words = [
        "fever",
        "cough",
        "chest",
        "pain",
        "hypertension",
        "diabetes",
        "renal",
        "failure",
        "patient",
        "was",
    ]
    cues = {"icd10cm:I10": "hypertension", "icd10cm:E11.9": "diabetes", "icd10cm:R50.9": "fever"}
    docs = []
    for i in range(36):
        codes = [k for k in cues if rng.random() < 0.5] or ["icd10cm:R50.9"]
        text = " ".join([*(cues[k] for k in codes), *rng.choice(words, size=12)])
        split = "train" if i < 24 else ("dev" if i < 30 else "test")
        docs.append(Document(id=f"n{i}", text=text, codes=codes, split=split))
    out = tmp_path / "prepared"
    write_prepared(out, docs, source="test")
    return out


def test_trains_saves_and_predicts_through_the_cli(tmp_path: Path) -> None:
    from icdcoder.cli import app
    from icdcoder.inference.predictor import Predictor

    data = _prepared(tmp_path)
    config = tmp_path / "isd.yaml"
    config.write_text(
        "dataset_name: tiny\n"
        f"data: {{source: prepared, path: {data}}}\n"
        "embeddings: {word2vec: false}\n"
        "model: {name: isd, embed_dim: 8, hidden_dim: 16, n_queries: 4, decoder_ff_dim: 16}\n"
        "train: {epochs: 2, batch_size: 8, lr: 0.01, progress: false, num_threads: 1}\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert summary["model"] == "isd" and "test" in summary
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert set(logged[0]) >= FULL_TERMS  # every Eq. 15 term is logged
    note = tmp_path / "note.txt"
    note.write_text("Patient with hypertension and fever.", encoding="utf-8")
    result = runner.invoke(app, ["predict", str(run / "model"), str(note), "--format", "json"])
    assert result.exit_code == 0, result.output
    (pred,) = Predictor(run / "model").predict([("n", "Patient with hypertension and fever.")], top_k=3)
    assert len(pred.codes) >= 3 and all(c.evidence for c in pred.codes)
    assert json.loads(result.output)[0]["codes"][0]["key"] == pred.codes[0].key

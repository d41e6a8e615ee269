"""Informed initialisation (issue 17): the output bias is the prior's log-odds at step 0, and a code with
no training note scores the notes that contain its description above unrelated ones before any training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from icdcoder.models.base import Batch, ModelContext, build_model
from icdcoder.models.init import code_text_rows, pooled_code_vectors, prior_log_odds

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 60
SMALL = {
    "caml": {"embed_dim": 32, "num_filters": 64, "kernel_size": 3},
    "dr_caml": {"embed_dim": 32, "num_filters": 64, "kernel_size": 3},
    "laat": {"embed_dim": 32, "hidden_size": 32, "d_a": 64},
    "joint_laat": {"embed_dim": 32, "hidden_size": 32, "d_a": 64},
    "multirescnn": {"embed_dim": 32, "num_filters": 16, "filter_sizes": [3, 5]},
}


def _ctx(counts: list[int] | None = None) -> ModelContext:
    # Code 0: "fracture of femur" = tokens 5 6 7; code 1: tokens 20 21 22 (+ a synonym 23 24); code 2: 40 41.
    return ModelContext(
        label_keys=["icd10cm:S72.0", "icd10cm:I21.9", "icd10cm:E11.9"],
        vocab_size=VOCAB,
        label_token_ids=[[5, 6, 7], [20, 21, 22], [40, 41]],
        label_synonym_token_ids=[[], [[23, 24]], []],
        label_train_counts=counts or [],
        n_train_docs=100 if counts else 0,
        init_from_pretrained=True,
    )


def _notes(rows: list[list[int]]) -> Batch:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    mask = ids != 0
    return Batch(ids, mask, mask.sum(1), [str(i) for i in range(len(rows))])


def test_prior_log_odds_of_rare_and_frequent_codes() -> None:
    assert prior_log_odds([1, 50], 100).tolist() == pytest.approx([math.log(1 / 99), 0.0], abs=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bias_is_the_prior_log_odds_at_step_0(name: str) -> None:
    counts = [1, 30, 0]
    torch.manual_seed(0)
    model = build_model({"name": name, "bias_init": "prior", **SMALL[name]}, _ctx(counts))
    bias = model.output.bias  # type: ignore[union-attr]
    assert torch.allclose(bias.detach(), prior_log_odds(counts, 100), atol=1e-6)
    # Off (the published default): the published initialisation, the same as without counts.
    torch.manual_seed(0)
    plain = build_model({"name": name, **SMALL[name]}, _ctx(counts))
    torch.manual_seed(0)
    unknown = build_model({"name": name, "bias_init": "prior", **SMALL[name]}, _ctx())
    assert torch.equal(plain.output.bias, unknown.output.bias)  # type: ignore[union-attr]
    assert not torch.allclose(plain.output.bias.detach(), bias.detach())  # type: ignore[union-attr]


def test_a_loaded_model_is_not_reinitialised() -> None:
    ctx = _ctx([1, 30, 0])
    ctx.init_from_pretrained = False  # load time: the saved weights replace the initial values
    model = build_model({"name": "laat", "bias_init": "prior", **SMALL["laat"]}, ctx)
    assert float(model.output.bias.detach().abs().max()) == 0.0  # type: ignore[union-attr]  # LAAT: zeros


def test_code_texts_are_title_then_distinct_synonyms() -> None:
    ctx = _ctx()
    ctx.label_synonym_token_ids = [[[5, 6, 7], [8]], [[23, 24]], [[]]]
    assert code_text_rows(ctx) == [[[5, 6, 7], [8]], [[20, 21, 22], [23, 24]], [[40, 41]]]
    vecs, has = pooled_code_vectors(
        [[[1, 2]], [], [[3]]], lambda b: b.token_ids.float().unsqueeze(-1).expand(-1, -1, 2), pad_id=0
    )
    assert has.tolist() == [True, False, True]
    assert vecs.tolist() == [[1.5, 1.5], [0.0, 0.0], [3.0, 3.0]]


def _pairwise_wins(name: str, code_init: str, seeds: int = 8) -> float:
    """Share of (code, its description's note, another note) triples where the code scores its note higher,
    over freshly initialised models (no training)."""
    filler = [50, 51, 52, 53, 54, 55, 56, 57, 58]
    notes = _notes(
        [
            [*filler[:4], 5, 6, 7, *filler[4:]],  # mentions code 0's description
            [*filler[:4], 20, 21, 22, *filler[4:]],  # code 1's title
            [*filler[:3], 23, 24, *filler[3:]],  # code 1's synonym
            [*filler[:5], 40, 41, *filler[5:]],  # code 2's
            filler + filler[:3],  # nothing
        ]
    )
    own = {0: [0], 1: [1, 2], 2: [3]}
    wins = total = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build_model({"name": name, "code_init": code_init, **SMALL[name]}, _ctx())
        model.eval()
        with torch.no_grad():
            logits = model(notes).logits
        for code, mine in own.items():
            for p in mine:
                for other in set(range(5)) - set(mine):
                    wins += int(logits[p, code] > logits[other, code])
                    total += 1
    return wins / total


@pytest.mark.parametrize("name", sorted(SMALL))
def test_an_unseen_code_scores_its_description_notes_above_unrelated_ones(name: str) -> None:
    # No code has a training note here: only the ontology texts (title, synonym) speak for it.
    informed = _pairwise_wins(name, "description")
    chance = _pairwise_wins(name, "random")
    assert informed >= 0.85, f"{name}: {informed:.2f}"
    assert informed >= chance + 0.25, f"{name}: {informed:.2f} vs random queries {chance:.2f}"


def test_description_queries_attend_to_the_description_words() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "caml", "code_init": "description", **SMALL["caml"]}, _ctx())
    model.eval()
    filler = [50, 51, 52, 53, 54, 55, 56, 57, 58]
    with torch.no_grad():
        att = model(_notes([[*filler[:4], 5, 6, 7, *filler[4:]]])).attention
    assert att is not None
    assert float(att[0, 0, 4:7].sum()) > 3 / 12  # more than its share of a uniform attention


def test_plm_icd_bias_and_queries_from_its_own_encoder(tmp_path: Path) -> None:
    from icdcoder.models.base import get_model_class, validate_model_config
    from icdcoder.text.hf_tokenizer import HFTokenizer
    from test_plm_icd import make_tiny_bert

    path = make_tiny_bert(tmp_path / "bert")
    tok = HFTokenizer.from_pretrained(path)
    titles = ["essential hypertension", "acute kidney failure"]
    cls = get_model_class("plm_icd")

    def build(**opts: str) -> torch.nn.Module:
        config = {"name": "plm_icd", "pretrained": str(path), "chunk_size": 4, **opts}
        ctx = ModelContext(
            label_keys=["icd10cm:I10", "icd10cm:N17.9"],
            vocab_size=len(tok.vocab()),
            label_token_ids=[tok.vocab().encode(tok.words(t)) for t in titles],
            label_train_counts=[3, 1],
            n_train_docs=10,
            init_from_pretrained=True,
        )
        cls.extend_context(validate_model_config(cls, config), ctx, titles, lambda s: [])
        torch.manual_seed(0)
        return build_model(config, ctx)

    plain, informed = build(), build(bias_init="prior", code_init="description")
    assert torch.allclose(informed.output.bias.detach(), prior_log_odds([3, 1], 10))  # type: ignore[union-attr]
    q0, q1 = plain.attention.queries.detach(), informed.attention.queries.detach()  # type: ignore[union-attr]
    assert not torch.allclose(q0, q1)
    # Two codes: centring makes their queries opposite directions (each is what sets it apart from the other).
    cos = torch.nn.functional.cosine_similarity(q1[0], q1[1], dim=0)
    assert float(cos) == pytest.approx(-1.0, abs=1e-5)


@pytest.mark.parametrize("output", ["shared", "labelwise"])
def test_jlan_bias_starts_at_the_prior(output: str) -> None:
    # JLAN's shared output has no per-code parameter (the paper's form); on small data `code_bias` adds one
    # and `bias_init: prior` starts it, or the labelwise output's b_c, at the prior's log-odds.
    counts = [1, 30, 0]
    cfg = {"name": "jlan", "embed_dim": 16, "hidden_size": 16, "d_a": 8, "mlp_hidden": 8, "mlp_out": 8}
    model = build_model({**cfg, "output": output, "code_bias": True, "bias_init": "prior"}, _ctx(counts))
    bias = model.fc2.bias if output == "labelwise" else model.bias  # type: ignore[union-attr]
    assert torch.allclose(bias.detach(), prior_log_odds(counts, 100), atol=1e-6)
    from icdcoder.errors import ConfigError

    with pytest.raises(ConfigError, match="code_bias"):
        build_model({**cfg, "bias_init": "prior"}, _ctx(counts))  # shared output without a per-code bias


def test_jlan_description_queries_attend_to_the_description_words() -> None:
    # JLAN's self-attention W1 has one row per code, like LAAT's queries: `code_init: description` starts
    # code 0's row from "fracture of femur" (tokens 5 6 7), so before training its attention on a note that
    # says those words puts more than their uniform share there, and more than a random row does.
    cfg = {"name": "jlan", "embed_dim": 16, "hidden_size": 16, "d_a": 8, "mlp_hidden": 8, "mlp_out": 8}
    filler = [50, 51, 52, 53, 54, 55, 56, 57, 58]
    notes = _notes([[*filler[:4], 5, 6, 7, *filler[4:]]])

    def share(code_init: str) -> float:
        total = 0.0
        for seed in range(6):
            torch.manual_seed(seed)
            model = build_model({**cfg, "code_init": code_init}, _ctx())
            model.eval()
            with torch.no_grad():
                _, att = model.self_attention(model.encode(notes), notes.mask)  # type: ignore[operator]
            total += float(att[0, 0, 4:7].sum())
        return total / 6

    informed, chance = share("description"), share("random")
    assert informed > 3 / 12 + 0.05, informed
    assert informed > chance + 0.05, (informed, chance)
    from icdcoder.errors import ConfigError

    with pytest.raises(ConfigError, match="self-attention"):
        build_model({**cfg, "attention": "label", "code_init": "description"}, _ctx())

"""ISD `code_init: centred_prior` (issue 17, models/isd.py `centred_code_init`): no common direction in the
code embeddings, scores that start at each code's prior (the collapse itself is traced by
benchmarks/isd_collapse.py on real data, not here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icdcoder.models.base import build_model
from icdcoder.models.init import prior_log_odds
from icdcoder.models.isd import ISD

sys.path.insert(0, str(Path(__file__).parent))
from test_models import DOCS, TARGETS, VOCAB, make_batch, make_ctx

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"embed_dim": 8, "hidden_dim": 16, "n_queries": 4, "decoder_ff_dim": 32}
COUNTS = [1, 2, 1, 3, 1, 1, 4]


def _build(code_init: str) -> ISD:
    rng = np.random.default_rng(1)
    # word2vec-like vectors: a shared mean direction, so description means share it too
    emb = (rng.normal(size=(VOCAB, 8)) * 0.3 + 0.5).astype(np.float32)
    ctx = make_ctx(embeddings=emb, label_train_counts=COUNTS, n_train_docs=10, init_from_pretrained=True)
    torch.manual_seed(0)
    model = build_model({"name": "isd", **SMALL, "code_init": code_init}, ctx)
    assert isinstance(model, ISD)
    return model


def test_centred_prior_codes_have_no_common_direction_and_prior_biases() -> None:
    seed, fixed = _build("seed"), _build("centred_prior")
    e = fixed.code_emb.detach()
    assert torch.allclose(e.mean(0), torch.zeros(e.shape[1]), atol=1e-6)
    assert float(e.norm(dim=1).mean()) == pytest.approx(16**-0.5)
    assert torch.allclose(fixed.code_bias.detach(), prior_log_odds(COUNTS, 10))
    # The seed's description means do share a direction (mean pairwise cosine well above 0).
    s = torch.nn.functional.normalize(seed.code_emb.detach(), dim=1)
    off = ~torch.eye(len(s), dtype=torch.bool)
    assert float((s @ s.t())[off].mean()) > 0.5
    # Same random draws otherwise: the encoders and queries are identical.
    assert torch.equal(seed.queries, fixed.queries)


def test_centred_prior_starts_every_code_at_its_prior() -> None:
    prior = prior_log_odds(COUNTS, 10)
    batch = make_batch(DOCS[:3], TARGETS[:3])
    gaps = {}
    for init in ("seed", "centred_prior"):
        model = _build(init).eval()
        with torch.no_grad():
            gaps[init] = float((model(batch).logits - prior).abs().mean())
    # |s_c − prior_c| at step 0: the max over the shared vectors of H_S′·e_c is ≤ ‖e_c‖·√d = 1 with the
    # centred embeddings; with the seed's it is several units (and b_c ~ N(0, 1) is unrelated to the prior).
    assert gaps["centred_prior"] < 1.0 < gaps["seed"]

"""PLANT's parts: the MI brain on a hand-made contingency table, graded relevance, LambdaRank on 3 items."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icdcoder.models.plant_l2r import (
    L2RScorer,
    L2RTrainConfig,
    RelevanceTable,
    boxcox_positive,
    graded_relevance,
    lambdarank_gradients,
    ndcg_at_k,
    train_l2r,
)
from icdcoder.models.plant_mi import compute_brain, mutual_information

# 4 notes; label 0 on notes 0 and 1. Token 1 ("a") in notes 0, 1 (perfectly associated), token 2 ("b") in
# notes 0, 2 (independent of the label), token 3 ("c") in notes 0, 1, 2.
DOCS = [[1, 2, 3], [1, 3], [2, 3], [4]]
LABELS = [[0], [0], [], []]


def test_mutual_information_on_hand_made_table() -> None:
    brain = compute_brain(DOCS, LABELS, vocab_size=5, n_labels=1, kind="jaccard", top_tokens=0)
    jac = brain.dense(5)[:, 0]
    # a: p11 = p00 = 1/2 → I = log 2 = H_T = H_L → I / (H_T + H_L − I) = 1.
    assert jac[1] == pytest.approx(1.0, abs=1e-6)
    # b: p11 = 1/4 = p_T p_L → I = 0.
    assert jac[2] == pytest.approx(0.0, abs=1e-6)
    # c: p11 = 1/2, p(T, ¬L) = 1/4, p(¬T, L) = 0, p00 = 1/4, p_T = 3/4, p_L = 1/2.
    i_c = (
        0.5 * math.log(0.5 / (0.75 * 0.5))
        + 0.25 * math.log(0.25 / (0.75 * 0.5))
        + 0.25 * math.log(0.25 / 0.125)
    )
    h_t = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_l = math.log(2)
    assert i_c == pytest.approx(0.215762, abs=1e-6)  # the hand value
    assert jac[3] == pytest.approx(i_c / (h_t + h_l - i_c), abs=1e-6)  # 0.207519
    assert jac[3] == pytest.approx(0.207519, abs=1e-5)
    by_hl = compute_brain(DOCS, LABELS, vocab_size=5, n_labels=1, kind="label_entropy", top_tokens=0)
    assert by_hl.dense(5)[3, 0] == pytest.approx(i_c / h_l, abs=1e-6)  # 0.311279
    raw = compute_brain(DOCS, LABELS, vocab_size=5, n_labels=1, kind="mi", top_tokens=0)
    assert raw.dense(5)[1, 0] == pytest.approx(math.log(2), abs=1e-6)
    assert raw.dense(5)[0, 0] == 0.0  # padding is ignored
    # The brain keeps each label's tokens in descending order.
    assert brain.token_ids[0, :2].tolist() == [1, 3]


def test_mutual_information_matches_direct_formula_elementwise() -> None:
    n11 = np.array([[2.0]])
    mi, ht, hl = mutual_information(n11, np.array([2.0]), np.array([2.0]), 4)
    assert mi[0, 0] == pytest.approx(math.log(2))
    assert ht[0, 0] == pytest.approx(math.log(2)) and hl[0, 0] == pytest.approx(math.log(2))


def test_label_chunks_and_top_tokens_do_not_change_values() -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 40, size=rng.integers(3, 20)) for _ in range(30)]
    labels = [sorted(set(rng.integers(0, 7, size=2).tolist())) for _ in range(30)]
    full = compute_brain(docs, labels, 40, 7, top_tokens=0, label_chunk=100).dense(40)
    chunked = compute_brain(docs, labels, 40, 7, top_tokens=0, label_chunk=3).dense(40)
    np.testing.assert_allclose(full, chunked, atol=1e-7)
    top = compute_brain(docs, labels, 40, 7, top_tokens=5, label_chunk=2)
    for c in range(7):
        best = np.sort(full[:, c])[::-1][:5]
        np.testing.assert_allclose(top.values[c], best, atol=1e-7)


def test_graded_relevance_uses_101_levels_and_ignores_boxcox() -> None:
    vals = np.random.default_rng(1).exponential(size=(3, 500)) ** 3
    g = graded_relevance(vals)
    assert g.min() >= 0 and g.max() == 100
    # Box-Cox is strictly increasing, so per-label quantile grades do not change.
    np.testing.assert_array_equal(graded_relevance(boxcox_positive(vals)), g)
    assert (np.argsort(g[0], kind="stable")[-1]) == np.argmax(vals[0])


def test_lambdarank_gradient_three_items_by_hand() -> None:
    z = torch.tensor([[0.0, 1.0, 2.0]])
    g = torch.tensor([[1, 0, 0]])
    lam = lambdarank_gradients(z, g, k=15, sigma=0.5)[0]
    # Ranks: item 2 first, 1 second, 0 third; discounts 1, 1/log2 3 = 0.63093, 1/log2 4 = 0.5.
    # Gains 2^g = 2, 1, 1; ideal DCG = 2 + 0.63093 + 0.5 = 3.13093.
    # |ΔnDCG|_01 = (2 − 1)(0.63093 − 0.5) / 3.13093 = 0.041819;
    # |ΔnDCG|_02 = (2 − 1)(1 − 0.5) / 3.13093 = 0.159697.
    # λ_01 = −0.5 / (1 + e^{−0.5}) · 0.041819 = −0.013016; λ_02 = −0.5 / (1 + e^{−1}) · 0.159697 = −0.058374.
    np.testing.assert_allclose(lam.numpy(), [-0.071390, 0.013016, 0.058374], atol=2e-6)
    # k = 1: only swaps that move an item into or out of rank 1 count.
    lam1 = lambdarank_gradients(z, g, k=1, sigma=0.5)[0]
    delta02 = 1.0 / 2.0  # (2 − 1)(1 − 0) / ideal DCG@1 = 2
    l02 = -0.5 / (1 + math.exp(-1.0)) * delta02
    np.testing.assert_allclose(lam1.numpy(), [l02, 0.0, -l02], atol=1e-6)


def test_ndcg_perfect_and_reversed() -> None:
    g = torch.tensor([[2, 1, 0]])
    assert float(ndcg_at_k(torch.tensor([[3.0, 2.0, 1.0]]), g, 15)[0]) == pytest.approx(1.0)
    rev = float(ndcg_at_k(torch.tensor([[1.0, 2.0, 3.0]]), g, 15)[0])
    ideal = 4 + 2 / math.log2(3) + 1 / 2
    assert rev == pytest.approx((1 + 2 / math.log2(3) + 4 / 2) / ideal)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
def test_l2r_learns_brain_ranking(kind: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    docs, labels = [], []
    for _ in range(80):  # label c is signalled by tokens 10c+1 … 10c+3
        lab = sorted(set(rng.integers(0, 4, size=2).tolist()))
        toks = rng.integers(41, 60, size=8).tolist() + [10 * c + j for c in lab for j in (1, 2, 3)]
        docs.append(toks)
        labels.append(lab)
    brain = compute_brain(docs, labels, 60, 4, top_tokens=20)
    scorer = L2RScorer(kind, 60, 4, dim=8, hidden=16)  # type: ignore[arg-type]
    hist = train_l2r(
        scorer, brain, 60, L2RTrainConfig(epochs=40, list_size=16, label_batch=4, lr=0.05, weight_decay=0.0)
    )
    assert hist[-1] > hist[0] + 0.1
    table = RelevanceTable.from_brain(brain, 60)
    assert table.grades(np.array([[11, 59]]))[0, 0] > table.grades(np.array([[11, 59]]))[0, 1]
    with torch.no_grad():
        m = scorer.matrix(torch.tensor([[1, 11, 21, 31]]))[0]
    assert m.shape == (4, 4)
    if kind == "dot":
        assert m.argmax(0).tolist() == [0, 1, 2, 3]  # each label ranks its own signal token first
    np.testing.assert_allclose(
        m[2, 1].item(), scorer.pairs(torch.tensor([21]), torch.tensor([1])).item(), rtol=1e-5, atol=1e-6
    )

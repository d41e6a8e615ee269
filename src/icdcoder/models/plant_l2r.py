"""PLANT's learning-to-rank model of (token, label) pairs, bootstrapped from the MI brain (seed 004, A.2).

Relevance: the brain values of a label's tokens (negative values set to 1e-20, Box-Cox transformed, as in
the authors' bootl2r.py) are mapped to 101 graded relevance levels by per-label quantiles at the levels
{0} ∪ logspace(-4, 0, 100) (the authors' `PreLoadTrans.quantized_score`). Box-Cox is strictly increasing,
so the quantile grades are the same with or without it (kept for fidelity; a test pins this).

Scorers (`L2RScorer`):
- "dot" — the authors' `L2R_DotProductBias`: s(t, l) = ⟨u_t, v_l⟩ + b_t + b_l;
- "mlp" — the seed's Eq. 7 with L = 2: s(t, l) = w₂ · relu(W₁ [e_l; e_t] + b₁) + b₂.

Training: LambdaRank (Burges 2010; the authors' `rank_loss3`) with σ = 0.5, gain 2^g, |ΔnDCG@k|, k = 15:
for every pair with g_j > g_k, λ_jk = −σ / (1 + exp(σ (z_j − z_k))) · |ΔnDCG@k|_jk, λ_j = Σ_k λ_jk − Σ_k λ_kj,
and the scores are back-propagated with those λ as their gradient (`z.backward(λ)`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from icdcoder.models.plant_mi import Brain

log = logging.getLogger(__name__)

ScorerKind = Literal["dot", "mlp"]
N_GRADES = 101


def boxcox_positive(values: np.ndarray, max_fit: int = 50_000, seed: int = 0) -> np.ndarray:
    """Negative (and zero) values → 1e-20, then Box-Cox with the maximum-likelihood λ (scipy), λ fitted on
    at most `max_fit` values drawn at random (the MLE over 3.5 M CodiEsp values takes a minute)."""
    v = np.maximum(np.asarray(values, dtype=np.float64).ravel(), 1e-20)
    if np.ptp(v) == 0:
        return np.zeros(np.shape(values))
    fit = v if v.size <= max_fit else np.random.default_rng(seed).choice(v, size=max_fit, replace=False)
    if np.ptp(fit) == 0:
        fit = v
    _, lmbda = stats.boxcox(fit)
    return np.asarray(stats.boxcox(v, lmbda=lmbda)).reshape(np.shape(values))


def quantile_levels() -> np.ndarray:
    """The 101 quantile levels of the authors' grading: 0 and 100 log-spaced levels from 1e-4 to 1."""
    return np.concatenate([[0.0], np.logspace(-4, 0, N_GRADES - 1)])


def graded_relevance(values: np.ndarray) -> np.ndarray:
    """Per row (label), grade 0..100 = the number of quantile levels (after the first) whose quantile the
    value reaches. values [C, m] → int64 [C, m]."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    q = np.quantile(v, quantile_levels(), axis=1).T  # [C, 101]
    grades = np.empty(v.shape, dtype=np.int64)
    for i in range(v.shape[0]):
        grades[i] = np.searchsorted(q[i], v[i], side="right") - 1
    return np.clip(grades, 0, N_GRADES - 1)


def dcg_discounts(n: int, k: int, device: torch.device | None = None) -> Tensor:
    """1 / log2(1 + rank) for ranks 1..n, 0 beyond rank k (float64)."""
    r = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    d = 1.0 / torch.log2(1.0 + r)
    d[k:] = 0.0
    return d


def ndcg_at_k(scores: Tensor, grades: Tensor, k: int) -> Tensor:
    """nDCG@k per list. scores, grades [L, n] → [L] (lists with no gain score 1)."""
    n = scores.shape[-1]
    disc = dcg_discounts(n, k, scores.device)
    gain = torch.pow(2.0, grades.double())
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    dcg = (gain.gather(-1, order) * disc).sum(-1)
    ideal = (torch.sort(gain, dim=-1, descending=True).values * disc).sum(-1)
    return torch.where(ideal > 0, dcg / ideal, torch.ones_like(dcg))


def lambdarank_gradients(scores: Tensor, grades: Tensor, k: int = 15, sigma: float = 0.5) -> Tensor:
    """The LambdaRank λ_j (∂loss/∂z_j) of every item. scores, grades [L, n] → [L, n] (float of scores).

    Ranks come from the current scores (descending, ties by position); |ΔnDCG@k|_jk is the change of
    nDCG@k when items j and k swap ranks.
    """
    z = scores.detach().double()
    g = grades.double()
    n = z.shape[-1]
    disc = dcg_discounts(n, k, z.device)
    order = torch.argsort(z, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(n, device=z.device).expand_as(order))
    d = disc[ranks]  # [L, n] each item's discount at its current rank
    gain = torch.pow(2.0, g)
    ideal = (torch.sort(gain, dim=-1, descending=True).values * disc).sum(-1, keepdim=True)  # [L, 1]
    delta = ((gain[:, :, None] - gain[:, None, :]) * (d[:, :, None] - d[:, None, :])).abs()
    delta = delta / ideal.clamp_min(1e-300)[:, :, None]
    better = g[:, :, None] > g[:, None, :]  # pair (j, k) in I: g_j > g_k
    lam = -sigma / (1.0 + torch.exp(sigma * (z[:, :, None] - z[:, None, :]))) * delta
    lam = torch.where(better, lam, torch.zeros_like(lam))
    out = lam.sum(-1) - lam.sum(-2)
    return out.to(scores.dtype)


class L2RScorer(nn.Module):
    """Scores (token, label) pairs; `matrix(token_ids)` scores every label for every token."""

    def __init__(self, kind: ScorerKind, n_tokens: int, n_labels: int, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.kind = kind
        self.token_factors = nn.Embedding(n_tokens, dim)
        self.label_factors = nn.Parameter(torch.empty(n_labels, dim))
        nn.init.normal_(self.token_factors.weight, 0.0, 0.01)
        nn.init.normal_(self.label_factors, 0.0, 0.01)
        if kind == "dot":
            self.token_bias = nn.Embedding(n_tokens, 1)
            self.label_bias = nn.Parameter(torch.zeros(n_labels))
            nn.init.zeros_(self.token_bias.weight)
        elif kind == "mlp":
            # W₁ [e_l; e_t] split into its label and token halves, so a [T, C] score matrix never builds the
            # [T, C, 2·dim] concatenation.
            self.w1_label = nn.Linear(dim, hidden)
            self.w1_token = nn.Linear(dim, hidden, bias=False)
            self.w2 = nn.Linear(hidden, 1)
        else:
            raise ValueError(f"unknown L2R scorer {kind!r}")

    def pairs(self, token_ids: Tensor, label_ids: Tensor) -> Tensor:
        """Scores of aligned pairs: token_ids, label_ids [...] → [...]."""
        e_t = self.token_factors(token_ids)
        e_l = self.label_factors[label_ids]
        if self.kind == "dot":
            return (e_t * e_l).sum(-1) + self.token_bias(token_ids).squeeze(-1) + self.label_bias[label_ids]
        h = torch.relu(self.w1_label(e_l) + self.w1_token(e_t))
        return self.w2(h).squeeze(-1)

    def matrix(self, token_ids: Tensor) -> Tensor:
        """token_ids [B, T] → scores [B, T, C] for every label."""
        e_t = self.token_factors(token_ids)
        if self.kind == "dot":
            return e_t @ self.label_factors.t() + self.token_bias(token_ids) + self.label_bias
        h = torch.relu(self.w1_token(e_t)[:, :, None, :] + self.w1_label(self.label_factors))
        return self.w2(h).squeeze(-1)


@dataclass
class L2RTrainConfig:
    epochs: int = 100  # the authors' 100 epochs
    list_size: int = 64  # tokens per (label) list: the authors' sl = 64
    label_batch: int = 64  # labels per step (the authors' bs 64)
    lr: float = 7e-3  # upper end of the authors' 7e-5 … 7e-3
    weight_decay: float = 0.1
    k: int = 15
    sigma: float = 0.5
    seed: int = 0


@dataclass
class RelevanceTable:
    """Each label's kept tokens sorted by id, with their grades, for looking up any token's grade."""

    sorted_ids: np.ndarray  # [C, m]
    sorted_grades: np.ndarray  # [C, m]
    vocab_size: int

    @classmethod
    def from_brain(cls, brain: Brain, vocab_size: int) -> RelevanceTable:
        grades = graded_relevance(boxcox_positive(brain.values))
        order = np.argsort(brain.token_ids, axis=1, kind="stable")
        ids = np.take_along_axis(brain.token_ids, order, axis=1)
        return cls(ids, np.take_along_axis(grades, order, axis=1), vocab_size)

    def grades(self, token_ids: np.ndarray) -> np.ndarray:
        """token_ids [C, n] → grades [C, n] (0 for tokens outside the label's kept tokens)."""
        c = self.sorted_ids.shape[0]
        offset = (np.arange(c, dtype=np.int64) * (self.vocab_size + 1))[:, None]
        flat = (self.sorted_ids + offset).ravel()
        query = token_ids + offset
        pos = np.searchsorted(flat, query.ravel()).reshape(query.shape)
        pos = np.minimum(pos, flat.size - 1)
        hit = flat[pos] == query
        return np.where(hit, self.sorted_grades.ravel()[pos], 0)


def bootstrap_lists(
    table: RelevanceTable, list_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One sampled list per label: half of its tokens from the label's kept (best) tokens, the rest uniform
    over the vocabulary (grade 0 unless among the kept ones). Returns (token_ids, grades) [C, n]."""
    c, m = table.sorted_ids.shape
    n_top = min(list_size // 2, m)
    pick = np.argsort(rng.random((c, m)), axis=1)[:, :n_top]
    top = np.take_along_axis(table.sorted_ids, pick, axis=1)
    rand = rng.integers(1, max(table.vocab_size, 2), size=(c, list_size - n_top))
    toks = np.concatenate([top, rand], axis=1)
    return toks, table.grades(toks)


def train_l2r(scorer: L2RScorer, brain: Brain, vocab_size: int, cfg: L2RTrainConfig) -> list[float]:
    """Fit `scorer` with LambdaRank on lists bootstrapped from `brain` (resampled every epoch). Returns the
    mean nDCG@k of each epoch's lists before the epoch's updates."""
    rng = np.random.default_rng(cfg.seed)
    table = RelevanceTable.from_brain(brain, vocab_size)
    opt = torch.optim.Adam(scorer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[float] = []
    n_labels = brain.n_labels
    for epoch in range(cfg.epochs):
        toks_np, grades_np = bootstrap_lists(table, cfg.list_size, rng)
        toks, grades = torch.from_numpy(toks_np), torch.from_numpy(grades_np)
        labels = torch.arange(n_labels)[:, None].expand_as(toks)
        with torch.no_grad():
            history.append(float(ndcg_at_k(scorer.pairs(toks, labels), grades, cfg.k).mean()))
        for start in range(0, n_labels, cfg.label_batch):
            sl = slice(start, start + cfg.label_batch)
            z = scorer.pairs(toks[sl], labels[sl])
            lam = lambdarank_gradients(z, grades[sl], cfg.k, cfg.sigma)
            opt.zero_grad(set_to_none=True)
            z.backward(lam / math.ceil(n_labels / cfg.label_batch))
            opt.step()
        if epoch % 10 == 0:
            log.info("L2R epoch %d: nDCG@%d %.4f", epoch, cfg.k, history[-1])
    return history

"""Building blocks of ISD (Zhou et al., ACL 2021) that are not specific to its scoring: masked multi-head
attention, the bidirectional interactive decoder layer, the Hungarian cosine distillation loss (Eq. 13-14),
and the sampling of the two code-completion tasks (Eq. 9-10).

Attention here never attends to padding and never produces NaN: the shared `masked_softmax` gives exact zero
weights to masked keys and an all-zero row when every key is masked (an empty note, a document without gold
codes in the teacher path), which `nn.MultiheadAttention` turns into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from icdcoder.models.attention import masked_softmax


class MaskedMultiheadAttention(nn.Module):
    """Scaled dot-product attention with input/output projections, like `nn.MultiheadAttention` (Xavier-
    uniform input projections, zero biases), but with a [B, T] key mask (True = real key) and dropout on the
    weights used for the values only; the returned weights are the pre-dropout ones, averaged over heads."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.out_proj.bias)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        """[B, N, D] → [B, H, N, D/H]."""
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """query [B, Q, D] or [Q, D] (shared by the batch), key/value [B, T, D], key_mask (True = may attend)
        [B, T] or per query [B, Q, T], or None. Returns (output [B, Q, D], weights [B, Q, T])."""
        q = self.q_proj(query)
        if q.dim() == 2:
            q = q.unsqueeze(0).expand(key.shape[0], -1, -1)
        q, k, v = self._split(q), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, Q, T]
        if key_mask is not None:
            key_mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None, :, :]
        weights = masked_softmax(scores, key_mask)
        ctx = self.dropout(weights).to(v.dtype) @ v  # [B, H, Q, D/H]
        b, h, n, dh = ctx.shape
        out = self.out_proj(ctx.transpose(1, 2).reshape(b, n, h * dh))
        return out, weights.mean(dim=1)


class InteractiveDecoderLayer(nn.Module):
    """One post-norm Transformer decoder layer without a causal mask (as `nn.TransformerDecoderLayer`, ReLU):
    self-attention among the target vectors (the shared representations, or a code sequence in the
    completion tasks), cross-attention to the note's token states, feed-forward; residual + LayerNorm each."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MaskedMultiheadAttention(dim, heads, dropout)
        self.cross_attn = MaskedMultiheadAttention(dim, heads, dropout)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, x_mask: Tensor | None, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """x [B, Q, D] with self-attention mask x_mask ([B, Q] keys, [B, Q, Q] per query, or None = all),
        memory [B, T, D] with memory_mask [B, T]."""
        x = self.norm1(x + self.drop1(self.self_attn(x, x, x, x_mask)[0]))
        x = self.norm2(x + self.drop2(self.cross_attn(x, memory, memory, memory_mask)[0]))
        out: Tensor = self.norm3(x + self.drop3(self.ff(x)))
        return out


def hungarian_distillation(
    student: Tensor, teacher: Tensor, valid: Tensor
) -> tuple[Tensor, list[np.ndarray]]:
    """Eq. 13-14: for each example, match student and teacher shared representations one-to-one so that the
    total cosine similarity is maximal (Hungarian algorithm; the shared vectors are an unordered set), and
    take 1 − mean matched cosine. Averaged over the examples where `valid` is True.

    student, teacher [B, Q, D]; valid [B] bool. The assignment is computed on detached similarities (it is not
    differentiable); the loss is differentiated through the matched similarities. Returns (loss, the teacher
    index matched to each student vector, per valid example)."""
    sim = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).transpose(1, 2)  # [B, Q, Q]
    sim_np = sim.detach().float().cpu().numpy()
    losses, assignments = [], []
    for b in valid.nonzero().flatten().tolist():
        rows, cols = linear_sum_assignment(sim_np[b], maximize=True)
        assignments.append(cols)
        idx_r = torch.as_tensor(rows, device=sim.device)
        idx_c = torch.as_tensor(cols, device=sim.device)
        losses.append(1.0 - sim[b, idx_r, idx_c].mean())
    if not losses:
        return sim.sum() * 0.0, assignments
    return torch.stack(losses).mean(), assignments


@dataclass
class CompletionBatch:
    """Code sequences of the completion tasks, two per document: [:, 0] missing-code completion, [:, 1]
    wrong-code removal. Code index `n_codes` (= C) is the mask token and the none class."""

    codes: Tensor  # [B, 2, L] long, code indices (C = mask token); padding positions hold 0
    mask: Tensor  # [B, 2, L] bool, True = real position
    position: Tensor  # [B, 2] long, the position whose output is classified
    target: Tensor  # [B, 2] long, the class: a code index, or C (none/mask)
    valid: Tensor  # [B, 2] bool, False where the document has no such sequence

    def to(self, device: torch.device | str) -> CompletionBatch:
        return CompletionBatch(
            *(t.to(device) for t in (self.codes, self.mask, self.position, self.target, self.valid))
        )


def _corrupt_count(n: int) -> int:
    """The authors' count of corrupted leading positions: m = max(1, min(n // 2, ⌊1 − ln U⌋)), U ~ U(0,1)."""
    u = float(torch.rand(()).clamp_min(1e-12))
    return max(1, min(n // 2, math.floor(1.0 - math.log(u))))


def _random_other(n_codes: int, exclude: set[int]) -> int | None:
    """A code index drawn uniformly from those not in `exclude` (None when every code is excluded)."""
    if len(exclude) >= n_codes:
        return None
    if len(exclude) * 2 < n_codes:  # rejection sampling is cheap when most codes are allowed
        while True:
            c = int(torch.randint(n_codes, ()))
            if c not in exclude:
                return c
    allowed = [c for c in range(n_codes) if c not in exclude]
    return allowed[int(torch.randint(len(allowed), ()))]


def sample_completion(targets: Tensor, n_codes: int, length: int = 40, noise: bool = True) -> CompletionBatch:
    """Build one missing-code and one wrong-code sequence per document from its gold codes (rows of the 0/1
    `targets` [B, C]); every draw comes from torch's global RNG.

    Missing-code completion (Eq. 9): the gold codes in random order, at most `length`; the first becomes
    the mask token and is the target. With `noise` (the authors' code), the next m − 1 positions are also
    corrupted, m = max(1, min(n // 2, ⌊1 − ln U⌋)): 50 % a random code, 25 % another gold code (neither is
    ever the target), 25 % kept. Not built for a document without gold codes.

    Wrong-code removal (Eq. 10): at most `length` − 1 gold codes in random order plus one random non-gold code
    at the end; the target at that position is the none class (index C). (The decoder has no positional
    encodings, so the position does not matter.) Not built when every code is gold.
    """
    n_docs = targets.shape[0]
    seqs: list[list[list[int]]] = [[[], []] for _ in range(n_docs)]
    position = torch.zeros(n_docs, 2, dtype=torch.long)
    target = torch.zeros(n_docs, 2, dtype=torch.long)
    valid = torch.zeros(n_docs, 2, dtype=torch.bool)
    for b in range(n_docs):
        row = targets[b].nonzero().flatten()
        gold: list[int] = row[torch.randperm(row.numel())].tolist()
        if gold:
            seq: list[int] = gold[:length]
            target[b, 0] = seq[0]
            seq[0] = n_codes
            if noise:
                for i in range(1, min(_corrupt_count(len(gold)), len(seq))):
                    r = float(torch.rand(()))
                    if r < 0.5:  # a random code (never the target: it must stay hidden)
                        other = _random_other(n_codes, {gold[0]})
                        seq[i] = seq[i] if other is None else other
                    elif r < 0.75:  # another gold code, never the masked target itself
                        seq[i] = gold[1 + int(torch.randint(len(gold) - 1, ()))]
            seqs[b][0], valid[b, 0] = seq, True
        wrong = _random_other(n_codes, set(gold))
        if wrong is not None:
            seq = [*gold[: length - 1], wrong]
            seqs[b][1], valid[b, 1] = seq, True
            position[b, 1], target[b, 1] = len(seq) - 1, n_codes
    width = max([1, *(len(q) for pair in seqs for q in pair)])
    codes = torch.zeros(n_docs, 2, width, dtype=torch.long)
    mask = torch.zeros(n_docs, 2, width, dtype=torch.bool)
    for b, pair in enumerate(seqs):
        for j, seq in enumerate(pair):
            codes[b, j, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[b, j, : len(seq)] = True
    return CompletionBatch(codes, mask, position, target, valid)


def block_self_mask(sizes: list[int], valid: Tensor) -> Tensor:
    """Self-attention mask [B, N, N] (True = may attend) for per-document query blocks of the given sizes
    (N = sum): a query sees the valid keys of its own block only. valid [B, N] marks real positions."""
    n = sum(sizes)
    block = torch.repeat_interleave(
        torch.arange(len(sizes), device=valid.device), torch.tensor(sizes, device=valid.device)
    )
    same = block[:, None] == block[None, :]  # [N, N]
    assert valid.shape[1] == n
    return same[None] & valid[:, None, :]

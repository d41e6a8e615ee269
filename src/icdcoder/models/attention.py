"""Label attention, written once and shared by every model (CAML, LAAT, JointLAAT, MSMN, ISD, JLAN, ...).

Given token states H [B, T, D] and per-label queries, compute per-label attention weights over tokens and the
label-specific document vectors. Padding is masked (a known bug in peer code attended to padding), the softmax
is computed in float32 after subtracting the max (no overflow with long notes), and an all-padding row gives
zero weights instead of NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over `dim`; weight 0 where `mask` (broadcastable, True = keep) is False; all-masked → 0s.

    Masked scores are set to the most negative float32 (not -inf), so the fused softmax never sees a row of
    -inf and never makes NaN; exp(min - max) underflows to exactly 0. Only when some row has no real token
    at all (an empty note) is a broadcast multiply needed to zero it. This keeps the number of full-size
    [B, C, T] temporaries at two, which is what bounds memory at ~9,000 codes × 4,000 tokens.
    """
    scores = scores.float()
    if mask is None:
        return torch.softmax(scores, dim=dim)
    weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(torch.float32).min), dim=dim)
    has_token = mask.any(dim=dim, keepdim=True)
    if not bool(has_token.all()):
        weights = weights * has_token
    return weights


def label_attention(
    keys: Tensor, queries: Tensor, values: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Dot-product label attention.

    keys [B, T, K], queries [C, K] (shared) or [B, C, K], values [B, T, D], mask [B, T] (True = token).
    Returns (context [B, C, D], weights [B, C, T]).
    """
    if queries.dim() == 2:
        scores = torch.einsum("btk,ck->bct", keys, queries)
    else:
        scores = torch.einsum("btk,bck->bct", keys, queries)
    weights = masked_softmax(scores, None if mask is None else mask[:, None, :], dim=-1)
    context = torch.bmm(weights.to(values.dtype), values)
    return context, weights


class LabelAttention(nn.Module):
    """Per-label attention with learned label queries.

    mode "linear" (CAML): scores = H · U_c.
    mode "laat" (LAAT, Vu et al. 2020): Z = tanh(W H) [d_a], scores = Z · U_c.
    `layer_norm=True` normalises H before scoring (stabilises long-note training).
    """

    def __init__(
        self, input_dim: int, n_labels: int, mode: str = "laat", proj_dim: int = 512, layer_norm: bool = False
    ) -> None:
        super().__init__()
        if mode not in ("linear", "laat"):
            raise ValueError(f"unknown label attention mode {mode!r}")
        self.mode = mode
        self.norm = nn.LayerNorm(input_dim) if layer_norm else nn.Identity()
        key_dim = input_dim
        self.proj: nn.Module = nn.Identity()
        if mode == "laat":
            self.proj = nn.Linear(input_dim, proj_dim, bias=False)
            key_dim = proj_dim
        self.queries = nn.Parameter(torch.empty(n_labels, key_dim))
        nn.init.xavier_uniform_(self.queries)

    def keys(self, hidden: Tensor) -> Tensor:
        """The attention keys [B, T, K] of token states [B, T, D] (what the code queries are dotted with)."""
        h = self.norm(hidden)
        return torch.tanh(self.proj(h)) if self.mode == "laat" else h

    def forward(self, hidden: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """hidden [B, T, D], mask [B, T] → (context [B, C, D], weights [B, C, T])."""
        return label_attention(self.keys(hidden), self.queries, hidden, mask)

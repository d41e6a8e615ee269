"""Truncation loss ("T-loss"): binary cross-entropy that ignores the largest-loss part of each batch.

JLAN (Li et al. 2021, "Denoising mechanism") takes the truncated loss of Wang et al. (2021, "Denoising
implicit feedback for recommendation", the seed's ref. 26): labels that the model finds hardest to fit early
in training are more likely to be wrong, so their BCE terms are set to zero. The share that is dropped grows
with training:

    D_T = min(γ · T, D_max)

with T the training progress and D_max the upper bound (the seed's "T-loss", 0.15). The seed gives no γ; we
express it through `warmup`, the fraction of the planned optimizer steps after which D_max is reached:
T = step / total_steps and γ = D_max / warmup (so D_T rises linearly from 0 and then stays at D_max).

Any model can use it: call `truncation_drop_rate` with the progress its `set_training_progress` hook receives
and `truncated_bce_with_logits` in its `losses`.

Choices where the seed is ambiguous (each is tested in tests/test_losses.py):
- D_T is a drop *rate* (the share of terms dropped), not a loss value: the seed's table sweeps "T-loss" from
  0.05 to 0.2 and ADT's schedule is a rate. The rate's count is floor(D_T · n), so a rate never drops more
  than its share and D_T = 0 drops nothing.
- scope "positive" (default): the seed's equation zeroes a term only when its loss is large *and* the
  label is 1 (ADT's T-CE: L > τ ∧ ȳ = 1). Only positive (document, code) entries can be dropped. Scope "all"
  lets any entry be dropped, as ADT's released code does; in ICD coding (C ≈ 10³ codes, ~10 positives per
  note) the largest-loss 15 % of all entries holds every positive, so "all" stops the model learning them.
- mode "entry" ranks the eligible (document, code) entries of the batch; mode "document" ranks documents by
  their mean BCE and drops whole documents (scope does not apply).
- Renormalisation: the mean over the kept entries (the kept documents' entries in "document" mode).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MAX_DROP_RATE = 0.15  # the seed's T-loss (Table 3: best at 0.1–0.15; 0.15 kept)
DEFAULT_WARMUP = 0.1  # our choice: D_max is reached after 10 % of the planned optimizer steps

TruncationMode = Literal["entry", "document"]
TruncationScope = Literal["positive", "all"]


def truncation_drop_rate(
    step: int, total_steps: int, *, max_rate: float = DEFAULT_MAX_DROP_RATE, warmup: float = DEFAULT_WARMUP
) -> float:
    """D_T = min(γ·T, D_max), T = step / total_steps, γ = max_rate / warmup (warmup 0: D_max at once)."""
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"max_rate must be in [0, 1), got {max_rate}")
    if warmup < 0.0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if max_rate == 0.0:
        return 0.0
    if warmup == 0.0:
        return max_rate
    progress = step / max(total_steps, 1)
    return min(max_rate / warmup * progress, max_rate)


def truncation_keep_mask(
    losses: Tensor,
    targets: Tensor,
    drop_rate: float,
    *,
    mode: TruncationMode = "entry",
    scope: TruncationScope = "positive",
) -> Tensor:
    """Which terms of a [B, C] loss matrix are kept (bool [B, C]).

    entry: the floor(drop_rate · n) largest losses among the n eligible entries (positives for scope
    "positive", all for "all") are dropped. document: the floor(drop_rate · B) documents with the largest mean
    loss are dropped whole. Ranking uses the detached losses; ties go to the lower flat index (torch.topk)."""
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    keep = torch.ones_like(losses, dtype=torch.bool)
    values = losses.detach()
    if mode == "document":
        n_drop = math.floor(drop_rate * values.shape[0])
        if n_drop:
            worst = torch.topk(values.mean(dim=1), n_drop).indices
            keep[worst] = False
        return keep
    if mode != "entry":
        raise ValueError(f"unknown truncation mode {mode!r}")
    if scope == "positive":
        eligible = targets > 0.5
    elif scope == "all":
        eligible = torch.ones_like(keep)
    else:
        raise ValueError(f"unknown truncation scope {scope!r}")
    n_drop = math.floor(drop_rate * int(eligible.sum()))
    if n_drop:
        ranked = values.masked_fill(~eligible, float("-inf")).flatten()
        worst = torch.topk(ranked, n_drop).indices
        keep.view(-1)[worst] = False
    return keep


def truncated_bce_with_logits(
    logits: Tensor,
    targets: Tensor,
    drop_rate: float,
    *,
    mode: TruncationMode = "entry",
    scope: TruncationScope = "positive",
) -> Tensor:
    """Mean BCE over the kept terms of [B, C] logits/targets; equals the plain mean BCE when drop_rate = 0."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    if drop_rate == 0.0:
        return losses.mean()
    keep = truncation_keep_mask(losses, targets, drop_rate, mode=mode, scope=scope)
    return (losses * keep).sum() / keep.sum().clamp_min(1)


def mean_bce(probs: np.ndarray, targets: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities [N, C] against 0/1 targets [N, C] (probabilities clipped to
    [eps, 1 - eps], as float32 sigmoids can round to exactly 0 or 1). The dev loss logged per epoch."""
    total = 0.0
    for start in range(0, probs.shape[0], 1024):  # float64 in row chunks: MIMIC dev sets are large
        p = np.clip(probs[start : start + 1024].astype(np.float64), eps, 1.0 - eps)
        y = targets[start : start + 1024] > 0.5
        total += float(np.where(y, -np.log(p), -np.log1p(-p)).sum())
    return total / max(probs.size, 1)

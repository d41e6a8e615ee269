"""A tiny registered model and synthetic encoded data for trainer tests (no dependency on real models)."""

from __future__ import annotations

import numpy as np
from torch import nn

from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.training.data import EncodedSplit


class TinyConfig(ModelConfig):
    dim: int = 8
    dropout: float = 0.0


@register_model("_tiny")
class TinyModel(IcdModel):
    Config = TinyConfig

    def __init__(self, config: TinyConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        self.emb = nn.Embedding(ctx.vocab_size, config.dim, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.dim, ctx.n_labels)

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.drop(self.emb(batch.token_ids))  # [B, T, D]
        m = batch.mask.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return ModelOutput(logits=self.out(pooled))


def tiny_split(n_docs: int, vocab: int = 30, n_labels: int = 5, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids, targets = [], []
    for _ in range(n_docs):
        length = int(rng.integers(3, 20))
        t = rng.integers(2, vocab, size=length)
        ids.append(t.astype(np.int64))
        # label j is present when token (2 + j) occurs: learnable
        targets.append(sorted({int(x) - 2 for x in t if 2 <= x < 2 + n_labels}))
    return EncodedSplit([f"d{i}" for i in range(n_docs)], ids, targets, [[] for _ in range(n_docs)])


def tiny_ctx(vocab: int = 30, n_labels: int = 5) -> ModelContext:
    return ModelContext(label_keys=[f"icd10cm:A0{i}" for i in range(n_labels)], vocab_size=vocab)

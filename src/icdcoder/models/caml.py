"""CAML and DR-CAML (Mullenbach et al. 2018, "Explainable Prediction of Medical Codes from Clinical Text").

CAML: word embeddings → one convolution (kernel k, tanh) → per-label attention with one query per code
(label attention mode "linear": scores = H·u_c) → per-label output logit_c = ⟨β_c, v_c⟩ + b_c.

DR-CAML adds the description regulariser: each code's description (its tokenised long title) goes through
its own embedding (a copy of the word embeddings), convolution, tanh and max-pooling, then a linear layer
(`label_fc1` in the authors' code), giving z_c; the loss adds

    desc_reg = λ · mean over positive (document, code) pairs of ||z_c − β_c||²

so codes that are rare in training borrow the output weights their descriptions suggest.

Published training set-up for MIMIC-III (the trainer owns lr / batch; configs copy these values). As we
recall them from the paper's appendix and the caml-mimic README commands; verify before quoting:

| setting              | MIMIC-III full        | MIMIC-III top-50      |
|----------------------|-----------------------|-----------------------|
| optimiser            | Adam, no weight decay | Adam, no weight decay |
| learning rate        | 1e-4                  | 1e-4                  |
| batch size           | 16                    | 16                    |
| max epochs           | 200, early stop 10 on dev P@8 | 200, early stop 10 on dev P@5 |
| dropout (embeddings) | 0.2                   | 0.2                   |
| kernel size          | 10                    | 10                    |
| filters              | 50                    | 50 (500 in some re-implementations) |
| DR-CAML λ            | 0.01                  | 0.01                  |
| max tokens           | 2500                  | 2500                  |
| embeddings           | word2vec CBOW 100-d on MIMIC-III train notes, fine-tuned |  |
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.attention import LabelAttention
from icdcoder.models.base import Batch, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import ConvEncoder, LabelwiseLinear, WordEmbedding
from icdcoder.models.init import DescribedCodesModel, InformedInitConfig, apply_informed_init


class CAMLConfig(InformedInitConfig):
    # Defaults: Mullenbach et al. 2018, MIMIC-III full (kernel 10, 50 filters, dropout 0.2, 100-d word2vec).
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    kernel_size: int = Field(10, ge=1)
    num_filters: int = Field(50, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    attention_layer_norm: bool = False  # not in the paper; stabilises training on long notes


class DRCAMLConfig(CAMLConfig):
    desc_lambda: float = Field(0.01, ge=0.0)  # λ of the description regulariser (Mullenbach et al. 2018)
    # "mean": the paper's formula, λ · mean over positive (doc, code) pairs of ||z_c − β_c||².
    # "caml_code": the authors' code, λ · mean over documents of Σ_positive codes ||z_c − β_c||² / num_filters
    # (`_compare_label_embeddings`: mean over elements times the number of positive codes).
    desc_reg_reduction: Literal["mean", "caml_code"] = "mean"


@register_model("caml")
class CAML(DescribedCodesModel):
    Config: ClassVar[type[ModelConfig]] = CAMLConfig

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, CAMLConfig)
        self.cfg = config
        self.embed = WordEmbedding.from_context(
            ctx, config.embed_dim, dropout=config.dropout, freeze=config.freeze_embeddings
        )
        self.encoder = ConvEncoder(config.embed_dim, config.num_filters, config.kernel_size)
        self.attention = LabelAttention(
            config.num_filters, ctx.n_labels, mode="linear", layer_norm=config.attention_layer_norm
        )
        self.output = LabelwiseLinear(config.num_filters, ctx.n_labels)
        apply_informed_init(
            self,
            config,
            ctx,
            bias=self.output.bias,
            attention=self.attention,
            output_weight=self.output.weight,
            encode=self.encode,
        )

    def encode(self, batch: Batch) -> Tensor:
        h: Tensor = self.encoder(self.embed(batch.token_ids, batch.mask), batch.mask)
        return h

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encode(batch)
        context, weights = self.attention(h, batch.mask)
        return ModelOutput(logits=self.output(context), attention=weights)


def pad_label_tokens(label_token_ids: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Per-code token id lists → (ids [C, L] padded with `pad_id`, mask [C, L]); L ≥ 1."""
    width = max([1, *(len(t) for t in label_token_ids)])
    ids = torch.full((len(label_token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(label_token_ids), width), dtype=torch.bool)
    for i, toks in enumerate(label_token_ids):
        ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        mask[i, : len(toks)] = True
    return ids, mask


@register_model("dr_caml")
class DRCAML(CAML):
    Config: ClassVar[type[ModelConfig]] = DRCAMLConfig
    desc_ids: Tensor
    desc_mask: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, DRCAMLConfig)
        self.dr_cfg = config
        if ctx.label_token_ids and len(ctx.label_token_ids) != ctx.n_labels:
            raise ConfigError(
                f"dr_caml got {len(ctx.label_token_ids)} code descriptions for {ctx.n_labels} codes.",
                fix="tokenise one description per code of the label space.",
            )
        # The description module has its own embedding, a copy of the (initial) word embeddings (CAML code).
        self.desc_embed = WordEmbedding(
            ctx.vocab_size, config.embed_dim, pad_id=ctx.pad_id, freeze=config.freeze_embeddings
        )
        with torch.no_grad():
            self.desc_embed.embedding.weight.copy_(self.embed.embedding.weight)
        self.desc_encoder = ConvEncoder(config.embed_dim, config.num_filters, config.kernel_size)
        self.desc_fc = nn.Linear(config.num_filters, config.num_filters)
        nn.init.xavier_uniform_(self.desc_fc.weight)
        # Rebuilt from the label space at load time, so not saved with the weights.
        ids, mask = pad_label_tokens(ctx.label_token_ids, ctx.pad_id)
        self.has_descriptions = bool(ctx.label_token_ids)
        self.register_buffer("desc_ids", ids, persistent=False)
        self.register_buffer("desc_mask", mask, persistent=False)

    def describe(self, labels: Tensor) -> Tensor:
        """Description vectors z [U, num_filters] of the codes at indices `labels` [U]."""
        ids, mask = self.desc_ids[labels], self.desc_mask[labels]
        h = self.desc_encoder(self.desc_embed(ids, mask), mask)  # [U, L, F], tanh already applied
        h = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # a code without description → 0
        out: Tensor = self.desc_fc(h)
        return out

    def description_regulariser(self, targets: Tensor) -> Tensor:
        """λ-weighted distance between the output weights β_c of the positive codes and their z_c."""
        pos = targets > 0
        per_label = pos.sum(dim=0)  # positives of each code in the batch
        labels = per_label.nonzero().squeeze(1)
        if self.dr_cfg.desc_lambda == 0 or labels.numel() == 0:
            return self.output.weight.sum() * 0.0
        if not self.has_descriptions:
            raise ConfigError(
                "dr_caml needs a tokenised description per code (ModelContext.label_token_ids is empty).",
                fix="train with code titles available, or use model.name: caml.",
            )
        z = self.describe(labels)
        dist = (z - self.output.weight[labels]).pow(2).sum(dim=1)  # [U]
        counts = per_label[labels].to(dist.dtype)
        if self.dr_cfg.desc_reg_reduction == "mean":
            value = (dist * counts).sum() / counts.sum()
        else:
            n_docs = pos.any(dim=1).sum().to(dist.dtype)
            value = (dist * counts).sum() / (self.dr_cfg.num_filters * n_docs)
        return self.dr_cfg.desc_lambda * value

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        terms = super().losses(batch, output)
        assert batch.targets is not None
        terms["desc_reg"] = self.description_regulariser(batch.targets)
        return terms

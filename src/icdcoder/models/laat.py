"""LAAT and JointLAAT (Vu, Nguyen & Nguyen 2020, "A Label Attention Model for ICD Coding from Clinical Text").

LAAT: word embeddings (dropout) → BiLSTM (u units per direction) → label attention (mode "laat":
Z = tanh(W H) with d_a rows, one query u_c per code) → per-label output logit_c = ⟨w_c, v_c⟩ + b_c.

JointLAAT (hierarchical joint learning): a second, independent label attention over the same LSTM states
predicts the level-0 codes (each code's 3-character category: the part before the dot) first; their sigmoid
probabilities are projected to `level_projection_size` (128) units, passed through a sigmoid, and
concatenated to every level-1 label vector before the level-1 output layer (aehrc/LAAT
`src/models/attentions/util.py`). Level-0 targets are derived inside the model from the level-1 targets.
The concatenation is computed as a split dot product (⟨w_c, v_c⟩ + ⟨w'_c, p⟩), which is the same number
without materialising a [B, C, D + 128] tensor.

Published training set-up for MIMIC-III (the trainer owns lr / batch; configs copy these values). As we
recall them from the paper and the aehrc/LAAT README command; verify before quoting:

| setting              | MIMIC-III full          | MIMIC-III top-50        |
|----------------------|-------------------------|-------------------------|
| optimiser            | AdamW, weight decay 0   | AdamW, weight decay 0   |
| learning rate        | 1e-3                    | 1e-3                    |
| batch size           | 8                       | 8                       |
| max epochs           | 50, early stop on dev micro-F1 (patience 5-6) | same |
| dropout (embeddings) | 0.3                     | 0.3                     |
| LSTM units u / dir   | 512                     | 256                     |
| d_a                  | 512                     | 256                     |
| level projection     | 128 (JointLAAT)         | 128 (JointLAAT)         |
| max tokens           | 4000                    | 4000                    |
| embeddings           | word2vec CBOW 100-d on MIMIC-III, fine-tuned |  |
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from icdcoder.models.attention import LabelAttention
from icdcoder.models.base import Batch, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import BiLSTMEncoder, LabelwiseLinear, WordEmbedding
from icdcoder.models.init import DescribedCodesModel, InformedInitConfig, apply_informed_init

_INIT_STD = 0.03  # aehrc/LAAT AttentionLayer._init_weights(mean=0.0, std=0.03), biases 0


class LAATConfig(InformedInitConfig):
    # Defaults: Vu et al. 2020 (IJCAI), MIMIC-III full.
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    hidden_size: int = Field(512, ge=1)  # per direction
    num_layers: int = Field(1, ge=1)
    d_a: int = Field(512, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # on the embeddings (and between LSTM layers if > 1)
    attention_layer_norm: bool = False  # not in the paper; stabilises training on long notes


class JointLAATConfig(LAATConfig):
    level_projection_size: int = Field(128, ge=1)


def level0_key(key: str) -> str:
    """A code key's 3-character category, keeping the system: `icd9cm-dx:401.9` → `icd9cm-dx:401`.

    The part before the dot (ICD-9 E-codes keep 4 characters: `E849.7` → `E849`); dotless codes such as
    ICD-10-PCS keep their first 3 characters.
    """
    system, sep, code = key.rpartition(":")
    head = code.split(".", 1)[0] if "." in code else code[:3]
    return f"{system}{sep}{head}"


def _laat_head(dim: int, n_labels: int, d_a: int, layer_norm: bool) -> tuple[LabelAttention, LabelwiseLinear]:
    attention = LabelAttention(dim, n_labels, mode="laat", proj_dim=d_a, layer_norm=layer_norm)
    output = LabelwiseLinear(dim, n_labels)
    assert isinstance(attention.proj, nn.Linear)
    for p in (attention.queries, attention.proj.weight, output.weight):
        nn.init.normal_(p, 0.0, _INIT_STD)
    nn.init.zeros_(output.bias)
    return attention, output


@register_model("laat")
class LAAT(DescribedCodesModel):
    Config: ClassVar[type[ModelConfig]] = LAATConfig

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, LAATConfig)
        self.cfg = config
        self.embed = WordEmbedding.from_context(
            ctx, config.embed_dim, dropout=config.dropout, freeze=config.freeze_embeddings
        )
        self.encoder = BiLSTMEncoder(config.embed_dim, config.hidden_size, config.num_layers, config.dropout)
        self.attention, self.output = _laat_head(
            self.encoder.output_dim, ctx.n_labels, config.d_a, config.attention_layer_norm
        )
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


@register_model("joint_laat")
class JointLAAT(LAAT):
    Config: ClassVar[type[ModelConfig]] = JointLAATConfig
    parent_index: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, JointLAATConfig)
        parents = [level0_key(k) for k in ctx.label_keys]
        self.level0_keys = sorted(set(parents))
        index = {k: i for i, k in enumerate(self.level0_keys)}
        # Derived from the label space at load time, so not saved with the weights.
        self.register_buffer(
            "parent_index", torch.tensor([index[p] for p in parents], dtype=torch.long), persistent=False
        )
        dim = self.encoder.output_dim
        n0 = len(self.level0_keys)
        self.attention0, self.output0 = _laat_head(dim, n0, config.d_a, config.attention_layer_norm)
        self.level0_projection = nn.Linear(n0, config.level_projection_size, bias=False)
        # The level-1 output weights on the projected level-0 probabilities (the last 128 columns of
        # LAAT's level-1 `third_linear`).
        self.level0_to_label = nn.Parameter(torch.empty(ctx.n_labels, config.level_projection_size))
        nn.init.normal_(self.level0_to_label, 0.0, _INIT_STD)

    def level0_targets(self, targets: Tensor) -> Tensor:
        """[B, C] 0/1 code targets → [B, C0]: a category is positive when any of its codes is."""
        out = targets.new_zeros(targets.shape[0], len(self.level0_keys))
        return out.scatter_reduce(1, self.parent_index.expand_as(targets), targets, reduce="amax")

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encode(batch)
        context0, _ = self.attention0(h, batch.mask)
        logits0 = self.output0(context0)
        projected = torch.sigmoid(self.level0_projection(torch.sigmoid(logits0)))  # [B, P]
        context, weights = self.attention(h, batch.mask)
        logits = self.output(context) + projected @ self.level0_to_label.t()
        return ModelOutput(logits=logits, attention=weights, extras={"level0_logits": logits0})

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        terms = super().losses(batch, output)
        assert batch.targets is not None
        terms["bce_level0"] = nn.functional.binary_cross_entropy_with_logits(
            output.extras["level0_logits"], self.level0_targets(batch.targets)
        )
        return terms

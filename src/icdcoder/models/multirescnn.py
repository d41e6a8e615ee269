"""MultiResCNN (Li & Yu 2020, "ICD Coding from Clinical Text Using Multi-Filter Residual Convolutional
Neural Network").

Word embeddings (dropout) → for each filter size k a tanh convolution keeping the embedding width followed by
a residual block (conv-BN-tanh-conv-BN + 1×1 conv-BN shortcut, tanh, dropout) → the channels concatenated
(6 × 50 = 300 features) → CAML-style per-label attention (mode "linear") and per-label output layer.

Published training set-up for MIMIC-III (the trainer owns lr / batch; configs copy these values). As we
recall them from the paper and the authors' `options.py` / README; verify before quoting:

| setting              | MIMIC-III full          | MIMIC-III top-50        |
|----------------------|-------------------------|-------------------------|
| optimiser            | Adam, weight decay 0    | Adam, weight decay 0    |
| learning rate        | 1e-4                    | 1e-4                    |
| batch size           | 16                      | 16                      |
| max epochs           | 500, early stop 10 on dev P@8 | 500, early stop 10 on dev P@5 |
| dropout              | 0.2                     | 0.2                     |
| filter sizes         | 3, 5, 9, 15, 19, 25     | 3, 5, 9, 15, 19, 25     |
| filters per size     | 50                      | 50                      |
| residual layers      | 1                       | 1                       |
| max tokens           | 2500                    | 2500                    |
| embeddings           | word2vec 100-d (CAML's), fine-tuned (`-tune_wordemb`) |  |
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from icdcoder.models.attention import LabelAttention
from icdcoder.models.base import Batch, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import LabelwiseLinear, MultiResCNNEncoder, WordEmbedding
from icdcoder.models.init import DescribedCodesModel, InformedInitConfig, apply_informed_init


class MultiResCNNConfig(InformedInitConfig):
    # Defaults: Li & Yu 2020 (AAAI), MIMIC-III full.
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    filter_sizes: tuple[int, ...] = Field((3, 5, 9, 15, 19, 25), min_length=1)
    num_filters: int = Field(50, ge=1)
    conv_layers: int = Field(1, ge=1, le=4)  # residual blocks per channel (authors' `conv_dict`)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on the embeddings and after each residual block
    attention_layer_norm: bool = False  # not in the paper


@register_model("multirescnn")
class MultiResCNN(DescribedCodesModel):
    Config: ClassVar[type[ModelConfig]] = MultiResCNNConfig

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, MultiResCNNConfig)
        self.cfg = config
        self.embed = WordEmbedding.from_context(
            ctx, config.embed_dim, dropout=config.dropout, freeze=config.freeze_embeddings
        )
        self.encoder = MultiResCNNEncoder(
            config.embed_dim, config.filter_sizes, config.num_filters, config.conv_layers, config.dropout
        )
        dim = self.encoder.output_dim
        self.attention = LabelAttention(
            dim, ctx.n_labels, mode="linear", layer_norm=config.attention_layer_norm
        )
        self.output = LabelwiseLinear(dim, ctx.n_labels)
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

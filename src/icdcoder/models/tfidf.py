"""The linear floor: one-vs-rest logistic regression on TF-IDF features, as a torch module so it trains, saves
and predicts through the same machinery as the neural models.

Features match scikit-learn's `TfidfVectorizer(sublinear_tf=True, smooth_idf=True, norm="l2")` fitted on the
training split: tf = 1 + ln(count), idf = ln((1 + n) / (1 + df)) + 1 with df the training document frequency
and n the number of training documents (ids seen in no training document are dropped, as they are outside
scikit-learn's fitted vocabulary), x = l2-normalise(tf · idf). They are built in forward by scatter-adding
token ids into a [B, V] tensor (padding ignored), then logits = Linear(V, C)(x). The L2 penalty of logistic
regression is the trainer's weight decay. The idf vector is a saved buffer (it is learned from the data).

Evidence: in eval mode (or always / never, `output_attention`) the model returns, per code, each token's
share of the positive evidence: the contribution w_{c,v}·x_v of the token's vocabulary entry v, split evenly
over its occurrences, clipped at 0 and normalised to sum 1 over the document (all zero when no token speaks
for the code). That is a [B, C, T] tensor, like the attention of the other models.

No published set-up: a project baseline. Weights start at zero (as scikit-learn's solvers do).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model


class TfidfConfig(ModelConfig):
    # When to return per-token evidence ([B, C, T] memory): only in eval mode by default.
    output_attention: Literal["eval", "always", "never"] = "eval"


def smooth_idf(doc_freq: list[int], n_docs: int, vocab_size: int) -> Tensor:
    """scikit-learn's smooth idf, ln((1 + n) / (1 + df)) + 1, per vocabulary id (float32 [V]).

    Ids that occur in no training document (pad, unused specials) get 0: scikit-learn's fitted vocabulary
    does not contain them, so they must not count in the l2 norm either. Without frequencies: all ones.
    """
    if not doc_freq:
        return torch.ones(vocab_size)
    df = torch.tensor(doc_freq, dtype=torch.float64)
    idf = torch.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    return torch.where(df > 0, idf, torch.zeros_like(idf)).float()


@register_model("tfidf")
class TfidfLogReg(IcdModel):
    Config: ClassVar[type[ModelConfig]] = TfidfConfig
    idf: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, TfidfConfig)
        self.cfg = config
        if len(ctx.token_doc_freq) not in (0, ctx.vocab_size):
            raise ConfigError(
                f"tfidf got {len(ctx.token_doc_freq)} document frequencies for a vocabulary of "
                f"{ctx.vocab_size}.",
                fix="count document frequencies over the same vocabulary.",
            )
        self.vocab_size = ctx.vocab_size
        self.pad_id = ctx.pad_id
        # Without frequencies (a model directory being loaded) idf starts at ln(1)+1 = 1 and the saved
        # buffer replaces it.
        self.register_buffer("idf", smooth_idf(ctx.token_doc_freq, ctx.n_train_docs, ctx.vocab_size))
        self.linear = nn.Linear(ctx.vocab_size, ctx.n_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def counts(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(term counts [B, V], real-token mask [B, T]) of the batch."""
        real = batch.mask & (batch.token_ids != self.pad_id)
        counts = torch.zeros(batch.token_ids.shape[0], self.vocab_size, device=batch.token_ids.device)
        counts.scatter_add_(1, batch.token_ids, real.to(counts.dtype))
        return counts, real

    def features(self, batch: Batch) -> Tensor:
        """l2-normalised sublinear TF-IDF vectors [B, V]."""
        counts, _ = self.counts(batch)
        return self._features(counts)

    def _features(self, counts: Tensor) -> Tensor:
        tf = torch.where(counts > 0, 1.0 + torch.log(counts.clamp(min=1.0)), torch.zeros_like(counts))
        x = tf * self.idf
        return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def _want_attention(self) -> bool:
        mode = self.cfg.output_attention
        return self.attention_enabled and (mode == "always" or (mode == "eval" and not self.training))

    def forward(self, batch: Batch) -> ModelOutput:
        counts, real = self.counts(batch)
        x = self._features(counts)
        logits = self.linear(x)
        attention = self.evidence(batch.token_ids, real, x, counts) if self._want_attention() else None
        return ModelOutput(logits=logits, attention=attention)

    def has_evidence_rows(self) -> bool:
        return self.cfg.output_attention != "never"

    def evidence_rows(self, batch: Batch, row: int, codes: list[int]) -> Tensor | None:
        """`evidence` of one note for the given codes only: [len(codes), T]."""
        r = slice(row, row + 1)
        counts, real = self.counts(Batch(batch.token_ids[r], batch.mask[r], batch.lengths[r], [""]))
        return self.evidence(batch.token_ids[r], real, self._features(counts), counts, codes)[0]

    def evidence(
        self, token_ids: Tensor, real: Tensor, x: Tensor, counts: Tensor, codes: list[int] | None = None
    ) -> Tensor:
        """Each token's normalised positive share of every code's score (or of `codes` only), [B, C, T]."""
        share = (x.gather(1, token_ids) / counts.gather(1, token_ids).clamp(min=1.0)) * real  # [B, T]
        w = self.linear.weight if codes is None else self.linear.weight[codes]  # [C, V]
        contrib = w[:, token_ids].permute(1, 0, 2).clamp(min=0.0) * share.unsqueeze(1)  # [B, C, T]
        total = contrib.sum(dim=2, keepdim=True)
        return contrib / torch.where(total > 0, total, torch.ones_like(total))

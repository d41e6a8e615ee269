"""The linear model solved to its optimum: per-code L2-regularised logistic regression on TF-IDF features
(words, optionally word bigrams), fitted by a convex solver instead of a few epochs of Adam.

Features are the `tfidf` model's (scikit-learn `TfidfVectorizer(sublinear_tf=True, smooth_idf=True,
norm="l2")` fitted on the training split), extended with word bigrams when `ngrams: 2`: consecutive token ids
(a, b) of the note, kept when they occur in at least `bigram_min_df` training notes. Column layout: the V
vocabulary ids, then the K kept bigrams in sorted-key order; one smooth idf and one l2 norm over all columns,
as scikit-learn's `ngram_range=(1, 2)` does.

For each code c the solver (`training/solver.py`) minimises, exactly as liblinear's primal with an
unpenalised intercept,

    Σ_notes log(1 + exp(-y·(w_c·x + b_c)))  +  ||w_c||² / (2·C)

with full-batch L-BFGS, for every C of `c_grid`, and keeps the C with the best dev `train.monitor`. The
objective is convex, so the result depends on C only (not on a learning rate, batch order or epochs). The
model is a torch module like the others: it saves, loads, predicts and shows evidence through the same
machinery (evidence: each token's share of the positive score, see `tfidf`; bigram columns count for both
of their words).

No published set-up: a project baseline (issue 17 measured scikit-learn's liblinear on the same unigram
features at C = 1e5: CodiEsp-D test MAP 0.287).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, ModelConfig, ModelContext, register_model
from icdcoder.models.tfidf import TfidfConfig, TfidfLogReg
from icdcoder.text.vocab import UNK_ID


class LinearConfig(TfidfConfig):
    ngrams: Literal[1, 2] = 1  # 2: word unigrams and bigrams
    bigram_min_df: int = Field(2, ge=1)  # a bigram is a feature when it occurs in this many training notes
    # Inverse L2 strengths tried (scikit-learn's C); the best on dev is kept. Solved from the smallest C
    # upwards, each warm-started from the previous optimum.
    # On CodiEsp-D dev MAP still rose up to C = 1e6 (almost no regularisation), hence the wide grid.
    c_grid: list[float] = Field(default_factory=lambda: [10.0**k for k in range(8)])
    max_iter: int = Field(300, ge=1)  # L-BFGS iterations per C and code block
    tol: float = Field(1e-4, gt=0)  # stop when the largest gradient entry of a block is below tol
    # Codes solved together (the problem is separable per code): bounds the solver's memory at
    # about 25 · (V + K) · block · 4 bytes.
    code_block: int = Field(512, ge=1)
    # Up to this many training notes the solver works in the notes' row space (exact, N-dimensional per
    # code; needs an N × N eigendecomposition); above it, in the sparse primal.
    kernel_max_notes: int = Field(5000, ge=0)


def bigram_keys(token_ids: Tensor, real: Tensor, vocab_size: int) -> tuple[Tensor, Tensor]:
    """(a·V + b for each consecutive pair [B, T-1], True where both tokens are real [B, T-1])."""
    keys = token_ids[:, :-1] * vocab_size + token_ids[:, 1:]
    return keys, real[:, :-1] & real[:, 1:]


def count_bigrams(
    train_token_ids: Sequence[np.ndarray], vocab_size: int, min_df: int, skip: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Sorted keys of the bigrams seen in at least `min_df` training notes, and their document frequencies.
    Pairs with a token of `skip` (padding, unknown) are not features."""
    df: dict[int, int] = {}
    skip_arr = np.asarray(list(skip), dtype=np.int64)
    for ids in train_token_ids:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < 2:
            continue
        ok = ~(np.isin(ids[:-1], skip_arr) | np.isin(ids[1:], skip_arr))
        for k in np.unique((ids[:-1] * vocab_size + ids[1:])[ok]).tolist():
            df[k] = df.get(k, 0) + 1
    kept = sorted(k for k, n in df.items() if n >= min_df)
    return kept, [df[k] for k in kept]


@register_model("linear")
class LinearTfidf(TfidfLogReg):
    """`tfidf` with optional bigram columns, fitted by the convex solver (`solver = "lbfgs"`)."""

    Config: ClassVar[type[ModelConfig]] = LinearConfig
    # The pipeline fits this model with training/solver.py instead of the SGD trainer.
    solver: ClassVar[str | None] = "lbfgs"
    bigrams: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        assert isinstance(config, LinearConfig)
        keys: list[int] = list(ctx.extras.get("bigram_keys", [])) if config.ngrams == 2 else []
        df: list[int] = list(ctx.extras.get("bigram_doc_freq", [])) if config.ngrams == 2 else []
        if len(keys) != len(df):
            raise ConfigError(
                f"linear got {len(keys)} bigrams but {len(df)} bigram document frequencies.",
                fix="rebuild the model context from the training split.",
            )
        self.n_words = ctx.vocab_size
        # The parent builds idf and the output layer over all V + K feature columns.
        wide = ModelContext(
            label_keys=ctx.label_keys,
            vocab_size=ctx.vocab_size + len(keys),
            pad_id=ctx.pad_id,
            token_doc_freq=list(ctx.token_doc_freq) + df if ctx.token_doc_freq else [],
            n_train_docs=ctx.n_train_docs,
        )
        super().__init__(config, wide)  # one smooth idf over word and bigram columns, as scikit-learn
        self.linear_cfg = config
        self.register_buffer("bigrams", torch.tensor(keys, dtype=torch.long))

    @classmethod
    def fit_context(
        cls, config: ModelConfig, ctx: ModelContext, train_token_ids: Sequence[np.ndarray]
    ) -> None:
        """The bigram vocabulary and its document frequencies, from the training notes (saved in the model
        directory's context, never recomputed at load)."""
        assert isinstance(config, LinearConfig)
        if config.ngrams == 2:
            keys, df = count_bigrams(
                train_token_ids, ctx.vocab_size, config.bigram_min_df, skip=(ctx.pad_id, UNK_ID)
            )
            ctx.extras["bigram_keys"] = keys
            ctx.extras["bigram_doc_freq"] = df

    def counts(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(term counts [B, V + K], real-token mask [B, T]) with bigram columns after the words."""
        real = batch.mask & (batch.token_ids != self.pad_id)
        counts = torch.zeros(batch.token_ids.shape[0], self.vocab_size, device=batch.token_ids.device)
        counts[:, : self.n_words].scatter_add_(1, batch.token_ids, real.to(counts.dtype))
        if self.bigrams.numel() and batch.token_ids.shape[1] > 1:
            keys, both = bigram_keys(batch.token_ids, real, self.n_words)
            pos = torch.searchsorted(self.bigrams, keys).clamp(max=self.bigrams.numel() - 1)
            hit = both & (self.bigrams[pos] == keys)
            counts.scatter_add_(1, self.n_words + pos, hit.to(counts.dtype))
        return counts, real

    def evidence(
        self, token_ids: Tensor, real: Tensor, x: Tensor, counts: Tensor, codes: list[int] | None = None
    ) -> Tensor:
        """Word columns as in `tfidf`; each matched bigram's positive contribution is split between its two
        tokens (so a phrase lights up both of its words)."""
        if not self.bigrams.numel() or token_ids.shape[1] < 2:
            return super().evidence(token_ids, real, x, counts, codes)
        w = self.linear.weight if codes is None else self.linear.weight[codes]  # [C, V + K]
        word_share = (x.gather(1, token_ids) / counts.gather(1, token_ids).clamp(min=1.0)) * real
        contrib = w[:, token_ids].permute(1, 0, 2).clamp(min=0.0) * word_share.unsqueeze(1)  # [B, C, T]
        keys, both = bigram_keys(token_ids, real, self.n_words)
        pos = torch.searchsorted(self.bigrams, keys).clamp(max=self.bigrams.numel() - 1)
        hit = both & (self.bigrams[pos] == keys)
        col = self.n_words + pos  # [B, T-1]
        big_share = (x.gather(1, col) / counts.gather(1, col).clamp(min=1.0)) * hit  # [B, T-1]
        half = 0.5 * w[:, col].permute(1, 0, 2).clamp(min=0.0) * big_share.unsqueeze(1)  # [B, C, T-1]
        contrib[:, :, :-1] += half
        contrib[:, :, 1:] += half
        total = contrib.sum(dim=2, keepdim=True)
        return contrib / torch.where(total > 0, total, torch.ones_like(total))

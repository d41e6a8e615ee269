"""MSMN (Yuan, Tan & Huang, ACL 2022, "Code Synonyms Do Matter: Multiple Synonyms Matching Network for
Automatic ICD Coding"), following the authors' code (GanjinZero/ICD-MSMN; docs SEED_NOTES §4.3).

Encoder: word embeddings (dropout) → BiLSTM (rnn_dim/2 per direction) → Linear to h = attention_dim when
rnn_dim ≠ h. The SAME encoder reads each code's M synonyms (`ctx.label_synonym_token_ids`, from
`ontology.label_synonyms`), max-pooled over tokens: q_{c,m} ∈ R^h. Multi-synonym attention (M heads):
Z = tanh(W H) split into M heads of h/M; head m of code c is queried by u_{c,m} = U_r q_{c,m}; the softmax
over tokens weights the FULL h-dim states H; max-pool over heads, then rep dropout → v_c. Score (Table 5):
"biaffine" v_cᵀ(W q_c + b_w) + w_bᵀ q_c + b (authors' `est_cls=1`), "dot" v_cᵀ q_c + w_bᵀ q_c + b, or
"labelwise" ⟨w_c, v_c⟩ + b_c (LAAT's per-code output); q_c = max over the synonyms. Absent synonym slots
(synonym_policy "drop") are masked out of both maxima. Small-data options (issue 17, off by default):
`per_code_bias` adds a free b_c to the biaffine/dot score, `bias_init: prior` starts it (or labelwise b_c)
at the training prevalence's log-odds; `synonym_pooling: padded` reproduces the authors' pooling over padded
synonym positions (see the option's comment; ours excludes padding, which we take to be the intent).

Loss: BCE plus R-Drop (α = 5): two dropout passes of the text side (one batch of 2B; the code features are
computed once per step and shared, as in the authors' code), BCE averaged, plus α × symmetric KL. Default
`rdrop_kl: bernoulli` = ½[KL(p‖q)+KL(q‖p)] of each code's own Bernoulli output, averaged like the BCE: the
model predicts independent sigmoids, so this is the divergence R-Drop intends. `rdrop_kl: softmax_labels`
is the seed's quirk (`compute_kl_loss`: KL between softmaxes over the label dimension, each direction averaged
over the B × C entries, as the authors' code does); it changes the numbers, hence an option, not the default.

Memory (paper §3.6): the naive form materialises B×C×M×T scores and B×C×M×h contexts. The default (lean)
form computes the same numbers one code chunk and one head at a time in `ChunkedMultiSynonymAttention`, an
autograd function that keeps only its inputs and the winning head per output entry and recomputes each
chunk's weights in backward, so nothing larger than B×C×h (or B×chunk×T) lives at once. Synonyms are
encoded in equal-length chunks (checkpointed in training) and once in eval (cached; the cache is dropped
by train() and whenever a parameter changes). `reference=True` (tests and benchmark only) runs the seed's
naive einsums and one packed synonym batch; the tests hold both forms to the same outputs and gradients.

| setting (Table 2, authors' code) | MIMIC-III full       | MIMIC-III top-50 |
|----------------------------------|----------------------|------------------|
| embeddings                       | word2vec 100-d, dropout 0.2 | same      |
| BiLSTM rnn_dim / layers          | 256 / 2 (LSTM dropout 0.1) | 512 / 1    |
| h (attention_dim)                | 512                  | 512              |
| synonyms M = heads               | 4                    | 8                |
| rep dropout / R-Drop α           | 0.2 / 5.0            | 0.2 / 5.0        |
| AdamW lr, wd, eps, schedule      | 5e-4, 0.01, 1e-8, linear, no warm-up | same |
| batch, epochs, clip              | 16, 20, 1.0          | 16, 20, 1.0      |
| selection                        | best dev P@8, no early stop | same      |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from icdcoder.errors import ConfigError
from icdcoder.models.attention import masked_softmax
from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import BiLSTMEncoder, LabelwiseLinear, WordEmbedding
from icdcoder.models.init import init_prior_bias

_UNK_ID = 1  # icdcoder.text.vocab: 0 = <pad>, 1 = <unk>


class MSMNConfig(ModelConfig):
    # Defaults: the seed's MIMIC-III full setting.
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    embed_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    rnn_dim: int = Field(256, ge=2)  # BiLSTM output size (rnn_dim // 2 per direction)
    num_layers: int = Field(2, ge=1)
    lstm_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # between LSTM layers
    attention_dim: int = Field(512, ge=1)  # h; must be divisible by synonyms
    synonyms: int = Field(4, ge=1)  # M = number of heads (Table 5 ablation: 1, 2, 4, 8, 16)
    rep_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    scoring: Literal["biaffine", "dot", "labelwise"] = "biaffine"
    rdrop_alpha: float = Field(5.0, ge=0.0)
    rdrop_kl: Literal["bernoulli", "softmax_labels"] = "bernoulli"
    synonym_source: str = "ontology"  # or a JSON/TSV synonym file (see ontology.label_synonyms)
    synonym_policy: Literal["repeat", "drop", "fail"] = "repeat"
    synonym_selection: Literal["random", "ranked"] = "random"
    synonym_seed: int = 0
    label_chunk_size: int = Field(512, ge=1)  # codes per attention chunk (memory vs. speed)
    # Small data (issue 17): a free per-code bias b_c added to every scoring form's logit. The biaffine
    # score's only bias terms are functions of the code's synonyms (w_bᵀ q_c + b), so a code cannot learn its
    # own base rate from a handful of notes; off (the seed) by default.
    per_code_bias: bool = False
    # "prior": the per-code bias (or labelwise scoring's b_c) starts at the training prevalence's log-odds.
    bias_init: Literal["zero", "prior"] = "zero"
    # How a synonym's token states are max-pooled: "real" (default) over its own tokens only; "padded" as the
    # authors' code does, over the positions of the synonym padded to the longest synonym too, where the
    # encoder's output is proj(0) (the `reduce_linear` bias when rnn_dim != attention_dim, else 0), so a
    # shorter synonym's feature is max(its tokens, that constant). Equal-length synonyms: the same numbers.
    synonym_pooling: Literal["real", "padded"] = "real"
    synonym_chunk_size: int = Field(4096, ge=1)  # synonym strings per encoder chunk in training


def rdrop_kl(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Symmetric KL between two passes' logits [B, C] (see the module docstring)."""
    if kind == "bernoulli":  # ½[KL(p‖q) + KL(q‖p)] = ½ (p − q)(logit p − logit q), per entry
        return (0.5 * (torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).mean()
    # The authors' compute_kl_loss: element-wise kl_div(reduction="none") of the label softmaxes, each
    # direction's mean over the B × C entries, then their average.
    la, lb = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    return 0.5 * (
        F.kl_div(la, lb, reduction="none", log_target=True).mean()
        + F.kl_div(lb, la, reduction="none", log_target=True).mean()
    )


def reference_attention(
    z: Tensor, h: Tensor, mask: Tensor, u: Tensor, present: Tensor
) -> tuple[Tensor, Tensor]:
    """The seed's naive form (tests and benchmark only): scores [B, C, M, T] and contexts [B, C, M, h].

    z [M, B, T, d] (tanh keys per head), h [B, T, D], mask [B, T], u [M, C, d], present [C, M] → v [B, C, D]
    and the max-over-heads attention weights [B, C, T]."""
    scores = torch.einsum("mbtk,mck->bcmt", z, u)
    alpha = masked_softmax(scores, mask[:, None, None, :], dim=-1).to(h.dtype)
    absent = ~present[None, :, :, None]
    context = torch.einsum("bcmt,btd->bcmd", alpha, h).masked_fill(absent, float("-inf"))
    return context.max(dim=2).values, alpha.masked_fill(absent, 0.0).amax(dim=2)


def _padding_bias(mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Additive score bias [B, 1, T] (0 at tokens, the most negative float32 at padding) and, only when some
    note has no token at all, the [B, 1, 1] factor that zeroes its weights: `masked_softmax`'s semantics."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(torch.float32).min
    )
    has_token = mask.any(dim=1)
    return bias[:, None, :], None if bool(has_token.all()) else has_token[:, None, None].to(dtype)


def _head_weights(z: Tensor, u: Tensor, bias: Tensor, has_token: Tensor | None) -> Tensor:
    """One head's attention weights [B, K, T] for keys z [B, T, d] and queries u [K, d]: the numbers of the
    shared `masked_softmax` (the reference form uses it; the equivalence test holds them together), with the
    padding mask fused into the score GEMM instead of a separate copy-and-fill pass."""
    b, k = z.shape[0], u.shape[0]
    scores = torch.baddbmm(bias.expand(b, k, -1), u.expand(b, -1, -1), z.transpose(1, 2))
    weights = torch.softmax(scores.float(), dim=-1).to(z.dtype)
    return weights if has_token is None else weights * has_token


def _attend_chunk(
    z: Tensor,
    h: Tensor,
    bias: Tensor,
    has_token: Tensor | None,
    u: Tensor,
    present: Tensor,
    with_weights: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One code chunk (u [M, K, d], present [K, M]), one head at a time: v [B, K, D] (the max over present
    heads), the winning head per entry [B, K, D] (uint8), and (when asked) the max-over-heads weights
    [B, K, T]. No [B, K, M, ·] tensor is ever built."""
    v = h.new_full((h.shape[0], u.shape[1], h.shape[2]), float("-inf"))
    winner = torch.zeros(v.shape, dtype=torch.uint8, device=v.device)
    best = None
    for m in range(u.shape[0]):
        w = _head_weights(z[m], u[m], bias, has_token)
        context = torch.bmm(w, h)
        absent = ~present[:, m]
        if bool(absent.any()):
            context.masked_fill_(absent[None, :, None], float("-inf"))
            w = w * present[None, :, m, None]
        winner.masked_fill_(context > v, m)  # strictly greater: the first head wins ties, as in max(dim)
        torch.maximum(v, context, out=v)
        if with_weights:
            best = w if best is None else torch.maximum(best, w)
    return v, winner, best


class ChunkedMultiSynonymAttention(torch.autograd.Function):
    """v = max over heads of the multi-synonym attention contexts, code chunk by code chunk.

    Forward keeps only its inputs and the winning head of each output entry (uint8 [B, C, D]); backward
    recomputes each chunk's attention weights (one head at a time) and applies the exact gradient of
    max → weighted sum → masked softmax → dot-product scores. Peak extra memory is O(B × chunk × T)."""

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, h: Tensor, mask: Tensor, u: Tensor, present: Tensor, chunk: int
    ) -> Tensor:
        bias, has_token = _padding_bias(mask, z.dtype)
        outs = [
            _attend_chunk(z, h, bias, has_token, u[:, i : i + chunk], present[i : i + chunk])
            for i in range(0, u.shape[1], chunk)
        ]
        winner = torch.cat([w for _, w, _ in outs], dim=1)
        ctx.save_for_backward(z, h, mask, u, winner)
        ctx.chunk = chunk
        return torch.cat([v for v, _, _ in outs], dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_v: Tensor) -> tuple[Tensor | None, ...]:
        z, h, mask, u, winner = ctx.saved_tensors
        k, n_heads = ctx.chunk, u.shape[0]
        bias, has_token = _padding_bias(mask, z.dtype)
        grad_z, grad_h, grad_u = torch.zeros_like(z), torch.zeros_like(h), torch.zeros_like(u)
        h_t = h.transpose(1, 2)
        for i in range(0, u.shape[1], k):
            g_v, won = grad_v[:, i : i + k], winner[:, i : i + k].long()
            # the gradient of each head's context: grad_v where that head won the max, else 0
            g_heads = g_v.new_zeros(n_heads, *g_v.shape).scatter_(0, won[None], g_v[None])
            for m in range(n_heads):
                um = u[m, i : i + k]  # [K, d]
                alpha = _head_weights(z[m], um, bias, has_token)  # [B, K, T]
                grad_h.baddbmm_(alpha.transpose(1, 2), g_heads[m])
                g_alpha = torch.bmm(g_heads[m], h_t)
                # softmax backward, alpha * (g - Σ g·alpha); masked entries have alpha = 0
                g = torch.ops.aten._softmax_backward_data(g_alpha, alpha, -1, alpha.dtype)
                grad_z[m].baddbmm_(g.transpose(1, 2), um.expand(g.shape[0], -1, -1))
                grad_u[m, i : i + k] += torch.bmm(g, z[m]).sum(0)
        return grad_z, grad_h, None, grad_u, None, None


def synonym_token_rows(
    texts: Sequence[Sequence[str | None]], ctx: ModelContext, encode_text: Callable[[str], list[int]]
) -> list[list[list[int]]]:
    """Token ids of each code's synonym slots ([] for an absent slot). A present synonym that tokenises to
    nothing (e.g. only numbers) falls back to the code title's tokens, then to <unk>."""
    rows: list[list[list[int]]] = []
    for c, row in enumerate(texts):
        title = ctx.label_token_ids[c] if c < len(ctx.label_token_ids) else []
        rows.append([[] if t is None else (encode_text(t) or title or [_UNK_ID]) for t in row])
    return rows


def synonym_chunks(lengths: Sequence[int], size: int, by_length: bool) -> list[tuple[int, int, bool]]:
    """(start, end, packed) chunks of ≤ `size` synonyms sorted by descending length. `by_length` (CPU): a
    length with at least min(256, size) synonyms forms unpacked equal-length chunks; rarer lengths are pooled
    into packed chunks (each LSTM call has a fixed cost). Otherwise (GPU; cuDNN packs natively): packed
    slices."""
    n = len(lengths)
    if not by_length:
        return [(i, min(n, i + size), True) for i in range(0, n, size)]
    out: list[tuple[int, int, bool]] = []
    pool = -1  # start of the pending run of rare lengths

    def flush(end: int) -> None:
        out.extend((s, min(end, s + size), True) for s in range(pool, end, size))

    i = 0
    while i < n:
        j = i
        while j < n and lengths[j] == lengths[i]:
            j += 1
        if j - i >= min(256, size):
            if pool >= 0:
                flush(i)
                pool = -1
            out.extend((s, min(j, s + size), False) for s in range(i, j, size))
        elif pool < 0:
            pool = i
        i = j
    if pool >= 0:
        flush(n)
    return out


@register_model("msmn")
class MSMN(IcdModel):
    Config: ClassVar[type[ModelConfig]] = MSMNConfig
    syn_ids: Tensor
    syn_lengths: Tensor
    syn_slot: Tensor
    present: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, MSMNConfig)
        self.cfg = config
        m, dim = config.synonyms, config.attention_dim
        if dim % m:
            raise ConfigError(
                f"model.attention_dim {dim} is not divisible by model.synonyms {m} (one head per synonym).",
                fix="choose attention_dim as a multiple of synonyms.",
            )
        self.reference = False  # the naive einsum form; tests and benchmarks only
        self._cache: tuple[Any, tuple[Tensor, ...]] | None = None
        self.embed = WordEmbedding.from_context(
            ctx, config.embed_dim, dropout=config.embed_dropout, freeze=config.freeze_embeddings
        )
        self.lstm = BiLSTMEncoder(
            config.embed_dim, config.rnn_dim // 2, config.num_layers, config.lstm_dropout
        )
        self.proj: nn.Module = (
            nn.Linear(self.lstm.output_dim, dim) if self.lstm.output_dim != dim else nn.Identity()
        )
        self.w_h = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.w_h.weight)
        self.u_reduce = nn.Linear(dim, dim // m)
        self.rep_dropout = nn.Dropout(config.rep_dropout)
        if config.scoring == "labelwise":
            self.output = LabelwiseLinear(dim, ctx.n_labels)
        else:
            self.biaffine_b = nn.Linear(dim, 1)
            if config.scoring == "biaffine":
                self.biaffine_w = nn.Linear(dim, dim)
        self._register_synonyms(ctx, m)
        if config.per_code_bias:
            self.code_bias = nn.Parameter(torch.zeros(ctx.n_labels))
        if config.bias_init == "prior" and ctx.init_from_pretrained:
            target = self.output.bias if config.scoring == "labelwise" else getattr(self, "code_bias", None)
            if target is None:
                raise ConfigError(
                    "model.bias_init: prior needs a per-code bias.",
                    fix="set model.per_code_bias: true (or scoring: labelwise).",
                )
            init_prior_bias(target, ctx)

    def _register_synonyms(self, ctx: ModelContext, m: int) -> None:
        rows = ctx.label_synonym_token_ids
        if len(rows) != ctx.n_labels or any(len(r) != m for r in rows):
            raise ConfigError(
                f"MSMN needs {m} tokenised synonyms per code in the model context, got "
                f"{len(rows)} codes with {sorted({len(r) for r in rows})} synonyms.",
                fix="train through `icdcoder train` (extend_context adds them); a model directory must "
                "keep its context.json.",
            )
        flat = [(len(ids), c * m + j, ids) for c, r in enumerate(rows) for j, ids in enumerate(r) if ids]
        flat.sort(key=lambda x: (-x[0], x[1]))  # longest first: chunks of similar length
        present = torch.zeros(ctx.n_labels * m, dtype=torch.bool)
        present[[slot for _, slot, _ in flat]] = True
        if not bool(present.view(-1, m).any(1).all()):
            raise ConfigError("every code needs at least one synonym.", fix="rebuild the synonyms.")
        ids = torch.zeros(len(flat), max(n for n, _, _ in flat), dtype=torch.long)
        for i, (n, _, toks) in enumerate(flat):
            ids[i, :n] = torch.tensor(toks, dtype=torch.long)
        # Derived from the saved context at load time, so not stored with the weights.
        self.register_buffer("syn_ids", ids, persistent=False)
        self.register_buffer("syn_lengths", torch.tensor([n for n, _, _ in flat]), persistent=False)
        self.register_buffer("syn_slot", torch.tensor([s for _, s, _ in flat]), persistent=False)
        self.register_buffer("present", present.view(-1, m), persistent=False)
        self._syn_lengths = [n for n, _, _ in flat]

    @classmethod
    def extend_context(
        cls,
        config: ModelConfig,
        ctx: ModelContext,
        label_titles: list[str],
        encode_text: Callable[[str], list[int]],
    ) -> None:
        from icdcoder.ontology.label_synonyms import build_label_synonyms

        assert isinstance(config, MSMNConfig)
        syn = build_label_synonyms(
            ctx.label_keys,
            config.synonyms,
            titles=label_titles,
            user_file=None if config.synonym_source == "ontology" else config.synonym_source,
            policy=config.synonym_policy,
            selection=config.synonym_selection,
            seed=config.synonym_seed,
        )
        ctx.label_synonym_token_ids = synonym_token_rows(syn.texts, ctx, encode_text)
        ctx.extras["label_synonyms"] = syn.to_json()

    # -- encoders -----------------------------------------------------------------------------------------
    def encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        h: Tensor = self.proj(self.lstm(self.embed(ids, mask), mask))
        return h

    def _encode_synonym_chunk(self, ids: Tensor, lengths: Tensor, packed: bool) -> Tensor:
        """Synonyms [n, L] → max-pooled features [n, h]. One length and `packed=False`: no padding, so the
        LSTM runs unpacked (the same numbers; on CPU several times faster than a packed batch)."""
        if not packed:
            out, _ = self.lstm.lstm(self.embed(ids))
            return self.proj(out).amax(dim=1)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return self.encode(ids, mask).masked_fill(~mask[..., None], float("-inf")).amax(dim=1)

    def synonym_features(self) -> Tensor:
        """q [C, M, h] (zeros at absent slots): every synonym through the text encoder, max-pooled.

        Lean form: chunks of the length-sorted synonyms (`synonym_chunks`), each checkpointed in training so
        only its features are kept. Reference: one padded, packed batch with every activation kept."""
        if self.reference:
            feats = self._encode_synonym_chunk(self.syn_ids, self.syn_lengths, packed=True)
        else:
            parts = []
            chunks = synonym_chunks(self._syn_lengths, self.cfg.synonym_chunk_size, not self.syn_ids.is_cuda)
            for start, end, packed in chunks:
                ids, lengths = (
                    self.syn_ids[start:end, : self._syn_lengths[start]],
                    self.syn_lengths[start:end],
                )
                if torch.is_grad_enabled():
                    parts.append(
                        checkpoint(self._encode_synonym_chunk, ids, lengths, packed, use_reentrant=False)
                    )
                else:
                    parts.append(self._encode_synonym_chunk(ids, lengths, packed))
            feats = torch.cat(parts)
        if self.cfg.synonym_pooling == "padded":
            # The authors' pooling: a synonym shorter than the longest one also max-pools its padded
            # positions, whose encoder output is proj(0).
            pad_value = self.proj(feats.new_zeros(1, self.lstm.output_dim))
            short = (self.syn_lengths < self.syn_lengths.max())[:, None]
            feats = torch.where(short, torch.maximum(feats, pad_value), feats)
        q = feats.new_zeros(self.present.numel(), feats.shape[1]).index_copy(0, self.syn_slot, feats)
        return q.view(*self.present.shape, -1)

    def code_inputs(self) -> tuple[Tensor, ...]:
        """(u [M, C, h/M], then w [C, h] and b [C] unless scoring is labelwise); cached in eval mode
        without gradients."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if not self.training and not torch.is_grad_enabled() and self._cache and self._cache[0] == key:
            return self._cache[1]
        q = self.synonym_features()
        u = self.u_reduce(q).transpose(0, 1).contiguous()  # [M, C, d]: one contiguous block per head
        q_code = q.masked_fill(~self.present[..., None], float("-inf")).amax(dim=1)
        if self.cfg.scoring == "labelwise":
            out: tuple[Tensor, ...] = (u,)
        else:
            w = self.biaffine_w(q_code) if self.cfg.scoring == "biaffine" else q_code
            out = (u, w, self.biaffine_b(q_code).squeeze(-1))
        if not self.training and not torch.is_grad_enabled():
            self._cache = (key, out)
        return out

    def train(self, mode: bool = True) -> MSMN:
        self._cache = None
        return super().train(mode)

    # -- attention and scores -----------------------------------------------------------------------------
    def attend(
        self, z: Tensor, h: Tensor, mask: Tensor, u: Tensor, want_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """z [M, B, T, h/M], h [B, T, h], u [M, C, h/M] → v [B, C, h] and (when wanted) the max-over-heads
        attention weights [B, C, T]."""
        if self.reference:
            v, ref_weights = reference_attention(z, h, mask, u, self.present)
            return v, ref_weights if want_weights else None
        k = self.cfg.label_chunk_size
        if torch.is_grad_enabled():
            v = ChunkedMultiSynonymAttention.apply(z, h, mask, u, self.present, k)
            if not want_weights:
                return v, None
            with torch.no_grad():
                return v, self.attend(z, h, mask, u, want_weights=True)[1]
        bias, has_token = _padding_bias(mask, z.dtype)
        outs = [
            _attend_chunk(z, h, bias, has_token, u[:, i : i + k], self.present[i : i + k], want_weights)
            for i in range(0, u.shape[1], k)
        ]
        weights = torch.cat([w for _, _, w in outs if w is not None], dim=1) if want_weights else None
        return torch.cat([v for v, _, _ in outs], dim=1), weights

    def forward(self, batch: Batch) -> ModelOutput:
        code = self.code_inputs()
        ids, mask = batch.token_ids, batch.mask
        two = self.training and self.cfg.rdrop_alpha > 0
        if two:  # R-Drop: both dropout passes in one batch; the code features are shared
            ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
        h = self.encode(ids, mask)
        # keys per head, contiguous [M, B, T, d]
        z = torch.tanh(self.w_h(h)).unflatten(-1, (self.cfg.synonyms, -1)).permute(2, 0, 1, 3).contiguous()
        want = not self.training and self.attention_enabled
        v, weights = self.attend(z, h, mask, code[0], want_weights=want)
        v = self.rep_dropout(v)
        if self.cfg.scoring == "labelwise":
            logits = self.output(v)
        else:
            logits = torch.einsum("bcd,cd->bc", v, code[1]) + code[2]
        if self.cfg.per_code_bias:
            logits = logits + self.code_bias
        if two:
            first, second = logits.chunk(2)
            return ModelOutput(logits=first, extras={"logits_rdrop": second})
        return ModelOutput(logits=logits, attention=weights)

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        assert batch.targets is not None, "losses() needs targets"
        second = output.extras.get("logits_rdrop")
        if second is None:
            return super().losses(batch, output)
        bce = F.binary_cross_entropy_with_logits
        return {
            "bce": 0.5 * (bce(output.logits, batch.targets) + bce(second, batch.targets)),
            "rdrop": self.cfg.rdrop_alpha * rdrop_kl(output.logits, second, self.cfg.rdrop_kl),
        }

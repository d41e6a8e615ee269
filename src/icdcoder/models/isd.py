"""ISD: Interactive Shared Representation Network with Self-Distillation (Zhou et al., ACL 2021).

Student path (Sections 3.1-3.3): word embeddings (dropout) → multi-scale CNN (kernels 5, 7, 9, 11, each
hidden_dim/4 channels, tanh, concatenated: H [T, d]) → shared attention: Nq learned queries attend over H
(Eq. 3-5, single-head scaled dot-product attention with projections as `nn.MultiheadAttention` in the
authors' code), giving H_S [Nq, d] → interactive decoder: a bidirectional post-norm Transformer decoder
(self-attention among the shared vectors, cross-attention to H) refining H_S to H_S′ (Eq. 11) → each code
scores by its best shared vector, s_c = max_k (H_S′_k · e_c) + b_c (Eq. 6, 11), ŷ_c = σ(s_c) (Eq. 7).

Code embeddings e_c [d] start as the mean word vector of the code's description (`ctx.label_token_ids`,
taken from this model's word-embedding matrix, i.e. the word2vec vectors when given) mapped to d dimensions
by a fixed random matrix with orthonormal rows, which keeps every dot product between description vectors
(the authors used a separate 256-d skip-gram matrix instead, which we do not have). Biases b_c ~ N(0, 1).

Code completion (Section 3.3, Eq. 9-10; `isd_parts.sample_completion`): the same decoder reads sequences of
code embeddings (memory = the note's H). Missing code: one shuffled gold code is replaced by the mask token
and must be predicted; wrong code: a random non-gold code is added and its position must predict the
mask/none class. Both use a softmax tied to [E; e_mask] with biases [b; b_mask] (C + 1 classes).

Self-distillation (Section 3.4): the teacher input is the gold codes' descriptions, each encoded separately
by the same embedding + CNN, concatenated in an order shuffled by torch's RNG (a no-op mathematically: no
later step sees token order), then the same shared attention and decoder; its logits get their own BCE
(Eq. 12) and its shared vectors are matched to the student's by the Hungarian algorithm on cosine similarity
(Eq. 13-14; `isd_parts.hungarian_distillation`), per example over the whole batch.

Loss (Eq. 15; returned weighted, one named term each): bce = λ_pred·BCE(student), bce_teacher =
λ_tgt·BCE(teacher), distill = λ_dist·L_dist, completion_missing = λ_mis·L_mis, completion_false = λ_rem·L_rem.
BCE is the mean over (document, code) entries. Teacher and completion paths run only in training mode with
targets, so inference costs one student pass.

Evidence (`ModelOutput.attention` [B, C, T]): for each code, the shared-attention weights (Eq. 4, before
dropout, averaged over heads) of the query whose refined vector gave the code its max score — the first-stage
attention the paper visualises (Table 5). The decoder's cross-attention also reads the note; it is not
included. Returned in eval mode by default (`output_attention`).

Published set-up (paper Section 4.2 and the authors' `code/config.py`; SEED_NOTES 4.1):

| setting                   | MIMIC-III (full and 50)                                 |
|---------------------------|---------------------------------------------------------|
| word embeddings           | 100-d CBOW word2vec on MIMIC, dropout 0.1               |
| CNN kernels               | 5, 7, 9, 11; hidden_dim/4 = 64 channels each, tanh      |
| code embedding d          | 256 (128 on MIMIC-II)                                   |
| shared queries Nq         | 64                                                      |
| decoder                   | 2 layers, 1 head, FF 1024, ReLU, dropout 0.1            |
| λ_pred, λ_tgt, λ_dist     | 0.5, 0.5, 1e-3                                          |
| λ_mis, λ_rem              | 5e-4, 5e-4                                              |
| completion sequence       | 40 codes                                                |
| optimiser                 | AdamW lr 3e-4, weight decay 0, batch 32, warm-up 5 epochs, clip 10 |
| epochs                    | 200 (no early stopping in the code)                     |
| max tokens                | 4000                                                    |

Ablations (Table 3 / Table 4 rows → `--set model.…`):

| row                        | settings                                            |
|----------------------------|-----------------------------------------------------|
| w/o distillation loss      | self_distillation=teacher_only                      |
| w/o self-distillation      | self_distillation=off                               |
| w/o code completion task   | completion_tasks=false                              |
| w/o co-occurrence decoder  | decoder_layers=0 completion_tasks=false             |
| shared size 1 / 32 / 128   | n_queries=1 / 32 / 128                              |
| one query per ICD parent   | n_queries=parents (one per 3-character group of the label space, starting  |
|                            | as the mean embedding of the group's codes)                                 |

Authors' code bugs NOT reproduced (SEED_NOTES 4.1): the teacher reads the code descriptions (not the clinical
text); distillation covers every example of the batch (not the first only); the completion tasks mask the
CNN memory with the word mask (not a BERT-tokenisation mask); wrong-code removal has an explicit none class
(not target index 0). The authors' truncation of gold codes to 40 per document is `max_train_codes` (off by
default) and applies to training losses only, never to evaluation. Options from the code that the paper does
not describe: `label_branch` (a second, code-wise attention over H_S′ whose probability is averaged with the
shared branch, `prob_ratio_share = 0.5` in `model.py`), `completion_noise` (corrupted context, on).
Not implemented: the authors' crop augmentation (head/tail/middle cut of notes longer than 4000 words) and
the padding of completion sequences to 40 with random codes.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.caml import pad_label_tokens
from icdcoder.models.encoders import ConvEncoder, WordEmbedding
from icdcoder.models.init import prior_log_odds
from icdcoder.models.isd_parts import (
    CompletionBatch,
    InteractiveDecoderLayer,
    MaskedMultiheadAttention,
    block_self_mask,
    hungarian_distillation,
    sample_completion,
)
from icdcoder.models.laat import level0_key


class ISDConfig(ModelConfig):
    # Defaults: Zhou et al. 2021, MIMIC-III (paper Section 4.2 and the authors' config.py).
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the word embeddings
    hidden_dim: int = Field(256, ge=1)  # d: CNN output = code embedding size
    kernel_sizes: tuple[int, ...] = Field((5, 7, 9, 11), min_length=1)
    n_queries: Annotated[int, Field(ge=1)] | Literal["parents"] = 64  # shared representations Nq
    attention_heads: int = Field(1, ge=1)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    decoder_layers: int = Field(2, ge=0)  # 0 = without the co-occurrence decoder
    decoder_heads: int = Field(1, ge=1)
    decoder_ff_dim: int = Field(1024, ge=1)
    decoder_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    completion_tasks: bool = True
    completion_length: int = Field(40, ge=2)
    completion_noise: bool = True  # authors' code: corrupt m − 1 context codes of the missing-code task
    # full = teacher path + distillation loss; teacher_only = teacher BCE without L_dist; off = student only
    self_distillation: Literal["full", "teacher_only", "off"] = "full"
    distill_on: Literal["refined", "shared"] = "refined"  # match H_S′ (after the decoder) or H_S
    label_branch: bool = False  # authors' model.py: average with a code-wise attention branch
    max_train_codes: int | None = Field(None, ge=1)  # authors' code: 40 (training losses only)
    lambda_pred: float = Field(0.5, ge=0.0)
    lambda_teacher: float = Field(0.5, ge=0.0)
    lambda_distill: float = Field(1e-3, ge=0.0)
    lambda_missing: float = Field(5e-4, ge=0.0)
    lambda_removal: float = Field(5e-4, ge=0.0)
    output_attention: Literal["eval", "always", "never"] = "eval"
    # Small data (issue 17): "centred_prior" starts the code embeddings as the description means centred
    # over the codes, scaled to mean norm 1/√d, and the biases at the training prevalence's log-odds, so every
    # code starts at its prior; "seed" is the published initialisation (see `centred_code_init`).
    code_init: Literal["seed", "centred_prior"] = "seed"

    @field_validator("self_distillation", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> ISDConfig:
        if self.hidden_dim % len(self.kernel_sizes):
            raise ValueError(
                f"hidden_dim {self.hidden_dim} must be divisible by the {len(self.kernel_sizes)} kernel sizes"
            )
        for heads in (self.attention_heads, self.decoder_heads):
            if self.hidden_dim % heads:
                raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by {heads} heads")
        if self.completion_tasks and self.decoder_layers == 0:
            raise ValueError(
                "completion_tasks need the decoder: set completion_tasks: false with decoder_layers 0"
            )
        return self


def description_means(weight: Tensor, label_token_ids: list[list[int]]) -> Tensor:
    """Mean word vector [C, D] of each code's description tokens (rows of `weight` [V, D])."""
    out = weight.new_zeros(len(label_token_ids), weight.shape[1])
    for i, toks in enumerate(label_token_ids):
        if toks:
            out[i] = weight[torch.tensor(toks, dtype=torch.long)].mean(dim=0)
    return out


def centred_code_init(code_emb: Tensor) -> Tensor:
    """The `centred_prior` code embeddings: centred over the codes, scaled to mean norm 1/√d.

    With the seed's initialisation the description means share one large common direction (every code's
    mean word vector contains the corpus-mean word vector), the post-norm decoder's outputs have norm √d and
    b_c ~ N(0, 1), so at step 0 the scores sit 4.5 log-odds from the prior on average (CodiEsp-D) and the
    first steps are spent pulling every code down. Centred embeddings have no common direction (Σ_c e_c = 0),
    the small norm keeps the max-over-queries term near 0, and the prior biases carry the base rates: the
    scores start 0.12 from the prior and the training loss after 12 steps is half the seed's.

    Measured (benchmarks/isd_collapse.py, docs/results/small_data.md): this is NOT what collapses the shared
    vectors; with it they collapse just as fast (doc-to-doc cosine of H_S′ 0.93 → 0.999 in 4 steps at lr
    2e-3). It removes the reason the CPU configs needed a fast learning rate (learning the prior), so it is
    meant to be combined with the seed's slow start (lr 3e-4, long warm-up), which delays the collapse."""
    centred = code_emb - code_emb.mean(dim=0, keepdim=True)
    d = code_emb.shape[1]
    # one global scale (per-code scales would bring a common direction back): mean norm 1/√d
    return centred / centred.norm(dim=1).mean().clamp(min=1e-12) / d**0.5


def orthonormal_map(in_dim: int, out_dim: int) -> Tensor:
    """A random [in_dim, out_dim] matrix with orthonormal rows (in_dim ≤ out_dim: x ↦ xP keeps every dot
    product) or orthonormal columns (in_dim > out_dim: an orthogonal projection). Drawn from torch's RNG."""
    q, _ = torch.linalg.qr(torch.randn(max(in_dim, out_dim), min(in_dim, out_dim)))
    return q if in_dim >= out_dim else q.t()


def mix_probabilities(a: Tensor, b: Tensor) -> Tensor:
    """logit(½σ(a) + ½σ(b)), computed in log space (no overflow for large |a|, |b|)."""
    ls = F.logsigmoid
    pos = torch.logaddexp(ls(a), ls(b))
    neg = torch.logaddexp(ls(-a), ls(-b))
    return pos - neg


def attention_std(weights: Tensor, mask: Tensor) -> Tensor:
    """Table 6's sharpness: the population standard deviation of each query's attention weights over the
    real tokens of its note. weights [B, Q, T], mask [B, T] → [B, Q]."""
    m = mask[:, None, :].to(weights.dtype)
    n = m.sum(-1).clamp_min(1.0)
    mean = (weights * m).sum(-1) / n
    var = (((weights - mean[..., None]) ** 2) * m).sum(-1) / n
    return var.sqrt()


@register_model("isd")
class ISD(IcdModel):
    Config: ClassVar[type[ModelConfig]] = ISDConfig
    desc_ids: Tensor
    desc_mask: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, ISDConfig)
        self.cfg = c = config
        d, n_codes = c.hidden_dim, ctx.n_labels
        self.embed = WordEmbedding.from_context(
            ctx, c.embed_dim, dropout=c.dropout, freeze=c.freeze_embeddings
        )
        width = d // len(c.kernel_sizes)
        self.convs = nn.ModuleList(ConvEncoder(c.embed_dim, width, k) for k in c.kernel_sizes)

        if ctx.label_token_ids and len(ctx.label_token_ids) != n_codes:
            raise ConfigError(
                f"isd got {len(ctx.label_token_ids)} code descriptions for {n_codes} codes.",
                fix="tokenise one description per code of the label space.",
            )
        if ctx.label_token_ids:
            with torch.no_grad():
                means = description_means(self.embed.embedding.weight, ctx.label_token_ids)
                code_init = means @ orthonormal_map(c.embed_dim, d)
        else:
            code_init = torch.randn(n_codes, d) / d**0.5
        bias_init = torch.randn(n_codes)
        if c.code_init == "centred_prior" and ctx.init_from_pretrained:
            code_init = centred_code_init(code_init)
            if ctx.label_train_counts and ctx.n_train_docs:
                bias_init = prior_log_odds(ctx.label_train_counts, ctx.n_train_docs)
        self.code_emb = nn.Parameter(code_init)
        self.code_bias = nn.Parameter(bias_init)

        # Shared queries: Nq random vectors, or one per 3-character parent starting at its codes' mean.
        if c.n_queries == "parents":
            parents = [level0_key(k) for k in ctx.label_keys]
            self.parent_keys = sorted(set(parents))
            index = torch.tensor([self.parent_keys.index(p) for p in parents], dtype=torch.long)
            sums = torch.zeros(len(self.parent_keys), d).index_add_(0, index, code_init)
            counts = torch.zeros(len(self.parent_keys)).index_add_(0, index, torch.ones(n_codes))
            queries = sums / counts[:, None]
        else:
            queries = torch.randn(c.n_queries, d)
        self.queries = nn.Parameter(queries)
        self.shared_attention = MaskedMultiheadAttention(d, c.attention_heads, c.attention_dropout)
        self.decoder = nn.ModuleList(
            InteractiveDecoderLayer(d, c.decoder_heads, c.decoder_ff_dim, c.decoder_dropout)
            for _ in range(c.decoder_layers)
        )
        if c.label_branch:
            self.label_attention = MaskedMultiheadAttention(d, 1, c.attention_dropout)
        if c.completion_tasks:  # the mask token / none class of the completion tasks
            self.mask_emb = nn.Parameter(torch.randn(d) / d**0.5)
            self.mask_bias = nn.Parameter(torch.zeros(1))
        # Description token ids for the teacher path; rebuilt from the saved context at load time.
        ids, mask = pad_label_tokens(ctx.label_token_ids, ctx.pad_id)
        self.has_descriptions = bool(ctx.label_token_ids)
        self.register_buffer("desc_ids", ids, persistent=False)
        self.register_buffer("desc_mask", mask, persistent=False)

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])

    # -- the network ------------------------------------------------------------------------------------
    def encode(self, token_ids: Tensor, mask: Tensor) -> Tensor:
        """Eq. 1-2: token ids [N, T] → H [N, T, d], zero at padding."""
        x = self.embed(token_ids, mask)
        return torch.cat([conv(x, mask) for conv in self.convs], dim=-1)

    def represent(
        self, h: Tensor, mask: Tensor, comp: CompletionBatch | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Shared attention (Eq. 3-5) then the decoder: (H_S [N, Nq, d], H_S′ [N, Nq, d], α [N, Nq, T],
        decoder outputs of the completion sequences [N, 2, L, d] or None).

        The completion sequences of each note run in the same decoder pass as its shared vectors, as extra
        query blocks that attend only within their own block (so the result equals separate passes) while
        the note's cross-attention keys and values are projected once."""
        shared, alpha = self.shared_attention(self.queries, h, h, mask)
        x, self_mask, nq = shared, None, shared.shape[1]
        if comp is not None:
            n, _, width = comp.codes.shape
            table = torch.cat([self.code_emb, self.mask_emb[None]])
            x = torch.cat([shared, table[comp.codes].view(n, 2 * width, -1)], dim=1)
            valid = torch.cat([comp.mask.new_ones(n, nq), comp.mask.view(n, 2 * width)], dim=1)
            self_mask = block_self_mask([nq, width, width], valid)
        for layer in self.decoder:
            x = layer(x, self_mask, h, mask)
        comp_out = None if comp is None else x[:, nq:].reshape(x.shape[0], 2, comp.codes.shape[2], -1)
        return shared, x[:, :nq], alpha, comp_out

    def score(self, refined: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Eq. 6/11: (logits [N, C], the query index giving each code its max [N, C], label-branch logits)."""
        scores = torch.einsum("nqd,cd->nqc", refined, self.code_emb)
        best, choice = scores.max(dim=1)
        share = best + self.code_bias
        if not self.cfg.label_branch:
            return share, choice, None
        ctx, _ = self.label_attention(self.code_emb, refined, refined, None)  # [N, C, d]
        label = torch.einsum("ncd,cd->nc", ctx, self.code_emb) + self.code_bias
        return share, choice, label

    def shared_attention_weights(self, batch: Batch) -> Tensor:
        """α [B, Nq, T] of the note (for Table 6's sharpness and inspection)."""
        return self.represent(self.encode(batch.token_ids, batch.mask), batch.mask)[2]

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encode(batch.token_ids, batch.mask)
        train = self.training and batch.targets is not None
        targets = self.train_targets(batch.targets) if batch.targets is not None else None
        comp = None
        if train and self.cfg.completion_tasks:
            assert targets is not None
            comp = sample_completion(
                targets.detach().cpu(), self.n_labels, self.cfg.completion_length, self.cfg.completion_noise
            ).to(h.device)
        shared, refined, alpha, comp_out = self.represent(h, batch.mask, comp)
        share, choice, label = self.score(refined)
        logits = share if label is None else mix_probabilities(share, label)
        extras: dict[str, Tensor] = {"share_logits": share}
        if label is not None:
            extras["label_logits"] = label
        want = self.cfg.output_attention
        attention = None
        if self.attention_enabled and (want == "always" or (want == "eval" and not self.training)):
            attention = alpha.gather(1, choice[..., None].expand(-1, -1, alpha.shape[-1]))
        if train:
            assert targets is not None
            extras["train_targets"] = targets
            if self.cfg.self_distillation != "off":
                extras.update(self._teacher(targets, shared, refined))
            if comp is not None and comp_out is not None:
                extras.update(self.completion_losses(comp, comp_out))
        return ModelOutput(logits=logits, attention=attention, extras=extras)

    def train_targets(self, targets: Tensor) -> Tensor:
        """The authors' `max_label_count`: keep the first N gold codes (label order) of each document."""
        n = self.cfg.max_train_codes
        if n is None:
            return targets
        return targets * (targets.cumsum(dim=1) <= n).to(targets.dtype)

    # -- self-distillation (Section 3.4) -----------------------------------------------------------------
    def teacher_input(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Each document's gold-code descriptions, encoded separately and concatenated in shuffled order:
        (H_tgt [B, T', d], mask [B, T'])."""
        if not self.has_descriptions:
            raise ConfigError(
                "isd's teacher path needs a tokenised description per code "
                "(ModelContext.label_token_ids is empty).",
                fix="train with code titles available, or set model.self_distillation: off.",
            )
        gold = [row.nonzero().flatten() for row in targets]
        gold = [g[torch.randperm(g.numel())].to(targets.device) for g in gold]
        codes, inverse = torch.unique(torch.cat(gold), return_inverse=True)
        if codes.numel() == 0:  # no document has a gold code: an empty (fully masked) teacher note each
            d = self.code_emb.shape[1]
            empty = torch.zeros(len(gold), 1, dtype=torch.bool, device=targets.device)
            return self.code_emb.new_zeros(len(gold), 1, d), empty
        ids, dmask = self.desc_ids[codes], self.desc_mask[codes]
        h_desc = self.encode(ids, dmask)  # [U, L, d]
        u, width = ids.shape
        flat = torch.cat([h_desc.reshape(u * width, -1), h_desc.new_zeros(1, h_desc.shape[-1])])
        positions = torch.arange(u * width, device=ids.device).view(u, width)
        rows, start = [], 0
        for g in gold:
            slots = inverse[start : start + g.numel()]
            start += g.numel()
            rows.append(positions[slots][dmask[slots]])  # token slots of the codes, in order
        length = max([1, *(r.numel() for r in rows)])
        index = torch.full((len(rows), length), u * width, dtype=torch.long, device=ids.device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=ids.device)
        for i, r in enumerate(rows):
            index[i, : r.numel()] = r
            mask[i, : r.numel()] = True
        return flat[index], mask

    def _teacher(self, targets: Tensor, shared: Tensor, refined: Tensor) -> dict[str, Tensor]:
        h_t, mask_t = self.teacher_input(targets)
        t_shared, t_refined, _, _ = self.represent(h_t, mask_t)
        t_share, _, t_label = self.score(t_refined)
        out = {"teacher_logits": t_share}
        if t_label is not None:
            out["teacher_label_logits"] = t_label
        if self.cfg.self_distillation == "full":
            refined_side = self.cfg.distill_on == "refined"
            out["distill"] = hungarian_distillation(
                refined if refined_side else shared,
                t_refined if refined_side else t_shared,
                targets.sum(dim=1) > 0,
            )[0]
        return out

    # -- code completion (Section 3.3) -------------------------------------------------------------------
    def completion_losses(self, comp: CompletionBatch, comp_out: Tensor) -> dict[str, Tensor]:
        """Eq. 9-10: cross-entropy of the classified position of each sequence over C + 1 classes (the
        softmax is tied to [E; e_mask] with biases [b; b_mask]). comp_out [B, 2, L, d]."""
        table = torch.cat([self.code_emb, self.mask_emb[None]])
        bias = torch.cat([self.code_bias, self.mask_bias])
        picked = comp_out.gather(2, comp.position[..., None, None].expand(-1, -1, 1, comp_out.shape[-1]))
        logits = picked.squeeze(2) @ table.t() + bias  # [B, 2, C + 1]
        out = {}
        for name, task in (("completion_missing", 0), ("completion_false", 1)):
            sel = comp.valid[:, task]
            if sel.any():
                out[name] = F.cross_entropy(logits[sel, task], comp.target[sel, task])
            else:
                out[name] = logits.sum() * 0.0
        return out

    # -- Eq. 15 ------------------------------------------------------------------------------------------
    def _bce(self, share: Tensor, label: Tensor | None, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(share, targets)
        if label is None:
            return bce
        return 0.5 * (bce + F.binary_cross_entropy_with_logits(label, targets))

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        assert batch.targets is not None, "losses() needs targets"
        c, ex = self.cfg, output.extras
        targets = ex.get("train_targets", self.train_targets(batch.targets))
        terms = {"bce": c.lambda_pred * self._bce(ex["share_logits"], ex.get("label_logits"), targets)}
        if "teacher_logits" in ex:
            teacher = self._bce(ex["teacher_logits"], ex.get("teacher_label_logits"), targets)
            terms["bce_teacher"] = c.lambda_teacher * teacher
        if "distill" in ex:
            terms["distill"] = c.lambda_distill * ex["distill"]
        if "completion_missing" in ex:
            terms["completion_missing"] = c.lambda_missing * ex["completion_missing"]
            terms["completion_false"] = c.lambda_removal * ex["completion_false"]
        return terms

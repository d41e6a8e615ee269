"""JLAN (Li, Zhang, Islam, Dong, Wei, Liu 2021, BMC Bioinformatics 22:590): joint learning attention network
with a denoising (truncation) loss. There is no public code; this follows the paper's text
(`shared/seeds/001_…`), and fills each gap with a choice listed below (a re-derivation, not a port).

    E = word embeddings (dropout)                                             [B, T, e]
    residual block(s): Y = tanh(tanh(conv(E)) + E)                            [B, T, e]
    H = BiLSTM, k units per direction, H = [H→ ; H←]                          [B, T, 2k]
    self-attention   T^S = softmax(W1 tanh(W2 H)), one row per code; M^S = T^S H       [B, C, 2k]
    label attention  codes C ∈ R^{C×k}; B→ = C H→, B← = C H←;
                     M^L = [B→ H→ ; B← H←] / n  (n = note length)                       [B, C, 2k]
    joint learning   α = σ(M^S w3 + b3), β = σ(M^L w4 + b4), 0 < α + β ≤ 1; M = α M^S + β M^L
    output           Z = tanh(FC1 M), V = FC2 Z (both shared by all codes), ŷ_c = Σ_j V_cj; ỹ = σ(ŷ)
    loss             truncated BCE (models/losses.py), D_T = min(γT, D_max), D_max = 0.15

Published hyperparameters (MIMIC-III; the paper gives no others):

| setting                     | value                 |
|-----------------------------|-----------------------|
| embedding size              | 256                   |
| residual blocks             | 1 (Table 4: more is worse) |
| BiLSTM units k / direction  | 256 ("k = 256 for W3 and W4") |
| d (W1, W2)                  | 200                   |
| optimiser, learning rate    | Adam, 0.001           |
| T-loss (max drop rate)      | 0.15 (Table 3)        |
| max tokens                  | 2500; tokens in < 2 training documents → UNK |

Choices (the paper is silent or inconsistent; each is a config switch where an alternative is plausible):
- Residual block (`res_block: plain`): as the paper describes it, "convolution and activation", an identity
  shortcut, then the activation; tanh, kernel 3, width = embedding size (none given). `multirescnn` uses Li &
  Yu's block (conv-BN-tanh-conv-BN + 1×1 shortcut; it was in the CPU probe quoted below).
- Label attention (`label_weights: linear`): the paper takes "the dot product between h_d and C_j" per
  direction and builds M^L by "linearly combining the context words" with those weights; no softmax is
  written (the self-attention equation has one). Unnormalised dot-product weights are also what LSAN (Xiao et
  al. 2019), which this design follows, uses. We divide by the note length n so the scale does not grow with
  the note (up to 2,500 tokens). Why it matters here: the output layer is shared by all codes, so it only
  sees the code-wise vectors; with softmax weights every vector is a convex mix of token states and the
  strength of a code's match is lost (on a one-token note all codes get one score). `softmax` keeps that
  form (shared `label_attention`). C has k columns ("in the same k-dim space") and is initialised from the
  code descriptions (mean word vector of the title), which needs embed_dim = hidden_size (paper: 256 = 256);
  otherwise set `label_init: random`.
- Gate dimensions: w3, w4 ∈ R^{2k} (the paper writes R^k, but M^S and M^L have 2k columns), with biases.
- Constraint 0 < α + β ≤ 1: (α, β) ← (α, β) / max(1, α + β). Sums ≤ 1 are untouched (the constraint is an
  inequality); larger sums are rescaled onto α + β = 1 with the ratio α : β kept. Sigmoids are > 0, so the
  sum stays > 0.
- "Splice" of the weighted matrices: the sum α M^S + β M^L (the paper's no-joint-learning ablation "adds
  them together"), keeping 2k columns.
- Output (`output: shared`): "an MLP with two fully connected layers, then sum pooling ŷ_i = Σ_j V_ij", read
  literally: FC1 (2k → mlp_hidden), tanh (ReLU units died in small runs and gave every code one score), FC2
  (mlp_hidden → mlp_out), summed; no per-code parameter (`code_bias: true` adds one, not in the paper;
  `bias_init: prior` starts it at the code's training log-odds, a small-data option of issue 17). A
  second reading, `output: labelwise`, takes FC2 as CAML/MultiResCNN's per-code layer whose product with Z is
  sum-pooled (ŷ_c = Σ_j W_cj Z_cj + b_c). In a CodiEsp-D CPU probe (k = 64, Li & Yu block, ReLU, softmax
  label weights, epoch 6 of 8) the shared form reached dev micro-F1 15.3 % and the per-code form 12.8 %
  (≈ the code-frequency prior, 12.3 %).
- Evidence attention: (α T^S + β T^L) / (α + β), with T^L the mean of the two directions' softmax(B) over
  the note's tokens, so every row sums to 1 like the other models' attention and weighs the maps as the
  gates do.
- T-loss: see models/losses.py (a drop rate, not a loss value; positive entries only by default; schedule
  over optimizer steps). It applies in training mode only; before the trainer reports progress, D_T = 0.

Ablations (seed Figs. 6–8): `attention: label` (L only), `attention: self` (S only), `attention: sum`
(S + L without joint learning), `denoise: false` (plain BCE).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.attention import LabelAttention, label_attention, masked_softmax
from icdcoder.models.base import Batch, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import (
    BiLSTMEncoder,
    LabelwiseLinear,
    ResidualBlock,
    SameConv1d,
    WordEmbedding,
)
from icdcoder.models.init import DescribedCodesModel, InformedInitConfig, apply_informed_init
from icdcoder.models.losses import (
    DEFAULT_MAX_DROP_RATE,
    DEFAULT_WARMUP,
    truncated_bce_with_logits,
    truncation_drop_rate,
)


class JLANConfig(InformedInitConfig):
    # Defaults: Li et al. 2021 (MIMIC-III); unpublished ones marked "choice".
    embed_dim: int = Field(256, ge=1)
    freeze_embeddings: bool = False
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # choice: on the embeddings and in the residual block(s)
    num_res_blocks: int = Field(1, ge=0)
    res_block: Literal["plain", "multirescnn"] = "plain"
    kernel_size: int = Field(3, ge=1)  # choice
    hidden_size: int = Field(256, ge=1)  # k, per direction
    d_a: int = Field(200, ge=1)  # d
    attention: Literal["joint", "sum", "label", "self"] = "joint"
    label_weights: Literal["linear", "softmax"] = "linear"
    label_init: Literal["description", "random"] = "description"
    output: Literal["shared", "labelwise"] = "shared"
    mlp_hidden: int = Field(256, ge=1)  # choice: k (the paper's V ∈ R^{l×k})
    mlp_out: int = Field(256, ge=1)  # output "shared" only: width of its second layer
    code_bias: bool = False  # output "shared" only (not in the paper): a learned bias per code
    # Small data (issue 17; not in the paper), from InformedInitConfig: `bias_init: prior` starts the per-code
    # bias (code_bias, or the labelwise output's b_c) at the log-odds of the code's training prevalence, so
    # step 0 is the label prior; `code_init: description` starts the self-attention queries (W1's rows) from
    # the code's title and synonyms, as for LAAT (the label attention's C has its own `label_init`).
    denoise: bool = True
    tloss_max_rate: float = Field(DEFAULT_MAX_DROP_RATE, ge=0.0, lt=1.0)  # D_max
    tloss_warmup: float = Field(DEFAULT_WARMUP, ge=0.0, le=1.0)  # share of planned steps to reach D_max
    tloss_mode: Literal["entry", "document"] = "entry"
    tloss_scope: Literal["positive", "all"] = "positive"


class PlainResidualBlock(nn.Module):
    """The seed's residual block: Y = tanh(F(E) + E) with F(E) = tanh(conv(E)) (one same-length convolution
    and an activation, an identity shortcut, the activation after the addition), then dropout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError("the identity shortcut needs in_channels == out_channels")
        self.conv = SameConv1d(in_channels, out_channels, kernel_size)
        nn.init.xavier_uniform_(self.conv.conv.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        """x [B, C, T] (zero at padding), m [B, 1, T] float mask → [B, C, T] (zero at padding)."""
        out = torch.tanh(torch.tanh(self.conv(x)) + x)
        return self.dropout(out) * m


def constrain_gates(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Enforce 0 < α + β ≤ 1 elementwise: divide both by max(1, α + β) (no change when the sum is ≤ 1)."""
    scale = (alpha + beta).clamp_min(1.0)
    return alpha / scale, beta / scale


@register_model("jlan")
class JLAN(DescribedCodesModel):
    Config: ClassVar[type[ModelConfig]] = JLANConfig

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, JLANConfig)
        self.cfg = config
        k = config.hidden_size
        self.embed = WordEmbedding.from_context(
            ctx, config.embed_dim, dropout=config.dropout, freeze=config.freeze_embeddings
        )
        block = PlainResidualBlock if config.res_block == "plain" else ResidualBlock
        self.res_blocks = nn.ModuleList(
            block(config.embed_dim, config.embed_dim, config.kernel_size, config.dropout)
            for _ in range(config.num_res_blocks)
        )
        self.lstm = BiLSTMEncoder(config.embed_dim, k)
        self.use_self = config.attention != "label"
        self.use_label = config.attention != "self"
        if self.use_self:
            # LAAT-form attention is exactly the structured self-attention softmax(W1 tanh(W2 H)).
            self.self_attention = LabelAttention(2 * k, ctx.n_labels, mode="laat", proj_dim=config.d_a)
        if self.use_label:
            self.code_embed = nn.Parameter(self._initial_codes(ctx, config))
        if config.attention == "joint":
            self.gate_self = nn.Linear(2 * k, 1)  # W3
            self.gate_label = nn.Linear(2 * k, 1)  # W4
        self.fc1 = nn.Linear(2 * k, config.mlp_hidden)
        self.fc2: nn.Module
        if config.output == "labelwise":
            self.fc2 = LabelwiseLinear(config.mlp_hidden, ctx.n_labels)
        else:
            self.fc2 = nn.Linear(config.mlp_hidden, config.mlp_out)
            if config.code_bias:
                self.bias = nn.Parameter(torch.zeros(ctx.n_labels))
        # The shared informed initialisation (models/init.py), after JLAN's own checks: the paper's shared
        # output has no per-code bias, and attention: label has no self-attention queries to start.
        bias = self.fc2.bias if isinstance(self.fc2, LabelwiseLinear) else getattr(self, "bias", None)
        if config.bias_init == "prior" and ctx.init_from_pretrained and bias is None:
            raise ConfigError(
                "model.bias_init: prior needs a per-code bias.",
                fix="set model.code_bias: true (or output: labelwise).",
            )
        if config.code_init == "description" and ctx.init_from_pretrained and not self.use_self:
            raise ConfigError(
                "model.code_init: description starts the self-attention queries, and attention: label "
                "has none.",
                fix="use model.label_init for the label attention's code vectors, or code_init: random.",
            )
        apply_informed_init(
            self,
            config,
            ctx,
            bias=bias,
            attention=self.self_attention if self.use_self else None,
            encode=self.encode,
        )
        self._progress: tuple[int, int] | None = None

    def _initial_codes(self, ctx: ModelContext, config: JLANConfig) -> Tensor:
        codes = torch.empty(ctx.n_labels, config.hidden_size)
        nn.init.xavier_uniform_(codes)
        if config.label_init == "random" or not ctx.label_token_ids:
            return codes
        if config.embed_dim != config.hidden_size:
            raise ConfigError(
                f"model.label_init 'description' needs embed_dim ({config.embed_dim}) = hidden_size "
                f"({config.hidden_size}): code vectors start as mean word vectors and are compared with "
                "each LSTM direction.",
                fix="set model.hidden_size equal to model.embed_dim, or model.label_init: random.",
            )
        if len(ctx.label_token_ids) != ctx.n_labels:
            raise ConfigError(
                f"jlan got {len(ctx.label_token_ids)} code descriptions for {ctx.n_labels} codes.",
                fix="tokenise one description per code of the label space.",
            )
        words = self.embed.embedding.weight.detach()
        for i, toks in enumerate(ctx.label_token_ids):
            ids = [t for t in toks if t != ctx.pad_id]
            if ids:
                codes[i] = words[torch.tensor(ids, dtype=torch.long)].mean(dim=0)
        return codes

    def set_training_progress(self, step: int, total_steps: int, epoch: int) -> None:
        self._progress = (step, total_steps)

    def drop_rate(self) -> float:
        """The current D_T (0 before the trainer reports progress, or with denoising off)."""
        if not self.cfg.denoise or self._progress is None:
            return 0.0
        step, total = self._progress
        return truncation_drop_rate(
            step, total, max_rate=self.cfg.tloss_max_rate, warmup=self.cfg.tloss_warmup
        )

    def encode(self, batch: Batch) -> Tensor:
        """Token states H [B, T, 2k], zero at padded positions."""
        mask = batch.mask
        x = self.embed(batch.token_ids, mask)
        if len(self.res_blocks):
            m = mask.unsqueeze(1).to(x.dtype)
            h = x.transpose(1, 2) * m
            for block in self.res_blocks:
                h = block(h, m)
            x = h.transpose(1, 2)
        out: Tensor = self.lstm(x, mask)
        return out

    def _label_side(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM direction h [B, T, k] → (M [B, C, k], evidence weights [B, C, T])."""
        if self.cfg.label_weights == "softmax":
            return label_attention(h, self.code_embed, h, mask)
        scores = torch.einsum("btk,ck->bct", h, self.code_embed)  # B = C h
        keep = mask[:, None, :]
        length = mask.sum(dim=1).clamp(min=1).to(h.dtype)[:, None, None]
        context = torch.bmm(scores * keep / length, h)  # Σ_t B_ct h_t / n
        return context, masked_softmax(scores, keep)

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encode(batch)
        mask = batch.mask
        k = self.cfg.hidden_size
        extras: dict[str, Tensor] = {}
        if self.use_self:
            m_self, t_self = self.self_attention(h, mask)  # [B, C, 2k], [B, C, T]
        if self.use_label:
            m_fwd, t_fwd = self._label_side(h[..., :k], mask)
            m_bwd, t_bwd = self._label_side(h[..., k:], mask)
            m_label = torch.cat([m_fwd, m_bwd], dim=-1)
            t_label = (t_fwd + t_bwd) / 2
        mode = self.cfg.attention
        if mode == "joint":
            alpha = torch.sigmoid(self.gate_self(m_self)).squeeze(-1)  # [B, C]
            beta = torch.sigmoid(self.gate_label(m_label)).squeeze(-1)
            alpha, beta = constrain_gates(alpha, beta)
            fused = alpha.unsqueeze(-1) * m_self + beta.unsqueeze(-1) * m_label
            share = (alpha / (alpha + beta)).unsqueeze(-1)
            attention = share * t_self + (1 - share) * t_label
            extras = {"alpha": alpha, "beta": beta}
        elif mode == "sum":
            fused, attention = m_self + m_label, (t_self + t_label) / 2
        elif mode == "self":
            fused, attention = m_self, t_self
        else:
            fused, attention = m_label, t_label
        hidden = torch.tanh(self.fc1(fused))  # [B, C, mlp_hidden]
        if self.cfg.output == "labelwise":
            logits = self.fc2(hidden)  # Σ_j W_cj Z_cj + b_c: sum pooling of V = W ⊙ Z
        else:
            logits = self.fc2(hidden).sum(dim=-1)  # sum pooling of V = FC2(Z)
            if self.cfg.code_bias:
                logits = logits + self.bias
        return ModelOutput(logits=logits, attention=attention, extras=extras)

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        assert batch.targets is not None, "losses() needs targets"
        if not self.cfg.denoise:
            return {"bce": F.binary_cross_entropy_with_logits(output.logits, batch.targets)}
        rate = self.drop_rate() if self.training else 0.0
        loss = truncated_bce_with_logits(
            output.logits, batch.targets, rate, mode=self.cfg.tloss_mode, scope=self.cfg.tloss_scope
        )
        return {"tloss": loss}

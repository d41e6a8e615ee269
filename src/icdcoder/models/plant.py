"""PLANT: planted attention from a pre-trained learning-to-rank model, inattention and a stateful decoder
(Saha Roy et al., "Don't Just Pay Attention, PLANT It", seed 004; the authors' xcube@plant pipeline in
docs/SEED_NOTES.md §4.5).

Encoder: an AWD-LSTM pre-trained here as a language model (models/awd_lstm.py) on the training notes plus
unlabelled text, then fine-tuned. Decoder: three attention sources over the note's token states H:

- A (learned):  softmax over tokens of H·U_c (label embeddings U), optionally with inattention;
- S (static planted): the MI "brain" value (models/plant_mi.py) of each actual input token for label c,
  top `static_inattn` tokens per label, **no softmax** (as the authors' code);
- P (differentiable planted): the L2R score (models/plant_l2r.py) of (token, c), top `diff_inattn` tokens
  per label (**inattention**: the rest are dropped before the softmax), softmax over the kept ones.

Label context v_c = A_cᵀH + S_cᵀH + P_cᵀH; logit_c = ⟨w_c, v_c⟩ + b_c (the seed's Eq. 5-6).

**Stateful decoder**: the note is read in segments of `bptt` tokens with the LSTM state carried across
segments. The per-label top-k positions of S and P depend only on token ids and are selected first (a cheap
pass without the LSTM); then, segment by segment, A and P are accumulated as an online softmax (running max,
normaliser and weighted sum per label) and S as a running weighted sum. Memory is O(B·C·(bptt + D)) whatever
the note length, and the logits equal those of reading the note at once (tested). In training, gradients flow
through the last `grad_segments` segments of each note (the authors keep 72 × 40 = 2,880 tokens); earlier
segments run without gradient, so training memory is steady too. Deviation, documented: the authors attend
only over that last window and add a detached running prior of earlier chunks' predictions; here attention
covers every token exactly, so no prior is needed. `stateful: false` reads the whole note as one segment
(memory grows with length: the truncating baseline, paired with `data.max_tokens`).

**Training schedule** (ULMFiT, the seed's §2.2): `optimizer_groups` gives the trainer discriminative learning
rates (decoder at train.lr, L2R at `l2r_lr_mult`×, each LSTM layer below divided by `lr_decay`, the
embedding last); `set_training_progress` unfreezes one group per `unfreeze_every` epochs from the top
(gradual unfreezing). **Bidirectional**: a second branch reads each note reversed with a backward LM; the
branches are trained independently (sum of their BCEs) and their probabilities averaged (the seed's §2.2).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from icdcoder.models.awd_lstm import AWDLSTM, AWDConfig, LMTrainConfig, State, cached_language_model
from icdcoder.models.base import (
    Batch,
    IcdModel,
    ModelConfig,
    ModelContext,
    ModelOutput,
    TrainingCorpus,
    register_model,
)
from icdcoder.models.encoders import LabelwiseLinear
from icdcoder.models.init import init_prior_bias
from icdcoder.models.plant_l2r import L2RScorer, L2RTrainConfig, train_l2r
from icdcoder.models.plant_mi import compute_brain

log = logging.getLogger(__name__)

Source = Literal["learned", "static", "planted"]
_NEG = float("-inf")
_ALL_SOURCES: tuple[Source, ...] = ("learned", "static", "planted")

# fastai's AWD-LSTM classifier dropouts (emb, input, hidden, weight, output), scaled by `drop_mult`
# (the authors' launches use drop_mult 0.1); the LM uses fastai's LM dropouts.
_CLAS_DROPS = (0.05, 0.4, 0.3, 0.5, 0.4)
_LM_DROPS = (0.02, 0.25, 0.15, 0.2, 0.1)


class PLANTConfig(ModelConfig):
    # Encoder (seed A.5: embedding 400, 3 LSTM layers of 1152 units).
    emb_dim: int = Field(400, ge=2)
    hidden: int = Field(1152, ge=2)
    n_layers: int = Field(3, ge=1)
    drop_mult: float = Field(0.1, ge=0.0, le=1.0)
    # Language-model pre-training (forward; backward too when bidirectional).
    lm_pretrain: bool = True
    lm_epochs: int = Field(2, ge=1)
    lm_bptt: int = Field(70, ge=2)
    lm_batch_size: int = Field(32, ge=1)
    lm_lr: float = Field(2e-3, gt=0)
    lm_max_tokens: int | None = Field(None, ge=100)
    # MI brain (static planted attention) and L2R bootstrapping.
    brain: Literal["jaccard", "label_entropy", "mi"] = "jaccard"
    brain_top_tokens: int = Field(2000, ge=0)  # best tokens kept per label (0 = all)
    brain_label_chunk: int = Field(200, ge=1)
    l2r: Literal["dot", "mlp"] = "dot"  # the authors' L2R_DotProductBias; "mlp" = the seed's 2-layer Eq. 7
    l2r_dim: int = Field(400, ge=1)  # emb_sz 400 in the MIMIC-III launch
    l2r_hidden: int = Field(64, ge=1)
    l2r_epochs: int = Field(100, ge=0)
    l2r_list_size: int = Field(64, ge=2)
    l2r_label_batch: int = Field(64, ge=1)
    l2r_lr: float = Field(7e-3, gt=0)
    l2r_weight_decay: float = Field(0.1, ge=0)
    l2r_k: int = Field(15, ge=1)
    # Decoder.
    sources: list[Source] = Field(default_factory=lambda: list(_ALL_SOURCES))
    inattention: bool = True  # Table 7 ablation: False = softmax over all tokens, S over all tokens
    learned_inattn: int | None = Field(None, ge=1)  # the seed has none on A
    static_inattn: int = Field(5, ge=1)
    diff_inattn: int = Field(30, ge=1)  # 8 for complete MIMIC-III, 24-60 for subsets in the launches
    planted_tokens: Literal["input", "lm_argmax"] = "input"  # lm_argmax: the authors' decode-then-score
    # Stateful decoder.
    stateful: bool = True
    bptt: int = Field(72, ge=1)
    grad_segments: int = Field(40, ge=1)
    bidirectional: bool = False
    # Discriminative fine-tuning and gradual unfreezing.
    discriminative: bool = True
    lr_decay: float = Field(2.6, ge=1.0)  # ULMFiT's factor between layer groups
    l2r_lr_mult: float = Field(0.5, gt=0)  # "half or a third of the LR for the L2R parameters"
    gradual_unfreezing: bool = True
    unfreeze_every: int = Field(1, ge=1)  # epochs per unfreezing stage
    # "prior": each code's bias starts at the log-odds of its training prevalence (issue 17's informed
    # initialisation, on in the CodiEsp configs); "zero": the seed.
    bias_init: Literal["zero", "prior"] = "zero"


def _awd(cfg: PLANTConfig, drops: tuple[float, ...], mult: float) -> AWDConfig:
    e, i, h, w, o = (min(d * mult, 0.9) for d in drops)
    return AWDConfig(cfg.emb_dim, cfg.hidden, cfg.n_layers, e, i, h, w, o)


def reverse_rows(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `lengths[r]` entries along dim 1 (padding stays at the end); an involution."""
    t = x.shape[1]
    ar = torch.arange(t, device=x.device)[None, :]
    lens = lengths.to(x.device)[:, None]
    idx = torch.where(ar < lens, lens - 1 - ar, ar)
    if x.dim() == 3:
        return x.gather(1, idx[:, :, None].expand_as(x))
    return x.gather(1, idx)


def select_topk(
    scores: Tensor, keep: tuple[Tensor, Tensor] | None, k: int, start: int
) -> tuple[Tensor, Tensor]:
    """Merge a segment's scores [B, C, t] into the running top-k (`keep` = (scores [B, C, k], positions)).

    Ties go to the earlier position, so reading in segments selects exactly what reading at once does."""
    b, c, t = scores.shape
    pos = torch.arange(start, start + t, device=scores.device).expand(b, c, t)
    if keep is not None:
        scores = torch.cat([keep[0], scores], dim=2)
        pos = torch.cat([keep[1], pos], dim=2)
    order = torch.sort(scores, dim=2, descending=True, stable=True).indices[:, :, :k]
    return scores.gather(2, order), pos.gather(2, order)


def segment_mask(positions: Tensor, valid: Tensor, start: int, t: int) -> Tensor:
    """Selected positions [B, C, k] (with validity) → bool [B, C, t] over the segment [start, start + t)."""
    local = positions - start
    inside = valid & (local >= 0) & (local < t)
    out = torch.zeros(*positions.shape[:2], t + 1, dtype=torch.bool, device=positions.device)
    out.scatter_(2, torch.where(inside, local, torch.full_like(local, t)), True)
    return out[:, :, :t]


class _OnlineSoftmax:
    """Running softmax-weighted sum over segments: max m, normaliser z and numerator acc per label."""

    def __init__(self) -> None:
        self.m: Tensor | None = None
        self.z: Tensor | None = None
        self.acc: Tensor | None = None

    def add(self, scores: Tensor, keep: Tensor, h: Tensor) -> None:
        """scores [B, C, t], keep [B, C, t] bool, h [B, t, D]."""
        s = scores.float().masked_fill(~keep, _NEG)
        seg_max = s.detach().amax(dim=2)  # a stabiliser only: the result does not depend on it
        m_new = seg_max if self.m is None else torch.maximum(self.m, seg_max)
        safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        e = torch.exp(s - safe[:, :, None])  # exp(-inf) = 0 at dropped positions
        acc = torch.bmm(e.to(h.dtype), h)
        z = e.sum(dim=2)
        if self.m is not None:
            assert self.z is not None and self.acc is not None
            scale = torch.exp(self.m - safe).nan_to_num(0.0)  # -inf - x → 0 for labels with nothing yet
            acc = acc + self.acc * scale[:, :, None]
            z = z + self.z * scale
        self.m, self.z, self.acc = m_new, z, acc

    def context(self) -> Tensor:
        assert self.z is not None and self.acc is not None
        return self.acc / self.z.clamp_min(1e-30)[:, :, None]

    def weights(self, scores: Tensor, keep: Tensor) -> Tensor:
        """The final attention weights of `scores` [B, C, T] (evidence), once every segment was added."""
        assert self.m is not None and self.z is not None
        safe = torch.where(torch.isfinite(self.m), self.m, torch.zeros_like(self.m))
        w = torch.exp(scores.float().masked_fill(~keep, _NEG) - safe[:, :, None])
        return w / self.z.clamp_min(1e-30)[:, :, None]

    def detach_rows(self, rows: Tensor) -> None:
        if self.m is None:
            return
        assert self.z is not None and self.acc is not None
        self.m = torch.where(rows[:, None], self.m.detach(), self.m)
        self.z = torch.where(rows[:, None], self.z.detach(), self.z)
        self.acc = torch.where(rows[:, None, None], self.acc.detach(), self.acc)


def _detach_state_rows(state: State, rows: Tensor) -> State:
    r = rows[None, :, None]
    return [(torch.where(r, h.detach(), h), torch.where(r, c.detach(), c)) for h, c in state]


@dataclass
class _Selection:
    positions: Tensor  # [B, C, k]
    valid: Tensor  # [B, C, k]
    values: Tensor  # [B, C, k] the selection scores (S: brain values used as weights)


class PlantBranch(nn.Module):
    """One reading direction: AWD-LSTM encoder, L2R scorer, learned label attention, output layer."""

    def __init__(self, cfg: PLANTConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.encoder = AWDLSTM(ctx.vocab_size, _awd(cfg, _CLAS_DROPS, cfg.drop_mult), ctx.pad_id)
        self.lm_bias = nn.Parameter(torch.zeros(ctx.vocab_size), requires_grad=False)  # LM decoder bias
        d = self.encoder.output_dim
        self.queries = nn.Parameter(torch.empty(ctx.n_labels, d))
        nn.init.xavier_uniform_(self.queries)
        self.l2r = L2RScorer(cfg.l2r, ctx.vocab_size, ctx.n_labels, cfg.l2r_dim, cfg.l2r_hidden)
        self.output = LabelwiseLinear(d, ctx.n_labels)
        nn.init.zeros_(self.output.bias)

    def lm_argmax(self, token_ids: Tensor, mask: Tensor, bptt: int) -> Tensor:
        """The authors' planted tokens: each state decoded back to its most likely next token (no grad)."""
        enc = self.encoder
        with torch.no_grad():
            masks = enc.draw_masks(token_ids.shape[0])
            state = enc.initial_state(token_ids.shape[0], enc.embedding.weight)
            outs = []
            for start in range(0, token_ids.shape[1], bptt):
                h, state = enc.forward_segment(token_ids[:, start : start + bptt], state, masks)
                outs.append(F.linear(h, enc.embedding.weight, self.lm_bias).argmax(-1))
        return torch.where(mask, torch.cat(outs, dim=1), token_ids)


@register_model("plant")
class PLANT(IcdModel):
    Config: ClassVar[type[ModelConfig]] = PLANTConfig
    brain_ids: Tensor
    brain_values: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, PLANTConfig)
        if not config.sources:
            from icdcoder.errors import ConfigError

            raise ConfigError("model.sources is empty.", fix="use any of learned, static, planted.")
        self.cfg = config
        self.vocab_size = ctx.vocab_size
        self.pad_id = ctx.pad_id
        self.branches = nn.ModuleList(
            PlantBranch(config, ctx) for _ in range(2 if config.bidirectional else 1)
        )
        if config.bias_init == "prior" and ctx.init_from_pretrained:
            for branch in self.branches:
                assert isinstance(branch, PlantBranch)
                init_prior_bias(branch.output.bias, ctx)
        m = ctx.vocab_size if config.brain_top_tokens == 0 else min(config.brain_top_tokens, ctx.vocab_size)
        # The brain: each label's best tokens and their values (saved with the weights, fitted by fit_priors).
        self.register_buffer("brain_ids", torch.zeros(ctx.n_labels, m, dtype=torch.long))
        self.register_buffer("brain_values", torch.zeros(ctx.n_labels, m))
        self._csr: tuple[Any, Tensor, Tensor, Tensor] | None = None
        self._stage = -1

    # -- the brain as a token-indexed sparse table -----------------------------------------------------------
    def _brain_by_token(self) -> tuple[Tensor, Tensor, Tensor]:
        key = (self.brain_values.data_ptr(), self.brain_values._version, self.brain_ids._version)
        if self._csr is None or self._csr[0] != key:
            c, m = self.brain_ids.shape
            tok = self.brain_ids.reshape(-1)
            lab = torch.arange(c, device=tok.device).repeat_interleave(m)
            val = self.brain_values.reshape(-1)
            keep = val > 0
            tok, lab, val = tok[keep], lab[keep], val[keep]
            order = torch.argsort(tok, stable=True)
            counts = torch.bincount(tok, minlength=self.vocab_size)
            ptr = torch.zeros(self.vocab_size + 1, dtype=torch.long, device=tok.device)
            ptr[1:] = torch.cumsum(counts, 0)
            self._csr = (key, ptr, lab[order], val[order])
        return self._csr[1], self._csr[2], self._csr[3]

    def brain_lookup(self, token_ids: Tensor) -> Tensor:
        """token_ids [B, t] → brain values [B, C, t] (0 for tokens outside a label's kept tokens)."""
        ptr, lab, val = self._brain_by_token()
        b, t = token_ids.shape
        flat = token_ids.reshape(-1)
        starts = ptr[flat]
        counts = ptr[flat + 1] - starts
        out = torch.zeros(b * t, self.n_labels, device=token_ids.device)
        total = int(counts.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), counts)
            first = torch.cumsum(counts, 0) - counts
            idx = starts[row] + torch.arange(total, device=flat.device) - first[row]
            out[row, lab[idx]] = val[idx]
        return out.view(b, t, -1).transpose(1, 2)

    # -- reading one direction ---------------------------------------------------------------------
    def _select(self, scores_fn: Any, token_ids: Tensor, mask: Tensor, k: int, bptt: int) -> _Selection:
        keep: tuple[Tensor, Tensor] | None = None
        with torch.no_grad():
            for start in range(0, token_ids.shape[1], bptt):
                seg = token_ids[:, start : start + bptt]
                s = scores_fn(seg).float().masked_fill(~mask[:, None, start : start + bptt], _NEG)
                keep = select_topk(s, keep, k, start)
        assert keep is not None
        return _Selection(keep[1], torch.isfinite(keep[0]), keep[0])

    def _read(
        self, branch: PlantBranch, token_ids: Tensor, mask: Tensor, lengths: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        cfg = self.cfg
        b, t_all = token_ids.shape
        bptt = cfg.bptt if cfg.stateful else max(t_all, 1)
        use = set(cfg.sources)
        inatt = cfg.inattention
        planted = token_ids
        if "planted" in use and cfg.planted_tokens == "lm_argmax":
            planted = branch.lm_argmax(token_ids, mask, bptt)
        sel_s = sel_p = sel_a = None
        if inatt and "static" in use:
            sel_s = self._select(self.brain_lookup, token_ids, mask, cfg.static_inattn, bptt)
        if inatt and "planted" in use:
            sel_p = self._select(
                lambda x: branch.l2r.matrix(x).transpose(1, 2), planted, mask, cfg.diff_inattn, bptt
            )
        enc = branch.encoder
        masks = enc.draw_masks(b)
        if inatt and "learned" in use and cfg.learned_inattn is not None:
            with torch.no_grad():
                st = enc.initial_state(b, enc.embedding.weight)
                keep: tuple[Tensor, Tensor] | None = None
                for start in range(0, t_all, bptt):
                    h, st = enc.forward_segment(token_ids[:, start : start + bptt], st, masks)
                    s = torch.einsum("btd,cd->bct", h, branch.queries).masked_fill(
                        ~mask[:, None, start : start + bptt], _NEG
                    )
                    keep = select_topk(s, keep, cfg.learned_inattn, start)
                assert keep is not None
                sel_a = _Selection(keep[1], torch.isfinite(keep[0]), keep[0])

        n_seg = max(1, math.ceil(t_all / bptt))
        seg_of_row = torch.clamp((lengths + bptt - 1) // bptt, min=1)
        window_start = (seg_of_row - cfg.grad_segments).clamp(min=0)
        if not (torch.is_grad_enabled() and cfg.stateful):
            window_start = torch.zeros_like(window_start)
        first_grad = int(window_start.min())
        acc_a, acc_p = _OnlineSoftmax(), _OnlineSoftmax()
        ctx_s: Tensor | None = None
        # Evidence ([B, C, T], grows with the note) only where it is read: inference with attention on.
        keep_evidence = self.attention_enabled and not self.training
        ev_a: list[tuple[Tensor, Tensor]] = []
        ev_p: list[tuple[Tensor, Tensor]] = []
        ev_s: list[Tensor] = []
        state = enc.initial_state(b, enc.embedding.weight)
        w_p = None
        if sel_p is not None:
            # The kept tokens' L2R scores, with gradient to the L2R parameters.
            labels = torch.arange(self.n_labels, device=token_ids.device)[None, :, None].expand_as(
                sel_p.positions
            )
            tok = planted.gather(1, sel_p.positions.clamp(min=0).reshape(b, -1)).view_as(sel_p.positions)
            w_p = branch.l2r.pairs(tok, labels).float().masked_fill(~sel_p.valid, _NEG)
        for j in range(n_seg):
            start = j * bptt
            seg = token_ids[:, start : start + bptt]
            seg_mask = mask[:, start : start + bptt]
            t = seg.shape[1]
            grad = torch.is_grad_enabled() and j >= first_grad
            if grad and j > 0:
                rows = window_start == j
                if bool(rows.any()):
                    state = _detach_state_rows(state, rows)
                    acc_a.detach_rows(rows)
                    acc_p.detach_rows(rows)
                    if ctx_s is not None:
                        ctx_s = torch.where(rows[:, None, None], ctx_s.detach(), ctx_s)
            with torch.set_grad_enabled(grad):
                h, state = enc.forward_segment(seg, state, masks)
                real = seg_mask[:, None, :].expand(b, self.n_labels, t)
                if "learned" in use:
                    s_a = torch.einsum("btd,cd->bct", h, branch.queries)
                    k_a = (
                        real if sel_a is None else real & segment_mask(sel_a.positions, sel_a.valid, start, t)
                    )
                    acc_a.add(s_a, k_a, h)
                    if keep_evidence:
                        ev_a.append((s_a.detach(), k_a))
                if "planted" in use:
                    if sel_p is not None:
                        assert w_p is not None
                        k_p = real & segment_mask(sel_p.positions, sel_p.valid, start, t)
                        s_p = _scatter_segment(w_p, sel_p.positions, start, t)
                    else:
                        k_p = real
                        s_p = branch.l2r.matrix(planted[:, start : start + bptt]).transpose(1, 2)
                    acc_p.add(s_p, k_p, h)
                    if keep_evidence:
                        ev_p.append((s_p.detach(), k_p))
                if "static" in use:
                    if sel_s is not None:
                        w_s = _scatter_segment(
                            sel_s.values.masked_fill(~sel_s.valid, 0.0), sel_s.positions, start, t
                        )
                        w_s = w_s.masked_fill(~segment_mask(sel_s.positions, sel_s.valid, start, t), 0.0)
                    else:
                        w_s = self.brain_lookup(seg).masked_fill(~real, 0.0)
                    part = torch.bmm(w_s.to(h.dtype), h)
                    ctx_s = part if ctx_s is None else ctx_s + part
                    if keep_evidence:
                        ev_s.append(w_s)
        context: Tensor | None = None
        for present, value in (
            ("learned" in use, acc_a.context() if "learned" in use else None),
            ("planted" in use, acc_p.context() if "planted" in use else None),
            ("static" in use, ctx_s),
        ):
            if present and value is not None:
                context = value if context is None else context + value
        assert context is not None
        logits = branch.output(context)
        evidence = None
        if keep_evidence:
            parts: list[Tensor] = []
            if ev_a:
                parts.append(
                    acc_a.weights(torch.cat([s for s, _ in ev_a], 2), torch.cat([k for _, k in ev_a], 2))
                )
            if ev_p:
                parts.append(
                    acc_p.weights(torch.cat([s for s, _ in ev_p], 2), torch.cat([k for _, k in ev_p], 2))
                )
            if ev_s:
                w = torch.cat(ev_s, 2)
                parts.append(w / w.sum(2, keepdim=True).clamp_min(1e-30))
            evidence = torch.stack(parts).mean(0) * mask[:, None, :]
        return logits, evidence

    def forward(self, batch: Batch) -> ModelOutput:
        ids, mask, lengths = batch.token_ids, batch.mask, batch.lengths
        lengths = mask.sum(1)
        outs: list[Tensor] = []
        evid: list[Tensor] = []
        for i, branch in enumerate(self.branches):
            assert isinstance(branch, PlantBranch)
            if i == 0:
                lg, ev = self._read(branch, ids, mask, lengths)
            else:  # the backward LM's branch reads every note reversed
                lg, ev = self._read(branch, reverse_rows(ids, lengths), mask, lengths)
                if ev is not None:
                    ev = reverse_rows(ev.transpose(1, 2), lengths).transpose(1, 2)
            outs.append(lg)
            if ev is not None:
                evid.append(ev)
        if len(outs) == 1:
            logits = outs[0]
        else:  # logit of the mean probability, computed stably
            stacked = torch.stack(outs)
            log_p = torch.logsumexp(F.logsigmoid(stacked), 0)
            log_q = torch.logsumexp(F.logsigmoid(-stacked), 0)
            logits = log_p - log_q
        attention = torch.stack(evid).mean(0) if evid else None
        return ModelOutput(logits=logits, attention=attention, extras={"branch_logits": outs})

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """One BCE per reading direction: the branches are fine-tuned independently, as in the seed."""
        assert batch.targets is not None
        outs = output.extras["branch_logits"]
        names = ["bce", "bce_backward"]
        return {names[i]: F.binary_cross_entropy_with_logits(lg, batch.targets) for i, lg in enumerate(outs)}

    # -- discriminative learning rates and gradual unfreezing ------------------------------------------------
    def optimizer_groups(self) -> list[tuple[str, list[nn.Parameter], float]]:
        """(name, parameters, learning-rate multiplier) from the top of the network down."""
        cfg = self.cfg
        top: list[nn.Parameter] = []
        l2r: list[nn.Parameter] = []
        layers: list[list[nn.Parameter]] = [[] for _ in range(cfg.n_layers + 1)]  # embedding, LSTM 1..n
        for branch in self.branches:
            assert isinstance(branch, PlantBranch)
            top += [branch.queries, *branch.output.parameters()]
            l2r += list(branch.l2r.parameters())
            for i, group in enumerate(branch.encoder.layer_groups()):
                layers[i] += group
        groups: list[tuple[str, list[nn.Parameter], float]] = [("decoder", top, 1.0)]
        groups.append(("l2r", l2r, cfg.l2r_lr_mult if cfg.discriminative else 1.0))
        for depth, i in enumerate(range(cfg.n_layers, -1, -1), start=1):
            mult = 1.0 / cfg.lr_decay**depth if cfg.discriminative else 1.0
            groups.append(("embedding" if i == 0 else f"lstm{i}", layers[i], mult))
        return groups

    def set_training_progress(self, step: int, total_steps: int, epoch: int) -> None:
        stage = epoch // self.cfg.unfreeze_every if self.cfg.gradual_unfreezing else 10**9
        if stage == self._stage:
            return
        self._stage = stage
        for i, (_, params, _) in enumerate(self.optimizer_groups()):
            for p in params:
                p.requires_grad_(i <= stage)

    # -- fitting the priors before training ---------------------------------------------------------
    def fit_priors(self, corpus: TrainingCorpus) -> dict[str, Any]:
        """MI brain → L2R (LambdaRank) → LM pre-training (cached), in place; returns their costs."""
        cfg = self.cfg
        train_token_ids, train_targets, seed = corpus.train_token_ids, corpus.train_targets, corpus.seed
        summary: dict[str, Any] = {}
        if not {"static", "planted"} & set(cfg.sources):  # A only: no brain, no L2R to fit
            summary.update(self._fit_lm(corpus))
            return summary
        t0 = time.perf_counter()
        brain = compute_brain(
            train_token_ids,
            train_targets,
            self.vocab_size,
            self.n_labels,
            kind=cfg.brain,
            top_tokens=cfg.brain_top_tokens,
            label_chunk=cfg.brain_label_chunk,
            ignore_tokens=(self.pad_id, 1),  # padding and <unk>
        )
        with torch.no_grad():
            self.brain_ids.copy_(torch.from_numpy(brain.token_ids))
            self.brain_values.copy_(torch.from_numpy(np.maximum(brain.values, 0.0)))
        summary["mi_seconds"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        l2r_cfg = L2RTrainConfig(
            epochs=cfg.l2r_epochs,
            list_size=cfg.l2r_list_size,
            label_batch=cfg.l2r_label_batch,
            lr=cfg.l2r_lr,
            weight_decay=cfg.l2r_weight_decay,
            k=cfg.l2r_k,
            seed=seed,
        )
        first = self.branches[0]
        assert isinstance(first, PlantBranch)
        history = train_l2r(first.l2r, brain, self.vocab_size, l2r_cfg) if cfg.l2r_epochs else []
        for branch in self.branches[1:]:
            assert isinstance(branch, PlantBranch)
            branch.l2r.load_state_dict(first.l2r.state_dict())
        summary["l2r_seconds"] = round(time.perf_counter() - t0, 3)
        summary["l2r_ndcg"] = [round(x, 4) for x in history[:: max(1, len(history) // 10)]] + history[-1:]
        summary.update(self._fit_lm(corpus))
        return summary

    def _fit_lm(self, corpus: TrainingCorpus) -> dict[str, Any]:
        """Pre-train (or read from the cache) the LM of each reading direction and load its encoder."""
        cfg = self.cfg
        summary: dict[str, Any] = {}
        train_token_ids, seed = corpus.train_token_ids, corpus.seed
        if cfg.lm_pretrain:
            texts = list(train_token_ids) + list(corpus.extra_token_ids)
            lm_cfg = LMTrainConfig(
                epochs=cfg.lm_epochs,
                bptt=cfg.lm_bptt,
                batch_size=cfg.lm_batch_size,
                lr=cfg.lm_lr,
                seed=seed,
                max_tokens=cfg.lm_max_tokens,
            )
            arch = _awd(cfg, _LM_DROPS, 1.0)
            for i, branch in enumerate(self.branches):
                assert isinstance(branch, PlantBranch)
                lm, meta = cached_language_model(
                    corpus.vocab_words,
                    texts,
                    arch,
                    lm_cfg,
                    backward=i == 1,
                    pad_id=self.pad_id,
                    cache_dir=corpus.cache_dir,
                )
                branch.encoder.load_state_dict(lm.encoder.state_dict())
                with torch.no_grad():
                    branch.lm_bias.copy_(lm.decoder_bias)
                summary["lm_backward" if i else "lm_forward"] = {
                    "fingerprint": meta["fingerprint"],
                    "seconds": round(float(meta["seconds"]), 3),
                    "history": meta["history"],
                }
        return summary


def _scatter_segment(values: Tensor, positions: Tensor, start: int, t: int) -> Tensor:
    """Values at selected positions [B, C, k] → a dense [B, C, t] over the segment, 0 elsewhere (the caller
    masks the positions that were not selected)."""
    local = positions - start
    inside = (local >= 0) & (local < t)
    local = torch.where(inside, local, torch.full_like(local, t))  # t = a spill column, dropped
    out = values.new_zeros(*values.shape[:2], t + 1)
    out = out.scatter(2, local, torch.where(inside, values, torch.zeros_like(values)))
    return out[:, :, :t]

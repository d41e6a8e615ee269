"""MSAM (Gomes, Coutinho & Martins, EACL 2024, "Accurate and Well-Calibrated ICD Code Assignment Through
Attention Over Diverse Label Embeddings"), following the authors' code (gecgomes/ICD_Coding_MSAM,
`Scripts/Helpers/model_helpers.py`; SEED_NOTES §4.4).

Synonym matrix Q [C, M, d_q]: each code's M synonyms (maximally diverse, `diverse_synonyms.py`, or random as
the seed's baseline) encoded ONCE when the model is built and never trained (a buffer saved with the
weights, so a loaded model does not recompute it): with a Hugging Face encoder, the pretrained encoder's
[CLS] state (as the authors did with GatorTron); with the CPU encoders, the mean of the model's own initial
word vectors of the synonym's tokens. q̄_c = mean over the M synonyms.

MultiSynonymsAttention, heads = M, d_k = d/M (the authors' `MultiSynonymsAttention` +
`SynonymsScaledDotProductAttention`):
    queries   Q_s = W_Q q            [C, M synonyms, M heads, d_k]
    keys      K   = tanh(W_K H)      [T, heads, d_k]
    values    V   = tanh(H) split into heads (no projection)
    α_{c,h,s,·} = softmax_t(K_{t,h} · Q_s{c,s,h})      one softmax per (code, head, synonym)
    context_c   = concat_h mean_s Σ_t α_{c,h,s,t} V_{t,h}
    logit_c     = ⟨context_c, W_V q̄_c⟩                 no bias (`bias: none`, the faithful default)
and the logits are max-pooled over the chunks of a note. The mean over synonyms commutes with the weighted
sum, so the code averages the weights first (ᾱ = mean_s α) and never builds a [.., M, d] context; the
attention runs one code chunk at a time (checkpointed in training) so the [B, heads, K, M, T] scores of one
chunk are the largest tensor. The softmax is the shared `masked_softmax`, as in MSMN (whose multi-synonym
attention differs: projected-key heads, full-width values, max over heads, biaffine scoring).

Deviation (a fix, as in PLM-ICD): the authors' attention has no mask, so padding and [CLS]/[SEP] get weight;
here only the note's tokens are attended, which also makes the weights usable as evidence.

On small data a code scored without a bias starts at σ(0) = 0.5 and has to learn the prior through W_V
(MSMN's diagnosis in docs/results/msmn.md): `bias: prior` adds a per-code bias initialised at the
log-odds of the code's training prevalence.

Encoders (`encoder`):
- `hf` (CE, the seed's best): any local Hugging Face encoder folder (`pretrained`), notes cut into windows of
  `window` = 510 subwords every `stride` = 255, each window wrapped in [CLS] … [SEP]; the windows of all notes
  of the batch are encoded together and each note's logits are max-pooled over its windows. The
  Longformer variant (LE) is not built.
- `lstm` / `cnn` (CPU): word embeddings (word2vec when configured) → BiLSTM / one convolution; the note is
  one chunk. These make MSAM trainable on CPU at CodiEsp scale.

| setting (authors' code)      | value                                                         |
|------------------------------|---------------------------------------------------------------|
| encoder                      | GatorTron-base (hidden 1024), CE 510/255 windows              |
| synonyms M = heads           | 4 (clean); 2/4/8 (top-50), MDP or random                     |
| training                     | lr 2e-5, linear, AdamW, batch 1 × grad-accum 16, patience 5  |
| selection                    | val micro-F1 at 0.5 (CLQ: lowest mean per-code ECE)           |
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from icdcoder.errors import ConfigError
from icdcoder.models.attention import masked_softmax
from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.encoders import BiLSTMEncoder, ConvEncoder, WordEmbedding
from icdcoder.models.init import prior_log_odds
from icdcoder.models.msmn import synonym_token_rows
from icdcoder.models.plm_icd import PLMICDConfig, _build_encoder, _pretrained_dir, to_hf_ids
from icdcoder.models.quantifier import MLPQuantifier, QuantificationMemory
from icdcoder.text.batching import segment_bounds
from icdcoder.text.vocab import PAD_ID

log = logging.getLogger(__name__)


class MSAMConfig(ModelConfig):
    # Defaults: the authors' CE_MSAM on MIMIC-III-clean (M = 4, MDP), with the encoder left to the user.
    encoder: Literal["hf", "lstm", "cnn"] = "hf"
    pretrained: str = ""  # encoder "hf": a local Hugging Face model folder
    window: int = Field(510, ge=4)  # subwords per window, [CLS]/[SEP] excluded
    stride: int = Field(255, ge=1)
    encoder_batch: int = Field(16, ge=1)  # windows per encoder call (memory)
    synonym_max_tokens: int = Field(30, ge=1)  # the pipeline cuts code texts at 30 tokens
    gradient_checkpointing: bool = False
    # CPU encoders
    embed_dim: int = Field(100, ge=1)
    freeze_embeddings: bool = False
    embed_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    rnn_dim: int = Field(256, ge=2)  # BiLSTM output size (rnn_dim // 2 per direction) = d
    num_layers: int = Field(1, ge=1)
    lstm_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    num_filters: int = Field(256, ge=1)  # encoder "cnn": d
    kernel_size: int = Field(10, ge=1)
    # synonyms
    synonyms: int = Field(4, ge=1)  # M = heads
    synonym_selection: Literal["mdp", "random", "ranked"] = "mdp"
    synonym_source: str = "ontology"  # or a JSON/TSV synonym file (ontology.label_synonyms)
    synonym_policy: Literal["repeat", "drop", "fail"] = "repeat"  # seed: repeat until ≥ M
    synonym_seed: int = 0
    mdp_method: Literal["auto", "exact", "greedy_swap"] = "auto"
    mdp_time_limit: float = Field(10.0, gt=0)  # seconds per code for the exact solver
    mdp_exact_max: int = Field(30, ge=2)  # more candidates than this: greedy + swap
    mdp_max_candidates: int = Field(200, ge=2)  # the authors' cap
    mdp_encoder: str = ""  # a local sentence-encoder folder for the MDP embeddings (else the model's own)
    # scoring
    bias: Literal["none", "prior"] = "none"
    label_chunk_size: int = Field(128, ge=1)  # codes per attention chunk (memory vs. speed)
    # CLQ, joint classification + quantification (models/quantifier.py): BCE + λ·Huber_δ(MLP(running PCC),
    # running true prevalence) over random-size groups of consecutive training notes
    clq: bool = False
    clq_lambda: float = Field(100.0, ge=0.0)
    clq_delta: float = Field(0.5, gt=0.0)
    clq_hidden: int = Field(32, ge=1)  # the MLP's h (authors: 32 top-50, 3072 clean)
    clq_group_min: int = Field(1, ge=1)
    clq_group_max: int = Field(0, ge=0)  # 0: the number of training notes (the authors' N_train)
    clq_init: str = ""  # a trained MSAM model directory to start from (the authors' CLQ does)
    clq_mlp_init: str = ""  # a quantifier.safetensors (`icdcoder quantify --fit-mlp`) to start the MLP from


# -- the attention -------------------------------------------------------------------------------------------
def synonym_attention_chunk(
    keys: Tensor, values: Tensor, mask: Tensor, queries: Tensor
) -> tuple[Tensor, Tensor]:
    """One code chunk. keys/values [B, T, H, d_k], mask [B, T], queries [K, S, H, d_k] →
    context [B, K, H·d_k] and the synonym-averaged weights ᾱ [B, H, K, T]."""
    scores = torch.einsum("bthk,cshk->bhcst", keys, queries)
    alpha = masked_softmax(scores, mask[:, None, None, None, :], dim=-1).mean(dim=3)  # mean over synonyms
    context = torch.einsum("bhct,bthk->bchk", alpha.to(values.dtype), values)
    return context.flatten(2), alpha


def multi_synonym_attention(
    keys: Tensor, values: Tensor, mask: Tensor, queries: Tensor, chunk: int, want_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """All codes, `chunk` at a time: context [B, C, d] and (when wanted) weights [B, C, T] (mean over heads
    of ᾱ, the evidence). In training each chunk is checkpointed: only its context is kept."""
    contexts, weights = [], []
    for i in range(0, queries.shape[0], chunk):
        q = queries[i : i + chunk]
        if torch.is_grad_enabled() and not want_weights:
            ctx_i = checkpoint(
                lambda k, v, m, qq: synonym_attention_chunk(k, v, m, qq)[0],
                keys,
                values,
                mask,
                q,
                use_reentrant=False,
            )
        else:
            ctx_i, alpha = synonym_attention_chunk(keys, values, mask, q)
            if want_weights:
                weights.append(alpha.mean(dim=1))
        contexts.append(ctx_i)
    return torch.cat(contexts, dim=1), torch.cat(weights, dim=1) if want_weights else None


# -- the model -----------------------------------------------------------------------------------------------
@register_model("msam")
class MSAM(IcdModel):
    Config: ClassVar[type[ModelConfig]] = MSAMConfig
    synonym_matrix: Tensor

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, MSAMConfig)
        self.cfg = config
        m = config.synonyms
        rows = ctx.label_synonym_token_ids
        if len(rows) != ctx.n_labels or any(len(r) != m for r in rows):
            raise ConfigError(
                f"MSAM needs {m} tokenised synonyms per code in the model context, got {len(rows)} codes "
                f"with {sorted({len(r) for r in rows})} synonyms.",
                fix="train through `icdcoder train` (extend_context adds them); a model directory must keep "
                "its context.json.",
            )
        if config.stride > config.window:
            raise ConfigError("model.stride exceeds model.window (text would be skipped).")
        if config.encoder == "hf":
            if "hf_config" not in ctx.extras or "hf_special" not in ctx.extras:
                raise ConfigError(
                    "MSAM with encoder hf needs the pretrained model's architecture in its context."
                )
            self.special = {k: int(v) for k, v in ctx.extras["hf_special"].items()}
            self.encoder = _build_encoder(ctx, self._plm_config())
            d = int(getattr(self.encoder, "config").hidden_size)  # noqa: B009 (a Hugging Face PreTrainedModel)
            d_q = d
        else:
            self.embed = WordEmbedding.from_context(
                ctx, config.embed_dim, dropout=config.embed_dropout, freeze=config.freeze_embeddings
            )
            text: BiLSTMEncoder | ConvEncoder
            if config.encoder == "lstm":
                text = BiLSTMEncoder(
                    config.embed_dim, config.rnn_dim // 2, config.num_layers, config.lstm_dropout
                )
            else:
                text = ConvEncoder(config.embed_dim, config.num_filters, config.kernel_size)
            self.text = text
            d, d_q = text.output_dim, config.embed_dim
        if d % m:
            raise ConfigError(
                f"the encoder's hidden size {d} is not divisible by model.synonyms {m} (a head per synonym).",
                fix="choose synonyms that divide the hidden size (rnn_dim / num_filters for CPU encoders).",
            )
        self.dim, self.heads, self.d_k = d, m, d // m
        self.w_q = nn.Linear(d_q, d)
        self.w_k = nn.Linear(d, d)
        self.w_v = nn.Linear(d_q, d)
        self.bias: nn.Parameter | None = None
        if config.bias == "prior":
            if ctx.init_from_pretrained and not (ctx.label_train_counts and ctx.n_train_docs):
                raise ConfigError(
                    "model.bias: prior needs the training label counts in the model context.",
                    fix="train through `icdcoder train`, or use model.bias: none.",
                )
            # at load time (no counts) the saved bias replaces the zeros
            self.bias = nn.Parameter(
                prior_log_odds(ctx.label_train_counts, ctx.n_train_docs)
                if ctx.label_train_counts
                else torch.zeros(ctx.n_labels)
            )
        self.register_buffer("synonym_matrix", torch.zeros(ctx.n_labels, m, d_q))
        if config.encoder != "hf" or ctx.init_from_pretrained:
            # encoded once, frozen; at load time the saved buffer replaces it
            with torch.no_grad():
                self.synonym_matrix.copy_(self._encode_synonyms(rows))
        self.quantifier: MLPQuantifier | None = None
        self.memory: QuantificationMemory | None = None
        self._epoch = -1
        if config.clq:
            self.quantifier = MLPQuantifier(ctx.n_labels, config.clq_hidden)
            top = config.clq_group_max or max(ctx.n_train_docs, config.clq_group_min)
            self.memory = QuantificationMemory(
                ctx.n_labels, config.clq_group_min, max(top, config.clq_group_min)
            )
            if ctx.init_from_pretrained:
                self._clq_initialise(ctx)

    def _plm_config(self) -> PLMICDConfig:
        c = self.cfg
        return PLMICDConfig(
            name="plm_icd",
            pretrained=c.pretrained,
            chunk_size=c.window,
            chunk_special_tokens=True,
            gradient_checkpointing=c.gradient_checkpointing,
        )

    # -- synonyms ------------------------------------------------------------------------------------------
    def _encode_synonyms(self, rows: list[list[list[int]]]) -> Tensor:
        """[C, M, d_q]: [CLS] of the pretrained encoder, or the mean initial word vector. Absent slots
        (`synonym_policy: drop`) stay zero vectors; the authors always had M synonyms (short lists were
        repeated), hence `repeat` is the default."""
        flat = [ids[: self.cfg.synonym_max_tokens] for r in rows for ids in r]
        out = torch.zeros(len(flat), self.w_q.in_features)
        present = [i for i, ids in enumerate(flat) if ids]
        was_training = self.training
        self.eval()
        for start in range(0, len(present), 64):
            idx = present[start : start + 64]
            width = max(len(flat[i]) for i in idx)
            ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(flat[i])] = torch.tensor(flat[i])
            mask = ids != PAD_ID
            if self.cfg.encoder == "hf":
                hf, att = self._wrap(to_hf_ids(ids, self.special), mask)
                out[idx] = self.encoder(input_ids=hf, attention_mask=att).last_hidden_state[:, 0].float()
            else:
                vec = self.embed.embedding(ids) * mask[..., None]
                out[idx] = vec.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        self.train(was_training)
        return out.view(len(rows), self.cfg.synonyms, -1)

    def _wrap(self, hf_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[CLS] ids [SEP] (the SEP right after the last real token; padding after it)."""
        n, t = hf_ids.shape
        lengths = mask.sum(1)
        ids = torch.full((n, t + 2), self.special["pad"], dtype=torch.long, device=hf_ids.device)
        ids[:, 0] = self.special["cls"]
        ids[:, 1 : t + 1] = torch.where(mask, hf_ids, self.special["pad"])
        ids[torch.arange(n, device=ids.device), lengths + 1] = self.special["sep"]
        att = torch.arange(t + 2, device=ids.device)[None, :] < (lengths + 2)[:, None]
        return ids, att.long()

    # -- encoders ------------------------------------------------------------------------------------------
    def _windows(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int, int]]]:
        """Hidden states [W, L, d] and mask [W, L] of every chunk of the batch, the note of each chunk [W],
        and (note, start, end) token bounds per chunk."""
        if self.cfg.encoder != "hf":
            h = self.text(self.embed(batch.token_ids, batch.mask), batch.mask)
            n = batch.token_ids.shape[0]
            owner = torch.arange(n, device=h.device)
            return h, batch.mask, owner, [(i, 0, batch.token_ids.shape[1]) for i in range(n)]
        lengths = batch.mask.sum(1).tolist()
        bounds = [
            (i, a, b)
            for i, n in enumerate(lengths)
            for a, b in (segment_bounds(int(n), self.cfg.window, self.cfg.stride) or [(0, 0)])
        ]
        width = max(1, max(b - a for _, a, b in bounds))
        ids = torch.full((len(bounds), width), PAD_ID, dtype=torch.long, device=batch.token_ids.device)
        for w, (i, a, b) in enumerate(bounds):
            ids[w, : b - a] = batch.token_ids[i, a:b]
        mask = (
            torch.arange(width, device=ids.device)[None, :]
            < torch.tensor([b - a for _, a, b in bounds], device=ids.device)[:, None]
        )
        hf, att = self._wrap(to_hf_ids(ids, self.special), mask)
        states = []
        for s in range(0, len(bounds), self.cfg.encoder_batch):
            out = self.encoder(
                input_ids=hf[s : s + self.cfg.encoder_batch],
                attention_mask=att[s : s + self.cfg.encoder_batch],
            ).last_hidden_state
            states.append(out[:, 1 : width + 1])  # drop [CLS]; [SEP] and padding are masked
        owner = torch.tensor([i for i, _, _ in bounds], device=ids.device)
        return torch.cat(states), mask, owner, bounds

    # -- forward -------------------------------------------------------------------------------------------
    def code_vectors(self) -> tuple[Tensor, Tensor]:
        """Queries Q_s [C, M synonyms, M heads, d_k] and output vectors W_V q̄_c [C, d]."""
        q = self.synonym_matrix
        queries = self.w_q(q).view(q.shape[0], q.shape[1], self.heads, self.d_k)
        return queries, self.w_v(q.mean(dim=1))

    def forward(self, batch: Batch) -> ModelOutput:
        h, mask, owner, bounds = self._windows(batch)
        queries, out_vec = self.code_vectors()
        keys = torch.tanh(self.w_k(h)).unflatten(-1, (self.heads, self.d_k))
        values = torch.tanh(h).unflatten(-1, (self.heads, self.d_k))
        want = not self.training and self.attention_enabled
        context, weights = multi_synonym_attention(
            keys, values, mask, queries, self.cfg.label_chunk_size, want_weights=want
        )
        chunk_logits = torch.einsum("wcd,cd->wc", context, out_vec)
        b = batch.token_ids.shape[0]
        logits = chunk_logits.new_full((b, chunk_logits.shape[1]), float("-inf"))
        logits = logits.scatter_reduce(0, owner[:, None].expand_as(chunk_logits), chunk_logits, "amax")
        if self.bias is not None:
            logits = logits + self.bias
        attention = None
        if weights is not None:  # evidence: no gradient
            weights = weights.detach()
            attention = weights.new_zeros(b, weights.shape[1], batch.token_ids.shape[1])
            for w, (i, a, e) in enumerate(bounds):  # overlapping windows: the larger weight per token
                span = attention[i, :, a:e]
                torch.maximum(span, weights[w, :, : e - a], out=span)
        return ModelOutput(logits=logits, attention=attention)

    # -- CLQ -----------------------------------------------------------------------------------------------
    def _clq_initialise(self, ctx: ModelContext) -> None:
        """Start from a trained MSAM (same label space) and a separately trained MLP, as the authors did."""
        from safetensors.torch import load_file

        if self.cfg.clq_init:
            src = Path(self.cfg.clq_init).expanduser()
            labels = src / "labels.json"
            if not (src / "model.safetensors").is_file() or not labels.is_file():
                raise ConfigError("model.clq_init is not a model directory.", path=src)
            if _label_keys(labels) != list(ctx.label_keys):
                raise ConfigError(
                    "model.clq_init was trained on another label space.",
                    path=src,
                    fix="train the MSAM to start from on the same dataset and label settings.",
                )
            state = {
                k: v
                for k, v in load_file(src / "model.safetensors").items()
                if not k.startswith("quantifier.")
            }
            try:
                missing, unexpected = self.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # tensor sizes differ (another M, encoder width, ...)
                raise ConfigError(
                    f"model.clq_init holds another architecture ({str(exc).splitlines()[-1].strip()}).",
                    path=src,
                    fix="use the model settings the MSAM to start from was trained with.",
                ) from None
            if unexpected or any(not k.startswith("quantifier.") for k in missing):
                raise ConfigError(
                    "model.clq_init holds another architecture.",
                    path=src,
                    fix=f"use the same model settings (differences: {sorted(missing + unexpected)[:5]}).",
                )
        if self.cfg.clq_mlp_init and self.quantifier is not None:
            path = Path(self.cfg.clq_mlp_init).expanduser()
            if not path.is_file():
                raise ConfigError("model.clq_mlp_init: quantifier weights not found.", path=path)
            self.quantifier.load_state_dict(load_file(path))

    def set_training_progress(self, step: int, total_steps: int, epoch: int) -> None:
        if self.memory is not None and epoch != self._epoch:  # epoch boundary: a fresh group
            self._epoch = epoch
            self.memory.reset()

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        terms = super().losses(batch, output)
        if self.training and self.quantifier is not None and self.memory is not None:
            assert batch.targets is not None
            pcc, prevalence = self.memory.step(torch.sigmoid(output.logits), batch.targets)
            huber = nn.functional.huber_loss(self.quantifier(pcc), prevalence, delta=self.cfg.clq_delta)
            terms["quant"] = self.cfg.clq_lambda * huber
        return terms

    # -- context -------------------------------------------------------------------------------------------
    @classmethod
    def pretrained_tokenizer_dir(cls, config: ModelConfig) -> str | None:
        assert isinstance(config, MSAMConfig)
        return str(_pretrained_dir(_as_plm(config))) if config.encoder == "hf" else None

    @classmethod
    def extend_context(
        cls,
        config: ModelConfig,
        ctx: ModelContext,
        label_titles: list[str],
        encode_text: Callable[[str], list[int]],
    ) -> None:
        from icdcoder.ontology.label_synonyms import build_label_synonyms

        assert isinstance(config, MSAMConfig)
        if config.encoder == "hf":
            import json

            from icdcoder.text.hf_tokenizer import HFTokenizer

            path = _pretrained_dir(_as_plm(config))
            ctx.extras["hf_config"] = json.loads((path / "config.json").read_text(encoding="utf-8"))
            ctx.extras["hf_special"] = HFTokenizer.from_pretrained(path).special
        user = None if config.synonym_source == "ontology" else config.synonym_source
        if config.synonym_selection == "mdp":
            from icdcoder.io import cache_root
            from icdcoder.models.diverse_synonyms import diverse_label_synonyms, summarise

            embed, embedder_id = _mdp_embedder(config, ctx, encode_text)
            syn, record = diverse_label_synonyms(
                ctx.label_keys,
                config.synonyms,
                embed,
                embedder_id=embedder_id,
                titles=label_titles,
                user_file=user,
                policy=config.synonym_policy,
                method=config.mdp_method,
                exact_max=config.mdp_exact_max,
                time_limit=config.mdp_time_limit,
                max_candidates=config.mdp_max_candidates,
                cache_dir=cache_root() / "mdp",
            )
            codes = record["codes"]
            ctx.extras["mdp"] = {
                "summary": summarise(record),
                "provenance": record["provenance"],
                "solver": [codes[k]["solver"] for k in ctx.label_keys],
                "objective": [codes[k]["objective"] for k in ctx.label_keys],
                "optimal": [codes[k]["optimal"] for k in ctx.label_keys],
            }
            log.info("MDP synonyms: %s", ctx.extras["mdp"]["summary"])
        else:
            syn = build_label_synonyms(
                ctx.label_keys,
                config.synonyms,
                titles=label_titles,
                user_file=user,
                policy=config.synonym_policy,
                selection=config.synonym_selection,
                seed=config.synonym_seed,
            )
        ctx.label_synonym_token_ids = synonym_token_rows(syn.texts, ctx, encode_text)
        ctx.extras["label_synonyms"] = syn.to_json()


def _label_keys(path: Path) -> list[str]:
    """The label keys of a model directory's labels.json (read directly: models sit below modeldir)."""
    import json

    try:
        return [str(c["key"]) for c in json.loads(path.read_text(encoding="utf-8"))["codes"]]
    except (ValueError, KeyError, TypeError):
        raise ConfigError("unreadable labels.json.", path=path) from None


def _as_plm(config: MSAMConfig) -> PLMICDConfig:
    return PLMICDConfig(name="plm_icd", pretrained=config.pretrained)


def _mdp_embedder(
    config: MSAMConfig, ctx: ModelContext, encode_text: Callable[[str], list[int]]
) -> tuple[Callable[[list[str]], np.ndarray], str]:
    """The embedding the MDP measures diversity in, and its identity for the cache key: a local sentence
    encoder folder (`mdp_encoder`, mean-pooled), else the model's own encoder ([CLS] of the pretrained
    folder, as the authors did with GatorTron), else the mean of the initial word vectors (word2vec)."""
    folder = config.mdp_encoder or (config.pretrained if config.encoder == "hf" else "")
    if folder:
        path = _pretrained_dir(PLMICDConfig(name="plm_icd", pretrained=folder))
        pooling = "mean" if config.mdp_encoder else "cls"
        digest = hashlib.sha256()
        for f in sorted(path.glob("*.safetensors")):
            digest.update(f.name.encode())
            digest.update(str(f.stat().st_size).encode())
        digest.update((path / "config.json").read_bytes())
        return _hf_text_embedder(path, pooling), f"hf:{path.name}:{pooling}:{digest.hexdigest()[:16]}"
    if ctx.embeddings is None:
        raise ConfigError(
            "model.synonym_selection: mdp needs embeddings to measure diversity, and this run has none.",
            fix="turn on embeddings.word2vec, set model.mdp_encoder to a local sentence-encoder folder, or "
            "use model.synonym_selection: random.",
        )
    emb = np.asarray(ctx.embeddings, dtype=np.float32)
    ident = "word-vectors:" + hashlib.sha256(emb.tobytes()).hexdigest()[:16]

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), emb.shape[1]), dtype=np.float64)
        for i, t in enumerate(texts):
            ids = [j for j in encode_text(t) if 0 < j < emb.shape[0]]
            if ids:
                out[i] = emb[ids].mean(0)
        return out

    return embed, ident


def _hf_text_embedder(path: Path, pooling: str) -> Callable[[list[str]], np.ndarray]:
    from transformers import AutoModel

    from icdcoder.text.hf_tokenizer import HFTokenizer

    tok = HFTokenizer.from_pretrained(path)
    vocab = tok.vocab()
    model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()
    special = tok.special
    limit = int(getattr(model.config, "max_position_embeddings", 512)) - 2

    def subwords(text: str) -> list[int]:
        ids = torch.tensor(vocab.encode(tok.words(text))[:limit], dtype=torch.long)
        return [int(i) for i in to_hf_ids(ids, special)]

    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for s in range(0, len(texts), 64):
                seqs = [subwords(t) for t in texts[s : s + 64]]
                width = max(1, max(len(q) for q in seqs)) + 2
                ids = torch.full((len(seqs), width), special["pad"], dtype=torch.long)
                att = torch.zeros(len(seqs), width, dtype=torch.long)
                for i, q in enumerate(seqs):
                    ids[i, : len(q) + 2] = torch.tensor([special["cls"], *q, special["sep"]])
                    att[i, : len(q) + 2] = 1
                h = model(input_ids=ids, attention_mask=att).last_hidden_state
                if pooling == "cls":
                    rows.append(h[:, 0])
                else:
                    rows.append((h * att[..., None]).sum(1) / att.sum(1, keepdim=True))
        return torch.cat(rows).double().numpy() if rows else np.zeros((0, 1))

    return embed

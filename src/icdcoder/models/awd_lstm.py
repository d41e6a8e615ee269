"""AWD-LSTM (Merity et al. 2017) as ULMFiT uses it: PLANT's encoder, pre-trained here as a language model.

Encoder: word embedding with *embedding dropout* (a word is dropped everywhere in the batch), variational
*input dropout* on the embeddings, `n_layers` LSTMs whose hidden-to-hidden matrices are *weight-dropped*
(DropConnect, one mask per forward pass), variational *hidden dropout* between layers; the last layer returns
`emb_dim` units so the LM decoder can tie its weights to the embedding (fastai's AWD_LSTM). Every dropout mask
is drawn once per forward pass (`draw_masks`) and reused for every segment of a note, so a note read in
segments sees exactly the network it would see read at once.

The LM (`AWDLanguageModel`) adds the tied decoder. `pretrain_language_model` trains it on token streams with
truncated BPTT and carried state (forward, or backward over reversed text); `cached_language_model` keeps the
result under the cache with a fingerprint of the corpus and every setting, like text/word2vec.py: a
reusable artefact, never downloaded weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icdcoder.io import atomic_output_dir, cache_root

log = logging.getLogger(__name__)

LM_CACHE_VERSION = 1
State = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class AWDConfig:
    """Sizes and dropouts. Defaults: the seed's (emb 400, 3 layers of 1152), fastai's AWD_LSTM dropouts."""

    emb_dim: int = 400
    hidden: int = 1152
    n_layers: int = 3
    embed_p: float = 0.02
    input_p: float = 0.25
    hidden_p: float = 0.15
    weight_p: float = 0.2
    output_p: float = 0.1  # LM decoder only


@dataclass
class DropMasks:
    """The dropout masks of one forward pass (None = no dropout)."""

    word: Tensor | None  # [V] 0/scale per vocabulary row
    inp: Tensor | None  # [B, 1, emb]
    hidden: list[Tensor | None] = field(default_factory=list)  # between layers, [B, 1, size]
    weights_hh: list[Tensor] = field(default_factory=list)  # the weight-dropped hh matrix of each layer


def _bernoulli_scaled(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


class AWDLSTM(nn.Module):
    def __init__(self, vocab_size: int, cfg: AWDConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=pad_id)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[pad_id].zero_()
        sizes = [cfg.emb_dim] + [cfg.hidden] * (cfg.n_layers - 1) + [cfg.emb_dim]
        self.layers = nn.ModuleList(
            nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(cfg.n_layers)
        )
        self.output_dim = cfg.emb_dim

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the input up: embedding, then each LSTM layer (discriminative rates)."""
        return [list(self.embedding.parameters())] + [list(layer.parameters()) for layer in self.layers]

    def draw_masks(self, batch_size: int) -> DropMasks:
        c = self.cfg
        w = self.embedding.weight
        train = self.training
        masks = DropMasks(
            word=_bernoulli_scaled((w.shape[0],), c.embed_p, w) if train and c.embed_p > 0 else None,
            inp=_bernoulli_scaled((batch_size, 1, c.emb_dim), c.input_p, w)
            if train and c.input_p > 0
            else None,
        )
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.LSTM)
            hh = layer.weight_hh_l0
            assert isinstance(hh, Tensor)
            masks.weights_hh.append(F.dropout(hh, c.weight_p, training=train) if c.weight_p > 0 else hh)
            if i < len(self.layers) - 1:
                drop = train and c.hidden_p > 0
                masks.hidden.append(
                    _bernoulli_scaled((batch_size, 1, layer.hidden_size), c.hidden_p, w) if drop else None
                )
        return masks

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        out: State = []
        for layer in self.layers:
            assert isinstance(layer, nn.LSTM)
            z = like.new_zeros(1, batch_size, layer.hidden_size)
            out.append((z, z))
        return out

    def embed(self, token_ids: Tensor, masks: DropMasks) -> Tensor:
        x = self.embedding(token_ids)
        if masks.word is not None:
            x = x * masks.word[token_ids].unsqueeze(-1)
        if masks.inp is not None:
            x = x * masks.inp
        return x

    def forward_segment(self, token_ids: Tensor, state: State, masks: DropMasks) -> tuple[Tensor, State]:
        """token_ids [B, t] → last-layer outputs [B, t, emb_dim] and the state after the segment."""
        x = self.embed(token_ids, masks)
        new_state: State = []
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.LSTM)
            params = {"weight_hh_l0": masks.weights_hh[i]}
            x, (h, c) = torch.func.functional_call(layer, params, (x, state[i]))
            new_state.append((h, c))
            if i < len(masks.hidden) and masks.hidden[i] is not None:
                x = x * masks.hidden[i]
        return x, new_state

    def forward(self, token_ids: Tensor) -> Tensor:
        masks = self.draw_masks(token_ids.shape[0])
        out, _ = self.forward_segment(
            token_ids, self.initial_state(token_ids.shape[0], self.embedding.weight), masks
        )
        return out


class AWDLanguageModel(nn.Module):
    """AWD-LSTM + decoder tied to the embedding (next-token prediction)."""

    def __init__(self, vocab_size: int, cfg: AWDConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.encoder = AWDLSTM(vocab_size, cfg, pad_id)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        self.output_p = cfg.output_p

    def logits(self, hidden: Tensor) -> Tensor:
        h = F.dropout(hidden, self.output_p, training=self.training)
        return F.linear(h, self.encoder.embedding.weight, self.decoder_bias)


@dataclass(frozen=True)
class LMTrainConfig:
    epochs: int = 2
    bptt: int = 70  # fastai's LM default (the seed fine-tunes with 80)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 0.4
    seed: int = 0
    max_tokens: int | None = None  # cap on the corpus (CPU budgets), from its start


def lm_streams(docs: Sequence[np.ndarray], backward: bool, batch_size: int, max_tokens: int | None) -> Tensor:
    """Concatenate documents (each reversed, and in reverse order, for the backward LM) and cut the stream
    into `batch_size` parallel rows [batch_size, L]."""
    seq = [np.asarray(d, dtype=np.int64) for d in docs if len(d)]
    if backward:
        seq = [d[::-1] for d in seq[::-1]]
    stream = np.concatenate(seq) if seq else np.zeros(0, dtype=np.int64)
    if max_tokens is not None:
        stream = stream[:max_tokens]
    n = len(stream) // batch_size
    if n < 2:
        raise ValueError("the LM corpus is too small for its batch size")
    return torch.from_numpy(np.ascontiguousarray(stream[: n * batch_size].reshape(batch_size, n)))


def pretrain_language_model(
    lm: AWDLanguageModel, docs: Sequence[np.ndarray], cfg: LMTrainConfig, *, backward: bool = False
) -> list[dict[str, float]]:
    """Train `lm` in place by truncated BPTT with carried state; one record per epoch (train perplexity)."""
    torch.manual_seed(cfg.seed)
    data = lm_streams(docs, backward, cfg.batch_size, cfg.max_tokens)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    n_chunks = math.ceil((data.shape[1] - 1) / cfg.bptt)
    total = max(1, cfg.epochs * n_chunks)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    history: list[dict[str, float]] = []
    lm.train()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        enc = lm.encoder
        state = enc.initial_state(cfg.batch_size, enc.embedding.weight)
        loss_sum, n_tok = 0.0, 0
        for start in range(0, data.shape[1] - 1, cfg.bptt):
            x = data[:, start : start + cfg.bptt]
            y = data[:, start + 1 : start + 1 + cfg.bptt]
            x = x[:, : y.shape[1]]
            masks = enc.draw_masks(cfg.batch_size)
            out, state = enc.forward_segment(x, state, masks)
            state = [(h.detach(), c.detach()) for h, c in state]
            loss = F.cross_entropy(lm.logits(out).reshape(-1, lm.decoder_bias.shape[0]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(lm.parameters(), cfg.clip)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * y.numel()
            n_tok += y.numel()
        rec = {
            "epoch": epoch + 1,
            "ppl": math.exp(loss_sum / max(n_tok, 1)),
            "seconds": time.perf_counter() - t0,
        }
        log.info("LM %s epoch %d: train perplexity %.1f", "bwd" if backward else "fwd", epoch + 1, rec["ppl"])
        history.append(rec)
    lm.eval()
    return history


def _corpus_digest(docs: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for d in docs:
        arr = np.asarray(d, dtype=np.int64)
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


def cached_language_model(
    vocab_words: Sequence[str],
    docs: Sequence[np.ndarray],
    arch: AWDConfig,
    train: LMTrainConfig,
    *,
    backward: bool,
    pad_id: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[AWDLanguageModel, dict[str, Any]]:
    """The pre-trained LM for this vocabulary, corpus and settings: trained once, then read from the cache.

    Returns the model and its metadata (fingerprint, settings, training history, seconds)."""
    from safetensors.torch import load_file, save_file

    settings = {
        "format_version": LM_CACHE_VERSION,
        "vocab_sha256": hashlib.sha256("\n".join(vocab_words).encode("utf-8")).hexdigest(),
        "corpus_sha256": _corpus_digest(docs),
        "n_docs": len(docs),
        "arch": asdict(arch),
        "train": asdict(train),
        "backward": backward,
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:32]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "awd_lm"
    entry = root / key
    lm = AWDLanguageModel(len(vocab_words), arch, pad_id)
    meta_path, weights_path = entry / "meta.json", entry / "weights.safetensors"
    if meta_path.exists() and weights_path.exists():
        try:
            lm.load_state_dict(load_file(str(weights_path)))
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            log.info("AWD-LSTM LM: cache hit %s", entry)
            lm.eval()
            return lm, meta
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("LM cache entry %s is damaged (%s); retraining", entry, exc)
    t0 = time.perf_counter()
    history = pretrain_language_model(lm, docs, train, backward=backward)
    meta = {"fingerprint": key, "settings": settings, "history": history, "seconds": time.perf_counter() - t0}
    with atomic_output_dir(entry, overwrite=True) as tmp:
        save_file(
            {k: v.detach().contiguous() for k, v in lm.state_dict().items()}, str(tmp / "weights.safetensors")
        )
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return lm, meta

"""PLM-ICD (Huang, Tsai & Chen, ClinicalNLP 2022): a pretrained transformer read in chunks, then LAAT label
attention. The reference for icdcoder's pluggable Hugging Face encoder: any local model folder that
`transformers.AutoModel` can build (BERT, RoBERTa, Longformer, ...; `model.pretrained`) becomes the encoder.

- Text: the pretrained model's own subword tokenizer (text/hf_tokenizer.py), truncated to
  `data.max_tokens` subwords (PLM-ICD: 3072).
- Segment-pooling: the note is padded to a multiple of `chunk_size` (128) and cut into chunks; each chunk is
  encoded independently (with its own [CLS] … [SEP] when `chunk_special_tokens`, as the original PLM-ICD
  collator does; Edin et al.'s reproduction adds none), and the token states are concatenated back into one
  sequence. Chunks made only of padding are not encoded at all.
- Head (MiuLab `modeling_roberta.py`): first_linear d→d without bias, tanh, second_linear d→C giving one query
  per code, softmax over the note's tokens, then third_linear weight ⊙ context summed plus a bias — the shared
  `LabelAttention(mode="laat", proj_dim=d)` and `LabelwiseLinear`.
- The released code commented out the attention mask, so padding tokens get attention weight; that quirk is
  `attend_to_padding: true` (default false: masked, as intended).
- Published training set-up (the trainer owns these; configs copy them): AdamW lr 5e-5, linear schedule with
  2,000 warm-up steps, 20 epochs, batch 1 × gradient accumulation 8, max length 3,072, chunk 128.

Weights: at training time the encoder loads the local folder's weights (safetensors only: pickled
`pytorch_model.bin` files are never loaded); the architecture (its config.json) and special-token ids are kept
in the model directory's context, so a saved model is rebuilt without the original folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, IcdModel, ModelConfig, ModelContext, ModelOutput, register_model
from icdcoder.models.init import InformedInitConfig, apply_informed_init, extend_with_synonyms
from icdcoder.models.laat import _laat_head
from icdcoder.text.batching import reshape_chunks
from icdcoder.text.hf_tokenizer import HF_ID_OFFSET, HFTokenizer
from icdcoder.text.vocab import PAD_ID


class PLMICDConfig(InformedInitConfig):
    pretrained: str = ""  # a local Hugging Face model folder (config.json, *.safetensors, tokenizer.json)
    chunk_size: int = Field(128, ge=4)
    chunk_special_tokens: bool = True  # [CLS] … [SEP] around every chunk (original PLM-ICD)
    attend_to_padding: bool = False  # the released code's unmasked attention (quirk; see module doc)
    attention_layer_norm: bool = False
    gradient_checkpointing: bool = False  # trade compute for activation memory in the encoder


def _pretrained_dir(config: PLMICDConfig) -> Path:
    if not config.pretrained:
        raise ConfigError(
            "model.pretrained is not set.",
            fix="pass --set model.pretrained=DIR, a local Hugging Face model folder (nothing is downloaded).",
        )
    path = Path(config.pretrained).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            "model.pretrained is not a Hugging Face model folder (no config.json).",
            path=path,
            fix="point at a folder written by save_pretrained (config.json, weights, tokenizer.json).",
        )
    return path


def _build_encoder(ctx: ModelContext, config: PLMICDConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    arch = dict(ctx.extras["hf_config"])
    model_type = arch.pop("model_type")
    if ctx.init_from_pretrained:
        path = _pretrained_dir(config)
        if not any(path.glob("*.safetensors")):
            raise ConfigError(
                "the pretrained folder has no .safetensors weights (pickled .bin files are never loaded).",
                path=path,
                fix="convert it once with model.save_pretrained(DIR, safe_serialization=True).",
            )
        encoder = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    else:  # loading a model directory: the architecture only; its own weights follow
        encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **arch))
    if getattr(encoder, "pooler", None) is not None:
        # PLM-ICD reads token states only; an unused pooler would break DDP (parameters without gradients)
        encoder.pooler = None
    limit = getattr(encoder.config, "max_position_embeddings", None)
    needed = config.chunk_size + (2 if config.chunk_special_tokens else 0)
    if isinstance(limit, int) and needed > limit:
        raise ConfigError(
            f"model.chunk_size {config.chunk_size} (+ [CLS]/[SEP]) exceeds the encoder's {limit} positions.",
            fix=f"set model.chunk_size to at most {limit - needed + config.chunk_size}.",
        )
    if config.gradient_checkpointing:
        encoder.gradient_checkpointing_enable()
    return encoder


def to_hf_ids(ids: Tensor, special: dict[str, int]) -> Tensor:
    """icdcoder ids → the encoder's ids (offset by the two icdcoder specials; pad and unk mapped)."""
    mapped = torch.where(ids == PAD_ID, special["pad"], special["unk"])
    return torch.where(ids >= HF_ID_OFFSET, ids - HF_ID_OFFSET, mapped)


@register_model("plm_icd")
class PLMICD(IcdModel):
    Config: ClassVar[type[ModelConfig]] = PLMICDConfig

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, PLMICDConfig)
        self.cfg = config
        if "hf_config" not in ctx.extras or "hf_special" not in ctx.extras:
            raise ConfigError("PLM-ICD needs the pretrained model's architecture in its context.")
        self.special = {k: int(v) for k, v in ctx.extras["hf_special"].items()}
        self.encoder = _build_encoder(ctx, config)
        self.dim = int(getattr(self.encoder, "config").hidden_size)  # noqa: B009 (a Hugging Face PreTrainedModel)
        self.attention, self.output = _laat_head(
            self.dim, ctx.n_labels, self.dim, config.attention_layer_norm
        )
        # Informed initialisation (issue 17): the code texts are encoded by the pretrained encoder itself.
        apply_informed_init(
            self,
            config,
            ctx,
            bias=self.output.bias,
            attention=self.attention,
            output_weight=self.output.weight,
            encode=self.encode,
        )

    @classmethod
    def pretrained_tokenizer_dir(cls, config: ModelConfig) -> str | None:
        assert isinstance(config, PLMICDConfig)
        return str(_pretrained_dir(config))

    @classmethod
    def extend_context(
        cls, config: ModelConfig, ctx: ModelContext, label_titles: list[str], encode_text: Any
    ) -> None:
        assert isinstance(config, PLMICDConfig)
        path = _pretrained_dir(config)
        ctx.extras["hf_config"] = json.loads((path / "config.json").read_text(encoding="utf-8"))
        ctx.extras["hf_special"] = HFTokenizer.from_pretrained(path).special
        extend_with_synonyms(config, ctx, label_titles, encode_text)  # for `code_init: description`

    def _to_hf(self, ids: Tensor) -> Tensor:
        return to_hf_ids(ids, self.special)

    def encode(self, batch: Batch) -> Tensor:
        """Token states [B, T, d], each chunk encoded on its own; all-padding chunks are skipped (zeros)."""
        size = self.cfg.chunk_size
        b, t = batch.token_ids.shape
        ids, mask = reshape_chunks(batch.token_ids, batch.mask, size, PAD_ID)
        ids, mask = ids.reshape(-1, size), mask.reshape(-1, size)
        live = mask.any(1)
        if not bool(live.any()):  # only empty notes: nothing to encode
            return batch.token_ids.new_zeros((b, t, self.dim), dtype=torch.float32)
        hf, att = self._to_hf(ids[live]), mask[live].long()
        if self.cfg.chunk_special_tokens:
            edge = torch.ones_like(hf[:, :1])
            hf = torch.cat([edge * self.special["cls"], hf, edge * self.special["sep"]], dim=1)
            att = torch.cat([edge, att, edge], dim=1)
        out = self.encoder(input_ids=hf, attention_mask=att).last_hidden_state
        if self.cfg.chunk_special_tokens:
            out = out[:, 1:-1]
        states = out.new_zeros(ids.shape[0], size, out.shape[-1])
        states[live] = out
        return states.reshape(b, -1, out.shape[-1])[:, :t]

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.encode(batch)
        context, weights = self.attention(h, None if self.cfg.attend_to_padding else batch.mask)
        return ModelOutput(logits=self.output(context), attention=weights)

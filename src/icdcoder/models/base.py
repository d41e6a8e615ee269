"""The model contract every icdcoder model follows, and the registry that maps names to classes.

    forward(batch)          -> ModelOutput(logits [B, C], attention [B, C, T] | None, extras)
    losses(batch, output)   -> {"bce": ..., "rdrop": ..., ...}   named terms; the trainer sums and logs them

A model is built from its typed config and a ModelContext (label space, vocabulary size, pre-trained
embeddings, tokenised code descriptions). The context is rebuilt from the model directory at load time, so a
model must only use it for shapes and initial values: everything learned lives in parameters or buffers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from icdcoder.data.document import Document
from icdcoder.errors import ConfigError


class ModelConfig(BaseModel):
    """Base of every model's hyperparameters. Unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str


@dataclass
class ModelContext:
    """What a model needs to know about its data at construction time."""

    label_keys: list[str]  # `system:code`, the output order of the logits
    vocab_size: int
    pad_id: int = 0
    embeddings: np.ndarray | None = None  # [vocab_size, dim] pre-trained word vectors (row 0 = pad)
    label_token_ids: list[list[int]] = field(default_factory=list)  # tokenised long title per code
    label_synonym_token_ids: list[list[list[int]]] = field(default_factory=list)  # per code, M synonyms
    token_doc_freq: list[int] = field(default_factory=list)  # training document frequency per vocab id
    n_train_docs: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, model-specific inputs
    # Composite models (the hybrid): their source models, already built, by name. The model directory loads
    # them from its sources/<name>/ subdirectories (models/ cannot import modeldir). Not saved here.
    sources: dict[str, Any] = field(default_factory=dict)
    # Training notes per code (label order), for initial values only (the output bias at the prior's
    # log-odds, models/init.py). Not saved: a loaded model's weights replace whatever it initialised.
    label_train_counts: list[int] = field(default_factory=list)
    # True only when training builds the model: a pretrained encoder then loads its weights from its local
    # directory; at load time (False) it is built from the saved architecture and the model directory's
    # weights, so the original folder is not needed. Not saved.
    init_from_pretrained: bool = False

    @property
    def n_labels(self) -> int:
        return len(self.label_keys)


@dataclass
class Batch:
    """A padded batch of token ids. `targets` is None at inference time."""

    token_ids: Tensor  # [B, T] long
    mask: Tensor  # [B, T] bool, True for real tokens
    lengths: Tensor  # [B] long
    doc_ids: list[str]
    targets: Tensor | None = None  # [B, C] float 0/1
    # The raw notes of the rows (exactly Document.text), for models that read text (`reads_text`):
    # character offsets of their evidence spans point into these strings.
    texts: list[str] | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            token_ids=self.token_ids.to(device),
            mask=self.mask.to(device),
            lengths=self.lengths.to(device),
            doc_ids=self.doc_ids,
            targets=None if self.targets is None else self.targets.to(device),
            texts=self.texts,
        )


# ModelOutput.extras keys of knowledge models (matcher, mention memory):
SPANS = "spans"  # list over rows of {label index: [(start, end), ...]} character spans into batch.texts[row]
FEATURES = "features"  # list over rows of {label index: {feature name: value}} for a re-ranker


@dataclass
class ModelOutput:
    logits: Tensor  # [B, C]
    attention: Tensor | None = None  # [B, C, T] weights over the input tokens, for evidence
    # Optional side outputs; see SPANS and FEATURES. When SPANS is present the predictor uses those exact
    # spans as the evidence of a code (evidence method "match") instead of attention.
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingCorpus:
    """What `IcdModel.fit_priors` may learn from before gradient training (PLANT: MI table, L2R model,
    pre-trained language model): the encoded training notes, their label indices, unlabelled texts encoded
    with the same vocabulary, the vocabulary itself (for cache fingerprints), the seed and a cache folder."""

    train_token_ids: list[np.ndarray]
    train_targets: list[list[int]]
    extra_token_ids: list[np.ndarray]
    vocab_words: list[str]
    seed: int = 0
    cache_dir: Any = None  # a Path, or None for the default under icdcoder's cache


class IcdModel(nn.Module):
    """Base class: subclasses set `name` and `Config` and implement `forward`."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    # "lbfgs": a convex model the pipeline fits with training/solver.py (full-batch L-BFGS, its
    # regularisation strength chosen on dev) instead of the SGD trainer.
    solver: ClassVar[str | None] = None
    # True: the model reads `Batch.texts` (the raw notes), not only token ids.
    reads_text: ClassVar[bool] = False
    # False: no gradient training. The pipeline calls `fit_corpus` instead of the trainer loop; whatever it
    # fits is saved through parameters/buffers or `state_json`.
    trainable: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.config = config
        self.n_labels = ctx.n_labels
        # False inside `scores_only()`: scoring (dev/test metrics, thresholds) needs logits only, and the
        # [B, C, T] evidence tensor is the largest thing an eval forward builds at ~9,000 codes.
        self.attention_enabled = True

    def has_evidence_rows(self) -> bool:
        """True when `evidence_rows` is implemented (and enabled by the model's config)."""
        return False

    def evidence_rows(self, batch: Batch, row: int, codes: list[int]) -> Tensor | None:
        """Optional: the attention/evidence weights [len(codes), T] of one note of `batch` for the given code
        indices, computed without the full [B, C, T] tensor. Models whose evidence is a by-product of scoring
        (label attention) return None (the default) and the predictor uses `forward`'s attention; a model
        whose evidence is extra work per code (TF-IDF) implements it, so coding a note at ~9,000 codes pays
        for the shown codes only."""
        return None

    @contextlib.contextmanager
    def scores_only(self) -> Iterator[None]:
        """Within this block `forward` may skip the attention/evidence output (returns None for it)."""
        prev, self.attention_enabled = self.attention_enabled, False
        try:
            yield
        finally:
            self.attention_enabled = prev

    @classmethod
    def pretrained_tokenizer_dir(cls, config: ModelConfig) -> str | None:
        """A local Hugging Face model directory whose tokenizer the notes must be read with (pretrained
        encoders), or None for icdcoder's word tokenizer and vocabulary."""
        return None

    @classmethod
    def extend_context(
        cls,
        config: ModelConfig,
        ctx: ModelContext,
        label_titles: list[str],
        encode_text: Callable[[str], list[int]],
    ) -> None:
        """Add model-specific, data-derived inputs to `ctx` before construction at training time (e.g.
        the tokenised synonyms of MSMN). Whatever is added must live in the ModelContext fields (saved to
        the model directory's context.json and restored at load), never be recomputed at load time."""

    @classmethod
    def fit_context(
        cls, config: ModelConfig, ctx: ModelContext, train_token_ids: Sequence[np.ndarray]
    ) -> None:
        """Optional hook: add inputs derived from the training notes' token ids to `ctx` (e.g. the linear
        model's bigram vocabulary), at training time, after `extend_context`. Same rule: whatever is added
        lives in the saved ModelContext fields. Default: nothing."""

    def set_training_progress(self, step: int, total_steps: int, epoch: int) -> None:
        """Optional hook: the trainer calls it before every training micro-batch with the number of optimizer
        steps done so far, the planned total and the 0-based epoch (e.g. for JLAN's truncation-loss
        schedule). Default: ignore."""

    def fit_priors(self, corpus: TrainingCorpus) -> dict[str, Any] | None:
        """Optional hook, called once at training time after construction and before the trainer (not on
        resume): fit data-derived parts from the training split. Whatever it fits must be parameters or
        persistent buffers, so the model directory saves it. Returns a JSON summary for run.json, or None
        (the default: nothing to fit)."""
        return None

    def optimizer_groups(self) -> list[tuple[str, list[nn.Parameter], float]] | None:
        """Optional: named parameter groups with a learning-rate multiplier each (discriminative
        fine-tuning); parameters left out get multiplier 1. None (the default): one learning rate."""
        return None

    def fit_corpus(self, train: list[Document], dev: list[Document], label_keys: list[str]) -> dict[str, Any]:
        """Models with `trainable = False`: learn tables from train and tune a few hyperparameters on dev
        (never on test). Returns a JSON-serialisable summary for the run record."""
        raise NotImplementedError(f"model {self.name!r} is trained by the trainer, not fit_corpus")

    def readable_words(self, text: str) -> int:
        """Models that read text (`reads_text`): how many words of the note they can use, for the
        "respect the note" rule (evaluation/readable.py) in place of the count of vocabulary tokens."""
        return len(text.split())

    def state_json(self) -> dict[str, Any] | None:
        """Fitted state that is not a tensor (tables, tuned hyperparameters), saved by the model directory as
        model_state.json (checksummed) and handed to `load_state_json` at load. None: nothing to save."""
        return None

    def load_state_json(self, state: dict[str, Any]) -> None:
        """Restore what `state_json` returned."""

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """Default: mean binary cross-entropy over all (document, code) entries."""
        assert batch.targets is not None, "losses() needs targets"
        return {"bce": nn.functional.binary_cross_entropy_with_logits(output.logits, batch.targets)}


_REGISTRY: dict[str, type[IcdModel]] = {}
M = TypeVar("M", bound=type[IcdModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make a model constructible by name from configs and model directories."""

    def deco(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin_models() -> None:
    # Importing every module of this package runs their @register_model decorators, so a new model file
    # is picked up without editing a list here.
    import importlib
    import pkgutil

    import icdcoder.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "attention", "encoders"):
            importlib.import_module(f"icdcoder.models.{info.name}")


def model_names() -> list[str]:
    _load_builtin_models()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[IcdModel]:
    _load_builtin_models()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}.", fix=f"use one of: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def build_model(config: dict[str, Any] | ModelConfig, ctx: ModelContext) -> IcdModel:
    """Validate `config` against its model's Config (naming any bad key) and construct the model."""
    raw = config.model_dump() if isinstance(config, ModelConfig) else dict(config)
    cls = get_model_class(str(raw.get("name", "")))
    cfg = validate_model_config(cls, raw)
    return cls(cfg, ctx)


def validate_model_config(cls: type[IcdModel], raw: dict[str, Any]) -> ModelConfig:
    from pydantic import ValidationError

    try:
        return cls.Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(sorted(cls.Config.model_fields))
        raise ConfigError(
            f"model.{key}: {err['msg']} (model {cls.name!r}).", fix=f"allowed model keys: {allowed}."
        ) from None

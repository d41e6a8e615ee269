"""The self-describing model directory (Hugging Face save_pretrained-style): inference needs nothing else.

    config.yaml          resolved experiment config
    labels.json          label space: codes with systems and titles, in logit order (+ fingerprint)
    vocab.json           vocabulary (+ fingerprint)
    tokenizer.json       tokenizer settings
    context.json         construction-time inputs of the model (tokenised code texts, document frequencies)
    model.safetensors    weights (never pickles)
    thresholds.json      decision thresholds tuned on dev (on calibrated probabilities)
    calibration.json     post-hoc probability calibration fitted on dev (absent in older directories:
                         the identity)
    metadata.json        data fingerprint, seed, package versions, dev metrics, and sha256 of every file
    sources/<name>/      composite models only (the hybrid): each source's own model directory, loaded
                         recursively and handed to the model through ModelContext.sources; metadata's
                         `sources` holds the sha256 of each source's metadata.json (which checks its files)

Written atomically. Loading verifies every checksum and that weights, vocabulary and label space agree, and
refuses a corrupted or mismatched directory with an error naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from icdcoder import __version__
from icdcoder.errors import IcdcoderError, ModelDirError
from icdcoder.evaluation.calibration import Calibrator
from icdcoder.io import atomic_output_dir, read_json, write_json
from icdcoder.models.base import IcdModel, ModelContext, build_model
from icdcoder.models.hybrid import SourceModel
from icdcoder.text.tokenizer import TextTokenizer, tokenizer_from_config
from icdcoder.text.vocab import Vocab
from icdcoder.training.config import ExperimentConfig, parse_config
from icdcoder.training.labels import LabelSpace

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FORMAT = "icdcoder-model/1"
MODEL_STATE = "model_state.json"  # IcdModel.state_json(): fitted tables of non-gradient models (matcher)
FILES = (
    "config.yaml",
    "labels.json",
    "vocab.json",
    "tokenizer.json",
    "context.json",
    "model.safetensors",
    "thresholds.json",
)
# Checked when the directory's metadata lists them; directories written before they existed load without.
OPTIONAL_FILES = ("calibration.json", MODEL_STATE)


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every required file and of the optional files that were written."""
    names = (*FILES, *(n for n in OPTIONAL_FILES if (folder / n).is_file()))
    return {name: _sha256(folder / name) for name in names}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    import numpy

    return {
        "icdcoder": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass
class LoadedModel:
    path: Path
    config: ExperimentConfig
    labels: LabelSpace
    vocab: Vocab
    tokenizer: TextTokenizer
    model: IcdModel
    thresholds: dict[str, Any]
    metadata: dict[str, Any]
    calibration: Calibrator = field(default_factory=Calibrator)
    n_train_docs: int = 0  # training notes (context.json): with labels.train_counts, the codes' priors
    warnings: list[str] = field(default_factory=list)  # version mismatches found on loading (logged too)


def _release(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0': a local build tag does not change what the files mean."""
    return version.split("+", 1)[0].strip()


def version_warnings(meta: dict[str, Any], path: Path) -> list[str]:
    """What differs between the packages that wrote a model directory and the installed ones.

    The files load either way (the format is versioned separately and checked); a different icdcoder may
    read a field differently and a different torch may give slightly different scores, so the user is told
    which versions differ rather than left to find out from the predictions."""
    saved = meta.get("versions")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), str) for k in ("icdcoder", "torch")):
        return [
            f"{path / 'metadata.json'}: no record of the icdcoder and torch versions that wrote this model "
            "directory; if its predictions look wrong, retrain it with the installed icdcoder."
        ]
    now = package_versions()
    out = []
    for pkg in ("icdcoder", "torch"):
        if _release(saved[pkg]) != _release(now[pkg]):
            was = saved[pkg][:40]
            out.append(
                f"{path}: written with {pkg} {was}, loaded with {pkg} {now[pkg]}; scores may differ from "
                f"the run's. Install {pkg}=={_release(was)} to reproduce them, or retrain."
            )
    return out


def context_to_json(ctx: ModelContext) -> dict[str, Any]:
    return {
        "vocab_size": ctx.vocab_size,
        "pad_id": ctx.pad_id,
        "label_token_ids": ctx.label_token_ids,
        "label_synonym_token_ids": ctx.label_synonym_token_ids,
        "token_doc_freq": ctx.token_doc_freq,
        "n_train_docs": ctx.n_train_docs,
        "extras": ctx.extras,
    }


def save_model_dir(
    out: str | Path,
    *,
    config: ExperimentConfig,
    labels: LabelSpace,
    vocab: Vocab,
    tokenizer: TextTokenizer,
    model: IcdModel,
    ctx: ModelContext,
    thresholds: dict[str, Any],
    metadata: dict[str, Any],
    calibration: Calibrator | None = None,
    overwrite: bool = False,
    sources: dict[str, Path] | None = None,
) -> Path:
    """Write a model directory. `sources` (composite models): name -> a source's model directory, copied
    into sources/<name>/."""
    import shutil

    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for name, src_dir in (sources or {}).items():
            shutil.copytree(src_dir, tmp / "sources" / name)
        (tmp / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        write_json(tmp / "labels.json", labels.to_json())
        vocab.save(tmp / "vocab.json")
        write_json(tmp / "tokenizer.json", tokenizer.to_config())
        write_json(tmp / "context.json", context_to_json(ctx))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": FORMAT})
        write_json(tmp / "thresholds.json", thresholds)
        write_json(tmp / "calibration.json", (calibration or Calibrator()).to_dict())
        model_state = model.state_json()
        if model_state is not None:
            write_json(tmp / MODEL_STATE, model_state)
        meta = {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model": config.model.get("name"),
            "label_fingerprint": labels.fingerprint,
            "vocab_fingerprint": vocab.fingerprint,
            "versions": package_versions(),
            **metadata,
            "sha256": _checksums(tmp),
        }
        if sources:
            meta["sources"] = {n: _sha256(tmp / "sources" / n / "metadata.json") for n in sources}
        write_json(tmp / "metadata.json", meta)
    return out


def source_model(lm: LoadedModel, name: str, top_k: int = 100) -> SourceModel:
    """A loaded model directory as a source of a composite model: it reads raw notes with its own tokenizer
    and vocabulary and reports its calibrated probabilities."""
    tok, vocab, max_tokens = lm.tokenizer, lm.vocab, lm.config.data.max_tokens

    def encode(text: str) -> list[int]:
        return vocab.encode(tok.words(text)[:max_tokens])

    keys = list(lm.labels.keys)
    return SourceModel(name, lm.model, keys, encode, vocab.pad_id, lm.calibration.apply, top_k)


def _load_sources(path: Path, meta: dict[str, Any], device: str | torch.device) -> dict[str, SourceModel]:
    out: dict[str, SourceModel] = {}
    for name, digest in (meta.get("sources") or {}).items():
        sub = path / "sources" / name
        if not (sub / "metadata.json").is_file() or _sha256(sub / "metadata.json") != digest:
            raise ModelDirError(
                f"source {name!r} is missing or is not the one this model was trained with.",
                path=sub,
                fix="copy the whole model directory again (sources/ included).",
            )
        out[name] = source_model(load_model_dir(sub, device), name)
    return out


def _parse_file(f: Path, parse: Callable[[Path], _T]) -> _T:
    """Parse one file of a model directory; a file whose JSON/YAML parses but holds the wrong shape (a list
    where an object belongs, a missing key) is an error naming that file, not a bare KeyError."""
    try:
        return parse(f)
    except IcdcoderError as exc:
        if exc.path is not None:
            raise
        raise ModelDirError(
            exc.message,
            path=f,
            fix=exc.fix or "restore the model directory from the training run or retrain.",
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, yaml.YAMLError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)[:300]
        raise ModelDirError(
            f"{f.name} does not hold what icdcoder wrote there ({what}).",
            path=f,
            fix="restore the model directory from the training run or retrain.",
        ) from None


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(
            "model directory not found.",
            path=path,
            fix="pass the `model` folder of a training run (RUN_DIR/model).",
        )
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise ModelDirError("not an icdcoder model directory (metadata.json missing).", path=path)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256", {}), dict):
        raise ModelDirError(
            "metadata.json is not an object with a 'sha256' map of the files.",
            path=meta_path,
            fix="restore the model directory from the training run or retrain.",
        )
    if meta.get("format") != FORMAT:
        raise ModelDirError(
            f"unsupported model format {meta.get('format')!r} (expected {FORMAT}).", path=meta_path
        )
    listed = meta.get("sha256", {})
    for name in (*FILES, *(n for n in OPTIONAL_FILES if n in listed)):
        f = path / name
        if not f.is_file():
            raise ModelDirError(f"{name} is missing.", path=path, fix="copy the whole model directory again.")
        if _sha256(f) != listed.get(name):
            raise ModelDirError(
                "file is corrupted or was edited (checksum mismatch).",
                path=f,
                fix="restore the model directory from the training run or retrain.",
            )
    config = _parse_file(
        path / "config.yaml",
        lambda f: parse_config(yaml.safe_load(f.read_text(encoding="utf-8")), source=str(f)),
    )
    labels = _parse_file(path / "labels.json", lambda f: LabelSpace.from_json(read_json(f)))
    vocab = _parse_file(path / "vocab.json", Vocab.load)
    tokenizer = _parse_file(path / "tokenizer.json", lambda f: tokenizer_from_config(read_json(f)))
    cj = _parse_file(path / "context.json", read_json)
    if not isinstance(cj, dict) or not isinstance(cj.get("vocab_size"), int):
        raise ModelDirError(
            "context.json is not an object with an integer 'vocab_size'.",
            path=path / "context.json",
            fix="restore the model directory from the training run or retrain.",
        )
    calibration = (
        _parse_file(path / "calibration.json", lambda f: Calibrator.from_dict(read_json(f), str(f)))
        if "calibration.json" in listed
        else Calibrator()
    )
    if labels.fingerprint != meta.get("label_fingerprint"):
        raise ModelDirError(
            "labels.json does not match the label space the weights were trained on.",
            path=path / "labels.json",
        )
    if vocab.fingerprint != meta.get("vocab_fingerprint") or cj["vocab_size"] != len(vocab):
        raise ModelDirError(
            "vocab.json does not match the vocabulary the weights were trained on.", path=path / "vocab.json"
        )
    try:  # a context.json whose fields parse but have the wrong types is refused, not a traceback
        ctx = ModelContext(
            label_keys=labels.keys,
            vocab_size=int(cj["vocab_size"]),
            pad_id=int(cj.get("pad_id", 0)),
            label_token_ids=cj.get("label_token_ids", []),
            label_synonym_token_ids=cj.get("label_synonym_token_ids", []),
            token_doc_freq=cj.get("token_doc_freq", []),
            n_train_docs=int(cj.get("n_train_docs", 0)),
            extras=dict(cj.get("extras", {})),
            sources=_load_sources(path, meta, device),
        )
        model = build_model(config.model, ctx)
    except IcdcoderError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
        raise ModelDirError(
            f"context.json does not fit the model: {str(exc)[:200]}.",
            path=path / "context.json",
            fix="restore the model directory from the training run or retrain.",
        ) from None
    try:
        state = load_file(path / "model.safetensors")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelDirError(
            f"weights do not fit the model: {str(exc)[:300]}",
            path=path / "model.safetensors",
            fix="the directory mixes files from different runs; retrain or restore it.",
        ) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # NaN weights give NaN probabilities: refuse here rather than code every note wrongly
        raise ModelDirError(
            f"weights hold NaN or infinite values ({', '.join(bad[:3])}).",
            path=path / "model.safetensors",
            fix="the training diverged or the file was damaged; retrain (lower train.lr) or restore it.",
        )
    if MODEL_STATE in listed:
        try:
            model.load_state_json(read_json(path / MODEL_STATE))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelDirError(f"unreadable fitted model state: {exc}.", path=path / MODEL_STATE) from None
    model.to(device).eval()
    found = version_warnings(meta, path)
    for message in found:
        log.warning("warning: %s", message)
    return LoadedModel(
        path=path,
        config=config,
        labels=labels,
        vocab=vocab,
        tokenizer=tokenizer,
        model=model,
        thresholds=read_json(path / "thresholds.json"),
        metadata=meta,
        calibration=calibration,
        n_train_docs=ctx.n_train_docs,
        warnings=found,
    )


def recalibrate_model_dir(
    lm: LoadedModel,
    *,
    calibration: Calibrator,
    thresholds: dict[str, Any],
    record: dict[str, Any],
    out: str | Path | None = None,
) -> Path:
    """Write the loaded model's directory again (or to `out`) with new calibration.json and thresholds.json,
    every other file byte-identical, fresh checksums, and `record` appended to metadata's `recalibrations`.
    `lm` comes from `load_model_dir`, which already refused a corrupted directory. Atomic: an interrupted
    write leaves the original directory as it was."""
    import shutil

    src = lm.path
    meta = dict(lm.metadata)
    dst = Path(out) if out is not None else src
    with atomic_output_dir(dst, overwrite=True) as tmp:
        for name in (*FILES, MODEL_STATE):
            if name != "thresholds.json" and (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        if (src / "sources").is_dir():
            shutil.copytree(src / "sources", tmp / "sources")
        write_json(tmp / "thresholds.json", thresholds)
        write_json(tmp / "calibration.json", calibration.to_dict())
        meta["recalibrations"] = [*meta.get("recalibrations", []), record]
        meta["sha256"] = _checksums(tmp)
        write_json(tmp / "metadata.json", meta)
    return dst

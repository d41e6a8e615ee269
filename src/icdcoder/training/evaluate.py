"""Evaluation glue between models and metrics: threshold tuning on dev, metrics over a split (unseen gold
codes included), the per-document predictions file, and evaluating a saved model directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from icdcoder.errors import DataError
from icdcoder.evaluation.calibration import calibration_metrics
from icdcoder.evaluation.metrics import compute_metrics
from icdcoder.evaluation.readable import code_priors, known_token_counts, respect_the_note
from icdcoder.evaluation.thresholds import Thresholds
from icdcoder.evaluation.thresholds import tune_thresholds as _tune
from icdcoder.training.data import EncodedSplit, target_matrix
from icdcoder.training.labels import LabelSpace

if TYPE_CHECKING:
    from icdcoder.modeldir import LoadedModel


def tune_thresholds(
    probs: np.ndarray,
    split: EncodedSplit,
    labels: LabelSpace,
    kind: str = "global",
    *,
    include_unseen: bool = True,
    has_output: np.ndarray | None = None,
    priors: np.ndarray | None = None,
) -> Thresholds:
    """Tune decision thresholds on this (dev) split's probabilities for the headline micro-F1 (exact sweep):
    unseen gold codes (with `include_unseen`) and the gold of documents without output count as misses.
    With `priors`, the note rule of `evaluation/readable.py` is applied first."""
    if priors is not None:
        probs, has_output = respect_the_note(probs, known_token_counts(split.token_ids), priors)
    y = target_matrix(split, len(labels))
    extra = sum(len(set(u)) for u in split.unseen) if include_unseen else 0
    if has_output is not None and not has_output.all():
        extra += int(y[~has_output].sum())
        probs, y = probs[has_output], y[has_output]
    return _tune(probs, y, labels.keys, kind=kind, extra_gold=extra)  # type: ignore[arg-type]


def evaluate_probs(
    probs: np.ndarray,
    split: EncodedSplit,
    labels: LabelSpace,
    thresholds: Thresholds,
    *,
    include_unseen: bool = True,
    has_output: np.ndarray | None = None,
    priors: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of a split (keys and the headline definition in `evaluation/metrics.py`). With
    `include_unseen`, gold codes outside the label space count as misses (in the MAP denominator, as FNs)
    instead of silently vanishing. `has_output` [N] marks the documents the model gave an output for (the
    others, e.g. notes with nothing it can read, score AP 0 and predict nothing). Calibration metrics
    (`ece`, `mece`, `brier`) describe the probabilities the model gave, so they use the label-space columns
    only. With `priors` (the codes' training frequencies), the note rule of `evaluation/readable.py` decides
    `has_output` and caps near-empty notes at the priors, as the predictor does."""
    if priors is not None:
        probs, has_output = respect_the_note(probs, known_token_counts(split.token_ids), priors)
    y = target_matrix(split, len(labels))
    calibration = calibration_metrics(probs, y)
    metrics = compute_metrics(
        probs,
        y,
        labels.keys,
        threshold=thresholds,
        unseen=split.unseen if include_unseen else None,
        has_output=has_output,
    )
    metrics.update(calibration)
    metrics["threshold"] = float(thresholds.global_threshold)
    metrics["unseen_gold_codes"] = float(sum(len(set(u)) for u in split.unseen))
    return metrics


DENSE_PREDICTIONS_MAX_CODES = 20_000  # above this, predictions files keep each note's top codes only
PREDICTIONS_TOP_K = 1000  # the CodiEsp organisers' ranking depth


def write_predictions(
    path: Path, probs: np.ndarray, split: EncodedSplit, labels: LabelSpace, top_k: int | None = None
) -> None:
    """Per-document probabilities (parquet), so metrics can be recomputed without the model.

    Every code's probability up to DENSE_PREDICTIONS_MAX_CODES codes; for larger label spaces (a whole code
    system, ~74k codes) or when `top_k` is given, each note's `top_k` (default PREDICTIONS_TOP_K) best codes
    as a `top_codes` index list next to their `probs`, so the file stays small."""
    from icdcoder.io import atomic_write

    gold = [[labels.keys[i] for i in t] + u for t, u in zip(split.targets, split.unseen, strict=True)]
    columns: dict[str, pa.Array] = {
        "id": pa.array(split.doc_ids, pa.string()),
        "gold": pa.array(gold, pa.list_(pa.string())),
    }
    if top_k is None and len(labels) > DENSE_PREDICTIONS_MAX_CODES:
        top_k = PREDICTIONS_TOP_K
    if top_k is None:
        columns["probs"] = pa.FixedSizeListArray.from_arrays(
            pa.array(probs.astype(np.float32).ravel()), len(labels)
        )
    else:
        k = min(top_k, len(labels))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        columns["top_codes"] = pa.array(top.astype(np.int32).tolist(), pa.list_(pa.int32()))
        columns["probs"] = pa.array(
            np.take_along_axis(probs, top, axis=1).astype(np.float32).tolist(), pa.list_(pa.float32())
        )
    table = pa.table(columns).replace_schema_metadata({"label_keys": "\n".join(labels.keys)})
    with atomic_write(path, "wb", encoding=None) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_predictions(path: Path) -> tuple[list[str], list[list[str]], np.ndarray, list[str]]:
    """Inverse of write_predictions: (doc ids, gold keys per doc, probs [N, C], label keys). A top-K file
    gives 0 to the codes it left out."""
    table = pq.read_table(path)
    keys = (table.schema.metadata or {}).get(b"label_keys", b"").decode("utf-8").split("\n")
    if "top_codes" in table.column_names:
        probs = np.zeros((table.num_rows, len(keys)), dtype=np.float32)
        for row, (idx, p) in enumerate(
            zip(table.column("top_codes").to_pylist(), table.column("probs").to_pylist(), strict=True)
        ):
            probs[row, idx] = p
    else:
        probs = np.asarray(table.column("probs").combine_chunks().flatten(), dtype=np.float32).reshape(
            -1, len(keys)
        )
    return table.column("id").to_pylist(), table.column("gold").to_pylist(), probs, keys


def model_dir_probs(
    lm: LoadedModel, data_dir: Path, split: str, batch_size: int = 16
) -> tuple[EncodedSplit, np.ndarray]:
    """A split of a prepared dataset encoded for a loaded model directory, and the model's uncalibrated
    probabilities [N, C] on it."""
    import torch

    from icdcoder.data.prepared import PreparedDataset
    from icdcoder.training.data import encode_split
    from icdcoder.training.trainer import predict_probs

    ds = PreparedDataset.open(data_dir)
    if split not in ds.splits:
        raise DataError(f"the dataset has no {split!r} split (it has {', '.join(ds.splits)}).", path=data_dir)
    docs = ds.load(split)
    data_codes = {k for d in docs for k in d.codes}
    overlap = data_codes & set(lm.labels.keys)
    if data_codes and not overlap:
        raise DataError(
            f"none of the {len(data_codes)} codes of this split are in the model's label space "
            f"({', '.join(lm.labels.systems)}).",
            path=data_dir,
            fix="evaluate the model on data of the code systems it was trained on.",
        )
    tok, vocab = lm.tokenizer, lm.vocab
    max_tokens = lm.config.data.max_tokens
    encoded = encode_split(
        docs, [vocab.encode(tok.words(d.text)[:max_tokens]) for d in docs], lm.labels, max_tokens
    )
    return encoded, predict_probs(lm.model, encoded, batch_size, torch.device("cpu"))


def evaluate_model_dir(
    model_dir: Path, data_dir: Path, split: str, predictions: Path | None = None, batch_size: int = 16
) -> dict[str, Any]:
    """Evaluate a saved model on a split of a prepared dataset at its stored calibration and thresholds."""
    from icdcoder.modeldir import load_model_dir

    lm = load_model_dir(model_dir)
    encoded, raw = model_dir_probs(lm, data_dir, split, batch_size)
    priors = code_priors(lm.labels.train_counts, lm.n_train_docs)
    probs, has_output = respect_the_note(
        lm.calibration.apply(raw), known_token_counts(encoded.token_ids), priors
    )
    thresholds = Thresholds.from_dict(lm.thresholds)
    metrics = evaluate_probs(
        probs,
        encoded,
        lm.labels,
        thresholds,
        include_unseen=lm.config.eval.include_unseen_codes,
        has_output=has_output,
    )
    if predictions is not None:
        write_predictions(predictions, probs, encoded, lm.labels)
    return metrics

"""Prevalence of each code in a collection of notes with a model directory (`icdcoder quantify`, the server's
batch endpoint): the estimators of evaluation/quantification.py on the probabilities and decisions the
Predictor gives for every code of every note.

ACC and PACC need the decisions' true/false positive rates on dev. They are measured from a prepared
dataset's dev split (`dev_quant_stats`) and may be kept in the model directory as quantification.json
(`save_quant_stats`), bound to the directory's metadata.json by its sha256: a recalibrated or retrained model
has new metadata, and then the stale statistics are refused rather than silently used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.quantification import (
    METHODS,
    Estimate,
    QuantStats,
    estimate_prevalence,
    fit_quant_stats,
)
from icdcoder.evaluation.thresholds import Thresholds
from icdcoder.inference.predictor import Predictor
from icdcoder.io import read_json, write_json
from icdcoder.modeldir import LoadedModel
from icdcoder.models.quantifier import MLPQuantifier

STATS_FILE = "quantification.json"
QUANTIFIER_FILE = "quantifier.safetensors"  # the MLP quantifier fitted on random dev subsets


def _model_fingerprint(lm: LoadedModel) -> str:
    return hashlib.sha256((lm.path / "metadata.json").read_bytes()).hexdigest()


def dev_quant_stats(lm: LoadedModel, data: Path, split: str = "dev") -> QuantStats:
    """Dev rates of the model's calibrated probabilities and decisions on a prepared dataset's split."""
    stats = fit_quant_stats(*_dev_probs(lm, data, split))
    stats.fit.update({"data": str(data), "split": split})
    return stats


def _dev_probs(lm: LoadedModel, data: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if split == "test":
        raise ModelDirError("quantifiers are fitted on dev, never on test.", fix="use the dev split.")
    return split_matrices(lm, data, split)


def split_matrices(lm: LoadedModel, data: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated probabilities, decisions and targets [N, C] of a prepared dataset's split."""
    from icdcoder.training.data import target_matrix
    from icdcoder.training.evaluate import model_dir_probs

    encoded, raw = model_dir_probs(lm, data, split)
    probs = lm.calibration.apply(raw)
    decisions = Thresholds.from_dict(lm.thresholds).apply(probs, lm.labels.keys)
    return probs, decisions, target_matrix(encoded, len(lm.labels))


def fit_mlp(
    lm: LoadedModel, data: Path, split: str = "dev", **kw: Any
) -> tuple[MLPQuantifier, dict[str, Any]]:
    """The seed's MLP quantifier fitted on random subsets of the split's calibrated probabilities (the
    numbers `quantify` reads), saved in the model directory bound to its metadata like the dev rates."""
    from icdcoder.training.quantifier import save_quantifier, train_mlp_quantifier

    probs, _, targets = _dev_probs(lm, data, split)
    mlp, info = train_mlp_quantifier(probs, targets, **kw)
    info.update({"data": str(data), "split": split, "model_metadata_sha256": _model_fingerprint(lm)})
    save_quantifier(lm.path / QUANTIFIER_FILE, mlp, info)
    return mlp, info


def load_mlp(lm: LoadedModel) -> MLPQuantifier | None:
    """The model directory's MLP quantifier, None when it has none; one fitted for another state of the
    model is an error."""
    from icdcoder.training.quantifier import load_quantifier

    path = lm.path / QUANTIFIER_FILE
    if not path.is_file():
        return None
    mlp, info = load_quantifier(path)
    if info.get("model_metadata_sha256") != _model_fingerprint(lm) or info.get("n_codes") != len(lm.labels):
        raise ModelDirError(
            "the MLP quantifier was fitted for another state of this model (retrained or recalibrated).",
            path=path,
            fix="refit it: icdcoder quantify MODEL_DIR NOTES --data DATA --fit-mlp.",
        )
    return mlp


def mlp_estimator(mlp: MLPQuantifier) -> Callable[[np.ndarray], np.ndarray]:
    def estimate(pcc: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return mlp(torch.as_tensor(pcc, dtype=torch.float32)).double().numpy()

    return estimate


def save_quant_stats(lm: LoadedModel, stats: QuantStats) -> Path:
    path = lm.path / STATS_FILE
    write_json(path, {"model_metadata_sha256": _model_fingerprint(lm), **stats.to_dict()})
    return path


def load_quant_stats(lm: LoadedModel) -> QuantStats | None:
    """The model directory's saved dev rates, None when it has none; stale ones are an error."""
    path = lm.path / STATS_FILE
    if not path.is_file():
        return None
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("model_metadata_sha256") != _model_fingerprint(lm):
        raise ModelDirError(
            "quantification statistics were measured for another state of this model (it was retrained or "
            "recalibrated since).",
            path=path,
            fix="recompute them: icdcoder quantify MODEL_DIR NOTES --data DATA --save-stats.",
        )
    return QuantStats.from_dict(raw, len(lm.labels), str(path))


def collection_matrices(predictor: Predictor, notes: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and decisions [N, C] for every code of every note, as the Predictor reports them (a
    note with nothing the model recognises has no codes: zeros)."""
    index = {k: i for i, k in enumerate(predictor.labels)}
    probs = np.zeros((len(notes), len(index)), dtype=np.float64)
    decisions = np.zeros_like(probs)
    for row, pred in enumerate(predictor.predict(notes, top_k=None, evidence=False)):
        for c in pred.codes:
            probs[row, index[c.key]] = c.probability
            decisions[row, index[c.key]] = float(c.decision)
    return probs, decisions


@dataclass
class PrevalenceReport:
    keys: list[str]
    titles: list[str]
    n_notes: int
    level: float
    estimates: dict[str, Estimate]

    def rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """One dict per code (key, title, and per method value/low/high), highest PCC (else the first
        method) first."""
        first = self.estimates.get("pcc") or next(iter(self.estimates.values()))
        order = np.argsort(-first.value, kind="stable")
        out = []
        for i in order[:top] if top else order:
            row: dict[str, Any] = {"key": self.keys[i], "title": self.titles[i]}
            for m, e in self.estimates.items():
                row[m] = {
                    "value": round(float(e.value[i]), 6),
                    "low": round(float(e.low[i]), 6),
                    "high": round(float(e.high[i]), 6),
                }
            out.append(row)
        return out

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        return {
            "notes": self.n_notes,
            "methods": list(self.estimates),
            "interval": {"level": self.level, "kind": "percentile bootstrap over the notes"},
            "codes": self.rows(top),
        }


def quantify_matrices(
    lm: LoadedModel,
    probs: np.ndarray,
    decisions: np.ndarray,
    stats: QuantStats | None,
    methods: list[str] | None = None,
    *,
    mlp: MLPQuantifier | None = None,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> PrevalenceReport:
    """Each code's estimated prevalence from a collection's probabilities and decisions [N, C]. Without dev
    statistics only CC and PCC can run (the default then)."""
    if methods is None:
        methods = list(METHODS) if stats is not None else ["cc", "pcc"]
    needs = [m for m in methods if m in ("acc", "pacc")]
    if needs and stats is None:
        raise ModelDirError(
            f"{', '.join(needs)} need the model's dev true/false positive rates, and there are none.",
            path=lm.path,
            fix="pass --data DATA (a prepared dataset with a dev split), or use --methods cc,pcc.",
        )
    extra = {"mlp": mlp_estimator(mlp)} if mlp is not None else None
    est = estimate_prevalence(
        probs, decisions, stats, methods, extra=extra, level=level, n_boot=n_boot, seed=seed
    )
    return PrevalenceReport(list(lm.labels.keys), list(lm.labels.titles), probs.shape[0], level, est)


def quantify_notes(
    predictor: Predictor,
    notes: list[tuple[str, str]],
    stats: QuantStats | None,
    methods: list[str] | None = None,
    *,
    mlp: MLPQuantifier | None = None,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> PrevalenceReport:
    """`quantify_matrices` on the notes' probabilities and decisions as the Predictor reports them."""
    probs, decisions = collection_matrices(predictor, notes)
    return quantify_matrices(
        predictor.loaded, probs, decisions, stats, methods, mlp=mlp, level=level, n_boot=n_boot, seed=seed
    )

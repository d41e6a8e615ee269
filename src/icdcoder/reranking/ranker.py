"""The learned re-ranker (LightGBM, binary or lambdarank) and the weighted-sum fuser it is compared with.

The booster is kept and saved in LightGBM's own text model format (`model_to_string`), never pickled.
Training is deterministic for a fixed seed (`deterministic`, one thread, fixed bagging seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from icdcoder.errors import ModelDirError


class RankerParams(BaseModel):
    """LightGBM hyperparameters (chosen on dev by the hybrid's training)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["binary", "lambdarank"] = "binary"
    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    n_estimators: int = Field(300, ge=1)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    bagging_fraction: float = Field(0.9, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    seed: int = 0


class Reranker:
    """A LightGBM booster over the pair features; `score` returns raw scores (log-odds for binary)."""

    def __init__(self, booster: Any, feature_names: list[str]) -> None:
        self.booster = booster
        self.feature_names = feature_names

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        feature_names: list[str],
        categorical: Sequence[str],
        params: RankerParams,
        num_threads: int = 1,
    ) -> Reranker:
        import lightgbm as lgb

        lgb_params: dict[str, Any] = {
            "objective": params.objective,
            "num_leaves": params.num_leaves,
            "learning_rate": params.learning_rate,
            "min_data_in_leaf": params.min_data_in_leaf,
            "feature_fraction": params.feature_fraction,
            "bagging_fraction": params.bagging_fraction,
            "bagging_freq": 1 if params.bagging_fraction < 1 else 0,
            "lambda_l2": params.lambda_l2,
            "seed": params.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": num_threads,
            "verbosity": -1,
        }
        if params.objective == "lambdarank":
            lgb_params["lambdarank_truncation_level"] = 200
        data = lgb.Dataset(
            x,
            label=y.astype(np.float32),
            group=groups if params.objective == "lambdarank" else None,
            feature_name=feature_names,
            categorical_feature=[c for c in categorical if c in feature_names],
            free_raw_data=False,
        )
        booster = lgb.train(lgb_params, data, num_boost_round=params.n_estimators)
        return cls(booster, list(feature_names))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (float64) of feature rows; empty input gives an empty vector."""
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(x, raw_score=True), dtype=np.float64)

    def to_text(self) -> str:
        return str(self.booster.model_to_string())

    @classmethod
    def from_text(cls, text: str, source: str = "ranker") -> Reranker:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ModelDirError(f"not a LightGBM text model: {exc}", path=source) from None
        return cls(booster, list(booster.feature_name()))

    def importance(self) -> dict[str, float]:
        """Total gain per feature (for the docs' error analysis)."""
        gains = self.booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(self.feature_names, gains, strict=True)}


def weighted_sum(x: np.ndarray, feature_names: list[str], weights: dict[str, float]) -> np.ndarray:
    """The ablation baseline: Σ_s w_s · score_s over the sources' score features (missing counts 0)."""
    out = np.zeros(len(x))
    for s, w in weights.items():
        col = feature_names.index(f"{s}.score")
        out += w * np.clip(x[:, col], 0.0, None)
    return out

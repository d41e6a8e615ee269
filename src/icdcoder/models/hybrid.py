"""The hybrid coder: candidates from several source models, re-ranked by a LightGBM model (issue 13).

    notes ─► every source (its own tokenizer/vocabulary, calibration) ─► top-K codes per source
          ─► union of candidates ─► pair features (reranking/features.py) ─► LightGBM score per candidate
          ─► logits [B, C] over the union of the sources' label spaces (non-candidates: LOGIT_FLOOR)

The sources are model directories of their own (`sources/<name>/` inside the hybrid's directory). This
module cannot load them (models/ comes before modeldir.py): the model directory loads each subdirectory
and hands the built `SourceModel`s in through `ModelContext.sources`; training (hybrid_training.py) does
the same with freshly trained ones. What the hybrid itself fits (the feature layout, the code table and
the LightGBM booster in LightGBM's text format) is its `state_json`, saved as model_state.json.

Evidence: exact character spans of the first source (in config order) that has spans for a code
(matcher, mention memory) go to `extras["spans"]`; for the others `evidence_rows` falls back to the
evidence of the source whose tokenizer and vocabulary the hybrid directory shares (TF-IDF's token weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from icdcoder.errors import ConfigError, ModelDirError
from icdcoder.models.base import (
    FEATURES,
    SPANS,
    Batch,
    IcdModel,
    ModelConfig,
    ModelContext,
    ModelOutput,
    register_model,
)
from icdcoder.reranking.candidates import SourceRanking, union_candidates
from icdcoder.reranking.features import CodeTable, FeatureSpec, category, pair_matrix
from icdcoder.reranking.ranker import RankerParams, Reranker

# Codes outside a note's candidates get this logit (σ ≈ 1e-13); candidates' scores are kept above it.
LOGIT_FLOOR = -30.0


class HybridSourceSpec(BaseModel):
    """One source of candidates and features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # folder under sources/ and feature prefix
    config: str | None = None  # an experiment config to train it with (data section taken from the hybrid)
    model_dir: str | None = None  # or a trained model directory to reuse (never retrained)
    set: list[str] = Field(default_factory=list)  # overrides of `config`, section.key=value
    top_k: int = Field(100, ge=1)  # candidates this source contributes per note
    # False for sources that learn nothing from training labels (the matcher): their scores of training
    # notes are out-of-fold by construction, so no fold models are trained for them.
    crossfit: bool = True


class HybridConfig(ModelConfig):
    sources: list[HybridSourceSpec] = Field(min_length=1)
    folds: int = Field(5, ge=2)  # cross-fitting folds over the training notes
    max_candidates: int = Field(200, ge=1)
    # Most frequent training codes used as candidates when every source is empty for a note, so no note is
    # ever left with an empty ranking.
    fallback_prior: int = Field(10, ge=1)
    # Re-ranker hyperparameters tried on dev (each a set of RankerParams fields); the best by dev MAP is kept.
    ranker_grid: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"objective": "binary", "num_leaves": 15, "n_estimators": 300},
            {"objective": "binary", "num_leaves": 31, "n_estimators": 600, "learning_rate": 0.03},
            {"objective": "lambdarank", "num_leaves": 15, "n_estimators": 300},
            {"objective": "lambdarank", "num_leaves": 31, "n_estimators": 600, "learning_rate": 0.03},
        ]
    )
    ranker_threads: int = Field(1, ge=1)
    # Hierarchy expansion: the training-seen codes sharing the 3-character category of each of the first N
    # candidates join the candidates (within max_candidates), for sources that find the right category
    # but a sibling code. 0 = off.
    expand_siblings: int = Field(0, ge=0)


@dataclass
class SourceModel:
    """A built source model and what it needs to read raw notes: its own tokenizer and vocabulary (`encode`),
    its label keys, and its dev-fitted calibration (so fold models and the full model speak the same
    probability scale)."""

    name: str
    model: IcdModel
    label_keys: list[str]
    encode: Callable[[str], list[int]]  # raw note -> token ids (truncated to the source's max_tokens)
    pad_id: int
    calibrate: Callable[[np.ndarray], np.ndarray]
    top_k: int = 100
    # Label index of this source -> index in the hybrid's label space (set by the hybrid).
    to_hybrid: np.ndarray | None = None

    @torch.no_grad()
    def rank(self, texts: Sequence[str], doc_ids: Sequence[str] | None = None) -> list[SourceRanking]:
        """Top-k calibrated probabilities per note, with the source's side features and spans."""
        if not texts:
            return []
        ids = [np.asarray(self.encode(t), dtype=np.int64) for t in texts]
        width = max(1, *(len(i) for i in ids))
        tok = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for r, row in enumerate(ids):
            if len(row):
                tok[r, : len(row)] = torch.from_numpy(row)
                mask[r, : len(row)] = True
        batch = Batch(
            tok,
            mask,
            mask.sum(1).clamp_min(1),
            list(doc_ids) if doc_ids is not None else [str(i) for i in range(len(ids))],
            texts=list(texts),
        )
        model = self.model
        model.eval()
        # Text models return their spans and features from forward; others skip their evidence tensor.
        with nullcontext() if type(model).reads_text else model.scores_only():
            out = model(batch)
        probs = self.calibrate(torch.sigmoid(out.logits.float()).cpu().numpy())
        spans = out.extras.get(SPANS)
        feats = out.extras.get(FEATURES)
        k = min(self.top_k, probs.shape[1])
        result = []
        for r in range(len(texts)):
            row = probs[r]
            # A text model's codes without any match are not candidates (their probability is the floor).
            found = None if spans is None and feats is None else _proposed(spans, feats, r)
            idx = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            if found is not None:
                idx = np.asarray(sorted(found, key=lambda i: -row[i])[:k], dtype=np.int64)
            ranking = SourceRanking({self.label_keys[i]: float(row[i]) for i in idx})
            for i in idx:
                key = self.label_keys[i]
                if feats is not None and int(i) in feats[r]:
                    ranking.features[key] = {n: float(v) for n, v in feats[r][int(i)].items()}
                if spans is not None and int(i) in spans[r]:
                    ranking.spans[key] = [(int(a), int(b)) for a, b in spans[r][int(i)]]
            result.append(ranking)
        return result


def _proposed(spans: Any, feats: Any, row: int) -> set[int]:
    found: set[int] = set()
    if spans is not None:
        found |= {int(i) for i in spans[row]}
    if feats is not None:
        found |= {int(i) for i in feats[row]}
    return found


@register_model("hybrid")
class HybridCoder(IcdModel):
    """Candidates from every source, re-ranked by LightGBM. Not trained by the trainer: see
    icdcoder.hybrid_training (`icdcoder train configs/codiesp-d/hybrid.yaml`)."""

    Config: ClassVar[type[ModelConfig]] = HybridConfig
    reads_text: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, HybridConfig)
        self.cfg = config
        self.label_keys = list(ctx.label_keys)
        self._index = {k: i for i, k in enumerate(self.label_keys)}
        sources: dict[str, SourceModel] = dict(getattr(ctx, "sources", {}) or {})
        names = [s.name for s in config.sources]
        if sorted(sources) != sorted(names):
            raise ModelDirError(
                f"the hybrid needs its sources {names}, got {sorted(sources)}.",
                fix="load it with icdcoder.modeldir.load_model_dir (it loads sources/<name>/).",
            )
        self.sources = [sources[n] for n in names]  # a plain list: their weights live in their own dirs
        for spec, src in zip(config.sources, self.sources, strict=True):
            src.top_k = spec.top_k
            src.to_hybrid = np.asarray([self._index.get(k, -1) for k in src.label_keys], dtype=np.int64)
        self.evidence_source: str | None = ctx.extras.get("evidence_source")
        self.spec = FeatureSpec(names)
        self.codes = CodeTable()
        self.ranker: Reranker | None = None
        self.params: RankerParams | None = None
        # A tensor so the model directory's weights file is never empty; holds the number of sources.
        self.register_buffer("n_sources", torch.tensor([len(names)], dtype=torch.long))

    # ---- fitted state (model_state.json) ----
    def state_json(self) -> dict[str, Any] | None:
        if self.ranker is None:
            return None
        return {
            "feature_spec": self.spec.to_json(),
            "code_table": self.codes.to_json(),
            "ranker_params": None if self.params is None else self.params.model_dump(),
            "ranker_lightgbm_text": self.ranker.to_text(),
        }

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.spec = FeatureSpec.from_json(state["feature_spec"])
        self.codes = CodeTable.from_json(state["code_table"])
        params = state.get("ranker_params")
        self.params = None if params is None else RankerParams.model_validate(params)
        self.ranker = Reranker.from_text(state["ranker_lightgbm_text"], "model_state.json")
        if self.ranker.feature_names != self.spec.names:
            raise ModelDirError("the re-ranker's features do not match the saved feature layout.")

    def set_ranker(self, spec: FeatureSpec, codes: CodeTable, ranker: Reranker, params: RankerParams) -> None:
        self.spec, self.codes, self.ranker, self.params = spec, codes, ranker, params

    def fit_corpus(self, train: list[Any], dev: list[Any], label_keys: list[str]) -> dict[str, Any]:
        raise ConfigError(
            "the hybrid model trains its sources and its re-ranker itself.",
            fix="train it with `icdcoder train configs/<dataset>/hybrid.yaml`.",
        )

    # ---- scoring ----
    def source_rankings(self, texts: Sequence[str], doc_ids: Sequence[str]) -> list[dict[str, SourceRanking]]:
        per_source = {s.name: s.rank(texts, doc_ids) for s in self.sources}
        return [{n: per_source[n][r] for n in per_source} for r in range(len(texts))]

    def candidates(self, per_source: dict[str, SourceRanking]) -> list[str]:
        """The note's candidates (never empty: the most frequent training codes when no source speaks)."""
        cands = [c for c in union_candidates(per_source, self.cfg.max_candidates) if c in self._index]
        if self.cfg.expand_siblings:
            by_category: dict[str, list[str]] = {}
            for c in sorted(self.codes.train_counts, key=lambda c: (-self.codes.train_counts[c], c)):
                if c in self._index:
                    by_category.setdefault(category(c), []).append(c)
            seen = set(cands)
            for c in cands[: self.cfg.expand_siblings]:
                for sib in by_category.get(category(c), []):
                    if len(cands) >= self.cfg.max_candidates:
                        break
                    if sib not in seen:
                        seen.add(sib)
                        cands.append(sib)
        if not cands:
            prior = sorted(self.codes.train_counts, key=lambda c: (-self.codes.train_counts[c], c))
            cands = [c for c in prior if c in self._index][: self.cfg.fallback_prior] or self.label_keys[:1]
        return cands

    def score_rankings(
        self, rankings: Sequence[dict[str, SourceRanking]], note_chars: Sequence[int]
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Candidates and re-ranker raw scores per note."""
        if self.ranker is None:
            raise ModelDirError(
                "the hybrid has no fitted re-ranker.", fix="train it or load a model directory."
            )
        cands = [self.candidates(p) for p in rankings]
        x, groups = pair_matrix(self.spec, cands, list(rankings), self.codes, list(note_chars))
        raw = self.ranker.score(x)
        return cands, np.split(raw, np.cumsum(groups)[:-1])

    def forward(self, batch: Batch) -> ModelOutput:
        if batch.texts is None:
            raise ConfigError("the hybrid model reads raw notes, but the batch has no texts.")
        rankings = self.source_rankings(batch.texts, batch.doc_ids)
        cands, scores = self.score_rankings(rankings, [len(t) for t in batch.texts])
        logits = torch.full((len(batch.texts), len(self.label_keys)), LOGIT_FLOOR)
        spans: list[dict[int, list[tuple[int, int]]]] = []
        for r, (cs, sc) in enumerate(zip(cands, scores, strict=True)):
            idx = torch.as_tensor([self._index[c] for c in cs], dtype=torch.long)
            logits[r, idx] = torch.as_tensor(np.maximum(sc, LOGIT_FLOOR + 5.0), dtype=torch.float32)
            row_spans: dict[int, list[tuple[int, int]]] = {}
            for c in cs:
                for s in self.sources:  # config order: the first source with exact spans wins
                    found = rankings[r][s.name].spans.get(c)
                    if found:
                        row_spans[self._index[c]] = found
                        break
            spans.append(row_spans)
        return ModelOutput(logits=logits.to(batch.token_ids.device), extras={SPANS: spans})

    # ---- fallback evidence (token weights of the source sharing the hybrid's vocabulary) ----
    def _evidence_model(self) -> SourceModel | None:
        for s in self.sources:
            if s.name == self.evidence_source and s.model.has_evidence_rows():
                return s
        return None

    def has_evidence_rows(self) -> bool:
        return self._evidence_model() is not None

    def evidence_rows(self, batch: Batch, row: int, codes: list[int]) -> Tensor | None:
        src = self._evidence_model()
        if src is None:
            return None
        assert src.to_hybrid is not None
        local = {int(h): i for i, h in enumerate(src.to_hybrid) if h >= 0}
        present = [j for j, c in enumerate(codes) if c in local]
        out = torch.zeros(len(codes), batch.token_ids.shape[1])
        if present:
            weights = src.model.evidence_rows(batch, row, [local[codes[j]] for j in present])
            if weights is not None:
                out[present] = weights[:, : out.shape[1]].float().cpu()
        return out

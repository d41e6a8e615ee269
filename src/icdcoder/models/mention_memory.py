"""`mention_memory`: codes from the train split's annotated mentions, found again in new notes.

No gradient training (`trainable = False`): `fit_corpus` learns the mention table from the train documents'
evidence spans (CodiEsp's X file, or the `spans` of a user's JSONL/CSV import), counts each mention's
precision on the train notes and picks the memory's few hyperparameters (mention similarity floor,
longest-match-only, similarity sharpness) by dev MAP; matching/memory.py has the method. Everything
learned is JSON (`state_json`, saved by the model directory as model_state.json).

Scores: a code's noisy-or score s in [0, 1) becomes the logit ln(s / (1 - s)). Codes no mention speaks for
get a floor logit (`floor_logit`) plus `prior_weight` * ln(1 + train notes with the code), so they rank
below every matched code, among themselves by frequency. The spans that fired go into
`ModelOutput.extras["spans"]` (the predictor's "match" evidence) and the per-code features into
`extras["features"]`, both keyed by label index.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from typing import Any, ClassVar

import torch

from icdcoder.data.document import Document
from icdcoder.errors import ConfigError, DataError
from icdcoder.matching.memory import MemoryParams, MentionMemory
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


class MentionMemoryConfig(ModelConfig):
    ngram: int = 3  # character n-grams of the fuzzy word match
    word_sim: float = 0.5  # Dice floor for two words to match
    max_gap: int = 2  # extra words a fuzzy window may hold
    fuzzy: bool = True
    smoothing: float = 1.0  # pseudo-count of the precision prior
    prior: float = 0.5  # precision of a mention never found in train notes
    # Tuned on dev (every combination; notes are matched once at the lowest similarity):
    min_similarity: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    longest_only: tuple[bool, ...] = (True, False)
    gamma: tuple[float, ...] = (1.0, 2.0, 4.0)
    floor_logit: float = -20.0
    prior_weight: float = 0.01


@register_model("mention_memory")
class MentionMemoryModel(IcdModel):
    Config: ClassVar[type[ModelConfig]] = MentionMemoryConfig
    reads_text: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, MentionMemoryConfig)
        if not (config.min_similarity and config.longest_only and config.gamma):
            raise ConfigError(
                "mention_memory needs at least one value in min_similarity, longest_only and gamma.",
                fix="e.g. model.min_similarity: [0.8].",
            )
        self.cfg = config
        self.label_keys = list(ctx.label_keys)
        self.index = {k: i for i, k in enumerate(self.label_keys)}
        self.memory: MentionMemory | None = None
        self.train_notes: dict[str, int] = {}  # code -> train notes carrying it (the tie-break prior)
        self._base = torch.full((self.n_labels,), config.floor_logit)

    def _params(self) -> MemoryParams:
        c = self.cfg
        return MemoryParams(
            ngram=c.ngram,
            word_sim=c.word_sim,
            max_gap=c.max_gap,
            fuzzy=c.fuzzy,
            smoothing=c.smoothing,
            prior=c.prior,
            min_similarity=max(c.min_similarity),
            longest_only=c.longest_only[0],
            gamma=c.gamma[0],
        )

    def _set_prior(self, counts: dict[str, int]) -> None:
        self.train_notes = counts
        base = torch.full((self.n_labels,), self.cfg.floor_logit)
        for code, n in counts.items():
            i = self.index.get(code)
            if i is not None:
                base[i] += self.cfg.prior_weight * math.log1p(n)
        self._base = base

    def fit_corpus(self, train: list[Document], dev: list[Document], label_keys: list[str]) -> dict[str, Any]:
        if list(label_keys) != self.label_keys:
            raise ConfigError("fit_corpus got another label space than the model was built with.")
        pairs = [(ev.text, ev.code) for d in train for ev in d.evidence if ev.code in self.index and ev.text]
        if not pairs:
            raise DataError(
                "the train split has no evidence spans for the model's codes: the mention memory learns its "
                "mentions from them.",
                fix="use CodiEsp (its X spans are kept) or give your JSONL/CSV rows a 'spans' field "
                "(docs/DATA.md).",
            )
        memory = MentionMemory.learn(pairs, self._params())
        grid = memory.tune(
            [(d.text, d.codes) for d in train],
            [(d.text, d.codes) for d in dev],
            min_similarity=self.cfg.min_similarity,
            longest_only=self.cfg.longest_only,
            gamma=self.cfg.gamma,
        )
        self.memory = memory
        self._set_prior(dict(Counter(c for d in train for c in set(d.codes) if c in self.index)))
        best = max(grid, key=lambda g: g["dev_map"]) if grid else {}
        return {
            "mentions": len(memory.mentions),
            "mention_pairs": len(pairs),
            "codes": len(memory.codes()),
            "params": asdict(memory.params),
            "dev_map_memory_only": best.get("dev_map"),
            "grid": grid,
        }

    def state_json(self) -> dict[str, Any] | None:
        if self.memory is None:
            return None
        return {"memory": self.memory.to_json(), "train_notes": dict(sorted(self.train_notes.items()))}

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.memory = MentionMemory.from_json(state["memory"])
        self._set_prior({str(k): int(v) for k, v in state["train_notes"].items()})

    def forward(self, batch: Batch) -> ModelOutput:
        if self.memory is None:
            raise ConfigError(
                "the mention memory has not been fitted.", fix="train it with `icdcoder train`."
            )
        if batch.texts is None:
            raise ConfigError("mention_memory reads raw notes, but the batch carries none (Batch.texts).")
        logits = self._base.to(batch.token_ids.device).repeat(len(batch.texts), 1)
        spans: list[dict[int, list[tuple[int, int]]]] = []
        features: list[dict[int, dict[str, float]]] = []
        for row, text in enumerate(batch.texts):
            row_spans: dict[int, list[tuple[int, int]]] = {}
            row_feats: dict[int, dict[str, float]] = {}
            for code, ev in self.memory.code_text(text).items():
                i = self.index.get(code)
                if i is None or ev.score <= 0.0:
                    continue
                s = min(ev.score, 1.0 - 1e-7)
                logits[row, i] = math.log(s / (1.0 - s))
                row_spans[i] = ev.spans
                row_feats[i] = ev.features()
            spans.append(row_spans)
            features.append(row_feats)
        return ModelOutput(logits=logits, extras={SPANS: spans, FEATURES: features})

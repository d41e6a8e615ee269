"""Predictor: a loaded model directory that codes raw notes and points at the evidence in them.

Evidence comes from the model's attention over tokens: for each predicted code, the highest-weighted tokens
are widened by a small window and merged into character spans of the raw note (the tokenizer keeps offsets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icdcoder.errors import DataError
from icdcoder.modeldir import LoadedModel, load_model_dir
from icdcoder.text.tokenizer import Token
from icdcoder.training.data import EncodedSplit, make_batch


@dataclass
class EvidenceSpan:
    start: int
    end: int
    weight: float


@dataclass
class CodePrediction:
    key: str
    system: str
    code: str
    title: str
    probability: float
    decision: bool
    evidence: list[EvidenceSpan] = field(default_factory=list)


@dataclass
class NotePrediction:
    id: str
    n_tokens: int
    truncated: bool
    codes: list[CodePrediction]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spans_from_attention(
    weights: np.ndarray, tokens: list[Token], top_tokens: int = 3, window: int = 2
) -> list[EvidenceSpan]:
    """Turn one code's attention over tokens into merged character spans (strongest first)."""
    n = min(len(tokens), len(weights))
    if n == 0:
        return []
    order = np.argsort(-weights[:n], kind="stable")[:top_tokens]
    intervals = sorted(
        (max(0, int(i) - window), min(n - 1, int(i) + window), float(weights[i])) for i in order
    )
    merged: list[list[float]] = []
    for a, b, w in intervals:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2] = max(merged[-1][2], w)
        else:
            merged.append([a, b, w])
    spans = [EvidenceSpan(tokens[int(a)].start, tokens[int(b)].end, round(w, 6)) for a, b, w in merged]
    return sorted(spans, key=lambda s: -s.weight)


class Predictor:
    def __init__(self, model_dir: str | Path | LoadedModel, device: str = "cpu") -> None:
        self.loaded = model_dir if isinstance(model_dir, LoadedModel) else load_model_dir(model_dir, device)
        self.device = torch.device(device)
        from icdcoder.evaluation.thresholds import Thresholds

        self.thresholds = Thresholds.from_dict(self.loaded.thresholds)
        self.max_tokens = self.loaded.config.data.max_tokens

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels.keys

    @torch.no_grad()
    def predict(
        self, notes: list[tuple[str, str]], top_k: int | None = 10, evidence: bool = True, batch_size: int = 8
    ) -> list[NotePrediction]:
        """Code (id, text) notes. Returns, per note, the top-k codes (all decided-positive codes are kept
        even beyond k) with probability, decision and evidence spans."""
        lm = self.loaded
        results: list[NotePrediction] = []
        for start in range(0, len(notes), batch_size):
            chunk = notes[start : start + batch_size]
            token_lists: list[list[Token]] = []
            ids: list[np.ndarray] = []
            for doc_id, text in chunk:
                if not text.strip():
                    raise DataError(f"note {doc_id!r} is empty.", fix="remove it or add the note text.")
                toks = lm.tokenizer.tokenize(text)
                token_lists.append(toks)
                ids.append(
                    np.asarray(lm.vocab.encode(t.text for t in toks[: self.max_tokens]), dtype=np.int64)
                )
            split = EncodedSplit([d for d, _ in chunk], ids, [[] for _ in chunk], [[] for _ in chunk])
            batch = make_batch(split, list(range(len(chunk))), lm.model.n_labels).to(self.device)
            out = lm.model(batch)
            probs = torch.sigmoid(out.logits.float()).cpu().numpy()
            decisions = self.thresholds.apply(probs, self.labels)
            att = out.attention
            for row, (doc_id, _) in enumerate(chunk):
                p = probs[row]
                order = np.argsort(-p, kind="stable")
                keep = [int(i) for i in order[: (top_k or len(order))]]
                keep += [int(i) for i in order[len(keep) :] if decisions[row, i]]
                codes = []
                for i in keep:
                    key = self.labels[i]
                    system, code = key.split(":", 1)
                    ev: list[EvidenceSpan] = []
                    if evidence and att is not None:
                        w = att[row, i, : len(ids[row])].float().cpu().numpy()
                        ev = spans_from_attention(w, token_lists[row][: self.max_tokens])
                    codes.append(
                        CodePrediction(
                            key,
                            system,
                            code,
                            lm.labels.titles[i],
                            round(float(p[i]), 6),
                            bool(decisions[row, i]),
                            ev,
                        )
                    )
                results.append(
                    NotePrediction(doc_id, len(ids[row]), len(token_lists[row]) > self.max_tokens, codes)
                )
        return results

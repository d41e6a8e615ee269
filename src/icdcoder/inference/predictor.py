"""Predictor: a loaded model directory that codes raw notes and points at the evidence in them.

Evidence for each suggested code comes from the model's label attention over tokens (every label-attention
model returns it), turned into readable phrases of the raw note by `evidence.spans_from_attention`; for a
model without attention (or on request) it comes from occlusion (`evidence.occlusion_weights`). The
tokenizer keeps character offsets, so spans index the note exactly as given. Models that read the raw text
(matcher, mention memory) return the exact character spans that fired (`ModelOutput.extras["spans"]`); those
are the evidence as they are (method "match").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from icdcoder.errors import DataError, IcdcoderError
from icdcoder.evaluation.readable import (
    NEAR_EMPTY_TOKENS,
    OK,
    code_priors,
    known_token_counts,
    note_status,
    respect_the_note,
)
from icdcoder.inference.evidence import (
    EvidenceSpan,
    mark_context,
    occlusion_weights,
    spans_from_attention,
)
from icdcoder.modeldir import LoadedModel, load_model_dir
from icdcoder.models.base import SPANS, Batch, IcdModel
from icdcoder.text.tokenizer import Token
from icdcoder.training.config import ExperimentConfig
from icdcoder.training.data import EncodedSplit, make_batch

__all__ = [
    "CodePrediction",
    "EvidenceMethod",
    "EvidenceSpan",
    "NotePrediction",
    "Predictor",
    "spans_from_attention",
]

EvidenceMethod = Literal["auto", "attention", "occlusion"]
EVIDENCE_METHODS: tuple[str, ...] = ("auto", "attention", "occlusion")
PADDING_SLACK = 4 / 3  # a batch's padded size may exceed its real tokens by a third at most


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
    evidence_method: str | None = None  # "attention", "occlusion", "match", or None when none was computed
    # "ok", "near_empty" (probabilities capped at the codes' priors) or "nothing_recognisable" (no word the
    # model knows: no codes at all); see evaluation/readable.py
    status: str = OK
    n_known_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LazyEvidence:
    """Evidence weights of a batch computed per (note, codes) on request (`IcdModel.evidence_rows`)."""

    def __init__(self, model: IcdModel, batch: Batch) -> None:
        self.model, self.batch = model, batch

    def rows(self, row: int, codes: list[int]) -> torch.Tensor:
        out = self.model.evidence_rows(self.batch, row, codes)
        assert out is not None, "evidence_rows returned None for a model that declared it"
        return out


class MatchSpans:
    """Exact character spans per row and label index, as a text-reading model returned them. `fallback`:
    token weights for the codes without spans (the hybrid: spans of its matcher/memory sources first, its
    TF-IDF source's evidence for the rest)."""

    def __init__(
        self, spans: list[dict[int, list[tuple[int, int]]]], fallback: LazyEvidence | None = None
    ) -> None:
        self.spans = spans
        self.fallback = fallback

    def evidence(self, row: int, code_idx: list[int], text: str) -> list[list[EvidenceSpan]]:
        found = self.spans[row]
        return [
            [EvidenceSpan(int(a), int(b), 1.0, text[a:b]) for a, b in sorted(found.get(i, []))]
            for i in code_idx
        ]


Evidence = torch.Tensor | LazyEvidence | MatchSpans | None


def evidence_language(config: ExperimentConfig) -> str:
    """The language of the cue rules that mark evidence as negated, family, ...: a text-reading model's own
    `model.lang` (the matcher's), else the data's (CodiEsp's `lang`; prepared datasets default to English)."""
    return str(config.model.get("lang") or config.data.lang)


class Predictor:
    """Codes notes with a model directory. Not thread-safe: one caller at a time (the server's batcher)."""

    def __init__(
        self, model_dir: str | Path | LoadedModel, device: str = "cpu", max_batch_cells: int = 150_000_000
    ) -> None:
        self.loaded = model_dir if isinstance(model_dir, LoadedModel) else load_model_dir(model_dir, device)
        self.device = torch.device(device)
        from icdcoder.evaluation.thresholds import Thresholds

        self.thresholds = Thresholds.from_dict(self.loaded.thresholds)
        self.calibrator = self.loaded.calibration  # thresholds apply to calibrated probabilities
        self.max_tokens = self.loaded.config.data.max_tokens
        self.pad_id = self.loaded.vocab.pad_id
        self._labels = list(self.loaded.labels.keys)
        # batch × tokens × codes cells per model call (label attention materialises [B, C, T] tensors)
        self.max_batch_cells = max_batch_cells
        # evidence per shown code on request instead of the [B, C, T] tensor from forward (TF-IDF)
        self._lazy_evidence = self.loaded.model.has_evidence_rows()
        self.priors = code_priors(self.loaded.labels.train_counts, self.loaded.n_train_docs)
        self.lang = evidence_language(self.loaded.config)

    @property
    def labels(self) -> list[str]:
        return self._labels

    def info(self) -> dict[str, Any]:
        """What a client needs to know about the model (the server's GET /v1/model)."""
        lm, meta = self.loaded, self.loaded.metadata
        thresholds = self.thresholds.vector(self.labels)
        return {
            "name": meta.get("model"),
            "format": meta.get("format"),
            "created": meta.get("created"),
            "dataset": meta.get("dataset"),
            "seed": meta.get("seed"),
            "versions": meta.get("versions", {}),
            "warnings": list(lm.warnings),  # e.g. written by another icdcoder or torch version
            "label_fingerprint": meta.get("label_fingerprint"),
            "max_tokens": self.max_tokens,
            "n_codes": len(self.labels),
            "thresholds": lm.thresholds,
            "calibration": self.calibrator.to_dict(),
            "dev_metrics": meta.get("dev_metrics", {}),
            "codes": [
                {"key": k, "title": t, "threshold": round(float(th), 6)}
                for k, t, th in zip(self.labels, lm.labels.titles, thresholds, strict=True)
            ],
        }

    def _encode(self, doc_id: str, text: str) -> tuple[list[Token], np.ndarray]:
        if not text.strip():
            raise DataError(f"note {doc_id!r} is empty.", fix="remove it or add the note text.")
        toks = self.loaded.tokenizer.tokenize(text)
        ids = np.asarray(self.loaded.vocab.encode(t.text for t in toks[: self.max_tokens]), dtype=np.int64)
        return toks, ids

    def _score_variants(self, variants: list[np.ndarray]) -> np.ndarray:
        """Probabilities [N, C] for token-id arrays where -1 marks occluded (masked-out) positions."""
        width = max(1, *(len(v) for v in variants))
        ids = torch.full((len(variants), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(variants), width), dtype=torch.bool)
        for r, v in enumerate(variants):
            t = torch.from_numpy(v)
            keep = t >= 0
            ids[r, : len(v)] = torch.where(keep, t, torch.full_like(t, self.pad_id))
            mask[r, : len(v)] = keep
        batch = Batch(ids, mask, mask.sum(1).clamp_min(1), [str(i) for i in range(len(variants))])
        with self.loaded.model.scores_only():
            out = self.loaded.model(batch.to(self.device))
        return np.nan_to_num(self.calibrator.apply(torch.sigmoid(out.logits.float()).cpu().numpy()))

    def _forward(
        self, notes: list[tuple[str, str]], batch_size: int
    ) -> Iterator[tuple[list[int], list[list[Token]], list[np.ndarray], np.ndarray, Evidence]]:
        """Per model call: (positions in `notes`, tokens, token ids, probabilities [B, C], attention
        [B, C, T] or None).

        Notes are read `window` at a time, sorted by length within the window and cut into batches of at
        most `batch_size` notes, `max_batch_cells` padded attention cells (batch × tokens × codes) and a
        third of padding, so short notes are not padded to a long one (on a CPU, padding costs as much as
        text) and a batch of long notes never exhausts memory."""
        lm = self.loaded
        n_labels = max(lm.model.n_labels, 1)
        window = max(batch_size * 8, 64)
        for w0 in range(0, len(notes), window):
            part = list(range(w0, min(w0 + window, len(notes))))
            encoded = {i: self._encode(*notes[i]) for i in part}
            part.sort(key=lambda i: -len(encoded[i][1]))
            start = 0
            while start < len(part):
                longest = max(len(encoded[part[start]][1]), 1)
                fit = max(1, min(batch_size, self.max_batch_cells // (longest * n_labels)))
                end, real = start + 1, longest
                while end < len(part) and end - start < fit:
                    length = max(len(encoded[part[end]][1]), 1)
                    # padding may add at most a third to the real work
                    if (end - start + 1) * longest > PADDING_SLACK * (real + length):
                        break
                    real += length
                    end += 1
                chunk = part[start:end]
                start = end
                ids = [encoded[i][1] for i in chunk]
                split = EncodedSplit(
                    [notes[i][0] for i in chunk],
                    ids,
                    [[] for _ in chunk],
                    [[] for _ in chunk],
                    texts=[notes[i][1] for i in chunk],
                )
                batch = make_batch(split, list(range(len(chunk))), lm.model.n_labels, self.pad_id).to(
                    self.device
                )
                att: Evidence
                if self._lazy_evidence:
                    with lm.model.scores_only():
                        out = lm.model(batch)
                    lazy = LazyEvidence(lm.model, batch)
                    att = MatchSpans(out.extras[SPANS], lazy) if SPANS in out.extras else lazy
                else:
                    out = lm.model(batch)
                    att = MatchSpans(out.extras[SPANS]) if SPANS in out.extras else out.attention
                probs = self.calibrator.apply(torch.sigmoid(out.logits.float()).cpu().numpy())
                yield chunk, [encoded[i][0] for i in chunk], ids, probs, att

    def _method(
        self, evidence: bool, evidence_method: str, has_attention: bool, matched: bool = False
    ) -> str | None:
        if evidence_method not in EVIDENCE_METHODS:
            raise IcdcoderError(
                f"unknown evidence method {evidence_method!r}.",
                fix=f"use one of {', '.join(EVIDENCE_METHODS)}.",
            )
        if not evidence:
            return None
        if matched and evidence_method != "occlusion":
            return "match"
        if evidence_method == "occlusion" or (evidence_method == "auto" and not has_attention):
            return "occlusion"
        return "attention" if has_attention else None

    def _spans(
        self,
        method: str | None,
        att: Evidence,
        row: int,
        ids: np.ndarray,
        tokens: list[Token],
        text: str,
        code_idx: list[int],
        opts: dict[str, int],
    ) -> list[list[EvidenceSpan]]:
        """Evidence spans of each code in `code_idx` for one note."""
        n = len(ids)
        if method == "match" and isinstance(att, MatchSpans):
            found = att.evidence(row, code_idx, text)
            rest = [j for j, spans in enumerate(found) if not spans]
            if att.fallback is not None and rest:
                weights = att.fallback.rows(row, [code_idx[j] for j in rest])[:, :n].float().cpu().numpy()
                for w, j in zip(weights, rest, strict=True):
                    found[j] = self._phrases(w, tokens, text, opts)
            mark_context(found, text, self.lang)
            return found
        if method == "attention" and isinstance(att, LazyEvidence):
            weights = att.rows(row, code_idx)[:, :n].float().cpu().numpy()
        elif method == "attention" and isinstance(att, torch.Tensor):
            weights = att[row, code_idx, :n].float().cpu().numpy()
        elif method == "occlusion":
            weights = occlusion_weights(self._score_variants, ids, code_idx, window=opts["occlusion_window"])
        else:
            return [[] for _ in code_idx]
        out = [self._phrases(weights[j], tokens, text, opts) for j in range(len(code_idx))]
        mark_context(out, text, self.lang)
        return out

    def _phrases(
        self, weights: np.ndarray, tokens: list[Token], text: str, opts: dict[str, int]
    ) -> list[EvidenceSpan]:
        """Readable phrases of the note from one code's token weights."""
        return spans_from_attention(
            weights,
            tokens[: self.max_tokens],
            top_tokens=opts["evidence_tokens"],
            window=opts["evidence_window"],
            text=text,
        )

    @torch.no_grad()
    def predict(
        self,
        notes: list[tuple[str, str]],
        top_k: int | None = 10,
        evidence: bool = True,
        batch_size: int = 8,
        *,
        evidence_method: str = "auto",
        evidence_tokens: int = 3,
        evidence_window: int = 2,
        occlusion_window: int = 8,
    ) -> list[NotePrediction]:
        """Code (id, text) notes. Returns, per note, the top-k codes (all decided-positive codes are kept
        even beyond k) with probability, decision and evidence spans.

        `evidence_method`: "attention" (the model's label attention; no evidence if it has none),
        "occlusion" (always; slower), "auto" (attention when the model returns it, else occlusion).
        `evidence_tokens` / `evidence_window`: seeds and widening of `spans_from_attention`."""
        opts = {
            "evidence_tokens": evidence_tokens,
            "evidence_window": evidence_window,
            "occlusion_window": occlusion_window,
        }
        self._method(evidence, evidence_method, True)  # validates the name before any work
        lm = self.loaded
        results: list[NotePrediction | None] = [None] * len(notes)
        for positions, token_lists, ids, probs, att in self._forward(notes, batch_size):
            n_known = known_token_counts(ids)
            cap_known = n_known
            if lm.model.reads_text:
                # a text-reading model says itself how many words it could use; its scores come from those
                # words and the code system, not from training frequencies, so a short note is not capped
                # at the priors (a never-seen code would be capped to 0); an unreadable one still gets none
                n_known = np.array([lm.model.readable_words(notes[i][1]) for i in positions], dtype=np.int64)
                cap_known = np.where(n_known > 0, np.maximum(n_known, NEAR_EMPTY_TOKENS), 0)
            probs, has_output = respect_the_note(probs, cap_known, self.priors)
            decisions = self.thresholds.apply(probs, self.labels)
            method = self._method(evidence, evidence_method, att is not None, isinstance(att, MatchSpans))
            for row, pos in enumerate(positions):
                doc_id, text = notes[pos]
                status = note_status(int(n_known[row]))
                if not has_output[row]:
                    truncated = len(token_lists[row]) > self.max_tokens
                    results[pos] = NotePrediction(doc_id, len(ids[row]), truncated, [], None, status, 0)
                    continue
                p = probs[row]
                order = np.argsort(-p, kind="stable")
                keep = [int(i) for i in order[: (top_k or len(order))]]
                keep += [int(i) for i in order[len(keep) :] if decisions[row, i]]
                spans = self._spans(method, att, row, ids[row], token_lists[row], text, keep, opts)
                codes = []
                for i, ev in zip(keep, spans, strict=True):
                    key = self.labels[i]
                    system, code = key.split(":", 1)
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
                n = len(ids[row])
                truncated = len(token_lists[row]) > self.max_tokens
                results[pos] = NotePrediction(doc_id, n, truncated, codes, method, status, int(n_known[row]))
        return [r for r in results if r is not None]

    @torch.no_grad()
    def explain(
        self,
        notes: list[tuple[str, str]],
        codes: list[list[str]],
        batch_size: int = 8,
        *,
        evidence_method: str = "auto",
        evidence_tokens: int = 3,
        evidence_window: int = 2,
        occlusion_window: int = 8,
    ) -> list[dict[str, list[EvidenceSpan]]]:
        """Evidence for given codes (e.g. the gold ones), whatever their probability: per note, code key →
        spans. Codes outside the model's label space get no entry."""
        if len(codes) != len(notes):
            raise IcdcoderError(f"explain got {len(notes)} notes but {len(codes)} code lists.")
        opts = {
            "evidence_tokens": evidence_tokens,
            "evidence_window": evidence_window,
            "occlusion_window": occlusion_window,
        }
        index = {k: i for i, k in enumerate(self.labels)}
        out: list[dict[str, list[EvidenceSpan]]] = [{} for _ in notes]
        for positions, token_lists, ids, _probs, att in self._forward(notes, batch_size):
            method = self._method(True, evidence_method, att is not None, isinstance(att, MatchSpans))
            for row, pos in enumerate(positions):
                keys = [k for k in dict.fromkeys(codes[pos]) if k in index]
                idx = [index[k] for k in keys]
                spans = self._spans(method, att, row, ids[row], token_lists[row], notes[pos][1], idx, opts)
                out[pos] = dict(zip(keys, spans, strict=True))
        return out

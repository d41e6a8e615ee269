"""Multi-label ICD coding metrics, updated batch by batch (torchmetrics style, numpy inside).

    mc = MetricCollection(code_keys, threshold=0.5)        # or a per-code vector, or a Thresholds
    for probs, targets, unseen in batches:                  # [B, C] numpy arrays or torch tensors
        mc.update(probs, targets, unseen=unseen)            # unseen: gold keys outside the label space
    results = mc.compute()                                  # dict[str, float]
    results = mc.compute(threshold=tuned)                   # re-threshold the stored scores

Headline (the CodiEsp organisers' definition, used for early stopping, model selection and every table):
  `map` = mean over ALL documents of the evaluated split that have a gold code of
  AP = (1/|gold|) Σ_{ranks k <= 1000 holding a gold code} P@k, over the ranked list of the codes the model
  outputs (every label-space code, by score). |gold| counts the document's distinct gold codes including
  those outside the label space (`unseen`), which can never be ranked and so score 0; a document with no
  output (`has_output` False, e.g. a note with nothing the model can read) has AP 0. Depth 1000 is the
  organisers' trec_eval depth (`OFFICIAL_MAP_DEPTH`). `map_predicted_notes` is the organisers' script quirk:
  the same AP averaged only over the documents with an output (present in the prediction file).
  `f1_micro` (and P/R) count every label-space code's TP/FP/FN plus every unseen gold code as a FN.

Result keys: `[<system>/]<metric>[_restricted]`

- Scope prefix: none = all codes of the label space together (+ unseen gold codes); `<system>/` (e.g.
  `icd10cm/`, `icd10pcs/`, `icd9cm-dx/`) = only the codes of that system (the part of the key before ':'),
  with that system's unseen gold codes. Per-system scopes are reported only when the label space holds more
  than one system (otherwise they would repeat the overall numbers).
- Variant suffix: none = the headline above; `_restricted` = only the label-space codes with at least one
  positive in the evaluated targets, unseen gold codes ignored, AP over the full list of those codes (the
  peer framework's pruned convention, which looks at the split's gold to choose the columns; the
  pre-issue-16 headline). `n_codes` tells which codes were used (`n_codes_unseen` of them outside the
  label space).
- Metrics, with `thr` the decision threshold(s) and decisions `prob >= thr`:
  `precision_micro`, `recall_micro`, `f1_micro` (from TP/FP/FN summed over the scope's codes);
  `precision_macro`, `recall_macro`, `f1_macro` (means over the scope's codes of per-code values:
  P = tp/(tp+fp), R = tp/(tp+fn), F1 = tp/(tp+½(fp+fn)); each is 0 when its denominator is 0, the
  `zero_division=0` convention of scikit-learn, so in the headline a code never seen nor predicted, or
  unseen, counts as F1 0);
  `f1_macro_mullenbach` (harmonic mean of macro-P and macro-R, the legacy CAML/MSMN/ISD definition, not
  the mean of per-code F1; the two can differ widely on rare-code label spaces);
  `auc_micro` (ROC-AUC of the raveled scope matrix, label-space codes only: the model gives unseen codes
  no score), `auc_macro` (mean per-code ROC-AUC over codes with at least one positive and one negative),
  `auc_macro_skipped` (how many label-space scope codes were left out of it);
  `exact_match` (share of documents whose decisions on the scope's codes equal the gold set; a document
  with an unseen gold code never matches in the headline);
  `p@k`, `r@k` (k in `ks`, default 5, 8, 15), `r_precision`, `map`, `map_predicted_notes` (headline only);
  `n_docs`, `n_codes`, `n_docs_ranked` (documents entering R@k / R-precision / MAP).
- Ranking metrics rank the scope's label-space codes per document by score (ties: label-space order, see
  `ranking.py`). P@k = |top-k ∩ gold| / k; R@k = |top-k ∩ gold| / |gold|; R-precision = precision at rank
  |gold|. Documents without gold codes in the scope are skipped for R@k, R-precision and MAP (undefined);
  in the restricted variant they are also dropped for P@k (as the peer framework drops them), in the
  headline they count as P@k 0.
- Thresholded metrics (P/R/F1, exact match) count every document, including those without gold codes in
  the scope: a false positive there is a real error. A document without output predicts nothing.
- NaN means undefined (nothing to average: no codes, no documents, or AUC without both classes).

Memory: P/R/F1 come from running per-code TP/FP/FN and never need the score matrix. AUC, ranking metrics
and exact match need the stored scores (float32) and targets (bool): about 5 bytes per document × code
(250 docs × 74,000 codes ≈ 93 MB; 10,000 docs × 9,000 codes ≈ 450 MB), worked through in chunks of
`ranking.CHUNK_ENTRIES`; pass `store_scores=False` to get only the P/R/F1 metrics. Unseen gold codes are
kept as counts, never as columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icdcoder.errors import DataError
from icdcoder.evaluation import ranking
from icdcoder.evaluation.ranking import (
    auc_per_code,
    micro_auc_by_scope,
    rank_gold_by_scope,
    ranking_summary,
)
from icdcoder.evaluation.thresholds import Thresholds, as_numpy, threshold_vector

DEFAULT_KS: tuple[int, ...] = (5, 8, 15)
OFFICIAL_MAP_DEPTH = 1000  # the CodiEsp organisers' trec_eval depth


def code_system(key: str) -> str:
    """The system part of a `system:code` key."""
    system, sep, _ = key.partition(":")
    if not sep or not system:
        raise DataError(f"code key {key!r} lacks its code system.", fix="use 'system:code' keys.")
    return system


def confusion_counts(
    probs: Any, targets: Any, threshold: float | np.ndarray, has_output: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-code TP, FP, FN (int64 vectors) of the decisions `probs >= threshold` (rows with `has_output`
    False decide nothing)."""
    pred = as_numpy(probs, np.float32) >= np.asarray(threshold, dtype=np.float32)
    if has_output is not None:
        pred &= np.asarray(has_output, bool)[:, None]
    gold = as_numpy(targets).astype(bool)
    tp = (pred & gold).sum(axis=0, dtype=np.int64)
    fp = pred.sum(axis=0, dtype=np.int64) - tp
    fn = gold.sum(axis=0, dtype=np.int64) - tp
    return tp, fp, fn


def prf_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    """Micro / macro precision, recall, F1 and the Mullenbach macro-F1 of per-code counts."""
    stp, sfp, sfn = int(tp.sum()), int(fp.sum()), int(fn.sum())
    res = {
        "precision_micro": _div(stp, stp + sfp),
        "recall_micro": _div(stp, stp + sfn),
        "f1_micro": _div(2 * stp, 2 * stp + sfp + sfn),
    }
    if len(tp) == 0:
        nan = float("nan")
        res.update(precision_macro=nan, recall_macro=nan, f1_macro=nan, f1_macro_mullenbach=nan)
        return res
    per = per_code_prf(tp, fp, fn)
    mp, mr = float(per["precision"].mean()), float(per["recall"].mean())
    res["precision_macro"] = mp
    res["recall_macro"] = mr
    res["f1_macro"] = float(per["f1"].mean())
    res["f1_macro_mullenbach"] = _div(2 * mp * mr, mp + mr)
    return res


def per_code_prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Per-code precision, recall and F1 (0 where the denominator is 0)."""
    tp_f = tp.astype(np.float64)

    def safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)

    return {
        "precision": safe(tp_f, tp + fp),
        "recall": safe(tp_f, tp + fn),
        "f1": safe(2 * tp_f, 2 * tp + fp + fn),
    }


def _div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


class MetricCollection:
    """Accumulates [B, C] batches and computes every metric of the module docstring.

    `code_keys` names the C columns (`system:code` keys). `threshold` is a scalar, a length-C vector or a
    `Thresholds`. `ks` are the cut-offs of P@k and R@k; `map_depth` the headline AP depth.
    """

    def __init__(
        self,
        code_keys: Sequence[str],
        *,
        threshold: float | np.ndarray | Thresholds = 0.5,
        ks: Sequence[int] = DEFAULT_KS,
        store_scores: bool = True,
        map_depth: int | None = OFFICIAL_MAP_DEPTH,
    ) -> None:
        self.code_keys = list(code_keys)
        if not self.code_keys:
            raise DataError("the label space is empty.", fix="evaluate at least one code.")
        self._key_set = set(self.code_keys)
        if len(self._key_set) != len(self.code_keys):
            raise DataError("code keys are not unique.", fix="give each label-space code once.")
        systems = [code_system(k) for k in self.code_keys]
        self.systems = list(dict.fromkeys(systems))
        self._system_index = np.array([self.systems.index(s) for s in systems], dtype=np.int64)
        if any(k <= 0 for k in ks):
            raise ValueError(f"ks must be positive, got {list(ks)}")
        if map_depth is not None and map_depth <= 0:
            raise ValueError(f"map_depth must be positive, got {map_depth}")
        self.ks = tuple(int(k) for k in ks)
        self.map_depth = map_depth
        self.store_scores = store_scores
        self._threshold = threshold_vector(threshold, self.code_keys)
        self.reset()

    @property
    def n_codes(self) -> int:
        return len(self.code_keys)

    @property
    def n_docs(self) -> int:
        return self._n_docs

    def reset(self) -> None:
        """Forget every update."""
        c = self.n_codes
        self._tp = np.zeros(c, np.int64)
        self._fp = np.zeros(c, np.int64)
        self._fn = np.zeros(c, np.int64)
        self._n_docs = 0
        self._score_parts: list[np.ndarray] = []
        self._target_parts: list[np.ndarray] = []
        # unseen gold: documents per unseen key, and per document the count per label-space system
        # (last column: systems outside the label space)
        self._unseen_docs: dict[str, int] = {}
        self._unseen_parts: list[np.ndarray] = []
        self._output_parts: list[np.ndarray] = []

    def update(
        self,
        probs: Any,
        targets: Any,
        *,
        unseen: Sequence[Sequence[str]] | None = None,
        has_output: Any = None,
    ) -> None:
        """Add a batch: `probs` [B, C] scores (probabilities) and `targets` [B, C] 0/1 gold labels.

        `unseen` gives, per document, its gold code keys outside the label space (each counts as a miss);
        `has_output` [B] bool marks documents the model produced an output for (default: all).
        """
        given = as_numpy(probs)
        scores = given.astype(np.float32, copy=False)
        raw = as_numpy(targets)
        if scores.ndim != 2 or scores.shape[1] != self.n_codes:
            raise DataError(f"scores have shape {scores.shape}, expected [batch, {self.n_codes} codes].")
        if raw.shape != scores.shape:
            raise DataError(f"targets have shape {raw.shape}, scores {scores.shape}; they must match.")
        if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
            raise DataError("targets hold values other than 0 and 1.", fix="pass 0/1 gold labels.")
        if not np.isfinite(scores).all():
            raise DataError("scores contain NaN or infinite values.", fix="check the model outputs.")
        b = scores.shape[0]
        output = np.ones(b, bool) if has_output is None else as_numpy(has_output).astype(bool).reshape(-1)
        if output.shape != (b,):
            raise DataError(f"has_output has {output.size} values for {b} documents.")
        unseen_counts = np.zeros((b, len(self.systems) + 1), np.int64)
        if unseen is not None:
            if len(unseen) != b:
                raise DataError(f"unseen gold is given for {len(unseen)} documents, the batch has {b}.")
            for row, keys in enumerate(unseen):
                for key in dict.fromkeys(keys):  # a code repeated in a document's gold counts once
                    if key in self._key_set:
                        raise DataError(
                            f"unseen gold code {key!r} is in the label space.",
                            fix="pass it as a target column instead.",
                        )
                    system = code_system(key)
                    col = self.systems.index(system) if system in self.systems else len(self.systems)
                    unseen_counts[row, col] += 1
                    self._unseen_docs[key] = self._unseen_docs.get(key, 0) + 1
        gold = raw.astype(bool)
        tp, fp, fn = confusion_counts(scores, gold, self._threshold, output)
        self._tp += tp
        self._fp += fp
        self._fn += fn
        self._n_docs += b
        self._unseen_parts.append(unseen_counts)
        self._output_parts.append(output)
        if self.store_scores:
            # keep a private copy: the caller may reuse its batch buffer
            self._score_parts.append(scores.copy() if scores is given else scores)
            self._target_parts.append(gold)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored scores [N, C] float32 and targets [N, C] bool (e.g. to tune thresholds on dev)."""
        if not self.store_scores:
            raise ValueError("this MetricCollection was built with store_scores=False")
        if len(self._score_parts) != 1:
            c = self.n_codes
            s = np.concatenate(self._score_parts) if self._score_parts else np.zeros((0, c), np.float32)
            t = np.concatenate(self._target_parts) if self._target_parts else np.zeros((0, c), bool)
            self._score_parts, self._target_parts = [s], [t]
        return self._score_parts[0], self._target_parts[0]

    def has_output(self) -> np.ndarray:
        """[N] bool: documents the model produced an output for."""
        return np.concatenate(self._output_parts) if self._output_parts else np.zeros(0, bool)

    def _unseen_matrix(self) -> np.ndarray:
        width = len(self.systems) + 1
        return np.concatenate(self._unseen_parts) if self._unseen_parts else np.zeros((0, width), np.int64)

    def _counts(self, thr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if thr is None:
            return self._tp, self._fp, self._fn
        scores, gold = self.scores()
        output = self.has_output()
        tp, fp, fn = (np.zeros(self.n_codes, np.int64) for _ in range(3))
        for r0, r1 in self._row_chunks():
            a, b, c = confusion_counts(scores[r0:r1], gold[r0:r1], thr, output[r0:r1])
            tp += a
            fp += b
            fn += c
        return tp, fp, fn

    def _row_chunks(self) -> list[tuple[int, int]]:
        step = max(1, ranking.CHUNK_ENTRIES // self.n_codes)
        return [(r0, min(self._n_docs, r0 + step)) for r0 in range(0, self._n_docs, step)]

    def _scopes(self, n_pos: np.ndarray) -> list[_Scope]:
        """Every reported scope × variant."""
        everything = np.ones(self.n_codes, bool)
        restricted = n_pos > 0
        n_systems = len(self.systems)
        scopes = [
            _Scope("", "", everything, list(range(n_systems + 1))),
            _Scope("", "_restricted", restricted),
        ]
        if n_systems > 1:
            for i, system in enumerate(self.systems):
                in_system = self._system_index == i
                scopes += [
                    _Scope(f"{system}/", "", in_system, [i]),
                    _Scope(f"{system}/", "_restricted", in_system & restricted),
                ]
        return scopes

    def _unseen_in(self, scope: _Scope) -> np.ndarray:
        """Documents per unseen gold code of the scope."""
        if not scope.unseen_systems:
            return np.zeros(0, np.int64)
        if len(scope.unseen_systems) > len(self.systems):  # the overall scope takes every unseen code
            return np.array(list(self._unseen_docs.values()), np.int64)
        wanted = {self.systems[i] for i in scope.unseen_systems}
        return np.array([n for k, n in self._unseen_docs.items() if code_system(k) in wanted], np.int64)

    def per_code(self, threshold: float | np.ndarray | Thresholds | None = None) -> dict[str, np.ndarray]:
        """Per-code arrays in `code_keys` order: tp, fp, fn, n_pos, precision, recall, f1 (+ auc if stored).

        Useful for breakdowns by code frequency; `auc` is NaN for codes without both classes.
        """
        thr = None if threshold is None else threshold_vector(threshold, self.code_keys)
        tp, fp, fn = self._counts(thr)
        res: dict[str, np.ndarray] = {"tp": tp, "fp": fp, "fn": fn, "n_pos": tp + fn}
        res.update(per_code_prf(tp, fp, fn))
        if self.store_scores:
            scores, gold = self.scores()
            res["auc"] = auc_per_code(scores, gold)
        return res

    def compute(self, threshold: float | np.ndarray | Thresholds | None = None) -> dict[str, float]:
        """All metrics (keys in the module docstring). `threshold` overrides the constructor's threshold,
        re-deciding the stored scores (needs `store_scores=True`)."""
        thr = None if threshold is None else threshold_vector(threshold, self.code_keys)
        if thr is not None and not self.store_scores:
            raise ValueError("compute(threshold=...) needs store_scores=True")
        tp, fp, fn = self._counts(thr)
        scopes = self._scopes(tp + fn)
        parts: list[dict[str, float]] = []
        for scope in scopes:
            unseen = self._unseen_in(scope)
            zeros = np.zeros(len(unseen), np.int64)
            m = scope.mask
            part = {"n_docs": float(self._n_docs), "n_codes": float(m.sum() + len(unseen))}
            if scope.headline:
                part["n_codes_unseen"] = float(len(unseen))
            part.update(
                prf_from_counts(
                    np.concatenate([tp[m], zeros]),
                    np.concatenate([fp[m], zeros]),
                    np.concatenate([fn[m], unseen]),
                )
            )
            parts.append(part)
        if self.store_scores:
            self._add_score_metrics(parts, scopes, self._threshold if thr is None else thr)
        return {
            f"{scope.prefix}{name}{scope.suffix}": value
            for scope, part in zip(scopes, parts, strict=True)
            for name, value in part.items()
        }

    def _add_score_metrics(
        self, parts: list[dict[str, float]], scopes: list[_Scope], thr: np.ndarray
    ) -> None:
        if self._n_docs == 0:
            names = ["auc_micro", "auc_macro", "auc_macro_skipped", "exact_match", "n_docs_ranked"]
            names += [f"{m}@{k}" for m in ("p", "r") for k in self.ks] + ["r_precision", "map"]
            for scope, part in zip(scopes, parts, strict=True):
                part.update(dict.fromkeys(names, float("nan")))
                if scope.headline:
                    part["map_predicted_notes"] = float("nan")
            return
        scores, gold = self.scores()
        output = self.has_output()
        unseen = self._unseen_matrix()
        extra = [unseen[:, s.unseen_systems].sum(axis=1) if s.headline else None for s in scopes]
        masks = [s.mask for s in scopes]
        auc = auc_per_code(scores, gold)
        micro = micro_auc_by_scope(scores, gold, masks)
        rankings = rank_gold_by_scope(
            scores,
            gold,
            masks,
            self.ks,
            extra_gold=extra,
            depths=[self.map_depth if s.headline else None for s in scopes],
            has_output=output,
        )
        exact = self._exact_match(scores, gold, masks, thr, output)
        for part, scope, auc_micro, doc_ranking, wrong, n_extra in zip(
            parts, scopes, micro, rankings, exact, extra, strict=True
        ):
            mask = scope.mask
            valid = auc[mask][~np.isnan(auc[mask])]
            part["auc_micro"] = auc_micro
            part["auc_macro"] = float(valid.mean()) if len(valid) else float("nan")
            part["auc_macro_skipped"] = float(mask.sum() - len(valid))
            if n_extra is not None:
                wrong = wrong | (n_extra > 0)
            part["exact_match"] = float((~wrong).mean()) if part["n_codes"] else float("nan")
            part.update(
                ranking_summary(
                    doc_ranking,
                    self.ks,
                    drop_docs_without_gold=not scope.headline,
                    predicted_only_map=scope.headline,
                )
            )

    def _exact_match(
        self,
        scores: np.ndarray,
        gold: np.ndarray,
        masks: list[np.ndarray],
        thr: np.ndarray,
        output: np.ndarray,
    ) -> list[np.ndarray]:
        """Per scope, [N] bool: documents whose label-space decisions differ from their gold."""
        wrong = [np.zeros(self._n_docs, bool) for _ in masks]
        for r0, r1 in self._row_chunks():
            pred = (scores[r0:r1] >= thr) & output[r0:r1, None]
            mismatch = pred != gold[r0:r1]
            for w, mask in zip(wrong, masks, strict=True):
                w[r0:r1] = mismatch[:, mask].any(axis=1)
        return wrong


@dataclass(frozen=True)
class _Scope:
    """A reported column subset: key prefix and suffix, label-space mask, and which unseen gold it takes
    (indices into the per-document unseen counts; empty for the restricted variants)."""

    prefix: str
    suffix: str
    mask: np.ndarray
    unseen_systems: list[int] = field(default_factory=list)

    @property
    def headline(self) -> bool:
        return self.suffix == ""


def compute_metrics(
    probs: Any,
    targets: Any,
    code_keys: Sequence[str],
    *,
    threshold: float | np.ndarray | Thresholds = 0.5,
    ks: Sequence[int] = DEFAULT_KS,
    unseen: Sequence[Sequence[str]] | None = None,
    has_output: Any = None,
    map_depth: int | None = OFFICIAL_MAP_DEPTH,
) -> dict[str, float]:
    """One-shot `MetricCollection` over a full score matrix."""
    mc = MetricCollection(code_keys, threshold=threshold, ks=ks, map_depth=map_depth)
    mc.update(probs, targets, unseen=unseen, has_output=has_output)
    return mc.compute()

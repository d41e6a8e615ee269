"""Multi-label ICD coding metrics, updated batch by batch (torchmetrics style, numpy inside).

    mc = MetricCollection(code_keys, threshold=0.5)        # or a per-code vector, or a Thresholds
    for probs, targets in batches:                          # [B, C] numpy arrays or torch tensors
        mc.update(probs, targets)
    results = mc.compute()                                  # dict[str, float]
    results = mc.compute(threshold=tuned)                   # re-threshold the stored scores

Result keys: `[<system>/]<metric>[_all]`

- Scope prefix: none = all codes of the label space together; `<system>/` (e.g. `icd10cm/`, `icd10pcs/`,
  `icd9cm-dx/`) = only the codes of that system (the part of the key before ':'). Per-system scopes are
  reported only when the label space holds more than one system (otherwise they would repeat the overall
  numbers).
- Variant suffix: none = restricted to the codes with at least one positive in the evaluated targets (the
  peer framework's convention, and the headline numbers); `_all` = every label-space code of the scope
  (the unrestricted, Mullenbach-style variant). `n_codes` tells which codes were used.
- Metrics, with `thr` the decision threshold(s) and decisions `prob >= thr`:
  `precision_micro`, `recall_micro`, `f1_micro` (from TP/FP/FN summed over the scope's codes);
  `precision_macro`, `recall_macro`, `f1_macro` (means over the scope's codes of per-code values:
  P = tp/(tp+fp), R = tp/(tp+fn), F1 = tp/(tp+½(fp+fn)); each is 0 when its denominator is 0, the
  `zero_division=0` convention of scikit-learn, so in `_all` a code never seen nor predicted counts as F1 0);
  `f1_macro_mullenbach` (harmonic mean of macro-P and macro-R, the legacy CAML/MSMN/ISD definition, not
  the mean of per-code F1; the two can differ widely on rare-code label spaces);
  `auc_micro` (ROC-AUC of the raveled scope matrix), `auc_macro` (mean per-code ROC-AUC over codes with at
  least one positive and one negative), `auc_macro_skipped` (how many scope codes were left out of it);
  `exact_match` (share of documents whose decisions on the scope's codes equal the gold set);
  `p@k`, `r@k` (k in `ks`, default 5, 8, 15), `r_precision`, `map` (see below);
  `n_docs`, `n_codes`, `n_docs_ranked` (documents entering R@k / R-precision / MAP).
- Ranking metrics rank the scope's codes per document by score (ties: label-space order, see
  `ranking.py`). P@k = |top-k ∩ gold| / k; R@k = |top-k ∩ gold| / |gold|; R-precision = precision at rank
  |gold|; MAP = mean over documents of the CodiEsp / trec_eval average precision
  AP = (1/|gold|) Σ_{ranks k holding a gold code} P@k over the full ranked list. Documents without gold codes
  in the scope are skipped for R@k, R-precision and MAP (undefined) in both variants; in the restricted
  variant they are also dropped for P@k (as the peer framework drops them), in `_all` they count as P@k 0.
  The per-system `_all` MAP ranks all label-space codes of that system: the setting closest to the
  official CodiEsp D (`icd10cm/map_all`) and P (`icd10pcs/map_all`) MAP, which ranks a submitted list
  restricted to valid codes; the restricted `map` ranks only codes present in the evaluated split.
- Thresholded metrics (P/R/F1, exact match) count every document, including those without gold codes in
  the scope: a false positive there is a real error.
- NaN means undefined (nothing to average: no codes, no documents, or AUC without both classes).

Memory: P/R/F1 come from running per-code TP/FP/FN and never need the score matrix. AUC, ranking metrics
and exact match need the stored scores (float32) and targets (bool): about 5 bytes per document × code
(10,000 docs × 9,000 codes ≈ 450 MB); pass `store_scores=False` to get only the P/R/F1 metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def code_system(key: str) -> str:
    """The system part of a `system:code` key."""
    system, sep, _ = key.partition(":")
    if not sep or not system:
        raise DataError(f"code key {key!r} lacks its code system.", fix="use 'system:code' keys.")
    return system


def confusion_counts(
    probs: Any, targets: Any, threshold: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-code TP, FP, FN (int64 vectors) of the decisions `probs >= threshold`."""
    pred = as_numpy(probs, np.float32) >= np.asarray(threshold, dtype=np.float32)
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
    `Thresholds`. `ks` are the cut-offs of P@k and R@k.
    """

    def __init__(
        self,
        code_keys: Sequence[str],
        *,
        threshold: float | np.ndarray | Thresholds = 0.5,
        ks: Sequence[int] = DEFAULT_KS,
        store_scores: bool = True,
    ) -> None:
        self.code_keys = list(code_keys)
        if not self.code_keys:
            raise DataError("the label space is empty.", fix="evaluate at least one code.")
        if len(set(self.code_keys)) != len(self.code_keys):
            raise DataError("code keys are not unique.", fix="give each label-space code once.")
        systems = [code_system(k) for k in self.code_keys]
        self.systems = list(dict.fromkeys(systems))
        self._system_index = np.array([self.systems.index(s) for s in systems], dtype=np.int64)
        if any(k <= 0 for k in ks):
            raise ValueError(f"ks must be positive, got {list(ks)}")
        self.ks = tuple(int(k) for k in ks)
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

    def update(self, probs: Any, targets: Any) -> None:
        """Add a batch: `probs` [B, C] scores (probabilities) and `targets` [B, C] 0/1 gold labels."""
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
        gold = raw.astype(bool)
        tp, fp, fn = confusion_counts(scores, gold, self._threshold)
        self._tp += tp
        self._fp += fp
        self._fn += fn
        self._n_docs += scores.shape[0]
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

    def _counts(self, thr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if thr is None:
            return self._tp, self._fp, self._fn
        scores, gold = self.scores()
        tp, fp, fn = (np.zeros(self.n_codes, np.int64) for _ in range(3))
        for r0, r1 in self._row_chunks():
            a, b, c = confusion_counts(scores[r0:r1], gold[r0:r1], thr)
            tp += a
            fp += b
            fn += c
        return tp, fp, fn

    def _row_chunks(self) -> list[tuple[int, int]]:
        step = max(1, ranking.CHUNK_ENTRIES // self.n_codes)
        return [(r0, min(self._n_docs, r0 + step)) for r0 in range(0, self._n_docs, step)]

    def _scopes(self, n_pos: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
        """(prefix, suffix, column mask) of every reported scope × variant."""
        has_pos = n_pos > 0
        everything = np.ones(self.n_codes, bool)
        scopes = [("", "", has_pos), ("", "_all", everything)]
        if len(self.systems) > 1:
            for i, system in enumerate(self.systems):
                in_system = self._system_index == i
                scopes += [(f"{system}/", "", in_system & has_pos), (f"{system}/", "_all", in_system)]
        return scopes

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
        for _, _, mask in scopes:
            part = {"n_docs": float(self._n_docs), "n_codes": float(mask.sum())}
            part.update(prf_from_counts(tp[mask], fp[mask], fn[mask]))
            parts.append(part)
        if self.store_scores:
            self._add_score_metrics(parts, scopes, self._threshold if thr is None else thr)
        return {
            f"{prefix}{name}{suffix}": value
            for (prefix, suffix, _), part in zip(scopes, parts, strict=True)
            for name, value in part.items()
        }

    def _add_score_metrics(
        self, parts: list[dict[str, float]], scopes: list[tuple[str, str, np.ndarray]], thr: np.ndarray
    ) -> None:
        if self._n_docs == 0:
            names = ["auc_micro", "auc_macro", "auc_macro_skipped", "exact_match", "n_docs_ranked"]
            names += [f"{m}@{k}" for m in ("p", "r") for k in self.ks] + ["r_precision", "map"]
            for part in parts:
                part.update(dict.fromkeys(names, float("nan")))
            return
        scores, gold = self.scores()
        masks = [mask for _, _, mask in scopes]
        auc = auc_per_code(scores, gold)
        micro = micro_auc_by_scope(scores, gold, masks)
        rankings = rank_gold_by_scope(scores, gold, masks, self.ks)
        exact = self._exact_match(scores, gold, masks, thr)
        for part, (_, suffix, mask), auc_micro, doc_ranking, em in zip(
            parts, scopes, micro, rankings, exact, strict=True
        ):
            valid = auc[mask][~np.isnan(auc[mask])]
            part["auc_micro"] = auc_micro
            part["auc_macro"] = float(valid.mean()) if len(valid) else float("nan")
            part["auc_macro_skipped"] = float(mask.sum() - len(valid))
            part["exact_match"] = em
            part.update(ranking_summary(doc_ranking, self.ks, drop_docs_without_gold=suffix == ""))

    def _exact_match(
        self, scores: np.ndarray, gold: np.ndarray, masks: list[np.ndarray], thr: np.ndarray
    ) -> list[float]:
        wrong = [np.zeros(self._n_docs, bool) for _ in masks]
        for r0, r1 in self._row_chunks():
            mismatch = (scores[r0:r1] >= thr) != gold[r0:r1]
            for w, mask in zip(wrong, masks, strict=True):
                w[r0:r1] = mismatch[:, mask].any(axis=1)
        return [float((~w).mean()) if m.any() else float("nan") for w, m in zip(wrong, masks, strict=True)]


def compute_metrics(
    probs: Any,
    targets: Any,
    code_keys: Sequence[str],
    *,
    threshold: float | np.ndarray | Thresholds = 0.5,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """One-shot `MetricCollection` over a full score matrix."""
    mc = MetricCollection(code_keys, threshold=threshold, ks=ks)
    mc.update(probs, targets)
    return mc.compute()

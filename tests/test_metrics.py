import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from icdcoder.errors import DataError
from icdcoder.evaluation import MetricCollection, Thresholds, compute_metrics
from icdcoder.evaluation.ranking import auc_per_code, from_ordered_u32, ordered_u32

KEYS = ["icd10cm:A41.9", "icd10cm:N44.8", "icd10pcs:BW03", "icd10pcs:0DTJ4ZZ"]
#                  c0     c1     c2     c3
PROBS = np.array(
    [
        [0.90, 0.95, 0.20, 0.40],  # doc0  gold {c0}
        [0.80, 0.30, 0.70, 0.40],  # doc1  gold {c0, c1, c3}
        [0.10, 0.55, 0.20, 0.60],  # doc2  gold {c1, c3}
    ],
    dtype=np.float32,
)
GOLD = np.array([[1, 0, 0, 0], [1, 1, 0, 1], [0, 1, 0, 1]])
# Worked by hand at threshold 0.5 (decisions: doc0 {c0,c1}, doc1 {c0,c2}, doc2 {c1,c3}):
#   c0 tp2 fp0 fn0 -> P 1,  R 1,  F1 1      c1 tp1 fp1 fn1 -> P .5, R .5, F1 .5
#   c2 tp0 fp1 fn0 -> P 0,  R 0,  F1 0      c3 tp1 fp0 fn1 -> P 1,  R .5, F1 2/3
#   c2 has no positive: the restricted scope is {c0, c1, c3}; the headline scope is every code.
#   restricted micro: tp4 fp1 fn2 -> P 4/5, R 2/3, F1 8/11; all codes: tp4 fp2 fn2 -> 2/3, 2/3, 2/3
#   restricted macro: P 5/6, R 2/3, F1 13/18, Mullenbach 2·(5/6)(2/3)/(5/6+2/3) = 20/27
#   all-code macro:   P 5/8, R 1/2, F1 13/24, Mullenbach 5/9
#   exact match: only doc2 -> 1/3 (both variants)
# Ranking, restricted {c0,c1,c3}: doc0 c1>c0>c3 (gold rank 2), doc1 c0>c3>c1 (ranks 1,2,3),
#   doc2 c3>c1>c0 (ranks 1,2).  AP = 1/2, 1, 1 -> MAP 5/6; R-precision 0, 1, 1 -> 2/3;
#   P@1 = 2/3, P@2 = (1+2+2)/6 = 5/6, P@5 = (1+3+2)/15 = 2/5; R@1 = (0+1/3+1/2)/3 = 5/18, R@2 = 8/9.
# Ranking, all codes: doc1 c0>c2>c3>c1 (ranks 1,3,4): AP = (1/1 + 2/3 + 3/4)/3 = 29/36, R-prec 2/3;
#   MAP = (1/2 + 29/36 + 1)/3 = 83/108; R-precision 5/9; P@2 = (1+1+2)/6 = 2/3; R@2 = 7/9.
# AUC per code: c0 1, c1 0, c3 (pos .4 .6 vs neg .4, tie counts 1/2) 3/4, c2 skipped -> macro 7/12.
#   micro restricted: positives .9 .8 .3 .55 .4 .6 vs negatives .1 .95 .4:
#   (2+2+1+2+1.5+2)/18 = 7/12; all codes adds negatives .2 .7 .2: (5+5+3+4+3.5+4)/36 = 49/72.
# Per system: icd10cm {c0,c1}: tp3 fp1 fn1 -> F1 3/4. icd10pcs restricted {c3}: P 1, R 1/2, F1 2/3;
#   icd10pcs {c2,c3}: F1 1/2; icd10pcs/map_restricted over doc1, doc2 (doc0 has no PCS gold, dropped) = 1;
#   icd10pcs/map: doc1 c2>c3 -> 1/2, doc2 -> 1: 3/4; headline p@1 counts doc0 as 0: 1/3.
EXPECTED = {
    "n_docs": 3,
    "n_codes_restricted": 3,
    "n_codes": 4,
    "precision_micro_restricted": 4 / 5,
    "recall_micro_restricted": 2 / 3,
    "f1_micro_restricted": 8 / 11,
    "precision_micro": 2 / 3,
    "recall_micro": 2 / 3,
    "f1_micro": 2 / 3,
    "precision_macro_restricted": 5 / 6,
    "recall_macro_restricted": 2 / 3,
    "f1_macro_restricted": 13 / 18,
    "f1_macro_mullenbach_restricted": 20 / 27,
    "precision_macro": 5 / 8,
    "recall_macro": 1 / 2,
    "f1_macro": 13 / 24,
    "f1_macro_mullenbach": 5 / 9,
    "exact_match_restricted": 1 / 3,
    "exact_match": 1 / 3,
    "map_restricted": 5 / 6,
    "r_precision_restricted": 2 / 3,
    "p@1_restricted": 2 / 3,
    "p@2_restricted": 5 / 6,
    "p@5_restricted": 2 / 5,
    "r@1_restricted": 5 / 18,
    "r@2_restricted": 8 / 9,
    "r@5_restricted": 1.0,
    "map": 83 / 108,
    "r_precision": 5 / 9,
    "p@2": 2 / 3,
    "r@2": 7 / 9,
    "auc_macro_restricted": 7 / 12,
    "auc_macro_skipped_restricted": 0,
    "auc_macro": 7 / 12,
    "auc_macro_skipped": 1,
    "auc_micro_restricted": 7 / 12,
    "auc_micro": 49 / 72,
    "icd10cm/f1_micro_restricted": 3 / 4,
    "icd10pcs/n_codes_restricted": 1,
    "icd10pcs/precision_micro_restricted": 1.0,
    "icd10pcs/recall_micro_restricted": 1 / 2,
    "icd10pcs/f1_micro_restricted": 2 / 3,
    "icd10pcs/f1_micro": 1 / 2,
    "icd10pcs/n_docs_ranked_restricted": 2,
    "icd10pcs/map_restricted": 1.0,
    "icd10pcs/p@1_restricted": 1.0,
    "icd10pcs/map": 3 / 4,
    "icd10pcs/p@1": 1 / 3,
    "icd10pcs/exact_match_restricted": 2 / 3,
}


def test_hand_computed_example() -> None:
    res = compute_metrics(PROBS, GOLD, KEYS, threshold=0.5, ks=(1, 2, 5))
    for key, value in EXPECTED.items():
        assert res[key] == pytest.approx(value), key


def test_key_scheme() -> None:
    res = compute_metrics(PROBS, GOLD, KEYS)
    for name in ["f1_micro", "f1_macro", "f1_macro_mullenbach", "auc_micro", "auc_macro", "p@5", "p@8"]:
        for key in (name, f"{name}_restricted", f"icd10cm/{name}", f"icd10pcs/{name}_restricted"):
            assert key in res
    for name in ["p@15", "r@5", "r@8", "r@15", "r_precision", "map", "exact_match", "n_docs_ranked"]:
        assert name in res
    assert "map_predicted_notes" in res and "map_predicted_notes_restricted" not in res
    assert not any(k.endswith("_all") for k in res)
    assert all(isinstance(v, float) for v in res.values())
    # a single system: no per-system keys that would only repeat the overall numbers
    single = compute_metrics(PROBS[:, :2], GOLD[:, :2], KEYS[:2])
    assert not any("/" in k for k in single)


def test_batchwise_updates_equal_one_update() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random((57, 20)).astype(np.float32)
    gold = rng.random((57, 20)) < 0.15
    gold[:, 5] = False
    gold[7] = False  # a document without gold codes
    keys = [f"icd9cm-dx:{i:03d}" for i in range(12)] + [f"icd9cm-proc:{i:02d}" for i in range(8)]
    whole = MetricCollection(keys, threshold=0.3)
    whole.update(probs, gold)
    parts = MetricCollection(keys, threshold=0.3)
    for a, b in [(0, 1), (1, 20), (20, 21), (21, 57)]:
        parts.update(torch.from_numpy(probs[a:b]), torch.from_numpy(gold[a:b].astype(np.int64)))
    expected, got = whole.compute(), parts.compute()
    half = MetricCollection(keys, threshold=0.3)
    half.update(torch.from_numpy(probs).to(torch.bfloat16), torch.from_numpy(gold))
    assert half.compute()["n_docs"] == 57
    assert expected.keys() == got.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], nan_ok=True), key


def _random_case(seed: int, n: int = 90, c: int = 25) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, c)).astype(np.float32)
    gold = rng.random((n, c)) < rng.uniform(0.02, 0.4, size=c)
    gold[:, 0] = False  # never positive
    gold[:, 1] = True  # never negative
    gold[3] = False  # a document without codes
    keys = [f"icd10cm:A{i:02d}" for i in range(c)]
    return probs, gold, keys


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed: int) -> None:
    probs, gold, keys = _random_case(seed)
    pred = probs >= 0.5
    res = compute_metrics(probs, gold, keys, threshold=0.5)
    restricted = np.flatnonzero(gold.any(axis=0))
    for avg in ("micro", "macro"):
        assert res[f"f1_{avg}"] == pytest.approx(f1_score(gold, pred, average=avg, zero_division=0))
        assert res[f"precision_{avg}"] == pytest.approx(
            precision_score(gold, pred, average=avg, zero_division=0)
        )
        assert res[f"recall_{avg}"] == pytest.approx(recall_score(gold, pred, average=avg, zero_division=0))
        assert res[f"f1_{avg}_restricted"] == pytest.approx(
            f1_score(gold, pred, average=avg, labels=restricted, zero_division=0)
        )
    assert res["auc_micro"] == pytest.approx(roc_auc_score(gold, probs, average="micro"))
    assert res["auc_micro_restricted"] == pytest.approx(
        roc_auc_score(gold[:, restricted], probs[:, restricted], average="micro")
    )
    both = [j for j in range(gold.shape[1]) if 0 < gold[:, j].sum() < gold.shape[0]]
    assert res["auc_macro_restricted"] == pytest.approx(
        np.mean([roc_auc_score(gold[:, j], probs[:, j]) for j in both])
    )
    assert res["auc_macro_skipped_restricted"] == len(restricted) - len(both)
    docs = [i for i in range(len(gold)) if gold[i].any()]
    assert res["map"] == pytest.approx(np.mean([average_precision_score(gold[i], probs[i]) for i in docs]))
    assert res["map_restricted"] == pytest.approx(
        np.mean([average_precision_score(gold[i, restricted], probs[i, restricted]) for i in docs])
    )
    assert res["n_docs_ranked"] == len(docs)


def test_auc_per_code_with_ties_matches_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    probs = np.round(rng.random((200, 30)), 1).astype(np.float32)  # many ties
    gold = rng.random((200, 30)) < 0.3
    gold[:, 2] = False
    auc = auc_per_code(probs, gold)
    assert math.isnan(auc[2])
    for j in range(30):
        if j != 2:
            assert auc[j] == pytest.approx(roc_auc_score(gold[:, j], probs[:, j]))
    res = compute_metrics(probs, gold, [f"icd10cm:B{i:02d}" for i in range(30)])
    assert res["auc_micro"] == pytest.approx(roc_auc_score(gold, probs, average="micro"))


def _brute_force_ranking(probs: np.ndarray, gold: np.ndarray, k: int) -> tuple[float, float, float]:
    """P@k (all docs), R-precision, MAP (docs with gold) by a stable sort of -scores (ties: lower column
    first)."""
    pk, rp, ap = [], [], []
    for s, g in zip(probs, gold, strict=True):
        rel = g[np.argsort(-s, kind="stable")]
        pk.append(rel[:k].sum() / k)
        n = int(g.sum())
        if n == 0:
            continue
        rp.append(rel[:n].sum() / n)
        hits = np.cumsum(rel)
        ap.append(float(np.sum(rel * hits / np.arange(1, len(rel) + 1)) / n))
    return float(np.mean(pk)), float(np.mean(rp)), float(np.mean(ap))


def test_ranking_ties_follow_label_order() -> None:
    keys = ["icd10cm:A00", "icd10cm:B00", "icd10cm:C00"]
    probs = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]], dtype=np.float32)
    gold = np.array([[1, 0, 0], [0, 1, 0]])
    res = compute_metrics(probs, gold, keys, ks=(1,))
    # doc0: gold A00 wins the tie (rank 1); doc1: gold B00 loses it (rank 2).
    assert res["p@1"] == pytest.approx(0.5)
    assert res["map"] == pytest.approx((1 + 1 / 2) / 2)
    assert res["map_restricted"] == pytest.approx((1 + 1 / 2) / 2)
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((40, 17)), 1).astype(np.float32)
    gold = rng.random((40, 17)) < 0.25
    gold[0] = False
    res = compute_metrics(probs, gold, [f"icd10cm:D{i:02d}" for i in range(17)], ks=(3,))
    pk, rp, ap = _brute_force_ranking(probs, gold, 3)
    assert (res["p@3"], res["r_precision"], res["map"]) == pytest.approx((pk, rp, ap))


def test_edge_cases_empty_predictions_and_docs_without_gold() -> None:
    probs, gold = PROBS.copy(), GOLD.copy()
    gold[0] = 0  # doc0 now has no gold code at all
    res = compute_metrics(probs, gold, KEYS, threshold=2.0, ks=(1,))  # nothing predicted
    for key in ("precision_micro", "recall_micro", "f1_micro", "f1_macro", "f1_macro_mullenbach"):
        assert res[key] == 0.0 and res[f"{key}_restricted"] == 0.0
    # exact match: only doc0 (no gold, nothing predicted) matches
    assert res["exact_match"] == pytest.approx(1 / 3)
    # restricted ranking drops doc0 everywhere; the headline counts it as 0 for P@k only
    assert res["n_docs_ranked"] == 2
    assert res["p@1_restricted"] == pytest.approx(1.0)  # doc1: c0 top, doc2: c3 top
    assert res["p@1"] == pytest.approx(2 / 3)
    assert res["r@1"] == res["r@1_restricted"]
    # a code system with no positive: restricted scope is empty -> NaN, _all still defined
    gold2 = GOLD.copy()
    gold2[:, 2:] = 0
    res2 = compute_metrics(PROBS, gold2, KEYS)
    assert res2["icd10pcs/n_codes_restricted"] == 0
    assert math.isnan(res2["icd10pcs/f1_macro_restricted"])
    assert math.isnan(res2["icd10pcs/auc_micro_restricted"])
    assert math.isnan(res2["icd10pcs/map_restricted"])
    assert res2["icd10pcs/f1_micro_restricted"] == 0.0
    assert res2["icd10pcs/f1_macro"] == 0.0
    assert math.isnan(res2["icd10pcs/map"])


def test_empty_collection_and_store_scores_false() -> None:
    mc = MetricCollection(KEYS)
    res = mc.compute()
    assert res["n_docs"] == 0 and res["f1_micro"] == 0.0 and math.isnan(res["map"])
    lean = MetricCollection(KEYS, store_scores=False)
    lean.update(PROBS, GOLD)
    res = lean.compute()
    assert res["f1_micro_restricted"] == pytest.approx(8 / 11)
    assert "auc_micro" not in res and "p@5" not in res
    with pytest.raises(ValueError):
        lean.compute(threshold=0.3)


def test_compute_with_other_threshold_and_reset() -> None:
    mc = MetricCollection(KEYS, threshold=0.5)
    mc.update(PROBS, GOLD)
    assert mc.compute(threshold=0.35) == compute_metrics(PROBS, GOLD, KEYS, threshold=0.35)
    vec = np.array([0.5, 0.5, 0.5, 0.35], dtype=np.float32)
    per = Thresholds("per_code", 0.5, {"icd10pcs:0DTJ4ZZ": 0.35})
    by_vec = compute_metrics(PROBS, GOLD, KEYS, threshold=vec)
    assert mc.compute(threshold=per) == by_vec
    # c3 at 0.35: tp2 fp1 fn0 -> restricted micro tp5 fp2 fn1
    assert by_vec["f1_micro_restricted"] == pytest.approx(10 / 13)
    assert mc.per_code()["f1"] == pytest.approx([1, 0.5, 0, 2 / 3])
    mc.reset()
    assert mc.n_docs == 0 and mc.compute()["n_docs"] == 0


def test_invalid_inputs_raise_data_errors() -> None:
    mc = MetricCollection(KEYS)
    with pytest.raises(DataError, match="expected"):
        mc.update(PROBS[:, :3], GOLD[:, :3])
    with pytest.raises(DataError, match="must match"):
        mc.update(PROBS, GOLD[:2])
    with pytest.raises(DataError, match="other than 0 and 1"):
        mc.update(PROBS, GOLD * 2)
    bad = PROBS.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mc.update(bad, GOLD)
    with pytest.raises(DataError, match="code system"):
        MetricCollection(["A41.9"])
    with pytest.raises(DataError, match="unique"):
        MetricCollection(["icd10cm:A41.9", "icd10cm:A41.9"])


def test_ordered_bits_preserve_float_order() -> None:
    values = np.array([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, np.inf], dtype=np.float32)
    bits = ordered_u32(values)
    assert (np.diff(bits.astype(np.int64)) >= 0).all()
    assert bits[3] == bits[4]  # -0.0 == +0.0
    back = from_ordered_u32(bits)
    assert np.array_equal(back, values + np.float32(0.0))


def test_chunked_computation_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    from icdcoder.evaluation import ranking, tune_per_code_thresholds

    probs, gold, _ = _random_case(7, n=40, c=30)
    probs = np.round(probs, 2).astype(np.float32)
    keys = [f"icd10cm:A{i:02d}" for i in range(15)] + [f"icd10pcs:B{i:02d}" for i in range(15)]
    whole = compute_metrics(probs, gold, keys, threshold=0.4)
    per_whole = tune_per_code_thresholds(probs, gold)
    monkeypatch.setattr(ranking, "CHUNK_ENTRIES", 97)  # several rows / columns per chunk, uneven tail
    chunked = compute_metrics(probs, gold, keys, threshold=0.4)
    assert chunked.keys() == whole.keys()
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], nan_ok=True), key
    per_chunked = tune_per_code_thresholds(probs, gold)
    np.testing.assert_array_equal(per_chunked[0], per_whole[0])
    np.testing.assert_array_equal(per_chunked[1], per_whole[1])

import json

import numpy as np
import pytest
import torch

from icdcoder.errors import ModelDirError
from icdcoder.evaluation import (
    Thresholds,
    decisions,
    tune_global_threshold,
    tune_per_code_thresholds,
    tune_thresholds,
)


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = int((pred & gold).sum())
    den = int(pred.sum()) + int(gold.sum())
    return 2 * tp / den if den else 0.0


def test_hand_computed_global_sweep() -> None:
    probs = np.array([[0.9, 0.2, 0.6], [0.8, 0.7, 0.1]], dtype=np.float32)
    gold = np.array([[1, 0, 1], [0, 1, 0]])
    # Scores descending: .9+ .8- .7+ .6+ .2- .1- (3 positives). F1 = 2·TP / (#predicted + 3):
    #   >=.9: 2/4  >=.8: 2/5  >=.7: 4/6  >=.6: 6/7 (best)  >=.2: 6/8  >=.1: 6/9
    # The cut sits midway between .6 and the next lower score .2: 0.4.
    res = tune_global_threshold(probs, gold)
    assert res.f1 == pytest.approx(6 / 7)
    assert res.threshold == pytest.approx(0.4)
    assert _f1(decisions(probs, res.threshold), gold.astype(bool)) == pytest.approx(6 / 7)


def test_ties_pick_highest_cut_and_predict_all_case() -> None:
    # One positive above one negative: >=.8 gives F1 1; cut between .8 and .3.
    res = tune_global_threshold(np.array([[0.8, 0.3]]), np.array([[1, 0]]))
    assert (res.threshold, res.f1) == (pytest.approx(0.55), 1.0)
    # Every score positive: the best cut is the lowest score itself (nothing below it).
    res = tune_global_threshold(np.array([[0.8, 0.3]]), np.array([[1, 1]]))
    assert res.threshold == pytest.approx(0.3, abs=1e-7) and res.f1 == 1.0
    # Equal optima: [.9+, .8-, .7+] -> >=.9: 2/3, >=.7: 4/5; [.9+, .8-, .7-, .6+, .5-]:
    # >=.9: 2/(1+2)=2/3, >=.6: 4/(4+2)=2/3 -> tie, the higher cut (between .9 and .8) wins.
    res = tune_global_threshold(np.array([[0.9, 0.8, 0.7, 0.6, 0.5]]), np.array([[1, 0, 0, 1, 0]]))
    assert res.f1 == pytest.approx(2 / 3)
    assert res.threshold == pytest.approx(0.85)


def test_no_positive_returns_default() -> None:
    res = tune_global_threshold(np.array([[0.8, 0.3]]), np.zeros((1, 2)), default=0.4)
    assert res.threshold == pytest.approx(0.4) and res.f1 == 0.0


def test_adjacent_float32_scores_keep_exact_decisions() -> None:
    lo = np.float32(0.5)
    hi = np.nextafter(lo, np.float32(1))
    probs = np.array([[hi, lo]], dtype=np.float32)
    res = tune_global_threshold(probs, np.array([[1, 0]]))
    assert decisions(probs, res.threshold).tolist() == [[True, False]]
    # the same holds after a JSON round trip of the threshold
    t = Thresholds.from_json(Thresholds("global", res.threshold).to_json())
    assert t.apply(probs, ["icd10cm:A00", "icd10cm:B00"]).tolist() == [[True, False]]


def _brute_force_best(scores: np.ndarray, gold: np.ndarray) -> float:
    candidates = np.concatenate([np.unique(scores), [np.inf]])
    return max(_f1(scores >= t, gold) for t in candidates)


@pytest.mark.parametrize("seed", range(6))
def test_exact_sweep_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 30)), int(rng.integers(1, 12))
    probs = rng.random((n, c)).astype(np.float32)
    if seed % 2:
        probs = np.round(probs, 1).astype(np.float32)  # ties
    gold = rng.random((n, c)) < rng.uniform(0.05, 0.6)
    res = tune_global_threshold(probs, gold)
    if not gold.any():
        return
    best = _brute_force_best(probs, gold)
    assert res.f1 == pytest.approx(best)
    assert _f1(decisions(probs, res.threshold), gold) == pytest.approx(best)
    # highest optimal cut: every cut above the lowest predicted score v* does strictly worse
    v_star = probs[probs >= np.float32(res.threshold)].min()
    for t in np.unique(probs[probs > v_star]):
        assert _f1(probs >= t, gold) < best - 1e-12
    # per code
    per, per_f1 = tune_per_code_thresholds(probs, gold)
    for j in range(c):
        if not gold[:, j].any():
            assert np.isnan(per[j]) and np.isnan(per_f1[j])
            continue
        best_j = _brute_force_best(probs[:, j], gold[:, j])
        assert per_f1[j] == pytest.approx(best_j)
        assert _f1(probs[:, j] >= np.float32(per[j]), gold[:, j]) == pytest.approx(best_j)


def test_tune_thresholds_per_code_falls_back_to_global() -> None:
    keys = ["icd10cm:A00", "icd10cm:B00", "icd10pcs:BW03"]
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.5], [0.3, 0.4, 0.8]])
    gold = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    glob = tune_thresholds(probs, gold, keys)
    assert glob.kind == "global" and glob.per_code == {}
    per = tune_thresholds(probs, gold, keys, kind="per_code")
    assert per.global_threshold == glob.global_threshold
    assert set(per.per_code) == {"icd10cm:A00", "icd10cm:B00"}  # BW03 has no positive in dev
    # A00: .9+ vs .3 .1 -> between .9 and .3; B00: .7+ .4+ vs .2 -> between .4 and .2
    assert per.per_code["icd10cm:A00"] == pytest.approx(0.6)
    assert per.per_code["icd10cm:B00"] == pytest.approx(0.3)
    vec = per.vector(keys)
    assert vec[2] == np.float32(per.global_threshold)
    assert per.apply(probs, keys).tolist() == (probs.numpy() >= vec).tolist()


def test_thresholds_json_round_trip_and_validation(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "thresholds.json"
    t = Thresholds("per_code", 0.35, {"icd10cm:N44.8": 0.2})
    t.save(path)
    assert json.loads(path.read_text()) == {
        "kind": "per_code",
        "global": 0.35,
        "per_code": {"icd10cm:N44.8": 0.2},
    }
    assert Thresholds.load(path) == t
    assert Thresholds.from_json(t.to_json()) == t
    for bad, field in [
        ({"kind": "best", "global": 0.5}, "kind"),
        ({"kind": "global", "global": "0.5"}, "global"),
        ({"kind": "global", "global": float("nan")}, "global"),
        ({"kind": "per_code", "global": 0.5, "per_code": {"icd10cm:A00": None}}, "per_code"),
        ({"kind": "global", "global": 0.5, "per_code": {"icd10cm:A00": 0.1}}, "per-code"),
    ]:
        with pytest.raises(ModelDirError, match=field):
            Thresholds.from_dict(bad)
    path.write_text('{"kind": "global"}')
    with pytest.raises(ModelDirError, match=r"thresholds\.json"):
        Thresholds.load(path)


def test_decisions_forms() -> None:
    probs = np.array([[0.5, 0.49, 0.7]], dtype=np.float64)
    assert decisions(probs, 0.5).tolist() == [[True, False, True]]
    assert decisions(probs, np.array([0.6, 0.4, 0.7])).tolist() == [[False, True, True]]
    t = Thresholds("per_code", 0.5, {"icd10cm:B00": 0.4})
    keys = ["icd10cm:A00", "icd10cm:B00", "icd10cm:C00"]
    assert decisions(probs, t, keys).tolist() == [[True, True, True]]
    with pytest.raises(ValueError):
        decisions(probs, t)

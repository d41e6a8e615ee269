"""Candidates, pair features and the LightGBM re-ranker (no torch models involved)."""

from __future__ import annotations

import numpy as np
import pytest

from icdcoder.reranking.candidates import (
    SourceRanking,
    candidate_recall,
    ranked_map,
    top_k_rows,
    union_candidates,
)
from icdcoder.reranking.features import (
    MISSING,
    MISSING_RANK,
    CodeTable,
    FeatureSpec,
    note_features,
    pair_matrix,
)
from icdcoder.reranking.ranker import RankerParams, Reranker, weighted_sum


def test_top_k_rows_keeps_the_k_best_and_drops_zero_scores() -> None:
    probs = np.array([[0.1, 0.9, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    rows = top_k_rows(probs, ["a", "b", "c", "d"], k=2)
    assert rows[0].scores == {"b": pytest.approx(0.9), "c": pytest.approx(0.5)}
    assert rows[1].scores == {}  # an empty source stays empty


def test_union_orders_by_best_rank_then_agreement() -> None:
    per = {
        "m": SourceRanking({"x": 0.9, "y": 0.5}),
        "t": SourceRanking({"y": 0.8, "z": 0.1}),
    }
    # rank 1: x (m) and y (t); y is proposed by two sources, so it comes first; then z (rank 2 in t)
    assert union_candidates(per) == ["y", "x", "z"]
    assert union_candidates(per, max_candidates=2) == ["y", "x"]
    assert union_candidates({"m": SourceRanking(), "t": SourceRanking()}) == []


def test_candidate_recall_splits_zero_and_few_shot() -> None:
    cands = [["a", "b"], ["c"]]
    gold = [["a", "z"], ["c", "b"]]
    counts = {"a": 10, "b": 3, "c": 1}  # z never seen in training
    rep = candidate_recall(cands, gold, counts).as_dict()
    assert rep["recall"] == pytest.approx(2 / 4)
    assert rep["recall_zero_shot"] == pytest.approx(0 / 1)
    assert rep["recall_few_shot"] == pytest.approx(1 / 2)  # b (3) missed in note 2, c (1) found
    assert rep["mean_candidates"] == pytest.approx(1.5)


def test_ranked_map_is_the_organisers_definition() -> None:
    # gold {a, b, c}: a at rank 1 (1/1), b at rank 3 (2/3), c never ranked -> (1 + 2/3) / 3
    assert ranked_map([["a", "x", "b"]], [["a", "b", "c"]]) == pytest.approx((1 + 2 / 3) / 3)
    # repeated codes keep their first rank; notes without gold are skipped
    assert ranked_map([["x", "x", "a"], ["a"]], [["a"], []]) == pytest.approx(1 / 2)


def test_note_features_hand_computed() -> None:
    spec = FeatureSpec(["m", "t"], {"m": ["negated", "score"], "t": []})
    per = {
        "m": SourceRanking({"icd10cm:C64.1": 0.8}, {"icd10cm:C64.1": {"negated": 1.0}}),
        "t": SourceRanking({"icd10cm:C64": 0.6, "icd10cm:C64.1": 0.2}),
    }
    codes = CodeTable({"icd10cm:C64": 4}, {"icd10cm:C64.1": "Malignant neoplasm of right kidney"})
    cands = union_candidates(per)
    assert cands == ["icd10cm:C64.1", "icd10cm:C64"]
    assert len(set(spec.names)) == len(spec.names)  # a side feature called "score" gets its own column
    x = note_features(spec, cands, per, codes, note_chars=99)
    f = dict(zip(spec.names, x[0], strict=True))
    assert f["m.score"] == pytest.approx(0.8) and f["m.rank"] == 1 and f["m.in"] == 1 and f["m.gap"] == 0
    assert f["m.x.negated"] == 1.0
    assert f["t.score"] == pytest.approx(0.2) and f["t.rank"] == 2 and f["t.gap"] == pytest.approx(0.4)
    assert f["n_sources"] == 2 and f["best_rank"] == 1
    assert f["zero_shot"] == 1 and f["train_count_log"] == 0
    assert f["parent_candidate"] == 1 and f["n_children"] == 0 and f["n_siblings"] == 1
    assert f["sibling_best_score"] == pytest.approx(0.6)
    assert f["chapter"] == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".index("C") and f["system"] == 0
    assert f["code_length"] == 4 and f["title_words"] == 5 and f["n_candidates"] == 2
    g = dict(zip(spec.names, x[1], strict=True))
    # C64 comes from t only: m's features are the sentinels
    assert g["m.score"] == MISSING and g["m.rank"] == MISSING_RANK and g["m.in"] == 0
    assert g["m.x.negated"] == MISSING
    assert g["parent_candidate"] == 0 and g["n_children"] == 1
    assert g["train_count_log"] == pytest.approx(np.log1p(4)) and g["zero_shot"] == 0


def test_a_source_with_nothing_for_a_note_gives_sentinels_not_errors() -> None:
    spec = FeatureSpec(["m", "t"], {"m": ["coverage"], "t": []})
    per = {"m": SourceRanking(), "t": SourceRanking({"icd10cm:R52": 0.3})}
    x, groups = pair_matrix(spec, [union_candidates(per)], [per], CodeTable(), [10])
    assert groups.tolist() == [1]
    f = dict(zip(spec.names, x[0], strict=True))
    assert f["m.in"] == 0 and f["m.x.coverage"] == MISSING and f["t.in"] == 1


def _toy(n_notes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    names = ["s.score", "s.rank", "noise", "chapter"]
    rows, ys, groups = [], [], []
    for _ in range(n_notes):
        k = 12
        score = rng.random(k)
        y = (score + 0.2 * rng.standard_normal(k) > 0.7).astype(np.float32)
        rank = np.argsort(np.argsort(-score)) + 1
        rows.append(np.stack([score, rank, rng.random(k), rng.integers(0, 5, k)], axis=1))
        ys.append(y)
        groups.append(k)
    return np.concatenate(rows).astype(np.float32), np.concatenate(ys), np.asarray(groups), names


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_ranker_learns_saves_as_text_and_is_deterministic(objective: str) -> None:
    x, y, groups, names = _toy(60, 0)
    params = RankerParams(objective=objective, n_estimators=30, num_leaves=7, min_data_in_leaf=5)  # type: ignore[arg-type]
    a = Reranker.fit(x, y, groups, names, ["chapter"], params)
    b = Reranker.fit(x, y, groups, names, ["chapter"], params)
    assert a.to_text() == b.to_text()  # same seed, same model
    text = a.to_text()
    assert text.startswith("tree")  # LightGBM's text model format, not a pickle
    loaded = Reranker.from_text(text)
    xt, _, _, _ = _toy(10, 1)
    np.testing.assert_allclose(loaded.score(xt), a.score(xt))
    assert loaded.feature_names == names
    # it learned something: the score feature carries the gain
    imp = a.importance()
    assert imp["s.score"] + imp["s.rank"] > imp["noise"]
    other = Reranker.fit(x, y, groups, names, ["chapter"], params.model_copy(update={"seed": 1}))
    assert objective == "lambdarank" or other.to_text() != text  # bagging seed changes the binary model


def test_reranker_refuses_garbage_text() -> None:
    from icdcoder.errors import ModelDirError

    with pytest.raises(ModelDirError):
        Reranker.from_text("not a model")


def test_weighted_sum_treats_missing_as_zero() -> None:
    names = ["a.score", "a.rank", "b.score"]
    x = np.array([[0.5, 1, MISSING], [MISSING, MISSING_RANK, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(weighted_sum(x, names, {"a": 2.0, "b": 1.0}), [1.0, 0.4], rtol=1e-6)

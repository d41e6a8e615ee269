"""MSAM's maximum-diversity synonym selection: the exact MILP matches brute force, the heuristic is never
better than exact, and the label-space selection is cached with its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icdcoder.models.diverse_synonyms import (
    cosine_distances,
    diverse_label_synonyms,
    objective,
    select_diverse,
    solve_brute_force,
    solve_exact,
    solve_greedy_swap,
    summarise,
)
from icdcoder.ontology.entry import Synonym


@pytest.mark.parametrize("seed", range(12))
def test_exact_matches_brute_force_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(4, 11)), int(rng.integers(2, 5))
    m = min(m, n - 1)
    dist = cosine_distances(rng.normal(size=(n, int(rng.integers(2, 6)))))
    exact, brute = solve_exact(dist, m, time_limit=30), solve_brute_force(dist, m)
    assert exact.optimal and exact.solver == "exact" and len(exact.indices) == m
    assert exact.objective == pytest.approx(brute.objective, abs=1e-9)
    greedy = solve_greedy_swap(dist, m)
    assert len(set(greedy.indices)) == m
    assert greedy.objective <= exact.objective + 1e-9


def test_hand_computed_instance() -> None:
    # e1, e2, e3 and v = (e1 + e2)/√2: d(e_i, e_j) = 1, d(v, e1) = d(v, e2) = 1 − 1/√2, d(v, e3) = 1.
    # Best triple {e1, e2, e3} = 3; a triple with v reaches 2 + (1 − 1/√2) at most.
    emb = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    dist = cosine_distances(emb)
    assert dist[0, 3] == pytest.approx(1 - 2**-0.5) and dist[2, 3] == pytest.approx(1.0)
    three = solve_exact(dist, 3)
    assert three.indices == [0, 1, 2] and three.objective == pytest.approx(3.0) and three.optimal
    assert objective(dist, [0, 2, 3]) == pytest.approx(2 + (1 - 2**-0.5))
    assert solve_greedy_swap(dist, 3).objective == pytest.approx(3.0)


def test_select_diverse_picks_the_solver_by_size() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8))
    assert select_diverse(emb[:3], 4).solver == "all"
    assert select_diverse(emb[:8], 3).solver == "exact"
    big = select_diverse(emb, 3, exact_max=10)
    assert big.solver == "greedy_swap" and not big.optimal and len(big.indices) == 3
    with pytest.raises(ValueError, match="unknown MDP method"):
        select_diverse(emb, 3, method="gurobi")


class FakeSource:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def synonyms(self, system: str, code: str) -> list[Synonym]:
        return [Synonym(t, "fake") for t in self.table.get(f"{system}:{code}", [])]


def test_label_space_selection_is_cached_with_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import icdcoder.ontology.ontology as onto

    table = {
        "icd10cm:I10": [
            "essential hypertension",
            "high blood pressure",
            "hypertensive disease",
            "htn primary",
        ],
        "icd10cm:R50.9": ["fever unspecified", "pyrexia"],
    }
    monkeypatch.setattr(onto, "get_ontology", lambda: FakeSource(table))
    vocab = sorted({w for row in table.values() for t in row for w in t.split()})
    vec = {w: np.random.default_rng(i).normal(size=6) for i, w in enumerate(vocab)}
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.stack([np.mean([vec[w] for w in t.split()], axis=0) for t in texts])

    keys = list(table)
    syn, record = diverse_label_synonyms(keys, 3, embed, embedder_id="test-vectors", cache_dir=tmp_path)
    assert [len(r) for r in syn.texts] == [3, 3]
    # I10 has 4 candidates: the exact solver chose the best 3 of them
    info = record["codes"]["icd10cm:I10"]
    assert info["solver"] == "exact" and info["optimal"] and info["n_candidates"] == 4
    chosen = syn.texts[0]
    assert len(set(chosen)) == 3 and all(t in table["icd10cm:I10"] for t in chosen)
    emb = embed(table["icd10cm:I10"])
    assert info["objective"] == pytest.approx(solve_brute_force(cosine_distances(emb), 3).objective)
    # R50.9 has 2 candidates ("pyrexia" has 7 characters, so MSMN's filter keeps it): all taken, one repeated
    assert record["codes"]["icd10cm:R50.9"]["solver"] == "all"
    assert syn.sources[1][2].startswith("repeat:")
    assert summarise(record)["codes"] == 2
    files = list(tmp_path.glob("mdp-*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["provenance"]["embedder"] == "test-vectors" and saved["provenance"]["m"] == 3
    # a second call reads the cache (no embedding); another embedder is another cache entry
    n_calls = len(calls)
    again, _ = diverse_label_synonyms(keys, 3, embed, embedder_id="test-vectors", cache_dir=tmp_path)
    assert again.texts == syn.texts and len(calls) == n_calls
    diverse_label_synonyms(keys, 3, embed, embedder_id="other", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mdp-*.json"))) == 2


def test_candidates_the_embedding_cannot_see_are_not_chosen_for_diversity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import icdcoder.ontology.ontology as onto

    # "zzz qqq" has no known word: a zero vector, at distance 1 from everything, which would win the MDP
    table = {
        "icd10cm:I10": ["essential hypertension", "hypertensive disease", "arterial hypertension", "zzz qqq"]
    }
    monkeypatch.setattr(onto, "get_ontology", lambda: FakeSource(table))
    vec = {
        "essential": np.array([1.0, 0.0, 0.1]),
        "hypertension": np.array([1.0, 0.1, 0.0]),
        "hypertensive": np.array([0.9, 0.2, 0.0]),
        "disease": np.array([0.0, 1.0, 0.0]),
        "arterial": np.array([0.0, 0.0, 1.0]),
    }

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([sum((vec.get(w, np.zeros(3)) for w in t.split()), np.zeros(3)) for t in texts])

    syn, record = diverse_label_synonyms(["icd10cm:I10"], 2, embed, embedder_id="v", cache_dir=None)
    assert "zzz qqq" not in syn.texts[0] and record["codes"]["icd10cm:I10"]["n_unembedded"] == 1
    # with only M embedded candidates, those are taken; with more slots than candidates, all of them
    syn, record = diverse_label_synonyms(["icd10cm:I10"], 3, embed, embedder_id="v", cache_dir=None)
    assert record["codes"]["icd10cm:I10"]["solver"] == "all_embedded" and "zzz qqq" not in syn.texts[0]
    syn4, rec4 = diverse_label_synonyms(["icd10cm:I10"], 4, embed, embedder_id="v", cache_dir=None)
    assert rec4["codes"]["icd10cm:I10"]["solver"] == "all" and "zzz qqq" in syn4.texts[0]

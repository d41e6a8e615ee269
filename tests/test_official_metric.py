"""The headline MAP is the CodiEsp organisers' definition (docs/RESOURCES.md, "CodiEsp evaluation rules").

`script_map` re-implements what their scorer does to a gold and a prediction TSV (lower-casing, first of
repeated (doc, code) pairs, rank = line order, trectools MAP at depth 1000, mean over the documents present
in both files); the metrics must agree with it on notes that have an output, and count a gold note without
output as 0 in the headline `map` (`map_predicted_notes` keeps the script's quirk)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from icdcoder.evaluation.metrics import compute_metrics


def script_map(gold: Sequence[tuple[str, str]], pred: Sequence[tuple[str, str]], depth: int = 1000) -> float:
    """The organisers' MAP of (document, code) lines: gold in any order, predictions in rank order."""
    relevant: dict[str, set[str]] = {}
    for doc, code in gold:
        relevant.setdefault(doc, set()).add(code.lower())
    ranked: dict[str, list[str]] = {}
    for doc, code in pred:
        codes = ranked.setdefault(doc, [])
        if code.lower() not in codes:
            codes.append(code.lower())
    docs = set(relevant) & set(ranked)
    total = 0.0
    for doc in docs:
        hits, ap = 0, 0.0
        for rank, code in enumerate(ranked[doc][:depth], start=1):
            if code in relevant[doc]:
                hits += 1
                ap += hits / rank
        total += ap / len(relevant[doc])
    return total / len(docs) if docs else 0.0


def prediction_lines(probs: np.ndarray, keys: Sequence[str], ids: Sequence[str], output: np.ndarray):
    """`predict --format codiesp` lines: each note's codes by descending score (ties: label order)."""
    lines = []
    for row, doc in enumerate(ids):
        if output[row]:
            for j in np.argsort(-probs[row], kind="stable"):
                lines.append((doc, keys[j].split(":", 1)[1]))
    return lines


KEYS = ["icd10cm:A00", "icd10cm:B01", "icd10cm:C02", "icd10cm:D03"]
IDS = ["n0", "n1", "n2", "n3"]
PROBS = np.array(
    [
        [0.9, 0.1, 0.6, 0.2],  # n0: A00 > C02 > D03 > B01
        [0.3, 0.8, 0.1, 0.2],  # n1: no output (nothing readable)
        [0.2, 0.5, 0.4, 0.7],  # n2: D03 > B01 > C02 > A00
        [0.5, 0.5, 0.5, 0.5],  # n3: no gold at all
    ],
    dtype=np.float32,
)
# Gold lines as in the track's TSV: repeated pairs (one code, several references), unseen codes (Z99.1, Y00),
# upper and lower case.
GOLD_LINES = [
    ("n0", "a00"),
    ("n0", "A00"),
    ("n0", "z99.1"),
    ("n0", "c02"),
    ("n1", "b01"),
    ("n2", "c02"),
    ("n2", "y00"),
    ("n2", "y00"),
]
GOLD = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
UNSEEN = [["icd10cm:Z99.1"], [], ["icd10cm:Y00", "icd10cm:Y00"], []]
OUTPUT = np.array([True, False, True, True])
# By hand: n0 ranks A00 1st, C02 2nd, |gold| = 3 (Z99.1 unseen): AP = (1/1 + 2/2)/3 = 2/3.
#   n1 has no output: AP 0.  n2: C02 at rank 3, |gold| = 2 (Y00 once): AP = (1/3)/2 = 1/6.  n3: no gold.
#   Headline MAP = (2/3 + 0 + 1/6)/3 = 5/18; the script's mean over n0, n2 = (2/3 + 1/6)/2 = 5/12.
#   Micro-F1 at 0.5: decisions n0 {A00, C02}, n2 {B01, D03}, n3 {all four}, n1 none (no output):
#   TP 2 (n0), FP 2 + 4 = 6, FN: C02 of n2, B01 of n1, Z99.1, Y00 = 4 -> F1 = 4 / (4 + 6 + 4) = 2/7.


def test_hand_made_case_matches_the_organisers_semantics() -> None:
    res = compute_metrics(PROBS, GOLD, KEYS, threshold=0.5, unseen=UNSEEN, has_output=OUTPUT)
    assert res["map"] == pytest.approx(5 / 18)
    assert res["map_predicted_notes"] == pytest.approx(5 / 12)
    lines = prediction_lines(PROBS, KEYS, IDS, OUTPUT)
    assert res["map_predicted_notes"] == pytest.approx(script_map(GOLD_LINES, lines))
    assert res["n_docs_ranked"] == 3 and res["n_codes_unseen"] == 2
    assert res["f1_micro"] == pytest.approx(2 / 7)
    assert res["recall_micro"] == pytest.approx(2 / 6)
    # the pruned variant looks only at label-space codes present in the split's gold, unseen ignored
    assert res["n_codes_restricted"] == 3
    assert res["map_restricted"] < 1.0 and "map_predicted_notes_restricted" not in res


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_agree_with_the_script(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 40, 30
    keys = [f"icd10cm:K{j:02d}" for j in range(c)]
    ids = [f"d{i}" for i in range(n)]
    probs = np.round(rng.random((n, c)), 2).astype(np.float32)  # ties broken by label order
    gold = rng.random((n, c)) < 0.1
    unseen = [[f"icd10cm:U{j}" for j in rng.choice(5, size=rng.integers(0, 3), replace=False)] for _ in ids]
    output = rng.random(n) > 0.15
    gold_lines = [(ids[i], keys[j].split(":")[1]) for i, j in zip(*np.nonzero(gold), strict=True)]
    gold_lines += [(ids[i], k.split(":")[1]) for i, u in enumerate(unseen) for k in u]
    has_gold = gold.any(axis=1) | np.array([bool(u) for u in unseen])
    lines = prediction_lines(probs, keys, ids, output)
    for depth in (1000, 7):
        res = compute_metrics(probs, gold, keys, unseen=unseen, has_output=output, map_depth=depth)
        script = script_map(gold_lines, lines, depth=depth)
        assert res["map_predicted_notes"] == pytest.approx(script)
        # the headline averages over every note with gold: notes without output add 0
        assert res["map"] == pytest.approx(script * (has_gold & output).sum() / has_gold.sum())


def test_unseen_code_in_label_space_is_refused() -> None:
    from icdcoder.errors import DataError

    with pytest.raises(DataError, match="in the label space"):
        compute_metrics(PROBS, GOLD, KEYS, unseen=[["icd10cm:A00"], [], [], []])

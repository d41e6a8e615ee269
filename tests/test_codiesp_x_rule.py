"""The official CodiEsp-X rule (`codiesp` in inference/evidence_eval.py) on hand-made spans, checked
against the organisers' definition (../shared/tools/codiesp-official/codiespX_evaluation.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.inference.evidence_eval import RULES, EvidenceItem, score_all, score_spans


def _it(doc: str, code: str, *spans: tuple[int, int]) -> EvidenceItem:
    return EvidenceItem(doc, code, tuple(spans))


def test_official_rule_is_the_headline() -> None:
    assert RULES[0] == "codiesp"
    gold = [_it("d", "icd10cm:I10", (100, 110))]
    assert score_spans(gold, [_it("d", "icd10cm:I10", (95, 115))]).tp == 1  # default rule is the official


def test_slack_boundaries_hand_computed() -> None:
    gold = [_it("d", "icd10cm:I10", (100, 110))]
    cases = {
        (100, 110): 1,  # identical
        (90, 120): 1,  # exactly 10 characters of slack on each side
        (89, 110): 0,  # 11 before the gold start
        (100, 121): 0,  # 11 after the gold end
        (101, 110): 0,  # starts inside the gold span: does not contain it
        (100, 109): 0,  # ends inside
        (102, 108): 0,  # strictly inside: overlaps but is not correct
        (0, 500): 0,  # the whole note
    }
    for span, tp in cases.items():
        s = score_spans(gold, [_it("d", "icd10cm:I10", span)], "codiesp")
        assert (s.tp, s.n_pred, s.n_gold) == (tp, 1, 1), span
        # the lenient overlap reading accepts every one of these
        assert score_spans(gold, [_it("d", "icd10cm:I10", span)], "overlap").tp == 1


def test_discontinuous_gold_runs_first_start_to_last_end() -> None:
    # "Estreptomicina intramuscular" at 2787 2801;2810 2823 -> [2787, 2823)
    gold = [_it("d", "icd10pcs:3e02329", (2787, 2801), (2810, 2823))]
    assert score_spans(gold, [_it("d", "icd10pcs:3e02329", (2787, 2823))]).tp == 1
    assert score_spans(gold, [_it("d", "icd10pcs:3e02329", (2787, 2801))]).tp == 0  # first piece only
    assert score_spans(gold, [_it("d", "icd10pcs:3e02329", (2780, 2830))]).tp == 1


def test_unique_document_code_pairs_micro_prf() -> None:
    gold = [
        _it("d1", "icd10cm:I10", (10, 13)),
        _it("d1", "icd10cm:I10", (50, 53)),  # a second reference of the same pair: one gold pair
        _it("d1", "icd10cm:E11.9", (20, 30)),
        _it("d2", "icd10cm:R50.9", (0, 6)),
    ]
    pred = [
        _it("d1", "icd10cm:I10", (48, 55)),  # finds the second reference: enough for the pair
        _it("d1", "icd10cm:I10", (200, 210)),  # a wrong span of the same pair: still one predicted pair
        _it("d1", "icd10cm:E11.9", (22, 28)),  # inside, not containing: miss
        _it("d2", "icd10cm:R50.9", (0, 6)),
        _it("d2", "icd10cm:J18.9", (0, 6)),  # right place, wrong code
        _it("d3", "icd10cm:I10", (0, 3)),  # a document without gold
    ]
    s = score_spans(gold, pred, "codiesp")
    # gold pairs: (d1,I10) (d1,E11.9) (d2,R50.9) = 3; predicted pairs: 5; TP: (d1,I10) (d2,R50.9) = 2
    assert (s.tp, s.n_pred, s.n_gold) == (2, 5, 3)
    assert s.precision == 0.4 and s.recall == round(2 / 3, 6) and s.f1 == 0.5
    # the same code in another document does not count
    assert score_spans(gold, [_it("d2", "icd10cm:I10", (10, 13))]).tp == 0
    assert set(score_all(gold, pred)) == set(RULES)


def _official(gold: list[EvidenceItem], pred: list[EvidenceItem]) -> tuple[int, int, int]:
    """The organisers' computation, transcribed literally (merge on document and code, `is_valid`, one
    valid reference per pair is enough), for the property test below."""
    pred_pairs = {(p.doc_id, p.code) for p in pred}
    gold_pairs = {(g.doc_id, g.code) for g in gold}
    valid: set[tuple[str, str]] = set()
    for g in gold:
        gs, ge = min(a for a, _ in g.spans), max(b for _, b in g.spans)
        for p in pred:
            if (p.doc_id, p.code) == (g.doc_id, g.code):
                ps, pe = p.spans[0][0], p.spans[-1][1]
                if 0 <= gs - ps <= 10 and 0 <= pe - ge <= 10:
                    valid.add((g.doc_id, g.code))
    return len(valid), len(pred_pairs), len(gold_pairs)


_span = st.tuples(st.integers(0, 60), st.integers(1, 25)).map(lambda x: (x[0], x[0] + x[1]))
_item = st.builds(_it, st.sampled_from(["a", "b"]), st.sampled_from(["c:1", "c:2"]), _span)


@settings(max_examples=200, deadline=None)
@given(st.lists(_item, max_size=6), st.lists(_item, max_size=6))
def test_matches_the_organisers_computation(gold: list[EvidenceItem], pred: list[EvidenceItem]) -> None:
    s = score_spans(gold, pred, "codiesp")
    assert (s.tp, s.n_pred, s.n_gold) == _official(gold, pred)
    assert 0.0 <= s.precision <= 1.0 and 0.0 <= s.recall <= 1.0

"""Evidence spans (attention -> readable phrases, occlusion), the span scorer (CodiEsp-X rule, exact, chars),
the MDACE reader on a MIMIC-schema fixture, and `icdcoder predict --evidence`."""

from __future__ import annotations

import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.data.document import Document, Evidence
from icdcoder.errors import DataError, IcdcoderError
from icdcoder.inference.evidence import EvidenceSpan, mark_context, occlusion_weights, spans_from_attention
from icdcoder.inference.evidence_eval import (
    EvidenceItem,
    dictionary_evidence,
    evaluate_evidence,
    gold_from_documents,
    mention_dictionary,
    random_evidence,
    read_mdace,
    score_spans,
)
from icdcoder.text.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from test_serving import NOTE, trained_tiny_model

TOK = Tokenizer()

# ---- attention -> phrases ---------------------------------------------------------------------------------

TEXT = "Patient has type 2 diabetes mellitus. Denies chest pain, fever."
# tokens: patient has type diabetes mellitus denies chest pain fever   ("2" is numeric: dropped)
WEIGHTS = np.array([0.01, 0.02, 0.05, 0.6, 0.1, 0.02, 0.1, 0.05, 0.05])


def test_phrase_stops_at_sentence_trims_stop_words_and_keeps_numbers_inside() -> None:
    toks = TOK.tokenize(TEXT)
    assert [t.text for t in toks] == "patient has type diabetes mellitus denies chest pain fever".split()
    # seed "diabetes", window 2: "has .. mellitus" (the sentence ends there), "has" is a stop word.
    assert spans_from_attention(WEIGHTS, toks, top_tokens=1, text=TEXT) == [
        EvidenceSpan(12, 36, 0.6, "type 2 diabetes mellitus")
    ]
    # seeds diabetes, mellitus (same phrase) and chest ("Denies chest pain": the comma ends it).
    assert spans_from_attention(WEIGHTS, toks, top_tokens=3, text=TEXT) == [
        EvidenceSpan(12, 36, 0.6, "type 2 diabetes mellitus"),
        EvidenceSpan(38, 55, 0.1, "Denies chest pain"),
    ]
    # without the text: token windows, no boundaries, no text
    assert spans_from_attention(WEIGHTS, toks, top_tokens=3) == [EvidenceSpan(12, 62, 0.6, "")]


def test_words_are_completed_and_punctuation_dropped() -> None:
    text = "Dx: non-small cell carcinoma; COVID-19 pneumonia. Fever."
    toks = TOK.tokenize(text)
    w = np.zeros(len(toks))
    w[[t.text for t in toks].index("small")] = 1.0
    assert [s.text for s in spans_from_attention(w, toks, top_tokens=1, window=0, text=text)] == ["non-small"]
    w[:] = 0
    w[[t.text for t in toks].index("covid")] = 1.0
    assert [s.text for s in spans_from_attention(w, toks, top_tokens=1, window=0, text=text)] == ["COVID-19"]
    w[:] = 0
    w[-1] = 1.0
    assert [s.text for s in spans_from_attention(w, toks, top_tokens=1, window=3, text=text)] == ["Fever"]


def test_stop_word_only_and_zero_weight_seeds_are_dropped() -> None:
    text = "Of the. Pain."
    toks = TOK.tokenize(text)
    assert spans_from_attention(np.array([0.9, 0.05, 0.05]), toks, top_tokens=1, text=text) == []
    assert spans_from_attention(np.array([0.0, 0.0, 0.0]), toks, top_tokens=3, text=text) == []
    got = spans_from_attention(
        np.array([0.5, 0.1, 0.4]), toks, top_tokens=2, min_relative_weight=0.5, text=text
    )
    assert got == [EvidenceSpan(8, 12, 0.4, "Pain")]  # "of" is a stop word; "the" below half the best


def test_neighbours_that_meet_after_word_completion_merge() -> None:
    text = "alpha-beta-gamma"  # tokens alpha, beta, gamma; seeds on alpha and gamma
    toks = TOK.tokenize(text)
    assert spans_from_attention(np.array([0.5, 0.0, 0.4]), toks, top_tokens=2, window=0, text=text) == [
        EvidenceSpan(0, 16, 0.5, "alpha-beta-gamma")
    ]


words = st.sampled_from("the of fever chest pain b12 covid-19 non-small 38.5 de la fiebre".split())
seps = st.sampled_from([" ", ", ", ". ", "\n", " (", ") ", "-", "; "])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(words, seps), min_size=1, max_size=25), st.data())
def test_spans_are_exact_disjoint_and_ordered(parts: list[tuple[str, str]], data: st.DataObject) -> None:
    text = "".join(w + s for w, s in parts)
    toks = TOK.tokenize(text)
    weights = np.array(data.draw(st.lists(st.floats(0, 1), min_size=len(toks), max_size=len(toks))))
    k = data.draw(st.integers(1, 5))
    spans = spans_from_attention(weights, toks, top_tokens=k, window=data.draw(st.integers(0, 3)), text=text)
    assert len(spans) <= k
    assert [s.weight for s in spans] == sorted((s.weight for s in spans), reverse=True)
    ordered = sorted(spans, key=lambda s: s.start)
    for a, b in itertools.pairwise(ordered):
        assert a.end < b.start  # disjoint, not even touching
    for s in spans:
        assert 0 <= s.start < s.end <= len(text) and text[s.start : s.end] == s.text
        assert s.text[0].isalnum() and s.text[-1].isalnum()
        assert any(t.text not in ("the", "of", "de", "la") for t in TOK.tokenize(s.text))


def test_occlusion_weights_hand_computed() -> None:
    ids = np.array([3, 4, 7, 5, 6], dtype=np.int64)

    def score(variants: list[np.ndarray]) -> np.ndarray:
        # code 0 depends on token 7 only; code 1 on nothing
        return np.array([[0.9 if 7 in v else 0.1, 0.5] for v in variants])

    w = occlusion_weights(score, ids, [0, 1], window=2)
    np.testing.assert_allclose(w[0], [0, 0, 0.8, 0.8, 0], atol=1e-6)  # window [7, 5] removed: 0.9 -> 0.1
    np.testing.assert_allclose(w[1], 0)


# ---- the span scorer --------------------------------------------------------------------------------------


def _it(doc: str, code: str, *spans: tuple[int, int]) -> EvidenceItem:
    return EvidenceItem(doc, code, tuple(spans))


GOLD = [
    _it("d1", "icd10cm:I10", (10, 22)),
    _it("d1", "icd10cm:I10", (10, 22)),  # duplicate row: counts once
    _it("d1", "icd10cm:E11.9", (30, 35), (40, 50)),  # discontinuous: interval [30, 50)
    _it("d2", "icd10cm:R50.9", (0, 5)),
]
PRED = [
    _it("d1", "icd10cm:I10", (20, 25)),  # overlaps gold I10
    _it("d1", "icd10cm:I10", (12, 14)),  # also overlaps, but the gold mention is already matched
    _it("d1", "icd10cm:E11.9", (36, 39)),  # inside the gap, but inside the interval: overlap
    _it("d2", "icd10cm:R50.9", (5, 9)),  # touches [0, 5) without overlapping
    _it("d2", "icd10cm:J18.9", (0, 5)),  # right place, wrong code
]


def test_codiesp_x_overlap_rule_hand_computed() -> None:
    s = score_spans(GOLD, PRED, "overlap")
    # gold items: I10, E11.9, R50.9 = 3; predicted (distinct): 5; matched one to one: I10, E11.9 = 2
    assert (s.tp, s.n_pred, s.n_gold) == (2, 5, 3)
    assert s.precision == 0.4 and s.recall == round(2 / 3, 6) and s.f1 == 0.5


def test_exact_rule_and_chars() -> None:
    exact = score_spans(GOLD, [*PRED, _it("d1", "icd10cm:E11.9", (30, 35), (40, 50))], "exact")
    assert (exact.tp, exact.n_pred, exact.n_gold) == (1, 6, 3)
    c = score_spans(GOLD, PRED, "chars")
    # I10: gold [10,22) vs pred [12,14)+[20,25): 4 shared, 12 gold, 7 pred
    # E11.9: gold 5+10=15 chars vs [36,39): 0 shared, 3 pred;  R50.9: 5 gold vs 4 pred, 0 shared
    # J18.9: 5 pred chars, no gold
    assert (c.tp, c.n_gold, c.n_pred) == (4, 32, 19)
    with pytest.raises(IcdcoderError, match="unknown evidence matching rule"):
        score_spans(GOLD, PRED, "fuzzy")


def test_matching_is_maximal_not_greedy() -> None:
    gold = [_it("d", "c:x", (0, 10)), _it("d", "c:x", (20, 30))]
    pred = [_it("d", "c:x", (5, 25)), _it("d", "c:x", (8, 9))]  # greedy on the first could lose one
    assert score_spans(gold, pred, "overlap").tp == 2


def test_dictionary_baseline_hand_computed() -> None:
    train_text = "Dolor abdominal y fiebre. HTA."
    train = [
        _it("t", "icd10cm:R50.9", (18, 24)),  # "fiebre"
        _it("t", "icd10cm:I10", (26, 29)),  # "HTA"
        _it("t", "icd10cm:R10.9", (0, 5), (6, 15)),  # discontinuous: not a dictionary entry
        _it("t", "icd10cm:R52", (0, 2)),  # too short
    ]
    d = mention_dictionary([(train_text, train)])
    assert d == {"icd10cm:R50.9": {"fiebre"}, "icd10cm:I10": {"hta"}}
    note = "Sin fiebre previa. Fiebres no. FIEBRE alta, hta."
    gold = [
        _it("n", "icd10cm:R50.9", (4, 10)),
        _it("n", "icd10cm:I10", (0, 3)),
        _it("n", "icd10cm:R52", (0, 3)),
    ]
    got = dictionary_evidence(d, [("n", note)], gold, spans_per_code=2)
    # whole words only ("Fiebres" is not "fiebre"), case-insensitive, first occurrences; R52 has no entry
    assert got == [
        _it("n", "icd10cm:R50.9", (4, 10)),
        _it("n", "icd10cm:R50.9", (31, 37)),
        _it("n", "icd10cm:I10", (44, 47)),
    ]


def test_gold_from_documents_needs_offsets_into_the_text() -> None:
    ev = Evidence("icd10cm:I10", ((0, 4),), "HTA", offsets_in="text")
    assert gold_from_documents([Document("a", "HTA", ["icd10cm:I10"], evidence=[ev])]) == [
        EvidenceItem("a", "icd10cm:I10", ((0, 4),))
    ]
    empty = Evidence("icd10cm:I10", ((3, 3),), "", offsets_in="text")  # CodiEsp has a few of these
    assert gold_from_documents([Document("a", "HTA", ["icd10cm:I10"], evidence=[empty])]) == []
    es = Evidence("icd10cm:I10", ((0, 4),), "HTA", offsets_in="es")
    with pytest.raises(DataError, match="Spanish"):
        gold_from_documents([Document("a", "HTN", ["icd10cm:I10"], evidence=[es])])


# ---- MDACE on a MIMIC-schema fixture -------------------------------------------------------------------

NOTE_A = 'Discharge Diagnosis:\n1. Hypertension\n2. "CHF" exacerbation\nProcedure: cardiac cath'
NOTE_B = "CXR: no acute process"


def _write_mdace(root: Path) -> tuple[Path, Path]:
    mimic = root / "mimic"
    mimic.mkdir()
    cols = [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
    ]
    cols += ["CGID", "ISERROR", "TEXT"]
    with open(mimic / "NOTEEVENTS.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(cols)
        w.writerow([11, 1, 100, "2150-01-01", "", "", "Discharge summary", "Report", "", "", NOTE_A])
        w.writerow([12, 1, 100, "2150-01-01", "", "", "Radiology", "CHEST (PA & LAT)", "", "", NOTE_B])
        w.writerow(
            [13, 2, 200, "2150-01-02", "", "", "Discharge summary", "Report", "", "", "other admission"]
        )
    md = root / "mdace"
    data = md / "data" / "Inpatient" / "ICD-9" / "1.0"
    data.mkdir(parents=True)
    htn = NOTE_A.index("Hypertension")
    chf = NOTE_A.index("CHF")
    cath = NOTE_A.index("cardiac cath")

    def ann(b: int, e: int, code: str, system: str, kind: str = "Human") -> dict[str, object]:
        return {"begin": b, "end": e, "code": code, "code_system": system, "description": "", "type": kind}

    chart = {
        "hadm_id": 100,
        "comment": "",
        "notes": [
            {
                "note_id": 11,
                "category": "Discharge summary",
                "description": "Report",
                "annotations": [
                    ann(htn, htn + 12, "401.9", "ICD-9-CM"),
                    ann(chf, chf + 3, "428.0", "ICD-9-CM", "MapType.APPROX"),
                    ann(cath, cath + 12, "37.22", "ICD-9-PCS"),
                    ann(cath, cath + 12, "93458", "CPT"),
                    ann(5, 9999, "401.9", "ICD-9-CM"),  # beyond the note
                ],
            },
            {
                "note_id": 12,
                "category": "Radiology",
                "description": "",
                "annotations": [ann(0, 3, "V72.5", "ICD-9-CM")],
            },
        ],
    }
    (data / "100-ICD-9.json").write_text(json.dumps(chart), encoding="utf-8")
    other = {"hadm_id": 200, "comment": "", "notes": [{"note_id": 99, "category": "Discharge summary"}]}
    other["notes"][0]["annotations"] = [ann(0, 5, "250.00", "ICD-9-CM")]  # type: ignore[index]
    (data / "200-ICD-9.json").write_text(json.dumps(other), encoding="utf-8")
    splits = md / "splits" / "Inpatient"
    splits.mkdir(parents=True)
    (splits / "MDace-ev-test.csv").write_text("100\n200\n", encoding="utf-8")
    (splits / "MDace-ev-train.csv").write_text("300\n", encoding="utf-8")
    return md, mimic / "NOTEEVENTS.csv"


def test_read_mdace_pairs_offsets_with_noteevents(tmp_path: Path) -> None:
    md, notes = _write_mdace(tmp_path)
    got = read_mdace(md, notes, split="test")
    assert got.texts == {"11": NOTE_A}  # the radiology note is not a discharge summary
    assert got.hadm_of == {"11": 100}
    spans = {(g.code, NOTE_A[g.spans[0][0] : g.spans[0][1]]) for g in got.gold}
    assert spans == {
        ("icd9cm-dx:401.9", "Hypertension"),
        ("icd9cm-dx:428.0", "CHF"),
        ("icd9cm-proc:37.22", "cardiac cath"),
    }
    r = got.report
    assert r["charts"] == 2 and r["annotations_other_systems"] == 1 and r["annotations_out_of_range"] == 1
    assert r["annotations_other_categories"] == 1 and r["notes_missing_from_noteevents"] == 1
    human = read_mdace(md, notes, split="test", include_mapped=False)
    assert {g.code for g in human.gold} == {"icd9cm-dx:401.9", "icd9cm-proc:37.22"}
    assert read_mdace(md, notes, split="train").gold == []
    # the scorer reads them like CodiEsp-X items
    htn = NOTE_A.index("Hypertension")
    pred = [
        EvidenceItem("11", "icd9cm-dx:401.9", ((htn - 3, htn + 4),)),
        EvidenceItem("11", "icd9cm-dx:428.0", ((0, 9),)),
    ]
    s = score_spans(got.gold, pred, "overlap")
    assert (s.tp, s.n_pred, s.n_gold) == (1, 2, 3)


def test_read_mdace_errors(tmp_path: Path) -> None:
    md, notes = _write_mdace(tmp_path)
    with pytest.raises(DataError, match="ICD-10 not found"):
        read_mdace(md, notes, version="ICD-10")
    with pytest.raises(DataError, match="NOTEEVENTS file not found"):
        read_mdace(md, tmp_path / "nope.csv")
    with pytest.raises(DataError, match="split 'nonsense'"):
        read_mdace(md, notes, split="nonsense")


# ---- with a trained model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> object:
    from icdcoder.inference.predictor import Predictor

    return Predictor(trained_tiny_model(tmp_path_factory))


def test_predictor_evidence_methods(predictor: object) -> None:
    from icdcoder.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    att = predictor.predict([("a", NOTE)], top_k=2)[0]
    occ = predictor.predict([("a", NOTE)], top_k=2, evidence_method="occlusion", occlusion_window=2)[0]
    none = predictor.predict([("a", NOTE)], top_k=2, evidence=False)[0]
    assert (att.evidence_method, occ.evidence_method, none.evidence_method) == (
        "attention",
        "occlusion",
        None,
    )
    assert [c.key for c in att.codes] == [c.key for c in occ.codes]
    for r in (att, occ):
        for c in r.codes:
            assert c.evidence and all(NOTE[s.start : s.end] == s.text for s in c.evidence)
    assert all(c.evidence == [] for c in none.codes)
    top = {c.key: c.evidence[0].text.lower() for c in occ.codes}
    assert "hypertension" in top["icd10cm:I10"] and "fever" in top["icd10cm:R50.9"]
    explained = predictor.explain([("a", NOTE)], [["icd10cm:N39.0", "icd10cm:I10", "icd9cm-dx:401.9"]])[0]
    assert list(explained) == ["icd10cm:N39.0", "icd10cm:I10"]  # codes outside the label space: no entry
    with pytest.raises(IcdcoderError, match="unknown evidence method"):
        predictor.predict([("a", NOTE)], evidence_method="gradients")


def test_mark_context_hand_made() -> None:
    text = "Seen today. No persistent fever. Her father had hypertension. Cough."
    spans = [
        [EvidenceSpan(12, 31, 0.9, text[12:31])],  # "No persistent fever"
        # "hypertension", "Cough"
        [EvidenceSpan(48, 60, 0.5, text[48:60]), EvidenceSpan(62, 67, 0.4, text[62:67])],
        [],
    ]
    mark_context(spans, text, "en")
    assert [[s.context for s in code] for code in spans] == [["negated"], ["family", None], []]
    es = "Niega fiebre. Tos."
    spans = [[EvidenceSpan(6, 12, 1.0, "fiebre"), EvidenceSpan(14, 17, 1.0, "Tos")]]
    mark_context(spans, es, "es")
    assert [s.context for s in spans[0]] == ["negated", None]


def test_predictor_marks_negated_evidence(predictor: object) -> None:
    from icdcoder.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    note = "Seen today. History of essential hypertension. No persistent fever since Monday."
    r = predictor.predict([("a", note)], top_k=5, evidence_method="occlusion", occlusion_window=2)[0]
    by_code = {c.key: c.evidence for c in r.codes}
    fever = [s for s in by_code["icd10cm:R50.9"] if "fever" in s.text.lower()]
    assert fever and all(s.context == "negated" for s in fever)
    # "History of" is ConText's historical cue: marked, not hidden, and the code is still suggested
    assert any(s.context == "historical" for s in by_code["icd10cm:I10"] if "hypertension" in s.text)


def test_length_sorted_batches_return_notes_in_order(predictor: object) -> None:
    from icdcoder.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    notes = [("short", "fever"), ("long", NOTE + " " + NOTE), ("mid", NOTE)]
    small = Predictor(predictor.loaded, max_batch_cells=1)  # one note per model call
    a = predictor.predict(notes, top_k=2, batch_size=8)
    b = small.predict(notes, top_k=2, batch_size=8)
    assert [r.id for r in a] == ["short", "long", "mid"] == [r.id for r in b]
    for x, y in zip(a, b, strict=True):
        assert [c.key for c in x.codes] == [c.key for c in y.codes]
        assert [c.probability for c in x.codes] == pytest.approx([c.probability for c in y.codes], abs=1e-5)
        for cx, cy in zip(x.codes, y.codes, strict=True):  # batching changes floats in the last digits only
            assert [(e.start, e.end, e.text) for e in cx.evidence] == [
                (e.start, e.end, e.text) for e in cy.evidence
            ]


def test_evaluate_evidence_end_to_end(predictor: object) -> None:
    from icdcoder.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    start = NOTE.index("essential hypertension")
    gold = [
        EvidenceItem("a", "icd10cm:I10", ((start, start + 22),)),
        EvidenceItem("a", "icd9cm-dx:401.9", ((0, 4),)),  # outside the label space
    ]
    out = evaluate_evidence(predictor, [("a", NOTE)], gold, spans_per_code=[1])
    assert out["gold_items"] == 2 and out["gold_items_in_label_space"] == 1
    res = out["results"]["spans_per_code=1"]
    assert set(res) == {"system", "oracle_codes", "random_spans"}
    assert res["oracle_codes"]["overlap"]["recall"] == 1.0  # the model points at "essential hypertension"
    rand = random_evidence(
        predictor, [("a", NOTE)], [EvidenceItem("a", "icd10cm:I10", ((start, start + 22),))]
    )
    assert len(rand) == 1 and len(TOK.tokenize(NOTE[slice(*rand[0].interval)])) == 2  # same length, new place
    for block in res.values():
        for rule in ("overlap", "exact", "chars"):
            assert 0.0 <= block[rule]["f1"] <= 1.0


def test_cli_predict_evidence_switches(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from typer.testing import CliRunner

    from icdcoder.cli import app

    model = trained_tiny_model(tmp_path_factory)
    note = tmp_path / "n1.txt"
    note.write_text(NOTE, encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(model), str(note), "--format", "json", "--top-k", "2"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)[0]
    assert res["evidence_method"] == "attention"
    assert all(NOTE[e["start"] : e["end"]] == e["text"] for c in res["codes"] for e in c["evidence"])
    r = runner.invoke(app, ["predict", str(model), str(note), "--format", "json", "--no-evidence"])
    assert r.exit_code == 0 and all(c["evidence"] == [] for c in json.loads(r.stdout)[0]["codes"])
    r = runner.invoke(
        app, ["predict", str(model), str(note), "--format", "json", "--evidence-method", "occlusion"]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["evidence_method"] == "occlusion"
    r = runner.invoke(app, ["predict", str(model), str(note), "--evidence-method", "magic"])
    assert r.exit_code != 0
    # the table shows the ConText mark literally (rich markup would swallow "[negated]")
    note.write_text("No persistent fever.", encoding="utf-8")
    r = runner.invoke(app, ["predict", str(model), str(note), "--top-k", "5"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "[negated]" in r.stdout


def test_evidence_language_prefers_the_models_own() -> None:
    from icdcoder.inference.predictor import evidence_language
    from icdcoder.training.config import parse_config

    spanish_matcher = parse_config(
        {"data": {"source": "prepared", "path": "d"}, "model": {"name": "matcher", "lang": "es"}}
    )
    assert evidence_language(spanish_matcher) == "es"  # the matcher's lang, not the prepared data's "en"
    codiesp_es = parse_config({"data": {"source": "codiesp", "lang": "es"}, "model": {"name": "laat"}})
    assert evidence_language(codiesp_es) == "es"
    assert evidence_language(parse_config({"data": {"path": "d"}, "model": {"name": "laat"}})) == "en"

"""The optional `spans` field of the user JSONL/CSV import: evidence offsets, validated and round-tripped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icdcoder.data.document import Document, Evidence
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.userfiles import iter_csv, iter_jsonl, prepare_userfile, write_csv, write_jsonl
from icdcoder.errors import DataError

NOTE = "Varón con HTA y diabetes tipo 2 mal controlada."
HTA = NOTE.index("HTA")
DM = NOTE.index("diabetes")


def _jsonl(path: Path, *rows: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_spans_become_evidence(tmp_path: Path) -> None:
    row = {
        "id": "n1",
        "text": NOTE,
        "codes": ["I10", "E11.9"],
        "spans": [
            {"code": "I10", "start": HTA, "end": HTA + 3},
            {"code": "icd10cm:E11.9", "offsets": [[DM, DM + 8], [DM + 9, DM + 15]]},  # discontinuous
        ],
    }
    (doc,) = iter_jsonl(_jsonl(tmp_path / "n.jsonl", row), system="icd10cm")
    assert doc.evidence == [
        Evidence("icd10cm:I10", ((HTA, HTA + 3),), "HTA"),
        Evidence("icd10cm:E11.9", ((DM, DM + 8), (DM + 9, DM + 15)), "diabetes tipo 2"),
    ]
    assert "spans" not in doc.meta


def test_csv_spans_column_is_json(tmp_path: Path) -> None:
    spans = json.dumps([{"code": "icd10cm:I10", "start": HTA, "end": HTA + 3}])
    f = tmp_path / "n.csv"
    f.write_text(
        "id,text,codes,spans\n"
        + f'n1,"{NOTE}",icd10cm:I10,"{spans.replace(chr(34), chr(34) * 2)}"\nn2,x,,\n',
        encoding="utf-8",
    )
    d1, d2 = iter_csv(f)
    assert d1.evidence == [Evidence("icd10cm:I10", ((HTA, HTA + 3),), "HTA")]
    assert d2.evidence == [] and d2.meta == {}


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ({"code": "I10"}, "'spans' must be a list"),
        (["I10"], "span 1 must be an object with a 'code'"),
        ([{"code": "I10", "start": 0}], "span 1 needs integer start/end"),
        ([{"code": "I10", "start": True, "end": 3}], "span 1 needs integer start/end"),
        ([{"code": "I10", "start": "0", "end": "3"}], "span 1 needs integer start/end"),
        ([{"code": "I10", "offsets": [[0, 1, 2]]}], "span 1 needs integer start/end"),
        (
            [{"code": "I10", "start": 0, "end": 3}, {"code": "I10", "start": 40, "end": 400}],
            r"span 2 \(icd10cm:I10\)",
        ),
        ([{"code": "I10", "start": 5, "end": 5}], "outside the text"),
        ([{"code": "I10", "start": -1, "end": 3}], "outside the text"),
        ([{"code": "J18.9", "start": 0, "end": 3}], "not one of the row's codes"),
    ],
)
def test_bad_spans_are_refused_naming_the_line(tmp_path: Path, spans: object, message: str) -> None:
    f = _jsonl(
        tmp_path / "n.jsonl",
        {"id": "a", "text": "ok", "codes": []},
        {"id": "b", "text": NOTE, "codes": ["I10"], "spans": spans},
    )
    with pytest.raises(DataError, match=message) as err:
        list(iter_jsonl(f, system="icd10cm"))
    assert err.value.line == 2 and NOTE not in str(err.value)


def test_csv_spans_bad_json_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text(f'id,text,codes,spans\nn1,"{NOTE}",icd10cm:I10,[{{code\n', encoding="utf-8")
    with pytest.raises(DataError, match="'spans' is not valid JSON"):
        list(iter_csv(f))


def test_prepared_dataset_keeps_user_spans(tmp_path: Path) -> None:
    row = {
        "id": "n1",
        "text": NOTE,
        "codes": ["I10"],
        "split": "train",
        "spans": [{"code": "I10", "start": HTA, "end": HTA + 3}],
    }
    f = _jsonl(tmp_path / "n.jsonl", row)
    prepare_userfile("jsonl", f, tmp_path / "prep", system="icd10cm", exists=lambda s, c: True)
    (doc,) = PreparedDataset.open(tmp_path / "prep").load("train")
    assert doc.evidence == [Evidence("icd10cm:I10", ((HTA, HTA + 3),), "HTA")]


# --------------------------------------------------------------------------- property: round trip, range


@st.composite
def _docs(draw: st.DrawFn) -> list[Document]:
    docs = []
    n = draw(st.integers(0, 4))
    for i in range(n):
        text = draw(st.text(min_size=0, max_size=40))
        codes = draw(
            st.lists(
                st.sampled_from(["icd10cm:I10", "icd10cm:E11.9", "icd10pcs:0QS"]), unique=True, max_size=3
            )
        )
        evidence = []
        if text and codes:
            for _ in range(draw(st.integers(0, 3))):
                k = draw(st.integers(1, min(2, (len(text) + 1) // 2)))
                cuts = sorted(
                    draw(st.lists(st.integers(0, len(text)), min_size=2 * k, max_size=2 * k, unique=True))
                )
                spans = tuple((cuts[2 * j], cuts[2 * j + 1]) for j in range(k))
                code = draw(st.sampled_from(codes))
                evidence.append(Evidence(code, spans, " ".join(text[a:b] for a, b in spans)))
        docs.append(Document(f"d{i}", text, codes, draw(st.sampled_from([None, "train"])), evidence=evidence))
    return docs


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(docs=_docs())
def test_spans_round_trip_through_jsonl_and_csv(tmp_path: Path, docs: list[Document]) -> None:
    write_jsonl(tmp_path / "rt.jsonl", docs)
    assert list(iter_jsonl(tmp_path / "rt.jsonl")) == docs
    write_csv(tmp_path / "rt.csv", docs)
    assert list(iter_csv(tmp_path / "rt.csv")) == docs


@_SETTINGS
@given(text=st.text(max_size=30), start=st.integers(-5, 40), length=st.integers(-3, 40))
def test_offsets_are_accepted_exactly_when_inside_the_text(
    tmp_path: Path, text: str, start: int, length: int
) -> None:
    end = start + length
    f = _jsonl(
        tmp_path / "p.jsonl",
        {"id": "a", "text": text, "codes": ["I10"], "spans": [{"code": "I10", "start": start, "end": end}]},
    )
    if 0 <= start < end <= len(text):
        (doc,) = iter_jsonl(f, system="icd10cm")
        assert doc.evidence[0].spans == ((start, end),) and doc.evidence[0].text == text[start:end]
    else:
        with pytest.raises(DataError, match="outside the text"):
            list(iter_jsonl(f, system="icd10cm"))

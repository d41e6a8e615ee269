import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icdcoder.data.document import Document
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.userfiles import (
    UserFileReport,
    code_key,
    hash_split,
    iter_csv,
    iter_jsonl,
    parse_split_ratios,
    prepare_userfile,
    write_csv,
    write_jsonl,
)
from icdcoder.data.validate import CodeValidator, validate_documents
from icdcoder.errors import DataError, IcdcoderError


def _all_known(system: str, code: str) -> bool:
    return True


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ------------------------------------------------------------------------------------------ JSONL


def test_jsonl_reads_codes_systems_splits_and_meta(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "notes.jsonl",
        "\ufeff"  # a BOM is fine
        + json.dumps(
            {"id": "n1", "text": "Chest pain.", "codes": ["i10", "icd9cm-dx:4019"], "split": "TRAIN"}
        )
        + "\n\n"  # blank lines are skipped
        + json.dumps(
            {"id": 7, "text": "Fever", "codes": "r50.9; icd10pcs:0qs| ", "ward": "B", "meta": {"x": 1}}
        )
        + "\r\n"
        + json.dumps({"id": "n3", "text": None, "codes": None, "split": ""})
        + "\n",
    )
    docs = list(iter_jsonl(f, system="icd10cm"))
    assert [d.id for d in docs] == ["n1", "7", "n3"]
    # A per-code system wins over --system; codes are normalised (dots, upper case).
    assert docs[0].codes == ["icd10cm:I10", "icd9cm-dx:401.9"]
    assert docs[0].split == "train"
    assert docs[1].codes == ["icd10cm:R50.9", "icd10pcs:0QS"]
    assert docs[1].split is None
    assert docs[1].meta == {"x": 1, "ward": "B"}
    assert docs[2].text == "" and docs[2].codes == [] and docs[2].split is None


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.jsonl", '{"id": "a", "text": "t", "codes": []}\n{"id": "b", "text": \n')
    with pytest.raises(DataError, match=r"n\.jsonl:2: invalid JSON") as info:
        list(iter_jsonl(f, system="icd10cm"))
    assert "Fix: write one JSON object per line." in str(info.value)


def test_jsonl_missing_key_suggests_close_name(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.jsonl", json.dumps({"ID": "a", "note": "secret text", "codes": []}) + "\n")
    with pytest.raises(DataError) as info:
        list(iter_jsonl(f, system="icd10cm"))
    msg = str(info.value)
    assert msg.startswith(f"{f}:1: missing key(s) 'id', 'text'; found ['ID', 'note', 'codes']")
    assert "rename 'ID' to 'id'; rename 'note' to 'text'" in msg
    assert "secret" not in msg  # never show note text


def test_jsonl_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x", "codes": []}, {"id": "b", "text": "y", "codes": []}]
    rows.append({"id": "a", "text": "z", "codes": []})
    f = _write(tmp_path / "n.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"n\.jsonl:3: duplicate id 'a' \(first at line 1\)"):
        list(iter_jsonl(f, system="icd10cm"))


def test_jsonl_code_without_system(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.jsonl", json.dumps({"id": "a", "text": "x", "codes": ["I10"]}) + "\n")
    with pytest.raises(DataError, match=r"n\.jsonl:1: code 'I10' has no code system\. Fix: pass --system"):
        list(iter_jsonl(f))
    f2 = _write(tmp_path / "m.jsonl", json.dumps({"id": "a", "text": "x", "codes": ["icd11:BA00"]}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:1: unknown code system 'icd11'"):
        list(iter_jsonl(f2))


def test_jsonl_bad_types(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.jsonl", json.dumps({"id": "a", "text": "x", "codes": [1]}) + "\n")
    with pytest.raises(DataError, match="'codes' must be a list of strings"):
        list(iter_jsonl(f, system="icd10cm"))
    f = _write(tmp_path / "n.jsonl", json.dumps([1, 2]) + "\n")
    with pytest.raises(DataError, match="expected a JSON object, found list"):
        list(iter_jsonl(f, system="icd10cm"))


# -------------------------------------------------------------------------------------------- CSV


def test_csv_reads_quoted_notes_separators_and_meta(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "notes.csv",
        "\ufeffid,text,codes,split,ward\r\n"
        'n1,"Pain, left side.\r\nSecond line ""quoted"".",I10;R07.9,dev,A\r\n'
        "n2,Fever,icd9cm-dx:4019|R50.9,,B\r\n"
        "\r\n"
        "n3,,,test,C\r\n",
    )
    report = UserFileReport()
    docs = list(iter_csv(f, system="icd10cm", report=report))
    assert [d.id for d in docs] == ["n1", "n2", "n3"]
    assert docs[0].text == 'Pain, left side.\r\nSecond line "quoted".'
    assert docs[0].codes == ["icd10cm:I10", "icd10cm:R07.9"]
    assert docs[0].split == "dev"
    assert docs[0].meta == {"ward": "A"}
    assert docs[1].codes == ["icd9cm-dx:401.9", "icd10cm:R50.9"]
    assert docs[1].split is None
    assert docs[2].text == "" and docs[2].codes == [] and docs[2].split == "test"
    assert report.rows == 3


def test_csv_custom_separator_delimiter_and_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.tsv", "doc\tnote\tlabels\nx\tsome text\tI10,E11.9\n")
    docs = list(
        iter_csv(
            f, "icd10cm", sep=",", delimiter="\t", columns={"id": "doc", "text": "note", "codes": "labels"}
        )
    )
    assert docs == [Document("x", "some text", ["icd10cm:I10", "icd10cm:E11.9"], None, {})]


def test_csv_missing_columns_are_named_with_suggestions(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.csv", "ID,note,codes\na,b,c\n")
    with pytest.raises(DataError) as info:
        list(iter_csv(f, system="icd10cm"))
    msg = str(info.value)
    assert msg.startswith(f"{f}:1: missing column(s) 'id', 'text'; found ['ID', 'note', 'codes']")
    assert "expected ['id', 'text', 'codes'] (and optionally 'split', 'spans')" in msg
    assert (
        "rename 'ID' to 'id' or pass --id-column ID; rename 'note' to 'text' or pass --text-column note"
        in msg
    )
    f2 = _write(tmp_path / "m.csv", "id,body_text,diagnosis\n")
    with pytest.raises(DataError, match=r"Fix: add the 'text', 'codes' column\(s\)\."):
        list(iter_csv(f2, system="icd10cm"))


def test_csv_not_utf8_names_line_and_byte(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.csv", "id,text,codes\na,fine,I10\nb,fièvre,R50.9\n", encoding="latin-1")
    with pytest.raises(DataError) as info:
        list(iter_csv(f, system="icd10cm"))
    # "id,text,codes\n" is 14 bytes, "a,fine,I10\n" 11, "b,fi" 4: the latin-1 è is byte 29, on line 3.
    assert str(info.value).startswith(
        f"{f}:3: not valid UTF-8 (byte offset 29). Fix: re-encode the file as UTF-8"
    )


def test_jsonl_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "n.jsonl"
    f.write_bytes(b'{"id": "a", "text": "ok", "codes": []}\n{"id": "b", "text": "\xff", "codes": []}\n')
    # Line 1 is 39 bytes; 0xff is the 22nd byte of line 2: offset 39 + 21 = 60.
    with pytest.raises(DataError, match=r"n\.jsonl:2: not valid UTF-8 \(byte offset 60\)"):
        list(iter_jsonl(f))


def test_csv_wrong_field_count_and_duplicate(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.csv", 'id,text,codes\na,"two\nlines",I10\nb,x\n')
    with pytest.raises(DataError, match=r"n\.csv:4: expected 3 fields, found 2"):
        list(iter_csv(f, system="icd10cm"))
    f = _write(tmp_path / "d.csv", 'id,text,codes\na,"two\nlines",I10\nb,x,\na,y,\n')
    with pytest.raises(DataError, match=r"d\.csv:5: duplicate id 'a' \(first at line 2\)"):
        list(iter_csv(f, system="icd10cm"))


def test_unknown_split_value_suggests(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.csv", "id,text,codes,split\na,x,I10,validation\n")
    with pytest.raises(DataError, match=r"n\.csv:2: unknown split value 'validation'.*did you mean 'dev'"):
        list(iter_csv(f, system="icd10cm"))


def test_code_key() -> None:
    assert code_key(" n44.8 ", "icd10cm") == "icd10cm:N44.8"
    assert code_key("ICD10PCS:0qs", "icd10cm") == "icd10pcs:0QS"
    with pytest.raises(IcdcoderError, match="no code system"):
        code_key("N44.8", None)
    with pytest.raises(IcdcoderError, match="has a system but no code"):
        code_key("icd10cm:", None)


# ------------------------------------------------------------------------------- writer round trip

_CODES = st.lists(
    st.sampled_from(["icd10cm:I10", "icd10cm:N44.8", "icd9cm-dx:401.9", "icd9cm-proc:96.04", "icd10pcs:0QS"]),
    unique=True,
    max_size=4,
)
_IDS = st.text(min_size=1, max_size=12).filter(lambda s: bool(s.strip()))
_DOCS = st.lists(
    st.builds(
        lambda i, t, c, s: Document(i, t, c, s),
        _IDS,
        st.text(max_size=60),
        _CODES,
        st.sampled_from([None, "train", "dev", "test"]),
    ),
    max_size=6,
    unique_by=lambda d: d.id,
)
_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(docs=_DOCS)
def test_jsonl_round_trip(tmp_path: Path, docs: list[Document]) -> None:
    path = tmp_path / "rt.jsonl"
    write_jsonl(path, docs)
    assert list(iter_jsonl(path)) == docs


@_SETTINGS
@given(docs=_DOCS)
def test_csv_round_trip(tmp_path: Path, docs: list[Document]) -> None:
    path = tmp_path / "rt.csv"
    write_csv(path, docs)
    assert list(iter_csv(path)) == docs


# ---------------------------------------------------------------------------------------- splits


def test_split_ratios_and_hash_split() -> None:
    assert parse_split_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.1", "0.5,0.5,0.5", "a,b,c", "1.1,-0.1,0"):
        with pytest.raises(DataError, match="split ratios"):
            parse_split_ratios(bad)
    ratios = (0.8, 0.1, 0.1)
    splits = [hash_split(str(i), ratios, seed=3) for i in range(2000)]
    assert splits == [hash_split(str(i), ratios, seed=3) for i in range(2000)]  # deterministic
    assert splits != [hash_split(str(i), ratios, seed=4) for i in range(2000)]  # the seed matters
    # Binomial(2000, 0.1) has sd 13.4: 200 +/- 60 is beyond 4 sd.
    assert 140 < splits.count("dev") < 260 and 140 < splits.count("test") < 260
    assert hash_split("x", (1.0, 0.0, 0.0), seed=0) == "train"
    assert hash_split("x", (0.0, 0.0, 1.0), seed=0) == "test"


# ---------------------------------------------------------------------------------------- prepare


def _notes(tmp_path: Path) -> Path:
    rows = [
        {"id": "a", "text": "chest pain", "codes": ["I10", "R07.9"]},
        {"id": "b", "text": "  ", "codes": ["I10"]},
        {"id": "c", "text": "fever", "codes": ["R50.9", "Q99.99"]},
        {"id": "d", "text": "nothing", "codes": []},
    ]
    return _write(tmp_path / "notes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_prepare_reports_empty_notes_and_assigns_splits(tmp_path: Path) -> None:
    stats = prepare_userfile(
        "jsonl",
        _notes(tmp_path),
        tmp_path / "out",
        "icd10cm",
        split_ratios="0,0,1",
        seed=1,
        exists=_all_known,
    )
    assert list(stats["splits"]) == ["test"]
    assert stats["splits"]["test"]["documents"] == 4
    assert stats["splits"]["test"]["empty_notes"] == 1
    report = stats["report"]
    assert report["empty_notes"] == {"count": 1, "dropped": False, "examples": ["b"]}
    assert report["documents_without_codes"] == 1
    assert report["split_assignment"] == {
        "method": "sha256",
        "ratios": [0.0, 0.0, 1.0],
        "seed": 1,
        "assigned": 4,
    }
    assert stats["options"]["file"] == "notes.jsonl"


def test_prepare_unsplit_drop_empty_and_drop_unknown(tmp_path: Path) -> None:
    known = {"icd10cm:I10", "icd10cm:R07.9", "icd10cm:R50.9"}
    stats = prepare_userfile(
        "jsonl",
        _notes(tmp_path),
        tmp_path / "out",
        "icd10cm",
        drop_empty=True,
        unknown_codes="drop",
        exists=lambda s, c: f"{s}:{c}" in known,
    )
    assert stats["splits"]["unsplit"]["documents"] == 3
    assert stats["report"]["empty_notes"]["dropped"] is True
    val = stats["report"]["code_validation"]
    assert val["unknown"]["by_system"]["icd10cm"]["examples"] == ["icd10cm:Q99.99"]
    assert val["dropped_assignments"] == 1 and val["documents_changed"] == 1
    docs = PreparedDataset.open(tmp_path / "out").load()
    assert [(d.id, d.split, d.codes) for d in docs] == [
        ("a", None, ["icd10cm:I10", "icd10cm:R07.9"]),
        ("c", None, ["icd10cm:R50.9"]),
        ("d", None, []),
    ]


def test_prepare_failure_leaves_nothing(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "id,text,codes\na,x,I10\na,y,I10\n")
    with pytest.raises(DataError, match="duplicate id 'a'"):
        prepare_userfile("csv", f, tmp_path / "out", "icd10cm", exists=_all_known)
    assert not (tmp_path / "out").exists()
    with pytest.raises(
        DataError, match=r"1 unknown code\(s\) in 1 assignment\(s\) \(e\.g\. icd10cm:Q99\.99\)"
    ):
        prepare_userfile(
            "jsonl",
            _notes(tmp_path),
            tmp_path / "out",
            "icd10cm",
            unknown_codes="fail",
            exists=lambda s, c: c != "Q99.99",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "notes.jsonl"]


# ------------------------------------------------------------------------------------- validator


def test_validator_tells_malformed_from_unknown() -> None:
    docs = [
        Document("a", "t", ["icd10cm:I10", "icd10cm:ZZZZ9", "icd9cm-dx:999.99"]),
        Document("b", "t", ["icd9cm-dx:999.99", "icd10pcs:0QS"]),
    ]
    validator = CodeValidator("keep", exists=lambda s, c: c in {"I10", "0QS"})
    out = list(validate_documents(docs, validator))
    assert [d.codes for d in out] == [[*docs[0].codes], [*docs[1].codes]]  # keep: unchanged
    rep = validator.report()
    assert rep["assignments_checked"] == 5
    # "ZZZZ9" has no ICD-10-CM shape (malformed); "999.99" has the ICD-9 shape but is not known (unknown).
    assert rep["malformed"] == {
        "assignments": 1,
        "distinct": 1,
        "by_system": {"icd10cm": {"assignments": 1, "distinct": 1, "examples": ["icd10cm:ZZZZ9"]}},
    }
    assert rep["unknown"]["by_system"] == {
        "icd9cm-dx": {"assignments": 2, "distinct": 1, "examples": ["icd9cm-dx:999.99"]}
    }
    assert rep["ontology_checked"] is True


def test_validator_fail_lists_at_most_five_examples() -> None:
    docs = [Document(str(i), "t", [f"icd10cm:A0{i}"]) for i in range(8)]
    validator = CodeValidator("fail", exists=lambda s, c: False)
    with pytest.raises(DataError) as info:
        list(validate_documents(docs, validator))
    msg = str(info.value)
    assert msg.startswith(
        "8 unknown code(s) in 8 assignment(s) (e.g. icd10cm:A00, icd10cm:A01, icd10cm:A02, "
    )
    assert "icd10cm:A04)" in msg and "A05" not in msg


def test_validator_without_ontology() -> None:
    assert CodeValidator("keep", exists=None).report()["ontology_checked"] is False
    with pytest.raises(DataError, match="needs the offline ontology"):
        CodeValidator("drop", exists=None)
    with pytest.raises(DataError, match="keep, drop, fail"):
        CodeValidator("ignore", exists=_all_known)


def test_prepare_with_the_real_ontology(tmp_path: Path) -> None:
    pytest.importorskip("icdcoder.ontology.ontology")
    stats = prepare_userfile("jsonl", _notes(tmp_path), tmp_path / "out", "icd10cm")
    val = stats["report"]["code_validation"]
    assert val["ontology_checked"] is True
    # I10, R07.9 and R50.9 are ICD-10-CM codes; Q99.99 has the shape of one but does not exist.
    assert val["unknown"]["by_system"] == {
        "icd10cm": {"assignments": 1, "distinct": 1, "examples": ["icd10cm:Q99.99"]}
    }
    assert val["malformed"]["distinct"] == 0

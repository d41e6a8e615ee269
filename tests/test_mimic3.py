"""MIMIC-III reader on tiny files in MIMIC-III v1.4's CSV schema, written here with made-up text.

HADM_IDs are real ones taken from the shipped split files, so split assignment is the real one.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icdcoder.cli.data_mimic import register
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources import mimic_common
from icdcoder.data.sources.mimic3 import iter_mimic3, load_mimic3, prepare_mimic3, read_code_list
from icdcoder.data.sources.mimic_common import (
    CodeIndex,
    CodeRows,
    boundary_tie,
    caml_full_extra_train_ids,
    caml_split_ids,
    frequent_codes,
    load_split_ids,
    top_codes,
)
from icdcoder.errors import DataError, IcdcoderError

NOTE_HEADER = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "CATEGORY",
    "DESCRIPTION",
    "CGID",
    "ISERROR",
    "TEXT",
]
CODE_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
DS = "Discharge summary"

FULL = caml_split_ids("full")
FIFTY = caml_split_ids("50")
CLEAN = load_split_ids("mimic3-clean")


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        w.writerows(rows)
    return path


class Mimic3Files:
    """Builds NOTEEVENTS / DIAGNOSES_ICD / PROCEDURES_ICD row by row."""

    def __init__(self) -> None:
        self.notes: list[list[Any]] = []
        self.dx: list[list[Any]] = []
        self.proc: list[list[Any]] = []

    def note(
        self,
        hadm: int | str,
        text: str,
        *,
        category: str = DS,
        desc: str = "Report",
        date: str = "2150-01-01",
    ) -> None:
        subject = 90000 + len(self.notes)
        row_id = len(self.notes) + 1
        self.notes.append([row_id, subject, hadm, date, "", "", category, desc, "", "", text])

    def codes(self, hadm: int, dx: Sequence[str] = (), proc: Sequence[str] = ()) -> None:
        for seq, c in enumerate(dx, start=1):
            self.dx.append([len(self.dx) + 1, 7, hadm, seq, c])
        for seq, c in enumerate(proc, start=1):
            self.proc.append([len(self.proc) + 1, 7, hadm, seq, c])

    def write(self, d: Path, *, gz: bool = False, lower: bool = False) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        ext = ".csv.gz" if gz else ".csv"

        def name(stem: str) -> str:
            return (stem.lower() if lower else stem) + ext

        def hdr(h: list[str]) -> list[str]:
            return [c.lower() for c in h] if lower else h

        _write(d / name("NOTEEVENTS"), hdr(NOTE_HEADER), self.notes)
        _write(d / name("DIAGNOSES_ICD"), hdr(CODE_HEADER), self.dx)
        _write(d / name("PROCEDURES_ICD"), hdr(CODE_HEADER), self.proc)
        return d


# --------------------------------------------------------------------------------------------------
# Split ids


def test_load_split_ids_published_counts() -> None:
    def counts(name: str) -> tuple[int, ...]:
        ids = load_split_ids(name)
        return tuple(len(ids[s]) for s in ("train", "dev", "test"))

    # mimic3-full: CAML's lists minus the 4 train ids CAML's data never had -> the published 47,719.
    assert counts("mimic3-full") == (47_719, 1_631, 3_372)
    assert counts("mimic3-50") == (8_066, 1_573, 1_729)
    assert counts("mimic3-clean") == (38_401, 5_577, 8_734)
    for name in ("mimic3-full", "mimic3-50", "mimic3-clean"):
        ids = load_split_ids(name)
        assert not (set(ids["train"]) & set(ids["dev"])) and not (set(ids["dev"]) & set(ids["test"]))
        assert not (set(ids["train"]) & set(ids["test"]))
        assert counts(name) == tuple(mimic_common.PUBLISHED_COUNTS[name].values())


def test_caml_raw_lists_and_the_four_extra_train_ids() -> None:
    assert [len(FULL[s]) for s in ("train", "dev", "test")] == [47_723, 1_631, 3_372]
    assert caml_full_extra_train_ids() == [109963, 110220, 142890, 182252]
    edin_full = mimic_common._edin_ids("mimic3-full")
    assert set(load_split_ids("mimic3-full")["train"]) == set(edin_full["train"])
    assert set(FULL["dev"]) == set(edin_full["dev"]) and set(FULL["test"]) == set(edin_full["test"])
    edin_50 = mimic_common._edin_ids("mimic3-50")
    assert all(set(FIFTY[s]) == set(edin_50[s]) for s in ("train", "dev", "test"))


def test_unknown_split_table() -> None:
    with pytest.raises(DataError, match="mimic3-full"):
        load_split_ids("mimic3-top50")


# --------------------------------------------------------------------------------------------------
# Label-space helpers


def test_top_codes_hand_made_table_with_tie() -> None:
    counts = {
        "icd9cm-dx:401.9": 9,
        "icd9cm-proc:96.04": 7,
        "icd9cm-dx:427.31": 7,
        "icd9cm-dx:428.0": 7,
        "icd9cm-dx:V58.61": 2,
    }
    # rank 2-4 tie at 7: broken by key ascending -> icd9cm-dx:427.31, icd9cm-dx:428.0 before icd9cm-proc:96.04
    assert top_codes(counts, 3) == ["icd9cm-dx:401.9", "icd9cm-dx:427.31", "icd9cm-dx:428.0"]
    assert boundary_tie(counts, 3) is True
    assert boundary_tie(counts, 4) is False
    assert top_codes(counts, 10) == [
        "icd9cm-dx:401.9",
        "icd9cm-dx:427.31",
        "icd9cm-dx:428.0",
        "icd9cm-proc:96.04",
        "icd9cm-dx:V58.61",
    ]
    with pytest.raises(DataError):
        top_codes(counts, 0)


def test_frequent_codes_threshold() -> None:
    counts = {"a:1": 10, "a:2": 9, "a:3": 11}
    assert frequent_codes(counts, 10) == ["a:1", "a:3"]
    assert frequent_codes(counts, 1) == ["a:1", "a:2", "a:3"]


def _naive(rows: list[tuple[int, str, int, int]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    # (hadm, key, table, seq) in file order; sort by table, seq, file position; keep first of each key
    for _pos, (h, k, _t, _s) in sorted(enumerate(rows), key=lambda x: (x[1][0], x[1][2], x[1][3], x[0])):
        lst = out.setdefault(h, [])
        if k not in lst:
            lst.append(k)
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(100000, 100005),
            st.sampled_from(["4019", "E8497", "9604", "V3000", "25000"]),
            st.integers(0, 1),
            st.integers(1, 5),
        ),
        max_size=40,
    )
)
def test_code_index_matches_naive_grouping(rows: list[tuple[int, str, int, int]]) -> None:
    cr = CodeRows()
    systems = ("icd9cm-dx", "icd9cm-proc")
    import pyarrow as pa

    for pos, (h, c, t, s) in enumerate(rows):
        cr.add(np.array([h]), pa.array([systems[t]]), pa.array([c]), t, np.array([s]), np.array([pos]))
    index = CodeIndex.build(cr)
    from icdcoder.ontology.systems import Code

    expected = _naive([(h, Code.of(systems[t], c).key, t, s) for h, c, t, s in rows])
    for h in range(100000, 100006):
        assert index.codes_of(h) == expected.get(h, [])
    assert index.keys == sorted(index.keys)


# --------------------------------------------------------------------------------------------------
# End to end


def _full_fixture() -> tuple[Mimic3Files, dict[str, int]]:
    tr, dv, te = FULL["train"], FULL["dev"], FULL["test"]
    ids = {
        "a": tr[0],
        "b": tr[1],
        "c": dv[0],
        "d": te[0],
        "nocode": tr[2],
        "extra": caml_full_extra_train_ids()[0],
    }
    f = Mimic3Files()
    # Admission a: addenda before and after the report in the file, out of date order.
    f.note(ids["a"], "Synthetic addendum two.", desc="Addendum", date="2150-01-05")
    f.note(
        ids["a"],
        "Synthetic nursing text, not a discharge note.",
        category="Nursing",
        desc="Nursing Progress Note",
    )
    f.note(
        ids["a"],
        'Synthetic report line one.\nLine two, with "quotes" and, commas.',
        desc="Report",
        date="2150-01-03",
    )
    f.note(ids["a"], "Synthetic addendum one.", desc="Addendum", date="2150-01-04")
    f.note(ids["b"], "Synthetic report for b.")
    f.note(ids["c"], "Synthetic report for c.")
    f.note(ids["d"], "Synthetic report for d.")
    f.note(ids["d"], "Synthetic radiology text.", category="Radiology", desc="CHEST (PA & LAT)")
    f.note(ids["nocode"], "Synthetic report without codes.")
    f.note(ids["extra"], "Synthetic report of a CAML extra id.")
    f.note(199999999, "Synthetic report of an admission in no split.")
    f.note("", "Synthetic discharge summary without an admission id.")
    f.codes(ids["a"], dx=["4019", "E8497", "V3000", "4019"], proc=["9604"])
    f.codes(ids["b"], dx=["", "25000"])  # an empty ICD9_CODE as MIMIC has a few
    f.codes(ids["c"], proc=["3893"])
    f.codes(ids["d"], dx=["4280"])
    f.codes(199999999, dx=["4019"])
    return f, ids


def test_full_split_end_to_end(tmp_path: Path) -> None:
    f, ids = _full_fixture()
    d = f.write(tmp_path / "mimic")
    docs = {doc.id: doc for doc in iter_mimic3(d, "full")}
    assert set(docs) == {str(ids[k]) for k in ("a", "b", "c", "d")}
    a = docs[str(ids["a"])]
    assert a.split == "train" and docs[str(ids["c"])].split == "dev" and docs[str(ids["d"])].split == "test"
    assert a.text == (
        'Synthetic report line one.\nLine two, with "quotes" and, commas.'
        " Synthetic addendum one. Synthetic addendum two."
    )
    assert a.codes == ["icd9cm-dx:401.9", "icd9cm-dx:E849.7", "icd9cm-dx:V30.00", "icd9cm-proc:96.04"]
    assert a.meta["n_addenda"] == 2 and a.meta["n_notes"] == 3
    assert isinstance(a.meta["subject_id"], int)
    assert docs[str(ids["b"])].codes == ["icd9cm-dx:250.00"]
    assert docs[str(ids["c"])].codes == ["icd9cm-proc:38.93"]
    assert docs[str(ids["d"])].text == "Synthetic report for d."
    # documents come split by split
    rank = {"train": 0, "dev": 1, "test": 2}
    order = [rank[str(doc.split)] for doc in iter_mimic3(d, "full")]
    assert order == sorted(order)


def test_full_prepare_stats(tmp_path: Path) -> None:
    f, ids = _full_fixture()
    d = f.write(tmp_path / "mimic")
    stats = prepare_mimic3(d, "full", tmp_path / "out")
    assert {s: stats["splits"][s]["documents"] for s in stats["splits"]} == {"train": 2, "dev": 1, "test": 1}
    m = stats["mimic"]
    assert m["codes"]["DIAGNOSES_ICD"]["rows_without_code"] == 1
    assert m["notes"]["discharge_summaries"] == 10
    assert m["notes"]["discharge_summaries_without_hadm_id"] == 1
    assert m["dropped_without_codes"] == {"train": 2, "dev": 0, "test": 0}
    assert m["caml_extra_train_ids"][str(ids["extra"])] == "dropped: no codes"
    assert m["caml_extra_train_ids"]["110220"] == "dropped: no discharge summary"
    assert stats["matches_published_counts"] is None
    assert stats["published_counts"] == {"train": 47_719, "dev": 1_631, "test": 3_372}
    ds = PreparedDataset.open(tmp_path / "out")
    assert sorted(d.id for d in ds.documents("train")) == sorted([str(ids["a"]), str(ids["b"])])
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["source"] == "mimic3"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no spill or temp dir left


def test_published_count_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    # Pretend the published split is exactly our tiny input, then one document more than produced.
    monkeypatch.setitem(mimic_common.PUBLISHED_COUNTS, "mimic3-full", {"train": 2, "dev": 1, "test": 1})
    with load_mimic3(d, "full") as corpus:
        assert corpus.report["splits"]["matches_published_counts"] is True
    monkeypatch.setitem(mimic_common.PUBLISHED_COUNTS, "mimic3-full", {"train": 3, "dev": 1, "test": 1})
    with load_mimic3(d, "full") as corpus:
        # train: 4 ids with a note (a, b, nocode, extra) >= 3, so the input counts as complete
        assert corpus.report["splits"]["matches_published_counts"] is False


def test_gz_lower_case_names_and_columns(tmp_path: Path) -> None:
    f, ids = _full_fixture()
    d = f.write(tmp_path / "mimic", gz=True, lower=True)
    assert (d / "noteevents.csv.gz").is_file()
    docs = {doc.id: doc for doc in iter_mimic3(d, "full")}
    assert docs[str(ids["a"])].codes[0] == "icd9cm-dx:401.9"
    assert len(docs) == 4


def _fifty_fixture() -> tuple[Mimic3Files, list[int]]:
    tr, dv, te = FIFTY["train"], FIFTY["dev"], FIFTY["test"]
    h = [tr[0], tr[1], tr[2], dv[0], te[0]]
    outside = FULL["train"][100]  # in full but not in the 50 lists: counts towards the top-k
    assert outside not in set(tr) | set(dv) | set(te)
    f = Mimic3Files()
    for x in [*h, outside]:
        f.note(x, f"Synthetic report {x}.")
    # counts over all admissions: 401.9 x5, 428.0 x3, 96.04 x3, 427.31 x3, 250.00 x1, 38.93 x2
    f.codes(h[0], dx=["4019", "4280", "25000"], proc=["9604"])
    f.codes(h[1], dx=["4019", "42731"], proc=["3893"])
    f.codes(h[2], dx=["4019", "4280"], proc=["9604"])
    f.codes(h[3], dx=["4019", "42731"])
    f.codes(h[4], dx=["25000"])  # no top-3 code at all -> kept, empty
    f.codes(outside, dx=["4019", "4280", "42731"], proc=["9604", "3893"])
    return f, h


def test_top50_with_small_k_and_tie(tmp_path: Path) -> None:
    f, h = _fifty_fixture()
    d = f.write(tmp_path / "mimic")
    with load_mimic3(d, "50", top_k=3) as corpus:
        ls = corpus.report["label_space"]
        # 401.9 (6) first; 427.31, 428.0 and 96.04 tie at 3 -> key order keeps the two icd9cm-dx ones
        assert ls["codes"] == ["icd9cm-dx:401.9", "icd9cm-dx:427.31", "icd9cm-dx:428.0"]
        assert ls["counts"] == {"icd9cm-dx:401.9": 5, "icd9cm-dx:427.31": 3, "icd9cm-dx:428.0": 3}
        assert ls["tie_at_boundary"] is True
        docs = {doc.id: doc for doc in corpus.documents()}
        assert corpus.report["documents_without_codes"] == {"train": 0, "dev": 0, "test": 1}
    assert docs[str(h[0])].codes == ["icd9cm-dx:401.9", "icd9cm-dx:428.0"]
    assert docs[str(h[3])].codes == ["icd9cm-dx:401.9", "icd9cm-dx:427.31"] and docs[str(h[3])].split == "dev"
    assert docs[str(h[4])].codes == [] and docs[str(h[4])].split == "test"
    assert str(FULL["train"][100]) not in docs
    assert len(docs) == 5


def test_top50_from_explicit_code_list(tmp_path: Path) -> None:
    f, h = _fifty_fixture()
    d = f.write(tmp_path / "mimic")
    codes = tmp_path / "TOP_50_CODES.csv"
    codes.write_text("38.93\n250.00\nicd9cm-dx:V58.61\n", encoding="utf-8")
    with load_mimic3(d, "50", top_codes_file=codes) as corpus:
        assert corpus.report["label_space"]["not_in_data"] == ["icd9cm-dx:V58.61"]
        docs = {doc.id: doc for doc in corpus.documents()}
    assert docs[str(h[0])].codes == ["icd9cm-dx:250.00"]
    assert docs[str(h[1])].codes == ["icd9cm-proc:38.93"]


def test_read_code_list_formats(tmp_path: Path) -> None:
    p = tmp_path / "codes.txt"
    p.write_text(
        "code\n# comment\n401.9\n96.04\n486\n38\nV5861\nE849.7\nicd9cm-proc:9604\n\n401.9\n", encoding="utf-8"
    )
    assert read_code_list(p) == [
        "icd9cm-dx:401.9",
        "icd9cm-proc:96.04",
        "icd9cm-dx:486",
        "icd9cm-proc:38",
        "icd9cm-dx:V58.61",
        "icd9cm-dx:E849.7",
    ]
    p.write_text("401.9\n9604\n", encoding="utf-8")
    with pytest.raises(DataError, match="9604") as exc:
        read_code_list(p)
    assert exc.value.line == 2


def test_clean_threshold_counts_all_admissions(tmp_path: Path) -> None:
    tr, dv, te = CLEAN["train"], CLEAN["dev"], CLEAN["test"]
    outside = 199999998  # a discharge summary outside every split still counts (Edin counts before splitting)
    f = Mimic3Files()
    for x in (tr[0], tr[1], tr[2], dv[0], te[0], outside):
        f.note(x, f"Synthetic report {x}.")
    # counts: 401.9 x3, 584.9 x2, V30.00 x2, 96.04 x2 (thanks to `outside`), 38.93 x1
    f.codes(tr[0], dx=["4019", "5849"], proc=["9604"])
    f.codes(tr[1], dx=["4019", "V3000"])
    f.codes(tr[2], dx=["4019"])
    f.codes(dv[0], dx=["5849"])
    f.codes(te[0], dx=["V3000"], proc=["3893"])
    f.codes(outside, proc=["9604"])
    d = f.write(tmp_path / "mimic")
    with load_mimic3(d, "clean", min_code_count=2) as corpus:
        docs = {doc.id: doc for doc in corpus.documents()}
        assert corpus.report["label_space"]["codes_kept"] == 4
        assert corpus.report["label_space"]["codes_removed"] == 1
    assert docs[str(tr[0])].codes == ["icd9cm-dx:401.9", "icd9cm-dx:584.9", "icd9cm-proc:96.04"]
    assert docs[str(te[0])].codes == ["icd9cm-dx:V30.00"]
    assert docs[str(dv[0])].split == "dev" and docs[str(te[0])].split == "test"
    assert str(outside) not in docs
    with load_mimic3(d, "clean", min_code_count=3) as corpus:  # only 401.9 survives
        docs = {doc.id: doc for doc in corpus.documents()}
        assert corpus.report["dropped_without_codes"] == {"train": 0, "dev": 1, "test": 1}
    assert set(docs) == {str(tr[0]), str(tr[1]), str(tr[2])}
    assert all(doc.codes == ["icd9cm-dx:401.9"] for doc in docs.values())


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_names_what_and_where(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    (d / "PROCEDURES_ICD.csv").unlink()
    with pytest.raises(DataError) as exc:
        list(iter_mimic3(d, "full"))
    msg = str(exc.value)
    assert "PROCEDURES_ICD.csv" in msg and str(d) in msg and "MIMIC-III" in msg


def test_missing_column_suggests_close_match(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    dx = d / "DIAGNOSES_ICD.csv"
    dx.write_text(dx.read_text(encoding="utf-8").replace("ICD9_CODE", "ICD9_COD", 1), encoding="utf-8")
    with pytest.raises(DataError) as exc:
        list(iter_mimic3(d, "full"))
    msg = str(exc.value)
    assert "ICD9_CODE" in msg and "'ICD9_COD'" in msg and "DIAGNOSES_ICD" in msg and "found:" in msg


def test_non_utf8_text_names_file_and_row_not_text(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    p = d / "NOTEEVENTS.csv"
    p.write_bytes(p.read_bytes().replace(b"Synthetic report for c.", b"Secret caf\xe9 text"))
    with pytest.raises(DataError) as exc:
        list(iter_mimic3(d, "full"))
    msg = str(exc.value)
    assert "NOTEEVENTS.csv" in msg and "UTF-8" in msg and "data row 6" in msg
    assert "Secret" not in msg


def test_unparseable_hadm_id(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    f.note("12x45", "Synthetic report with a broken id.")
    d = f.write(tmp_path / "mimic")
    with pytest.raises(DataError, match=r"HADM_ID of data row 13 is not an integer"):
        list(iter_mimic3(d, "full"))
    f2, _ = _full_fixture()
    f2.dx.append([99, 7, "abc", 1, "4019"])
    d2 = f2.write(tmp_path / "mimic2")
    with pytest.raises(DataError, match=r"DIAGNOSES_ICD: HADM_ID of data row \d+ is not an integer"):
        list(iter_mimic3(d2, "full"))


def test_malformed_csv_does_not_leak_text(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    with open(d / "NOTEEVENTS.csv", "a", encoding="utf-8") as fh:
        fh.write("13,1,100001,Secret words only\n")
    with pytest.raises(DataError) as exc:
        list(iter_mimic3(d, "full"))
    assert "malformed CSV" in str(exc.value) and "Secret" not in str(exc.value)


def test_malformed_row_that_is_not_utf8_is_one_clear_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Arrow cannot decode such a row to show it to the invalid-row handler; that used to print an
    "Exception ignored" traceback on stderr before the error (found by benchmarks/fuzz_inputs.py)."""
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    with open(d / "NOTEEVENTS.csv", "ab") as fh:
        fh.write(b"13,1,100001,Secret caf\xe9 only\n")
    with pytest.raises(DataError) as exc:
        list(iter_mimic3(d, "full"))
    msg = str(exc.value)
    assert "malformed CSV" in msg and "different number of fields" in msg and "not valid UTF-8" in msg
    assert "Secret" not in msg
    assert "Traceback" not in capfd.readouterr().err


def test_no_overlap_suggests_right_split(tmp_path: Path) -> None:
    f = Mimic3Files()
    only_full = [i for i in FULL["train"][:200] if i not in set(FIFTY["train"])][:2]
    for x in only_full:
        f.note(x, "Synthetic report.")
        f.codes(x, dx=["4019"])
    d = f.write(tmp_path / "mimic")
    with pytest.raises(DataError, match=r"mimic3-full: use --split full"):
        list(iter_mimic3(d, "50"))
    g = Mimic3Files()
    mimic4_ids = load_split_ids("mimic4-icd10")["train"][:2]
    for x in mimic4_ids:
        g.note(x, "Synthetic report.")
        g.codes(x, dx=["4019"])
    d = g.write(tmp_path / "mimic4ish")
    with pytest.raises(DataError, match=r"looks like MIMIC4 data; use `mimic4 --version icd10`"):
        list(iter_mimic3(d, "full"))


def test_failed_prepare_leaves_nothing(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    (d / "PROCEDURES_ICD.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,2,zz,1,9604\n", encoding="utf-8"
    )
    out_parent = tmp_path / "prepared"
    with pytest.raises(DataError):
        prepare_mimic3(d, "full", out_parent / "m3")
    assert not (out_parent / "m3").exists()
    assert not list(out_parent.iterdir())  # the note spill is gone too


def test_existing_output_refused_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(IcdcoderError, match="--overwrite"):
        prepare_mimic3(tmp_path / "does-not-exist", "full", out)


def test_bad_split_name() -> None:
    with pytest.raises(DataError, match="full, 50, clean or rare50"):
        list(iter_mimic3(Path("."), "top50"))


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_mimic3(tmp_path: Path) -> None:
    f, _ = _full_fixture()
    d = f.write(tmp_path / "mimic")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Local group so `mimic3` stays a sub-command."""

    register(app)
    runner = CliRunner()
    res = runner.invoke(
        app, ["mimic3", "--mimic-dir", str(d), "--split", "full", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert "train 2, dev 1, test 1 documents" in res.output and "not checked" in res.output
    res = runner.invoke(
        app, ["mimic3", "--mimic-dir", str(d), "--split", "full", "--out", str(tmp_path / "o")]
    )
    assert isinstance(res.exception, IcdcoderError) and "--overwrite" in str(res.exception)
    res = runner.invoke(
        app, ["mimic3", "--mimic-dir", str(d), "--split", "full", "--out", str(tmp_path / "o"), "--overwrite"]
    )
    assert res.exit_code == 0, res.output

"""MIMIC-IV reader on tiny files in MIMIC-IV v2.2 / MIMIC-IV-Note v2.2's CSV schema (made-up text, real
HADM_IDs from Edin et al.'s shipped split files)."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from icdcoder.cli.data_mimic import register
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources import mimic_common
from icdcoder.data.sources.mimic4 import iter_mimic4, load_mimic4, prepare_mimic4
from icdcoder.data.sources.mimic_common import load_split_ids
from icdcoder.errors import DataError

NOTE_HEADER = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
DX_HEADER = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
PX_HEADER = ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"]

ICD9 = load_split_ids("mimic4-icd9")
ICD10 = load_split_ids("mimic4-icd10")


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


class Mimic4Files:
    def __init__(self) -> None:
        self.notes: list[list[Any]] = []
        self.dx: list[list[Any]] = []
        self.px: list[list[Any]] = []

    def note(self, hadm: int, text: str, seq: int = 1) -> None:
        subject = 10_000_000 + hadm % 1_000_000
        self.notes.append([f"{subject}-DS-{seq}", subject, hadm, "DS", seq, "2180-01-01 00:00:00", "", text])

    def codes(self, hadm: int, version: int, dx: Sequence[str] = (), px: Sequence[str] = ()) -> None:
        for i, c in enumerate(dx, start=1):
            self.dx.append([1, hadm, i, c, version])
        for i, c in enumerate(px, start=1):
            self.px.append([1, hadm, i, "2180-01-01", c, version])

    def write(self, root: Path, ext: str = ".csv.gz") -> Path:
        _write(root / "note" / f"discharge{ext}", NOTE_HEADER, self.notes)
        _write(root / "hosp" / f"diagnoses_icd{ext}", DX_HEADER, self.dx)
        _write(root / "hosp" / f"procedures_icd{ext}", PX_HEADER, self.px)
        return root


def test_load_split_ids_published_counts() -> None:
    for name, expected in (
        ("mimic4-icd9", (154_542, 21_980, 32_804)),
        ("mimic4-icd10", (89_099, 13_378, 19_802)),
    ):
        ids = load_split_ids(name)
        assert tuple(len(ids[s]) for s in ("train", "dev", "test")) == expected
        assert len(set(ids["train"]) | set(ids["dev"]) | set(ids["test"])) == sum(expected)
        assert tuple(mimic_common.PUBLISHED_COUNTS[name].values()) == expected


def _fixture() -> tuple[Mimic4Files, dict[str, int]]:
    ids = {
        "9a": ICD9["train"][0],
        "9b": ICD9["dev"][0],
        "9c": ICD9["test"][0],
        "10a": ICD10["train"][0],
        "10b": ICD10["test"][0],
        "10c": ICD10["dev"][0],
    }
    f = Mimic4Files()
    f.note(ids["9a"], "Synthetic discharge note, part two.", seq=22)
    for key in ("9b", "9c", "10a", "10b", "10c"):
        f.note(ids[key], f"Synthetic discharge note {key}.\nSecond line.")
    f.note(ids["9a"], "Synthetic discharge note, part one.", seq=21)
    f.codes(ids["9a"], 9, dx=["4019", "E8497"], px=["9604"])
    f.codes(ids["9b"], 9, dx=["4019"], px=["9604"])
    f.codes(ids["9c"], 9, dx=["25000"])  # 250.00 occurs once
    f.codes(ids["9c"], 10, dx=["I10"])  # an ICD-10 code of an ICD-9 admission: only in the icd10 counts
    f.codes(ids["10a"], 10, dx=["I10", "N448", "E119"], px=["0DTJ4ZZ"])
    f.codes(ids["10b"], 10, dx=["N448", "E119"], px=["0DTJ4ZZ"])
    f.codes(ids["10c"], 10, dx=["Z7901"])
    return f, ids


def test_icd9_and_icd10_separation_and_dots(tmp_path: Path) -> None:
    f, ids = _fixture()
    root = f.write(tmp_path / "mimiciv")
    with load_mimic4(root, "icd9", min_code_count=2) as corpus:
        docs9 = {d.id: d for d in corpus.documents()}
        assert corpus.report["dropped_without_codes"] == {"train": 0, "dev": 0, "test": 1}
        assert corpus.report["codes"]["diagnoses_icd"]["rows_other_version"] == 7
    assert set(docs9) == {str(ids["9a"]), str(ids["9b"])}
    a = docs9[str(ids["9a"])]
    assert a.codes == ["icd9cm-dx:401.9", "icd9cm-proc:96.04"]  # E849.7 and 250.00 occur once
    assert a.text == "Synthetic discharge note, part one. Synthetic discharge note, part two."
    assert a.meta["note_ids"] == [f"{a.meta['subject_id']}-DS-21", f"{a.meta['subject_id']}-DS-22"]
    assert a.split == "train" and docs9[str(ids["9b"])].split == "dev"

    docs10 = {d.id: d for d in iter_mimic4(root, "icd10", min_code_count=2)}
    # I10 x2 (incl. the ICD-9 admission's code, counted although that admission is not in the icd10 split)
    assert set(docs10) == {str(ids["10a"]), str(ids["10b"])}
    assert docs10[str(ids["10a"])].codes == [
        "icd10cm:I10",
        "icd10cm:N44.8",
        "icd10cm:E11.9",
        "icd10pcs:0DTJ4ZZ",
    ]
    assert docs10[str(ids["10b"])].split == "test"
    assert docs10[str(ids["10b"])].text == "Synthetic discharge note 10b.\nSecond line."

    all9 = {d.id: d for d in iter_mimic4(root, "icd9", min_code_count=1)}
    assert all9[str(ids["9a"])].codes == ["icd9cm-dx:401.9", "icd9cm-dx:E849.7", "icd9cm-proc:96.04"]
    assert all9[str(ids["9c"])].codes == ["icd9cm-dx:250.00"]


def test_prepare_and_layouts(tmp_path: Path) -> None:
    f, _ = _fixture()
    root = f.write(tmp_path / "mimiciv", ext=".csv")
    # MIMIC-IV-Note is a separate download: move the note file elsewhere and pass it by path
    notes = tmp_path / "mimic-iv-note" / "discharge.csv"
    notes.parent.mkdir()
    (root / "note" / "discharge.csv").rename(notes)
    with pytest.raises(DataError, match=r"discharge\.csv or discharge\.csv\.gz"):
        prepare_mimic4(root, "icd10", tmp_path / "out")
    stats = prepare_mimic4(root, "10", tmp_path / "out", notes_path=notes, min_code_count=2)
    assert stats["source"] == "mimic4" and stats["options"]["version"] == "icd10"
    assert {s: v["documents"] for s, v in stats["splits"].items()} == {"train": 1, "test": 1}
    assert stats["matches_published_counts"] is None
    assert stats["published_counts"] == {"train": 89_099, "dev": 13_378, "test": 19_802}
    ds = PreparedDataset.open(tmp_path / "out")
    assert ds.codes() == ["icd10cm:E11.9", "icd10cm:I10", "icd10cm:N44.8", "icd10pcs:0DTJ4ZZ"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_published_count_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f, _ = _fixture()
    root = f.write(tmp_path / "m")
    monkeypatch.setitem(mimic_common.PUBLISHED_COUNTS, "mimic4-icd9", {"train": 1, "dev": 1, "test": 1})
    with load_mimic4(root, "icd9", min_code_count=1) as corpus:
        assert corpus.report["splits"]["matches_published_counts"] is True
    with load_mimic4(root, "icd9", min_code_count=2) as corpus:  # test's only admission loses its code
        assert corpus.report["splits"]["matches_published_counts"] is False


def test_wrong_version_is_explained(tmp_path: Path) -> None:
    f = Mimic4Files()
    for h in ICD9["train"][:3]:
        f.note(h, "Synthetic note.")
        f.codes(h, 9, dx=["4019"])
    root = f.write(tmp_path / "m")
    with pytest.raises(DataError, match=r"mimic4-icd9: use --version icd9"):
        list(iter_mimic4(root, "icd10"))
    with pytest.raises(DataError, match="icd9 or icd10"):
        list(iter_mimic4(root, "icd11"))


def test_bad_icd_version_and_missing_column(tmp_path: Path) -> None:
    f, _ = _fixture()
    f.px.append([1, ICD9["train"][0], 3, "2180-01-01", "9904", "ICD9"])
    root = f.write(tmp_path / "m")
    with pytest.raises(DataError, match=r"procedures_icd: icd_version of data row 5 is neither 9 nor 10"):
        list(iter_mimic4(root, "icd9"))
    g, _ = _fixture()
    root = g.write(tmp_path / "m2", ext=".csv")
    p = root / "hosp" / "diagnoses_icd.csv"
    p.write_text(p.read_text(encoding="utf-8").replace("icd_version", "icdversion", 1), encoding="utf-8")
    with pytest.raises(DataError, match=r"lacks column\(s\) icd_version.*Did you mean 'icdversion'"):
        list(iter_mimic4(root, "icd9"))


def test_cli_mimic4(tmp_path: Path) -> None:
    f, _ = _fixture()
    root = f.write(tmp_path / "m")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Local group so `mimic4` stays a sub-command."""

    register(app)
    res = CliRunner().invoke(
        app,
        [
            "mimic4",
            "--mimic-dir",
            str(root),
            "--version",
            "icd9",
            "--out",
            str(tmp_path / "o"),
            "--min-code-count",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "train 1, dev 1, test 1 documents" in res.output

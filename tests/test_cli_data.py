import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.data.prepared import PreparedDataset
from icdcoder.errors import DataError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fake_ontology(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep these tests independent of the ontology tables: every well-formed code except Q99.99 exists."""

    def default_exists() -> Callable[[str, str], bool]:
        return lambda system, code: code != "Q99.99"

    monkeypatch.setattr("icdcoder.data.validate.default_exists", default_exists)


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exception is None, result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_prepare_codiesp_and_stats(tmp_path: Path) -> None:
    out = tmp_path / "codiesp"
    output = _ok(["data", "prepare", "codiesp", "--task", "D", "--lang", "en", "--out", str(out)])
    assert "train: 500 documents, 1,767 distinct codes, label cardinality 11.28" in output
    assert "dev: 250 documents, 1,158 distinct codes, label cardinality 10.71" in output
    assert "test: 250 documents, 1,143 distinct codes, label cardinality 11.37" in output
    ds = PreparedDataset.open(out)
    assert ds.stats["options"]["task"] == "D"

    stats = json.loads(_ok(["data", "stats", str(out), "--json"]))
    assert {s: v["documents"] for s, v in stats["splits"].items()} == {"train": 500, "dev": 250, "test": 250}
    assert {s: v["distinct_codes"] for s, v in stats["splits"].items()} == {
        "train": 1767,
        "dev": 1158,
        "test": 1143,
    }
    assert {s: v["label_cardinality"] for s, v in stats["splits"].items()} == {
        "train": 11.278,
        "dev": 10.708,
        "test": 11.368,
    }
    assert stats["report"]["evidence"]["kept"] == 14305

    table = _ok(["data", "stats", str(out)])
    assert "train" in table and "1,767" in table and "evidence.kept: 14305" in table


def test_prepare_codiesp_procedures_without_evidence(tmp_path: Path) -> None:
    out = tmp_path / "p"
    _ok(["data", "prepare", "codiesp", "--task", "P", "--no-evidence", "--out", str(out)])
    ds = PreparedDataset.open(out)
    assert ds.stats["splits"]["train"]["documents_without_codes"] == 65
    assert all(c.startswith("icd10pcs:") for c in ds.codes())
    assert all(not d.evidence for d in ds.documents("dev"))


def test_prepare_codiesp_spanish_without_path_is_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare", "codiesp", "--lang", "es", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, DataError)
    assert "pass --path to a full CodiEsp download" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_failed_csv_prepare_leaves_no_output(tmp_path: Path) -> None:
    csv_file = tmp_path / "notes.csv"
    csv_file.write_text("id,text,codes\nn1,Chest pain,I10\nn2,Fever,R50.9\nn1,Cough,R05\n", encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["data", "prepare", "csv", str(csv_file), "--system", "icd10cm", "--out", str(out)]
    )
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == (
        f"{csv_file}:4: duplicate id 'n1' (first at line 2). "
        "Fix: make ids unique or remove one of the two rows."
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv"]


def test_prepare_csv_with_renamed_columns_and_split_ratios(tmp_path: Path) -> None:
    csv_file = tmp_path / "notes.csv"
    csv_file.write_text(
        "doc,note,codes\n" + "".join(f"d{i},note {i},I10|icd9cm-dx:4019\n" for i in range(40)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["data", "prepare", "csv", str(csv_file), "--system", "icd10cm", "--id-column", "doc"]
    args += ["--text-column", "note", "--split-ratios", "0.5,0.25,0.25", "--seed", "7", "--out", str(out)]
    _ok(args)
    stats = PreparedDataset.open(out).stats
    assert sum(v["documents"] for v in stats["splits"].values()) == 40
    assert set(stats["splits"]) == {"train", "dev", "test"}
    assert stats["splits"]["train"]["distinct_codes_by_system"] == {"icd10cm": 1, "icd9cm-dx": 1}
    assert stats["options"]["columns"] == {"id": "doc", "text": "note"}
    # Re-running with the same seed gives the same split (hash of seed and id).
    _ok([*args[:-1], str(tmp_path / "again")])
    assert PreparedDataset.open(tmp_path / "again").stats["splits"] == stats["splits"]


def test_prepare_jsonl_unknown_code_policies(tmp_path: Path) -> None:
    f = tmp_path / "n.jsonl"
    f.write_text(
        json.dumps({"id": "a", "text": "x", "codes": ["icd10cm:I10", "icd10cm:Q99.99"], "split": "train"})
        + "\n",
        encoding="utf-8",
    )
    output = _ok(["data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "keep")])
    assert "1 unknown code(s) (kept)" in output
    assert PreparedDataset.open(tmp_path / "keep").codes() == ["icd10cm:I10", "icd10cm:Q99.99"]

    _ok(["data", "prepare", "jsonl", str(f), "--unknown-codes", "drop", "--out", str(tmp_path / "drop")])
    assert PreparedDataset.open(tmp_path / "drop").codes() == ["icd10cm:I10"]

    result = runner.invoke(
        app, ["data", "prepare", "jsonl", str(f), "--unknown-codes", "fail", "--out", str(tmp_path / "fail")]
    )
    assert isinstance(result.exception, DataError)
    assert "1 unknown code(s) in 1 assignment(s) (e.g. icd10cm:Q99.99)" in str(result.exception)
    assert not (tmp_path / "fail").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    f = tmp_path / "n.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "x", "codes": ["icd10cm:I10"]}) + "\n", encoding="utf-8")
    _ok(["data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "o")])
    result = runner.invoke(app, ["data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "o")])
    assert result.exception is not None and "--overwrite" in str(result.exception)
    _ok(["data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "o"), "--overwrite"])


def test_stats_on_a_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "nope")])
    assert isinstance(result.exception, DataError)
    assert "icdcoder data prepare" in str(result.exception)


def test_prepare_lists_sources() -> None:
    output = _ok(["data", "prepare", "--help"])
    for source in ("codiesp", "jsonl", "csv"):
        assert source in output
    # Sources from other modules register themselves when those modules are installed.
    if importlib.util.find_spec("icdcoder.cli.data_mimic") is not None:
        assert "mimic3" in output and "mimic4" in output
    if importlib.util.find_spec("icdcoder.cli.data_synthetic") is not None:
        assert "synthetic" in output


def test_main_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from icdcoder.cli import main

    f = tmp_path / "n.jsonl"
    f.write_text(
        json.dumps({"id": "a", "text": "private note text", "codes": ["I10"]}) + "\n", encoding="utf-8"
    )
    monkeypatch.setattr(
        "sys.argv", ["icdcoder", "data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {f}:1: code 'I10' has no code system. Fix: pass --system (e.g. --system icd10cm) "
        + ("or write codes as SYSTEM:CODE (e.g. icd10cm:N44.8).\n")
    )
    assert "private" not in err

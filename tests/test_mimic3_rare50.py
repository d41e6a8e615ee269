"""MIMIC-III-rare50 (KEPT's few-shot split, PLANT's Table 5) on tiny files in MIMIC-III's CSV schema."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from icdcoder.cli.data_mimic import register
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.mimic3 import MIMIC3_PUBLISHED_COUNTS, load_mimic3, rare50_table
from test_mimic3 import Mimic3Files


def _undotted(key: str) -> str:
    """MIMIC's tables store ICD-9 codes without the dot."""
    return key.split(":", 1)[1].replace(".", "")


def _pick() -> dict[str, tuple[int, tuple[str, ...]]]:
    table = rare50_table()
    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    for hadm, (split, keys) in sorted(table.items()):
        out.setdefault(split, (hadm, keys))
    return out


def test_shipped_table_has_the_published_counts_and_50_codes() -> None:
    table = rare50_table()
    counts = {s: sum(1 for p, _ in table.values() if p == s) for s in ("train", "dev", "test")}
    assert counts == {"train": 249, "dev": 20, "test": 142} == MIMIC3_PUBLISHED_COUNTS["rare50"]
    keys = {k for _, ks in table.values() for k in ks}
    assert len(keys) == 50
    assert "icd9cm-proc:40.7" in keys and "icd9cm-dx:990" in keys  # procedures and diagnoses are told apart


def test_prepare_rare50_restricts_codes_and_keeps_listed_admissions(tmp_path: Path) -> None:
    picked = _pick()
    f = Mimic3Files()
    for split, (hadm, keys) in picked.items():
        f.note(hadm, f"discharge summary of a {split} admission")
        dx = [_undotted(k) for k in keys if k.startswith("icd9cm-dx:")] + ["4019"]  # + a common code
        proc = [_undotted(k) for k in keys if k.startswith("icd9cm-proc:")]
        if split == "test":  # the user's tables miss this admission's rare codes: counted, still kept
            dx, proc = ["4019"], []
        f.codes(hadm, dx=dx, proc=proc)
    f.note(100001, "an admission outside the split")
    f.codes(100001, dx=["4019"])
    d = f.write(tmp_path / "mimic")
    with load_mimic3(d, "rare50") as corpus:
        docs = {doc.id: doc for doc in corpus.documents()}
        report = corpus.report
    assert set(docs) == {str(h) for h, _ in picked.values()}
    for split, (hadm, keys) in picked.items():
        doc = docs[str(hadm)]
        assert doc.split == split
        assert sorted(doc.codes) == ([] if split == "test" else sorted(keys))
    assert report["rare50_code_mismatches"] == 1
    assert report["documents_without_codes"]["test"] == 1
    assert len(report["label_space"]["codes"]) == 50

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Local group so `mimic3` stays a sub-command."""

    register(app)
    out = tmp_path / "prepared"
    res = CliRunner().invoke(app, ["mimic3", "--mimic-dir", str(d), "--split", "rare50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "not checked" in res.output  # three admissions are not the whole split
    ds = PreparedDataset.open(out)
    assert sorted(ds.splits) == ["dev", "test", "train"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["published_counts"] == {"train": 249, "dev": 20, "test": 142}

from collections.abc import Callable
from pathlib import Path

import pytest

from icdcoder.data.document import Evidence
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.codiesp import (
    CodiespReport,
    embedded_root,
    iter_background_texts,
    iter_codiesp,
    prepare_codiesp,
)
from icdcoder.errors import DataError

REPO = Path(__file__).resolve().parents[1]
# The full release (with Spanish text) lives in shared/, beside the clone in CI and at /work/shared here.
FULL_CANDIDATES = [
    REPO.parent / "shared" / "datasets" / "codiesp" / "raw" / "final_dataset_v4_to_publish",
    Path("/work/shared/datasets/codiesp/raw/final_dataset_v4_to_publish"),
]
FULL = next((p for p in FULL_CANDIDATES if (p / "train" / "text_files").is_dir()), None)

DOC = "S0004-06142005000700014-1"  # first training case; codes read off trainD.tsv / trainP.tsv by hand
DOC_D = ["N44.8", "Z20.818", "R60.9", "R52", "A23.9", "I83.90", "I87.8", "R50.9", "N45.3", "M25.50"]
DOC_P = ["BW03ZZZ", "3E02329", "BW40ZZZ", "BV44ZZZ", "BN20"]


def _all_known(system: str, code: str) -> bool:
    return True


def test_embedded_diagnoses_counts() -> None:
    report = CodiespReport()
    docs = list(iter_codiesp(None, "D", "en", True, report=report))
    by_split = {s: [d for d in docs if d.split == s] for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 500, "dev": 250, "test": 250}
    # Row counts of trainD/devD/testD.tsv (5,639 / 2,677 / 2,842; no duplicates) over the documents:
    # SOURCE.md's label cardinality 11.3 / 10.7 / 11.4.
    assert sum(len(d.codes) for d in by_split["train"]) == 5639
    assert sum(len(d.codes) for d in by_split["dev"]) == 2677
    assert sum(len(d.codes) for d in by_split["test"]) == 2842
    assert len({c for d in docs for c in d.codes}) == 2557
    assert len({c for d in by_split["train"] for c in d.codes}) == 1767
    doc = next(d for d in docs if d.id == DOC)
    assert doc.codes == [f"icd10cm:{c}" for c in DOC_D]
    assert doc.text.startswith("We describe the case of a 37-year-old man")
    assert doc.meta == {"lang": "en"}
    # Evidence offsets index the Spanish text, which the English document does not hold.
    assert (
        Evidence("icd10cm:N44.8", ((1343, 1376),), "teste derecho aumentado de tamaño", "es") in doc.evidence
    )
    assert all(e.offsets_in == "es" for e in doc.evidence)
    assert all(e.code.startswith("icd10cm:") for e in doc.evidence)  # task D keeps DIAGNOSTICO rows only
    rep = report.to_json()
    assert rep["duplicate_label_rows"] == 0
    assert rep["documents_without_text"]["count"] == 0
    assert rep["evidence"]["kept"] == 7209 + 3431 + 3665  # DIAGNOSTICO rows of the three X files


def test_embedded_procedures_keep_uncoded_documents() -> None:
    report = CodiespReport()
    docs = list(iter_codiesp(None, "P", "en", False, report=report))
    assert len(docs) == 1000
    doc = next(d for d in docs if d.id == DOC)
    assert doc.codes == [f"icd10pcs:{c}" for c in DOC_P]
    assert doc.evidence == []
    # 435 / 222 / 224 documents have a procedure code; the others are kept with none.
    assert report.documents_without_codes == {"train": 65, "dev": 28, "test": 26}
    assert sum(1 for d in docs if not d.codes) == 65 + 28 + 26


def test_background_texts() -> None:
    texts = iter_background_texts()
    first = next(texts)
    assert isinstance(first, str) and first
    assert 1 + sum(1 for _ in texts) == 2751


def test_spanish_needs_a_full_download() -> None:
    with pytest.raises(DataError, match="--path") as info:
        next(iter_codiesp(None, "D", "es", True))
    assert "text_files" in str(info.value)


@pytest.mark.parametrize(("task", "lang"), [("X", "en"), ("D", "fr")])
def test_bad_options(task: str, lang: str) -> None:
    with pytest.raises(DataError, match=r"--task|--lang"):
        next(iter_codiesp(None, task, lang, True))


@pytest.mark.skipif(FULL is None, reason="full CodiEsp release (Spanish text) not available")
def test_full_release_spanish_both_tasks() -> None:
    report = CodiespReport()
    docs = list(iter_codiesp(FULL, "DP", "es", True, report=report))
    assert len(docs) == 1000
    doc = next(d for d in docs if d.id == DOC)
    assert doc.codes == [f"icd10cm:{c}" for c in DOC_D] + [f"icd10pcs:{c}" for c in DOC_P]
    assert doc.meta == {"lang": "es"}
    strep = next(e for e in doc.evidence if e.code == "icd10pcs:3E02329")
    assert strep.spans == ((2787, 2801), (2810, 2823)) and strep.offsets_in == "text"
    assert " ".join(doc.text[a:b] for a, b in strep.spans) == "Estreptomicina intramuscular"
    ev = report.to_json()["evidence"]
    assert ev["span_text_checked"] == 9181 + 4477 + 4777
    # 8 gold spans are one character off (e.g. "R.T.U" vs "R.T.U."): counted, kept, never fatal.
    assert ev["span_text_mismatches"] == 8
    assert ev["kept"] == 9181 + 4477 + 4777


# ------------------------------------------------------------------ a small hand-made release


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _tiny_release(root: Path) -> Path:
    """train: a (codes + evidence), b (text, no code), ghost (codes, no text); dev/test: one doc each."""
    es_a = "Paciente con fiebre alta y dolor torácico.\nSe pauta paracetamol."
    for split in ("train", "dev", "test"):
        _write(root / split / f"{split}D.tsv", "")
        _write(root / split / f"{split}P.tsv", "")
        _write(root / split / f"{split}X.tsv", "")
    _write(root / "train" / "text_files" / "a.txt", es_a)
    _write(root / "train" / "text_files_en" / "a.txt", "Patient with high fever and chest pain.")
    _write(root / "train" / "text_files" / "b.txt", "Sin hallazgos.")
    _write(root / "train" / "text_files_en" / "b.txt", "No findings.")
    _write(
        root / "train" / "trainD.tsv",
        "a\tr50.9\na\tr07.9\na\tr50.9\nghost\ti10\n\n",  # r50.9 twice: one duplicate row
    )
    _write(root / "train" / "trainP.tsv", "a\t3e0336z\n")
    fever = (es_a.index("fiebre"), es_a.index("fiebre") + len("fiebre alta"))
    dolor = (es_a.index("dolor"), es_a.index("dolor") + len("dolor"))
    tor = (es_a.index("torácico"), es_a.index("torácico") + len("torácico"))
    _write(
        root / "train" / "trainX.tsv",
        f"a\tDIAGNOSTICO\tr50.9\tfiebre alta\t{fever[0]} {fever[1]}\n"
        f"a\tDIAGNOSTICO\tr07.9\tdolor torácico\t{dolor[0]} {dolor[1]};{tor[0]} {tor[1]}\n"
        f"a\tDIAGNOSTICO\tr07.9\tdolor torácico\t{dolor[0]} {dolor[1]};{tor[0]} {tor[1]}\n"  # duplicate
        f"a\tDIAGNOSTICO\tr50.9\tfiebre\t{fever[0]} {fever[0] + 5}\n"  # span text does not match
        f"a\tDIAGNOSTICO\tr50.9\tfiebre\tabc\n"  # malformed offsets
        f"a\tDIAGNOSTICO\tz99.9\tnada\t0 4\n"  # code not among the document's labels
        f"a\tDIAGNOSTICO\tonly-three-fields\n"  # malformed row
        f"a\tPROCEDIMIENTO\t3e0336z\tparacetamol\t{es_a.index('paracetamol')} {len(es_a) - 1}\n",
    )
    for split, doc_id in (("dev", "c"), ("test", "d")):
        _write(root / split / "text_files" / f"{doc_id}.txt", "Neumonía.")
        _write(root / split / "text_files_en" / f"{doc_id}.txt", "Pneumonia.")
        _write(root / split / f"{split}D.tsv", f"{doc_id}\tj18.9\n")
    return root


def test_tiny_release_spanish_report(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    report = CodiespReport()
    docs = list(iter_codiesp(root, "D", "es", True, report=report))
    assert [(d.split, d.id) for d in docs] == [("train", "a"), ("train", "b"), ("dev", "c"), ("test", "d")]
    a = docs[0]
    assert a.codes == ["icd10cm:R50.9", "icd10cm:R07.9"]
    assert [e.code for e in a.evidence] == ["icd10cm:R50.9", "icd10cm:R07.9", "icd10cm:R50.9"]
    assert a.evidence[1].spans == ((27, 32), (33, 41))
    assert a.evidence[1].offsets_in == "text"
    assert docs[1].codes == []
    rep = report.to_json()
    assert rep["duplicate_label_rows"] == 1
    assert rep["documents_without_text"] == {"count": 1, "examples": ["ghost"]}
    assert rep["documents_without_codes"] == {"train": 1, "dev": 0, "test": 0}
    ev = rep["evidence"]
    # 6 well-formed DIAGNOSTICO rows: 1 duplicate, 1 bad offsets, 1 unlabelled code, 3 kept (1 with
    # mismatching text); the three-field row is malformed and skipped; the PROCEDIMIENTO row is not task D.
    assert ev["rows"] == 6
    assert ev["duplicate_rows"] == 1
    assert ev["malformed_offsets"] == 1
    assert ev["malformed_rows"] == 1
    assert ev["code_not_labelled"] == 1
    assert ev["kept"] == 3
    assert ev["span_text_checked"] == 3
    assert ev["span_text_mismatches"] == 1


def test_tiny_release_both_tasks_english(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    docs = list(iter_codiesp(root, "DP", "en", True))
    a = docs[0]
    assert a.text == "Patient with high fever and chest pain."
    assert a.codes == ["icd10cm:R50.9", "icd10cm:R07.9", "icd10pcs:3E0336Z"]
    assert {e.offsets_in for e in a.evidence} == {"es"}
    assert "icd10pcs:3E0336Z" in {e.code for e in a.evidence}


def test_damaged_label_file_names_the_line(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    _write(root / "train" / "trainD.tsv", "a\tr50.9\na r07.9\n")
    with pytest.raises(DataError, match=r"trainD\.tsv:2: expected 2 tab-separated fields"):
        list(iter_codiesp(root, "D", "en", True))


def test_missing_split_folder(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    (root / "test" / "testD.tsv").unlink()
    with pytest.raises(DataError, match=r"testD\.tsv"):
        list(iter_codiesp(root, "D", "en", True))


def _fake_exists(known: set[str]) -> Callable[[str, str], bool]:
    return lambda system, code: f"{system}:{code}" in known


def test_prepare_drop_unknown_codes(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    exists = _fake_exists({"icd10cm:R50.9", "icd10cm:J18.9"})
    stats = prepare_codiesp(tmp_path / "out", root=root, lang="es", unknown_codes="drop", exists=exists)
    val = stats["report"]["code_validation"]
    assert val["unknown"]["by_system"] == {
        "icd10cm": {"assignments": 1, "distinct": 1, "examples": ["icd10cm:R07.9"]}
    }
    assert val["dropped_assignments"] == 1
    a = PreparedDataset.open(tmp_path / "out").load("train")[0]
    assert a.codes == ["icd10cm:R50.9"]
    assert {e.code for e in a.evidence} == {"icd10cm:R50.9"}  # the dropped code's evidence goes too
    assert stats["options"] == {
        "task": "D",
        "lang": "es",
        "evidence": True,
        "path": str(root),
        "unknown_codes": "drop",
    }


def test_prepare_fail_on_unknown_codes_writes_nothing(tmp_path: Path) -> None:
    root = _tiny_release(tmp_path / "rel")
    with pytest.raises(
        DataError, match=r"1 unknown code\(s\) in 1 assignment\(s\) \(e\.g\. icd10cm:R07\.9\)"
    ):
        prepare_codiesp(
            tmp_path / "out",
            root=root,
            unknown_codes="fail",
            exists=_fake_exists({"icd10cm:R50.9", "icd10cm:J18.9"}),
        )
    assert not (tmp_path / "out").exists()


def test_prepare_embedded_default(tmp_path: Path) -> None:
    stats = prepare_codiesp(tmp_path / "out", task="D", lang="en", exists=_all_known)
    assert {s: v["documents"] for s, v in stats["splits"].items()} == {"train": 500, "dev": 250, "test": 250}
    assert stats["options"]["path"] == "embedded"
    assert stats["report"]["code_validation"]["unknown"]["distinct"] == 0
    assert embedded_root().is_dir()

from pathlib import Path

import pytest

from icdcoder.data.document import Document, Evidence
from icdcoder.data.prepared import PreparedDataset, write_prepared
from icdcoder.errors import DataError, IcdcoderError


def _docs() -> list[Document]:
    return [
        Document(
            "a",
            "chest pain today",
            ["icd10cm:R07.9", "icd10cm:I10"],
            "train",
            evidence=[Evidence("icd10cm:R07.9", ((0, 10),))],
        ),
        Document("b", "hypertension", ["icd10cm:I10"], "train"),
        Document("c", "", [], "dev"),
        Document("d", "fracture of femur", ["icd10cm:S72.0", "icd10pcs:0QS"], "test"),
    ]


def test_roundtrip_and_stats(tmp_path: Path) -> None:
    stats = write_prepared(tmp_path / "ds", _docs(), source="unit", row_group_size=2)
    assert stats["splits"]["train"] == {
        "documents": 2,
        "distinct_codes": 2,
        "distinct_codes_by_system": {"icd10cm": 2},
        "label_cardinality": 1.5,
        "code_assignments": 3,
        "words_mean": 2.0,
        "words_max": 3,
        "empty_notes": 0,
        "documents_without_codes": 0,
    }
    assert stats["splits"]["dev"]["empty_notes"] == 1
    ds = PreparedDataset.open(tmp_path / "ds")
    assert ds.codes() == ["icd10cm:I10", "icd10cm:R07.9", "icd10cm:S72.0", "icd10pcs:0QS"]
    assert ds.codes("train") == ["icd10cm:I10", "icd10cm:R07.9"]
    docs = ds.load()
    assert [d.id for d in docs] == ["a", "b", "c", "d"]
    assert docs[0].evidence[0].spans == ((0, 10),)
    assert [d.id for d in ds.documents("test")] == ["d"]


def test_duplicate_id_leaves_nothing(tmp_path: Path) -> None:
    docs = [*_docs(), Document("a", "again", [], "train")]
    with pytest.raises(DataError, match="duplicate document id 'a'"):
        write_prepared(tmp_path / "ds", docs, source="unit")
    assert not (tmp_path / "ds").exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused(tmp_path: Path) -> None:
    write_prepared(tmp_path / "ds", _docs(), source="unit")
    with pytest.raises(IcdcoderError, match="--overwrite"):
        write_prepared(tmp_path / "ds", _docs(), source="unit")
    write_prepared(tmp_path / "ds", _docs()[:2], source="unit", overwrite=True)
    assert PreparedDataset.open(tmp_path / "ds").stats["total"]["documents"] == 2


def test_open_missing_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="icdcoder data prepare"):
        PreparedDataset.open(tmp_path / "nope")

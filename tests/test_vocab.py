import hashlib
import json
from pathlib import Path

import pytest

from icdcoder.errors import IcdcoderError, ModelDirError
from icdcoder.text.vocab import PAD_ID, UNK_ID, Vocab, tokens_fingerprint

DOCS = [
    ["chest", "pain", "pain", "pain"],
    ["chest", "fever"],
    ["fever", "cough", "chest"],
    ["asthma"],
]


def test_build_orders_by_document_frequency_then_alphabet() -> None:
    v = Vocab.build(DOCS)
    # df: chest 3, fever 2, asthma 1, cough 1, pain 1 (three uses in one document count once)
    assert v.tokens == ["<pad>", "<unk>", "chest", "fever", "asthma", "cough", "pain"]
    assert v.doc_freq == [0, 0, 3, 2, 1, 1, 1]
    assert v.meta["n_documents"] == 4 and v.meta["distinct_words_seen"] == 5
    assert len(v) == 7 and "fever" in v and "flu" not in v
    assert v.pad_id == PAD_ID == 0 and v.unk_id == UNK_ID == 1


def test_min_doc_freq_and_max_size() -> None:
    assert Vocab.build(DOCS, min_doc_freq=2).tokens == ["<pad>", "<unk>", "chest", "fever"]
    assert Vocab.build(DOCS, max_size=4).tokens == ["<pad>", "<unk>", "chest", "fever"]
    assert Vocab.build(DOCS, max_size=2).tokens == ["<pad>", "<unk>"]
    assert Vocab.build([]).tokens == ["<pad>", "<unk>"]
    assert Vocab.build([["<pad>", "<unk>", "x"]]).tokens == ["<pad>", "<unk>", "x"]
    with pytest.raises(ValueError):
        Vocab.build(DOCS, min_doc_freq=0)
    with pytest.raises(ValueError):
        Vocab.build(DOCS, max_size=1)


def test_build_is_order_independent() -> None:
    assert Vocab.build(DOCS) == Vocab.build(list(reversed(DOCS)))


def test_encode_decode() -> None:
    v = Vocab.build(DOCS)
    assert v.encode(["pain", "flu", "chest"]) == [6, 1, 2]
    assert v.decode([6, 1, 2, 0]) == ["pain", "<unk>", "chest", "<pad>"]
    assert v.index("cough") == 5 and v.index("zzz") == UNK_ID
    with pytest.raises(IndexError):
        v.decode([7])


def test_fingerprint_is_sha256_of_token_list() -> None:
    v = Vocab.build(DOCS)
    blob = json.dumps(v.tokens, ensure_ascii=False, separators=(",", ":")).encode()
    assert v.fingerprint == hashlib.sha256(blob).hexdigest() == tokens_fingerprint(v.tokens)
    assert Vocab.build(DOCS, min_doc_freq=2).fingerprint != v.fingerprint
    v.require_fingerprint(v.fingerprint)
    with pytest.raises(ModelDirError, match="does not match"):
        v.require_fingerprint("0" * 64, path="model/vocab.json")


def test_save_load_roundtrip_unicode(tmp_path: Path) -> None:
    v = Vocab.build([["riñón", "médico"], ["riñón"]])
    path = tmp_path / "vocab.json"
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.tokens == ["<pad>", "<unk>", "riñón", "médico"]
    assert w.doc_freq == v.doc_freq and w.fingerprint == v.fingerprint and w.meta == v.meta
    assert "riñón" in path.read_text(encoding="utf-8")  # readable JSON, not escaped or pickled


def _tamper(path: Path, **changes: object) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj.update(changes)
    path.write_text(json.dumps(obj), encoding="utf-8")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"tokens": ["<pad>", "<unk>", "fever", "chest", "asthma", "cough", "pain"]}, "fingerprint"),
        ({"tokens": ["<unk>", "<pad>", "chest", "fever", "asthma", "cough", "pain"]}, "must start with"),
        ({"tokens": ["<pad>", "<unk>", "chest", "chest", "asthma", "cough", "pain"]}, "repeats"),
        ({"tokens": "chest"}, "list of strings"),
        ({"doc_freq": [1, 2]}, "doc_freq"),
        ({"size": 3}, "'size'"),
        ({"format": "other"}, "not an icdcoder-vocab"),
        ({"version": 99}, "version 99"),
    ],
)
def test_load_refuses_corrupted_file(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    path = tmp_path / "vocab.json"
    Vocab.build(DOCS).save(path)
    _tamper(path, **changes)
    with pytest.raises(ModelDirError, match=message) as err:
        Vocab.load(path)
    assert str(path) in str(err.value) and "corrupted vocabulary file" in str(err.value)


def test_load_refuses_truncated_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    Vocab.build(DOCS).save(path)
    path.write_text(path.read_text(encoding="utf-8")[:40], encoding="utf-8")
    with pytest.raises(IcdcoderError, match="invalid JSON") as err:
        Vocab.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(IcdcoderError, match="file not found"):
        Vocab.load(tmp_path / "nope.json")

"""word2vec embeddings (gensim CBOW, as CAML/LAAT/MSMN used) trained on a prepared dataset, cached on disk.

Cache: one directory per input fingerprint (dataset fingerprint and split, settings, tokenizer config, sha256
of the extra texts, gensim version) under `cache_dir` (argument) or `$ICDCODER_CACHE/word2vec` or
`~/.cache/icdcoder/word2vec`. It holds `vectors.npy` (float32, loaded with allow_pickle=False), `words.json`
and `meta.json` (with a sha256 of the vectors), written to a temporary directory and renamed into place.
Never pickles and never gensim's own `.save` (which pickles). A damaged entry is logged and rebuilt.

Determinism: with `workers=1` and the same seed, gensim 4.4 gives identical vectors in every run, whatever
PYTHONHASHSEED: its initial vectors come from `np.random.default_rng(seed)` and we pass a stable `hashfxn`
instead of Python's salted `hash`. Caveat: bit-identical only with the same numpy/scipy BLAS and CPU;
`workers > 1` is faster but not reproducible (thread scheduling changes the update order).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icdcoder.errors import DataError
from icdcoder.io import atomic_output_dir, cache_root, write_json
from icdcoder.text.tokenizer import Tokenizer
from icdcoder.text.vocab import PAD_ID, Vocab

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
# gensim's C routines silently truncate sentences longer than this; longer documents are cut into pieces.
GENSIM_MAX_SENTENCE_LEN = 10000
VECTORS_FILE = "vectors.npy"
WORDS_FILE = "words.json"
META_FILE = "meta.json"


def default_cache_dir() -> Path:
    """`word2vec/` under the icdcoder cache root (`icdcoder.io.cache_root`)."""
    return cache_root() / "word2vec"


def _stable_hash(s: str) -> int:
    # gensim only needs an int per string; crc32 is stable across processes (Python's hash is salted).
    return zlib.crc32(s.encode("utf-8"))


class _Sentences:
    """A re-iterable corpus (gensim passes over it once for the vocabulary and once per epoch) that splits
    sentences longer than gensim's limit instead of letting gensim drop their tails."""

    def __init__(self, sentences: Iterable[Sequence[str]]) -> None:
        self._sentences = sentences

    def __iter__(self) -> Iterator[list[str]]:
        for sent in self._sentences:
            sent = list(sent)
            for i in range(0, len(sent), GENSIM_MAX_SENTENCE_LEN):
                yield sent[i : i + GENSIM_MAX_SENTENCE_LEN]


def train_word2vec(
    sentences: Iterable[list[str]],
    dim: int = 100,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 5,
    seed: int = 0,
    workers: int = 1,
) -> tuple[list[str], np.ndarray]:
    """Train CBOW word2vec (sg=0, negative sampling as gensim's default) and return (words, float32 [V, dim]).

    `sentences` may be a list or any re-iterable; a one-shot iterator is materialised first. Words come by
    descending corpus count, ties alphabetical. An empty corpus gives ([], [0, dim]).
    """
    from gensim.models import Word2Vec  # lazy: gensim takes a while to import

    if iter(sentences) is sentences:  # a generator/iterator can be read only once
        sentences = [list(s) for s in sentences]
    corpus = _Sentences(sentences)
    if not any(True for s in corpus if s):
        return [], np.zeros((0, dim), dtype=np.float32)
    model = Word2Vec(
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=0,
        workers=workers,
        seed=seed,
        epochs=epochs,
        hashfxn=_stable_hash,
    )
    model.build_vocab(corpus)
    if not model.wv.index_to_key:
        return [], np.zeros((0, dim), dtype=np.float32)
    model.train(corpus, total_examples=model.corpus_count, epochs=epochs)
    # gensim sorts by count with an unstable argsort; use our own order: descending count, then alphabetical
    keys = [str(w) for w in model.wv.index_to_key]
    order = sorted(range(len(keys)), key=lambda i: (-int(model.wv.get_vecattr(keys[i], "count")), keys[i]))
    words = [keys[i] for i in order]
    return words, np.ascontiguousarray(model.wv.vectors[order], dtype=np.float32)


def _texts_digest(texts: Iterable[str]) -> tuple[list[str], str, int]:
    digest = hashlib.sha256()
    kept: list[str] = []
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: ["ab","c"] != ["a","bc"]
        digest.update(data)
        kept.append(text)
    return kept, digest.hexdigest(), len(kept)


def _vectors_digest(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()


def _load_entry(entry: Path, key: str, dim: int) -> tuple[list[str], np.ndarray] | None:
    """The cached (words, vectors) of `entry`, or None when it is missing; raises ValueError when damaged."""
    if not entry.is_dir():
        return None
    with open(entry / META_FILE, encoding="utf-8") as fh:
        meta = json.load(fh)
    with open(entry / WORDS_FILE, encoding="utf-8") as fh:
        words = json.load(fh)
    vectors = np.load(entry / VECTORS_FILE, allow_pickle=False)
    if meta.get("key") != key:
        raise ValueError("meta.json records another key")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError("words.json is not a list of strings")
    if vectors.dtype != np.float32 or vectors.shape != (len(words), dim):
        raise ValueError(
            f"vectors have shape {vectors.shape} {vectors.dtype}, expected ({len(words)}, {dim})"
        )
    if meta.get("vectors_sha256") != _vectors_digest(vectors):
        raise ValueError("vectors.npy does not match its recorded checksum")
    return words, vectors


def cached_word2vec(
    dataset_dir: str | Path,
    tokenizer: Tokenizer,
    extra_texts: Iterable[str] | None = None,
    extra_key: str = "",
    dim: int = 100,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 5,
    seed: int = 0,
    workers: int = 1,
    split: str = "train",
    cache_dir: str | Path | None = None,
) -> tuple[list[str], np.ndarray]:
    """word2vec on the tokenised `split` documents of a prepared dataset plus optional unlabelled
    `extra_texts` (e.g. CodiEsp background notes), trained once per distinct input and then read from cache.

    `extra_key` is a human-readable name for the extra texts recorded in the cache metadata; the texts
    themselves are hashed into the key, so changing them (or any setting) trains a new model.
    """
    from icdcoder.data.prepared import PreparedDataset

    ds = PreparedDataset.open(dataset_dir)
    if split not in ds.splits:
        raise DataError(
            f"the prepared dataset has no {split!r} documents to train word2vec on "
            f"(splits: {', '.join(ds.splits)}).",
            path=dataset_dir,
            fix="prepare the data with a train split, or pass split= one of those listed.",
        )
    extra, extra_sha, n_extra = _texts_digest(extra_texts) if extra_texts is not None else ([], "", 0)
    settings: dict[str, Any] = {
        "format_version": CACHE_FORMAT_VERSION,
        "dataset_fingerprint": ds.fingerprint,
        "split": split,
        "tokenizer": tokenizer.to_config(),
        "extra_texts_sha256": extra_sha,
        "extra_texts_count": n_extra,
        "algorithm": "cbow",
        "dim": dim,
        "window": window,
        "min_count": min_count,
        "epochs": epochs,
        "seed": seed,
        "workers": workers,
        "gensim": ".".join(importlib.metadata.version("gensim").split(".")[:2]),
        "max_sentence_len": GENSIM_MAX_SENTENCE_LEN,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:32]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / key
    try:
        hit = _load_entry(entry, key, dim)
    except (OSError, ValueError) as exc:
        log.warning("word2vec cache entry %s is damaged (%s); rebuilding it", entry, exc)
        hit = None
    if hit is not None:
        log.info("word2vec: cache hit %s", entry)
        return hit

    def sentences() -> Iterator[list[str]]:
        for doc in ds.documents(split):
            yield tokenizer.words(doc.text)
        for text in extra:
            yield tokenizer.words(text)

    n_docs = 0
    corpus: list[list[str]] = []
    interned: dict[str, str] = {}  # one string object per word type keeps a MIMIC-sized corpus in RAM
    for sent in sentences():
        n_docs += 1
        corpus.append([interned.setdefault(w, w) for w in sent])
    log.info("word2vec: training on %d documents (%d extra) into %s", n_docs, n_extra, entry)
    words, vectors = train_word2vec(
        corpus, dim=dim, window=window, min_count=min_count, epochs=epochs, seed=seed, workers=workers
    )
    meta = {
        "key": key,
        "settings": settings,
        "extra_key": extra_key,
        "documents": n_docs,
        "vocabulary": len(words),
        "vectors_sha256": _vectors_digest(vectors),
    }
    try:
        with atomic_output_dir(entry, overwrite=True) as tmp:
            np.save(tmp / VECTORS_FILE, vectors, allow_pickle=False)
            write_json(tmp / WORDS_FILE, words)
            write_json(tmp / META_FILE, meta)
    except OSError as exc:  # the cache only saves time: warn and go on with the trained vectors
        log.warning(
            "could not write the word2vec cache %s (%s); set ICDCODER_CACHE to a writable directory",
            entry,
            exc.strerror or exc,
        )
    return words, vectors


def embedding_matrix(vocab: Vocab, words: list[str], vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 [len(vocab), dim] initial embedding rows for `vocab`: the trained vector where the word has
    one, zeros for `<pad>`, and for every other row (`<unk>` and words word2vec did not keep) a random normal
    vector with the standard deviation of the trained vectors (1/sqrt(dim) when there are none)."""
    out, found = vocab_rows(vocab, words, vectors, seed)
    log.info("embedding_matrix: %d of %d vocabulary rows from word2vec", found, len(vocab))
    return out


def vocab_rows(vocab: Vocab, words: list[str], vectors: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """float32 [len(vocab), dim]: `vectors`' row for each vocabulary word in `words`, zeros for `<pad>`, a
    random normal row (the vectors' standard deviation; 1/sqrt(dim) when there are none) for the rest; and
    how many rows were found. Shared by word2vec and pre-trained vectors (text/pretrained_vectors.py)."""
    if vectors.ndim != 2 or len(words) != vectors.shape[0]:
        raise ValueError(f"{len(words)} words for vectors of shape {vectors.shape}")
    dim = vectors.shape[1]
    std = float(vectors.std()) if vectors.size else 1.0 / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    out = (rng.standard_normal((len(vocab), dim)) * std).astype(np.float32)
    row_of = {w: i for i, w in enumerate(words)}
    found = 0
    for idx, tok in enumerate(vocab.tokens):
        j = row_of.get(tok)
        if j is not None:
            out[idx] = vectors[j]
            found += 1
    out[PAD_ID] = 0.0
    return out, found

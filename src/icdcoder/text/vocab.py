"""Word vocabulary: index 0 = `<pad>`, 1 = `<unk>`, then words by descending document frequency, ties
alphabetical, so the same training documents always give the same ids.

Saved as JSON (never pickle). Its `fingerprint` (sha256 of the token list) is recorded in model
directories so a model refuses a vocabulary it was not trained with.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from icdcoder.errors import ModelDirError
from icdcoder.io import read_json, write_json

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
SPECIALS: tuple[str, ...] = (PAD, UNK)
VOCAB_FORMAT = "icdcoder-vocab"
VOCAB_VERSION = 1


def tokens_fingerprint(tokens: Sequence[str]) -> str:
    """sha256 (hex) of the token list in index order, specials included."""
    blob = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Vocab:
    """A fixed word -> id mapping. Build it with `Vocab.build`, or `Vocab(tokens)` from a saved list."""

    def __init__(
        self,
        tokens: Sequence[str],
        doc_freq: Sequence[int] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {list(SPECIALS)}")
        index: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"vocabulary entry {i} is not a non-empty string")
            if tok in index:
                raise ValueError(f"vocabulary entry {i} repeats entry {index[tok]}")
            index[tok] = i
        if doc_freq is not None and len(doc_freq) != len(tokens):
            raise ValueError("doc_freq must have one count per token")
        self._tokens = tokens
        self._index = index
        self.doc_freq: list[int] | None = None if doc_freq is None else [int(x) for x in doc_freq]
        self.meta: dict[str, Any] = dict(meta or {})
        self._fingerprint = tokens_fingerprint(tokens)

    @classmethod
    def build(
        cls,
        documents: Iterable[Iterable[str]],
        min_doc_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Vocabulary of the words in `documents` (one token list per training document).

        Keeps words seen in at least `min_doc_freq` documents (CAML used 3); with `max_size`, keeps at most
        that many entries in total, specials included. Words equal to a special are ignored.
        """
        if min_doc_freq < 1:
            raise ValueError("min_doc_freq must be at least 1")
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be at least {len(SPECIALS)} (the special tokens)")
        df: Counter[str] = Counter()
        n_docs = 0
        for doc in documents:
            n_docs += 1
            df.update(set(doc))
        for special in SPECIALS:
            df.pop(special, None)
        kept = sorted(((w, c) for w, c in df.items() if c >= min_doc_freq), key=lambda wc: (-wc[1], wc[0]))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        tokens = [*SPECIALS, *(w for w, _ in kept)]
        freqs = [0, 0, *(c for _, c in kept)]
        meta = {
            "n_documents": n_docs,
            "min_doc_freq": min_doc_freq,
            "max_size": max_size,
            "distinct_words_seen": len(df),
        }
        return cls(tokens, freqs, meta)

    # -- mapping -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, fingerprint={self.fingerprint[:12]})"

    @property
    def tokens(self) -> list[str]:
        """The token list in index order (a copy)."""
        return list(self._tokens)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    def index(self, word: str) -> int:
        """The id of `word`, or the `<unk>` id."""
        return self._index.get(word, UNK_ID)

    def encode(self, words: Iterable[str]) -> list[int]:
        get = self._index.get
        return [get(w, UNK_ID) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        toks = self._tokens
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(toks):
                raise IndexError(f"id {i} is outside the vocabulary (size {len(toks)})")
            out.append(toks[i])
        return out

    # -- identity ----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 of the token list (the vocabulary's identity; counts and meta do not enter it)."""
        return self._fingerprint

    def require_fingerprint(self, expected: str, *, path: str | Path | None = None) -> None:
        """Refuse this vocabulary unless its fingerprint is `expected` (e.g. the one a model recorded)."""
        if self.fingerprint != expected:
            raise ModelDirError(
                f"vocabulary fingerprint {self.fingerprint[:12]} does not match the expected "
                f"{expected[:12]}.",
                path=path,
                fix="use the vocabulary saved with this model (do not rebuild it from other data).",
            )

    # -- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "size": len(self),
            "fingerprint": self.fingerprint,
            "tokens": self._tokens,
            "doc_freq": self.doc_freq,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON, atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a vocabulary written by `save`; refuse a corrupted or tampered file, naming it."""
        obj = read_json(path)

        def bad(what: str) -> ModelDirError:
            return ModelDirError(
                f"corrupted vocabulary file: {what}.",
                path=path,
                fix="restore the file from the model directory it came from, or retrain.",
            )

        if not isinstance(obj, dict) or obj.get("format") != VOCAB_FORMAT:
            raise bad(f"not an {VOCAB_FORMAT} file")
        if obj.get("version") != VOCAB_VERSION:
            raise bad(f"version {obj.get('version')!r}, this icdcoder reads {VOCAB_VERSION}")
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise bad("'tokens' is not a list of strings")
        doc_freq = obj.get("doc_freq")
        if doc_freq is not None and (
            not isinstance(doc_freq, list)
            or len(doc_freq) != len(tokens)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in doc_freq)
        ):
            raise bad("'doc_freq' is not one integer per token")
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise bad("'meta' is not an object")
        try:
            vocab = cls(tokens, doc_freq, meta)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if obj.get("size") != len(vocab):
            raise bad(f"'size' says {obj.get('size')!r} but it holds {len(vocab)} tokens")
        if obj.get("fingerprint") != vocab.fingerprint:
            raise bad("the token list does not match its recorded fingerprint")
        return vocab

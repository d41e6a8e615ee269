"""Text pipeline: tokenizer with character spans, vocabulary, truncation / chunking / bucketed batching,
word2vec embeddings.

`tokenizer` and `vocab` are imported eagerly (standard library only); `batching` (torch) and `word2vec`
(gensim, numpy) load on first use of one of their names, so `import icdcoder.text` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from icdcoder.text.tokenizer import Token, Tokenizer
from icdcoder.text.vocab import PAD, PAD_ID, UNK, UNK_ID, Vocab

if TYPE_CHECKING:
    from icdcoder.text.batching import (
        BucketBatchSampler,
        Segment,
        chunk,
        collate_token_ids,
        iter_segments,
        pad_to_chunks,
        reshape_chunks,
        truncate,
    )
    from icdcoder.text.word2vec import cached_word2vec, embedding_matrix, train_word2vec

_LAZY = {
    "BucketBatchSampler": "batching",
    "Segment": "batching",
    "chunk": "batching",
    "collate_token_ids": "batching",
    "iter_segments": "batching",
    "pad_to_chunks": "batching",
    "reshape_chunks": "batching",
    "truncate": "batching",
    "cached_word2vec": "word2vec",
    "embedding_matrix": "word2vec",
    "train_word2vec": "word2vec",
}

__all__ = [
    "PAD",
    "PAD_ID",
    "UNK",
    "UNK_ID",
    "BucketBatchSampler",
    "Segment",
    "Token",
    "Tokenizer",
    "Vocab",
    "cached_word2vec",
    "chunk",
    "collate_token_ids",
    "embedding_matrix",
    "iter_segments",
    "pad_to_chunks",
    "reshape_chunks",
    "train_word2vec",
    "truncate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'icdcoder.text' has no attribute {name!r}")
    return getattr(importlib.import_module(f"icdcoder.text.{module}"), name)

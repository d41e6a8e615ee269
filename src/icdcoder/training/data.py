"""From documents to tensors: encoded splits (token ids + target indices) and their batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from icdcoder.data.document import Document
from icdcoder.models.base import Batch
from icdcoder.training.labels import LabelSpace


@dataclass
class EncodedSplit:
    """One split ready for a model: token ids per document and the label indices of its gold codes.

    `unseen` holds, per document, gold codes outside the label space (they still count in evaluation).
    `texts` holds the raw notes, handed to models that read text (`IcdModel.reads_text`)."""

    doc_ids: list[str]
    token_ids: list[np.ndarray]  # int64 arrays, already truncated
    targets: list[list[int]]
    unseen: list[list[str]]
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def lengths(self) -> list[int]:
        return [max(len(t), 1) for t in self.token_ids]


def encode_split(
    docs: Sequence[Document], token_ids: Sequence[Sequence[int]], labels: LabelSpace, max_tokens: int
) -> EncodedSplit:
    targets: list[list[int]] = []
    unseen: list[list[str]] = []
    for doc in docs:
        idx, miss = [], []
        for key in doc.codes:
            i = labels.index(key)
            if i is None:
                miss.append(key)
            else:
                idx.append(i)
        targets.append(sorted(set(idx)))
        unseen.append(miss)
    return EncodedSplit(
        doc_ids=[d.id for d in docs],
        token_ids=[np.asarray(list(ids)[:max_tokens], dtype=np.int64) for ids in token_ids],
        targets=targets,
        unseen=unseen,
        texts=[d.text for d in docs],
    )


def make_batch(split: EncodedSplit, indices: Sequence[int], n_labels: int, pad_id: int = 0) -> Batch:
    """Pad the chosen documents into a Batch (an empty document becomes one padding token, fully masked)."""
    lengths = [max(len(split.token_ids[i]), 1) for i in indices]
    width = max(lengths)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.bool)
    targets = torch.zeros((len(indices), n_labels), dtype=torch.float32)
    for row, i in enumerate(indices):
        t = split.token_ids[i]
        if len(t):
            ids[row, : len(t)] = torch.from_numpy(t)
            mask[row, : len(t)] = True
        if split.targets[i]:
            targets[row, split.targets[i]] = 1.0
    return Batch(
        token_ids=ids,
        mask=mask,
        lengths=torch.tensor([int(m.sum()) for m in mask], dtype=torch.long),
        doc_ids=[split.doc_ids[i] for i in indices],
        targets=targets,
        texts=None if split.texts is None else [split.texts[i] for i in indices],
    )


def target_matrix(split: EncodedSplit, n_labels: int) -> np.ndarray:
    y = np.zeros((len(split), n_labels), dtype=np.int8)
    for row, idx in enumerate(split.targets):
        y[row, idx] = 1
    return y


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference batches of similar length (no shuffling), covering every index once."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

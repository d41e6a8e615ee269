"""Long-document handling and batching: truncation, chunking / segments, length-bucketed batch sampling
(also under DistributedDataParallel), and padding collation.

Conventions from the peer framework (SEED_NOTES "Long documents"): notes are truncated to 4,000 words; PLM-ICD
pads each document to a multiple of the chunk size and reshapes it to (n_chunks, size); Edin's
`BySequenceLengthSampler` buckets documents by length (boundaries 400 ... 4000) to cut padding.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

T = TypeVar("T")

DEFAULT_MAX_TOKENS = 4000
TruncateSide = Literal["head", "tail", "head+tail"]


# -- truncation and chunking ---------------------------------------------------------------------------
def truncate(ids: Sequence[T], max_len: int = DEFAULT_MAX_TOKENS, side: TruncateSide = "head") -> list[T]:
    """Keep at most `max_len` items: the first ones ("head", the default and the peer convention), the last
    ones ("tail"), or the first ceil(max_len/2) plus the last floor(max_len/2) ("head+tail")."""
    if max_len < 0:
        raise ValueError("max_len must be >= 0")
    if len(ids) <= max_len:
        return list(ids)
    if side == "head":
        return list(ids[:max_len])
    if side == "tail":
        return list(ids[len(ids) - max_len :]) if max_len else []
    if side == "head+tail":
        n_tail = max_len // 2
        n_head = max_len - n_tail
        return list(ids[:n_head]) + (list(ids[len(ids) - n_tail :]) if n_tail else [])
    raise ValueError(f"unknown truncation side {side!r}; use 'head', 'tail' or 'head+tail'")


@dataclass(frozen=True)
class Segment:
    """A window of a document: `ids` are the items `[start, end)` of the full sequence; `index` counts
    windows from 0."""

    index: int
    start: int
    end: int
    ids: list[int]


def segment_bounds(n: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """(start, end) windows of `size` items every `stride` items (default `size`: no overlap) covering
    `n` items. Windows stop once one reaches the end, so only the last can be shorter; `n == 0` gives []."""
    if size < 1:
        raise ValueError("size must be >= 1")
    stride = size if stride is None else stride
    if not 1 <= stride <= size:
        raise ValueError("stride must be between 1 and size (a larger stride would skip items)")
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(start + size, n)
        bounds.append((start, end))
        if end == n:
            break
        start += stride
    return bounds


def chunk(ids: Sequence[int], size: int, stride: int | None = None) -> list[list[int]]:
    """Split `ids` into windows of `size` (overlapping by `size - stride` when `stride < size`)."""
    return [list(ids[a:b]) for a, b in segment_bounds(len(ids), size, stride)]


def iter_segments(ids: Sequence[int], size: int, stride: int | None = None) -> Iterator[Segment]:
    """Yield the windows of `chunk` with their offsets, for models that read a note segment by segment and
    carry state between segments (PLANT) or map segment outputs back to token positions."""
    for i, (a, b) in enumerate(segment_bounds(len(ids), size, stride)):
        yield Segment(i, a, b, list(ids[a:b]))


def pad_to_chunks(ids: Sequence[int], size: int, pad_id: int = 0) -> list[list[int]]:
    """PLM-ICD form for one document: pad to a multiple of `size` (at least one chunk) and cut into rows."""
    if size < 1:
        raise ValueError("size must be >= 1")
    n_chunks = max(1, math.ceil(len(ids) / size))
    padded = list(ids) + [pad_id] * (n_chunks * size - len(ids))
    return [padded[i * size : (i + 1) * size] for i in range(n_chunks)]


def reshape_chunks(
    ids: torch.Tensor, mask: torch.Tensor, size: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """PLM-ICD form for a batch: pad [B, T] id and mask tensors on the right to a multiple of `size` and
    reshape them to [B, n_chunks, size]. Use `.flatten(1)` on per-token outputs to undo it."""
    if size < 1:
        raise ValueError("size must be >= 1")
    if ids.shape != mask.shape or ids.dim() != 2:
        raise ValueError("ids and mask must both be [B, T]")
    b, t = ids.shape
    n_chunks = max(1, math.ceil(t / size))
    extra = n_chunks * size - t
    if extra:
        ids = torch.nn.functional.pad(ids, (0, extra), value=pad_id)
        mask = torch.nn.functional.pad(mask, (0, extra), value=False)
    return ids.reshape(b, n_chunks, size), mask.reshape(b, n_chunks, size)


# -- collation ------------------------------------------------------------------------------------------
def collate_token_ids(
    seqs: Sequence[Sequence[int]],
    pad_id: int = 0,
    min_length: int = 1,
    pad_to_multiple_of: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad id lists on the right into (ids LongTensor [B, T], mask BoolTensor [B, T], lengths LongTensor [B]).

    T is the longest length, at least `min_length` (default 1, so an empty note still yields a [B, 1] batch
    whose row is all padding with mask False), rounded up to `pad_to_multiple_of` when given.
    """
    lengths = [len(s) for s in seqs]
    t = max([min_length, *lengths])
    if pad_to_multiple_of:
        t = math.ceil(t / pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    lens = torch.tensor(lengths, dtype=torch.long)
    mask = torch.arange(t).unsqueeze(0) < lens.unsqueeze(1)
    return out, mask, lens


# -- length-bucketed batch sampling ---------------------------------------------------------------------
def quantile_boundaries(lengths: Sequence[int], n_buckets: int) -> list[int]:
    """Upper bounds that split `lengths` into about `n_buckets` equally populated buckets."""
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    if not len(lengths):
        return []
    qs = np.quantile(np.asarray(lengths, dtype=np.float64), np.linspace(0, 1, n_buckets + 1)[1:-1])
    return sorted({math.ceil(float(q)) for q in qs})


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest member."""
    total = real = 0
    for batch in batches:
        ls = [lengths[i] for i in batch]
        total += max(ls, default=0) * len(ls)
        real += sum(ls)
    return 0.0 if total == 0 else 1.0 - real / total


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices of similar length, for `DataLoader(dataset, batch_sampler=...)`.

    Each epoch (seeded by `seed` and `set_epoch(epoch)`, identical on every rank):
    1. the indices are shuffled (when `shuffle`) and, with several replicas, padded by repetition to a
       multiple of `num_replicas` and dealt out `rank::num_replicas`, like `DistributedSampler`, so each rank
       gets a disjoint share of ceil(N / num_replicas) indices;
    2. a rank's indices go to length buckets (`bucket_boundaries` are inclusive upper bounds, longer items
       go to a final bucket; or `n_buckets` quantile buckets computed on all lengths, default 10) and each
       bucket is cut into full batches;
    3. the remainders of all buckets are pooled, sorted by length and cut into batches, so every rank yields
       exactly ceil(share / batch_size) batches whatever the bucket sizes (DDP ranks never wait on each
       other); with `drop_last`, share % batch_size random remainder items are left out instead of a short
       batch, giving floor(share / batch_size) full batches;
    4. batch order is shuffled (when `shuffle`).
    With one replica and `drop_last=False`, every index appears exactly once per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket_boundaries: Sequence[int] | None = None,
        n_buckets: int | None = None,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if bucket_boundaries is not None and n_buckets is not None:
            raise ValueError("give bucket_boundaries or n_buckets, not both")
        if num_replicas is None or rank is None:
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist_on else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist_on else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or (self.lengths < 0).any():
            raise ValueError("lengths must be a flat sequence of non-negative integers")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        if bucket_boundaries is not None:
            bounds = [int(b) for b in bucket_boundaries]
            if bounds != sorted(set(bounds)):
                raise ValueError("bucket_boundaries must be strictly increasing")
            self.boundaries = bounds
        else:
            self.boundaries = quantile_boundaries(self.lengths.tolist(), n_buckets or 10)
        n = len(self.lengths)
        self.num_samples = math.ceil(n / self.num_replicas) if n else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _rank_indices(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        total = self.num_samples * self.num_replicas
        if total > n:  # repeat from the start, as DistributedSampler does
            order = np.resize(order, total)
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = self._rank_indices(rng)
        bucket_of = np.searchsorted(np.asarray(self.boundaries, dtype=np.int64), self.lengths[idx], "left")
        bs = self.batch_size
        batches: list[list[int]] = []
        leftovers: list[int] = []
        for b in range(len(self.boundaries) + 1):
            members = idx[bucket_of == b]  # keeps the shuffled order within the bucket
            n_full = len(members) // bs * bs
            batches.extend(members[i : i + bs].tolist() for i in range(0, n_full, bs))
            leftovers.extend(members[n_full:].tolist())
        n_drop = len(leftovers) % bs if self.drop_last else 0
        if n_drop:  # drop random items (the last ones unshuffled), not always the longest
            drop = (
                rng.permutation(len(leftovers))[:n_drop]
                if self.shuffle
                else range(len(leftovers) - n_drop, len(leftovers))
            )
            dropped = {int(j) for j in drop}
            leftovers = [x for j, x in enumerate(leftovers) if j not in dropped]
        leftovers.sort(key=lambda i: (int(self.lengths[i]), i))
        batches.extend(leftovers[i : i + bs] for i in range(0, len(leftovers), bs))
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        yield from batches


def bucket_of_length(length: int, boundaries: Sequence[int]) -> int:
    """The bucket index `BucketBatchSampler` uses for `length` (bounds are inclusive upper limits)."""
    return bisect.bisect_left(list(boundaries), length)

"""Shared fixtures: a per-session cache directory, and a small learnable prepared dataset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from icdcoder.data.document import Document
from icdcoder.data.prepared import write_prepared

CODES = ["icd10cm:I10", "icd10cm:E11.9", "icd10cm:J18.9", "icd10cm:N17.9", "icd10pcs:0DTJ4ZZ"]
CUES = {
    "icd10cm:I10": "essential hypertension",
    "icd10cm:E11.9": "type two diabetes mellitus",
    "icd10cm:J18.9": "pneumonia of the right lower lobe",
    "icd10cm:N17.9": "acute kidney failure",
    "icd10pcs:0DTJ4ZZ": "laparoscopic appendectomy",
}
FILLER = "patient admitted with pain vitals stable labs reviewed plan discussed follow up clinic".split()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for a test on tiny tensors: thread start-up and contention with other processes cost
    far more than they save. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["ICDCODER_CACHE"] = str(tmp_path_factory.mktemp("icdcoder-cache"))


def make_docs(n: int, seed: int, split: str | None) -> list[Document]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        k = int(rng.integers(1, 3))
        codes = sorted(rng.choice(CODES, size=k, replace=False).tolist())
        words = list(rng.choice(FILLER, size=int(rng.integers(10, 40))))
        for c in codes:
            pos = int(rng.integers(0, len(words) + 1))
            words[pos:pos] = CUES[c].split()
        docs.append(Document(f"{split or 'u'}{seed}-{i}", " ".join(words) + ".", codes, split))
    return docs


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    docs = make_docs(60, 1, "train") + make_docs(20, 2, "dev") + make_docs(20, 3, "test")
    write_prepared(out, docs, source="unit-test")
    return out

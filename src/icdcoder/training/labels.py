"""LabelSpace: the ordered codes a model predicts, with their systems and titles.

Saved in every model directory; evaluation maps a dataset's codes onto it, and a model directory whose label
space differs from what a caller expects is refused (compare `fingerprint`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from icdcoder.errors import ModelDirError


@dataclass
class LabelSpace:
    keys: list[str]  # `system:code`, in logit order
    titles: list[str] = field(default_factory=list)
    train_counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(set(self.keys)) != len(self.keys):
            raise ModelDirError("label space has duplicate codes.")
        if not self.titles:
            self.titles = [""] * len(self.keys)
        if not self.train_counts:
            self.train_counts = [0] * len(self.keys)
        self._index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: str) -> int | None:
        return self._index.get(key)

    @property
    def systems(self) -> list[str]:
        return sorted({k.split(":", 1)[0] for k in self.keys})

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.keys).encode("utf-8")).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "codes": [
                {"key": k, "title": t, "train_count": c}
                for k, t, c in zip(self.keys, self.titles, self.train_counts, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LabelSpace:
        codes = obj["codes"]
        space = cls(
            keys=[str(c["key"]) for c in codes],
            titles=[str(c.get("title", "")) for c in codes],
            train_counts=[int(c.get("train_count", 0)) for c in codes],
        )
        if obj.get("fingerprint") not in (None, space.fingerprint):
            raise ModelDirError(
                "label space fingerprint does not match its codes (file edited or corrupted)."
            )
        return space

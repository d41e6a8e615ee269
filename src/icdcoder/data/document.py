"""The Document every source produces and every model reads: raw text, codes with their systems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class Evidence:
    """A text span that supports a code. `spans` are (start, end) character offsets into `Document.text`
    (several for a discontinuous mention); `offsets_in` names the text they index when it is not this one
    (CodiEsp's X offsets index the Spanish original)."""

    code: str  # `system:code` key
    spans: tuple[tuple[int, int], ...]
    text: str = ""
    offsets_in: str = "text"

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "spans": [list(s) for s in self.spans],
            "text": self.text,
            "offsets_in": self.offsets_in,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Evidence:
        return cls(
            code=str(obj["code"]),
            spans=tuple((int(a), int(b)) for a, b in obj["spans"]),
            text=str(obj.get("text", "")),
            offsets_in=str(obj.get("offsets_in", "text")),
        )


@dataclass
class Document:
    """One clinical note. `text` is kept raw (evidence is shown in it); `codes` are `system:code` keys,
    de-duplicated in first-seen order; `split` is train/dev/test or None for unsplit user data."""

    id: str
    text: str
    codes: list[str] = field(default_factory=list)
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)

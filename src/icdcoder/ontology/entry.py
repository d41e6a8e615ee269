"""The records the ontology hands out: `CodeEntry` (one code) and `Synonym` (one text with its origin)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Synonym:
    """A text naming a code, with where it came from (`long_title`, `gem_forward`, ... see `synonyms`)."""

    text: str
    source: str


@dataclass(frozen=True)
class CodeEntry:
    """One code of one system: titles, ancestors (nearest first) and ranked, de-duplicated synonyms."""

    system: str
    code: str
    long_title: str
    short_title: str
    parents: tuple[tuple[str, str], ...]
    is_leaf: bool
    synonyms: tuple[Synonym, ...]

    @property
    def key(self) -> str:
        """`system:code`, the spelling used in files and label spaces."""
        return f"{self.system}:{self.code}"

"""Features of (note, candidate code) pairs for the re-ranker.

Per source s (a fixed, named list): `s.score`, `s.rank` (1-based; missing = MISSING_RANK), `s.in` (0/1),
`s.gap` (the source's top score in the note minus this code's score) and the source's own side features
`s.x.<name>` (e.g. the matcher's coverage, number of mentions, negation and uncertainty cues, the memory's
similarity). Missing values are the sentinel MISSING (-1): every score here is ≥ 0, so trees can tell
"not proposed" apart from "proposed with a low score".

Across sources: how many propose the code, its best rank; the code's training frequency (log, and a
zero-shot flag); hierarchy agreement (a parent, children or siblings of the code among the candidates, and
the best score of a sibling); chapter and code system (categorical), code length (specificity) and title
length; the note's number of candidates and length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icdcoder.reranking.candidates import SourceRanking

MISSING = -1.0
MISSING_RANK = 10_000.0
_CHAPTER_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SYSTEMS = ("icd10cm", "icd10pcs", "icd9cm-dx", "icd9cm-proc")


def category(key: str) -> str:
    """The 3-character category of a `system:code` key (ICD-10-CM C64.1 -> C64; PCS 0DTJ4ZZ -> 0DT)."""
    return key.split(":", 1)[-1].replace(".", "")[:3]


def chapter_id(key: str) -> int:
    """A small integer for the code's first character (ICD-10-CM chapter letter, PCS section)."""
    code = key.split(":", 1)[-1]
    return _CHAPTER_CHARS.find(code[:1].upper()) if code else -1


def system_id(key: str) -> int:
    system = key.split(":", 1)[0]
    return _SYSTEMS.index(system) if system in _SYSTEMS else len(_SYSTEMS)


@dataclass
class CodeTable:
    """What the re-ranker knows about codes independently of notes: training counts and titles."""

    train_counts: dict[str, int] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"train_counts": self.train_counts, "titles": self.titles}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CodeTable:
        return cls(
            {str(k): int(v) for k, v in obj.get("train_counts", {}).items()},
            {str(k): str(v) for k, v in obj.get("titles", {}).items()},
        )


@dataclass
class FeatureSpec:
    """The fixed feature layout: source names in order and the side features each one contributes."""

    sources: list[str]
    side_features: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, sources: Sequence[str], notes: Sequence[Mapping[str, SourceRanking]]) -> FeatureSpec:
        """The side-feature names each source produced anywhere in `notes` (sorted, so stable)."""
        side: dict[str, set[str]] = {s: set() for s in sources}
        for per_source in notes:
            for s in sources:
                ranking = per_source.get(s)
                if ranking is not None:
                    for feats in ranking.features.values():
                        side[s].update(feats)
        return cls(list(sources), {s: sorted(side[s]) for s in sources})

    @property
    def names(self) -> list[str]:
        out: list[str] = []
        for s in self.sources:
            out += [f"{s}.score", f"{s}.rank", f"{s}.in", f"{s}.gap"]
            out += [f"{s}.x.{f}" for f in self.side_features.get(s, [])]  # .x.: never clashes with the above
        out += [
            "n_sources",
            "best_rank",
            "train_count_log",
            "zero_shot",
            "parent_candidate",
            "n_children",
            "n_siblings",
            "sibling_best_score",
            "chapter",
            "system",
            "code_length",
            "title_words",
            "n_candidates",
            "note_chars_log",
        ]
        return out

    @property
    def categorical(self) -> list[str]:
        return ["chapter", "system"]

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "side_features": self.side_features}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            [str(s) for s in obj["sources"]], {str(k): list(v) for k, v in obj["side_features"].items()}
        )


def note_features(
    spec: FeatureSpec,
    candidates: Sequence[str],
    per_source: Mapping[str, SourceRanking],
    codes: CodeTable,
    note_chars: int,
) -> np.ndarray:
    """Feature rows [len(candidates), len(spec.names)] (float32) of one note's candidates."""
    n_feat = len(spec.names)
    x = np.full((len(candidates), n_feat), MISSING, dtype=np.float32)
    if not candidates:
        return x
    ranks = {s: r.ranks() for s, r in per_source.items()}
    tops = {s: max(r.scores.values(), default=0.0) for s, r in per_source.items()}
    best_score: dict[str, float] = {}
    for r in per_source.values():
        for c, v in r.scores.items():
            best_score[c] = max(best_score.get(c, 0.0), v)
    cand = set(candidates)
    undotted = {c: c.split(":", 1)[-1].replace(".", "") for c in candidates}
    by_category: dict[str, list[str]] = {}
    for c in candidates:
        by_category.setdefault(category(c), []).append(c)
    for i, c in enumerate(candidates):
        col = 0
        n_src, best_rank = 0, MISSING_RANK
        for s in spec.sources:
            ranking = per_source.get(s)
            side = spec.side_features.get(s, [])
            if ranking is not None and c in ranking.scores:
                v, rank = ranking.scores[c], float(ranks[s][c])
                x[i, col : col + 4] = (v, rank, 1.0, tops[s] - v)
                feats = ranking.features.get(c, {})
                for j, f in enumerate(side):
                    if f in feats:
                        x[i, col + 4 + j] = feats[f]
                n_src += 1
                best_rank = min(best_rank, rank)
            else:
                x[i, col + 1] = MISSING_RANK
                x[i, col + 2] = 0.0
            col += 4 + len(side)
        code = undotted[c]
        system = c.split(":", 1)[0]
        siblings = [o for o in by_category[category(c)] if o != c]
        parent = any(
            o != c and o.split(":", 1)[0] == system and code.startswith(undotted[o]) for o in siblings
        )
        children = sum(1 for o in siblings if undotted[o].startswith(code) and o.split(":", 1)[0] == system)
        count = codes.train_counts.get(c, 0)
        x[i, col:] = (
            n_src,
            best_rank,
            math.log1p(count),
            float(count == 0),
            float(parent),
            children,
            len(siblings),
            max((best_score.get(o, 0.0) for o in siblings), default=MISSING),
            chapter_id(c),
            system_id(c),
            len(code),
            len(codes.titles.get(c, "").split()),
            len(cand),
            math.log1p(note_chars),
        )
    return x


def pair_matrix(
    spec: FeatureSpec,
    candidates: Sequence[Sequence[str]],
    per_source: Sequence[Mapping[str, SourceRanking]],
    codes: CodeTable,
    note_chars: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked feature rows of many notes and the group sizes (candidates per note), in note order."""
    blocks = [
        note_features(spec, c, p, codes, n)
        for c, p, n in zip(candidates, per_source, note_chars, strict=True)
    ]
    groups = np.asarray([len(c) for c in candidates], dtype=np.int64)
    x = np.concatenate(blocks) if blocks else np.zeros((0, len(spec.names)), np.float32)
    return x, groups

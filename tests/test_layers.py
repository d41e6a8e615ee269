"""The package's layering (docs/ARCHITECTURE.md): each layer imports only the layers before it, so the data
flows sources → text → (matching, re-ranking tables) → models → training → inference without a back edge.
Read from the source with `ast`, imports inside functions included (a lazy import is still an edge)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "icdcoder"

# Lowest first. Layers on one line may import each other: modeldir.py is the training layer's output format
# (the pipeline writes it, it reads the run's config and label space back) and hybrid_training.py is a
# training pipeline. The ontology sits below the data sources because sources check codes against it.
LAYERS: list[set[str]] = [
    {"errors", "io", "__init__"},
    {"ontology"},
    {"data"},
    {"text"},
    {"matching"},
    {"reranking"},
    {"models"},
    {"evaluation"},
    {"training", "modeldir", "hybrid_training"},
    {"inference"},
    {"serving"},
    {"cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "icdcoder" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p) for p in SRC.rglob("*.py")}
    unplaced = sorted(units - set(RANK))
    assert unplaced == [], "place these in LAYERS (and docs/ARCHITECTURE.md)"


def test_no_layer_imports_a_later_one() -> None:
    back_edges = []
    for path in sorted(SRC.rglob("*.py")):
        src = _unit(path)
        for dst in _imported_units(path):
            if dst in RANK and RANK[dst] > RANK[src]:
                back_edges.append(f"{path.relative_to(SRC)} imports icdcoder.{dst}")
    assert back_edges == []


def test_the_check_sees_a_back_edge(tmp_path: Path) -> None:
    """The import reader finds module-level and function-level imports alike."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom icdcoder.text import v\ndef f():\n    from icdcoder.training import X\n")
    assert _imported_units(f) == {"text", "training"}

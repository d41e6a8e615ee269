"""Markdown results tables from run directories: mean ± sample std over seeds, grouped by dataset × model."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from icdcoder.errors import IcdcoderError
from icdcoder.io import read_json

REPORT_METRICS = (
    ("f1_micro", "micro-F1"),
    ("f1_macro", "macro-F1"),
    ("auc_micro", "micro-AUC"),
    ("auc_macro", "macro-AUC"),
    ("p@5", "P@5"),
    ("p@8", "P@8"),
    ("r_precision", "R-prec"),
    ("map", "MAP"),
)


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def results_table(runs: list[Path], split: str = "test", skip_unfinished: bool = False) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        path = Path(run) / "run.json"
        if not path.is_file():
            if skip_unfinished:
                continue
            raise IcdcoderError(
                "not a finished training run (run.json missing).",
                path=run,
                fix="pass directories given to `icdcoder train --out`.",
            )
        summary = read_json(path)
        if split not in summary:
            raise IcdcoderError(f"run has no {split} metrics.", path=path)
        groups[(str(summary["dataset"]), str(summary["model"]))].append(summary)
    header = ["dataset", "model", "seeds", *(label for _, label in REPORT_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (dataset, model), items in sorted(groups.items()):
        seeds = ",".join(str(s["seed"]) for s in sorted(items, key=lambda s: s["seed"]))
        cells = [_fmt([float(s[split][key]) for s in items if key in s[split]]) for key, _ in REPORT_METRICS]
        lines.append("| " + " | ".join([dataset, model, seeds, *cells]) + " |")
    lines.append("")
    lines.append(
        f"Metrics in % on {split}, mean ± sample standard deviation over seeds; thresholds tuned on dev."
    )
    return "\n".join(lines) + "\n"

"""Markdown results tables from run directories: mean ± sample std over seeds, grouped by dataset × model.

Runs of one model whose configs differ in anything but the seed and the machinery (threads, progress bars,
checkpoint cadence) are different experiments, not seeds of one: they get rows of their own, each labelled
with the settings that set it apart (`laat (embeddings.glove=package, model.embed_dim=150)`), so a variant's
runs are never averaged into the model's row.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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


Resolver = Callable[[Any], Any]
# Config keys that do not change what a run measures.
NOT_EXPERIMENT = frozenset(
    {"train.seed", "train.num_threads", "train.progress", "train.tensorboard", "train.checkpoint_every"}
)


def _flat(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: yaml.safe_dump(obj, default_flow_style=True).strip().removesuffix("...").strip()}


def _settings(run: Path, resolve: Resolver | None) -> frozenset[tuple[str, str]]:
    """The run's config (config.yaml, written by `train`), passed through `resolve` (which fills today's
    defaults, so a run written before a setting existed groups with runs that record its default), minus the
    keys that are not the experiment; empty for runs without one."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        return frozenset()
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise IcdcoderError(f"unreadable run config ({exc}).", path=path) from exc
    return frozenset(
        (k, v) for k, v in _flat(cfg if resolve is None else resolve(cfg)).items() if k not in NOT_EXPERIMENT
    )


def _labels(groups: dict[tuple[str, str, frozenset[tuple[str, str]]], Any]) -> dict[Any, str]:
    """Each group's model cell: the model name, plus the settings that differ between groups of that model
    (those of the group that has them; `key=–` where another group sets a key this one lacks)."""
    by_model: dict[tuple[str, str], list[frozenset[tuple[str, str]]]] = defaultdict(list)
    for dataset, model, settings in groups:
        by_model[(dataset, model)].append(settings)
    labels = {}
    for dataset, model, settings in groups:
        variants = by_model[(dataset, model)]
        if len(variants) == 1:
            labels[(dataset, model, settings)] = model
            continue
        common = frozenset.intersection(*variants)
        own = dict(settings - common)
        keys = sorted({k for v in variants for k, _ in v - common})
        diff = ", ".join(f"{k}={own.get(k, '–')}" for k in keys)
        labels[(dataset, model, settings)] = f"{model} ({diff})"
    return labels


def results_table(
    runs: list[Path], split: str = "test", skip_unfinished: bool = False, resolve: Resolver | None = None
) -> str:
    groups: dict[tuple[str, str, frozenset[tuple[str, str]]], list[dict[str, Any]]] = defaultdict(list)
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
        groups[(str(summary["dataset"]), str(summary["model"]), _settings(Path(run), resolve))].append(
            summary
        )
    labels = _labels(groups)
    header = ["dataset", "model", "seeds", *(label for _, label in REPORT_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for group, items in sorted(groups.items(), key=lambda kv: (kv[0][0], labels[kv[0]])):
        seeds = ",".join(str(s["seed"]) for s in sorted(items, key=lambda s: s["seed"]))
        cells = [_fmt([float(s[split][key]) for s in items if key in s[split]]) for key, _ in REPORT_METRICS]
        lines.append("| " + " | ".join([group[0], labels[group], seeds, *cells]) + " |")
    lines.append("")
    lines.append(
        f"Metrics in % on {split}, mean ± sample standard deviation over seeds; thresholds tuned on dev."
    )
    return "\n".join(lines) + "\n"

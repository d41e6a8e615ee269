"""Issue 17 figures from run directories: the linear model's C sweep (dev MAP per C) and the learning curve
(dev MAP by epoch) of neural runs, as a Markdown table on stdout and a PNG.

    python benchmarks/small_data_curves.py sweep runs/sd-linear-d-bi runs/sd-linear-p-bi
    python benchmarks/small_data_curves.py curve runs/sd-laat-d-s0 --png docs/results/small_data_laat.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def dev_records(run: Path) -> list[dict[str, Any]]:
    """The per-epoch (or per-C) dev records of a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "dev"]


def sweep(runs: list[Path]) -> None:
    print("| run | C | dev MAP | L-BFGS iterations | seconds |")
    print("|---|---|---|---|---|")
    for run in runs:
        for r in dev_records(run):
            print(
                f"| {run.name} | {r['c']:g} | {r['dev_map']:.4f} | {r['lbfgs_iterations']} | "
                f"{r['train_seconds']:.0f} |"
            )


def run_label(run: Path) -> str:
    """`runs/x/codiesp-d/caml/seed0` -> `x: caml/seed0` (x: the grid, e.g. old-protocol); a run named
    otherwise keeps its name."""
    if not run.name.startswith("seed"):
        return run.name
    grid = run.parents[2].name if len(run.parents) > 2 else ""
    return f"{grid}: {run.parent.name}/{run.name}" if grid else f"{run.parent.name}/{run.name}"


def curve(runs: list[Path], png: Path | None) -> None:
    print("| run | epoch | dev MAP | dev BCE | train seconds |")
    print("|---|---|---|---|---|")
    series = {}
    for run in runs:
        recs = dev_records(run)
        name = run_label(run)
        series[name] = [(r["epoch"], r["dev_map"]) for r in recs]
        for r in recs:
            print(
                f"| {name} | {r['epoch']} | {r['dev_map']:.4f} | {r.get('dev_bce', float('nan')):.5f} | "
                f"{r['train_seconds']:.0f} |"
            )
    if png is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One colour per model, one line style per grid, so old and new protocol of a model pair up.
    models = sorted({n.split(": ")[-1].split("/")[0] for n in series})
    grids = sorted({n.split(": ")[0] for n in series if ": " in n})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    styles = {g: ("-", "--", ":", "-.")[i % 4] for i, g in enumerate(grids)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in series.items():
        model = name.split(": ")[-1].split("/")[0]
        style = styles.get(name.split(": ")[0], "-") if ": " in name else "-"
        ax.plot(
            [e for e, _ in pts],
            [m for _, m in pts],
            marker="o",
            markersize=3,
            label=name,
            color=colours[model],
            linestyle=style,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev MAP (organisers' definition)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["sweep", "curve"])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    if args.kind == "sweep":
        sweep(args.runs)
    else:
        curve(args.runs, args.png)


if __name__ == "__main__":
    main()

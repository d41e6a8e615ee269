"""The seed's low-shot claim (PLANT's Figure 3) on CodiEsp-D: PLANT vs its A-only ablation (learned attention
only: a LAAT-like model on the same pre-trained AWD-LSTM encoder) trained on 10/25/50/100 % of the training
notes, dev and test unchanged.

    .venv/bin/python benchmarks/plant_lowshot.py --seeds 0 1 2                     # train, then table + plot
    .venv/bin/python benchmarks/plant_lowshot.py --seeds 0 --fractions 0.1 --dry-run  # print the commands

Each fraction's training subset is drawn once (seed `--subset-seed`, the same for every model and seed) and
written as a prepared dataset under `--out`/data-f<fraction>; each (fraction, variant, seed) run is
`icdcoder train CONFIG --set data.source=prepared --set data.path=... --set train.seed=S` and is skipped when
its run.json exists (resumable). Codes of dev/test notes that the subset never shows count as misses (the
organisers' MAP keeps them in the denominator). Writes `lowshot.json`, a Markdown table and
`docs/results/plant_lowshot.png` (P@5, P@15 and MAP against the fraction, mean ± std over seeds).

Each finished run's test scores are also merged into `--record` (docs/results/plant_lowshot.json, committed):
a point whose run directory is gone (a fresh machine) but which the record holds is read from the record
instead of being retrained, so the plot can gather points trained in different sessions. `--no-record`
ignores it and retrains everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

VARIANTS: dict[str, list[str]] = {
    "plant": [],
    "a_only": ["--set", "model.sources=[learned]"],
}
METRICS = ("p@5", "p@15", "map")


def subset(config: str, fraction: float, seed: int, out: Path) -> Path:
    """The prepared dataset with `fraction` of the training notes (all dev and test notes)."""
    import numpy as np

    from icdcoder.data.prepared import write_prepared
    from icdcoder.training.config import load_config
    from icdcoder.training.pipeline import open_dataset

    path = out / f"data-f{fraction:g}"
    if (path / "stats.json").exists():
        return path
    ds = open_dataset(load_config(config).data)
    train = ds.load("train")
    rng = np.random.default_rng(seed)
    keep = set(rng.permutation(len(train))[: max(1, round(fraction * len(train)))].tolist())
    docs = [d for i, d in enumerate(train) if i in keep] + ds.load("dev") + ds.load("test")
    write_prepared(
        path, docs, source=f"{ds.path.name} train subset {fraction:g} (seed {seed})", overwrite=True
    )
    return path


RecordKey = tuple[float, str, int]


def read_record(path: Path) -> dict[RecordKey, dict[str, Any]]:
    """Rows recorded by earlier runs, keyed by (fraction, variant, seed); {} when there is no record yet."""
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {(float(r["fraction"]), str(r["variant"]), int(r["seed"])): r for r in rows}
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a low-shot record ({e}); fix it or pass --no-record") from e


def write_record(path: Path, record: dict[RecordKey, dict[str, Any]]) -> None:
    """Write the record sorted by key, through a temporary file so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([record[k] for k in sorted(record)], indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/codiesp-d/plant.yaml")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--subset-seed", type=int, default=1234)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("runs/plant/lowshot"))
    p.add_argument("--plot", type=Path, default=Path("docs/results/plant_lowshot.png"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra --set for every run")
    p.add_argument("--record", type=Path, default=Path("docs/results/plant_lowshot.json"))
    p.add_argument("--no-record", action="store_true", help="neither read nor update --record")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    record = {} if args.no_record else read_record(args.record)
    rows: list[dict[str, Any]] = []
    for frac in args.fractions:
        data = subset(args.config, frac, args.subset_seed, args.out)
        for variant in args.variants:
            for seed in args.seeds:
                run = args.out / f"f{frac:g}" / variant / f"seed{seed}"
                cmd = [sys.executable, "-m", "icdcoder", "train", args.config, "--out", str(run)]
                cmd += [
                    "--set",
                    "data.source=prepared",
                    "--set",
                    f"data.path={data}",
                    "--set",
                    f"train.seed={seed}",
                ]
                cmd += VARIANTS[variant] + [x for o in args.overrides for x in ("--set", o)]
                key = (frac, variant, seed)
                recorded = not (run / "run.json").exists() and key in record
                if args.dry_run:
                    print(f"# recorded in {args.record}: {key}" if recorded else " ".join(cmd))
                    continue
                if recorded:
                    print(f"{key}: read from {args.record} ({record[key].get('source', 'no source')})")
                    rows.append(record[key])
                    continue
                if not (run / "run.json").exists():
                    subprocess.run(cmd, check=True)
                test = json.loads((run / "run.json").read_text())["test"]
                row = {"fraction": frac, "variant": variant, "seed": seed, **{m: test[m] for m in METRICS}}
                row["source"] = f"{run}/run.json"
                rows.append(row)
                record[key] = row
    if args.dry_run:
        return
    (args.out / "lowshot.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    if not args.no_record:
        write_record(args.record, record)
    print("| fraction | variant | seeds | " + " | ".join(METRICS) + " |")
    print("|---:|---|---:|" + "---:|" * len(METRICS))
    summary: dict[tuple[str, float], dict[str, tuple[float, float]]] = {}
    for frac in args.fractions:
        for variant in args.variants:
            sel = [r for r in rows if r["fraction"] == frac and r["variant"] == variant]
            stats = {}
            for m in METRICS:
                vals = [100 * r[m] for r in sel]
                stats[m] = (statistics.mean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0)
            summary[(variant, frac)] = stats
            cells = " | ".join(f"{stats[m][0]:.1f} ± {stats[m][1]:.1f}" for m in METRICS)
            print(f"| {frac:g} | {variant} | {len(sel)} | {cells} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    for ax, m in zip(axes, METRICS, strict=True):
        for variant in args.variants:
            mean = [summary[(variant, f)][m][0] for f in args.fractions]
            std = [summary[(variant, f)][m][1] for f in args.fractions]
            ax.errorbar(
                [100 * f for f in args.fractions], mean, yerr=std, marker="o", capsize=3, label=variant
            )
        ax.set_xlabel("% of CodiEsp-D training notes")
        ax.set_title(f"test {m} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

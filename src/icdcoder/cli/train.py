"""`icdcoder train` and `icdcoder evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        config: Path = typer.Argument(..., help="Experiment config, e.g. configs/codiesp-d/laat.yaml."),
        out: Path = typer.Option(..., "--out", help="Run directory (model/, checkpoint/, metrics)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value."),
        resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    ) -> None:
        """Train a model, select it and tune its thresholds on dev, then evaluate it once on test."""
        import os
        import shutil

        from icdcoder.errors import IcdcoderError
        from icdcoder.hybrid_training import train_any
        from icdcoder.io import check_replaceable, mark_output
        from icdcoder.training.config import load_config

        cfg = load_config(config, set_)
        is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 manages the run directory
        if is_main and out.exists() and (not out.is_dir() or any(out.iterdir())) and not resume:
            if not overwrite:
                raise IcdcoderError(
                    "run directory exists.",
                    path=out,
                    fix="pass --resume to continue it, --overwrite to start again, or a new --out.",
                )
            check_replaceable(out, overwrite=True)  # only a run icdcoder wrote, never another folder
            shutil.rmtree(out)
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            mark_output(out, "run")
        summary = train_any(cfg, out, resume=resume)
        _print_metrics(summary)

    @app.command()
    def evaluate(
        model_dir: Path = typer.Argument(..., help="A model directory (RUN_DIR/model)."),
        data: Path = typer.Option(..., "--data", help="A prepared dataset directory."),
        split: str = typer.Option("dev", "--split", help="dev or test."),
        as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
        predictions: Path | None = typer.Option(
            None, "--predictions", help="Write per-document probabilities (parquet) here."
        ),
        plots: Path | None = typer.Option(
            None,
            "--plots",
            help="Write the split's reliability diagram (reliability-SPLIT.png) into this folder.",
        ),
    ) -> None:
        """Evaluate a model directory on a split of a prepared dataset, at its stored thresholds."""
        from icdcoder.training.evaluate import evaluate_model_dir

        metrics = evaluate_model_dir(model_dir, data, split, predictions)
        if plots is not None:
            from icdcoder.evaluation.reliability import plot_reliability, reliability_bins
            from icdcoder.modeldir import load_model_dir
            from icdcoder.training.data import target_matrix
            from icdcoder.training.evaluate import model_dir_probs

            lm = load_model_dir(model_dir)
            encoded, raw = model_dir_probs(lm, data, split)
            y = target_matrix(encoded, len(lm.labels))
            curves = {"uncalibrated": reliability_bins(raw, y)}
            if lm.calibration.method != "none":
                curves[lm.calibration.method] = reliability_bins(lm.calibration.apply(raw), y)
            png = plot_reliability(
                curves,
                plots / f"reliability-{split}.png",
                title=f"{lm.metadata.get('model', 'model')} on {split} ({len(encoded)} notes)",
            )
            typer.echo(f"reliability diagram: {png}", err=True)
        if as_json:
            typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        else:
            _print_table({f"{split}": metrics})


MAIN_METRICS = (
    ("f1_micro", "F1 micro"),
    ("f1_macro", "F1 macro"),
    ("auc_micro", "AUC micro"),
    ("auc_macro", "AUC macro"),
    ("p@5", "P@5"),
    ("p@8", "P@8"),
    ("r_precision", "R-prec"),
    ("map", "MAP"),
    ("ece", "ECE"),
)


def _print_table(rows: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="metrics (thresholds tuned on dev)")
    table.add_column("split")
    for _, label in MAIN_METRICS:
        table.add_column(label, justify="right", no_wrap=True)
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics[m]:.4f}" if m in metrics else "-" for m, _ in MAIN_METRICS))
    Console(width=max(100, Console().width)).print(table)


def _print_metrics(summary: dict[str, object]) -> None:
    rows = {s: summary[s] for s in ("dev", "test") if isinstance(summary.get(s), dict)}
    if rows:
        _print_table(rows)  # type: ignore[arg-type]
    cal = summary.get("calibration")
    if isinstance(cal, dict) and cal.get("method") != "none":
        before, after = cal["dev_before"]["ece"], cal["dev_after"]["ece"]
        how = (
            f"T = {1 / cal['slope']:.3f}"
            if cal["method"] == "temperature"
            else (f"a = {cal['slope']:.3f}, b = {cal['intercept']:.3f}")
        )
        print(f"calibration ({cal['method']}, {how}, fitted on dev): dev ECE {before:.4f} -> {after:.4f}")

"""`icdcoder calibrate`: fit a model directory's post-hoc calibration (and re-tune its thresholds) on the dev
split of a prepared dataset, without retraining."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def calibrate(
        model_dir: Path = typer.Argument(..., help="A model directory (RUN_DIR/model)."),
        data: Path = typer.Option(..., "--data", help="A prepared dataset whose split to fit on."),
        split: str = typer.Option("dev", "--split", help="The split to fit on (never test)."),
        method: str = typer.Option(
            "platt",
            "--method",
            help="platt, temperature, none, or platt_per_code (own map per frequent code).",
        ),
        min_positives: int = typer.Option(
            20, "--min-positives", min=1, help="platt_per_code: dev positives (and negatives) a code needs."
        ),
        plot: Path | None = typer.Option(
            None,
            "--plot",
            help="Reliability diagram PNG (default: reliability-SPLIT.png beside the model dir).",
        ),
        thresholds: str = typer.Option(
            "", "--thresholds", help="global or per_code (default: the model's training setting)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Write a new model directory here instead."),
    ) -> None:
        """Fit the calibration on dev and re-tune the thresholds on the calibrated probabilities, e.g. for a
        model directory trained before calibration existed, or to adapt one to a hospital's own dev data.
        Weights are not touched; the directory is rewritten atomically."""
        import datetime as dt

        from icdcoder.data.prepared import PreparedDataset
        from icdcoder.errors import IcdcoderError
        from icdcoder.evaluation.calibration import METHODS, METRIC_KEYS, calibration_metrics, fit_calibrator
        from icdcoder.modeldir import load_model_dir, recalibrate_model_dir
        from icdcoder.training.data import target_matrix
        from icdcoder.training.evaluate import evaluate_probs, model_dir_probs, tune_thresholds

        if method not in METHODS:
            raise IcdcoderError(
                f"unknown calibration method {method!r}.", fix=f"use one of {', '.join(METHODS)}."
            )
        if split == "test":
            raise IcdcoderError(
                "calibration is fitted on dev, never on test (test must stay unseen).", fix="use --split dev."
            )
        lm = load_model_dir(model_dir)
        kind = thresholds or str(lm.config.eval.thresholds)
        if kind not in ("global", "per_code"):
            raise IcdcoderError(f"unknown threshold kind {kind!r}.", fix="use global or per_code.")
        encoded, raw = model_dir_probs(lm, data, split)
        y = target_matrix(encoded, len(lm.labels))
        cal = fit_calibrator(raw, y, method, seed=lm.config.train.seed, min_positives=min_positives)
        probs = cal.apply(raw)
        with_unseen = lm.config.eval.include_unseen_codes
        th = tune_thresholds(probs, encoded, lm.labels, kind=kind, include_unseen=with_unseen)
        metrics = evaluate_probs(probs, encoded, lm.labels, th, include_unseen=with_unseen)
        before, after = calibration_metrics(raw, y), {k: metrics[k] for k in METRIC_KEYS}
        record = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "data": str(data),
            "data_fingerprint": PreparedDataset.open(data).fingerprint,
            "split": split,
            "method": cal.method,
            "thresholds": kind,
            "before": before,
            "after": after,
            "f1_micro": metrics["f1_micro"],
        }
        dst = recalibrate_model_dir(lm, calibration=cal, thresholds=th.to_dict(), record=record, out=out)
        from icdcoder.evaluation.reliability import plot_reliability, reliability_bins

        png = plot or dst.parent / f"reliability-{split}.png"
        plot_reliability(
            {"uncalibrated": reliability_bins(raw, y), cal.method: reliability_bins(probs, y)},
            png,
            title=f"{lm.metadata.get('model', 'model')} on {split} ({len(encoded)} notes)",
        )
        own = f", own map for {int(cal.fit.get('codes_own_map', 0))} codes" if cal.slopes is not None else ""
        typer.echo(
            f"{cal.method} (a = {cal.slope:.4f}, b = {cal.intercept:.4f}{own}) fitted on {split} "
            f"({len(encoded)} notes): ECE {before['ece']:.5f} -> {after['ece']:.5f}, "
            f"Brier {before['brier']:.5f} -> {after['brier']:.5f}; threshold {th.global_threshold:.4f}, "
            f"{split} micro-F1 {metrics['f1_micro']:.4f}. Written to {dst}; reliability diagram {png}."
        )

"""`icdcoder report`: a Markdown results table (mean ± std over seeds) from training runs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        runs: list[Path] = typer.Argument(..., help="Run directories (each holds run.json)."),
        split: str = typer.Option("test", "--split", help="Which metrics to tabulate: test or dev."),
        out: Path | None = typer.Option(None, "--out", help="Also write the Markdown table to this file."),
        skip_unfinished: bool = typer.Option(
            False, "--skip-unfinished", help="Ignore runs without run.json."
        ),
    ) -> None:
        """Group runs by dataset and model and print mean ± std of each metric over seeds."""
        from icdcoder.evaluation.report import results_table
        from icdcoder.training.config import with_defaults

        text = results_table(runs, split=split, skip_unfinished=skip_unfinished, resolve=with_defaults)
        typer.echo(text, nl=False)
        if out is not None:
            from icdcoder.io import atomic_write

            with atomic_write(out) as fh:
                fh.write(text)

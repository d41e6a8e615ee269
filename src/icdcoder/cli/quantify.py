"""`icdcoder quantify`: each code's estimated prevalence in a collection of notes, with an interval."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def quantify(
        model_dir: Path = typer.Argument(..., help="A model directory (RUN_DIR/model)."),
        inputs: list[Path] = typer.Argument(
            ..., help="Note files (UTF-8 text) or directories of .txt notes."
        ),
        data: Path | None = typer.Option(
            None, "--data", help="A prepared dataset whose dev split measures the rates ACC/PACC need."
        ),
        save_stats: bool = typer.Option(
            False, "--save-stats", help="Keep the dev rates measured with --data in the model directory."
        ),
        fit_mlp: bool = typer.Option(
            False,
            "--fit-mlp",
            help="Fit the MLP quantifier on random subsets of the --data dev split and keep it.",
        ),
        mlp_hidden: int = typer.Option(32, "--mlp-hidden", min=1, help="The MLP's hidden size (seed: 32)."),
        mlp_samples: int = typer.Option(
            5000, "--mlp-samples", min=10, help="Random dev subsets to fit it on."
        ),
        methods: str = typer.Option(
            "", "--methods", help="Comma-separated cc, pcc, acc, pacc (default: all that the rates allow)."
        ),
        top: int | None = typer.Option(
            None, "--top", min=0, help="Codes to show, highest PCC first (0: all; default 20, JSON all)."
        ),
        level: float = typer.Option(0.95, "--level", min=0.5, max=0.999, help="Interval coverage."),
        n_boot: int = typer.Option(200, "--n-boot", min=0, help="Bootstrap resamples of the notes."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        as_json: bool = typer.Option(False, "--json", help="JSON output (every code unless --top)."),
    ) -> None:
        """Estimate how many notes of a collection have each code: classify-and-count (CC), probabilistic
        CC (PCC), both adjusted by the model's dev true/false positive rates (ACC, PACC), and MSAM's MLP
        quantifier when fitted (--fit-mlp), each with a bootstrap interval over the notes."""
        from icdcoder.errors import IcdcoderError
        from icdcoder.evaluation.quantification import METHODS, QuantStats
        from icdcoder.inference.predictor import Predictor
        from icdcoder.inference.quantify import (
            dev_quant_stats,
            load_mlp,
            load_quant_stats,
            quantify_notes,
            save_quant_stats,
        )
        from icdcoder.inference.quantify import fit_mlp as fit_mlp_quantifier
        from icdcoder.inference.reading import collect_note_files, read_note
        from icdcoder.models.quantifier import MLPQuantifier

        chosen = [m.strip() for m in methods.split(",") if m.strip()] or None
        for m in chosen or []:
            if m not in METHODS:
                raise IcdcoderError(f"unknown quantification method {m!r}.", fix=f"use {', '.join(METHODS)}.")
        if (save_stats or fit_mlp) and data is None:
            raise IcdcoderError("--save-stats and --fit-mlp need --data (the dev split to fit on).")
        files = collect_note_files(inputs)
        notes = [(f.stem, read_note(f)) for f in files]
        predictor = Predictor(model_dir)
        lm = predictor.loaded
        stats: QuantStats | None
        if data is not None:
            stats = dev_quant_stats(lm, data)
            if save_stats:
                where = save_quant_stats(lm, stats)
                typer.echo(f"dev rates saved to {where}", err=True)
        else:
            stats = load_quant_stats(lm)
        mlp: MLPQuantifier | None
        if fit_mlp:
            assert data is not None
            mlp, info = fit_mlp_quantifier(lm, data, hidden=mlp_hidden, n_samples=mlp_samples, seed=seed)
            typer.echo(f"MLP quantifier fitted ({info['epochs_run']} epochs) and kept in {lm.path}", err=True)
        else:
            mlp = load_mlp(lm)
        report = quantify_notes(
            predictor, notes, stats, chosen, mlp=mlp, level=level, n_boot=n_boot, seed=seed
        )
        if as_json:
            typer.echo(
                json.dumps(report.to_json(top or None), indent=2, ensure_ascii=False)
            )  # all by default
            return
        from rich.console import Console
        from rich.table import Table

        names = list(report.estimates)
        table = Table(
            title=f"Estimated prevalence in {report.n_notes} notes ({level:.0%} bootstrap intervals)"
        )
        table.add_column("code")
        table.add_column("title", overflow="fold")
        for m in names:
            table.add_column(m.upper(), justify="right")
        for row in report.rows(20 if top is None else top or None):
            cells = [f"{row[m]['value']:.3f} [{row[m]['low']:.3f}, {row[m]['high']:.3f}]" for m in names]
            table.add_row(row["key"], row["title"], *cells)
        Console().print(table)
        if stats is None:
            typer.echo("ACC/PACC need dev rates: pass --data DATA (and --save-stats to keep them).", err=True)

"""`icdcoder predict`: code note files with a model directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        model_dir: Path = typer.Argument(..., help="A model directory (RUN_DIR/model)."),
        inputs: list[Path] = typer.Argument(
            ..., help="Note files (UTF-8 text) or directories of .txt notes."
        ),
        top_k: int = typer.Option(
            10, "--top-k", min=1, help="Codes to show per note (decided codes always)."
        ),
        fmt: str = typer.Option("table", "--format", help="table, json or codiesp (the track's ranked TSV)."),
        evidence: bool = typer.Option(
            True, "--evidence/--no-evidence", help="Evidence spans (character offsets and text) per code."
        ),
        evidence_method: str = typer.Option(
            "auto",
            "--evidence-method",
            help="auto (label attention when the model has it, else occlusion), attention or occlusion.",
        ),
        evidence_tokens: int = typer.Option(
            3, "--evidence-tokens", min=1, help="Strongest tokens seeding spans."
        ),
        occlusion_window: int = typer.Option(
            8, "--occlusion-window", min=1, help="Tokens hidden at a time by occlusion."
        ),
    ) -> None:
        """Rank codes for each note, with probability, decision and evidence spans."""
        from icdcoder.errors import IcdcoderError
        from icdcoder.inference.evidence import phrase_line
        from icdcoder.inference.predictor import EVIDENCE_METHODS, Predictor
        from icdcoder.inference.reading import collect_note_files, read_note

        if fmt not in ("table", "json", "codiesp"):
            raise IcdcoderError(f"unknown --format {fmt!r}.", fix="use table, json or codiesp.")
        if evidence_method not in EVIDENCE_METHODS:
            raise IcdcoderError(
                f"unknown --evidence-method {evidence_method!r}.", fix=f"use {', '.join(EVIDENCE_METHODS)}."
            )
        files = collect_note_files(inputs)
        notes = [(f.stem, read_note(f)) for f in files]
        predictor = Predictor(model_dir)
        results = predictor.predict(
            notes,
            top_k=top_k,
            evidence=evidence and fmt != "codiesp",
            evidence_method=evidence_method,
            evidence_tokens=evidence_tokens,
            occlusion_window=occlusion_window,
        )
        if fmt == "json":
            typer.echo(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False))
        elif fmt == "codiesp":
            # CodiEsp-D/P submission: articleID<TAB>code, codes lower-case, ranked best first.
            for r in results:
                for c in r.codes:
                    typer.echo(f"{r.id}\t{c.code.lower()}")
        else:
            from rich.console import Console
            from rich.markup import escape
            from rich.table import Table

            console = Console()
            for r in results:
                if r.status == "nothing_recognisable":
                    console.print(
                        f"{escape(r.id)}: nothing recognisable (no word this model knows): "
                        "no codes suggested."
                    )
                    continue
                near_empty = (
                    f", only {r.n_known_tokens} known: capped at priors" if r.status == "near_empty" else ""
                )
                truncated = ", truncated" if r.truncated else ""
                table = Table(title=f"{escape(r.id)} ({r.n_tokens} tokens{truncated}{near_empty})")
                for col in ("rank", "code", "system", "prob", "decision", "title", "evidence"):
                    table.add_column(col)
                for rank, c in enumerate(r.codes, 1):
                    ev = " | ".join(phrase_line(s) for s in c.evidence[:2])
                    table.add_row(
                        str(rank),
                        c.code,
                        c.system,
                        f"{c.probability:.3f}",
                        "yes" if c.decision else "",
                        # note text, titles and ids are not rich markup: "[negated]" or "[**Name**]" must show
                        escape(c.title[:60]),
                        escape(ev[:80]),
                    )
                console.print(table)

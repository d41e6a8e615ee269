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
        no_evidence: bool = typer.Option(False, "--no-evidence", help="Skip evidence spans."),
    ) -> None:
        """Rank codes for each note, with probability, decision and evidence spans."""
        from icdcoder.errors import IcdcoderError
        from icdcoder.inference.predictor import Predictor
        from icdcoder.inference.reading import collect_note_files, read_note

        if fmt not in ("table", "json", "codiesp"):
            raise IcdcoderError(f"unknown --format {fmt!r}.", fix="use table, json or codiesp.")
        files = collect_note_files(inputs)
        notes = [(f.stem, read_note(f)) for f in files]
        predictor = Predictor(model_dir)
        results = predictor.predict(notes, top_k=top_k, evidence=not no_evidence and fmt != "codiesp")
        if fmt == "json":
            typer.echo(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False))
        elif fmt == "codiesp":
            # CodiEsp-D/P submission: articleID<TAB>code, codes lower-case, ranked best first.
            for r in results:
                for c in r.codes:
                    typer.echo(f"{r.id}\t{c.code.lower()}")
        else:
            from rich.console import Console
            from rich.table import Table

            console = Console()
            for (_, text), r in zip(notes, results, strict=True):
                table = Table(title=f"{r.id} ({r.n_tokens} tokens{', truncated' if r.truncated else ''})")
                for col in ("rank", "code", "system", "prob", "decision", "title", "evidence"):
                    table.add_column(col)
                for rank, c in enumerate(r.codes, 1):
                    ev = " | ".join(text[s.start : s.end].replace("\n", " ") for s in c.evidence[:2])
                    table.add_row(
                        str(rank),
                        c.code,
                        c.system,
                        f"{c.probability:.3f}",
                        "yes" if c.decision else "",
                        c.title[:60],
                        ev[:80],
                    )
                console.print(table)

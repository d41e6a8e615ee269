"""`icdcoder demo`: the README's first command, end to end on the embedded CodiEsp data."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo() -> None:
        """Prepare the embedded CodiEsp-D data and show what icdcoder does with it."""
        typer.echo("demo: not yet implemented")

"""`icdcoder data prepare|stats`: build and inspect prepared-dataset directories."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare datasets from raw sources and inspect them.", no_args_is_help=True)

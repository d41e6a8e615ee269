"""`icdcoder codes show|search`: the offline ICD ontology from the command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="Look up ICD codes offline: titles, parents, synonyms.", no_args_is_help=True)

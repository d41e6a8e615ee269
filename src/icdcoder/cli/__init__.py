"""The `icdcoder` command line. Each command group lives in its own module and registers itself here.

Heavy imports (torch, ontology tables) happen inside commands, so `icdcoder --help` stays instant.
User-facing faults (IcdcoderError) print one line on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from icdcoder.errors import IcdcoderError

app = typer.Typer(
    name="icdcoder",
    help="Automatic ICD coding: prepare data, look up codes, train, evaluate, predict and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from icdcoder.cli import calibrate, codes, data, demo, predict, quantify, report, serve, train

    app.add_typer(data.app, name="data")
    app.add_typer(codes.app, name="codes")
    train.register(app)
    calibrate.register(app)
    predict.register(app)
    quantify.register(app)
    report.register(app)
    demo.register(app)
    serve.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except IcdcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

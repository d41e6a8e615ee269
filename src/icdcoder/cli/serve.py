"""`icdcoder serve`: the REST service and coder web page for one model directory."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model_dir: Path = typer.Argument(..., help="A model directory (RUN_DIR/model)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback by default)."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
        token: str | None = typer.Option(
            None,
            "--token",
            envvar="ICDCODER_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on /v1/* (or set ICDCODER_TOKEN).",
        ),
        max_request_bytes: int = typer.Option(2 * 1024 * 1024, "--max-request-bytes", min=1024),
        max_note_chars: int = typer.Option(200_000, "--max-note-chars", min=100),
        max_batch_notes: int = typer.Option(64, "--max-batch-notes", min=1, help="Notes per batch request."),
        micro_batch: int | None = typer.Option(
            None,
            "--micro-batch",
            min=1,
            help="Notes the model runs at once (default: 16 on a GPU, 1 on a CPU).",
        ),
        max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0, help="Wait to fill a micro-batch."),
        max_queue: int = typer.Option(512, "--max-queue", min=1, help="Queued notes before answering 503."),
        evidence_method: str = typer.Option(
            "auto", "--evidence-method", help="auto, attention or occlusion."
        ),
        threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
        log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    ) -> None:
        """Serve a model: REST API (/v1/code, /v1/code/batch, /v1/model, /healthz) and the coder page (/)."""
        import logging

        import torch
        import uvicorn

        from icdcoder.errors import IcdcoderError
        from icdcoder.inference.predictor import Predictor
        from icdcoder.serving.app import ServerSettings, create_app

        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise IcdcoderError(
                f"unknown --log-level {log_level!r}.", fix="use debug, info, warning or error."
            )
        if threads:
            torch.set_num_threads(threads)
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not _is_loopback(host) and not token:
            logging.getLogger("icdcoder.serving").warning(
                "listening on %s without --token: anyone who can reach this port can send notes.", host
            )
        settings = ServerSettings(
            token=token or None,
            max_request_bytes=max_request_bytes,
            max_note_chars=max_note_chars,
            max_batch_notes=max_batch_notes,
            micro_batch=micro_batch,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            evidence_method=evidence_method,
        )
        app_ = create_app(Predictor(model_dir, device=device), settings)
        typer.echo(f"icdcoder: serving {model_dir} on http://{host}:{port}/ (pid {os.getpid()})", err=True)
        # uvicorn's access log is off: the service logs each request itself, path without query string.
        uvicorn.run(app_, host=host, port=port, log_level=log_level.lower(), access_log=False)

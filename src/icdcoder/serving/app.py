"""The REST service and the coder web page: `create_app(model_dir) -> FastAPI`.

    GET  /                 the coder page (static files under /static)
    GET  /healthz          liveness: {"status": "ok", ...}; never needs the token
    GET  /v1/model         the model: name, version, dataset, dev metrics, thresholds, codes with titles
    POST /v1/code          one note  -> ranked codes with title, probability, decision, evidence spans
    POST /v1/code/batch    several notes -> one result per note, in order; with "quantify": true also each
                           code's estimated prevalence in the batch (inference/quantify.py)
    GET  /openapi.json     the OpenAPI schema (interactive docs at /docs)

POST bodies are JSON (`{"text": ..., "id": ..., "top_k": 10, "evidence": true}`) or, for /v1/code, the
bare note as `text/plain` (options then come from the query string). Bodies are read with a size limit
and decoded as strict UTF-8 by the service itself, so every fault gets a 4xx with a one-line reason in
`detail`: 400 malformed JSON / not UTF-8 / empty body, 401 missing or wrong bearer token, 413 too large,
415 unsupported content type, 422 invalid fields (empty note, wrong types), 503 queue full. The
reason never quotes the request (it may hold patient text), and nothing the service logs holds note text:
one line per request with its id, path, status, note count, character count and latency.

Concurrent requests are micro-batched (`batcher.MicroBatcher`): one worker thread owns the model.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icdcoder import __version__
from icdcoder.errors import IcdcoderError
from icdcoder.evaluation.quantification import QuantStats
from icdcoder.inference.predictor import Predictor
from icdcoder.inference.quantify import collection_matrices, load_mlp, load_quant_stats, quantify_matrices
from icdcoder.models.quantifier import MLPQuantifier
from icdcoder.serving.batcher import MicroBatcher, Overloaded

log = logging.getLogger("icdcoder.serving")


@dataclass(frozen=True)
class ServerSettings:
    token: str | None = None  # bearer token for /v1/*; None = no authentication
    max_request_bytes: int = 2 * 1024 * 1024
    max_note_chars: int = 200_000
    max_batch_notes: int = 64  # notes in one /v1/code/batch request
    max_top_k: int = 1000
    # Notes the model sees at once; None: 16 on a GPU, 1 on a CPU (where batching measured no gain).
    micro_batch: int | None = None
    max_wait_ms: float = 5.0  # how long the worker waits for more requests to fill a batch
    max_queue: int = 512  # notes waiting before new requests get 503
    evidence_method: str = "auto"


# ---- request / response schemas (OpenAPI) -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeRequest(_Strict):
    text: str = Field(description="The note, UTF-8 text.")
    id: str | None = Field(None, max_length=200, description="Your id for the note (echoed back).")
    top_k: int = Field(10, ge=1, description="Codes to return (every code decided positive is kept too).")
    evidence: bool = Field(True, description="Return evidence spans for each code.")


class NoteIn(_Strict):
    text: str
    id: str | None = Field(None, max_length=200)


class BatchRequest(_Strict):
    notes: list[NoteIn] = Field(min_length=1)
    top_k: int = Field(10, ge=1)
    evidence: bool = True
    quantify: bool = Field(
        False,
        description="Also estimate each code's prevalence in these notes (CC and PCC; ACC and PACC when the "
        "model directory holds dev rates, `icdcoder quantify --save-stats`; the MLP when fitted, "
        "`--fit-mlp`), with bootstrap intervals.",
    )
    quantify_top: int = Field(50, ge=1, description="Codes in the prevalence table, highest PCC first.")


class EvidenceOut(BaseModel):
    start: int = Field(description="Character offset into the note (Python string indices).")
    end: int
    weight: float = Field(description="Strongest attention (or occlusion) weight in the phrase.")
    text: str
    context: str | None = Field(
        None,
        description="negated, possible, family or historical when a ConText cue of the note governs the "
        "phrase (e.g. 'No metastases'); null otherwise. The model's score does not account for it.",
    )


class CodeOut(BaseModel):
    key: str = Field(description="system:code, e.g. icd10cm:I10")
    system: str
    code: str
    title: str
    probability: float = Field(description="the model's probability after its dev-fitted calibration")
    decision: bool = Field(description="probability >= the code's dev-tuned threshold")
    evidence: list[EvidenceOut]


class NoteOut(BaseModel):
    id: str
    n_tokens: int
    truncated: bool
    evidence_method: str | None
    codes: list[CodeOut]
    status: str = Field(
        description="ok; near_empty (fewer than 5 words the model knows: probabilities capped at each code's "
        "training frequency); nothing_recognisable (no word the model knows: no codes)"
    )
    n_known_tokens: int = Field(description="words of the note in the model's vocabulary")


class BatchOut(BaseModel):
    results: list[NoteOut]
    prevalence: dict[str, Any] | None = Field(
        None,
        description="With quantify: notes, methods, interval and per code {value, low, high} per method.",
    )


class ErrorOut(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut, "description": d}
    for s, d in (
        (400, "Malformed JSON, not UTF-8, or empty body"),
        (401, "Missing or wrong bearer token"),
        (413, "Request or note too large"),
        (415, "Unsupported content type"),
        (422, "Invalid fields"),
        (503, "Queue full; retry later"),
    )
}


def _body_schema(model: type[BaseModel], plain: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema()}}
    if plain:
        content["text/plain"] = {"schema": {"type": "string", "description": "The note itself."}}
    return {"requestBody": {"required": True, "content": content}}


# ---- body handling ------------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {int(declared):,} bytes; the limit is {limit:,} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit:,} bytes.")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise HTTPException(400, "request body is empty; send a JSON object with a 'text' field.")
    return body


def _media_type(request: Request) -> tuple[str, str | None]:
    raw = request.headers.get("content-type", "")
    parts = [p.strip() for p in raw.split(";")]
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset":
            charset = v.strip().strip('"').lower()
    return parts[0].lower(), charset


def _decode(body: bytes, charset: str | None) -> str:
    if charset not in (None, "utf-8", "utf8"):
        raise HTTPException(415, f"charset {charset!r} is not supported; send UTF-8.")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            400,
            f"request body is not valid UTF-8 (invalid byte at offset {exc.start}); re-encode it as UTF-8.",
        ) from None


def _validation_reason(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + "."


def _parse_json(text: str, model: type[BaseModel]) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(
            400, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    if not isinstance(data, dict):
        raise HTTPException(422, "the body must be a JSON object.")
    try:  # JSON escapes can spell lone UTF-16 surrogates ("\\ud800"), which no UTF-8 text can hold
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPException(
            400, f"the JSON holds a lone UTF-16 surrogate ({exc.object[exc.start]!r}); send valid Unicode."
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, _validation_reason(exc)) from None


# ---- the app ----------------------------------------------------------------------------------------------


_QUANTIFY = ("quantify",)  # batcher options of a prevalence job


def static_dir() -> Path:
    return Path(str(importlib.resources.files("icdcoder") / "serving" / "static"))


class _State:
    """The predictor, its batcher (started with the app, stopped with it) and request ids."""

    def __init__(self, predictor: Predictor, settings: ServerSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self.batcher: MicroBatcher | None = None
        self.ids = itertools.count(1)
        self.started = time.time()
        self.micro_batch = settings.micro_batch or (16 if predictor.device.type == "cuda" else 1)

    def run(self, notes: list[tuple[str, str]], options: Hashable) -> list[Any]:
        if options == _QUANTIFY:  # every code's probability and decision per note, for prevalence
            probs, decisions = collection_matrices(self.predictor, notes)
            return list(zip(probs, decisions, strict=True))
        top_k, evidence = cast(tuple[int, bool], options)
        preds = self.predictor.predict(
            notes,
            top_k=top_k,
            evidence=evidence,
            batch_size=max(len(notes), 1),
            evidence_method=self.settings.evidence_method,
        )
        return [p.to_json() for p in preds]

    def get_batcher(self) -> MicroBatcher:
        if self.batcher is None:
            s = self.settings
            self.batcher = MicroBatcher(
                self.run, max_batch=self.micro_batch, max_wait_ms=s.max_wait_ms, max_queue=s.max_queue
            )
        return self.batcher

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None


def create_app(model: Predictor | str | Path, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a Predictor or a model directory)."""
    settings = settings or ServerSettings()
    if settings.evidence_method not in ("auto", "attention", "occlusion"):
        raise IcdcoderError(
            f"unknown evidence method {settings.evidence_method!r}.", fix="use auto, attention or occlusion."
        )
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    state = _State(predictor, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.get_batcher()
        yield
        state.close()

    app = FastAPI(
        title="icdcoder",
        version=__version__,
        description="Suggests ICD codes for a clinical note, with probabilities and evidence spans.",
        lifespan=lifespan,
    )
    app.state.icdcoder = state

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_reason(exc)}, status_code=422)

    @app.middleware("http")
    async def _log_requests(request: Request, call_next: Any) -> Response:
        rid = next(state.ids)
        request.state.rid = rid
        request.state.notes = 0
        request.state.chars = 0
        t0 = time.perf_counter()
        try:
            response: Response = await call_next(request)
        except Exception as exc:  # logged by type only: messages can quote data
            log.error(
                "request %d %s %s failed: %s", rid, request.method, request.url.path, type(exc).__name__
            )
            response = JSONResponse(
                {"detail": f"internal error (request {rid}); see the server log."}, status_code=500
            )
        ms = (time.perf_counter() - t0) * 1000
        response.headers["X-Request-Id"] = str(rid)
        log.info(
            "request %d %s %s -> %d notes=%d chars=%d %.1f ms",
            rid,
            request.method,
            request.url.path,  # the path only: a query string could carry anything
            response.status_code,
            request.state.notes,
            request.state.chars,
            ms,
        )
        return response

    def auth(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            cred.strip().encode(), settings.token.encode()
        ):
            raise HTTPException(
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer <token>').",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def check_note(text: str, where: str) -> None:
        if not text.strip():
            raise HTTPException(422, f"{where}: the note is empty.")
        if len(text) > settings.max_note_chars:
            raise HTTPException(
                413,
                f"{where}: the note has {len(text):,} characters; the limit is {settings.max_note_chars:,}.",
            )

    def check_top_k(top_k: int) -> None:
        if top_k > settings.max_top_k:
            raise HTTPException(422, f"top_k: at most {settings.max_top_k}.")

    # ACC/PACC rates kept in the model directory; stale or unreadable ones are left out (CC/PCC still run)
    # and the MLP quantifier (`--fit-mlp`)
    quant_stats: QuantStats | None = None
    quant_mlp: MLPQuantifier | None = None
    try:
        quant_stats = load_quant_stats(predictor.loaded)
        quant_mlp = load_mlp(predictor.loaded)
    except IcdcoderError as exc:
        log.warning("quantification statistics not used: %s", exc)

    async def run(
        request: Request, notes: list[tuple[str, str]], top_k: int, evidence: bool, options: Hashable = None
    ) -> list[Any]:
        request.state.notes = len(notes)
        request.state.chars = sum(len(t) for _, t in notes)
        try:
            fut = state.get_batcher().submit(notes, options or (top_k, evidence))
        except Overloaded:
            raise HTTPException(
                503, "the server is busy (queue full); retry shortly.", headers={"Retry-After": "1"}
            ) from None
        try:
            return await asyncio.wrap_future(fut)
        except IcdcoderError as exc:  # messages name ids, never text
            raise HTTPException(422, exc.message) from None

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        b = state.batcher
        return {
            "status": "ok",
            "model": predictor.loaded.metadata.get("model"),
            "n_codes": len(predictor.labels),
            "queued_notes": 0 if b is None else b.pending,
            "uptime_s": round(time.time() - state.started, 1),
        }

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(auth)], responses=_ERRORS)
    async def model_info(
        include_codes: bool = Query(True, description="List every code with its title and threshold."),
    ) -> dict[str, Any]:
        info = predictor.info()
        if not include_codes:
            info.pop("codes")
        b = state.batcher
        info["server"] = {
            "icdcoder": __version__,
            "evidence_method": settings.evidence_method,
            "max_request_bytes": settings.max_request_bytes,
            "max_note_chars": settings.max_note_chars,
            "max_batch_notes": settings.max_batch_notes,
            "max_top_k": settings.max_top_k,
            "micro_batch": state.micro_batch,
            "max_wait_ms": settings.max_wait_ms,
            "auth": settings.token is not None,
            "batching": None if b is None else b.stats.to_json(),
        }
        return info

    @app.post(
        "/v1/code",
        tags=["coding"],
        dependencies=[Depends(auth)],
        response_model=NoteOut,
        responses=_ERRORS,
        openapi_extra=_body_schema(CodeRequest, plain=True),
    )
    async def code(
        request: Request,
        top_k: int = Query(10, ge=1, description="text/plain bodies only: codes to return."),
        evidence: bool = Query(True, description="text/plain bodies only: return evidence spans."),
        id: str = Query("note", max_length=200, description="text/plain bodies only: the note's id."),
    ) -> Response:
        media, charset = _media_type(request)
        if media not in ("application/json", "text/plain"):
            raise HTTPException(
                415, "send Content-Type: application/json (or text/plain with the bare note)."
            )
        text = _decode(await _read_body(request, settings.max_request_bytes), charset)
        if media == "text/plain":
            req = CodeRequest(text=text, id=id, top_k=top_k, evidence=evidence)
        else:
            req = _parse_json(text, CodeRequest)
        check_note(req.text, "text")
        check_top_k(req.top_k)
        result = (await run(request, [(req.id or "note", req.text)], req.top_k, req.evidence))[0]
        return JSONResponse(result)

    @app.post(
        "/v1/code/batch",
        tags=["coding"],
        dependencies=[Depends(auth)],
        response_model=BatchOut,
        responses=_ERRORS,
        openapi_extra=_body_schema(BatchRequest, plain=False),
    )
    async def code_batch(request: Request) -> Response:
        media, charset = _media_type(request)
        if media != "application/json":
            raise HTTPException(415, "send Content-Type: application/json.")
        req = _parse_json(
            _decode(await _read_body(request, settings.max_request_bytes), charset), BatchRequest
        )
        if len(req.notes) > settings.max_batch_notes:
            raise HTTPException(
                413, f"{len(req.notes)} notes; the limit is {settings.max_batch_notes} per request."
            )
        for i, n in enumerate(req.notes):
            check_note(n.text, f"notes.{i}.text")
        check_top_k(req.top_k)
        notes = [(n.id if n.id is not None else str(i), n.text) for i, n in enumerate(req.notes)]
        out: dict[str, Any] = {"results": await run(request, notes, req.top_k, req.evidence)}
        if req.quantify:
            check_top_k(req.quantify_top)
            rows = await run(request, notes, 0, False, options=_QUANTIFY)
            probs = np.stack([p for p, _ in rows])
            decisions = np.stack([d for _, d in rows])
            report = quantify_matrices(predictor.loaded, probs, decisions, quant_stats, mlp=quant_mlp)
            out["prevalence"] = report.to_json(req.quantify_top)
        return JSONResponse(out)

    static = static_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            static / "index.html",
            headers={
                # Scripts and styles only from this server; nothing inline, nothing remote.
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app

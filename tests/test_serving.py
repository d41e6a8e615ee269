"""REST service: endpoints, micro-batching, limits and clear 4xx errors, bearer token, no note text in logs.

A tiny CAML is trained once per session on a small synthetic dataset (`tiny_model_dir`, also used by the
browser test): five real ICD-10-CM codes, each signalled by its own phrase in the note.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from icdcoder.data.document import Document
from icdcoder.data.prepared import write_prepared
from icdcoder.inference.predictor import Predictor
from icdcoder.serving.app import ServerSettings, create_app
from icdcoder.serving.batcher import MicroBatcher, Overloaded

PHRASES = {
    "icd10cm:I10": "essential hypertension",
    "icd10cm:E11.9": "type two diabetes mellitus",
    "icd10cm:J18.9": "community acquired pneumonia",
    "icd10cm:N39.0": "urinary tract infection",
    "icd10cm:R50.9": "persistent fever",
}
FILLER = (
    "patient admitted from home . vitals stable overnight . seen by the medical team . "
    "tolerating diet . family updated at bedside . plan discussed with patient ."
).split(" . ")
SECRET = "Zebulon Quartermaine"  # stands for patient text: must never reach a log


def make_documents(n: int, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    codes = list(PHRASES)
    docs = []
    for i in range(n):
        chosen = rng.sample(codes, rng.randint(1, 3))
        parts = rng.sample(FILLER, 3) + [f"history of {PHRASES[c]}" for c in chosen]
        rng.shuffle(parts)
        split = "train" if i < int(n * 0.7) else "dev" if i < int(n * 0.85) else "test"
        docs.append(Document(f"n{i}", ". ".join(parts) + ".", chosen, split))
    return docs


_CACHE: dict[str, Path] = {}


def trained_tiny_model(factory: pytest.TempPathFactory) -> Path:
    """The tiny model directory, trained once per test session (shared with the browser test)."""
    if "model" not in _CACHE:
        _CACHE["model"] = _train(factory.mktemp("tiny_serving_model"))
    return _CACHE["model"]


def _train(root: Path) -> Path:
    from icdcoder.training.config import parse_config
    from icdcoder.training.pipeline import run_experiment

    data = root / "data"
    write_prepared(data, make_documents(120), source="unit")
    cfg = parse_config(
        {
            "data": {"source": "prepared", "path": str(data), "max_tokens": 200},
            "embeddings": {"word2vec": False},
            "model": {"name": "caml", "embed_dim": 16, "num_filters": 16, "kernel_size": 3, "dropout": 0.0},
            "train": {"epochs": 6, "lr": 0.01, "batch_size": 8, "patience": 0, "progress": False, "seed": 1},
            "eval": {"test": False},
            "dataset_name": "unit-synthetic",
        }
    )
    run_experiment(cfg, root / "run")
    return root / "run" / "model"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_model(tmp_path_factory)


@pytest.fixture(scope="session")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor(tiny_model_dir)


@pytest.fixture()
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, ServerSettings(max_request_bytes=4096, max_note_chars=2000))) as c:
        yield c


NOTE = "Seen today. History of essential hypertension. Persistent fever since Monday."


def test_code_one_note(client: TestClient) -> None:
    r = client.post("/v1/code", json={"text": NOTE, "id": "a1", "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "a1" and body["evidence_method"] == "attention" and not body["truncated"]
    assert (
        body["n_tokens"] == 10
    )  # "Seen today History of essential hypertension Persistent fever since Monday"
    assert len(body["codes"]) >= 3
    probs = [c["probability"] for c in body["codes"]]
    assert probs[:3] == sorted(probs[:3], reverse=True)
    assert {c["key"] for c in body["codes"][:2]} == {"icd10cm:I10", "icd10cm:R50.9"}  # the model learned
    for c in body["codes"]:
        assert c["key"] == f"{c['system']}:{c['code']}" and c["title"]
        for ev in c["evidence"]:
            assert NOTE[ev["start"] : ev["end"]] == ev["text"] and ev["text"]
            assert ev["context"] in (None, "negated", "possible", "family", "historical")
    top = body["codes"][0]
    assert any(PHRASES[top["key"]].split()[-1] in ev["text"].lower() for ev in top["evidence"])


def test_plain_text_body_and_no_evidence(client: TestClient) -> None:
    r = client.post(
        "/v1/code?top_k=2&evidence=false&id=p1",
        content=NOTE.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "p1" and body["evidence_method"] is None
    assert all(c["evidence"] == [] for c in body["codes"])


def test_batch_keeps_order_and_ids(client: TestClient) -> None:
    notes = [{"text": "urinary tract infection noted", "id": "x"}, {"text": NOTE}]
    r = client.post("/v1/code/batch", json={"notes": notes, "top_k": 1})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["id"] for x in res] == ["x", "1"]
    assert res[0]["codes"][0]["key"] == "icd10cm:N39.0"


def test_model_info_health_and_openapi(client: TestClient, predictor: Predictor) -> None:
    info = client.get("/v1/model").json()
    assert info["name"] == "caml" and info["n_codes"] == 5 and info["dataset"] == "unit-synthetic"
    assert {c["key"] for c in info["codes"]} == set(PHRASES)
    assert info["thresholds"]["kind"] == "global" and "f1_micro" in info["dev_metrics"]
    assert info["server"]["max_request_bytes"] == 4096 and info["server"]["auth"] is False
    assert "codes" not in client.get("/v1/model?include_codes=false").json()
    assert client.get("/healthz").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert {"/v1/code", "/v1/code/batch", "/v1/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/code"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/plain"} <= set(body)


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON"),
        ({"content": b"", "headers": {"Content-Type": "application/json"}}, 400, "empty"),
        ({"json": {"text": "   "}}, 422, "empty"),
        ({"json": {"txt": "hello"}}, 422, "text: Field required"),
        ({"json": {"text": "fever", "top_k": 0}}, 422, "top_k"),
        ({"json": ["fever"]}, 422, "JSON object"),
        ({"json": {"text": "x" * 2001}}, 413, "2,001 characters"),
        ({"content": b"a" * 5000, "headers": {"Content-Type": "text/plain"}}, 413, "4,096 bytes"),
        ({"content": b"fever \xff\xfe", "headers": {"Content-Type": "text/plain"}}, 400, "not valid UTF-8"),
        (
            {
                "content": '{"text": "fièvre"}'.encode("latin-1"),
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "not valid UTF-8 (invalid byte at offset 12)",
        ),
        (
            {"content": b"text=fever", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
            "",
        ),
        ({"content": b"fever", "headers": {"Content-Type": "text/plain; charset=latin-1"}}, 415, "UTF-8"),
    ],
)
def test_bad_requests_get_a_reason_and_the_server_keeps_serving(
    client: TestClient, kwargs: dict[str, object], status: int, reason: str
) -> None:
    r = client.post("/v1/code", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and reason in detail
    assert "hello" not in detail and "fever" not in detail  # never echoes the note
    assert client.post("/v1/code", json={"text": NOTE}).status_code == 200


def test_batch_limits(client: TestClient) -> None:
    r = client.post("/v1/code/batch", json={"notes": []})
    assert r.status_code == 422 and "notes" in r.json()["detail"]
    r = client.post("/v1/code/batch", json={"notes": [{"text": "fever"}] * 65})
    assert r.status_code == 413 and "limit is 64" in r.json()["detail"]
    r = client.post("/v1/code/batch", json={"notes": [{"text": "fever"}, {"text": ""}]})
    assert r.status_code == 422 and r.json()["detail"] == "notes.1.text: the note is empty."


def test_bearer_token(predictor: Predictor) -> None:
    with TestClient(create_app(predictor, ServerSettings(token="s3cret"))) as c:
        assert c.get("/healthz").status_code == 200  # liveness needs no token
        assert c.get("/").status_code == 200  # the page itself is public; its API calls are not
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = c.post("/v1/code", json={"text": NOTE}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in r.json()["detail"]
        assert c.get("/v1/model").status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/code", json={"text": NOTE}, headers=ok).status_code == 200
        assert c.get("/v1/model", headers=ok).status_code == 200


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'id="note"' in r.text and "/static/app.js" in r.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_logs_never_contain_note_text(
    predictor: Predictor, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_note = f"Patient {SECRET} has essential hypertension."
    caplog.set_level(logging.DEBUG)
    with TestClient(
        create_app(predictor, ServerSettings(max_note_chars=200)), raise_server_exceptions=False
    ) as c:
        assert c.post("/v1/code", json={"text": secret_note}).status_code == 200
        assert (
            c.post(
                "/v1/code?id=z", content=secret_note.encode(), headers={"Content-Type": "text/plain"}
            ).status_code
            == 200
        )
        assert c.post("/v1/code/batch", json={"notes": [{"text": secret_note}]}).status_code == 200
        assert c.post("/v1/code", json={"text": secret_note * 10}).status_code == 413
        assert c.post("/v1/code", json={"text": secret_note, "top_k": "many"}).status_code == 422
        bad = ('{"text": "' + secret_note).encode()
        assert (
            c.post("/v1/code", content=bad, headers={"Content-Type": "application/json"}).status_code == 400
        )
    messages = [r.getMessage() for r in caplog.records]
    assert any("request" in m and "/v1/code" in m for m in messages)  # the service does log requests
    assert not any(SECRET in m or "hypertension" in m for m in messages)


def test_internal_errors_are_500_without_details(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(predictor)
    state = app.state.icdcoder

    def broken(notes: list[tuple[str, str]], options: object) -> list[object]:
        raise RuntimeError(f"boom while reading {notes[0][1]}")  # a message that quotes the note

    state.run = broken
    caplog.set_level(logging.DEBUG)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/code", json={"text": f"{SECRET} fever"})
        assert r.status_code == 500 and SECRET not in r.text and "internal error" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
    assert not any(SECRET in r.getMessage() for r in caplog.records)


# ---- the micro-batcher --------------------------------------------------------------------------------


def _held_run(
    fail_on: object = None,
) -> tuple[threading.Event, threading.Event, list[tuple[int, object]], Any]:
    """A run function that signals when it starts and waits for a gate (no sleeps: events only)."""
    entered, gate = threading.Event(), threading.Event()
    calls: list[tuple[int, object]] = []

    def run(notes: list[tuple[str, str]], options: object) -> list[str]:
        entered.set()
        assert gate.wait(10)
        calls.append((len(notes), options))
        if options == fail_on:
            raise ValueError("bad options")
        return [f"{options}:{text}" for _, text in notes]

    return entered, gate, calls, run


def test_batcher_groups_concurrent_jobs_and_keeps_results_apart() -> None:
    entered, gate, calls, run = _held_run()
    b = MicroBatcher(run, max_batch=8, max_wait_ms=0)
    try:
        first = b.submit([("0", "a")], "k")
        assert entered.wait(10)  # the worker is inside run() with job "a" alone; the rest piles up
        futs = [b.submit([(str(i), f"t{i}")], "k") for i in range(6)]
        other = b.submit([("o", "u")], "j")
        big = b.submit([(str(i), f"b{i}") for i in range(10)], "k")
        gate.set()
        assert first.result(10) == ["k:a"]
        assert [f.result(10) for f in futs] == [[f"k:t{i}"] for i in range(6)]
        assert other.result(10) == ["j:u"] and big.result(10) == [f"k:b{i}" for i in range(10)]
    finally:
        b.close()
    # a, then the six "k" jobs in one call and "j" apart (same collection, other options), then the big job
    assert calls == [(1, "k"), (6, "k"), (1, "j"), (10, "k")]
    assert b.stats.notes == 18 and b.stats.batches == 4 and b.stats.max_batch_seen == 10


def test_batcher_errors_and_overload() -> None:
    entered, gate, _calls, run = _held_run(fail_on="bad")
    b = MicroBatcher(run, max_batch=2, max_wait_ms=0, max_queue=3)
    try:
        held = b.submit([("a", "a")], "ok")
        assert entered.wait(10)
        bad = b.submit([("b", "b")], "bad")
        b.submit([("c", "c"), ("d", "d")], "ok")
        with pytest.raises(Overloaded):
            b.submit([("e", "e")], "ok")  # 3 notes waiting, limit 3
        gate.set()
        assert held.result(10) == ["ok:a"]
        with pytest.raises(ValueError, match="bad options"):
            bad.result(10)
    finally:
        b.close()
    with pytest.raises(RuntimeError):
        b.submit([("f", "f")], "ok")


def test_concurrent_http_requests_are_batched(predictor: Predictor) -> None:
    app = create_app(predictor, ServerSettings(max_wait_ms=30, micro_batch=16))
    with TestClient(app) as c:
        results: dict[int, dict[str, object]] = {}

        def call(i: int) -> None:
            results[i] = c.post(
                "/v1/code", json={"text": f"{NOTE} note {i}", "id": str(i), "top_k": 1}
            ).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = c.get("/v1/model?include_codes=false").json()["server"]["batching"]
    assert sorted(results) == list(range(12)) and all(results[i]["id"] == str(i) for i in results)
    assert stats["notes"] == 12 and stats["batches"] < 12  # some requests shared a model call


def test_cli_serve_builds_the_app_with_its_options(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from icdcoder.cli import app

    seen: dict[str, Any] = {}

    def fake_run(asgi: Any, **kwargs: Any) -> None:  # instead of listening: keep what would be served
        seen["app"], seen["kwargs"] = asgi, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("ICDCODER_TOKEN", "from-env")
    args = ["serve", str(tiny_model_dir), "--port", "8123", "--max-note-chars", "500", "--max-wait-ms", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert seen["kwargs"] == {"host": "127.0.0.1", "port": 8123, "log_level": "info", "access_log": False}
    with TestClient(seen["app"]) as c:
        assert c.post("/v1/code", json={"text": NOTE}).status_code == 401
        ok = {"Authorization": "Bearer from-env"}
        server = c.get("/v1/model", headers=ok).json()["server"]
        assert server["max_note_chars"] == 500 and server["max_wait_ms"] == 1.0 and server["auth"] is True
    r = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--evidence-method", "magic"])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["serve", str(tiny_model_dir.parent / "nope")])
    assert r.exit_code != 0

"""`model.name: mention_memory` end to end on tiny data with spans: prepare (JSONL with spans) -> train ->
model directory (JSON state, no pickles) -> evaluate -> predict with exact evidence -> serve."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.data.document import Document, Evidence
from icdcoder.errors import DataError
from icdcoder.inference.predictor import Predictor
from icdcoder.models.base import FEATURES, SPANS, Batch, ModelContext, build_model
from icdcoder.serving.app import ServerSettings, create_app

runner = CliRunner()

PHRASES = {
    "icd10cm:I10": ["hipertensión arterial", "HTA"],
    "icd10cm:E11.9": ["diabetes mellitus tipo 2"],
    "icd10cm:R50.9": ["fiebre"],
    "icd10cm:J18.9": ["neumonía"],
    "icd10cm:N39.0": ["infección urinaria"],
}
FILLER = [
    "Paciente de 67 años que acude a urgencias.",
    "Se solicita analítica completa.",
    "Evolución favorable durante el ingreso.",
    "Se decide alta hospitalaria con seguimiento.",
]


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        codes = rng.sample(sorted(PHRASES), 2)
        text, spans = "", []
        for code in codes:
            text += rng.choice(FILLER) + " Presenta "
            phrase = rng.choice(PHRASES[code])
            spans.append({"code": code, "start": len(text), "end": len(text) + len(phrase)})
            text += phrase + ". "
        text += rng.choice(FILLER)
        split = "train" if i < 16 else "dev" if i < 24 else "test"
        rows.append({"id": f"n{i}", "text": text, "codes": codes, "split": split, "spans": spans})
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mention_memory")
    notes = root / "notes.jsonl"
    notes.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(30, 0)), encoding="utf-8"
    )
    r = runner.invoke(app, ["data", "prepare", "jsonl", str(notes), "--out", str(root / "data")])
    assert r.exit_code == 0, r.output
    cfg = root / "mm.yaml"
    cfg.write_text(
        "dataset_name: unit-mm\n"
        f"data: {{source: prepared, path: {root / 'data'}}}\n"
        "embeddings: {word2vec: false}\n"
        "model: {name: mention_memory, min_similarity: [0.8, 1.0], gamma: [2.0]}\n"
        "train: {seed: 0, progress: false}\n"
        "eval: {test: true}\n",
        encoding="utf-8",
    )
    r = runner.invoke(app, ["train", str(cfg), "--out", str(root / "run")])
    assert r.exit_code == 0, r.output
    return root / "run"


def test_train_saves_json_state_and_reads_test_once(run_dir: Path) -> None:
    model = run_dir / "model"
    state = json.loads((model / "model_state.json").read_text(encoding="utf-8"))
    mentions = {m["text"]: m["codes"] for m in state["memory"]["mentions"]}
    assert mentions["hta"] == {"icd10cm:I10": mentions["hta"]["icd10cm:I10"]}
    assert set(mentions) <= {
        "hipertension arterial",
        "hta",
        "diabetes mellitus tipo 2",
        "fiebre",
        "neumonia",
        "infeccion urinaria",
    }
    assert not list(model.glob("*.pt")) and not list(model.glob("*.pkl"))
    fit = json.loads((run_dir / "fit.json").read_text(encoding="utf-8"))
    assert fit["mentions"] == len(mentions) and {g["min_similarity"] for g in fit["grid"]} == {0.8, 1.0}
    test = json.loads((run_dir / "test_metrics.json").read_text(encoding="utf-8"))
    assert test["map"] == pytest.approx(1.0)  # every code's mention is in every test note, nothing else


def test_evaluate_cli_on_the_saved_model(run_dir: Path) -> None:
    data = run_dir.parent / "data"
    r = runner.invoke(
        app, ["evaluate", str(run_dir / "model"), "--data", str(data), "--split", "test", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{") :])["map"] == pytest.approx(1.0)


def test_predict_cli_gives_the_exact_spans(run_dir: Path, tmp_path: Path) -> None:
    note = "Mujer con HTA de larga evolución. Ingresa por neumonía y fiebre alta."
    (tmp_path / "a.txt").write_text(note, encoding="utf-8")
    r = runner.invoke(
        app, ["predict", str(run_dir / "model"), str(tmp_path / "a.txt"), "--format", "json", "--top-k", "3"]
    )
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.output[r.output.index("[") :])
    assert res["evidence_method"] == "match"
    got = {c["key"]: [e["text"] for e in c["evidence"]] for c in res["codes"]}
    assert got == {"icd10cm:I10": ["HTA"], "icd10cm:J18.9": ["neumonía"], "icd10cm:R50.9": ["fiebre"]}
    for c in res["codes"]:
        assert c["decision"] and all(note[e["start"] : e["end"]] == e["text"] for e in c["evidence"])


def test_server_shows_the_spans(run_dir: Path) -> None:
    note = "Antecedentes: diabetes mellitus tipo 2. Hoy infección urinaria."
    with TestClient(create_app(Predictor(run_dir / "model"), ServerSettings())) as client:
        r = client.post("/v1/code", json={"text": note, "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evidence_method"] == "match"
    ev = {c["key"]: [(e["start"], e["end"]) for e in c["evidence"]] for c in body["codes"]}
    dm = note.index("diabetes")
    assert ev["icd10cm:E11.9"] == [(dm, dm + len("diabetes mellitus tipo 2"))]


def test_forward_outputs_spans_features_and_floor_logits() -> None:
    keys = ["icd10cm:I10", "icd10cm:R50.9", "icd10cm:J18.9"]
    model = build_model(
        {"name": "mention_memory", "min_similarity": [1.0], "gamma": [1.0]}, ModelContext(keys, 4)
    )
    train = [
        Document(
            "t1", "HTA.", ["icd10cm:I10"], "train", evidence=[Evidence("icd10cm:I10", ((0, 3),), "HTA")]
        ),
        Document(
            "t2",
            "Fiebre.",
            ["icd10cm:R50.9"],
            "train",
            evidence=[Evidence("icd10cm:R50.9", ((0, 6),), "Fiebre")],
        ),
    ]
    model.fit_corpus(train, [Document("d1", "HTA y fiebre.", ["icd10cm:I10"], "dev")], keys)
    import torch

    text = "Fiebre sin HTA."
    out = model(
        Batch(
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool),
            torch.ones(1),
            ["x"],
            texts=[text],
        )
    )
    assert out.extras[SPANS] == [{1: [(0, 6)], 0: [(11, 14)]}] or out.extras[SPANS] == [
        {0: [(11, 14)], 1: [(0, 6)]}
    ]
    assert out.extras[FEATURES][0][0]["memory_similarity"] == 1.0
    # precision of "hta" for I10 on train: (1 + 0.5) / (1 + 1) = 0.75 -> logit ln 3
    assert out.logits[0, 0].item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-5)
    assert out.logits[0, 2].item() < -19  # J18.9: no mention, below every matched code
    # the state survives JSON and rebuilds the same scores
    other = build_model({"name": "mention_memory"}, ModelContext(keys, 4))
    other.load_state_json(json.loads(json.dumps(model.state_json())))
    again = other(
        Batch(
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool),
            torch.ones(1),
            ["x"],
            texts=[text],
        )
    )
    assert torch.equal(again.logits, out.logits)


def test_no_spans_in_train_is_a_clear_error() -> None:
    keys = ["icd10cm:I10"]
    model = build_model({"name": "mention_memory"}, ModelContext(keys, 4))
    with pytest.raises(DataError, match="no evidence spans"):
        model.fit_corpus([Document("t", "HTA.", keys, "train")], [], keys)

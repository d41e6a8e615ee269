"""`icdcoder quantify` on a folder of notes, dev rates kept in the model directory, and the server's batch
endpoint returning the prevalence table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.inference.predictor import Predictor
from icdcoder.inference.quantify import STATS_FILE, collection_matrices
from icdcoder.serving.app import ServerSettings, create_app
from test_serving import trained_tiny_model

NOTES = [
    "History of essential hypertension. Seen today.",
    "Persistent fever since Monday, no hypertension.",
    "Follow up visit. Essential hypertension, stable.",
    "Type 2 diabetes mellitus, on insulin.",
    "Nothing of note.",
]


@pytest.fixture()
def model_copy(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the session's tiny CAML directory (quantify may write into it) and its dataset."""
    src = trained_tiny_model(tmp_path_factory)
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst, src.parent.parent / "data"


def _notes_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    for i, text in enumerate(NOTES):
        (folder / f"n{i}.txt").write_text(text, encoding="utf-8")
    return folder


def test_quantify_a_folder_with_and_without_dev_rates(model_copy: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = model_copy
    notes = _notes_dir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["quantify", str(model), str(notes), "--json", "--top", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["notes"] == 5 and out["methods"] == ["cc", "pcc"]
    # PCC is the mean calibrated probability, CC the share of positive decisions, over the 5 notes
    predictor = Predictor(model)
    probs, decisions = collection_matrices(predictor, [(f"n{i}", t) for i, t in enumerate(NOTES)])
    by_key = {row["key"]: row for row in out["codes"]}
    assert len(by_key) == len(predictor.labels)
    for j, key in enumerate(predictor.labels):
        assert by_key[key]["pcc"]["value"] == pytest.approx(probs[:, j].mean(), abs=1e-5)
        assert by_key[key]["cc"]["value"] == pytest.approx(decisions[:, j].mean(), abs=1e-5)
        for m in ("cc", "pcc"):
            assert by_key[key][m]["low"] <= by_key[key][m]["value"] <= by_key[key][m]["high"]
    pcc = [row["pcc"]["value"] for row in out["codes"]]
    assert pcc == sorted(pcc, reverse=True)

    # dev rates from --data, kept in the model directory, then used without --data
    res = runner.invoke(
        app, ["quantify", str(model), str(notes), "--data", str(data), "--save-stats", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert (model / STATS_FILE).is_file()
    res = runner.invoke(app, ["quantify", str(model), str(notes), "--json", "--top", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["methods"] == ["cc", "pcc", "acc", "pacc"]
    stats = json.loads((model / STATS_FILE).read_text())
    for j, key in enumerate(predictor.labels):
        row = json.loads(res.output)["codes"][[r["key"] for r in out["codes"]].index(key)]
        gap = stats["tpr"][j] - stats["fpr"][j]
        cc = row["cc"]["value"]
        want = np.clip((cc - stats["fpr"][j]) / gap, 0, 1) if gap > 0.01 else cc
        assert row["acc"]["value"] == pytest.approx(want, abs=1e-5)
    # the model still loads (the extra file is not part of its checksummed set), and the table prints
    res = runner.invoke(app, ["quantify", str(model), str(notes), "--top", "3"])
    assert res.exit_code == 0 and "Estimated prevalence in 5 notes" in res.output and "PACC" in res.output

    # stale rates (another state of the model) are refused with a fix
    stats["model_metadata_sha256"] = "0" * 64
    (model / STATS_FILE).write_text(json.dumps(stats))
    res = runner.invoke(app, ["quantify", str(model), str(notes)])
    assert res.exit_code != 0 and "another state of this model" in str(res.exception)
    res = runner.invoke(app, ["quantify", str(model), str(notes), "--methods", "cc,xyz"])
    assert res.exit_code != 0 and "unknown quantification method" in str(res.exception)


def test_batch_endpoint_returns_prevalence(model_copy: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = model_copy
    res = CliRunner().invoke(
        app, ["quantify", str(model), str(_notes_dir(tmp_path)), "--data", str(data), "--save-stats"]
    )
    assert res.exit_code == 0, res.output
    predictor = Predictor(model)
    with TestClient(create_app(predictor, ServerSettings())) as client:
        body = {"notes": [{"text": t} for t in NOTES], "top_k": 2, "quantify": True, "quantify_top": 3}
        r = client.post("/v1/code/batch", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert len(got["results"]) == 5 and all(len(n["codes"]) >= 2 for n in got["results"][:4])
        prev = got["prevalence"]
        assert (
            prev["notes"] == 5 and prev["methods"] == ["cc", "pcc", "acc", "pacc"] and len(prev["codes"]) == 3
        )
        probs, _ = collection_matrices(predictor, [(str(i), t) for i, t in enumerate(NOTES)])
        top = prev["codes"][0]
        assert top["pcc"]["value"] == pytest.approx(probs.mean(0).max(), abs=1e-5)
        plain = client.post("/v1/code/batch", json={"notes": [{"text": NOTES[0]}]}).json()
        assert plain.get("prevalence") is None

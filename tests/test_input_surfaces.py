"""Inputs that are not what they claim (issue 16): non-regular note files, colliding note ids, a model whose
weights are not finite."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from icdcoder.errors import DataError, IcdcoderError, ModelDirError
from icdcoder.inference.reading import MAX_NOTE_BYTES, collect_note_files, read_note
from icdcoder.modeldir import load_model_dir
from test_serving import trained_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_non_regular_and_huge_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(DataError, match="not a regular file"):
        read_note(fifo)
    if Path("/dev/zero").exists():
        with pytest.raises(DataError, match="not a regular file"):
            read_note(Path("/dev/zero"))
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(MAX_NOTE_BYTES + 10)
    with pytest.raises(DataError):
        read_note(big)


def test_note_ids_from_two_folders_never_collide_silently(tmp_path: Path) -> None:
    for folder in ("ward1", "ward2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.txt").write_text("fever", encoding="utf-8")
    with pytest.raises(DataError, match="share the id 'a'"):
        collect_note_files([tmp_path / "ward1", tmp_path / "ward2"])
    assert len(collect_note_files([tmp_path / "ward1"])) == 1


def test_non_finite_weights_are_refused(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_tiny_model(tmp_path_factory), model)
    weights = load_file(model / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = torch.nan
    save_file(weights, model / "model.safetensors")
    meta = json.loads((model / "metadata.json").read_text())
    meta["sha256"]["model.safetensors"] = hashlib.sha256(
        (model / "model.safetensors").read_bytes()
    ).hexdigest()
    (model / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="NaN or infinite"):
        load_model_dir(model)


def test_model_from_another_icdcoder_or_torch_version_is_warned_about(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from icdcoder.cli import app
    from icdcoder.inference.predictor import Predictor
    from icdcoder.serving.app import create_app

    model = tmp_path / "model"
    shutil.copytree(trained_tiny_model(tmp_path_factory), model)
    assert load_model_dir(model).warnings == []  # written and read by the installed versions
    meta = json.loads((model / "metadata.json").read_text())
    meta["versions"]["torch"] = "1.13.1+cu117"
    meta["versions"]["icdcoder"] = meta["versions"]["icdcoder"] + "9"
    (model / "metadata.json").write_text(json.dumps(meta))  # metadata.json is not in its own checksums

    with caplog.at_level("WARNING", logger="icdcoder.modeldir"):
        found = load_model_dir(model).warnings
    assert len(found) == 2
    assert "torch 1.13.1+cu117" in found[1] and "torch==1.13.1" in found[1] and "retrain" in found[1]
    assert "icdcoder" in found[0] and str(model) in found[0]
    assert [r.getMessage() for r in caplog.records] == [f"warning: {m}" for m in found]

    note = tmp_path / "n.txt"
    note.write_text("Essential hypertension.", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(model), str(note)])
    assert result.exit_code == 0, result.output
    info = TestClient(create_app(Predictor(model))).get("/v1/model", params={"include_codes": "false"}).json()
    assert info["warnings"] == found

    # A directory without the record: loaded, and said so.
    del meta["versions"]
    (model / "metadata.json").write_text(json.dumps(meta))
    (only,) = load_model_dir(model).warnings
    assert "no record of the icdcoder and torch versions" in only


def _replace_and_rechecksum(model: Path, name: str, content: str) -> None:
    (model / name).write_text(content, encoding="utf-8")
    meta = json.loads((model / "metadata.json").read_text())
    meta["sha256"][name] = hashlib.sha256((model / name).read_bytes()).hexdigest()
    (model / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("labels.json", "[1, 2]", "labels.json does not hold what icdcoder wrote there"),
        ("labels.json", '{"system": "icd10cm"}', "missing field 'codes'"),
        ("tokenizer.json", '"words"', "tokenizer config must be a mapping"),
        ("config.yaml", "- a\n- b\n", "the config as a whole: Input should be a valid dictionary"),
    ],
)
def test_a_model_file_of_the_wrong_shape_is_an_error_naming_that_file(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, name: str, content: str, said: str
) -> None:
    # Found by benchmarks/fuzz_inputs.py: JSON that parses but has the wrong shape used to surface as
    # "unreadable model directory: string indices must be integers", naming neither file nor fix.
    model = tmp_path / "model"
    shutil.copytree(trained_tiny_model(tmp_path_factory), model)
    _replace_and_rechecksum(model, name, content)
    with pytest.raises(IcdcoderError, match="Fix: ") as err:
        load_model_dir(model)
    assert said in str(err.value)
    assert err.value.path is not None and err.value.path.endswith(name)

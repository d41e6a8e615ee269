"""End to end through the CLI: train → evaluate → predict → report, plus the failure modes around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.errors import ConfigError, DataError, IcdcoderError, ModelDirError
from icdcoder.modeldir import load_model_dir
from icdcoder.training.config import load_config

runner = CliRunner()


def _config(tmp_path: Path, data: Path, model: dict[str, object], **train: object) -> Path:
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(data)},
        "embeddings": {"word2vec": True, "dim": 8, "epochs": 1},
        "model": model,
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "lr": 0.01,
            "seed": 0,
            "progress": False,
            "num_threads": 1,
            **train,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    cfg = _config(tmp, tiny_dataset, {"name": "caml", "embed_dim": 8, "num_filters": 6, "kernel_size": 3})
    _ok(["train", str(cfg), "--out", str(tmp / "run")])
    return tmp / "run"


def test_train_writes_a_complete_run(trained: Path) -> None:
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "dev_metrics.json",
        "test_metrics.json",
        "run.json",
        "predictions_test.parquet",
        "model/model.safetensors",
        "checkpoint/state.json",
    ):
        assert (trained / name).exists(), name
    run = json.loads((trained / "run.json").read_text())
    assert run["model"] == "caml" and run["dataset"] == "tiny" and run["n_labels"] == 5
    lm = load_model_dir(trained / "model")
    assert lm.labels.keys == sorted(lm.labels.keys)
    assert lm.metadata["data_fingerprint"] == run["data_fingerprint"]
    assert 0.0 <= lm.thresholds["global"] <= 1.0
    # Calibration is fitted on dev (default: Platt) and saved; thresholds apply to calibrated scores.
    assert lm.calibration.method in ("platt", "none")
    assert run["calibration"]["method"] == lm.calibration.method
    assert set(run["calibration"]["dev_after"]) == {"ece", "mece", "brier"}
    assert run["calibration"]["dev_after"]["brier"] <= run["calibration"]["dev_before"]["brier"] + 1e-9
    assert {"ece", "mece", "brier"} <= set(run["test"])


def test_model_dir_without_calibration_loads_as_identity(trained: Path, tmp_path: Path) -> None:
    """Directories written before calibration existed have no calibration.json: they load unchanged."""
    import shutil

    m = tmp_path / "old"
    shutil.copytree(trained / "model", m)
    (m / "calibration.json").unlink()
    meta = json.loads((m / "metadata.json").read_text())
    del meta["sha256"]["calibration.json"]
    (m / "metadata.json").write_text(json.dumps(meta))
    assert load_model_dir(m).calibration.method == "none"
    # A directory that lists it but lost or altered it is refused.
    shutil.rmtree(m)
    shutil.copytree(trained / "model", m)
    (m / "calibration.json").write_text('{"method": "platt", "slope": 9.0, "intercept": 0.0}')
    with pytest.raises(ModelDirError, match=r"calibration\.json.*checksum"):
        load_model_dir(m)


def test_evaluate_matches_training_time_test_metrics(
    trained: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = _ok(
        [
            "evaluate",
            str(trained / "model"),
            "--data",
            str(tiny_dataset),
            "--split",
            "test",
            "--json",
            "--predictions",
            str(tmp_path / "p.parquet"),
        ]
    )
    metrics = json.loads(out)
    expected = json.loads((trained / "test_metrics.json").read_text())
    assert metrics["f1_micro"] == pytest.approx(expected["f1_micro"], abs=1e-6)
    assert metrics["map"] == pytest.approx(expected["map"], abs=1e-6)
    from icdcoder.training.evaluate import read_predictions

    ids, gold, probs, keys = read_predictions(tmp_path / "p.parquet")
    assert len(ids) == 20 and probs.shape == (20, 5) and len(keys) == 5
    assert all(set(g) <= set(keys) for g in gold)


def test_predict_formats(trained: Path, tmp_path: Path) -> None:
    note = tmp_path / "n1.txt"
    note.write_text("Admitted with essential hypertension and acute kidney failure.", encoding="utf-8")
    rows = json.loads(_ok(["predict", str(trained / "model"), str(note), "--format", "json", "--top-k", "3"]))
    assert rows[0]["id"] == "n1" and len(rows[0]["codes"]) >= 3
    probs = [c["probability"] for c in rows[0]["codes"]]
    assert probs == sorted(probs, reverse=True)
    for c in rows[0]["codes"]:
        for span in c["evidence"]:
            assert 0 <= span["start"] < span["end"] <= len(note.read_text())
    tsv = _ok(["predict", str(trained / "model"), str(note), "--format", "codiesp", "--top-k", "2"])
    lines = [line.split("\t") for line in tsv.strip().splitlines()]
    assert lines[0][0] == "n1" and lines[0][1] == lines[0][1].lower()
    assert "essential" in _ok(["predict", str(trained / "model"), str(note)])


def test_predict_refuses_empty_and_binary_files(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "latin.txt").write_bytes("fièvre".encode("latin-1"))
    for name, message in (("empty.txt", "empty"), ("bin.txt", "binary"), ("latin.txt", "not valid UTF-8")):
        result = runner.invoke(app, ["predict", str(trained / "model"), str(tmp_path / name)])
        assert isinstance(result.exception, DataError), result.output
        assert message in str(result.exception) and name in str(result.exception)


def test_report_mean_and_std_over_seeds(tiny_dataset: Path, tmp_path: Path) -> None:
    runs = []
    for seed in (0, 1):
        cfg = _config(tmp_path, tiny_dataset, {"name": "tfidf"}, seed=seed, epochs=2)
        _ok(["train", str(cfg), "--out", str(tmp_path / f"s{seed}"), "--set", "embeddings.word2vec=false"])
        runs.append(str(tmp_path / f"s{seed}"))
    table = _ok(["report", *runs, "--out", str(tmp_path / "r.md")])
    row = next(line for line in table.splitlines() if line.startswith("| tiny | tfidf"))
    assert "| 0,1 |" in row and "±" in row
    f1 = [json.loads((Path(r) / "test_metrics.json").read_text())["f1_micro"] for r in runs]
    mean = 100 * sum(f1) / 2
    assert f"{mean:.1f} ±" in row
    assert (tmp_path / "r.md").read_text() == table
    # Another thread count is the same experiment (a third seed); another epoch budget is not: it gets a
    # row of its own, labelled by the setting that differs, and never enters the seeds' mean.
    extra = {"s2": ["train.seed=2", "train.num_threads=2"], "v": ["train.epochs=1"]}
    for name, sets in extra.items():
        cfg = _config(tmp_path, tiny_dataset, {"name": "tfidf"}, epochs=2)
        args = ["train", str(cfg), "--out", str(tmp_path / name), "--set", "embeddings.word2vec=false"]
        _ok(args + [a for kv in sets for a in ("--set", kv)])
    rows = [
        line.split(" | ")[1:3]
        for line in _ok(["report", *runs, str(tmp_path / "s2"), str(tmp_path / "v")]).splitlines()
        if line.startswith("| tiny |")
    ]
    assert rows == [["tfidf (train.epochs=1)", "0"], ["tfidf (train.epochs=2)", "0,1,2"]]


def test_resume_of_finished_run_reproduces_metrics(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, tiny_dataset, {"name": "tfidf"}, epochs=2, checkpoint_every=2)
    _ok(["train", str(cfg), "--out", str(tmp_path / "r"), "--set", "embeddings.word2vec=false"])
    first = json.loads((tmp_path / "r" / "test_metrics.json").read_text())
    _ok(["train", str(cfg), "--out", str(tmp_path / "r"), "--set", "embeddings.word2vec=false", "--resume"])
    assert json.loads((tmp_path / "r" / "test_metrics.json").read_text()) == first
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    assert "--resume" in str(result.exception)


def test_config_errors_name_key_and_choices(tmp_path: Path, tiny_dataset: Path) -> None:
    cfg = _config(tmp_path, tiny_dataset, {"name": "caml"})
    with pytest.raises(ConfigError, match=r"train.epoch: .*allowed keys here: .*epochs"):
        load_config(cfg, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"train.epochs: .*integer"):
        load_config(cfg, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"model.kernel: .*allowed model keys: .*kernel_size"):
        load_config(cfg, ["model.kernel=3"])
    with pytest.raises(ConfigError, match=r"unknown model 'camel'.*caml"):
        load_config(cfg, ["model.name=camel"])
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load_config(cfg, ["data.path=null"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(cfg, ["train.epochs"])


def test_every_shipped_config_validates() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted(root.glob("*/*.yaml"))
    assert len(paths) >= 42
    for path in paths:
        prepared = "mimic" in path.parent.name or path.parent.name == "own-data"  # data.path set by the user
        cfg = load_config(path, ["data.path=/data"] if prepared else [])
        assert cfg.dataset_name == path.parent.name, path


def test_corrupted_or_mismatched_model_dir_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    def copy() -> Path:
        dst = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(trained / "model", dst)
        return dst

    m = copy()
    data = bytearray((m / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (m / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match=r"model\.safetensors.*checksum"):
        load_model_dir(m)
    m = copy()
    (m / "vocab.json").unlink()
    with pytest.raises(ModelDirError, match=r"vocab\.json is missing"):
        load_model_dir(m)
    with pytest.raises(ModelDirError, match="not found"):
        load_model_dir(tmp_path / "nope")
    # Files from another run (different label space) are refused even with consistent checksums.
    m = copy()
    labels = json.loads((m / "labels.json").read_text())
    labels["codes"] = labels["codes"][:-1]
    from icdcoder.training.labels import LabelSpace

    labels["fingerprint"] = LabelSpace([c["key"] for c in labels["codes"]]).fingerprint
    (m / "labels.json").write_text(json.dumps(labels))
    meta = json.loads((m / "metadata.json").read_text())
    from icdcoder.modeldir import _sha256

    meta["sha256"]["labels.json"] = _sha256(m / "labels.json")
    (m / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="label space"):
        load_model_dir(m)


def test_failed_save_leaves_no_model_dir(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import icdcoder.modeldir as md

    lm = load_model_dir(trained / "model")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(md, "save_file", disk_full)
    from icdcoder.models.base import ModelContext

    ctx = ModelContext(label_keys=lm.labels.keys, vocab_size=len(lm.vocab))
    with pytest.raises(OSError):
        md.save_model_dir(
            tmp_path / "out",
            config=lm.config,
            labels=lm.labels,
            vocab=lm.vocab,
            tokenizer=lm.tokenizer,
            model=lm.model,
            ctx=ctx,
            thresholds=lm.thresholds,
            metadata={},
        )
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_data_of_another_code_system(trained: Path, tmp_path: Path) -> None:
    from icdcoder.data.document import Document
    from icdcoder.data.prepared import write_prepared

    write_prepared(tmp_path / "icd9", [Document("x", "some note", ["icd9cm-dx:401.9"], "test")], source="t")
    result = runner.invoke(
        app, ["evaluate", str(trained / "model"), "--data", str(tmp_path / "icd9"), "--split", "test"]
    )
    assert isinstance(result.exception, IcdcoderError)
    assert "label space" in str(result.exception)


def test_demo_end_to_end_small(tmp_path: Path) -> None:
    """The README's main job, shrunk: embedded CodiEsp-D, TF-IDF for 1 epoch, one coded note. (The demo's
    default model, the hybrid, takes ~7 CPU-minutes; its training through the CLI is tests/test_hybrid.py.)"""
    from icdcoder.cli.demo import DEMO_CONFIG

    demo_dir = str(tmp_path / "demo")
    tfidf = str(DEMO_CONFIG.parent / "tfidf.yaml")
    out = _ok(
        [
            "demo",
            "--out",
            demo_dir,
            "--config",
            tfidf,
            "--set",
            "train.epochs=1",
            "--set",
            "train.progress=false",
        ]
    )
    assert "train:  500 documents" in out and "dev:  250" in out and "test:  250" in out
    assert "icd10cm:R52" in out and "[long_title]" in out
    assert "F1 micro" in out and "MAP" in out and "ECE" in out
    assert "Coding one test note" in out and "p=" in out
    assert (tmp_path / "demo" / "run" / "model" / "model.safetensors").exists()


def test_predictor_reports_calibrated_probabilities(trained: Path) -> None:
    """What `predict` and the server show is the dev-fitted calibration of the model's sigmoid, and the
    decision compares that calibrated probability with the stored threshold."""
    import numpy as np
    import torch

    from icdcoder.inference.predictor import Predictor
    from icdcoder.training.data import EncodedSplit, make_batch

    lm = load_model_dir(trained / "model")
    lm.calibration = type(lm.calibration)("platt", 0.5, -0.5)  # a visible, known map
    pred = Predictor(lm)
    text = "patient with essential hypertension and acute kidney failure."
    [note] = pred.predict([("n", text)], top_k=None, evidence=False)
    ids = lm.vocab.encode(t.text for t in lm.tokenizer.tokenize(text))
    batch = make_batch(EncodedSplit(["n"], [np.asarray(ids)], [[]], [[]]), [0], len(lm.labels.keys))
    with torch.no_grad():
        raw = torch.sigmoid(lm.model(batch).logits).numpy()[0]
    expected = lm.calibration.apply(raw)
    got = {c.key: c.probability for c in note.codes}
    for i, key in enumerate(lm.labels.keys):
        assert got[key] == pytest.approx(float(expected[i]), abs=1e-6)
        assert got[key] != pytest.approx(float(raw[i]), abs=1e-3)
    th = pred.thresholds.vector(pred.labels).astype(np.float32)
    decided = {c.key: c.decision for c in note.codes}
    assert [decided[k] for k in lm.labels.keys] == [bool(e >= t) for e, t in zip(expected, th, strict=True)]


def test_calibrate_refits_a_model_dir_without_touching_weights(
    trained: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    m = tmp_path / "m"
    shutil.copytree(trained / "model", m)
    out = _ok(
        [
            "calibrate",
            str(m),
            "--data",
            str(tiny_dataset),
            "--method",
            "temperature",
            "--out",
            str(tmp_path / "n"),
        ]
    )
    assert "fitted on dev" in out
    old, new = load_model_dir(m), load_model_dir(tmp_path / "n")
    assert new.calibration.method in ("temperature", "none")
    assert new.metadata["sha256"]["model.safetensors"] == old.metadata["sha256"]["model.safetensors"]
    [record] = new.metadata["recalibrations"]
    assert record["split"] == "dev" and record["method"] == new.calibration.method
    # The stored thresholds reproduce the reported dev micro-F1 through `evaluate`.
    metrics = json.loads(_ok(["evaluate", str(tmp_path / "n"), "--data", str(tiny_dataset), "--json"]))
    assert metrics["f1_micro"] == pytest.approx(record["f1_micro"], abs=1e-9)
    # In place, twice: the history grows; test is refused; an unknown method is refused.
    _ok(["calibrate", str(m), "--data", str(tiny_dataset), "--method", "none"])
    _ok(["calibrate", str(m), "--data", str(tiny_dataset)])
    assert len(load_model_dir(m).metadata["recalibrations"]) == 2
    for args, message in (
        (["--split", "test"], "never on test"),
        (["--method", "isotonic"], "unknown calibration"),
    ):
        result = runner.invoke(app, ["calibrate", str(m), "--data", str(tiny_dataset), *args])
        assert isinstance(result.exception, IcdcoderError) and message in str(result.exception)

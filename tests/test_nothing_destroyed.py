"""Nothing destroyed, nothing silently wrong (issue 16): --overwrite replaces only what icdcoder wrote, a
killed `data prepare` leaves nothing that passes for complete and the next run cleans up after it, a path
given to a CodiEsp config is not silently ignored, and malformed CSV quoting or lone surrogates are refused
with the line named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.userfiles import iter_csv, iter_jsonl
from icdcoder.errors import ConfigError, DataError, IcdcoderError
from icdcoder.io import OUTPUT_MARKER, atomic_output_dir, clean_stale_temporaries, is_project_output

runner = CliRunner()
ROW = {"id": "a", "text": "essential hypertension", "codes": ["icd10cm:I10"]}


def _jsonl(path: Path, n: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({**ROW, "id": f"n{i}", "text": f"note {i} " + "hypertension " * 30}) + "\n")
    return path


def test_overwrite_refuses_a_folder_icdcoder_did_not_write(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    notes = _jsonl(victim / "notes.jsonl")
    (victim / "sub").mkdir()
    args = [
        "data",
        "prepare",
        "jsonl",
        str(notes),
        "--system",
        "icd10cm",
        "--out",
        str(victim),
        "--overwrite",
    ]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, IcdcoderError)
    assert "refusing to replace" in str(result.exception) and OUTPUT_MARKER in str(result.exception)
    assert notes.is_file() and (victim / "sub").is_dir()  # untouched
    # a file is never replaced either
    result = runner.invoke(app, [*args[:-3], "--out", str(notes), "--overwrite"])
    assert isinstance(result.exception, IcdcoderError) and notes.is_file()


def test_overwrite_replaces_icdcoder_outputs(tmp_path: Path) -> None:
    notes = _jsonl(tmp_path / "notes.jsonl", 3)
    out = tmp_path / "prepared"
    for _ in range(2):
        result = runner.invoke(
            app, ["data", "prepare", "jsonl", str(notes), "--out", str(out), "--overwrite"]
        )
        assert result.exit_code == 0, result.output
    assert is_project_output(out) and (out / OUTPUT_MARKER).is_file()
    # an output written before the marker existed is recognised by its files
    (out / OUTPUT_MARKER).unlink()
    assert is_project_output(out)
    assert not is_project_output(tmp_path)


def test_train_overwrite_refuses_a_foreign_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "mine"
    run.mkdir()
    (run / "thesis.tex").write_text("years of work", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "train",
            "configs/codiesp-d/tfidf.yaml",
            "--out",
            str(run),
            "--overwrite",
            "--set",
            "train.epochs=1",
        ],
    )
    assert isinstance(result.exception, IcdcoderError) and "refusing to replace" in str(result.exception)
    assert (run / "thesis.tex").read_text(encoding="utf-8") == "years of work"


def test_codiesp_config_with_a_data_path_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "configs/codiesp-d/tfidf.yaml",
            "--out",
            str(tmp_path / "r"),
            "--set",
            f"data.path={tmp_path}",
        ],
    )
    assert isinstance(result.exception, ConfigError)
    assert "data.source=prepared" in str(result.exception)
    assert not (tmp_path / "r").exists()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ds.tmp-{dead_pid}-abc"
    stale.mkdir()
    (stale / "documents.parquet").write_bytes(b"half")
    old = tmp_path / f".ds.old-{dead_pid}"
    old.mkdir()
    live = tmp_path / f".ds.tmp-{os.getppid()}-xyz"  # a live process (our parent): maybe a concurrent run
    live.mkdir()
    with atomic_output_dir(out) as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists() and not old.exists() and live.exists()
    assert (out / "x").is_file()
    assert clean_stale_temporaries(out) == []


@pytest.mark.parametrize("delay", [0.0])
def test_prepare_killed_with_sigkill_leaves_nothing_taken_as_complete(tmp_path: Path, delay: float) -> None:
    notes = _jsonl(tmp_path / "notes.jsonl", 10_000)
    out = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "icdcoder", "data", "prepare", "jsonl", str(notes), "--system", "icd10cm"]
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".prepared.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until it is writing, then kill it part-way
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # it finished before the kill: then it must be complete
        assert len(PreparedDataset.open(out).load()) == 10_000
    else:
        with pytest.raises(DataError):
            PreparedDataset.open(out)
    result = runner.invoke(
        app, ["data", "prepare", "jsonl", str(notes), "--system", "icd10cm", "--out", str(out), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert len(PreparedDataset.open(out).load()) == 10_000
    assert not list(tmp_path.glob(".prepared.tmp-*")) and not list(tmp_path.glob(".prepared.old-*"))


def test_csv_stray_quote_is_an_error_naming_the_line(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text(
        'id,text,codes\na,"Pt says ""hi"" fever,I10\nb,"cough",J18.9\nc,dyspnoea,R06.0\nd,"pain",R52\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match="quoting") as exc:
        list(iter_csv(f, system="icd10cm"))
    assert exc.value.line == 2
    good = tmp_path / "g.csv"
    good.write_text('id,text,codes\na,"Pt says ""hi"", fever",I10\nb,cough,J18.9\n', encoding="utf-8")
    docs = list(iter_csv(good, system="icd10cm"))
    assert [d.text for d in docs] == ['Pt says "hi", fever', "cough"]


def test_lone_surrogate_in_jsonl_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "n.jsonl"
    f.write_text(
        '{"id": "a", "text": "ok", "codes": []}\n{"id": "b", "text": "x \\ud800 y", "codes": []}\n', "utf-8"
    )
    with pytest.raises(DataError, match="surrogate") as exc:
        list(iter_jsonl(f))
    assert exc.value.line == 2
    result = runner.invoke(app, ["data", "prepare", "jsonl", str(f), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, DataError) and not (tmp_path / "o").exists()
    pair = tmp_path / "p.jsonl"  # a whole surrogate pair is a valid character
    pair.write_text('{"id": "a", "text": "\\ud83d\\ude00", "codes": []}\n', "utf-8")
    assert next(iter(iter_jsonl(pair))).text == "\U0001f600"


def _train_cfg(tmp_path: Path, data: Path) -> Path:
    import yaml

    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(data)},
        "embeddings": {"word2vec": False},
        "model": {"name": "caml", "embed_dim": 8, "num_filters": 6, "kernel_size": 3},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "seed": 0, "progress": False, "num_threads": 1,
                  "patience": 0, "checkpoint_every": 3},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_train_killed_with_sigkill_resumes_to_the_uninterrupted_result(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = _train_cfg(tmp_path, tiny_dataset)
    whole = tmp_path / "whole"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(whole)]).exit_code == 0
    expected = json.loads((whole / "test_metrics.json").read_text())
    for n, wait_for in enumerate(["checkpoint/state.json"]):  # killed mid-training, after a checkpoint
        run = tmp_path / f"killed{n}"
        cmd = [sys.executable, "-m", "icdcoder", "train", str(cfg), "--out", str(run)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (run / wait_for).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (run / "run.json").exists():  # killed part-way: nothing looks finished
            assert not (run / "model").exists() and not (run / "test_metrics.json").exists()
        resumed = runner.invoke(app, ["train", str(cfg), "--out", str(run), "--resume"])
        assert resumed.exit_code == 0, resumed.output
        assert json.loads((run / "test_metrics.json").read_text()) == expected
        assert not list(run.glob(".*.tmp-*")) and not list(
            (run / "checkpoint").parent.glob(".checkpoint.tmp-*")
        )

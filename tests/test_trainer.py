"""Trainer: learning, early stopping with best-weights reload, exact resume, and DDP equivalence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icdcoder.models.base import build_model
from icdcoder.training.config import TrainConfig
from icdcoder.training.data import target_matrix
from icdcoder.training.trainer import Trainer, set_seed

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import tiny_ctx, tiny_split

TRAIN, DEV = tiny_split(64, seed=1), tiny_split(24, seed=2)


def _neg_bce(probs: np.ndarray) -> dict[str, float]:
    y = target_matrix(DEV, probs.shape[1])
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return {"neg_bce": float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))}


def _cfg(**kw: object) -> TrainConfig:
    base = dict(
        epochs=4,
        batch_size=8,
        grad_accum=2,
        lr=0.05,
        monitor="neg_bce",
        patience=0,
        progress=False,
        checkpoint_every=3,
        seed=7,
        warmup_ratio=0.1,
        clip_grad_norm=1.0,
    )
    base.update(kw)
    return TrainConfig.model_validate(base)


def _trainer(run_dir: Path, cfg: TrainConfig, dropout: float = 0.3) -> Trainer:
    set_seed(cfg.seed)
    model = build_model({"name": "_tiny", "dim": 8, "dropout": dropout}, tiny_ctx())
    return Trainer(model, TRAIN, DEV, cfg, run_dir, _neg_bce)


def test_trainer_learns_and_logs(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, _cfg())
    result = tr.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r["kind"] == "dev"]
    assert len(dev) == 4
    assert dev[-1]["dev_neg_bce"] > dev[0]["dev_neg_bce"]  # it learned
    # 64 docs / per-step batch 4 = 16 micro-batches = 8 optimizer steps per epoch
    assert result.steps == 32
    assert result.best_score == max(r["dev_neg_bce"] for r in dev)


def test_early_stopping_reloads_best(tmp_path: Path) -> None:
    cfg = _cfg(
        epochs=30, lr=3.0, patience=2, clip_grad_norm=None, warmup_ratio=0.0
    )  # too high lr: overshoots
    tr = _trainer(tmp_path, cfg)
    result = tr.fit()
    assert result.epochs_run <= 30
    if result.epochs_run < 30:
        assert result.epochs_run - result.best_epoch == 2
    # the model holds the best epoch's weights: re-evaluating gives the best score
    from icdcoder.training.trainer import predict_probs

    probs = predict_probs(tr.model, DEV, 16, torch.device("cpu"))
    assert _neg_bce(probs)["neg_bce"] == pytest.approx(result.best_score, abs=1e-6)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after_records", [2, 7, 9, 17])
def test_resume_matches_uninterrupted_run(tmp_path: Path, kill_after_records: int) -> None:
    full = _trainer(tmp_path / "full", _cfg())
    ref = full.fit()
    ref_state = {k: v.clone() for k, v in full.model.state_dict().items()}

    crashing = _trainer(tmp_path / "crash", _cfg())
    calls = {"n": 0}
    original_log = crashing._log

    def dying_log(record: dict[str, object]) -> None:
        original_log(record)
        calls["n"] += 1
        if calls["n"] == kill_after_records:
            raise _Killed  # the process dies right after this record (mid-epoch or at an epoch end)

    crashing._log = dying_log  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        crashing.fit()

    resumed = _trainer(tmp_path / "crash", _cfg())  # a fresh process: new model, new optimizer
    res = resumed.fit(resume=True)
    assert res.best_epoch == ref.best_epoch
    assert res.best_score == pytest.approx(ref.best_score, abs=1e-7)
    assert res.steps == ref.steps
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], rtol=0, atol=1e-6)
    dev_full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    dev_res = [json.loads(x) for x in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert [r["dev_neg_bce"] for r in dev_res if r["kind"] == "dev"] == pytest.approx(
        [r["dev_neg_bce"] for r in dev_full if r["kind"] == "dev"], abs=1e-7
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) and per-process batch 4 = one process with batch 8.

    Tolerance: float32 all-reduce sums in a different order, so parameters agree to 1e-5, not bitwise."""
    worker = Path(__file__).parent / "ddp_worker.py"
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"np{nproc}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(worker),
            str(out),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[nproc] = json.loads((out / "result.json").read_text())
    one, two = outs[1], outs[2]
    assert len(one["losses"]) == len(two["losses"]) == 8
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(two["params"], one["params"], rtol=0, atol=1e-5)

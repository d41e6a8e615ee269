"""Run under torchrun by test_trainer: trains the tiny model for 2 epochs and writes losses and weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from icdcoder.models.base import build_model
from icdcoder.training.config import TrainConfig
from icdcoder.training.trainer import DistEnv, Trainer, set_seed
from tiny_model import tiny_ctx, tiny_split


def main(out: Path) -> None:
    env = DistEnv.from_env()
    cfg = TrainConfig(
        epochs=2, batch_size=8, grad_accum=1, lr=0.05, monitor="zero", patience=0, progress=False, seed=3
    )
    set_seed(cfg.seed)
    model = build_model({"name": "_tiny", "dim": 8, "dropout": 0.0}, tiny_ctx())
    trainer = Trainer(
        model, tiny_split(32, seed=1), tiny_split(8, seed=2), cfg, out, lambda p: {"zero": 0.0}, env
    )
    trainer.fit()
    if env.is_main:
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in records if r["kind"] == "train"]
        params = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
        (out / "result.json").write_text(json.dumps({"losses": losses, "params": params}))
    if env.world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

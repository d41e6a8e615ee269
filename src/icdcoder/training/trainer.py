"""The trainer every model uses.

AdamW with linear warm-up and decay, gradient accumulation, clipping, early stopping on a dev metric with
best-weights reload, a JSONL metrics log (TensorBoard optional), deterministic seeding, exact resume, and
DistributedDataParallel under torchrun (gloo on CPU, nccl on GPU) with no code change.

Determinism and resume: the batch order of epoch e depends only on (seed, e); every random draw inside the
model comes from torch's global generator, whose state is saved with each checkpoint. A resumed run
restores weights, optimizer, scheduler, RNG and loop position, and skips the micro-batches of the current
epoch it had already consumed, so it ends with the same metrics as an uninterrupted run.

Distributed: each optimizer step consumes one *global* micro-batch per accumulation step, built exactly as in
a single process; rank r takes its elements r, r+W, r+2W, … . DDP averages gradients over ranks, so with
equal shares the update equals the single-process one with the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from icdcoder.models.base import IcdModel
from icdcoder.text.batching import BucketBatchSampler
from icdcoder.training.checkpoint import load_checkpoint, save_checkpoint
from icdcoder.training.config import TrainConfig
from icdcoder.training.data import EncodedSplit, length_sorted_batches, make_batch

log = logging.getLogger(__name__)

EvalFn = Callable[[np.ndarray], dict[str, float]]  # dev probabilities [N, C] -> metrics


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


LOWER_IS_BETTER = frozenset({"ece", "mece", "brier"})  # dev metrics where lower is better (train.monitor)


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistEnv:
        """Read torchrun's variables; initialise the process group when there is more than one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


def device_for(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # As in the seeds (MSMN): no weight decay on biases and normalisation weights.
    return param.ndim <= 1 or name.endswith(".bias")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; a model's `optimizer_groups` (discriminative fine-tuning) scale
    train.lr per group, and each group is split into decayed and not-decayed parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    spec = model.optimizer_groups() if isinstance(model, IcdModel) else None
    seen: set[int] = set()
    plan: list[tuple[list[nn.Parameter], float]] = []
    for _, params, mult in spec or []:
        plan.append(([p for p in params if id(p) not in seen], mult))
        seen.update(id(p) for p in params)
    plan.append(([p for p in model.parameters() if id(p) not in seen], 1.0))
    groups: list[dict[str, Any]] = []
    for params, mult in plan:
        live = [p for p in params if p.requires_grad]
        for wd, members in (
            (cfg.weight_decay, [p for p in live if not _no_decay(names[id(p)], p)]),
            (0.0, [p for p in live if _no_decay(names[id(p)], p)]),
        ):
            if members:
                groups.append({"params": members, "weight_decay": wd, "lr": cfg.lr * mult})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict_probs(model: IcdModel, split: EncodedSplit, batch_size: int, device: torch.device) -> np.ndarray:
    """Sigmoid probabilities [N, C] in the split's order (batches of similar length, no gradients)."""
    model.eval()
    out = np.zeros((len(split), model.n_labels), dtype=np.float32)
    for idx in length_sorted_batches(split.lengths, batch_size):
        batch = make_batch(split, idx, model.n_labels).to(device)
        with model.scores_only():
            logits = model(batch).logits
        out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Fits an IcdModel on an EncodedSplit, selecting the epoch with the best dev `cfg.monitor`."""

    def __init__(
        self,
        model: IcdModel,
        train: EncodedSplit,
        dev: EncodedSplit,
        cfg: TrainConfig,
        run_dir: Path,
        evaluate: EvalFn,
        env: DistEnv | None = None,
    ) -> None:
        self.cfg = cfg
        self.env = env or DistEnv()
        self.device = device_for(self.env)
        self.model = model.to(self.device)
        self.train_split = train
        self.dev_split = dev
        self.run_dir = Path(run_dir)
        self.evaluate = evaluate
        self.ddp: nn.Module = self.model
        if self.env.world_size > 1:
            ids = [self.env.local_rank] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        micro_global = cfg.batch_size // cfg.grad_accum
        if micro_global % self.env.world_size:
            from icdcoder.errors import ConfigError

            raise ConfigError(
                f"per-step batch {micro_global} (train.batch_size / train.grad_accum) is not divisible by "
                f"the {self.env.world_size} processes.",
                fix="choose train.batch_size as a multiple of grad_accum × number of processes.",
            )
        self.micro_global = micro_global
        # Global micro-batches, identical on every rank (num_replicas=1); each rank then takes its share.
        self.sampler = BucketBatchSampler(
            train.lengths, batch_size=micro_global, shuffle=True, seed=cfg.seed, num_replicas=1, rank=0
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.grad_accum)
        total = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        self.total_steps = total
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = linear_schedule(self.optimizer, int(cfg.warmup_ratio * total), total)
        self.ckpt_dir = self.run_dir / "checkpoint"
        self.log_path = self.run_dir / "metrics.jsonl"
        self._tb: Any = None

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            step = int(record.get("step", 0))
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def _log_lines(self) -> int:
        if not self.log_path.exists():
            return 0
        with open(self.log_path, encoding="utf-8") as fh:
            return sum(1 for _ in fh)

    def _truncate_log(self, n: int) -> None:
        if not self.env.is_main or not self.log_path.exists():
            return
        lines = self.log_path.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        self.log_path.write_text("".join(lines), encoding="utf-8")

    def _checkpoint(self, loop: dict[str, Any], best: dict[str, torch.Tensor] | None) -> None:
        if self.env.is_main:
            loop = {**loop, "log_lines": self._log_lines()}
            save_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, loop, best)
        if self.env.world_size > 1:
            dist.barrier()

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        self.sampler.set_epoch(epoch)
        batches = [list(b) for b in self.sampler]
        r, w = self.env.rank, self.env.world_size
        return [b[r::w] for b in batches]

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loop: dict[str, Any] = {
            "epoch": 0,
            "micro": 0,
            "step": 0,
            "best_score": -math.inf,
            "best_epoch": -1,
            "bad_epochs": 0,
            "done": False,
            "history": [],
        }
        best_weights: dict[str, torch.Tensor] | None = None
        if resume and (self.ckpt_dir / "state.json").exists():
            loop, best_weights = load_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler)
            self._truncate_log(int(loop.get("log_lines", 0)))
            log.info(
                "resumed at epoch %d, micro-batch %d, step %d", loop["epoch"], loop["micro"], loop["step"]
            )
        elif not resume and self.log_path.exists() and self.env.is_main:
            self.log_path.unlink()
        if cfg.tensorboard and self.env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

        while not loop["done"] and loop["epoch"] < cfg.epochs:
            epoch = loop["epoch"]
            batches = self._epoch_batches(epoch)
            self.ddp.train()
            progress = None
            if cfg.progress and self.env.is_main:
                from tqdm import tqdm

                progress = tqdm(
                    total=len(batches),
                    initial=loop["micro"],
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    leave=False,
                    dynamic_ncols=True,
                )
            sums: dict[str, float] = {}
            n_terms = 0
            t0 = time.perf_counter()
            for micro in range(loop["micro"], len(batches)):
                last_of_step = (micro + 1) % cfg.grad_accum == 0 or micro + 1 == len(batches)
                batch = make_batch(self.train_split, batches[micro], self.model.n_labels).to(self.device)
                self.model.set_training_progress(loop["step"], self.total_steps, epoch)
                sync = nullcontext() if (last_of_step or self.env.world_size == 1) else self.ddp.no_sync()  # type: ignore[operator]
                with sync:
                    output = self.ddp(batch)
                    terms = self.model.losses(batch, output)
                    loss = sum(terms.values())
                    assert isinstance(loss, torch.Tensor)
                    if not torch.isfinite(loss):
                        from icdcoder.errors import IcdcoderError

                        raise IcdcoderError(
                            f"loss became {loss.item()} at epoch {epoch + 1}, step {loop['step']}.",
                            fix="lower train.lr or set train.clip_grad_norm.",
                        )
                    (loss / cfg.grad_accum).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n_terms += 1
                if progress is not None:
                    progress.update(1)
                if last_of_step:
                    if cfg.clip_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    loop["step"] += 1
                    loop["micro"] = micro + 1
                    logged = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
                    if self.env.world_size > 1:  # log the global loss: the mean over ranks' equal shares
                        packed = torch.stack([v.float() for v in logged.values()])
                        dist.all_reduce(packed)
                        logged = dict(zip(logged, packed / self.env.world_size, strict=True))
                    self._log(
                        {
                            "kind": "train",
                            "epoch": epoch + 1,
                            "step": loop["step"],
                            "lr": self.scheduler.get_last_lr()[0],
                            **{k: float(v) for k, v in logged.items()},
                        }
                    )
                    if cfg.checkpoint_every and loop["step"] % cfg.checkpoint_every == 0:
                        self._checkpoint(loop, best_weights)
                    if cfg.max_steps is not None and loop["step"] >= cfg.max_steps:
                        break
            if progress is not None:
                progress.close()
            train_secs = time.perf_counter() - t0

            # End of epoch: dev evaluation (main process), early-stopping decision shared with all ranks.
            record: dict[str, Any] = {
                "kind": "dev",
                "epoch": epoch + 1,
                "step": loop["step"],
                "train_seconds": round(train_secs, 3),
                **{f"train_{k}": v / max(n_terms, 1) for k, v in sums.items()},
            }
            decision = [False, False]  # improved, stop
            if self.env.is_main:
                probs = predict_probs(self.model, self.dev_split, cfg.eval_batch_size, self.device)
                metrics = self.evaluate(probs)
                if cfg.monitor not in metrics:
                    from icdcoder.errors import ConfigError

                    raise ConfigError(
                        f"train.monitor {cfg.monitor!r} is not a dev metric.",
                        fix=f"choose one of: {', '.join(sorted(metrics))}.",
                    )
                # calibration errors are better when lower (MSAM's CLQ selects on the lowest mean per-code
                # ECE); the loop keeps "higher is better" by negating them
                score = float(metrics[cfg.monitor]) * (-1.0 if cfg.monitor in LOWER_IS_BETTER else 1.0)
                record.update({f"dev_{k}": v for k, v in metrics.items()})
                improved = score > loop["best_score"]
                if improved:
                    loop["best_score"], loop["best_epoch"], loop["bad_epochs"] = score, epoch + 1, 0
                else:
                    loop["bad_epochs"] += 1
                stop = bool(cfg.patience and loop["bad_epochs"] >= cfg.patience)
                decision = [improved, stop]
                self._log(record)
                loop["history"].append({"epoch": epoch + 1, cfg.monitor: float(metrics[cfg.monitor])})
            if self.env.world_size > 1:
                dist.broadcast_object_list(decision, src=0)
            if decision[0]:
                best_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            hit_max = cfg.max_steps is not None and loop["step"] >= cfg.max_steps
            loop["epoch"] = epoch + 1
            loop["micro"] = 0
            loop["done"] = bool(decision[1] or hit_max)
            self._checkpoint(loop, best_weights)

        if best_weights is not None:
            self.model.load_state_dict(best_weights)
        if self._tb is not None:
            self._tb.close()
        return TrainResult(
            best_epoch=int(loop["best_epoch"]),
            best_score=float(loop["best_score"]) * (-1.0 if cfg.monitor in LOWER_IS_BETTER else 1.0),
            epochs_run=int(loop["epoch"]),
            steps=int(loop["step"]),
            history=loop["history"],
        )

"""The convex solver for linear models (`model.solver == "lbfgs"`, e.g. `linear`): per-code L2-regularised
logistic regression solved to its optimum by full-batch L-BFGS, the inverse strength C chosen on dev.

The features of a linear model do not change during training (TF-IDF with a fixed idf), so the training
notes are turned into one sparse matrix X [N, F] once, through the model's own `features` (training and
inference share one code path). Each code c minimises

    Σ_i log(1 + exp(-y_ic (w_c·x_i + b_c)))  +  ||w_c||² / (2C)      (intercept b_c not penalised)

which is scikit-learn's `LogisticRegression(C=C)` objective. All codes are solved together by
`torch.optim.LBFGS` (strong-Wolfe line search); the problems are independent, so the joint optimum is each
code's optimum.

Row-space reduction (when N ≤ `model.kernel_max_notes`): the optimum w_c lies in the span of the training
notes (any component orthogonal to them adds to the penalty and not to the fit). With X Xᵀ = U S² Uᵀ
(eigendecomposition, rank r ≤ N), writing w_c = Xᵀ U S⁻¹ z_c gives X w_c = U S z_c and ||w_c||² = ||z_c||²:
the same problem over z [r, C] with dense design U S [N, r], exactly. With 500 notes and 26k TF-IDF columns
that is a 500-dimensional problem per code instead of a 26k-dimensional one (50× fewer flops per step);
W = Xᵀ U S⁻¹ Z is formed once per C. Larger training sets are solved in the primal, sparse, in blocks of
`model.code_block` codes (memory ≈ 25 · F · block floats for L-BFGS's history).

The grid is solved from the smallest C up, each C warm-started from the previous optimum (the path is smooth
in C, so later solves are short), and the intercepts start at the log-odds of the training prevalence.
After each C the dev metric (`train.monitor`) is computed by the same evaluation the trainer uses and logged
to metrics.jsonl as a "dev" record (`epoch` = position in the grid, `c` = C): the selection is on dev only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icdcoder.errors import ConfigError
from icdcoder.models.base import IcdModel
from icdcoder.models.init import prior_log_odds
from icdcoder.training.config import TrainConfig
from icdcoder.training.data import EncodedSplit, length_sorted_batches, make_batch
from icdcoder.training.trainer import EvalFn, TrainResult, predict_probs

log = logging.getLogger(__name__)


@torch.no_grad()
def feature_matrix(model: IcdModel, split: EncodedSplit, batch_size: int = 64) -> torch.Tensor:
    """The model's features of every note of `split` as a coalesced sparse COO matrix [N, F] (float32)."""
    rows: list[torch.Tensor] = [torch.empty(0)] * len(split)
    model.eval()
    for idx in length_sorted_batches(split.lengths, batch_size):
        batch = make_batch(split, idx, model.n_labels)
        x = model.features(batch)  # type: ignore[operator]
        for j, i in enumerate(idx):
            rows[i] = x[j].to_sparse()
    return torch.stack(rows).coalesce()


def target_columns(split: EncodedSplit, codes: range) -> torch.Tensor:
    """0/1 targets [N, len(codes)] of the codes `codes` (a contiguous block of label indices)."""
    y = torch.zeros(len(split), len(codes))
    for i, tgt in enumerate(split.targets):
        for c in tgt:
            if codes.start <= c < codes.stop:
                y[i, c - codes.start] = 1.0
    return y


def solve_block(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    c: float,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Minimise the L2-regularised logistic loss of a block of codes over design `x` [N, F] (sparse or dense)
    from (weight [b, F], bias [b]). Returns the optimum's (weight, bias), L-BFGS iterations and objective."""
    w = weight.t().contiguous().to(x.dtype).requires_grad_(True)  # [F, b]: x @ w is [N, b]
    b = bias.to(x.dtype).clone().requires_grad_(True)
    y = y.to(x.dtype)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    half_inv_c = 0.5 / c

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        loss = loss + half_inv_c * w.pow(2).sum()
        loss.backward()
        return loss

    final = float(opt.step(closure).detach())
    n_iter = int(opt.state[w].get("n_iter", 0))
    return w.detach().t().contiguous(), b.detach(), n_iter, final


@dataclass
class RowSpace:
    """X Xᵀ = U S² Uᵀ restricted to its rank r: `design` = U S [N, r], `back` = U S⁻¹ [N, r], so that
    w = Xᵀ · back · z has X w = design · z and ||w|| = ||z||."""

    design: torch.Tensor
    back: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> RowSpace:
        dense = x.to_dense().double()
        evals, u = torch.linalg.eigh(dense @ dense.t())
        keep = evals > evals.max().clamp(min=1e-300) * 1e-10
        s = evals[keep].sqrt()
        return cls(design=u[:, keep] * s, back=u[:, keep] / s)

    def weights(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Primal weights [C, F] of reduced solutions z [C, r] (x: the sparse features)."""
        return _xt_mm(x, self.back @ z.t().double()).t().float()


def _xt_mm(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Xᵀ @ m for sparse COO x [N, F] and dense m [N, k], without densifying X."""
    return torch.sparse.mm(x.t().double(), m)


def fit_convex(
    model: IcdModel,
    train: EncodedSplit,
    dev: EncodedSplit,
    cfg: TrainConfig,
    run_dir: Path,
    evaluate: EvalFn,
) -> TrainResult:
    """Solve `model` (a linear model with `linear`, `features` and a `c_grid`) for every C of its grid and
    keep the C with the best dev `cfg.monitor`. A rerun starts over (there is no partial state to resume)."""
    mcfg: Any = model.config
    grid = sorted(float(c) for c in mcfg.c_grid)
    if not grid or grid[0] <= 0:
        raise ConfigError("model.c_grid must list positive values of C.", fix="e.g. c_grid: [1, 10, 100].")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "metrics.jsonl"
    log_path.unlink(missing_ok=True)
    linear: torch.nn.Linear = model.linear  # type: ignore[assignment]
    t0 = time.perf_counter()
    x = feature_matrix(model, train, cfg.eval_batch_size)
    n_labels = model.n_labels
    counts = [0] * n_labels
    for tgt in train.targets:
        for code in tgt:
            counts[code] += 1
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(prior_log_odds(counts, len(train)))
    reduced = RowSpace.of(x) if len(train) <= mcfg.kernel_max_notes else None
    log.info(
        "linear solver: %d notes x %d features (%d non-zeros), %d codes, %s",
        x.shape[0],
        x.shape[1],
        x.values().numel(),
        n_labels,
        f"row space of rank {reduced.design.shape[1]}" if reduced is not None else "primal",
    )
    if reduced is not None:
        design, block = reduced.design, n_labels  # small: all codes in one problem
        z = torch.zeros(n_labels, design.shape[1], dtype=torch.float64)
    else:
        design, block = x, mcfg.code_block
    blocks = [range(s, min(s + block, n_labels)) for s in range(0, n_labels, block)]
    ys = [target_columns(train, blk) for blk in blocks]
    best: tuple[float, int, torch.Tensor, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    total_iter = 0
    for k, c in enumerate(grid):
        tc = time.perf_counter()
        iters, objective = 0, 0.0
        for blk, y in zip(blocks, ys, strict=True):
            sl = slice(blk.start, blk.stop)
            start = z[sl] if reduced is not None else linear.weight[sl].detach()
            w, b, n_it, obj = solve_block(
                design, y, start, linear.bias[sl].detach(), c, mcfg.max_iter, mcfg.tol
            )
            with torch.no_grad():
                if reduced is not None:
                    z[sl] = w
                    linear.weight[sl] = reduced.weights(x, w)
                else:
                    linear.weight[sl] = w.float()
                linear.bias[sl] = b.float()
            iters += n_it
            objective += obj
        total_iter += iters
        metrics = evaluate(predict_probs(model, dev, cfg.eval_batch_size, torch.device("cpu")))
        if cfg.monitor not in metrics:
            raise ConfigError(
                f"train.monitor {cfg.monitor!r} is not a dev metric.",
                fix=f"choose one of: {', '.join(sorted(metrics))}.",
            )
        score = float(metrics[cfg.monitor])
        secs = time.perf_counter() - tc
        record = {
            "kind": "dev",
            "epoch": k + 1,
            "step": total_iter,
            "c": c,
            "lbfgs_iterations": iters,
            "objective": objective,
            "train_seconds": round(secs, 3),
            **{f"dev_{name}": v for name, v in metrics.items()},
        }
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        log.info("C=%g: dev %s %.4f (%d L-BFGS iterations, %.1f s)", c, cfg.monitor, score, iters, secs)
        history.append({"epoch": k + 1, "c": c, cfg.monitor: score})
        if best is None or score > best[0]:
            best = (score, k + 1, linear.weight.detach().clone(), linear.bias.detach().clone())
    assert best is not None
    with torch.no_grad():
        linear.weight.copy_(best[2])
        linear.bias.copy_(best[3])
    log.info(
        "linear solver: C=%g selected on dev (%.1f s in all)", grid[best[1] - 1], time.perf_counter() - t0
    )
    if math.isnan(best[0]):
        log.warning("dev %s is NaN for every C", cfg.monitor)
    return TrainResult(
        best_epoch=best[1], best_score=best[0], epochs_run=len(grid), steps=total_iter, history=history
    )

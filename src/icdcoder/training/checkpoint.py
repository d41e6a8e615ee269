"""Resume checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint is a directory (model weights, optimizer state, RNG states, loop position) replaced atomically,
so a run killed at any moment resumes from the last complete one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from icdcoder.errors import IcdcoderError
from icdcoder.io import atomic_output_dir


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}  # keyed by str(param id): JSON object keys
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    return {"torch_cpu": torch.get_rng_state()}, {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop_state: dict[str, Any],
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    with atomic_output_dir(path, overwrite=True) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            tmp / "model.safetensors",
        )
        save_file(opt_tensors or {"_empty": torch.zeros(0)}, tmp / "optimizer.safetensors")
        save_file(rng_tensors, tmp / "rng.safetensors")
        if best_weights is not None:
            save_file(best_weights, tmp / "best.safetensors")
        state = {
            "loop": loop_state,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "rng": rng_meta,
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model/optimizer/scheduler/RNG; return (loop state, best weights or None)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        model.load_state_dict(load_file(path / "model.safetensors"))
        opt_tensors = load_file(path / "optimizer.safetensors")
        opt_tensors.pop("_empty", None)
        optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(load_file(path / "rng.safetensors"), state["rng"])
        best = load_file(path / "best.safetensors") if (path / "best.safetensors").exists() else None
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise IcdcoderError(
            f"cannot resume from checkpoint: {type(exc).__name__}: {str(exc)[:200]}",
            path=path,
            fix="start the run again without --resume into a new --out directory.",
        ) from None
    return state["loop"], best

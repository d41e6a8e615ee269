"""Training MSAM's MLP quantifier on random dev subsets (the authors' `Scripts/quantification.py`,
`Helpers/quant_helpers.py: trainer`; SEED_NOTES §4.4).

Each training example is a random subset of the dev notes (size uniform in [1, N]): the input is the subset's
PCC vector (mean probability per code), the target its true prevalence vector. Huber loss (δ = 0.5, summed),
AdamW lr 2e-4, early stopping when the training loss has not improved for `patience` epochs, keeping the
weights of the lowest training loss, as the authors did (5,000 val subsets; up to 300 epochs, patience 5).
The weights are saved as safetensors with the sizes in the file's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from icdcoder.errors import ModelDirError
from icdcoder.evaluation.quantification import random_subsets
from icdcoder.evaluation.thresholds import as_numpy
from icdcoder.io import atomic_write
from icdcoder.models.quantifier import MLPQuantifier


def subset_examples(probs: Any, targets: Any, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(PCC [count, C], true prevalence [count, C]) of `count` random subsets of the notes."""
    p = as_numpy(probs, np.float64)
    y = as_numpy(targets).astype(np.float64)
    subsets = random_subsets(p.shape[0], count, seed=seed)
    return np.stack([p[s].mean(0) for s in subsets]), np.stack([y[s].mean(0) for s in subsets])


def train_mlp_quantifier(
    probs: Any,
    targets: Any,
    *,
    hidden: int = 32,
    n_samples: int = 5000,
    epochs: int = 300,
    patience: int = 5,
    lr: float = 2e-4,
    delta: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[MLPQuantifier, dict[str, Any]]:
    """The MLP fitted on random subsets of (dev) probabilities and targets [N, C]."""
    x, y = subset_examples(probs, targets, n_samples, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mlp = MLPQuantifier(x.shape[1], hidden)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr)
    loss_fn = torch.nn.HuberLoss(reduction="sum", delta=delta)
    best, best_state, bad, history = float("inf"), None, 0, []
    for _ in range(epochs):
        mlp.train()
        total = 0.0
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(mlp(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(total / len(xt))
        if history[-1] < best:
            best, bad = history[-1], 0
            best_state = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
        else:
            bad += 1
            if bad > patience:
                break
    if best_state is not None:
        mlp.load_state_dict(best_state)
    mlp.eval()
    info = {
        "hidden": hidden,
        "n_codes": x.shape[1],
        "n_samples": n_samples,
        "epochs_run": len(history),
        "best_train_loss": best,
        "lr": lr,
        "delta": delta,
        "seed": seed,
    }
    return mlp, info


def save_quantifier(path: str | Path, mlp: MLPQuantifier, info: dict[str, Any]) -> Path:
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in mlp.state_dict().items()}
    with atomic_write(path, mode="wb", encoding=None) as fh:
        fh.write(save(state, metadata={"info": json.dumps(info, sort_keys=True)}))
    return path


def load_quantifier(path: str | Path) -> tuple[MLPQuantifier, dict[str, Any]]:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            info = json.loads((fh.metadata() or {})["info"])
        state = load_file(str(path))
        mlp = MLPQuantifier(int(info["n_codes"]), int(info["hidden"]))
        mlp.load_state_dict(state)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelDirError(f"unreadable quantifier weights ({exc}).", path=path) from None
    return mlp.eval(), info

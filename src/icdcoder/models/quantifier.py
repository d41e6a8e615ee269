"""MSAM's quantification parts (Gomes et al., EACL 2024; `model_helpers.py: MLP, CLQModel`,
`trainer_helpers.py: CLQTrainer, StatefulCallback`; SEED_NOTES §4.4).

- `MLPQuantifier`: Linear(C → h), sigmoid, Linear(h → C), sigmoid: maps a collection's PCC vector (mean
  predicted probability per code) to estimated prevalences. h = 32 for MIMIC-III top-50, 3072 for clean.
- `QuantificationMemory`: the stateful memory of joint classification + quantification (CLQ) training. A
  "quantification group" is a run of consecutive training notes of random size, drawn uniformly in
  [group_min, group_max] (the authors: [1, N_train]). Within a group the memory accumulates the gold label
  counts and the predicted probabilities (earlier notes' probabilities detached, as the authors' code does),
  so each note sees the group's running true prevalence and running PCC up to and including itself. The
  memory is reset, with a new size drawn, when the group is full (after the note that fills it) and at every
  epoch boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLPQuantifier(nn.Module):
    def __init__(self, n_codes: int, hidden: int) -> None:
        super().__init__()
        self.head_layer = nn.Linear(n_codes, hidden)
        self.final_layer = nn.Linear(hidden, n_codes)

    def forward(self, pcc: Tensor) -> Tensor:
        """pcc [..., C] → prevalences [..., C] in (0, 1)."""
        return torch.sigmoid(self.final_layer(torch.sigmoid(self.head_layer(pcc))))


class QuantificationMemory:
    """Running sums over the current quantification group (not a module: nothing here is saved)."""

    def __init__(
        self, n_codes: int, group_min: int, group_max: int, generator: torch.Generator | None = None
    ):
        if not 1 <= group_min <= group_max:
            raise ValueError(f"quantification group sizes need 1 ≤ min ≤ max, got {group_min}, {group_max}")
        self.n_codes, self.group_min, self.group_max = n_codes, group_min, group_max
        self.generator = generator
        self.resets = 0
        self.reset()

    def reset(self) -> None:
        """Empty the memory and draw the next group's size."""
        self.count = 0
        self.gold = torch.zeros(self.n_codes)
        self.pred = torch.zeros(self.n_codes)
        self.group_size = int(
            torch.randint(self.group_min, self.group_max + 1, (1,), generator=self.generator).item()
        )
        self.resets += 1

    def step(self, probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Add a batch of notes (probabilities with their graph, 0/1 targets; [B, C]) in order. Returns, per
        note, the running PCC (gradient through this batch's probabilities only) and the running true
        prevalence, both [B, C]; then resets if the group is full. A batch that overflows the group is not
        split (the authors' group check also ran after whole steps)."""
        b = probs.shape[0]
        n = self.count + torch.arange(1, b + 1, dtype=probs.dtype, device=probs.device)[:, None]
        pred = (self.pred.to(probs.device) + probs.cumsum(0)) / n
        gold = (self.gold.to(probs.device) + targets.to(probs.dtype).cumsum(0)) / n
        self.count += b
        self.pred = self.pred.to(probs.device) + probs.detach().sum(0)
        self.gold = self.gold.to(probs.device) + targets.to(probs.dtype).sum(0)
        if self.count >= self.group_size:
            self.reset()
        return pred, gold

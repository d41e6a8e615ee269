"""Truncation loss (JLAN's T-loss): the drop-rate schedule and which terms are dropped, by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.models.losses import (
    DEFAULT_MAX_DROP_RATE,
    truncated_bce_with_logits,
    truncation_drop_rate,
    truncation_keep_mask,
)

LN2 = math.log(2.0)
SP2 = math.log1p(math.exp(2.0))  # BCE of logit -2 with target 1
SP3 = math.log1p(math.exp(3.0))  # BCE of logit 3 with target 0


def test_default_max_rate_is_the_seeds_t_loss() -> None:
    assert DEFAULT_MAX_DROP_RATE == 0.15


@pytest.mark.parametrize(
    ("step", "total", "kw", "expected"),
    [
        (0, 100, {}, 0.0),  # no dropping at the start
        (5, 100, {}, 0.075),  # γ = 0.15 / 0.1 = 1.5 per unit of progress: 1.5 × 0.05
        (10, 100, {}, 0.15),  # D_max reached after 10 % of the planned steps
        (60, 100, {}, 0.15),  # and kept
        (100, 100, {}, 0.15),
        (25, 100, {"warmup": 0.5}, 0.075),
        (1, 3, {"max_rate": 0.3, "warmup": 1.0}, 0.1),
        (0, 100, {"warmup": 0.0}, 0.15),  # warm-up 0: D_max from the first step
        (50, 100, {"max_rate": 0.0}, 0.0),  # D_max 0: plain BCE
        (3, 0, {}, 0.15),  # an unknown total never divides by zero
    ],
)
def test_drop_rate_schedule(step: int, total: int, kw: dict[str, float], expected: float) -> None:
    assert truncation_drop_rate(step, total, **kw) == pytest.approx(expected)


def test_drop_rate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_rate"):
        truncation_drop_rate(1, 10, max_rate=1.0)
    with pytest.raises(ValueError, match="warmup"):
        truncation_drop_rate(1, 10, warmup=-0.1)


LOSSES = torch.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 3.0]])
TARGETS = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    ("rate", "mode", "scope", "kept"),
    [
        # positives hold 2.0, 0.3, 1.5, 3.0: rate 0.5 drops floor(2) = 2 of them, the largest (3.0, 2.0)
        (0.5, "entry", "positive", [[1, 0, 1], [1, 1, 0]]),
        (0.3, "entry", "positive", [[1, 1, 1], [1, 1, 0]]),  # floor(1.2) = 1
        (0.2, "entry", "positive", [[1, 1, 1], [1, 1, 1]]),  # floor(0.8) = 0: nothing
        (0.0, "entry", "positive", [[1, 1, 1], [1, 1, 1]]),
        # all 6 entries are eligible: floor(3) = 3 largest (3.0, 2.0, 1.5), a negative included
        (0.5, "entry", "all", [[1, 0, 1], [0, 1, 0]]),
        # document means 0.8 and 1.567: floor(0.5 × 2) = 1 document, the second
        (0.5, "document", "positive", [[1, 1, 1], [0, 0, 0]]),
        (0.4, "document", "all", [[1, 1, 1], [1, 1, 1]]),  # floor(0.8) = 0
    ],
)
def test_keep_mask_by_hand(rate: float, mode: str, scope: str, kept: list[list[int]]) -> None:
    mask = truncation_keep_mask(LOSSES, TARGETS, rate, mode=mode, scope=scope)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == kept


def test_keep_mask_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        truncation_keep_mask(LOSSES, TARGETS, 1.0)
    with pytest.raises(ValueError, match="mode"):
        truncation_keep_mask(LOSSES, TARGETS, 0.5, mode="batch")
    with pytest.raises(ValueError, match="scope"):
        truncation_keep_mask(LOSSES, TARGETS, 0.5, scope="negative")


LOGITS = torch.tensor([[0.0, -2.0], [3.0, 0.0]])
Y = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # entry losses: ln2, sp(2) | sp(3), ln2


@pytest.mark.parametrize(
    ("rate", "mode", "scope", "expected"),
    [
        (0.0, "entry", "positive", (LN2 + SP2 + SP3 + LN2) / 4),  # plain mean BCE
        (0.5, "entry", "positive", (LN2 + SP3 + LN2) / 3),  # the positive sp(2) dropped, renormalised
        (0.5, "entry", "all", (LN2 + LN2) / 2),  # sp(3) and sp(2) dropped
        (0.5, "document", "positive", (LN2 + SP2) / 2),  # document 2 (mean 1.87) dropped
    ],
)
def test_truncated_bce_by_hand(rate: float, mode: str, scope: str, expected: float) -> None:
    loss = truncated_bce_with_logits(LOGITS, Y, rate, mode=mode, scope=scope)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_rate_zero_is_plain_bce_and_dropped_terms_get_no_gradient() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    plain = truncated_bce_with_logits(logits, Y, 0.0)
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(LOGITS, Y))
    truncated_bce_with_logits(logits, Y, 0.5).backward()
    assert logits.grad is not None
    assert logits.grad[0, 1] == 0  # the dropped positive
    assert torch.all(logits.grad.flatten()[[0, 2, 3]] != 0)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.floats(0.0, 0.99),
    st.sampled_from(["entry", "document"]),
    st.sampled_from(["positive", "all"]),
    st.integers(0, 2**16),
)
def test_never_drops_more_than_the_rate(
    b: int, c: int, rate: float, mode: str, scope: str, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(b, c, generator=g)
    targets = (torch.rand(b, c, generator=g) > 0.5).float()
    keep = truncation_keep_mask(losses, targets, rate, mode=mode, scope=scope)
    dropped = ~keep
    if mode == "document":
        assert int(dropped.all(dim=1).sum()) == math.floor(rate * b)
        assert torch.equal(dropped.any(dim=1), dropped.all(dim=1))  # whole documents only
    else:
        eligible = targets > 0.5 if scope == "positive" else torch.ones_like(keep)
        assert int(dropped.sum()) == math.floor(rate * int(eligible.sum()))
        assert not torch.any(dropped & ~eligible)
        if dropped.any() and keep[eligible].any():  # every dropped entry is at least as large as any kept one
            assert losses[dropped].min() >= losses[keep & eligible].max()


def test_mean_bce_by_hand() -> None:
    import numpy as np

    from icdcoder.models.losses import mean_bce

    probs = np.array([[0.5, 0.9], [1.0, 0.0]], dtype=np.float32)
    targets = np.array([[1, 0], [0, 0]], dtype=np.int8)
    # ln 2, -ln 0.1, -ln(1e-7) (clipped), ~0
    expected = (LN2 - math.log(0.1) - math.log(1e-7) + 1e-7) / 4
    assert mean_bce(probs, targets) == pytest.approx(expected, rel=1e-4)

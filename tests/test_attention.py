import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.models.attention import LabelAttention, label_attention, masked_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masked_positions_get_exactly_zero_and_rows_sum_to_one() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    w = masked_softmax(scores, mask[:, None, :])
    assert torch.equal(w[~mask[:, None, :].expand_as(w)], torch.zeros(int((~mask).sum()) * 4))
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    assert torch.all(w[2, :, 0] == 1.0)


def test_all_padding_row_gives_zeros_and_finite_gradients() -> None:
    scores = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    w = masked_softmax(scores, mask[:, None, :])
    assert torch.equal(w[1], torch.zeros(3, 4))
    assert not torch.isnan(w).any()
    (w * torch.randn_like(w)).sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_large_scores_do_not_overflow() -> None:
    scores = torch.tensor([[[1e4, 1e4 - 1.0, -1e4, 5e3]]])
    w = masked_softmax(scores, torch.tensor([[[True, True, True, False]]]))
    e = math.exp(-1.0)
    torch.testing.assert_close(w, torch.tensor([[[1 / (1 + e), e / (1 + e), 0.0, 0.0]]]))
    # float16 scores are promoted to float32 before the exponent
    w16 = masked_softmax(scores.half(), None)
    assert w16.dtype == torch.float32 and torch.isfinite(w16).all()


def test_hand_computed_1x2x3_example() -> None:
    keys = torch.tensor([[[1.0], [2.0], [3.0]]])  # B=1, T=3, K=1
    queries = torch.tensor([[1.0], [-1.0]])  # C=2
    values = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([[True, True, False]])
    context, weights = label_attention(keys, queries, values, mask)
    a = 1.0 / (1.0 + math.e)  # softmax([1, 2])[0]
    b = 1.0 - a
    torch.testing.assert_close(weights, torch.tensor([[[a, b, 0.0], [b, a, 0.0]]]))
    torch.testing.assert_close(context, torch.tensor([[[a, b], [b, a]]]))
    # per-document queries [B, C, K] give the same result
    context2, weights2 = label_attention(keys, queries[None], values, mask)
    torch.testing.assert_close(weights2, weights)
    torch.testing.assert_close(context2, context)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=4),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_masked_rows_are_distributions(lengths: list[int], scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    t = 7
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    scores = torch.randn(len(lengths), 3, t, generator=g) * scale
    w = masked_softmax(scores, mask[:, None, :])
    assert torch.isfinite(w).all()
    assert torch.all(w[~mask[:, None, :].expand_as(w)] == 0)
    sums = w.sum(-1)
    for i, n in enumerate(lengths):
        expected = torch.ones(3) if n > 0 else torch.zeros(3)
        torch.testing.assert_close(sums[i], expected)


@pytest.mark.parametrize("mode", ["linear", "laat"])
def test_label_attention_module_shapes_and_masking(mode: str) -> None:
    torch.manual_seed(0)
    att = LabelAttention(5, 4, mode=mode, proj_dim=3)
    h = torch.randn(2, 6, 5)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    context, weights = att(h, mask)
    assert context.shape == (2, 4, 5) and weights.shape == (2, 4, 6)
    assert torch.all(weights[1, :, 2:] == 0)
    # context = weights @ hidden over real tokens only
    torch.testing.assert_close(context[1], weights[1, :, :2] @ h[1, :2])
    if mode == "laat":
        assert att.proj.weight.shape == (3, 5)
        assert att.queries.shape == (4, 3)


def test_layer_norm_option_normalises_keys_not_values() -> None:
    torch.manual_seed(0)
    att = LabelAttention(6, 3, mode="linear", layer_norm=True)
    plain = LabelAttention(6, 3, mode="linear", layer_norm=False)
    plain.queries.data.copy_(att.queries.data)
    h = torch.randn(1, 5, 6)
    mask = torch.ones(1, 5, dtype=torch.bool)
    c1, w1 = att(h, mask)
    c10, w10 = att(10.0 * h + 3.0, mask)
    # LayerNorm makes the scores invariant to scaling and shifting the token states ...
    torch.testing.assert_close(w10, w1, atol=1e-4, rtol=1e-4)
    # ... while the context is still a mix of the raw states
    torch.testing.assert_close(c10, 10.0 * c1 + 3.0, atol=1e-3, rtol=1e-4)
    _, wp = plain(h, mask)
    assert not torch.allclose(wp, w1)
    assert isinstance(att.norm, torch.nn.LayerNorm)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown label attention mode"):
        LabelAttention(4, 2, mode="bahdanau")

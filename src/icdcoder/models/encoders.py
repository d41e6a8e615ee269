"""Shared encoder parts of the baseline models: word embeddings, (multi-filter residual) CNNs, a BiLSTM, and
the per-label output layer.

Every encoder takes token states [B, T, D] plus the token mask [B, T] (True = real token) and returns states
[B, T, D'] over the same T positions, so label attention weights map back to `batch.token_ids`. Padding never
leaks into real positions: CNN inputs are zeroed at padded positions before every convolution (which is
exactly what zero padding of the unpadded document gives), and the LSTM's backward direction reads each
row reversed within its length. Hence appending padding to a batch leaves every real position (and every
logit) unchanged in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icdcoder.errors import ConfigError
from icdcoder.models.base import ModelContext


def _pretrained(ctx: ModelContext, embed_dim: int) -> Tensor | None:
    """`ctx.embeddings` as a float32 tensor, checked against the vocabulary and `model.embed_dim`."""
    if ctx.embeddings is None:
        return None
    emb = np.asarray(ctx.embeddings)
    if emb.ndim != 2 or emb.shape[0] != ctx.vocab_size:
        raise ConfigError(
            f"pre-trained embeddings have shape {tuple(emb.shape)}, expected ({ctx.vocab_size}, dim) for the "
            "vocabulary.",
            fix="rebuild the embedding matrix from the same vocabulary.",
        )
    if emb.shape[1] != embed_dim:
        raise ConfigError(
            f"model.embed_dim is {embed_dim} but the pre-trained word vectors have {emb.shape[1]} "
            "dimensions.",
            fix=f"set model.embed_dim: {emb.shape[1]} (or embeddings.dim so that word2vec's dimensions, plus "
            f"GloVe's when embeddings.glove is set, make {embed_dim}).",
        )
    return torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))


class WordEmbedding(nn.Module):
    """Token ids → vectors, initialised from pre-trained word2vec when given; dropout on the output.

    Padded positions always come out as exact zeros (whatever the pad row holds), so downstream CNNs see the
    same zero padding as the unpadded document.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        *,
        pad_id: int = 0,
        pretrained: Tensor | None = None,
        dropout: float = 0.0,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        if pretrained is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(pretrained)
                self.embedding.weight[pad_id].zero_()
        self.embedding.weight.requires_grad_(not freeze)
        self.dropout = nn.Dropout(dropout)
        self.dim = embed_dim

    @classmethod
    def from_context(
        cls, ctx: ModelContext, embed_dim: int, *, dropout: float = 0.0, freeze: bool = False
    ) -> WordEmbedding:
        return cls(
            ctx.vocab_size,
            embed_dim,
            pad_id=ctx.pad_id,
            pretrained=_pretrained(ctx, embed_dim),
            dropout=dropout,
            freeze=freeze,
        )

    def forward(self, token_ids: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.embedding(token_ids)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return self.dropout(x)


class SameConv1d(nn.Module):
    """Channels-first Conv1d whose output has the input's length T for any kernel size.

    Odd kernels pad k//2 on both sides. Even kernels pad k//2 left and k//2 - 1 right: CAML's
    `Conv1d(padding=k//2)` gives T + 1 outputs for even k, and these are exactly its first T.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.pad = (kernel_size // 2, kernel_size - 1 - kernel_size // 2)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C_in, T] (already zero at padded positions) → [B, C_out, T]."""
        return self.conv(F.pad(x, self.pad))


class ConvEncoder(nn.Module):
    """CAML's encoder: one convolution (kernel k, Xavier-initialised) and tanh."""

    def __init__(self, input_dim: int, num_filters: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = SameConv1d(input_dim, num_filters, kernel_size)
        nn.init.xavier_uniform_(self.conv.conv.weight)
        self.output_dim = num_filters

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, T, D], mask [B, T] → [B, T, num_filters], zero at padded positions."""
        m = mask.unsqueeze(1).to(x.dtype)
        h = torch.tanh(self.conv(x.transpose(1, 2) * m)) * m
        return h.transpose(1, 2)


class ResidualBlock(nn.Module):
    """Li & Yu (2020) residual block: conv-BN-tanh-conv-BN plus a 1×1 conv-BN shortcut, tanh, dropout.

    BatchNorm statistics in training include padded positions, as in the authors' code; in eval mode BN is
    a per-position affine map, so masking every convolution's input keeps padding invariance exact.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = SameConv1d(in_channels, out_channels, kernel_size, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = SameConv1d(out_channels, out_channels, kernel_size, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn_shortcut = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        """x [B, C_in, T] (zero at padding), m [B, 1, T] float mask → [B, C_out, T] (zero at padding)."""
        out = torch.tanh(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out * m))
        out = out + self.bn_shortcut(self.shortcut(x))
        return self.dropout(torch.tanh(out)) * m


# Channel widths of the residual stack per number of residual layers (Li & Yu 2020, `conv_dict`); the
# first entry is the embedding size and the last the number of filters.
_RES_WIDTHS: dict[int, list[int]] = {1: [], 2: [100], 3: [150, 100], 4: [200, 150, 100]}


class MultiResCNNEncoder(nn.Module):
    """Multi-filter residual CNN (Li & Yu 2020): for each filter size a tanh "base" convolution keeping the
    embedding width, then `conv_layers` residual blocks; the channels' outputs are concatenated."""

    def __init__(
        self, input_dim: int, filter_sizes: Sequence[int], num_filters: int, conv_layers: int, dropout: float
    ) -> None:
        super().__init__()
        widths = [input_dim, *_RES_WIDTHS[conv_layers], num_filters]
        self.base = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for k in filter_sizes:
            base = SameConv1d(input_dim, input_dim, k)
            nn.init.xavier_uniform_(base.conv.weight)
            self.base.append(base)
            self.blocks.append(
                nn.ModuleList(ResidualBlock(widths[i], widths[i + 1], k, dropout) for i in range(conv_layers))
            )
        self.output_dim = len(filter_sizes) * num_filters

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, T, D], mask [B, T] → [B, T, len(filter_sizes) * num_filters], zero at padded positions."""
        m = mask.unsqueeze(1).to(x.dtype)
        xc = x.transpose(1, 2) * m
        outs = []
        for base, blocks in zip(self.base, self.blocks, strict=True):
            h = torch.tanh(base(xc)) * m
            assert isinstance(blocks, nn.ModuleList)
            for block in blocks:
                h = block(h, m)
            outs.append(h)
        return torch.cat(outs, dim=1).transpose(1, 2)


class BiLSTMEncoder(nn.Module):
    """(Bi)LSTM in which padding never reaches a real position; padded outputs are zero.

    Rows are padded at the end, so the forward direction runs on the padded batch as is, and the backward
    direction runs forward over each row reversed within its length (then un-reversed). This gives the
    outputs of packed sequences (`pack_padded_sequence`) without their CPU cost: autograd through a packed
    LSTM on CPU slices the packed data once per time step and each slice's backward fills and adds a
    full-size gradient, quadratic in the note length (9.5 s vs 0.5 s forward + backward at B=8, T=500,
    256 units, one thread). The parameters are nn.LSTM's own, so saved weights are unchanged.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, T, D], mask [B, T] (a prefix of True per row) → [B, T, output_dim]."""
        lstm = self.lstm
        b, t, _ = x.shape
        pos = torch.arange(t, device=x.device)[None, :]
        length = mask.sum(dim=1, keepdim=True).clamp(min=1)
        rev = torch.where(pos < length, length - 1 - pos, pos)  # reverse each row's real part (an involution)
        h0 = x.new_zeros(1, b, lstm.hidden_size)
        h = x
        for layer in range(lstm.num_layers):
            outs = []
            for suffix in ("", "_reverse")[: 2 if lstm.bidirectional else 1]:
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                if lstm.bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                params = [getattr(lstm, n) for n in names]
                src = h if not suffix else h.gather(1, rev.unsqueeze(-1).expand_as(h))
                out = torch.lstm(src, (h0, h0), params, lstm.bias, 1, 0.0, self.training, False, True)[0]
                outs.append(out if not suffix else out.gather(1, rev.unsqueeze(-1).expand_as(out)))
            h = torch.cat(outs, dim=-1)
            if layer + 1 < lstm.num_layers and lstm.dropout > 0:
                h = F.dropout(h, lstm.dropout, self.training)
        return h * mask.unsqueeze(-1).to(h.dtype)


class LabelwiseLinear(nn.Module):
    """Per-label output layer of CAML / MultiResCNN / LAAT: logit_c = ⟨w_c, v_c⟩ + b_c on label-specific
    document vectors v [B, C, D]. Initialised like `nn.Linear(D, C)` with a Xavier-uniform weight (CAML)."""

    def __init__(self, input_dim: int, n_labels: int) -> None:
        super().__init__()
        ref = nn.Linear(input_dim, n_labels)
        nn.init.xavier_uniform_(ref.weight)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def forward(self, context: Tensor) -> Tensor:
        """context [B, C, D] → logits [B, C]."""
        return torch.einsum("bcd,cd->bc", context, self.weight) + self.bias

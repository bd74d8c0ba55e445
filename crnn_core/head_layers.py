"""Output layers of the heads that are more than a Linear (heads.py builds them).

The softmax head's `PositionsHead`: L positions read from the column sequence by bin means,
the last RNN state, or attention.
"""

from __future__ import annotations

import torch
from torch import nn


def bin_means(seq: torch.Tensor, length: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """T x B x F -> length x B x F: position i averages columns [floor(iT/L), ceil((i+1)T/L)).

    `lengths` (B) gives each sample's own T in a padded batch; without it every sample spans
    the whole sequence. Written with arange and a mask rather than adaptive pooling so that
    ONNX and torch.export keep T dynamic; when T < L, neighbouring positions share columns.
    """
    t = torch.arange(seq.shape[0], device=seq.device)
    i = torch.arange(length, device=seq.device)
    if lengths is None:
        steps = seq.shape[0]
        start = torch.div(i * steps, length, rounding_mode="floor")
        end = torch.div((i + 1) * steps + length - 1, length, rounding_mode="floor")
        mask = ((t[None, :] >= start[:, None]) & (t[None, :] < end[:, None])).to(seq.dtype)
        return torch.einsum("lt,tbf->lbf", mask / mask.sum(1, keepdim=True), seq)
    steps = lengths.to(seq.device)[:, None]  # B x 1
    start = torch.div(i[None, :] * steps, length, rounding_mode="floor")  # B x L
    end = torch.div((i[None, :] + 1) * steps + length - 1, length, rounding_mode="floor")
    mask = ((t[None, None, :] >= start[..., None]) & (t[None, None, :] < end[..., None])).to(seq.dtype)
    return torch.einsum("blt,tbf->lbf", mask / mask.sum(2, keepdim=True), seq)


class PositionsHead(nn.Module):
    """The softmax head: a fixed number L of positions, each classified over the alphabet plus an end symbol (0).

    `mean`: position i reads the i-th of L equal bins of columns (with a BiLSTM below, each
    column already sees the whole line). `last`: the final RNN state summarises the image (as
    Keras' LSTM without return_sequences); for L > 1 a linear layer spreads it over L
    positions. `attention`: a learned query per position weighs the columns (softmax over the
    image's own columns), so position i can find the i-th character wherever it sits. Each
    way, one shared classifier holds a row per class.
    """

    def __init__(self, features: int, num_classes: int, length: int, reduce: str, bidirectional: bool):
        super().__init__()
        self.length = length
        self.reduce = reduce
        self.bidirectional = bidirectional
        self.expand = nn.Linear(features, length * features) if reduce == "last" and length > 1 else None
        # attention: one learned query per position scores every column; the position reads
        # the columns its query picks (softmax over the image's own columns).
        self.queries = nn.Parameter(torch.randn(length, features) / features ** 0.5) if reduce == "attention" else None
        self.classify = nn.Linear(features, num_classes)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths`: each sample's own number of columns in a right-padded training batch."""
        if self.reduce == "mean":
            return self.classify(bin_means(seq, self.length, lengths))
        if self.queries is not None:
            scores = torch.einsum("lf,tbf->blt", self.queries, seq) / seq.shape[2] ** 0.5
            if lengths is not None:  # batch padding past an image's own columns is not looked at
                t = torch.arange(seq.shape[0], device=seq.device)
                scores = scores.masked_fill(t[None, None, :] >= lengths.to(seq.device)[:, None, None], float("-inf"))
            return self.classify(torch.einsum("blt,tbf->lbf", scores.softmax(-1), seq))
        # The forward direction ends at the sample's last real column (past it lies batch
        # padding, which a one-way LSTM would have to carry the character across), the
        # backward direction at the first column.
        if lengths is None:
            last = seq[-1]
        else:
            last = seq[lengths.to(seq.device) - 1, torch.arange(seq.shape[1], device=seq.device)]
        if self.bidirectional:
            half = seq.shape[2] // 2
            summary = torch.cat([last[:, :half], seq[0, :, half:]], -1)
        else:
            summary = last
        if self.expand is None:
            return self.classify(summary).unsqueeze(0)
        positions = self.expand(summary).view(summary.shape[0], self.length, -1).transpose(0, 1)
        return self.classify(positions)

"""The CRNN: conv backbone -> columns as a sequence -> (Bi)LSTM -> CTC or fixed-length softmax head."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .heads import head_for


def build_backbone(config: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = config.channels
    for spec in config.backbone:
        if spec.kind == "pool":
            layers.append(nn.MaxPool2d(spec.kernel, spec.stride, spec.padding))
            continue
        layers.append(nn.Conv2d(channels, spec.out, spec.kernel, spec.stride, spec.padding, bias=not spec.batch_norm))
        if spec.batch_norm:
            layers.append(nn.BatchNorm2d(spec.out))
        layers.append(nn.ReLU(inplace=True))
        channels = spec.out
    return nn.Sequential(*layers)


class CRNN(nn.Module):
    """Input B x C x H x W in [-1, 1]; output T x B x (K+1) log-probabilities, class 0 = blank.

    With the softmax head the output is L x B x (K+1) instead, class 0 = end of text.

    The feature map's columns are the time steps; when the backbone leaves a height above 1,
    the rows are stacked into each column's feature vector rather than pooled away.
    """

    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        # oneDNN's convolutions run ~1.4x faster in NHWC (channels-last) on this CPU, forward
        # and backward (149 -> 214 samples/s for crnn-small at batch 16); the math is unchanged.
        self.backbone = build_backbone(config).to(memory_format=torch.channels_last)
        features = config.feature_channels() * config.feature_height()
        if config.rnn_layers > 0:
            self.rnn: nn.LSTM | None = nn.LSTM(
                features, config.rnn_hidden, num_layers=config.rnn_layers, bidirectional=config.rnn_bidirectional,
                dropout=config.rnn_dropout if config.rnn_layers > 1 else 0.0)
            features = (2 if config.rnn_bidirectional else 1) * config.rnn_hidden
        else:
            self.rnn = None
        # Zeroes a share of each step's features before the output layer in training; its rate is a
        # training setting (train.py sets it), and it has no weights, so model files are unchanged.
        self.dropout = nn.Dropout(0.0)
        # heads.py decides what the output layer is (CTC: a Linear; softmax: L positions)
        self.head_kind = head_for(config)
        self.head = self.head_kind.build(config, features, num_classes,
                                         config.rnn_bidirectional and self.rnn is not None)

    @property
    def classifier(self) -> nn.Linear:
        """The layer with one output row per class (0 = blank or end, i = alphabet[i-1])."""
        return self.get_submodule(self.head_kind.classifier_keys[0].rsplit(".", 1)[0])

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths` (B, optional): each image's own time steps when the batch is right-padded
        to a common width; the softmax head then reads each image's columns only. Inference
        batches hold equal widths and need none."""
        fmap = self.backbone(images.contiguous(memory_format=torch.channels_last))  # B x C x H' x T
        b, c, h, t = fmap.shape
        seq = fmap.permute(3, 0, 1, 2).reshape(t, b, c * h)
        if self.rnn is not None:
            seq, _ = self.rnn(seq)
        seq = self.dropout(seq)
        out = self.head(seq, lengths) if self.head_kind.reads_lengths else self.head(seq)
        return out.float().log_softmax(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_breakdown(model: CRNN) -> dict[str, int]:
    return {
        "backbone": count_parameters(model.backbone),
        "rnn": count_parameters(model.rnn) if model.rnn is not None else 0,
        "head": count_parameters(model.head),
        "total": count_parameters(model),
    }

"""Forward FLOPs per sample of a CRNN, counted analytically from its layer shapes.

    python bench/flops.py [--width 100] [--classes 37]

How we count: 2 FLOPs per multiply-accumulate (MAC), for the layers that do matrix work:
- Conv2d: C_out x H_out x W_out x (C_in / groups) x k_h x k_w MACs (bias adds ignored);
- LSTM: per time step, direction and layer, 4 gates x hidden x (input + hidden) MACs
  (the input and recurrent matrix products; gate nonlinearities and the cell update ignored);
- Linear: in x out MACs per row it is applied to (per time step for the CTC head).
Batch norm, ReLU, pooling, log-softmax and CTC are elementwise and left out (a few % at most).
Training is taken as 3x forward (backward costs about twice the forward: gradients for both the
inputs and the weights). The layer shapes come from running the model once on a zero image
with hooks that record each layer's input and output sizes; the arithmetic is ours.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


def forward_flops(model: nn.Module, height: int = 32, width: int = 100, channels: int = 1) -> dict[str, int]:
    """FLOPs (2 per MAC) of one forward pass over one channels x height x width image, by part."""
    counts = {"conv": 0, "lstm": 0, "linear": 0}

    def conv_hook(module: nn.Conv2d, inputs, output):
        _, c_out, h_out, w_out = output.shape
        k_h, k_w = module.kernel_size
        counts["conv"] += 2 * c_out * h_out * w_out * (module.in_channels // module.groups) * k_h * k_w

    def lstm_hook(module: nn.LSTM, inputs, output):
        steps = inputs[0].shape[0]  # T x B x F (batch_first=False, batch 1)
        directions = 2 if module.bidirectional else 1
        size_in = module.input_size
        for _layer in range(module.num_layers):
            counts["lstm"] += 2 * steps * directions * 4 * module.hidden_size * (size_in + module.hidden_size)
            size_in = module.hidden_size * directions

    def linear_hook(module: nn.Linear, inputs, output):
        rows = inputs[0].numel() // module.in_features
        counts["linear"] += 2 * rows * module.in_features * module.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.LSTM):
            hooks.append(m.register_forward_hook(lstm_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, channels, height, width))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    counts["total"] = sum(counts.values())
    return counts


def model_flops(name: str, classes: int = 37, width: int = 100) -> dict[str, int]:
    from crnn_core.config import load_model_config
    from crnn_core.model import CRNN

    config = load_model_config(name)
    return forward_flops(CRNN(config, classes), config.height, width, config.channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--classes", type=int, default=37, help="output classes incl. blank")
    args = parser.parse_args()
    for name in ("crnn-tiny", "crnn-small", "crnn-paper"):
        c = model_flops(name, args.classes, args.width)
        print(f"{name:11s} forward {c['total'] / 1e6:9.1f} MFLOP per 32x{args.width} image "
              f"(conv {c['conv'] / 1e6:.1f}, lstm {c['lstm'] / 1e6:.1f}, linear {c['linear'] / 1e6:.1f}); "
              f"training ~{3 * c['total'] / 1e6:.1f} MFLOP")


if __name__ == "__main__":
    main()

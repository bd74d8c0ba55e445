"""Weight averaging (train setting `ema`): the weights that are validated, kept as best.pt and shipped.

With a decay d in (0, 1), after every optimiser step each averaged parameter becomes
d * averaged + (1 - d) * current (the first step copies), and the buffers (batch-norm
statistics) are copied from the trained model as they are, which needs no extra pass over
the data (averaging them too is the other common choice; measurements may pick it later).
The averaged copy is never trained; it is meant to smooth the epoch-to-epoch swings of a
model that fits a small training set fast (issue 15).

torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn does exactly this
(`use_buffers=False` copies the buffers at each update), in one fused lerp per device and
dtype, and its state dict (the copy's weights and the update count) is what a checkpoint
needs to continue the average; a hand-written loop would repeat it. The decay warms up
(`warmed_decay`), so short runs average over their last steps, not their first. With decay 0
`RawWeights` stands in: the trained model itself, no copy, nothing done per step,
so a run without averaging is exactly what it was before the setting existed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class RawWeights:
    """No averaging: the model's own weights are the ones validated and saved."""

    def __init__(self, model: nn.Module):
        self.model = model

    def update(self, model: nn.Module) -> None:
        pass

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones: min(decay, (1 + n) / (10 + n)).

    A fixed 0.999 would keep 90% of the first step's weights after 100 steps, so a short run
    (a tiny data set, a two-minute budget) would validate and ship nearly untrained weights.
    This warm-up is the one TensorFlow's ExponentialMovingAverage applies with num_updates:
    an average over roughly the last n/10 steps early on, reaching `decay` after about 9,000
    updates for 0.999.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def warmed_ema(decay: float):
    """AveragedModel's multi_avg_fn: get_ema_multi_avg_fn's one fused lerp, with `warmed_decay`."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        get_ema_multi_avg_fn(warmed_decay(decay, int(updates)))(averaged, current, updates)

    return update


class EmaWeights:
    """An exponential moving average of a model's parameters, with a copy of its buffers."""

    def __init__(self, model: nn.Module, decay: float):
        self.averaged = AveragedModel(model, multi_avg_fn=warmed_ema(decay), use_buffers=False)

    @property
    def model(self) -> nn.Module:
        """The averaged network, the same class as the trained one (save_model and validation take it)."""
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        """Fold the weights after an optimiser step into the average."""
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()  # the copy's weights ("module.*") and the update count

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        # A checkpoint without an average (none written yet) starts it at the next step.
        if state is not None:
            self.averaged.load_state_dict(state)


def weight_average(model: nn.Module, decay: float) -> RawWeights | EmaWeights:
    """The averaging a run's `ema` setting asks for (0: none)."""
    return EmaWeights(model, decay) if decay else RawWeights(model)

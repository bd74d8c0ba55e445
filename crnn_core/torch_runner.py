"""A torch module as a runner (runners.py): numpy images in, numpy log-probs out.

Its own module so that backends.py (int8) can build one without importing the decision
table that chooses between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .config import ModelConfig

if TYPE_CHECKING:
    import torch

    from .runners import Runner


class TorchRunner:
    """A torch module as a runner. It reads in eval mode and puts the module back in the mode
    it found it in (training validates with the model it is training)."""

    def __init__(self, module, device: torch.device | None = None):
        self.module = module
        self.config: ModelConfig = module.config
        self.device = device if device is not None else next(module.parameters()).device

    def run(self, images: np.ndarray) -> np.ndarray:
        import torch

        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                return self.module(torch.from_numpy(images).to(self.device)).float().cpu().numpy()
        finally:
            self.module.train(was_training)


def as_runner(model, device: torch.device | None = None) -> Runner:
    """A runner as is; a torch module (training, calibration) wrapped in a TorchRunner."""
    return model if hasattr(model, "run") else TorchRunner(model, device)

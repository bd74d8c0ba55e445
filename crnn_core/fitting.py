"""The input settings a new run's training data decide, for a bundled architecture (issue 15).

`fit_input` reads up to 500 image headers and their labels (no decoding) and applies the two
rules of datastats.py: the input height (`fitted_height`) and the stretch across for text too
dense for the CTC steps (`fitted_width_scale`). Training (runprep.prepare_data) and
`crnn data check` call it, so both read a dataset the same way; torch-free, like data check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .config import ModelConfig, with_height, with_width_scale
from .data import Dataset, indexed_header_sizes
from .datastats import fitted_height, fitted_width_scale
from .heads import ctc_needed_steps, head_for
from .modelfile import preprocess_for


def fit_input(config: ModelConfig, train_set: Dataset, fit_height: bool, fit_width: bool,
              emit: Callable[[str, dict[str, Any]], None]) -> tuple[ModelConfig, dict[str, Any]]:
    """The architecture at the height and width scale its training images' own sizes and labels
    ask for (datastats.fitted_height, fitted_width_scale), and those decisions as config.yaml
    records them. Only the sizes in up to 500 image headers are read, before any decoding."""
    picked = indexed_header_sizes([s.path for s in train_set.samples])
    sizes = np.asarray([size for _, size in picked], dtype=np.float64).reshape(-1, 2)
    fitted: dict[str, Any] = {"looked_at": len(sizes)}
    if fit_height:
        config = _fit_height(config, sizes, fitted)
    if fit_width and head_for(config).aligns_columns:
        config = _fit_width_scale(config, sizes, [train_set.samples[i].text for i, _ in picked], fitted)
    emit("fitted", fitted)
    return config, fitted


def _fit_height(config: ModelConfig, sizes: np.ndarray, fitted: dict[str, Any]) -> ModelConfig:
    median = float(np.median(sizes[:, 1])) if len(sizes) else None
    aspect = float(np.median(sizes[:, 0] / np.maximum(sizes[:, 1], 1.0))) if len(sizes) else None
    height = fitted_height(median, config.height, aspect)
    fitted.update({"height": height, "architecture_height": config.height, "median_height": median,
                   "median_aspect": None if aspect is None else round(aspect, 3),
                   "long_images_cap": height < fitted_height(median, config.height)})  # what the width took off
    return with_height(config, height) if height != config.height else config


def _fit_width_scale(config: ModelConfig, sizes: np.ndarray, texts: list[str], fitted: dict[str, Any]) -> ModelConfig:
    """Stretched across where the labels need more than half their images' CTC steps (at the height just fitted)."""
    preprocess = preprocess_for(config)
    steps = [config.time_steps(preprocess.padded_width(preprocess.target_width(int(w), int(h)))) for w, h in sizes]
    fills = [ctc_needed_steps(list(text)) / max(step, 1) for text, step in zip(texts, steps)]
    p90 = float(np.percentile(fills, 90)) if fills else None
    scale = fitted_width_scale(p90)
    fitted.update({"width_scale": scale, "ctc_fill_p90_unstretched": None if p90 is None else round(p90, 3)})
    return with_width_scale(config, scale) if scale != config.width_scale else config

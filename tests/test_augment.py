"""Augmentation levels keep the image's height and type; heavy adds its own transforms."""

import numpy as np
import pytest

from PIL import Image

from crnn_core.augment import LEVELS, augment, perspective
from crnn_core.config import ConfigError, TrainConfig


@pytest.mark.parametrize("channels", [1, 3])
def test_every_level_keeps_height_and_dtype(channels):
    rng = np.random.default_rng(0)
    shape = (32, 120) if channels == 1 else (32, 120, 3)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    for level in LEVELS:
        for _ in range(20):
            out = augment(image, rng, level, max_width=140)
            assert out.dtype == np.uint8 and out.shape[0] == 32 and out.ndim == image.ndim and out.shape[1] <= 140
    assert augment(image, rng, "none") is image


def test_heavy_differs_from_default_with_the_same_random_stream():
    image = np.full((32, 100), 230, dtype=np.uint8)
    image[8:24, 20:80] = 20
    differs = sum(not np.array_equal(augment(image, np.random.default_rng(s), "default"),
                                     augment(image, np.random.default_rng(s), "heavy")) for s in range(10))
    assert differs == 10
    assert TrainConfig.from_dict({"augment": "heavy"}).augment == "heavy"
    with pytest.raises(ConfigError, match="none, light, default or heavy"):
        TrainConfig.from_dict({"augment": "extreme"})


def test_perspective_without_offsets_is_the_identity_and_small_offsets_stay_close():
    # A wrong corner order in PIL's QUAD turns the crop into a smear; this guards against it.
    rng = np.random.default_rng(0)
    image = np.full((32, 100), 230, dtype=np.uint8)
    image[8:24, 10:30] = 20
    image[8:24, 60:70] = 20
    pil = Image.fromarray(image)
    assert np.abs(np.asarray(perspective(pil, np.zeros(8), 230), dtype=int) - image).mean() < 1.0
    moved = np.asarray(perspective(pil, rng.uniform(-1.2, 1.2, 8), 230), dtype=int)
    assert np.abs(moved - image).mean() < 15.0

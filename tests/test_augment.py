"""Batch augmentation: shapes, widths, background padding, determinism, and the geometry."""

import numpy as np
import pytest
import torch
from PIL import Image

from crnn_core.augment import LEVELS, apply_params, augment_batch, draw_params, identity_params, perspective
from crnn_core.config import ConfigError, TrainConfig, check_train_values
from crnn_core.data import to_tensor_batch


def _text_like(rng, width, channels=1, height=32):
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = np.full(shape, 230, dtype=np.uint8)
    for x in range(4, width - 8, 14):  # dark strokes on light paper
        image[8:24, x:x + 5] = rng.integers(0, 60)
    return image


@pytest.mark.parametrize("channels", [1, 3])
def test_every_level_gives_a_normalised_batch_with_each_images_width(channels):
    rng = np.random.default_rng(0)
    arrays = [_text_like(rng, w, channels) for w in (40, 97, 120, 133)]
    for level in LEVELS:
        for _ in range(10):
            batch, widths = augment_batch(arrays, rng, level, max_width=140, width_multiple=16)
            assert batch.dtype == torch.float32 and batch.shape[:3] == (4, channels, 32)
            assert batch.shape[3] % 16 == 0 and batch.shape[3] >= max(widths)
            assert all(4 <= w <= 140 for w in widths)
            assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    plain, widths = augment_batch(arrays, rng, "none", width_multiple=16)
    expected, expected_widths = to_tensor_batch(arrays, 16)
    assert torch.equal(plain, expected) and widths == expected_widths


def test_identity_choices_reproduce_the_images_exactly():
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (32, w), dtype=np.uint8) for w in (50, 64, 71)]
    batch, widths = apply_params(arrays, identity_params([50, 64, 71]), width_multiple=8)
    assert widths == [50, 64, 71] and batch.shape == (3, 1, 32, 72)
    pixels = ((batch + 1.0) * 127.5).round().to(torch.int64)
    for i, a in enumerate(arrays):
        assert torch.equal(pixels[i, 0, :, : a.shape[1]], torch.from_numpy(a.astype(np.int64)))


def test_padding_is_each_images_own_background():
    image = np.full((32, 40), 200, dtype=np.uint8)
    image[10:20, 5:30] = 10
    dark = 255 - image
    params = identity_params([40, 40])
    params["out_w"] = np.array([40, 24])  # the second one squeezed narrower
    batch, widths = apply_params([image, dark], params, width_multiple=16)
    pixels = (batch + 1.0) * 127.5
    assert widths == [40, 24] and batch.shape[-1] == 48
    assert torch.allclose(pixels[0, 0, :, 40:], torch.tensor(200.0), atol=0.01)
    assert torch.allclose(pixels[1, 0, :, 24:], torch.tensor(55.0), atol=0.01)


def test_stretch_and_shift_move_content_where_expected():
    image = np.full((32, 60), 255, dtype=np.uint8)
    image[:, 20:30] = 0  # a dark bar from x = 20 to 30
    params = identity_params([60])
    params["out_w"] = np.array([120])  # twice as wide: the bar now spans 40..60
    batch, _ = apply_params([image], params)
    dark = torch.nonzero(((batch[0, 0] + 1.0) * 127.5).mean(dim=0) < 128).flatten()
    assert int(dark.min()) == 40 and int(dark.max()) == 59
    params = identity_params([60])
    params["dx"] = np.array([-5.0])  # the output samples 5 px to the left: content moves right
    batch, _ = apply_params([image], params)
    dark = torch.nonzero(((batch[0, 0] + 1.0) * 127.5).mean(dim=0) < 128).flatten()
    assert int(dark.min()) == 25 and int(dark.max()) == 34


def test_the_same_random_stream_gives_the_same_batch():
    arrays = [_text_like(np.random.default_rng(2), w) for w in (60, 80)]
    first = augment_batch(arrays, np.random.default_rng(7), "medium", 200, 16)
    again = augment_batch(arrays, np.random.default_rng(7), "medium", 200, 16)
    other = augment_batch(arrays, np.random.default_rng(8), "medium", 200, 16)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not (first[0].shape == other[0].shape and torch.equal(first[0], other[0]))


def test_choices_follow_the_level():
    rng = np.random.default_rng(3)
    light = draw_params([100] * 4000, 32, rng, "light")
    strong = draw_params([100] * 4000, 32, rng, "heavy")
    assert np.abs(light["angle"]).max() <= np.deg2rad(1.5) + 1e-9
    assert np.abs(strong["angle"]).max() > np.deg2rad(1.5)
    assert 0.7 < np.mean(light["angle"] != 0) < 0.9  # 80% of images are tilted
    assert np.mean(strong["inverted"]) > np.mean(light["inverted"])


def test_heavy_differs_from_default_with_the_same_random_stream():
    image = np.full((32, 100), 230, dtype=np.uint8)
    image[8:24, 20:80] = 20
    differs = 0
    for s in range(10):
        a, _ = augment_batch([image], np.random.default_rng(s), "medium")
        b, _ = augment_batch([image], np.random.default_rng(s), "heavy")
        differs += not (a.shape == b.shape and torch.equal(a, b))
    assert differs == 10
    assert TrainConfig.from_dict({"augment": "heavy"}).augment == "heavy"
    with pytest.raises(ConfigError, match="none, light, medium or heavy"):
        TrainConfig.from_dict({"augment": "extreme"})


def test_light_is_the_default_and_the_old_name_default_reads_as_medium():
    # config files and checkpoints written before the rename say augment: default
    assert TrainConfig().augment == "light"
    assert TrainConfig.from_dict({"augment": "default"}).augment == "medium"
    assert TrainConfig.from_dict({"augment": "medium"}).augment == "medium"
    assert check_train_values({"augment": "default"}, "flags", flags=True) == {"augment": "medium"}


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


def test_elastic_warps_keep_the_rest_of_the_random_stream():
    # Without the warp the draws are what they always were (resumed runs and old results hold);
    # with it, every other choice is the same and the warp's own draws come after them.
    plain = draw_params([80, 120], 32, np.random.default_rng(5), "medium")
    warped = draw_params([80, 120], 32, np.random.default_rng(5), "medium", elastic=0.05)
    assert "elastic" not in plain
    for key, value in plain.items():
        assert np.array_equal(value, warped[key]), key
    assert set(warped["elastic"]) <= {0.0, 0.05 * 32}  # px, for 80% of images
    assert draw_params([80], 32, np.random.default_rng(5), "light", elastic=0.05)["elastic"].max() <= 0.05 * 16


def test_elastic_warp_is_smooth_local_and_deterministic():
    image = np.full((32, 96), 230, dtype=np.uint8)
    image[:, 40:44] = 10  # one vertical stroke
    params = identity_params([96])
    params["elastic"], params["elastic_seed"] = np.array([0.05 * 32]), np.array([11])
    first, _ = apply_params([image], params)
    again, _ = apply_params([image], params)
    assert torch.equal(first, again)
    plain, _ = apply_params([image], identity_params([96]))
    assert not torch.equal(first, plain)
    # The stroke bends but stays a stroke: in every row its centre is within a few px of x = 41.5.
    ink = (230.0 - (first[0, 0] + 1.0) * 127.5).clamp(min=0)
    centre = (ink * torch.arange(96.0)).sum(dim=1) / ink.sum(dim=1)
    assert float((centre - 41.5).abs().max()) <= 6
    assert float(centre.max() - centre.min()) >= 0.5  # and it does bend
    # From one row to the next it moves by well under a pixel: a warp of strokes, not noise.
    assert float((centre[1:] - centre[:-1]).abs().max()) <= 1.0
    params["elastic"] = np.array([0.0])
    unwarped, _ = apply_params([image], params)
    assert torch.equal(unwarped, plain)


def test_elastic_setting_is_checked():
    assert TrainConfig().elastic == 0.0
    assert TrainConfig.from_dict({"elastic": 0.05}).elastic == 0.05
    with pytest.raises(ConfigError, match="elastic"):
        TrainConfig.from_dict({"elastic": 1.5})

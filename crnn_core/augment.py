"""On-the-fly augmentation of cached uint8 images during training (never in eval or predict).

Each transform mimics a way real crops differ from the training set: a slightly different
crop box or aspect ratio, tilt and slant, contrast, polarity (light text on dark), blur and
sensor noise. It runs on the small, already-resized arrays, so it costs a fraction of a
training step.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

LEVELS = ("none", "light", "default", "heavy")
_STRENGTH = {"none": 0.0, "light": 0.5, "default": 1.0, "heavy": 1.5}


def augment(image: np.ndarray, rng: np.random.Generator, level: str = "default",
            max_width: int | None = None) -> np.ndarray:
    """A randomly perturbed copy of an H x W (or H x W x 3) uint8 image; the height is kept."""
    s = _STRENGTH[level]
    if s == 0.0:
        return image
    height, width = image.shape[:2]
    pil = Image.fromarray(image)
    fill = int(np.median(image[:, [0, -1]])) if image.ndim == 2 else tuple(
        int(v) for v in np.median(image[:, [0, -1]].reshape(-1, 3), axis=0))
    if rng.random() < 0.8:
        # Tilt and slant, plus a crop box that is a little too tight or too loose.
        angle = np.deg2rad(rng.uniform(-3, 3) * s)
        shear = rng.uniform(-0.3, 0.3) * s
        zoom = 1.0 + rng.uniform(-0.08, 0.08) * s
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        cx, cy = width / 2, height / 2
        a, b = cos, sin + shear
        d, e = -sin, cos
        dx = rng.uniform(-0.03, 0.03) * width * s
        dy = rng.uniform(-0.06, 0.06) * height * s
        c = cx - a * cx - b * cy + dx
        f = cy - d * cx - e * cy + dy
        pil = pil.transform(pil.size, Image.Transform.AFFINE, (a, b, c, d, e, f),
                            resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if rng.random() < 0.5:
        new_width = int(round(width * (1.0 + rng.uniform(-0.2, 0.2) * s)))
        new_width = max(4, min(new_width, max_width or new_width))
        pil = pil.resize((new_width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.2 * s:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if level == "heavy":
        pil = _heavy_extras(pil, rng, fill)
    out = np.asarray(pil, dtype=np.float32)
    if rng.random() < 0.8:
        contrast = 1.0 + rng.uniform(-0.4, 0.2) * s
        out = (out - out.mean()) * contrast + out.mean() + rng.uniform(-25, 25) * s
    if rng.random() < 0.15 * s:
        out = 255.0 - out
    if rng.random() < 0.4 * s:
        out = out + rng.normal(0.0, rng.uniform(2, 10), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _heavy_extras(pil: Image.Image, rng: np.random.Generator, fill) -> Image.Image:
    """`heavy` only: perspective, thicker or thinner strokes, and a random erased patch."""
    width, height = pil.size
    if rng.random() < 0.4:
        # A crop photographed a little off-axis: move each corner by up to 4% of the height.
        pil = perspective(pil, rng.uniform(-0.04, 0.04, 8) * height, fill)
    if rng.random() < 0.25:
        # Min/max filters thicken or thin dark strokes (ink spread, a bolder or lighter font).
        pil = pil.filter(ImageFilter.MinFilter(3) if rng.random() < 0.5 else ImageFilter.MaxFilter(3))
    if rng.random() < 0.25:
        # Random erasing: a narrow patch of background colour, as glare or a smudge would leave.
        out = np.array(pil)
        w = max(1, int(width * rng.uniform(0.02, 0.08)))
        h = max(1, int(height * rng.uniform(0.2, 0.6)))
        x, y = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        out[y:y + h, x:x + w] = fill
        pil = Image.fromarray(out)
    return pil


def perspective(pil: Image.Image, offsets, fill) -> Image.Image:
    """Warp so that the output's corners sample the input's corners moved by `offsets` (8 px values)."""
    width, height = pil.size
    # PIL's QUAD wants the source corners as upper-left, lower-left, lower-right, upper-right.
    corners = [(0, 0), (0, height), (width, height), (width, 0)]
    quad = tuple(c + float(o) for xy, pair in zip(corners, np.reshape(offsets, (4, 2))) for c, o in zip(xy, pair))
    return pil.transform(pil.size, Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR, fillcolor=fill)

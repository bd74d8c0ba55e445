"""On-the-fly augmentation of cached uint8 images during training (never in eval or predict).

Each transform mimics a way real crops differ from the training set: a slightly different
crop box or aspect ratio, tilt and slant, contrast, polarity (light text on dark), blur and
sensor noise.

It works on a whole batch at once with a few tensor operations (one `grid_sample` for every
geometric change, one grouped convolution for blur), so its cost does not grow with Python
work per image: per-image Pillow calls cost ~0.2 ms an image, a fifth of crnn-tiny's whole
training step (docs/performance.md). All random numbers come from the numpy generator it is
given, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from .choices import AUGMENT_LEVELS as LEVELS
from .choices import DEFAULT_AUGMENT

_STRENGTH = dict(zip(LEVELS, (0.0, 0.5, 1.0, 1.5)))  # scales every perturbation's range
_BLUR_RADIUS = 3  # kernel taps each side; enough for the largest sigma drawn (1.0)


def augment_batch(arrays: Sequence[np.ndarray], rng: np.random.Generator, level: str = DEFAULT_AUGMENT,
                  max_width: int | None = None, width_multiple: int = 1, elastic: float = 0.0):
    """Augment uint8 images of one height into a normalised float batch B x C x H x W.

    Returns the batch and each image's width after augmentation (the stretch changes it);
    the batch is as wide as the widest, rounded up to `width_multiple`, and narrower images
    continue as their own background colour, as `to_tensor_batch` pads them.
    """

    from .data import to_tensor_batch

    s = _STRENGTH[level]
    if s == 0.0:
        return to_tensor_batch(arrays, width_multiple)
    if level == "heavy":
        arrays = [_heavy_extras(a, rng) for a in arrays]
    params = draw_params([a.shape[1] for a in arrays], arrays[0].shape[0], rng, level, max_width, elastic)
    return apply_params(arrays, params, width_multiple)


def draw_params(widths: Sequence[int], height: int, rng: np.random.Generator, level: str = DEFAULT_AUGMENT,
                max_width: int | None = None, elastic: float = 0.0) -> dict[str, np.ndarray]:
    """The random choices for a batch of images of these widths, one array entry per image.

    `elastic` > 0 adds a smooth local warp (see `_elastic_field`) of that size as a share of the
    height; its draws come after all others, so that without it the stream is what it always was.
    """
    s = _STRENGTH[level]
    n = len(widths)
    in_w = np.asarray(widths, dtype=np.float64)
    # Tilt and slant, plus a crop box that is a little too tight or too loose (80% of images).
    tilted = rng.random(n) < 0.8
    angle = np.deg2rad(rng.uniform(-3, 3, n) * s) * tilted
    shear = rng.uniform(-0.3, 0.3, n) * s * tilted
    zoom = 1.0 + rng.uniform(-0.08, 0.08, n) * s * tilted
    dx = rng.uniform(-0.03, 0.03, n) * in_w * s * tilted
    dy = rng.uniform(-0.06, 0.06, n) * height * s * tilted
    # Wider or narrower type (half the images).
    stretch = np.where(rng.random(n) < 0.5, 1.0 + rng.uniform(-0.2, 0.2, n) * s, 1.0)
    out_w = np.maximum(4, np.round(in_w * stretch)).astype(np.int64)
    if max_width:
        out_w = np.minimum(out_w, max_width)
    blur = np.where(rng.random(n) < 0.2 * s, rng.uniform(0.3, 1.0, n), 0.0)
    lit = rng.random(n) < 0.8
    contrast = np.where(lit, 1.0 + rng.uniform(-0.4, 0.2, n) * s, 1.0)
    brightness = np.where(lit, rng.uniform(-25, 25, n) * s, 0.0)
    inverted = rng.random(n) < 0.15 * s
    noise = np.where(rng.random(n) < 0.4 * s, rng.uniform(2, 10, n), 0.0)
    params = {"angle": angle, "shear": shear, "zoom": zoom, "dx": dx, "dy": dy, "out_w": out_w, "blur": blur,
              "contrast": contrast, "brightness": brightness, "inverted": inverted, "noise": noise,
              "noise_seed": np.array([rng.integers(2**62)])}
    if elastic > 0:
        params["elastic"] = np.where(rng.random(n) < 0.8, elastic * s * height, 0.0)  # px of displacement
        params["elastic_seed"] = np.array([rng.integers(2**62)])
    return params


def identity_params(widths: Sequence[int]) -> dict[str, np.ndarray]:
    """Choices that change nothing (for tests and for checking the geometry)."""
    n = len(widths)
    zeros = np.zeros(n)
    return {"angle": zeros, "shear": zeros, "zoom": np.ones(n), "dx": zeros, "dy": zeros,
            "out_w": np.asarray(widths, dtype=np.int64), "blur": zeros, "contrast": np.ones(n), "brightness": zeros,
            "inverted": np.zeros(n, dtype=bool), "noise": zeros, "noise_seed": np.array([0])}


def apply_params(arrays: Sequence[np.ndarray], p: dict[str, np.ndarray], width_multiple: int = 1):
    """`augment_batch` with the random choices already made."""
    import torch
    import torch.nn.functional as F

    n, height = len(arrays), arrays[0].shape[0]
    channels = 1 if arrays[0].ndim == 2 else arrays[0].shape[2]
    in_w = np.array([a.shape[1] for a in arrays], dtype=np.float64)
    angle, shear, zoom, dx, dy, out_w = p["angle"], p["shear"], p["zoom"], p["dx"], p["dy"], p["out_w"]

    # Source canvas: each image, then its background colour (the median of its first and last
    # columns) to the right; the background is subtracted so grid_sample's zero padding is it too.
    widest_in = int(in_w.max())
    canvas = np.empty((n, height, widest_in, channels), dtype=np.uint8)
    edges = np.stack([np.concatenate([a[:, :1], a[:, -1:]], axis=0).reshape(2 * height, channels) for a in arrays])
    fill = np.round(np.median(edges, axis=1))  # n x C
    for i, a in enumerate(arrays):
        w = a.shape[1]
        canvas[i, :, :w] = a.reshape(height, w, channels)
        canvas[i, :, w:] = fill[i].astype(np.uint8)
    source = torch.from_numpy(canvas).permute(0, 3, 1, 2).float()
    fill_t = torch.from_numpy(fill.astype(np.float32)).view(n, channels, 1, 1)
    source -= fill_t

    # One sampling grid per image: output pixel -> undo the stretch -> the affine map of the
    # tilt (PIL's convention: output coordinates to input coordinates, about the centre).
    width = int(-(-int(out_w.max()) // width_multiple) * width_multiple)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    a, b, d, e = cos, sin + shear, -sin, cos
    cx, cy = in_w / 2, height / 2
    c = cx - a * cx - b * cy + dx
    f = cy - d * cx - e * cy + dy
    coef = torch.from_numpy(np.stack([a, b, c, d, e, f, in_w / out_w]).astype(np.float32))
    xs = (torch.arange(width, dtype=torch.float32) + 0.5).view(1, 1, width) * coef[6].view(n, 1, 1)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5).view(1, height, 1)
    u = coef[0].view(n, 1, 1) * xs + coef[1].view(n, 1, 1) * ys + coef[2].view(n, 1, 1)
    v = coef[3].view(n, 1, 1) * xs + coef[4].view(n, 1, 1) * ys + coef[5].view(n, 1, 1)
    if "elastic" in p and p["elastic"].any():
        field = _elastic_field(p["elastic"], int(p["elastic_seed"][0]), height, width)
        u, v = u + field[:, 0], v + field[:, 1]
    grid = torch.stack([u * (2.0 / widest_in) - 1.0, v * (2.0 / height) - 1.0], dim=-1)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Past each image's own width the batch is its background, as in an unaugmented batch.
    inside = torch.arange(width).view(1, 1, 1, width) < torch.from_numpy(out_w).view(n, 1, 1, 1)
    out = out * inside + fill_t

    if p["blur"].any():
        out = _gaussian_blur(out, p["blur"])
    # Contrast about the image's own mean, brightness, polarity, sensor noise.
    count = torch.from_numpy(out_w.astype(np.float32)) * (height * channels)
    mean = ((out * inside).sum(dim=(1, 2, 3)) / count).view(n, 1, 1, 1)
    out = (out - mean) * torch.from_numpy(p["contrast"].astype(np.float32)).view(n, 1, 1, 1) + mean \
        + torch.from_numpy(p["brightness"].astype(np.float32)).view(n, 1, 1, 1)
    if p["inverted"].any():
        out = torch.where(torch.from_numpy(p["inverted"]).view(n, 1, 1, 1), 255.0 - out, out)
    if p["noise"].any():
        generator = torch.Generator().manual_seed(int(p["noise_seed"][0]))
        out = out + torch.randn(out.shape, generator=generator) * torch.from_numpy(
            p["noise"].astype(np.float32)).view(n, 1, 1, 1)
    out = out.clamp_(0.0, 255.0).div_(127.5).sub_(1.0)
    return out.contiguous(), [int(w) for w in out_w]


def _elastic_field(amplitudes: np.ndarray, seed: int, height: int, width: int):
    """Per image, a smooth random displacement (n x 2 x H x W, in input pixels) that bends strokes
    locally, as two hands draw one digit differently (the elastic distortion of Simard et al.,
    ICDAR 2003, there on MNIST). Independent normal offsets at control points half a height apart
    (three rows: top, middle, bottom), interpolated bicubically: warps at the scale of a stroke,
    not of the line, which the affine map already covers.
    """
    import torch
    import torch.nn.functional as F

    n = len(amplitudes)
    columns = 2 + int(np.ceil(width / (height / 2)))
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((n, 2, 3, columns), generator=generator)
    coarse = coarse * torch.from_numpy(amplitudes.astype(np.float32)).view(n, 1, 1, 1)
    fine = F.interpolate(coarse, size=(height, int(round((columns - 1) * height / 2)) + 1), mode="bicubic",
                         align_corners=True)
    return fine[:, :, :, :width]


def _gaussian_blur(batch, sigmas: np.ndarray):
    """Blur each image with its own sigma (0 = untouched): two grouped 1-D convolutions."""
    import torch
    import torch.nn.functional as F

    n, channels, height, width = batch.shape
    taps = np.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=np.float64)
    safe = np.where(sigmas > 0, sigmas, 1.0)[:, None]
    kernels = np.where(sigmas[:, None] > 0, np.exp(-0.5 * (taps[None, :] / safe) ** 2), taps[None, :] == 0)
    kernels = kernels / kernels.sum(axis=1, keepdims=True)
    k = torch.from_numpy(np.repeat(kernels, channels, axis=0).astype(np.float32))  # (n*C) x taps
    flat = batch.reshape(1, n * channels, height, width)
    flat = F.conv2d(F.pad(flat, (_BLUR_RADIUS, _BLUR_RADIUS, 0, 0), mode="replicate"),
                    k.view(n * channels, 1, 1, -1), groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, _BLUR_RADIUS, _BLUR_RADIUS), mode="replicate"),
                    k.view(n * channels, 1, -1, 1), groups=n * channels)
    return flat.view(n, channels, height, width)


def _heavy_extras(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`heavy` only, per image before the batch transforms: perspective, thicker or thinner
    strokes, and a random erased patch."""
    height, width = image.shape[:2]
    fill = int(np.median(image[:, [0, -1]])) if image.ndim == 2 else tuple(
        int(v) for v in np.median(image[:, [0, -1]].reshape(-1, 3), axis=0))
    pil = Image.fromarray(image)
    if rng.random() < 0.4:
        # A crop photographed a little off-axis: move each corner by up to 4% of the height.
        pil = perspective(pil, rng.uniform(-0.04, 0.04, 8) * height, fill)
    if rng.random() < 0.25:
        # Min/max filters thicken or thin dark strokes (ink spread, a bolder or lighter font).
        pil = pil.filter(ImageFilter.MinFilter(3) if rng.random() < 0.5 else ImageFilter.MaxFilter(3))
    out = np.array(pil)
    if rng.random() < 0.25:
        # Random erasing: a narrow patch of background colour, as glare or a smudge would leave.
        w = max(1, int(width * rng.uniform(0.02, 0.08)))
        h = max(1, int(height * rng.uniform(0.2, 0.6)))
        x, y = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        out[y:y + h, x:x + w] = fill
    return out


def perspective(pil: Image.Image, offsets, fill) -> Image.Image:
    """Warp so that the output's corners sample the input's corners moved by `offsets` (8 px values)."""
    width, height = pil.size
    # PIL's QUAD wants the source corners as upper-left, lower-left, lower-right, upper-right.
    corners = [(0, 0), (0, height), (width, height), (width, 0)]
    quad = tuple(c + float(o) for xy, pair in zip(corners, np.reshape(offsets, (4, 2))) for c, o in zip(xy, pair))
    return pil.transform(pil.size, Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR, fillcolor=fill)

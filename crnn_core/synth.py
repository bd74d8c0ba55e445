"""`crnn synth`'s renderer: one text line in one font, then the degradations real crops have.

Every random choice comes from the `random.Random` passed in (numpy's generator is seeded from
it), so an image depends only on the text, the font, the settings and that stream.
Order of the steps, as in a photographed or scanned crop: the ink is drawn as a coverage mask
(with any underline and fragments of the neighbouring lines), bent by shear, rotation and
perspective, cropped tight or loose around the line, laid on paper (levels and texture),
resized to the output height, then blurred, noised and JPEG-compressed.
"""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .synth_fonts import pil_font
from .synth_settings import Range, RenderSettings

def _uniform(rng: random.Random, span: Range) -> float:
    return rng.uniform(span[0], span[1])


def _drawn(rng: random.Random, span: Range) -> float:
    """Like _uniform, but a fixed value draws nothing, so the stream (and every later choice) is unchanged."""
    return span[0] if span[0] == span[1] else rng.uniform(span[0], span[1])


def render_line(text: str, font_name: str, rng: random.Random, s: RenderSettings, min_width: int = 1) -> Image.Image:
    """A grayscale crop `s.height` px high and at least `min_width` wide showing `text`."""
    font = pil_font(font_name, round(_uniform(rng, s.font_size)))
    ink, box, line_h = _draw_ink(text, font, rng, s)
    stretch = _drawn(rng, s.stretch)
    if stretch != 1.0:
        size = (max(1, round(ink.width * stretch)), ink.height)
        ink, box = (im.resize(size, Image.Resampling.BILINEAR) for im in (ink, box))
    ink, box = _bend(ink, box, rng, s, line_h)
    ink = _crop(ink, box, rng, s, line_h)
    levels = sorted((_uniform(rng, s.ink), _uniform(rng, s.paper)))  # ink darker, even if the ranges overlap
    ink_level, paper_level = levels if rng.random() >= s.invert else levels[::-1]
    gen = np.random.default_rng(rng.getrandbits(64))
    page = _paper(ink.size, paper_level, _uniform(rng, s.texture), gen)
    cover = np.asarray(ink, dtype=np.float32) / 255.0
    image = Image.fromarray(np.clip(page * (1 - cover) + ink_level * cover, 0, 255).astype(np.uint8))
    width = max(1, round(image.width * s.height / image.height))
    image = image.resize((width, s.height), Image.Resampling.BILINEAR)
    if image.width < min_width:
        image = _widen(image, min_width)
    radius = _uniform(rng, s.blur)
    if radius > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    sigma = _uniform(rng, s.noise)
    if sigma > 0:
        noisy = np.asarray(image, dtype=np.float32) + gen.normal(0.0, sigma, (image.height, image.width))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if rng.random() < s.jpeg:
        image = _jpeg(image, round(_uniform(rng, s.jpeg_quality)))
    return image


def _draw_ink(text: str, font, rng: random.Random, s: RenderSettings) -> tuple[Image.Image, Image.Image, int]:
    """The ink coverage (text, underline, neighbours) and a mask of the line's box (ink width x line height)."""
    ascent, descent = font.getmetrics()
    line_h = max(1, ascent + descent)
    word_gap, tracking = _drawn(rng, s.word_spacing), _drawn(rng, s.letter_spacing)
    runs = _runs(text, font, word_gap, tracking)
    left, right = _ink_extent(text, font, runs)
    margin = line_h * 2  # room for neighbours above and below, and for rotation
    size = (right - left + 2 * margin, line_h + 2 * margin)
    x, y = margin - left, margin
    ink = Image.new("L", size, 0)
    draw = ImageDraw.Draw(ink)
    for pen, piece in runs or [(0.0, text)]:
        draw.text((x + pen, y), piece, font=font, fill=255)
    box = Image.new("L", size, 0)
    ImageDraw.Draw(box).rectangle([x + left, y, x + right - 1, y + line_h - 1], fill=255)
    if rng.random() < s.underline:
        under = y + ascent + max(1, descent // 3)
        draw.line([(x + left - line_h // 4, under), (x + right + line_h // 4, under)], fill=255,
                  width=max(1, line_h // 16))
    if rng.random() < s.neighbours:
        _draw_neighbours(draw, text, font, rng, (x, y), line_h)
    return ink, box, line_h


def _runs(text: str, font, word_gap: float, tracking: float) -> list[tuple[float, str]] | None:
    """The pieces to draw and each one's pen x when words or letters are spaced apart; None for the
    font's own spacing (the line is drawn whole).

    Words are drawn whole, so kerning and ligatures inside them stay; with tracking every letter is
    its own piece. A piece starts at the font's advance up to it (kerning between neighbours
    included), plus the tracking of the letters and the widened or narrowed spaces before it."""
    if word_gap == 1.0 and tracking == 0.0:
        return None
    size = getattr(font, "size", None) or sum(font.getmetrics())
    extra_per_space = (word_gap - 1.0) * font.getlength(" ")
    runs: list[tuple[float, str]] = []
    advance, spaces = 0.0, 0
    for i, char in enumerate(text):
        if char.isspace():
            spaces += 1
        elif tracking == 0.0 and i > 0 and not text[i - 1].isspace():
            runs[-1] = (runs[-1][0], runs[-1][1] + char)  # the word goes on
        else:
            runs.append((advance + i * tracking * size + spaces * extra_per_space, char))
        if i + 1 < len(text):  # the pair's length less the next character's: the advance with their kerning
            advance += font.getlength(text[i:i + 2]) - font.getlength(text[i + 1])
    return runs


def _ink_extent(text: str, font, runs: list[tuple[float, str]] | None) -> tuple[int, int]:
    """Left and right of the drawn line's ink, relative to the pen's start."""
    if runs is None:
        left, _, right, _ = font.getbbox(text)
        return left, right
    if not runs:
        return 0, 1
    boxes = [(pen, font.getbbox(piece)) for pen, piece in runs]
    return math.floor(min(pen + b[0] for pen, b in boxes)), math.ceil(max(pen + b[2] for pen, b in boxes))


def _draw_neighbours(draw: ImageDraw.ImageDraw, text: str, font, rng: random.Random, origin: tuple[int, int],
                     line_h: int) -> None:
    """Lines above and/or below, of the line's own characters shuffled (the font has them all)."""
    x, y = origin
    sides = rng.choice([(-1,), (1,), (-1, 1)])
    for side in sides:
        chars = list(text * 2)
        rng.shuffle(chars)
        gap = line_h * rng.uniform(1.0, 1.5)
        draw.text((x + rng.uniform(-2, 2) * line_h, y + side * gap), "".join(chars).strip() or text,
                  font=font, fill=255)


def _bend(ink: Image.Image, box: Image.Image, rng: random.Random, s: RenderSettings,
          line_h: int) -> tuple[Image.Image, Image.Image]:
    """Shear and rotation (one affine map), then a perspective warp; the box mask moves with the ink."""
    angle = math.radians(rng.uniform(-s.rotate, s.rotate))
    shear = rng.uniform(-s.shear, s.shear)
    forward = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) @ \
        np.array([[1.0, -shear], [0.0, 1.0]])
    w, h = ink.size
    corners = forward @ np.array([[0, w, w, 0], [0, 0, h, h]], dtype=float)
    low = corners.min(axis=1)
    size = tuple(int(math.ceil(v)) for v in corners.max(axis=1) - low)
    inverse = np.linalg.inv(forward)
    offset = inverse @ low  # output (0, 0) is the input point that lands at the corners' minimum
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    ink, box = (im.transform(size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR) for im in (ink, box))
    reach = s.perspective * line_h
    if reach > 0:
        w, h = ink.size
        source = [(0, 0), (w, 0), (w, h), (0, h)]
        target = [(px + rng.uniform(-reach, reach), py + rng.uniform(-reach, reach)) for px, py in source]
        data = _perspective_coefficients(target, source)
        ink, box = (im.transform((w, h), Image.Transform.PERSPECTIVE, data, Image.Resampling.BILINEAR)
                    for im in (ink, box))
    return ink, box


def _perspective_coefficients(output: list[tuple[float, float]], source: list[tuple[float, float]]) -> tuple:
    """Pillow's 8 perspective coefficients mapping each output corner back to its source corner."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(output, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.array(rows, dtype=float), np.array(rhs, dtype=float)))


def _crop(ink: Image.Image, box: Image.Image, rng: random.Random, s: RenderSettings, line_h: int) -> Image.Image:
    """The line's (bent) box plus margins drawn from pad_x and pad_y; outside the canvas is paper."""
    bounds = box.point(lambda v: 255 if v >= 128 else 0).getbbox() or box.getbbox() or (0, 0, *box.size)
    left, top, right, bottom = bounds
    pad_x, pad_y = (_uniform(rng, span) * line_h for span in (s.pad_x, s.pad_y))
    # each side on its own: real crops are rarely centred
    area = (round(left - pad_x * rng.uniform(0.5, 1.5)), round(top - pad_y * rng.uniform(0.5, 1.5)),
            round(right + pad_x * rng.uniform(0.5, 1.5)), round(bottom + pad_y * rng.uniform(0.5, 1.5)))
    area = (area[0], area[1], max(area[2], area[0] + 1), max(area[3], area[1] + 1))
    return ink.crop(area)


def _paper(size: tuple[int, int], level: float, texture: float, gen: np.random.Generator) -> np.ndarray:
    """A page `level` grey with smooth blotches `texture` grey levels strong (a sheet, a plate, a screen)."""
    w, h = size
    page = np.full((h, w), level, dtype=np.float32)
    if texture <= 0:
        return page
    coarse = gen.normal(0.0, 1.0, (max(2, h // 8), max(2, w // 8))).astype(np.float32)
    smooth = Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return page + texture * np.asarray(smooth, dtype=np.float32)


def _widen(image: Image.Image, width: int) -> Image.Image:
    """Pad both sides with the edge columns' grey, so a short label still gives the model enough steps."""
    array = np.asarray(image)
    extra = width - image.width
    return Image.fromarray(np.pad(array, ((0, 0), (extra // 2, extra - extra // 2)), mode="edge"))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=max(1, min(95, quality)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("L")


@lru_cache(maxsize=8)
def _fit_config(name: str):
    from .config import load_model_config

    return load_model_config(name)


def min_width_for(text: str, height: int, model: str) -> int:
    """The narrowest crop `height` px high in which `model`'s CTC head has the steps `text` needs."""
    from .heads import ctc_needed_steps

    config = _fit_config(model)
    ids = [ord(c) for c in text]  # only repeats matter, so code points serve as ids
    needed = config.width_for_length(ctc_needed_steps(ids))
    # + 2: resizing rounds, keep a little slack; a model that stretches images across needs fewer crop pixels
    return math.ceil((needed + 2) * height / config.height / config.width_scale)


def max_width_for(height: int, model: str) -> int:
    """The crop width, `height` px high, at which `model` starts squeezing (its max_width at its height)."""
    config = _fit_config(model)
    return math.floor(config.max_width * height / config.height / config.width_scale)

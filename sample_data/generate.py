"""Make the bundled sample datasets.

    python sample_data/generate.py            # writes sample_data/codes, sidecar and chars
    python sample_data/generate.py --sets chars

`codes/` looks like the jobs users bring: licence plates, meter readings and serial
codes, 3 to 10 characters from 0-9, A-Z, '-', '.' and space, rendered in several fonts
and sizes (DejaVu Sans/Mono/Serif when installed, Pillow's built-in Aileron, a drawn
seven-segment display), then rotated, sheared, blurred, noised and saved as JPEG (70%) or
PNG at heights 22 to 40 px. Layout: `codes/train/labels.tsv` and `codes/val/labels.tsv`
(path<TAB>label). `sidecar/` is a tiny folder in the `name.gt.txt` format.

`chars/` is a single-character set in the spirit of MNIST, for the seed article's network
(models/seed-fusion.yaml): 28 x 28 grayscale PNGs of one digit each, in the same fonts and
the seven-segment style, jittered in size, position and angle, sometimes blurred or noised.
Each set has its own random stream, so adding one does not change the others.

The output depends only on the seed, the Pillow version and the fonts found; the
committed data was made with Pillow 13.0 and Debian's fonts-dejavu-core.

`crnn synth` (crnn_core/synth.py) is the project's renderer for font-drawn lines. This script
keeps its own copy only because the committed data, and the bundled models trained on it,
come from these exact random draws; when the sample data is next remade (and the models
retrained), its font-drawn crops should come from crnn_core.synth, leaving only the
seven-segment display and the single-character tiles here.
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansCondensed-Oblique.ttf",
    "DejaVuSerifCondensed-Bold.ttf",
]
# I, O and Q are left out, as on many licence plates: they read as 1 and 0.
LETTERS = "".join(c for c in string.ascii_uppercase if c not in "IOQ")
DIGITS = string.digits


def _fonts(size: int) -> list[ImageFont.ImageFont]:
    found = [ImageFont.truetype(str(DEJAVU / name), size) for name in FONT_FILES if (DEJAVU / name).exists()]
    found.append(ImageFont.load_default(size=size))
    return found


def random_label(rng: random.Random) -> tuple[str, str]:
    """A label and its kind: plate, meter or code."""
    kind = rng.choice(["plate", "plate", "meter", "code", "code"])
    if kind == "plate":
        left = "".join(rng.choices(LETTERS, k=rng.randint(1, 3)))
        right = "".join(rng.choices(DIGITS, k=rng.randint(2, 4)))
        sep = rng.choice(["", " ", "-"])
        text = left + sep + right
        if rng.random() < 0.3:
            text += rng.choice([" ", ""]) + "".join(rng.choices(LETTERS, k=rng.randint(1, 2)))
        return text, kind
    if kind == "meter":
        digits = "".join(rng.choices(DIGITS, k=rng.randint(3, 7)))
        if rng.random() < 0.4:
            cut = rng.randint(1, len(digits) - 1)
            digits = digits[:cut] + "." + digits[cut:]
        return digits, kind
    alphabet = LETTERS + DIGITS
    text = "".join(rng.choices(alphabet, k=rng.randint(3, 8)))
    if rng.random() < 0.25:
        cut = rng.randint(1, len(text) - 1)
        text = text[:cut] + "-" + text[cut:]
    return text, kind


# Seven-segment layout: segment name -> ((x0, y0), (x1, y1)) in a 1x2 cell.
SEGMENTS = {
    "a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 1)), "c": ((1, 1), (1, 2)), "d": ((0, 2), (1, 2)),
    "e": ((0, 1), (0, 2)), "f": ((0, 0), (0, 1)), "g": ((0, 1), (1, 1)),
}
DIGIT_SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def draw_seven_segment(text: str, height: int, ink: int, paper: int, rng: random.Random) -> Image.Image:
    cell_h = height
    cell_w = int(height * rng.uniform(0.45, 0.6))
    thick = max(2, height // 9)
    gap = max(3, cell_w // 3)
    margin = height // 3
    dot = int(thick * 1.6)
    width = margin * 2 + sum(cell_w + gap if ch != "." else dot + gap for ch in text)
    image = Image.new("L", (width, cell_h + 2 * margin), paper)
    draw = ImageDraw.Draw(image)
    x = margin
    for ch in text:
        if ch == ".":
            draw.ellipse([x, margin + cell_h - dot, x + dot, margin + cell_h], fill=ink)
            x += dot + gap
            continue
        for seg in DIGIT_SEGMENTS[ch]:
            (x0, y0), (x1, y1) = SEGMENTS[seg]
            p0 = (x + x0 * (cell_w - thick), margin + y0 * (cell_h - thick) / 2)
            p1 = (x + x1 * (cell_w - thick) + thick, margin + y1 * (cell_h - thick) / 2 + thick)
            draw.rectangle([p0, p1], fill=ink)
        x += cell_w + gap
    return image


def draw_font_text(text: str, size: int, ink: int, paper: int, rng: random.Random) -> Image.Image:
    font = rng.choice(_fonts(size))
    left, top, right, bottom = font.getbbox(text)
    pad_x = rng.randint(2, size // 2 + 2)
    pad_y = rng.randint(2, size // 4 + 3)
    image = Image.new("L", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), paper)
    draw = ImageDraw.Draw(image)
    stroke = rng.choice([0, 0, 0, 1])
    draw.text((pad_x - left, pad_y - top), text, font=font, fill=ink, stroke_width=stroke, stroke_fill=ink)
    if rng.random() < 0.3:  # a plate-style border
        draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=ink, width=max(1, size // 16))
    return image


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Geometry, blur and noise of a photographed or scanned crop."""
    angle = rng.uniform(-3.5, 3.5)
    shear = rng.uniform(-0.25, 0.25)
    fill = image.getpixel((0, 0))
    w, h = image.size
    image = image.transform(
        (w + int(abs(shear) * h), h), Image.Transform.AFFINE,
        (1, shear, -abs(shear) * h if shear > 0 else 0, 0, 1, 0),
        resample=Image.Resampling.BILINEAR, fillcolor=fill,
    )
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    if rng.random() < 0.7:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4)))
    target_h = rng.randint(22, 40)
    target_w = max(8, round(image.width * target_h / image.height * rng.uniform(0.85, 1.15)))
    image = image.resize((target_w, target_h), Image.Resampling.BILINEAR)
    sigma = rng.choice([0, 3, 6, 10])
    if sigma:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, (image.height, image.width))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image


def render(text: str, kind: str, rng: random.Random) -> Image.Image:
    dark_on_light = rng.random() < 0.8
    ink, paper = (rng.randint(0, 70), rng.randint(170, 255)) if dark_on_light else (rng.randint(180, 255), rng.randint(0, 80))
    if kind == "meter" and rng.random() < 0.5:
        image = draw_seven_segment(text, rng.randint(28, 44), ink, paper, rng)
    else:
        image = draw_font_text(text, rng.randint(22, 40), ink, paper, rng)
    return degrade(image, rng)


def write_split(folder: Path, count: int, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        text, kind = random_label(rng)
        image = render(text, kind, rng)
        if rng.random() < 0.7:
            name = f"{i:05d}.jpg"
            image.save(folder / name, quality=rng.randint(60, 88))
        else:
            name = f"{i:05d}.png"
            image.save(folder / name, optimize=True)
        lines.append(f"{name}\t{text}\n")
    (folder / "labels.tsv").write_text("".join(lines), encoding="utf-8")


def write_sidecar(folder: Path, count: int, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text, kind = random_label(rng)
        render(text, kind, rng).save(folder / f"crop{i:03d}.png", optimize=True)
        (folder / f"crop{i:03d}.gt.txt").write_text(text + "\n", encoding="utf-8")


def render_char(char: str, rng: random.Random, size: int = 28) -> Image.Image:
    """One character centred (with jitter) on a size x size grayscale tile."""
    dark_on_light = rng.random() < 0.7
    ink, paper = (rng.randint(0, 80), rng.randint(160, 255)) if dark_on_light else (rng.randint(170, 255), rng.randint(0, 90))
    if rng.random() < 0.2:
        glyph = draw_seven_segment(char, rng.randint(30, 40), ink, paper, rng)
    else:
        font = rng.choice(_fonts(rng.randint(26, 40)))
        left, top, right, bottom = font.getbbox(char)
        pad = rng.randint(1, 4)
        glyph = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), paper)
        ImageDraw.Draw(glyph).text((pad - left, pad - top), char, font=font, fill=ink)
    glyph = glyph.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, expand=True,
                         fillcolor=glyph.getpixel((0, 0)))
    scale = rng.uniform(0.65, 0.95) * size / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                         Image.Resampling.BILINEAR)
    tile = Image.new("L", (size, size), paper)
    x = (size - glyph.width) // 2 + rng.randint(-2, 2)
    y = (size - glyph.height) // 2 + rng.randint(-2, 2)
    tile.paste(glyph, (max(0, x), max(0, y)))
    if rng.random() < 0.5:
        tile = tile.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    sigma = rng.choice([0, 0, 4, 8])
    if sigma:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, (size, size))
        tile = Image.fromarray(np.clip(np.asarray(tile, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return tile


def write_chars(folder: Path, count: int, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        char = DIGITS[i % len(DIGITS)] if i < len(DIGITS) else rng.choice(DIGITS)
        render_char(char, rng).save(folder / f"{i:05d}.png", optimize=True)
        lines.append(f"{i:05d}.png\t{char}\n")
    (folder / "labels.tsv").write_text("".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--train", type=int, default=2400)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--chars-train", type=int, default=2000)
    parser.add_argument("--chars-val", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2015)
    parser.add_argument("--sets", default="codes,sidecar,chars", help="comma-separated: codes, sidecar, chars")
    args = parser.parse_args()
    sets = set(args.sets.split(","))
    rng = random.Random(args.seed)  # codes and sidecar share one stream, as when they were first made
    if "sidecar" in sets and "codes" not in sets:
        raise SystemExit("sidecar is drawn after codes from one random stream: generate both")
    if "codes" in sets:
        write_split(args.out / "codes" / "train", args.train, rng)
        write_split(args.out / "codes" / "val", args.val, rng)
    if "sidecar" in sets:
        write_sidecar(args.out / "sidecar", 24, rng)
    if "chars" in sets:
        chars_rng = random.Random(args.seed + 1)
        write_chars(args.out / "chars" / "train", args.chars_train, chars_rng)
        write_chars(args.out / "chars" / "val", args.chars_val, chars_rng)


if __name__ == "__main__":
    main()

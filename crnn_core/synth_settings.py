"""The knobs of `crnn synth`'s renderer, their defaults and what each simulates.

Kept apart from the renderer (numpy, Pillow) so the CLI can show them in --help without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

Range = tuple[float, float]

# One line of help per knob: the CLI's --help and docs/synth.md say the same.
KNOB_HELP = {
    "height": "Output height in px (the width follows the text).",
    "font_size": "Font size in px the line is drawn at before resizing: small sizes give blocky, hinted strokes.",
    "ink": "Ink grey level (0 black .. 255 white).",
    "paper": "Paper grey level.",
    "invert": "Chance of light text on a dark ground (ink and paper levels swapped).",
    "texture": "Paper texture: strength of smooth blotches, in grey levels.",
    "noise": "Sensor noise: standard deviation of Gaussian noise, in grey levels.",
    "blur": "Focus blur: Gaussian radius in px at the output height.",
    "jpeg": "Chance of JPEG compression artefacts.",
    "jpeg_quality": "JPEG quality when compressed.",
    "rotate": "Largest rotation, in degrees either way.",
    "shear": "Largest shear (italic-like slant), as a fraction of the height either way.",
    "perspective": "Largest corner displacement of a perspective warp, as a fraction of the line height.",
    "underline": "Chance of an underline.",
    "neighbours": "Chance of cut-off fragments of the lines above and below in the crop.",
    "pad_x": "Margin left and right of the text, in line heights: 0 is a tight crop, 1 a loose one.",
    "pad_y": "Margin above and below the text, in line heights.",
    "word_spacing": "Word gap as a multiple of the font's own space: below 1 tight (condensed or tightly set text), above 1 loose (justified).",
    "letter_spacing": "Extra gap between letters (tracking), as a fraction of the font size; a negative LOW packs them tighter (e.g. -0.02-0.08). Letters are then drawn one by one, without the font's ligatures.",
    "stretch": "Width scale of the drawn line: below 1 condenses it (narrow fonts, squeezed crops), above 1 widens it.",
}


@dataclass(frozen=True)
class RenderSettings:
    """The knobs; a range (low, high) is drawn from uniformly per sample, a chance is a probability.

    The spacing knobs (word_spacing, letter_spacing, stretch) draw nothing when fixed at 1, 0 and 1,
    so with those values a seed writes the same images as before the knobs existed."""

    height: int = 32
    font_size: Range = (20, 44)
    ink: Range = (0, 70)
    paper: Range = (170, 255)
    invert: float = 0.1
    texture: Range = (0, 20)
    noise: Range = (0, 8)
    blur: Range = (0, 1.0)
    jpeg: float = 0.3
    jpeg_quality: Range = (30, 90)
    rotate: float = 1.5
    shear: float = 0.15
    perspective: float = 0.08
    underline: float = 0.05
    neighbours: float = 0.1
    pad_x: Range = (0.05, 0.5)
    pad_y: Range = (0.05, 0.25)
    # Spacing: the fonts' own word gaps alone taught the first latin-print that a gap is always
    # wide; in condensed and tightly set held-out fonts it read "of the" as "ofthe".
    word_spacing: Range = (0.6, 1.6)
    letter_spacing: Range = (0.0, 0.0)  # off: letters drawn one by one lose the font's ligatures
    stretch: Range = (0.8, 1.15)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def default_text(name: str) -> str:
    """A knob's default as the CLI writes it: '20-44' for a range, '0.1' for a chance."""
    value = getattr(RenderSettings(), name)
    return "-".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"

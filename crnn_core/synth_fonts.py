"""Fonts for `crnn synth`: found in folders, list files or the system, each with the characters it has.

A line is drawn only in a font whose character map holds every one of its characters, so no
sample shows a missing-glyph box (tofu) under a label that names a letter.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import DatasetError

FONT_EXTENSIONS = {".ttf", ".otf", ".ttc", ".otc"}
BUILTIN = "builtin"  # Pillow's own font (Aileron Regular), present wherever Pillow is
PROBE_SIZE = 24


@dataclass(frozen=True)
class Font:
    name: str  # the file path, or "builtin"
    chars: frozenset[str]

    def missing(self, text: str) -> set[str]:
        return {c for c in text if c not in self.chars and not c.isspace()}


@dataclass
class FontSet:
    fonts: list[Font]
    unusable: list[tuple[str, str]]  # (path, why) for files that could not be opened or drawn with


def _cmap_chars(source) -> frozenset[str]:
    """The characters the font maps to glyphs; ValueError for a symbol font (see _letters_elsewhere)."""
    from fontTools.ttLib import TTFont

    with TTFont(source, fontNumber=0, lazy=True) as tt:
        cmap = tt.getBestCmap() or {}
    if _letters_elsewhere(cmap):
        raise ValueError("a symbol font: its letters and digits are drawn as other symbols")
    return frozenset(chr(code) for code in cmap if code < 0x110000)


def _letters_elsewhere(cmap: dict[int, str]) -> bool:
    """Whether the font maps most ASCII letters and digits to glyphs named for something else.

    Dingbats and Symbol fonts put their pictures and Greek at the code points of Latin letters, so
    their character maps claim text they would draw as symbols. Glyph names give them away:
    'a10' or 'Alpha' under 'A'. Fonts without glyph names (glyph00012) are given the benefit of the doubt.
    """
    from fontTools.agl import toUnicode

    ascii_codes = [code for code in cmap if code < 128 and chr(code).isalnum()]
    named = [code for code in ascii_codes if not re.fullmatch(r"(glyph|cid|gid)\d+", cmap[code])]
    if len(named) < 10:
        return False
    honest = sum(toUnicode(cmap[code]) == chr(code) for code in named)
    return honest < len(named) / 2


@lru_cache(maxsize=None)
def _builtin_bytes() -> bytes:
    # load_default keeps the bytes it read the font from: the only way to the built-in font's table
    return ImageFont.load_default(size=PROBE_SIZE).font_bytes


def _edge_ink(font: ImageFont.FreeTypeFont, letter: str) -> float:
    """The least inked share of the four edges of the letter's ink box (1.0: a closed frame)."""
    left, top, right, bottom = font.getbbox(letter)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), letter, font=font, fill=255)
    ink = np.asarray(canvas) > 127
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return 0.0
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return float(min(ink[0].mean(), ink[-1].mean(), ink[:, 0].mean(), ink[:, -1].mean()))


def _letters_framed(font: ImageFont.FreeTypeFont) -> bool:
    """Whether the font draws its letters inside frames, as keyboard-key fonts do (Linux Biolinum Keyboard).

    Such a font passes the character-map checks, yet a line in it teaches a recogniser boxes. An
    open letter's ink meets the edges of its ink box over a short span ('v' meets the bottom at its
    point, 'o' each edge at one curve): among 159 text fonts on Debian the most was 17% of an edge
    for 'v' and 'o' both, against 79% for the key-cap font.
    """
    return min(_edge_ink(font, letter) for letter in "vo") > 0.5


def load_font(name: str) -> Font:
    """The font and its characters; OSError or ValueError (and fontTools' own errors) if unusable."""
    if name == BUILTIN:
        return Font(BUILTIN, _cmap_chars(io.BytesIO(_builtin_bytes())))
    probe = ImageFont.truetype(name, 48)
    probe.getbbox("A")  # fonts Pillow cannot scale (colour bitmaps) fail here
    chars = _cmap_chars(name)
    if {"v", "o"} <= chars and _letters_framed(probe):
        raise ValueError("a key-cap font: it draws each letter inside a frame")
    return Font(name, chars)


@lru_cache(maxsize=64)
def pil_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """Pillow's font at a size, cached per process (workers render many lines in a few fonts)."""
    if name == BUILTIN:
        return ImageFont.truetype(io.BytesIO(_builtin_bytes()), size)
    return ImageFont.truetype(name, size)


def system_font_files() -> list[str]:
    """Font files fontconfig knows (`fc-list`), or none where it is missing."""
    if shutil.which("fc-list") is None:
        return []
    try:
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True,
                                timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.strip() for line in listed.splitlines()
                   if Path(line.strip()).suffix.lower() in FONT_EXTENSIONS})


def _expand(spec: str) -> list[str]:
    """Font files named by one --fonts value: a folder, a font file, a list file, 'system' or 'builtin'."""
    if spec in (BUILTIN, "system"):
        return [BUILTIN] if spec == BUILTIN else system_font_files()
    path = Path(spec)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FONT_EXTENSIONS)
    if path.is_file() and path.suffix.lower() in FONT_EXTENSIONS:
        return [str(path)]
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read the font list: {exc}") from None
        base = path.parent
        return [str(base / line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    raise DatasetError(f"{spec}: no such font, folder or font list (or use 'system' or 'builtin')")


def find_fonts(specs: list[str] | None) -> FontSet:
    """The usable fonts of the specs (default: the system's, else Pillow's built-in), in a stable order."""
    names = list(dict.fromkeys(n for spec in (specs or ["system"]) for n in _expand(spec)))
    fonts, unusable = [], []
    for name in names:
        try:
            fonts.append(load_font(name))
        except Exception as exc:  # noqa: BLE001 - fontTools raises its own types (TTLibError, struct.error)
            unusable.append((name, f"{type(exc).__name__}: {exc}".strip().rstrip(":")))
    if not fonts and not specs:
        fonts.append(load_font(BUILTIN))  # a bare machine: no fontconfig, or no fonts at all
    if not fonts:
        first = f" (first: {unusable[0][0]}: {unusable[0][1]})" if unusable else ""
        raise DatasetError(f"no usable fonts in {', '.join(specs or [])}{first}")
    return FontSet(fonts, unusable)

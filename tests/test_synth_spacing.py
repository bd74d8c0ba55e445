"""`crnn synth`'s spacing knobs: word gaps, tracking and stretch move the ink as asked, measured on
the rendered pixels (blank columns between words, the ink's width), and fixed neutral values draw
nothing from the random stream, so older commands still write the same images."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from crnn_core.synth import render_line
from crnn_core.synth_fonts import BUILTIN
from crnn_core.synth_settings import RenderSettings

# clean, upright, fixed size and margins: only the knob under test changes the picture
CLEAN = RenderSettings(height=40, font_size=(40, 40), ink=(0, 0), paper=(255, 255), invert=0.0, texture=(0, 0),
                       noise=(0, 0), blur=(0, 0), jpeg=0.0, rotate=0.0, shear=0.0, perspective=0.0, underline=0.0,
                       neighbours=0.0, pad_x=(0.2, 0.2), pad_y=(0.1, 0.1), word_spacing=(1, 1),
                       letter_spacing=(0, 0), stretch=(1, 1))


def ink_columns(image) -> np.ndarray:
    return (np.asarray(image) < 128).any(axis=0)


def widest_gap(image) -> int:
    """The longest run of blank columns between the first and the last inked column."""
    cols = ink_columns(image)
    inked = np.flatnonzero(cols)
    best = run = 0
    for blank in ~cols[inked[0]:inked[-1] + 1]:
        run = run + 1 if blank else 0
        best = max(best, run)
    return best


def ink_width(image) -> int:
    inked = np.flatnonzero(ink_columns(image))
    return int(inked[-1] - inked[0] + 1)


def render(text: str, **knobs):
    return render_line(text, BUILTIN, random.Random(5), dataclasses.replace(CLEAN, **knobs))


def test_word_spacing_scales_the_gap_between_words():
    gaps = {w: widest_gap(render("HH HH", word_spacing=(w, w))) for w in (0.5, 1.0, 2.0)}
    assert gaps[0.5] < gaps[1.0] < gaps[2.0]
    # one space of Pillow's font at 40 px is about 11 px wide: doubling it adds about that
    assert 6 <= gaps[2.0] - gaps[1.0] <= 16, gaps
    # letters inside a word do not move
    assert ink_width(render("HHHH", word_spacing=(2, 2))) == ink_width(render("HHHH"))


def test_letter_spacing_spreads_letters_and_stretch_scales_the_width():
    base = ink_width(render("HHHH"))
    # the same seed gives the same vertical margins, so the same scale to 40 px: the added width
    # grows in proportion to the tracking (three gaps of 0.1 and of 0.2 font sizes)
    wider = [ink_width(render("HHHH", letter_spacing=(t, t))) - base for t in (0.1, 0.2)]
    assert wider[0] >= 6 and wider[1] == pytest.approx(2 * wider[0], abs=2), wider
    assert ink_width(render("HHHH", letter_spacing=(-0.05, -0.05))) < base
    assert ink_width(render("HHHH", stretch=(0.5, 0.5))) == pytest.approx(base * 0.5, abs=2)


class CountingRandom(random.Random):
    """A stream that counts the numbers drawn from it (uniform and chances go through random())."""

    def __init__(self, seed):
        super().__init__(seed)
        self.draws = 0

    def random(self):
        self.draws += 1
        return super().random()


def test_fixed_neutral_knobs_draw_nothing_from_the_stream():
    """Word gap 1, tracking 0 and stretch 1, fixed, take no number from the stream: every later choice
    is the one made before the knobs existed, so old commands write the same images. Ranges take one each."""
    def draws(**knobs) -> int:
        rng = CountingRandom(9)
        render_line("ab cd", BUILTIN, rng, dataclasses.replace(CLEAN, **knobs))
        return rng.draws

    neutral = draws()
    assert draws(word_spacing=(0.9, 1.1)) == neutral + 1
    assert draws(word_spacing=(0.9, 1.1), letter_spacing=(0.0, 0.1), stretch=(0.9, 1.1)) == neutral + 3
    assert draws(word_spacing=(1.3, 1.3), letter_spacing=(0.05, 0.05), stretch=(0.8, 0.8)) == neutral


def test_spaced_lines_keep_every_letter_inside_the_crop():
    """Wide tracking and a loose word gap must not push the last letter past the crop's box."""
    for seed in range(6):
        image = render_line("Wolf of AVA, 12", BUILTIN, random.Random(seed),
                            dataclasses.replace(CLEAN, word_spacing=(0.5, 2.0), letter_spacing=(-0.05, 0.2)))
        cols = ink_columns(image)
        assert not cols[0] and not cols[-1], seed  # paper on both sides: nothing was cut off

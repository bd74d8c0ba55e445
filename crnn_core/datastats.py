"""What a run's training images are like, measured once as they are read: the numbers that
settings meant to fit the data (input height, time resolution; issue 15) would start from.

Pure arithmetic on numbers training has anyway (no torch, no images): `crnn train` reports
the result in one line and writes it under `data:` in the run's config.yaml.
`fitted_height` and `fitted_width_scale` are the settings decided from them: the input height
and the stretch across of a run whose architecture is a bundled one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .heads import ctc_needed_steps


@dataclass(frozen=True)
class DataStats:
    """Percentiles are numpy's (linear between the nearest ranks); None where there are no images."""

    images: int
    height_median: float | None  # the images' own heights in px, before resizing
    height_p10: float | None
    height_p90: float | None
    model_height: int  # the height every image is resized to
    chars_per_px: float | None  # median over images of label characters per px of width at model_height
    steps_per_px: float | None  # median over images of the time steps (CTC frames) per px the model reads
    ctc_fill_median: float | None  # CTC steps a label needs (repeats need a blank between) / steps its image gives
    ctc_fill_p90: float | None
    ctc_fill_max: float | None  # above 1: some labels cannot be learnt at this resolution (they are skipped)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, rounded for reading (config.yaml, events)."""
        def rounded(value: float | None, digits: int) -> float | None:
            return None if value is None else round(float(value), digits)

        return {"images": self.images, "model_height": self.model_height,
                "height": {"median": rounded(self.height_median, 1), "p10": rounded(self.height_p10, 1),
                           "p90": rounded(self.height_p90, 1)},
                "chars_per_px": rounded(self.chars_per_px, 4), "steps_per_px": rounded(self.steps_per_px, 4),
                "ctc_fill": {"median": rounded(self.ctc_fill_median, 3), "p90": rounded(self.ctc_fill_p90, 3),
                             "max": rounded(self.ctc_fill_max, 3)}}


def data_stats(heights: Sequence[int], widths: Sequence[int], texts: Sequence[str], read_widths: Sequence[int],
               steps: Sequence[int], model_height: int) -> DataStats:
    """Statistics of a split, one entry per image in each sequence.

    `heights`: each image's own height in px; `widths`: its width once resized to
    `model_height` (the text's own width, no padding); `texts`: its label; `read_widths`: the
    width the model reads (padded to the preprocessing's multiple); `steps`: the time steps
    (CTC frames) the architecture gives that width, `ModelConfig.time_steps(read_width)`.
    """
    if len({len(heights), len(widths), len(texts), len(read_widths), len(steps)}) != 1:
        raise ValueError("data_stats: one height, width, text, read width and step count per image")
    if not heights:
        return DataStats(0, None, None, None, model_height, None, None, None, None, None)
    chars = np.asarray([len(t) for t in texts], dtype=np.float64)
    frames = np.asarray(steps, dtype=np.float64)
    # an image too narrow for one step needs any label's steps in full: count it against one step, not zero
    fill = np.asarray([ctc_needed_steps(list(t)) for t in texts], dtype=np.float64) / np.maximum(frames, 1.0)
    h10, h50, h90 = np.percentile(np.asarray(heights, dtype=np.float64), [10, 50, 90])
    return DataStats(
        images=len(heights), height_median=float(h50), height_p10=float(h10), height_p90=float(h90),
        model_height=model_height, chars_per_px=float(np.median(chars / _positive(widths))),
        steps_per_px=float(np.median(frames / _positive(read_widths))),
        ctc_fill_median=float(np.median(fill)), ctc_fill_p90=float(np.percentile(fill, 90)),
        ctc_fill_max=float(fill.max()))


def _positive(widths: Sequence[int]) -> np.ndarray:
    return np.maximum(np.asarray(widths, dtype=np.float64), 1.0)


LONG_ASPECT = 4.0  # median width / height above which images are lines of many glyphs (fitted_height)


def fitted_height(median_height: float | None, default: int, median_aspect: float | None = None) -> int:
    """The input height for images whose own heights have this median, given the architecture's.

    Images clearly taller than the architecture expects (median above 1.25 times its height)
    are read at the median height rounded to a multiple of 16, at most twice the default (64 px
    for the bundled 32): captchas 60 px high squeezed to 32 px lose their thin, warped strokes
    (on the proxy captchas: 90.7% at 32 px, 92.0% and 92.6% at 48, 92.8% and 94.8% at 64; two
    seeds, docs/accuracy.md), and a taller input also gives a dense line more CTC steps (the
    width grows with the height). Shorter images keep the default: upscaling adds no detail.

    Above 1.5 times the default only short images go: a median width of at most LONG_ASPECT
    heights (captchas: 2.7). The compute per image grows with height squared times width over
    height, so a long line at 64 px costs 1.8 times what it costs at 48 and a budget fits half
    the epochs: printed lines 56-96 px high (median width 7.8 heights) read 88.5% at 64 px and
    94.3% at 48 px in 30 minutes (docs/accuracy.md, "The height cap for long images"). Without
    a known aspect (no widths) the cap stays at twice the default.
    """
    if median_height is None or median_height <= default * 1.25:
        return default  # images of about the architecture's height are read at it, whatever its rounding
    short = median_aspect is None or median_aspect <= LONG_ASPECT
    cap = default * 2 if short else max(default, 16 * (default * 3 // 2 // 16))  # long: 1.5x, a multiple of 16
    return int(min(max(default, 16 * round(median_height / 16)), cap))


FILL_COMFORT = 0.5  # a label's share of its image's CTC steps (90th percentile) above which the width is stretched
WIDTH_SCALES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def fitted_width_scale(fill_p90: float | None) -> float:
    """How far to stretch images across so that nine labels in ten need at most half their steps.

    `fill_p90` is the 90th percentile, over training images, of the CTC steps a label needs
    (one per character, one more between repeated ones) over the steps its image gives at
    width scale 1. A label that needs more steps than its image gives cannot be learnt, and
    one near that limit leaves CTC little room to place its characters: densely set text
    (condensed fonts, fax-mode scans, small text in loose crops) lost labels at the default W/4
    steps in the issue's printed lines. Stretching multiplies the steps, and the compute, by
    the scale. The kinds of data the bundled architectures read well sit far below the
    threshold (the proxy suite's 90th percentiles: captchas 0.14, digits 0.18, plates 0.39,
    printed lines at 48 px 0.33), so only dense text is stretched: by the smallest listed
    scale that brings the percentile to FILL_COMFORT, at most 3. Measured in 20-minute runs
    (docs/accuracy.md, "Densely set text"): condensed, loosely cropped lines (0.94 -> 2) read
    63.2% of test lines instead of 40.8%; `crnn synth`'s prose at 32 px (0.59 -> 1.25) 60.4%
    instead of 57.4%. Never below 1: halving sparse captchas (0.136) doubled the epochs and read
    92.6% instead of 96.6% (docs/accuracy.md, "Sparse text compressed across").
    """
    if fill_p90 is None or not fill_p90 > FILL_COMFORT:
        return 1.0
    return next((scale for scale in WIDTH_SCALES if fill_p90 / scale <= FILL_COMFORT), WIDTH_SCALES[-1])

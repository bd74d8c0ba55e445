"""Confidence calibration: map a reading's raw score to the chance that it is right.

Fitted on the validation set when training ends (on the best model, greedy decoding), or by
`crnn calibrate` on any labelled set, and stored in the model file's `train` record under
"calibration", so it travels with the weights. The raw score is the probability of the
reading's weakest character (`Decoded.weakest`, decode.py), which ranks right above wrong
readings far better than the best path's probability (docs/accuracy.md, "Which score says a
reading is right"); maps fitted before it existed read the best path's probability, and say
so in their "score". The map is isotonic (pool-adjacent-violators on the raw score vs
exact-match correctness), with each pooled block's accuracy smoothed as (right + 1) / (n + 2),
so a block with no error seen is still not called certain; between block centres it
interpolates linearly, and it is flat beyond the first and last.

Fitted at the end of training, the validation set also chose the best epoch, so the map is a
little optimistic; with a few hundred validation lines and a few errors it is coarse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The raw-score bins of the reliability table shown by `crnn info`.
TABLE_EDGES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
# What a map reads: the weakest character's probability, or (maps fitted before it) the best path's.
SCORES = {"weakest": "the weakest character's probability", "best-path": "the best path's probability"}


@dataclass
class Calibration:
    x: list[float]  # block centres (mean raw confidence), increasing
    y: list[float]  # smoothed accuracy of each block, non-decreasing
    samples: int
    table: list[dict[str, Any]]  # reliability bins: low, high, lines, accuracy, calibrated
    score: str = "weakest"  # the raw score it maps: a key of SCORES

    def __call__(self, raw: float) -> float:
        return float(np.interp(raw, self.x, self.y))

    def p_correct(self, reading) -> float:
        """The chance that a reading (a `Decoded`) is right; 0 for a constrained search's non-match."""
        if not reading.matched:
            return 0.0
        return self(reading.weakest if self.score == "weakest" else reading.confidence)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "isotonic", "score": self.score, "x": self.x, "y": self.y, "samples": self.samples,
                "table": self.table}

    @classmethod
    def from_dict(cls, raw: Any) -> "Calibration | None":
        """None for no map, or one this version cannot read (a method or score it does not know).

        A record of a known method is checked in full and ValueError names what is wrong: a model
        file's map is data from disk, and a damaged one should fail where the file is loaded.
        """
        if not raw:
            return None
        if not isinstance(raw, dict):
            raise ValueError(f"a {type(raw).__name__}, not a mapping")
        if raw.get("method") != "isotonic":
            return None
        score = raw.get("score", "best-path")  # files written before the score was recorded
        if not isinstance(score, str) or score not in SCORES:
            return None
        x, y = _numbers(raw.get("x"), "x"), _numbers(raw.get("y"), "y")
        if len(x) != len(y) or not x:
            raise ValueError(f"x and y hold {len(x)} and {len(y)} values, not the same number (at least one)")
        if any(b < a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
            raise ValueError("x and y must not decrease")
        if not all(0.0 <= v <= 1.0 for v in x + y):
            raise ValueError("x and y must lie within 0-1")
        samples = raw.get("samples", 0)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples: {samples!r} is not a count")
        return cls(x, y, samples, _table(raw.get("table", [])), score)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not an integer beyond any float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numbers(values: Any, name: str) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise ValueError(f"{name}: not a list of numbers")
    if not all(_is_number(v) for v in values):
        raise ValueError(f"{name}: holds a value that is not finite")
    return [float(v) for v in values]


def _table(rows: Any) -> list[dict[str, Any]]:
    """The reliability bins as `crnn info` shows them, each field checked."""
    if not isinstance(rows, list):
        raise ValueError("table: not a list")
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError("table: a row that is not a mapping")
        lines = row.get("lines")
        count = isinstance(lines, int) and not isinstance(lines, bool) and lines >= 0
        edges = all(_is_number(row.get(k)) for k in ("low", "high"))
        # a bin with lines has both rates; an empty one may have None
        rates = all(_is_number(row.get(k)) or (not lines and row.get(k) is None) for k in ("accuracy", "calibrated"))
        if not (count and edges and rates):
            raise ValueError(f"table: a malformed row {row!r}"[:200])
    return rows


def fit_readings(readings: Sequence[Any], correct: Sequence[bool]) -> Calibration:
    """The map of readings' weakest-character probability to correctness."""
    return fit([r.weakest for r in readings], correct, score="weakest")


def fit(confidences: Sequence[float], correct: Sequence[bool], score: str = "weakest") -> Calibration:
    """Isotonic fit of correctness on a raw score (pool adjacent violators)."""
    if len(confidences) != len(correct) or not confidences:
        raise ValueError("calibration needs as many outcomes as confidences, at least one")
    order = np.argsort(np.asarray(confidences, dtype=np.float64), kind="stable")
    c = np.asarray(confidences, dtype=np.float64)[order]
    y = np.asarray(correct, dtype=np.float64)[order]
    # Blocks as [sum of confidences, right, count]; merge while a block's rate falls below the previous one's.
    blocks: list[list[float]] = []
    for ci, yi in zip(c.tolist(), y.tolist()):
        blocks.append([ci, yi, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            for k in range(3):
                blocks[-1][k] += last[k]
    xs = [b[0] / b[2] for b in blocks]
    ys = [(b[1] + 1.0) / (b[2] + 2.0) for b in blocks]
    ys = np.maximum.accumulate(ys).tolist()  # smoothing can break monotonicity between tiny blocks
    calibration = Calibration(xs, ys, len(c), [], score)
    table = []
    for low, high in zip(TABLE_EDGES, TABLE_EDGES[1:]):
        inside = (c >= low) & ((c < high) if high < 1.0 else (c <= high))
        n = int(inside.sum())
        table.append({"low": low, "high": high, "lines": n,
                      "accuracy": float(y[inside].mean()) if n else None,
                      "calibrated": float(np.mean([calibration(v) for v in c[inside]])) if n else None})
    calibration.table = table
    return calibration

"""Confidence calibration: map a reading's raw confidence to the chance that it is right.

Fitted on the validation set when training ends (on the best model, greedy decoding) and
stored in the model file's `train` record under "calibration", so it travels with the
weights. The map is isotonic (pool-adjacent-violators on raw confidence vs exact-match
correctness), with each pooled block's accuracy smoothed as (right + 1) / (n + 2), so a
block with no error seen is still not called certain; between block centres it
interpolates linearly, and it is flat beyond the first and last.

The validation set also chose the best epoch, so the map is a little optimistic; with a
few hundred validation lines and a few errors it is coarse. It is fitted on greedy
confidences (best-path probability); beam and constrained confidences, which sum over
alignments, are a little higher for the same reading, so the map flatters them slightly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The raw-confidence bins of the reliability table shown by `crnn info`.
TABLE_EDGES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclass
class Calibration:
    x: list[float]  # block centres (mean raw confidence), increasing
    y: list[float]  # smoothed accuracy of each block, non-decreasing
    samples: int
    table: list[dict[str, Any]]  # reliability bins: low, high, lines, accuracy, calibrated

    def __call__(self, confidence: float) -> float:
        return float(np.interp(confidence, self.x, self.y))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "isotonic", "x": self.x, "y": self.y, "samples": self.samples, "table": self.table}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Calibration | None":
        if not raw or raw.get("method") != "isotonic" or not raw.get("x"):
            return None
        return cls([float(v) for v in raw["x"]], [float(v) for v in raw["y"]], int(raw.get("samples", 0)),
                   list(raw.get("table", [])))


def fit(confidences: Sequence[float], correct: Sequence[bool]) -> Calibration:
    """Isotonic fit of correctness on raw confidence (pool adjacent violators)."""
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
    calibration = Calibration(xs, ys, len(c), [])
    table = []
    for low, high in zip(TABLE_EDGES, TABLE_EDGES[1:]):
        inside = (c >= low) & ((c < high) if high < 1.0 else (c <= high))
        n = int(inside.sum())
        table.append({"low": low, "high": high, "lines": n,
                      "accuracy": float(y[inside].mean()) if n else None,
                      "calibrated": float(np.mean([calibration(v) for v in c[inside]])) if n else None})
    calibration.table = table
    return calibration

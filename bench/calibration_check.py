"""Does a calibration fitted on one half of a labelled set hold on the other half?

    python bench/calibration_check.py --model codes-small --data sample_data/codes/val [--threshold 0.9]

Reads every line once (greedy), fits the isotonic calibration (crnn_core/calibration.py) on
the even-numbered lines and measures the odd-numbered ones: per raw-confidence bin, the
mean calibrated chance of being right next to the observed accuracy; then, for
`--min-confidence THRESHOLD`, how many lines are flagged and how often flagged and unflagged
lines are really wrong. Training fits on the whole validation set instead; this split only
keeps the check honest. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.calibration import TABLE_EDGES, fit  # noqa: E402
from crnn_core.data import discover, load_all  # noqa: E402
from crnn_core.evaluate import eval_split  # noqa: E402
from crnn_core.recognizer import Recognizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codes-small")
    parser.add_argument("--data", default=str(REPO / "sample_data" / "codes" / "val"))
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recognizer = Recognizer(args.model)
    dataset = discover(eval_split(args.data))
    arrays, problems = load_all([s.path for s in dataset.samples], recognizer.preprocess, 2)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    outputs = recognizer.predict_arrays([arrays[i] for i in keep])
    conf = np.array([o.confidence for o in outputs])
    right = np.array([o.text == dataset.samples[i].text for o, i in zip(outputs, keep)])
    fit_half, test_half = np.arange(len(conf)) % 2 == 0, np.arange(len(conf)) % 2 == 1
    calibration = fit(conf[fit_half].tolist(), right[fit_half].tolist())
    c, r = conf[test_half], right[test_half]
    p = np.array([calibration(v) for v in c])
    print(f"{args.model} on {args.data}: fitted on {int(fit_half.sum())} lines "
          f"({int((~right[fit_half]).sum())} wrong), measured on {len(c)} ({int((~r).sum())} wrong)\n")
    print("| raw confidence | lines | right | mean calibrated |")
    print("| --- | --- | --- | --- |")
    for low, high in zip(TABLE_EDGES, TABLE_EDGES[1:]):
        inside = (c >= low) & ((c < high) if high < 1.0 else (c <= high))
        if inside.any():
            print(f"| {low:.2f}–{high:.2f} | {int(inside.sum())} | {r[inside].mean():.1%} | {p[inside].mean():.1%} |")
    low = p < args.threshold
    print(f"\n`--min-confidence {args.threshold:g}` on the measured half: {int(low.sum())} of {len(c)} lines flagged; "
          f"wrong among flagged: {int((~r[low]).sum())}/{int(low.sum())}"
          f" ({(~r[low]).mean():.1%})" if low.any() else "", end="")
    print(f"; wrong among the rest: {int((~r[~low]).sum())}/{int((~low).sum())}"
          + (f" ({(~r[~low]).mean():.1%})" if (~low).any() else ""))
    raw_low = c < args.threshold
    print(f"(raw confidence < {args.threshold:g} instead: {int(raw_low.sum())} flagged, "
          f"{int((~r[raw_low]).sum())} of them wrong; {int((~r[~raw_low]).sum())} wrong among the rest)")


if __name__ == "__main__":
    main()

"""Which raw score tells a right reading from a wrong one, and how well its calibration holds.

    python bench/confidence_ranking.py --model M --data D [--fit F] [--threshold 0.9] [--json OUT]

Reads every line of D (its test/ or val/ split) once, greedy, and scores each reading five ways:

- best-path: the probability of the best path (the product over frames; the old raw confidence)
- weakest: the probability of the least certain character (`Decoded.weakest`, what calibration maps now)
- frame-min: the least top-class probability over all frames, blanks included
- margin-min: the least gap between a frame's two most probable classes
- frame-mean: the mean top-class probability over the frames

For each: AUROC (the chance that a random right reading scores above a random wrong one; 0.5
is a coin), the accuracy of the lines kept when only the 90/80/50% with the highest scores
are kept, and an isotonic calibration (crnn_core/calibration.py) fitted on F's readings
(without --fit: on D's even lines, measured on its odd ones): its Brier score, and at
`--min-confidence THRESHOLD` the lines flagged, the wrong ones among them and among the rest.
Markdown on stdout. Training and `crnn calibrate` fit on the weakest character.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.calibration import fit  # noqa: E402
from crnn_core.data import to_array_batch  # noqa: E402
from crnn_core.decode import greedy  # noqa: E402
from crnn_core.evaluate import read_labelled  # noqa: E402
from crnn_core.recognizer import Recognizer  # noqa: E402

SCORES = ("best-path", "weakest", "frame-min", "margin-min", "frame-mean")
COVERAGES = (0.9, 0.8, 0.5)


def read(recognizer: Recognizer, data: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each line's five scores, and whether its greedy reading is right."""
    labelled = read_labelled(data, recognizer.loaded, "auto", 2, None)
    scores: dict[str, list[float]] = {name: [] for name in SCORES}
    right = []
    for i in labelled.keep:
        array = labelled.arrays[i]
        log_probs = recognizer.runner.run(to_array_batch([array])[0])
        log_probs = log_probs[: recognizer.runner.config.output_length(array.shape[1])]
        (out,) = greedy(log_probs, [log_probs.shape[0]])
        top2 = np.sort(np.exp(log_probs[:, 0]), -1)[:, -2:]
        for name, value in zip(SCORES, (out.confidence, out.weakest, top2[:, 1].min(),
                                        (top2[:, 1] - top2[:, 0]).min(), top2[:, 1].mean())):
            scores[name].append(float(value))
        right.append(recognizer.loaded.alphabet.decode(out.ids) == labelled.dataset.samples[i].text)
    return {k: np.array(v) for k, v in scores.items()}, np.array(right)


def auroc(score: np.ndarray, right: np.ndarray) -> float | None:
    """P(a right reading outscores a wrong one), ties counted half (Mann-Whitney U over the pairs)."""
    pos, neg = score[right], score[~right]
    if not len(pos) or not len(neg):
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def kept_accuracy(score: np.ndarray, right: np.ndarray, coverage: float) -> float:
    keep = max(1, int(round(coverage * len(score))))
    return float(right[np.argsort(-score, kind="stable")[:keep]].mean())


def measure(name: str, fit_score: np.ndarray, fit_right: np.ndarray, score: np.ndarray, right: np.ndarray,
            threshold: float) -> dict:
    calibration = fit(fit_score.tolist(), fit_right.tolist())  # the map only; its `score` label is not used here
    p = np.array([calibration(v) for v in score])
    low = p < threshold
    return {"score": name, "auroc": auroc(score, right),
            **{f"kept_{int(c * 100)}": kept_accuracy(score, right, c) for c in COVERAGES},
            "brier": float(np.mean((p - right) ** 2)), "flagged": int(low.sum()),
            "wrong_flagged": int((~right[low]).sum()), "wrong_rest": int((~right[~low]).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--fit", help="labelled set to fit the calibration on (default: D's even lines)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--json")
    args = parser.parse_args()
    recognizer = Recognizer(args.model, backend="torch", device="cpu")
    scores, right = read(recognizer, args.data)
    if args.fit:
        fit_scores, fit_right = read(recognizer, args.fit)
        where = f"fitted on {len(fit_right)} lines of {args.fit} ({int((~fit_right).sum())} wrong)"
    else:
        even = np.arange(len(right)) % 2 == 0
        fit_scores, fit_right = {k: v[even] for k, v in scores.items()}, right[even]
        scores, right = {k: v[~even] for k, v in scores.items()}, right[~even]
        where = f"fitted on the {int(even.sum())} even lines ({int((~fit_right).sum())} wrong)"
    rows = [measure(name, fit_scores[name], fit_right, scores[name], right, args.threshold) for name in SCORES]
    print(f"{args.model} on {args.data}: {len(right)} lines measured ({int((~right).sum())} wrong); calibration {where}\n")
    print("| score | AUROC | accuracy of the top 90% / 80% / 50% | Brier | flagged < "
          f"{args.threshold:g} | wrong among them | wrong in the rest |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        kept = " / ".join(f"{100 * r[f'kept_{int(c * 100)}']:.1f}%" for c in COVERAGES)
        roc = f"{r['auroc']:.4f}" if r["auroc"] is not None else "–"
        print(f"| {r['score']} | {roc} | {kept} | {r['brier']:.4f} | {r['flagged']} | {r['wrong_flagged']} | "
              f"{r['wrong_rest']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "data": args.data, "fit": where,
                                               "lines": len(right), "wrong": int((~right).sum()), "rows": rows},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()

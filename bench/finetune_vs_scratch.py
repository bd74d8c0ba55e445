"""Fine-tuning the bundled model on 5 new characters vs training from scratch, same minutes.

    python bench/make_newchars_data.py --out /tmp/crnn-newchars      # the new dataset
    python bench/finetune_vs_scratch.py --data /tmp/crnn-newchars --epochs 8 [--frozen]

Every run goes through the real command line (`crnn train ... --epochs N`, or
`--max-minutes M` with --minutes):

- fine-tune: `--init codes-small` (alphabet union: 36 known + 5 new output rows);
- fine-tune, frozen (with --frozen): the same with `--freeze-backbone 1`;
- scratch: `--model crnn-small` (the bundled model's architecture), random weights.

"Equal time" is measured as equal epochs by default: the runs share the architecture, data
and batch size, so an epoch costs the same compute, while wall-clock budgets on a shared
machine gave one run 9 samples/s and the next 200 (both wall times are printed).

Each best model is then measured on the new set's val split (all of it, and the lines with a
new character) and on sample_data/codes/val, the old validation set, next to codes-small
itself. Markdown goes to stdout; run folders go under --runs (default /tmp/crnn-ft-runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.evaluate import evaluate  # noqa: E402
from crnn_core.metrics import score  # noqa: E402

NEW_CHARS = set("ÄÉÜ#/")


def run_training(name: str, args: list[str], runs: Path) -> tuple[Path, dict]:
    out = runs / name
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "crnn_core.cli.app", "train", *args, "--out", str(out)]
    print(f"{name}: {' '.join(cmd[3:])}", file=sys.stderr)
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr}")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return Path(result.stdout.strip()), {"wall": time.monotonic() - started, "epochs": len(history),
                                         "train_seconds": history[-1]["elapsed_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/crnn-newchars"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=None, help="a time budget per run instead of --epochs")
    parser.add_argument("--frozen", action="store_true", help="also run the --freeze-backbone 1 variant")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/crnn-ft-runs"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1: on a busy 2-core machine, 2 threads ran up to 20x slower)")
    args = parser.parse_args()
    budget = ["--max-minutes", str(args.minutes)] if args.minutes else ["--epochs", str(args.epochs)]
    common = [str(args.data), *budget, "--seed", str(args.seed), "--threads", str(args.threads)]
    variants = [("fine-tune (--init codes-small)", "finetune", ["--init", "codes-small"])]
    if args.frozen:
        variants.append(("fine-tune, --freeze-backbone 1", "finetune-frozen",
                         ["--init", "codes-small", "--freeze-backbone", "1"]))
    variants.append(("from scratch (crnn-small)", "scratch", ["--model", "crnn-small"]))
    old_val = REPO / "sample_data" / "codes" / "val"
    base = evaluate("codes-small", old_val)
    rows = [("codes-small as bundled", None, base, None, {})]
    for title, name, extra in variants:
        model, info = run_training(name, [*common, *extra], args.runs)
        new_report = evaluate(model, args.data / "val")
        rows.append((title, new_report, evaluate(model, old_val), model, info))

    print(f"New set: {args.data} (val {rows[1][1].scores.samples} lines); old set: {old_val}; "
          f"{' '.join(budget)} per training run (2 shared CPU cores).\n")
    print("| model | epochs | train s | new val accuracy | new val CER | lines with a new char | old val accuracy | old val CER |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for title, new_report, old_report, model, info in rows:
        if new_report is None:
            new_cols = "– | – | –"
        else:
            with_new = [r for r in new_report.results if NEW_CHARS & set(r.expected)]
            s = score([r.expected for r in with_new], [r.predicted for r in with_new])
            n = new_report.scores
            new_cols = (f"{n.accuracy:.2%} ({n.correct}/{n.samples}) | {n.cer:.4f} | "
                        f"{s.accuracy:.2%} ({s.correct}/{s.samples})")
        o = old_report.scores
        seconds = f"{info['train_seconds']:.0f}" if info else "–"
        print(f"| {title} | {info.get('epochs', '–')} | {seconds} | {new_cols} | {o.accuracy:.2%} ({o.correct}/{o.samples}) | "
              f"{o.cer:.4f} |")


if __name__ == "__main__":
    main()

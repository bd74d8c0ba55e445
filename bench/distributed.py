"""One process with 2 threads vs 2 processes with 1 thread each (torchrun + DDP, gloo), side by side.

    python bench/distributed.py [--runs 3] [--model crnn-small] [--epochs 2]

Each run trains `--model` on sample_data/codes for `--epochs` epochs from scratch in a fresh
process tree and reads the training samples/s of the last epoch (the cache is full by then)
from metrics.jsonl; the two set-ups alternate so that machine noise hits both alike. It
prints every run, the medians and their ratio. With 2 processes the global batch is twice
--batch-size (each rank takes --batch-size); the same global batch is used for both by
default (16 = 1 x 16 = 2 x 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(kind: str, args, workdir: Path, index: int) -> dict:
    run = workdir / f"{kind}-{index}"
    crnn = [sys.executable, "-m", "crnn_core.cli.app", "train", str(REPO / "sample_data" / "codes"),
            "--model", args.model, "--epochs", str(args.epochs), "--out", str(run), "--patience", "99"]
    if kind == "1x2":
        cmd = [*crnn, "--threads", "2", "--batch-size", str(args.batch_size)]
    else:
        cmd = [*crnn, "--nproc", "2", "--batch-size", str(args.batch_size // 2)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{kind} failed:\n{result.stderr[-3000:]}")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"samples_per_s": history[-1]["samples_per_s"], "val_accuracy": history[-1]["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="crnn-small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (split over the processes)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"1x2": [], "2x1": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for kind in ("1x2", "2x1"):
                results[kind].append(run_once(kind, args, Path(tmp), i))
                print(f"run {i + 1} {kind}: {results[kind][-1]['samples_per_s']:.1f} samples/s, "
                      f"val accuracy {results[kind][-1]['val_accuracy']:.2%}", flush=True)
    med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in results.items()}
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}; model {args.model}, "
          f"global batch {args.batch_size}, epoch {args.epochs} of each run")
    print(f"1 process x 2 threads:   median {med['1x2']:.1f} samples/s")
    print(f"2 processes x 1 thread:  median {med['2x1']:.1f} samples/s")
    print(f"ratio 2x1 / 1x2: {med['2x1'] / med['1x2']:.3f}")


if __name__ == "__main__":
    main()

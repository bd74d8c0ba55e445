"""End-to-end `crnn predict` throughput: process start, model load, decoding, output.

    python bench/predict_throughput.py [--model codes-fast] [--backend auto] [--lines 2000] [--runs 3]

Feeds the sample validation images (repeated to --lines paths) on stdin to
`crnn predict - --format jsonl`, and reports the median wall time and lines/s over --runs
runs, plus the same for a single image (start-up cost). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], stdin: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codes-fast")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    images = sorted(str(p) for p in (REPO / "sample_data" / "codes" / "val").iterdir() if p.suffix in (".png", ".jpg"))
    paths = (images * (args.lines // len(images) + 1))[: args.lines]
    crnn = [sys.executable, "-m", "crnn_core.cli.app"]
    cmd = [*crnn, "predict", "-", "--model", args.model, "--format", "jsonl", "--batch-size", str(args.batch_size),
           "--backend", args.backend]
    one = [timed([*crnn, "predict", images[0], "--model", args.model, "--backend", args.backend], "")
           for _ in range(args.runs)]
    many = [timed(cmd, "\n".join(paths) + "\n") for _ in range(args.runs)]
    help_times = [timed([*crnn, "--help"], "") for _ in range(args.runs)]
    print(f"machine: {os.cpu_count()} cores; model {args.model}; backend {args.backend}; batch {args.batch_size}")
    print(f"crnn --help:             median {statistics.median(help_times):.3f} s  (runs: {', '.join(f'{t:.3f}' for t in help_times)})")
    print(f"crnn predict one.png:    median {statistics.median(one):.3f} s  (runs: {', '.join(f'{t:.3f}' for t in one)})")
    med = statistics.median(many)
    print(f"crnn predict {args.lines} paths: median {med:.3f} s = {args.lines / med:.0f} lines/s end to end "
          f"(runs: {', '.join(f'{t:.3f}' for t in many)})")


if __name__ == "__main__":
    main()

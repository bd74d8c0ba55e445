"""Training rate when other programs use the CPU: alone, beside one busy loop, beside two.

    python bench/accuracy_suite.py make --kinds captcha --out bench-out/proxy   # 10,000 captchas
    python bench/contention.py --data bench-out/proxy/captcha --json bench-out/contention.json

Rows: `fixed` (--threads set to all cores: the behaviour before cpushare.py), `passive`
(the same with OMP_WAIT_POLICY=PASSIVE), `adaptive` (the default now: no --threads, the
trainer follows the free cores). Columns: 0, 1 and 2 `python -c "while True: pass"` loops
started before the run. Each cell is one `crnn train --epochs 1 --max-minutes M`; its rate is
the first epoch's samples/s from metrics.jsonl (a partial epoch when the budget ends it).
Rounds alternate the rows so that drift of the machine's speed hits every row alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {
    "fixed": ({}, ["--threads", str(os.cpu_count() or 1)]),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", str(os.cpu_count() or 1)]),
    "adaptive": ({}, []),
}


def one_run(data: Path, loops: int, env_extra: dict, args: list[str], minutes: float) -> float:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            result = subprocess.run([sys.executable, "-m", "crnn_core.cli.app", "train", str(data), "--out", str(run),
                                     "--epochs", "1", "--max-minutes", str(minutes), *args],
                                    env=dict(os.environ, **env_extra), capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
            return float(first["samples_per_s"])
    finally:
        for process in busy:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=1.5, help="budget of each run")
    args = parser.parse_args()
    rates: dict[str, dict[int, list[float]]] = {row: {0: [], 1: [], 2: []} for row in ROWS}
    for _ in range(args.rounds):
        for loops in (0, 1, 2):
            for row, (env_extra, extra) in ROWS.items():
                rate = one_run(args.data, loops, env_extra, extra, args.minutes)
                rates[row][loops].append(rate)
                print(f"{row:9s} loops={loops}: {rate:.1f} samples/s", file=sys.stderr, flush=True)
    table = {row: {loops: statistics.median(values) for loops, values in cells.items()} for row, cells in rates.items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rates": rates, "median": table}, indent=1))
    print("| | alone | one busy loop | two busy loops |\n| --- | ---: | ---: | ---: |")
    for row, cells in table.items():
        print(f"| {row} | " + " | ".join(f"{cells[n]:.1f}" for n in (0, 1, 2)) + " |")


if __name__ == "__main__":
    main()

"""CTC head vs softmax head on the sample sets: accuracy, CER, training time, size, speed.

    python bench/heads.py [--max-minutes M] [--only NAME,...] [--out bench-out/heads]

Each row trains from scratch with `crnn train` defaults (30 epochs, early stopping) in a
fresh process, then measures the best model on the set's validation split in-process:
sequence accuracy, CER, and predict throughput over the validation images (decoding from
disk included, median of 3 passes). It prints a Markdown table and writes results.json.
The figures depend on the machine's load; the script records cores and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"

# name -> (dataset, model config, extra train options)
RUNS = {
    "codes-ctc-small": ("codes", "crnn-small", []),
    "codes-softmax-small": ("codes", "crnn-small", ["--head", "softmax"]),
    "codes-softmax-seed": ("codes", "seed-fusion", []),
    "chars-softmax-seed": ("chars", "seed-fusion", []),
    "chars-ctc-seed": ("chars", "seed-fusion", ["--head", "ctc"]),
}


def train(name: str, out: Path, max_minutes: float | None) -> tuple[Path, float]:
    data, model, extra = RUNS[name]
    run = out / name
    cmd = [sys.executable, "-m", "crnn_core.cli.app", "train", str(SAMPLE / data), "--model", model, "--out", str(run),
           *extra]
    if max_minutes:
        cmd += ["--max-minutes", str(max_minutes)]
    if (run / "last.pt").exists():
        cmd = [sys.executable, "-m", "crnn_core.cli.app", "train", "--resume", str(run)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{name}: training failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip()), seconds


def measure(name: str, model_path: Path, wall: float) -> dict:
    from crnn_core.evaluate import evaluate
    from crnn_core.modelfile import load_model
    from crnn_core.recognizer import Recognizer

    data = SAMPLE / RUNS[name][0]
    loaded = load_model(model_path)
    report = evaluate(model_path, data)
    recognizer = Recognizer(loaded)
    images = sorted(str(p) for p in (data / "val").iterdir() if p.suffix in (".png", ".jpg"))
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        count = sum(1 for _ in recognizer.predict_paths(images))
        rates.append(count / (time.perf_counter() - start))
    history = [json.loads(line) for line in (model_path.parent / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda h: (-h["val_cer"], h["val_accuracy"]))
    return {
        "name": name, "data": RUNS[name][0], "model": loaded.config.name,
        "head": loaded.config.head if loaded.config.head == "ctc"
        else f"softmax L={loaded.config.head_length} ({loaded.config.head_reduce})",
        "accuracy": report.scores.accuracy, "cer": report.scores.cer, "epochs": len(history),
        "best_epoch": best["epoch"], "train_seconds": history[-1]["elapsed_seconds"], "wall_seconds": wall,
        "bytes": model_path.stat().st_size, "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "predict_lines_per_s": statistics.median(rates), "predict_runs": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-minutes", type=float, default=None, help="time budget per training run")
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "heads")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only.split(","):
        model_path, wall = train(name, args.out, args.max_minutes)
        rows.append(measure(name, model_path, wall))
        print(f"done {name}: {rows[-1]['accuracy']:.2%}", file=sys.stderr, flush=True)
    machine = {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"machine: {machine}")
    print("| run | data | model | head | val accuracy | val CER | epochs (best) | training time | model file | "
          "parameters | predict lines/s |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['name']} | {r['data']} | {r['model']} | {r['head']} | {r['accuracy']:.2%} | {r['cer']:.4f} | "
              f"{r['epochs']} ({r['best_epoch']}) | {r['train_seconds']:.0f} s | {r['bytes'] / 1e6:.2f} MB | "
              f"{r['parameters']:,} | {r['predict_lines_per_s']:.0f} |")


if __name__ == "__main__":
    main()

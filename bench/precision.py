"""fp32 vs bf16 autocast training on this CPU: step rate side by side, then accuracy.

    python bench/precision.py [--model crnn-small] [--reps 5] [--train-epochs 0]

Step rate: the training step (augment-free, forward + CTC + backward + AdamW) on real sample
batches of 16 already in memory, the two precisions alternating, `--reps` timings of 20 steps
each; medians and their ratio. With --train-epochs E, it then trains the model on
sample_data/codes for E epochs with `crnn train --precision fp32` and `--precision bf16`
(same seed) and reports the best validation accuracy and CER of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def step_rates(model_name: str, reps: int) -> dict[str, list[float]]:
    from crnn_core.alphabet import Alphabet
    from crnn_core.config import load_model_config
    from crnn_core.data import discover, load_all, to_tensor_batch
    from crnn_core.model import CRNN
    from crnn_core.modelfile import preprocess_for

    config = load_model_config(model_name)
    dataset = discover(REPO / "sample_data" / "codes" / "train")
    samples = dataset.samples[:320]
    arrays, _ = load_all([s.path for s in samples], preprocess_for(config), 2)
    alphabet = Alphabet.from_texts(s.text for s in dataset.samples)
    order = np.argsort([a.shape[1] for a in arrays])  # width-bucketed, as training does
    batches = []
    for start in range(0, len(order), 16):
        idx = order[start:start + 16]
        images, widths = to_tensor_batch([arrays[i] for i in idx], width_multiple=16)
        ids = [alphabet.encode(samples[i].text) for i in idx]
        batches.append((images, torch.tensor([config.time_steps(w) for w in widths]),
                        torch.tensor([t for x in ids for t in x]), torch.tensor([len(x) for x in ids])))
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    models = {}
    for precision in rates:
        torch.manual_seed(0)
        model = CRNN(config, alphabet.num_classes).train()
        models[precision] = (model, torch.optim.AdamW(model.parameters(), 1e-3))
    for rep in range(reps + 1):  # the first round warms up oneDNN's kernel caches
        for precision, (model, opt) in models.items():
            start = time.perf_counter()
            seen = 0
            for images, in_len, flat, tgt_len in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    log_probs = model(images)
                loss = ctc(log_probs, flat, in_len, tgt_len)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += images.shape[0]
            if rep:
                rates[precision].append(seen / (time.perf_counter() - start))
    return rates


def train_accuracy(model_name: str, epochs: int) -> dict[str, dict]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            run = Path(tmp) / precision
            cmd = [sys.executable, "-m", "crnn_core.cli.app", "train", str(REPO / "sample_data" / "codes"),
                   "--model", model_name, "--epochs", str(epochs), "--precision", precision, "--out", str(run)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"{precision} training failed:\n{result.stderr[-2000:]}")
            history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            best = min(history, key=lambda h: (h["val_cer"], -h["val_accuracy"]))
            out[precision] = {"best_accuracy": best["val_accuracy"], "best_cer": best["val_cer"],
                              "best_epoch": best["epoch"], "seconds": history[-1]["elapsed_seconds"],
                              "median_samples_per_s": statistics.median(h["samples_per_s"] for h in history[1:])
                              if len(history) > 1 else history[0]["samples_per_s"]}
            print(f"{precision}: {json.dumps(out[precision])}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crnn-small")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--train-epochs", type=int, default=0)
    args = parser.parse_args()
    rates = step_rates(args.model, args.reps)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.model}, batch 16, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for k, v in rates.items():
        print(f"{k}: median {med[k]:.1f} samples/s (runs: {', '.join(f'{x:.1f}' for x in v)})")
    print(f"bf16 / fp32: {med['bf16'] / med['fp32']:.3f}")
    if args.train_epochs:
        train_accuracy(args.model, args.train_epochs)


if __name__ == "__main__":
    main()

"""What each --augment level costs, next to the training step it precedes.

    python bench/augment_cost.py [--model crnn-small] [--images 800] [--repeat 3]

Times `augment_batch()` per image (batches of 16, as training makes them) at every level on cached
sample_data/codes/train arrays, and one
training step (forward, CTC, backward, AdamW) per image at batch 16 for the architecture, all
on one thread. The share column is the augmentation time as a fraction of augmentation plus
step: how much slower an epoch gets (image loading is cached and does not count).
Markdown on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.alphabet import Alphabet  # noqa: E402
from crnn_core.augment import LEVELS, augment_batch  # noqa: E402
from crnn_core.config import load_model_config  # noqa: E402
from crnn_core.data import discover, load_all, to_tensor_batch, width_batches  # noqa: E402
from crnn_core.model import CRNN  # noqa: E402
from crnn_core.modelfile import preprocess_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crnn-small")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_model_config(args.model)
    dataset = discover(REPO / "sample_data" / "codes" / "train")
    samples = dataset.samples[: args.images]
    arrays, _ = load_all([s.path for s in samples], preprocess_for(config), 2)
    texts = [s.text for s in samples]

    rows = {}
    batches = width_batches([a.shape[1] for a in arrays], 16, np.random.default_rng(0))
    for level in LEVELS:
        times = []
        for r in range(args.repeat):
            rng = np.random.default_rng(r)
            started = time.perf_counter()
            for batch in batches:
                augment_batch([arrays[i] for i in batch], rng, level, config.max_width, 16)
            times.append((time.perf_counter() - started) / len(arrays) * 1000)
        rows[level] = statistics.median(times)
    # `none` is the plain batch (to_tensor_batch) every level pays; the others add to it

    alphabet = Alphabet.from_texts(texts)
    model = CRNN(config, alphabet.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctc = nn.CTCLoss(zero_infinity=True)
    step_times = []
    for r in range(args.repeat):
        started = time.perf_counter()
        for batch in batches:
            images, widths = to_tensor_batch([arrays[i] for i in batch], width_multiple=16)
            targets = [alphabet.encode(texts[i]) for i in batch]
            log_probs = model(images)
            loss = ctc(log_probs, torch.tensor([t for ids in targets for t in ids]),
                       torch.tensor([config.time_steps(w) for w in widths]), torch.tensor([len(t) for t in targets]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        step_times.append((time.perf_counter() - started) / len(arrays) * 1000)
    step = statistics.median(step_times)

    print(f"{args.model}, {len(arrays)} cached crops of sample_data/codes/train, 1 thread; "
          f"training step {step:.2f} ms per image (batch 16)\n")
    print("| --augment | ms per image | share of augment + step | samples/s ceiling |")
    print("| --- | --- | --- | --- |")
    for level, ms in rows.items():
        print(f"| {level} | {ms:.3f} | {ms / (ms + step):.1%} | {1000 / (ms + step):.0f} |")


if __name__ == "__main__":
    main()

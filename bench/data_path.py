"""What the training data path costs, measured in one process without subprocess noise.

    python bench/data_path.py [--model crnn-fast] [--batches 60] [--rounds 5]

Times `crnn train`'s step (forward, CTC, backward, clip, AdamW; fp32) over the same batches two
ways, alternating round by round so the machine's drift hits both alike: on tensors made
beforehand with the training augmentation (the bare step), and with `augment_batch` and target
encoding done inline before each step (what `crnn train` does). Prints both medians, their
ratio, and the augmentation's own cost per image. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crnn_core.alphabet import Alphabet  # noqa: E402
from crnn_core.augment import augment_batch  # noqa: E402
from crnn_core.config import TrainConfig, load_model_config  # noqa: E402
from crnn_core.data import discover, load_all, width_batches  # noqa: E402
from crnn_core.model import CRNN  # noqa: E402
from crnn_core.modelfile import preprocess_for  # noqa: E402
from crnn_core.train import TRAIN_WIDTH_MULTIPLE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crnn-fast")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    config, tc = load_model_config(args.model), TrainConfig()
    dataset = discover(REPO / "sample_data" / "codes" / "train")
    arrays, _ = load_all([s.path for s in dataset.samples], preprocess_for(config), 2)
    alphabet = Alphabet.from_texts(s.text for s in dataset.samples)
    ids = [alphabet.encode(s.text) for s in dataset.samples]
    rng = np.random.default_rng(0)
    order = width_batches([a.shape[1] for a in arrays], tc.batch_size, rng)[: args.batches]
    samples = sum(len(b) for b in order)

    def make(batch):
        images, widths = augment_batch([arrays[i] for i in batch], rng, tc.augment, config.max_width,
                                       TRAIN_WIDTH_MULTIPLE)
        targets = [ids[i] for i in batch]
        return (images, torch.tensor([config.time_steps(w) for w in widths]),
                torch.tensor([t for x in targets for t in x]), torch.tensor([len(x) for x in targets]))

    ready = [make(b) for b in order]
    torch.manual_seed(0)
    model = CRNN(config, alphabet.num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), tc.lr, weight_decay=tc.weight_decay)
    ctc = torch.nn.CTCLoss(zero_infinity=True)

    def step(batch) -> None:
        images, in_lengths, flat, lengths = batch
        loss = ctc(model(images), flat, in_lengths, lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()

    def bare() -> float:
        start = time.perf_counter()
        for batch in ready:
            step(batch)
        return samples / (time.perf_counter() - start)

    def inline() -> float:
        start = time.perf_counter()
        for b in order:
            step(make(b))
        return samples / (time.perf_counter() - start)

    def augment_only() -> float:
        start = time.perf_counter()
        for b in order:
            make(b)
        return (time.perf_counter() - start) / samples * 1e3

    bare(), inline()  # oneDNN builds its kernels for each shape once
    runs = {"bare": [], "inline": [], "augment": []}
    for _ in range(args.rounds):
        runs["bare"].append(bare())
        runs["inline"].append(inline())
        runs["augment"].append(augment_only())
    b, i = statistics.median(runs["bare"]), statistics.median(runs["inline"])
    print(f"{args.model}: {torch.get_num_threads()} threads, {args.batches} batches of {tc.batch_size}, {args.rounds} rounds")
    print(f"bare step on ready tensors:     {b:.1f} samples/s (runs {', '.join(f'{x:.1f}' for x in runs['bare'])})")
    print(f"augmentation inline, then step: {i:.1f} samples/s (runs {', '.join(f'{x:.1f}' for x in runs['inline'])})")
    print(f"ratio {i / b:.3f}; augment_batch + targets alone {statistics.median(runs['augment']):.4f} ms per image")


if __name__ == "__main__":
    main()

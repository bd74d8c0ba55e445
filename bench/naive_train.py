"""A naive training loop, as a typical crnn.pytorch-style script would write it: the baseline
our data path is compared with.

    python bench/naive_train.py [--model crnn-tiny] [--steps 60] [--warmup 5]

What makes it naive, on purpose: every step decodes its images from disk with PIL (no cache),
resizes to height 32 keeping the aspect ratio, pads every image to one fixed width (the widest
in the set), and runs a DataLoader with default settings (no workers) and default torch
threading. The model, loss (CTC), optimiser (AdamW) and batch size (16) are the same as
`crnn train`'s, and there is no augmentation (which only flatters the baseline). Prints
samples/s over `--steps` steps after `--warmup` steps, as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]


class LinesDataset(Dataset):
    def __init__(self, root: Path, chars: str, height: int = 32):
        rows = [line.split("\t") for line in (root / "labels.tsv").read_text(encoding="utf-8").splitlines() if line]
        self.items = [(root / name, text) for name, text in rows]
        self.index = {c: i + 1 for i, c in enumerate(chars)}
        self.height = height
        widths = []
        for path, _ in self.items:  # the fixed width: the widest image once resized
            with Image.open(path) as im:
                widths.append(round(im.width * height / im.height))
        self.width = min(800, max(widths))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, text = self.items[i]
        image = Image.open(path).convert("L")
        w = min(self.width, max(1, round(image.width * self.height / image.height)))
        image = image.resize((w, self.height), Image.BILINEAR)
        canvas = np.zeros((self.height, self.width), dtype=np.float32)
        canvas[:, :w] = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(canvas)[None], torch.tensor([self.index[c] for c in text]), len(text)


def collate(batch):
    images, targets, lengths = zip(*batch)
    return torch.stack(images), torch.cat(targets), torch.tensor(lengths)


def run(model_name: str, steps: int, warmup: int) -> dict:
    from crnn_core.config import load_model_config
    from crnn_core.model import CRNN

    root = REPO / "sample_data" / "codes" / "train"
    texts = [line.split("\t")[1] for line in (root / "labels.tsv").read_text(encoding="utf-8").splitlines() if line]
    chars = "".join(sorted(set("".join(texts))))
    data = LinesDataset(root, chars)
    loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate)
    config = load_model_config(model_name)
    model = CRNN(config, len(chars) + 1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    seen, step, start = 0, 0, None
    while step < warmup + steps:
        for images, targets, lengths in loader:
            if step == warmup:
                start, seen = time.perf_counter(), 0
            log_probs = model(images)
            input_lengths = torch.full((images.shape[0],), log_probs.shape[0], dtype=torch.long)
            loss = ctc(log_probs, targets, input_lengths, lengths)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += images.shape[0]
            step += 1
            if step >= warmup + steps:
                break
    elapsed = time.perf_counter() - start
    return {"model": model_name, "samples_per_s": seen / elapsed, "steps": steps, "width": data.width,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crnn-tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(run(args.model, args.steps, args.warmup)))


if __name__ == "__main__":
    main()

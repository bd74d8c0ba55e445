"""How far apart the `captcha` package's `O` and `0` are once its glyph pipeline has drawn them.

Most of the proxy captchas' errors are `O` read as `0` or back (docs/accuracy.md, "Captchas: a
taller input"). This measures how much of that is learnable at all:

1. The cell. `ImageCaptcha._draw_character` crops each glyph to its ink, rotates it, and warps
   it back onto the glyph's text box. Droid Sans Mono gives `O` and `0` the same box, so the
   width difference of their ink (the main cue in the font) is stretched away. Printed: each
   font size's box and ink width of both, and the ink width after the pipeline with the same
   random draws for both.
2. A dedicated classifier. Glyphs of `O` and `0` drawn by the package's own `_draw_character`
   (every random draw seeded per glyph), at full resolution, without the noise dots, arc,
   smoothing, colour or (unless `--squeeze`) the string's horizontal squeeze that a real
   captcha adds. By the data processing inequality those can only make the two harder to tell
   apart, so this is the easier problem. A small CNN trained on growing numbers of fresh
   glyphs; its error on 10,000 test glyphs at each size shows whether it levels off (an
   ambiguity no amount of data resolves) or keeps falling (a difference learnt from examples).
3. Optionally the CRNN's own rate: given `crnn eval --per-sample --json` reports on a captcha
   test split, how many test `O`/`0` were read as the other.

    python bench/captcha_ambiguity.py --json ambiguity.json [--per-sample captcha-eval.json ...]

Needs `pip install captcha` (0.7.1 was measured). CPU-heavy for a few minutes: run it alone.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_suite import _SeededSecrets  # noqa: E402  (the suite's seeded stand-in for `secrets`)

PAIR = "O0"
CANVAS = (64, 40)  # height, width: the largest cell (size 56) is 62 x 35


def squeeze_factor(rng: random.Random, captcha) -> float:
    """How much `create_captcha_image` narrows a string of 4-6 characters to fit 160 px: each
    character and each space (drawn before a character half the time) is as wide as its font
    size's text box, and the string is resized to 160 px when it is wider."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [draw.multiline_textbbox((1, 1), "0", font=f)[2] for f in captcha.truefonts]
    boxes = sum(1 + (rng.random() > captcha.word_space_probability) for _ in range(rng.randint(4, 6)))
    return min(1.0, 160 / sum(rng.choice(widths) for _ in range(boxes)))


def glyph(char: str, seed: int, captcha, squeeze: bool = False) -> np.ndarray:
    """One glyph's alpha (uint8, CANVAS), drawn by the package's pipeline from its own seed;
    with `squeeze`, narrowed as a random string around it would narrow it."""
    import captcha.image as ci

    rng = random.Random(seed)
    ci.secrets = _SeededSecrets(rng)  # type: ignore[assignment]
    im = captcha._draw_character(char, ImageDraw.Draw(Image.new("RGB", (1, 1))), (0, 0, 0, 255))
    if squeeze:
        im = im.resize((max(1, round(im.width * squeeze_factor(rng, captcha))), im.height), Image.Resampling.BILINEAR)
    alpha = np.asarray(im)[:, :, 3]
    out = np.zeros(CANVAS, dtype=np.uint8)
    h, w = min(alpha.shape[0], CANVAS[0]), min(alpha.shape[1], CANVAS[1])
    top, left = (CANVAS[0] - h) // 2, (CANVAS[1] - w) // 2
    out[top:top + h, left:left + w] = alpha[:h, :w]
    return out


def cells(captcha) -> dict:
    """Per font size: the text box both characters get, and their ink widths before the pipeline."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = {}
    for font in captcha.truefonts:
        rows[str(font.size)] = {c: {"box": list(draw.multiline_textbbox((1, 1), c, font=font)),
                                    "ink_width": font.getmask(c).getbbox()[2] - font.getmask(c).getbbox()[0]}
                                for c in PAIR}
    return rows


def ink_width(a: np.ndarray) -> int:
    cols = np.nonzero((a > 64).any(axis=0))[0]
    return int(cols[-1] - cols[0] + 1) if len(cols) else 0


def same_draws(captcha, n: int = 500) -> dict:
    """Both characters through the pipeline with identical random draws: ink widths, differing ink."""
    widths, differ = {c: [] for c in PAIR}, []
    for seed in range(n):
        a, b = (glyph(c, seed, captcha) for c in PAIR)
        widths[PAIR[0]].append(ink_width(a))
        widths[PAIR[1]].append(ink_width(b))
        ia, ib = a > 64, b > 64
        differ.append(float((ia ^ ib).sum() / max(1, (ia | ib).sum())))
    return {"glyphs": n, "mean_ink_width": {c: float(np.mean(v)) for c, v in widths.items()},
            "mean_share_of_ink_differing": float(np.mean(differ))}


def dataset(n: int, first_seed: int, captcha, squeeze: bool = False) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 2
    images = np.stack([glyph(PAIR[y], first_seed + i, captcha, squeeze) for i, y in enumerate(labels)])
    return images, labels


def classifier():
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    # 64 x 40 -> 32 x 20 -> 16 x 10 -> 8 x 5 -> 4 x 2, then the whole glyph's features at once.
    return nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), *block(64, 64), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(64 * 4 * 2, 2))


def train_and_test(train_x, train_y, test_x, test_y, epochs: int, seed: int) -> dict:
    """The classifier's test error after `epochs` passes over the training glyphs (one-cycle lr)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = classifier()
    x = torch.from_numpy(train_x).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(train_y).long()
    steps = epochs * ((len(x) + 127) // 128)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            batch = x[idx]
            # Shifts of up to 3 px: where the glyph sits in a real captcha is not a cue.
            dy, dx = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        tx = torch.from_numpy(test_x).float().div_(255.0).unsqueeze(1)
        pred = torch.cat([net(b).argmax(1) for b in tx.split(512)]).numpy()
    wrong = int((pred != test_y).sum())
    return {"train_glyphs": len(x), "epochs": epochs, "test_glyphs": len(test_y), "wrong": wrong,
            "error": wrong / len(test_y), "seconds": round(time.perf_counter() - start, 1),
            "wrong_by_truth": {c: int(((pred != test_y) & (test_y == k)).sum()) for k, c in enumerate(PAIR)}}


def crnn_rate(report: Path) -> dict:
    """In one `crnn eval --per-sample` report: test O/0 characters, and those read as the other."""
    rows = json.loads(report.read_text())["per_sample"]
    seen, swapped, strings_wrong, only_swaps = 0, 0, 0, 0
    for row in rows:
        ref, hyp = row["expected"], row["predicted"]
        seen += sum(ref.count(c) for c in PAIR)
        swaps = 0
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_opcodes():
            if op == "replace" and i2 - i1 == j2 - j1:
                swaps += sum(1 for a, b in zip(ref[i1:i2], hyp[j1:j2]) if {a, b} == set(PAIR))
        swapped += swaps
        if ref != hyp:
            strings_wrong += 1
            only_swaps += ref.translate(str.maketrans("O", "0")) == hyp.translate(str.maketrans("O", "0"))
    return {"report": str(report), "strings": len(rows), "strings_wrong": strings_wrong,
            "wrong_only_by_o_0": only_swaps, "o_0_in_references": seen, "o_0_read_as_the_other": swapped,
            "swap_rate": swapped / seen if seen else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,20000,60000", help="training glyphs for each classifier")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--squeeze", action="store_true",
                        help="narrow each glyph as its string would be narrowed to 160 px (the CRNN's view)")
    parser.add_argument("--per-sample", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import captcha.image as ci
    import torch

    torch.set_num_threads(2)
    cap = ci.ImageCaptcha(width=160, height=60)
    result = {"captcha_version": getattr(sys.modules.get("captcha"), "__version__", None),
              "cells": cells(cap), "same_draws": same_draws(cap)}
    print(json.dumps(result, indent=1), file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",")]
    test_x, test_y = dataset(args.test, 10_000_000, cap, args.squeeze)  # seeds no training glyph uses
    train_x, train_y = dataset(max(sizes), 0, cap, args.squeeze)
    result["squeeze"] = args.squeeze
    result["classifier"] = []
    for n in sizes:
        row = train_and_test(train_x[:n], train_y[:n], test_x, test_y, args.epochs, seed=0)
        print(json.dumps(row), file=sys.stderr)
        result["classifier"].append(row)
    result["crnn"] = [crnn_rate(p) for p in args.per_sample]
    for row in result["crnn"]:
        print(json.dumps(row), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

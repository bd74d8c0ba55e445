"""A dataset like sample_data/codes but with 5 characters the bundled model lacks: Ä É Ü # /.

    python bench/make_newchars_data.py [--out /tmp/crnn-newchars] [--train 1200] [--val 300] [--old 1200]

Labels come from sample_data/generate.py's plates, meter readings and codes; in 70% of them
one or two positions are replaced by a new character (so old characters still make up most
of the text). Images are rendered and degraded by the same generator functions. Writes
OUT/train/labels.tsv and OUT/val/labels.tsv; the images are not meant to be committed.

`--old N` also lists N lines of sample_data/codes/train (a fixed random choice, by absolute
path) in OUT/train/labels.tsv: rehearsal, the usual guard against forgetting. Fine-tuning
on the new lines alone cost the old validation set 2 to 3 points in our runs
(docs/accuracy.md); `--old 0` makes that set.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sample_data"))

import generate  # noqa: E402

NEW_CHARS = "ÄÉÜ#/"


def new_label(rng: random.Random) -> tuple[str, str]:
    text, kind = generate.random_label(rng)
    if rng.random() < 0.7:
        chars = list(text)
        for _ in range(rng.randint(1, 2)):
            chars[rng.randrange(len(chars))] = rng.choice(NEW_CHARS)
        text = "".join(chars).strip() or text
        if kind == "meter":
            kind = "code"  # the seven-segment drawing has digits and '.' only; render it with a font
    return text, kind


def write_split(folder: Path, count: int, rng: random.Random, old: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    if old:
        codes = REPO / "sample_data" / "codes" / "train"
        rows = (codes / "labels.tsv").read_text(encoding="utf-8").splitlines()
        random.Random(0).shuffle(rows)
        lines += [f"{codes / row.split(chr(9), 1)[0]}\t{row.split(chr(9), 1)[1]}\n" for row in rows[:old]]
    for i in range(count):
        text, kind = new_label(rng)
        image = generate.render(text, kind, rng)
        name = f"{i:05d}.png"
        image.save(folder / name)
        lines.append(f"{name}\t{text}\n")
    (folder / "labels.tsv").write_text("".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/crnn-newchars"))
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--old", type=int, default=1200, help="lines of sample_data/codes/train to mix into train")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    write_split(args.out / "train", args.train, rng, args.old)
    write_split(args.out / "val", args.val, rng)
    print(args.out)


if __name__ == "__main__":
    main()

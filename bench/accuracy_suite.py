"""Accuracy per CPU-minute on kinds of data this project did not make (issue: defaults that fit the data).

Four proxy sets, each from a generator unlike `sample_data/generate.py`, each with a test
split that no training or tuning ever sees:

| kind | generator | train / val / test | budget |
| --- | --- | --- | --- |
| captcha | the `captcha` package's ImageCaptcha (warped, rotated glyphs, arcs, dot noise), 4-6 of 0-9A-Z, 160x60 RGB | 10,000 / 500 / 1,000 | 10 min |
| digits | real handwritten digits (scikit-learn's `load_digits`, 8x8, 16 grey levels) upscaled, elastically warped, 3-8 side by side; test strings use only digit images that train never saw | 10,000 / 500 / 1,000 | 10 min |
| lines | printed text lines: 1-5 dictionary words up to 80 characters in Debian's free fonts (test: fonts train never saw), blur, skew, noise, textured paper, 32-64 px high | 20,000 / 1,000 / 1,000 | 30 min |
| plates | low-resolution plate photos: 1-3 letters and 2-4 digits in a crop 13-20 px high, perspective, JPEG quality 20-50, upscaled to 32 px | 10,000 / 500 / 1,000 | 10 min |
| tall-lines (only with --kinds) | the lines kind drawn 56-96 px high: the check that decided the fitted height's cap for long images (48 px; 64 px cost 5.8 points) | 20,000 / 1,000 / 1,000 | 30 min |
| dense-lines (only with --kinds) | the lines kind squeezed: text about 40-70% of a 32-48 px crop, drawn 0.5-0.85 of its width (condensed receipt fonts, fax-mode scans at half the horizontal resolution): the check of the fitted width scale | 20,000 / 1,000 / 1,000 | 20 min |

    pip install captcha scikit-learn            # bench only, not dependencies of crnn
    apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-urw-base35 fonts-noto-core \
        fonts-ebgaramond fonts-linuxlibertine fonts-lato fonts-crosextra-carlito fonts-crosextra-caladea \
        fonts-open-sans wamerican    # the lines and plates splits depend on exactly which fonts are installed
    python bench/accuracy_suite.py make --out bench-out/proxy           # deterministic, all cores
    python bench/accuracy_suite.py run --data bench-out/proxy --label defaults --json bench-out/defaults.json
    python bench/accuracy_suite.py run ... --label mine -- --height 48    # extra `crnn train` arguments after --
    python bench/accuracy_suite.py table bench-out/defaults.json bench-out/mine.json
    python bench/accuracy_suite.py fonts --model bench-out/accuracy-runs/lines-defaults/best.pt   # errors per test font
    crnn eval bench-out/accuracy-runs/digits-defaults/best.pt bench-out/proxy/digits/test --per-sample --json d.json
    python bench/accuracy_suite.py digits d.json ...    # errors per test digit image (each is in ~9 strings)

`run` trains each kind with `crnn train KIND --max-minutes BUDGET` (plus the extra arguments),
then `crnn eval` on the held-out test split: accuracy, CER, and the training time at which
validation accuracy first reached 90% and 95% (from metrics.jsonl). Run nothing else
meanwhile: two trainings at once slow each other by 3-20x.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import random
import string
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from crnn_core.metrics import char_errors
from crnn_core.synth_fonts import load_font

SIZES = {"captcha": (10_000, 500, 1_000), "digits": (10_000, 500, 1_000), "lines": (20_000, 1_000, 1_000),
         "plates": (10_000, 500, 1_000), "tall-lines": (20_000, 1_000, 1_000), "dense-lines": (20_000, 1_000, 1_000)}
BUDGET_MINUTES = {"captcha": 10, "digits": 10, "lines": 30, "plates": 10, "tall-lines": 30, "dense-lines": 20}
CORE_KINDS = ("captcha", "digits", "lines", "plates")  # `make` and `run` without --kinds
SPLITS = ("train", "val", "test")
CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype", "/usr/share/fonts/type1")
WORDS_FILE = Path("/usr/share/dict/words")


# -- fonts and words -------------------------------------------------------------------------------
def system_fonts() -> list[str]:
    found = sorted(str(p) for d in FONT_DIRS if Path(d).is_dir() for p in Path(d).rglob("*")
                   if p.suffix.lower() in (".ttf", ".otf"))
    usable = []
    for path in found:
        try:  # crnn synth's check: symbol fonts (Standard Symbols, Dingbats) draw Greek or pictures for "a"
            if set(string.ascii_letters + string.digits) <= load_font(path).chars:
                usable.append(path)
        except (OSError, ValueError):
            continue
    return usable


def font_split(fonts: list[str]) -> tuple[list[str], list[str]]:
    """Every fifth font (by name) is kept for the test split only."""
    test = fonts[::5]
    return [f for f in fonts if f not in test], test


def words() -> list[str]:
    if not WORDS_FILE.is_file():
        raise SystemExit(f"{WORDS_FILE} is missing: apt-get install wamerican")
    raw = WORDS_FILE.read_text(encoding="utf-8", errors="ignore").split()
    return [w for w in raw if w.isascii() and w.isalpha() and "'" not in w and 2 <= len(w) <= 14]


# -- generators: (split, index, seed) -> (image, text) ---------------------------------------------
class _SeededSecrets:
    """What captcha.image calls on `secrets`, drawn from the sample's own stream instead."""

    def __init__(self, rng: random.Random):
        self.choice = rng.choice
        self.randbelow = rng.randrange
        self.randbits = rng.getrandbits


def make_captcha(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    import captcha.image

    text = "".join(rng.choice(string.digits + string.ascii_uppercase) for _ in range(rng.randint(4, 6)))
    # The package draws from the global `random` before 0.5 and from `secrets` (which no seed
    # reaches) since: both are pointed at the sample's stream, or `make` differs on every run.
    random.seed(rng.random())
    captcha.image.secrets = _SeededSecrets(rng)  # type: ignore[assignment]
    return captcha.image.ImageCaptcha(width=160, height=60).generate_image(text), text


def _elastic(image: np.ndarray, rng: random.Random, strength: float) -> np.ndarray:
    """A smooth random displacement field (handwriting varies by more than an affine map)."""
    h, w = image.shape
    coarse = np.array([[rng.uniform(-1, 1) for _ in range(4)] for _ in range(8)], dtype=np.float32)
    dx = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)) * strength
    coarse = np.array([[rng.uniform(-1, 1) for _ in range(4)] for _ in range(8)], dtype=np.float32)
    dy = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)) * strength
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    sx = np.clip(np.round(xs + dx), 0, w - 1).astype(int)
    sy = np.clip(np.round(ys + dy), 0, h - 1).astype(int)
    return image[sy, sx]


def make_digits(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    images, targets = context["digit_pool"][split == "test"]
    count = rng.randint(3, 8)
    pieces, text = [], ""
    for _ in range(count):
        k = rng.randrange(len(images))
        glyph = Image.fromarray((images[k] * (255 / 16)).astype(np.uint8)).resize(
            (rng.randint(18, 30), 32), Image.Resampling.BICUBIC)
        pieces.append(np.asarray(glyph))
        text += str(targets[k])
    gap = [np.zeros((32, rng.randint(0, 6)), np.uint8) for _ in pieces]
    strip = np.concatenate([p for pair in zip(pieces, gap) for p in pair], axis=1)
    strip = _elastic(strip.astype(np.float32), rng, rng.uniform(0.5, 2.0))
    ink = 255 - np.clip(strip * rng.uniform(0.7, 1.0), 0, 255)
    paper = ink + np.array([[rng.gauss(0, 6) for _ in range(ink.shape[1])] for _ in range(32)])
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    return image.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=255), text


def _render_line(text: str, font_path: str, height: int, rng: random.Random) -> Image.Image:
    font = ImageFont.truetype(font_path, max(8, int(height * rng.uniform(0.55, 0.75))))
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = rng.randint(2, 12), max(1, (height - (bottom - top)) // 2)
    paper = rng.randint(170, 255)
    image = Image.new("L", (right - left + 2 * pad_x, height), paper)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=font, fill=rng.randint(0, max(0, paper - 120)))
    return image


def _degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    image = image.transform(image.size, Image.Transform.AFFINE, (1, rng.uniform(-0.3, 0.3), 0, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=int(np.asarray(image)[0, 0]))
    image = image.rotate(rng.uniform(-2, 2), resample=Image.Resampling.BILINEAR, fillcolor=int(np.asarray(image)[0, 0]))
    array = np.asarray(image).astype(np.float32)
    if rng.random() < 0.5:  # paper texture: low-frequency blotches
        blotch = Image.fromarray(np.array([[rng.uniform(-25, 25) for _ in range(12)] for _ in range(3)], np.float32))
        array += np.asarray(blotch.resize(image.size, Image.Resampling.BICUBIC))
    array += np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 12), array.shape)
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image


def line_spec(rng: random.Random, split: str, context: dict) -> tuple[str, str]:
    """A line's text and font: the first draws of its stream (`fonts` replays them without drawing)."""
    fonts = context["test_fonts"] if split == "test" else context["train_fonts"]
    vocabulary = context["words"]
    text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 5)))
    text = text.capitalize() if rng.random() < 0.5 else text
    if rng.random() < 0.3:
        text += rng.choice(".,;:!?")
    return text[:80], rng.choice(fonts)


def make_line(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    text, font = line_spec(rng, split, context)
    image = _render_line(text, font, rng.randint(32, 64), rng)
    return _degrade(image, rng), text


def make_tall_line(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    """The lines kind scanned finer: 56-96 px high (median 76), which the fitted height reads at 48 px."""
    text, font = line_spec(rng, split, context)
    image = _render_line(text, font, rng.randint(56, 96), rng)
    return _degrade(image, rng), text


def make_dense_line(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    """The lines kind packed tight: glyphs 0.5-0.85 of their width, text about 40-70% of a 32-48 px crop.

    What condensed receipt fonts and fax-mode scans (half the horizontal resolution) look like:
    at the model's height such a line has fewer CTC steps per character than the W/4 default
    gives comfortably (the issue's printed lines had labels that needed more steps than their
    image gave). At 32 px a label needs a median 0.68 of its image's steps, and 5% need more than all.
    """
    text, font = line_spec(rng, split, context)
    height = rng.randint(32, 48)
    drawn = _render_line(text, font, round(height * rng.uniform(0.75, 0.95)), rng)  # text 55-75% of that
    squeezed = drawn.resize((max(8, round(drawn.width * rng.uniform(0.5, 0.85))), drawn.height), Image.Resampling.BOX)
    paper = int(np.asarray(squeezed)[0, 0])
    image = Image.new("L", (squeezed.width, height), paper)
    image.paste(squeezed, (0, rng.randint(0, height - squeezed.height)))
    return _degrade(image, rng), text


def plate_spec(rng: random.Random, split: str, context: dict) -> tuple[str, str]:
    """A plate's text and font, as line_spec."""
    fonts = context["test_fonts"] if split == "test" else context["train_fonts"]
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(1, 3)))
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(2, 4)))
    return letters + rng.choice(["", " ", "-"]) + digits, rng.choice(fonts)


def make_plate(rng: random.Random, split: str, context: dict) -> tuple[Image.Image, str]:
    text, font = plate_spec(rng, split, context)
    sharp = _render_line(text, font, 48, rng)
    small_h = rng.randint(13, 20)
    small = sharp.resize((max(8, sharp.width * small_h // 48), small_h), Image.Resampling.BOX)
    w, h = small.size
    skew = [rng.uniform(-0.08, 0.08) * w for _ in range(4)]
    small = small.transform(small.size, Image.Transform.QUAD,
                            (skew[0], 0, skew[1], h, w + skew[2], h, w + skew[3], 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=int(np.asarray(small)[0, 0]))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=rng.randint(20, 50))
    blurry = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return blurry.resize((blurry.width * 32 // h, 32), Image.Resampling.BILINEAR), text


GENERATORS = {"captcha": make_captcha, "digits": make_digits, "lines": make_line, "plates": make_plate,
              "tall-lines": make_tall_line, "dense-lines": make_dense_line}
SPECS = {"lines": line_spec, "plates": plate_spec, "tall-lines": line_spec, "dense-lines": line_spec}  # the kinds drawn in fonts


def _context(kind: str) -> dict:
    if kind == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        order = np.random.default_rng(0).permutation(len(data.target))
        seen, unseen = order[: len(order) * 2 // 3], order[len(order) * 2 // 3:]  # test digits never in train
        return {"digit_pool": ((data.images[seen], data.target[seen]), (data.images[unseen], data.target[unseen]))}
    if kind in SPECS:
        train_fonts, test_fonts = font_split(system_fonts())
        if len(train_fonts) < 4:
            raise SystemExit("too few fonts: apt-get install fonts-liberation fonts-freefont-ttf fonts-urw-base35")
        return {"train_fonts": train_fonts, "test_fonts": test_fonts, "words": words() if kind != "plates" else []}
    return {}


_WORKER: dict = {}


def _init_worker(kind: str, out: str, context: dict) -> None:
    _WORKER.update(kind=kind, out=Path(out), context=context)


def _one(job: tuple[str, int]) -> str:
    split, index = job
    rng = random.Random(f"{_WORKER['kind']}:{split}:{index}")
    image, text = GENERATORS[_WORKER["kind"]](rng, split, _WORKER["context"])
    name = f"{index:06d}.png"
    image.save(_WORKER["out"] / split / name)
    return f"{name}\t{text}\n"


def make(out: Path, kinds: list[str], scale: float) -> None:
    for kind in kinds:
        started = time.monotonic()
        # Built once here, not in each worker: a missing package then stops `make` with one
        # message instead of every worker failing (and the pool restarting them) in turn.
        context = _context(kind)
        for split, count in zip(SPLITS, SIZES[kind]):
            folder = out / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            jobs = [(split, i) for i in range(max(1, int(count * scale)))]
            with Pool(os.cpu_count(), _init_worker, (kind, str(out / kind), context)) as pool:
                lines = pool.map(_one, jobs, chunksize=64)
            (folder / "labels.tsv").write_text("".join(lines), encoding="utf-8")
        if kind in SPECS:  # which fonts made which split: they depend on the machine's font packages
            (out / kind / "fonts.tsv").write_text("".join(
                f"{split}\t{font}\n" for split in ("train", "test") for font in context[f"{split}_fonts"]), encoding="utf-8")
        print(f"{kind}: {time.monotonic() - started:.0f} s", file=sys.stderr)


# -- running ---------------------------------------------------------------------------------------
def first_reaching(metrics: list[dict], level: float) -> float | None:
    return next((m["elapsed_seconds"] for m in metrics if m["val_accuracy"] >= level), None)


def run_kind(data: Path, kind: str, label: str, minutes: float, extra: list[str]) -> dict:
    run = Path("bench-out/accuracy-runs") / f"{kind}-{label}"
    started = time.monotonic()
    train = subprocess.run([*CRNN, "train", str(data / kind), "--out", str(run), "--force", "--max-minutes",
                            str(minutes), *extra], capture_output=True, text=True)
    wall = time.monotonic() - started
    if train.returncode != 0:
        return {"kind": kind, "error": train.stderr.strip().splitlines()[-1:]}
    report = subprocess.run([*CRNN, "eval", str(run / "best.pt"), str(data / kind / "test"), "--json", "-"],
                            capture_output=True, text=True)
    scores = json.loads(report.stdout)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"kind": kind, "label": label, "budget_min": minutes, "wall_s": round(wall, 1),
            "epochs": len(metrics), "test_accuracy": scores["accuracy"], "test_cer": scores["cer"],
            "samples": scores["samples"], "t90_s": first_reaching(metrics, 0.90), "t95_s": first_reaching(metrics, 0.95),
            "best_val_accuracy": max(m["val_accuracy"] for m in metrics), "extra": extra,
            "stop": next((line.strip() for line in train.stderr.splitlines() if "stopped:" in line), "")}


def table(paths: list[Path]) -> str:
    rows = ["| kind | run | budget | epochs | test accuracy | test CER | val 90% at | val 95% at | wall |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path in paths:
        for r in json.loads(path.read_text()):
            if "error" in r:
                rows.append(f"| {r['kind']} | {path.stem} | error: {r['error']} |")
                continue
            t = lambda s: "never" if s is None else f"{s:.0f} s"  # noqa: E731
            rows.append(f"| {r['kind']} | {r['label']} | {r['budget_min']:g} min | {r['epochs']} | "
                        f"{100 * r['test_accuracy']:.2f}% | {100 * r['test_cer']:.2f}% | {t(r['t90_s'])} | "
                        f"{t(r['t95_s'])} | {r['wall_s']:.0f} s |")
    return "\n".join(rows)


# -- errors by font (lines and plates) --------------------------------------------------------------
def test_fonts(data: Path, kind: str) -> dict[str, tuple[str, str]]:
    """Each test image's label and font, the font found by replaying the first draws of its stream
    (nothing is drawn)."""
    context = _context(kind)
    fonts = {}
    for line in (data / kind / "test" / "labels.tsv").read_text(encoding="utf-8").splitlines():
        name, text = line.split("\t", 1)
        drawn, font = SPECS[kind](random.Random(f"{kind}:test:{int(name[:6])}"), "test", context)
        if drawn != text:
            raise SystemExit(f"{data / kind / 'test' / name}: the replay gives {drawn!r} for the label {text!r}; "
                             "the fonts or the word list changed since `make`")
        fonts[name] = (text, font)
    return fonts


def by_font(data: Path, kind: str, models: list[str], mark: set[str]) -> str:
    """Test CER and exact accuracy per font for each model; `mark`: font file names to star."""
    tests = test_fonts(data, kind)
    folder = data / kind / "test"
    counts: dict[str, dict[str, list[int]]] = {}  # font -> model -> [edits, chars, exact, lines]
    for model in models:
        out = subprocess.run([*CRNN, "predict", "-m", model, "-f", "jsonl", str(folder)],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            result = json.loads(line)
            text, font = tests[Path(result["path"]).name]
            edits = char_errors(text, result["text"])
            for key in (Path(font).name, "all"):
                cell = counts.setdefault(key, {}).setdefault(model, [0, 0, 0, 0])
                for i, value in enumerate((edits, len(text), edits == 0, 1)):
                    cell[i] += value
    head = "| font | lines | " + " | ".join(f"{m}: edits | CER | exact" for m in models) + " |"
    rows = [head, "| --- | ---: |" + " ---: | ---: | ---: |" * len(models)]
    order = sorted((f for f in counts if f != "all"), key=lambda f: -counts[f][models[0]][0]) + ["all"]
    worst = order[0]  # one bad font can carry most of a set's errors: the rest shown apart
    counts[f"all but {worst}"] = {m: [a - b for a, b in zip(counts["all"][m], counts[worst][m])] for m in models}
    order.append(f"all but {worst}")
    for font in order:
        cells = [counts[font][m] for m in models]
        star = " *" if Path(font).stem.lower() in mark else ""
        rows.append(f"| {font}{star} | {cells[0][3]} | " + " | ".join(
            f"{e} | {100 * e / n:.3f}% | {100 * x / c:.1f}%" for e, n, x, c in cells) + " |")
    return "\n".join(rows)


# -- errors by digit image (digits) ------------------------------------------------------------------
def test_digit_images(data: Path) -> dict[str, list[int]]:
    """Each digits test string's pool images, in order, by replaying its stream's draws."""
    images, targets = _context("digits")["digit_pool"][1]
    strings = {}
    for line in (data / "digits" / "test" / "labels.tsv").read_text(encoding="utf-8").splitlines():
        name, text = line.split("\t", 1)
        rng = random.Random(f"digits:test:{int(name[:6])}")
        picks = []
        for _ in range(rng.randint(3, 8)):  # the order of make_digits' draws
            picks.append(rng.randrange(len(images)))
            rng.randint(18, 30)
        if "".join(str(targets[k]) for k in picks) != text:
            raise SystemExit(f"{data / 'digits' / 'test' / name}: the replay does not give the label {text!r}")
        strings[name] = picks
    return strings


def misread_images(strings: dict[str, list[int]], report: Path) -> tuple[dict[int, int], int]:
    """From a `crnn eval --per-sample` report: how many strings misread each pool image (a digit
    replaced by another), and how many wrong strings hold an error that is not such a swap."""
    counts: dict[int, int] = {}
    other = 0
    for row in json.loads(report.read_text())["per_sample"]:
        picks, ref, hyp = strings[Path(row["path"]).name], row["expected"], row["predicted"]
        ops = [op for op in difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_opcodes() if op[0] != "equal"]
        for tag, i1, i2, j1, j2 in ops:
            if tag == "replace" and i2 - i1 == j2 - j1:
                for i in range(i1, i2):
                    counts[picks[i]] = counts.get(picks[i], 0) + 1
        other += any(tag != "replace" or i2 - i1 != j2 - j1 for tag, i1, i2, j1, j2 in ops)
    return counts, other


def by_digit_image(data: Path, reports: list[Path]) -> str:
    """Per report: strings, pool images misread, and the images behind most wrong strings."""
    strings = test_digit_images(data)
    uses: dict[int, int] = {}
    for picks in strings.values():
        for k in set(picks):
            uses[k] = uses.get(k, 0) + 1
    rows = ["| report | strings right | pool images misread | misread in half their strings or more | "
            "strings wrong by the 3 worst images | wrong by a dropped or added digit |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    seen: list[set[int]] = []
    for report in reports:
        counts, other = misread_images(strings, report)
        summary = json.loads(report.read_text())
        worst = sorted(counts, key=lambda k: -counts[k])[:3]
        rows.append(f"| {report.name} | {summary['correct']}/{summary['samples']} | {len(counts)} | "
                    f"{sum(1 for k, n in counts.items() if 2 * n >= uses[k])} | "
                    f"{sum(counts[k] for k in worst)} ({', '.join(f'#{k} {counts[k]}/{uses[k]}' for k in worst)}) | "
                    f"{other} |")
        seen.append(set(counts))
    if len(seen) > 1:
        rows.append(f"\nImages misread by every report: {len(set.intersection(*seen))}; by any: {len(set.union(*seen))}; "
                    f"test pool: {len(uses)} images.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", type=Path, default=Path("bench-out/proxy"))
    m.add_argument("--kinds", default=",".join(CORE_KINDS), help=f"of {', '.join(GENERATORS)}")
    m.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (for a quick look)")
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=Path("bench-out/proxy"))
    r.add_argument("--kinds", default=",".join(CORE_KINDS), help=f"of {', '.join(GENERATORS)}")
    r.add_argument("--label", default="defaults")
    r.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (for a quick look)")
    r.add_argument("--json", type=Path, required=True)
    r.add_argument("extra", nargs=argparse.REMAINDER, help="-- then extra `crnn train` arguments")
    t = sub.add_parser("table")
    t.add_argument("reports", type=Path, nargs="+")
    f = sub.add_parser("fonts", help="test errors per font (lines, plates)")
    f.add_argument("--data", type=Path, default=Path("bench-out/proxy"))
    f.add_argument("--kind", choices=sorted(SPECS), default="lines")
    f.add_argument("--model", action="append", required=True, help="a model, run folder or bundled name (repeat)")
    f.add_argument("--mark", type=Path, help="a file of font paths, one a line: those fonts get a *")
    d = sub.add_parser("digits", help="test errors per pool digit image (digits)")
    d.add_argument("--data", type=Path, default=Path("bench-out/proxy"))
    d.add_argument("reports", type=Path, nargs="+", help="`crnn eval MODEL DATA/digits/test --per-sample --json` files")
    args = parser.parse_args()
    if args.command == "make":
        make(args.out, args.kinds.split(","), args.scale)
    elif args.command == "run":
        extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
        results = []
        for kind in args.kinds.split(","):
            results.append(run_kind(args.data, kind, args.label, BUDGET_MINUTES[kind] * args.budget_scale, extra))
            print(json.dumps(results[-1]), file=sys.stderr)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    elif args.command == "fonts":
        mark = {Path(line).stem.lower() for line in args.mark.read_text().split()} if args.mark else set()
        print(by_font(args.data, args.kind, args.model, mark))
    elif args.command == "digits":
        print(by_digit_image(args.data, args.reports))
    else:
        print(table(args.reports))


if __name__ == "__main__":
    main()

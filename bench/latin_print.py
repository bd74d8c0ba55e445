"""The bundled `latin-print` model: its font split, held-out test sets, the Tesseract comparison
and the fine-tuning table (issue: `crnn predict scan.png` reads printed text out of the box).

    apt-get install tesseract-ocr tesseract-ocr-eng fonts-liberation fonts-freefont-ttf \
        fonts-urw-base35 fonts-dejavu-core fonts-ebgaramond fonts-linuxlibertine fonts-lato \
        fonts-crosextra-carlito fonts-crosextra-caladea fonts-open-sans wamerican wfrench \
        wngerman wspanish witalian wportuguese
    python bench/latin_print.py fonts --out bench-out/latin            # train-fonts.txt, heldout-fonts.txt
    python bench/latin_print.py fonts --out bench-out/latin5 --per-family 6   # session 5's lists (models/README.md)
    python bench/latin_print.py heldout --out bench-out/latin/heldout  # three 1,000-line test sets
    python bench/latin_print.py compare --sets bench-out/latin/heldout/* --json bench-out/latin/compare.json
    python bench/latin_print.py finetune-data --out bench-out/latin/finetune
    python bench/latin_print.py finetune --data bench-out/latin/finetune --json bench-out/latin/finetune.json

Held-out fonts are whole families: four that were installed when the model was trained
(Liberation Serif, URW Bookman, FreeMono, Nimbus Sans Narrow) and every family of six packages
installed only afterwards (EB Garamond, Linux Libertine/Biolinum, Lato, Carlito, Caladea, Open
Sans). The test sets also use rendering settings outside `crnn synth`'s defaults (the model's
training ranges) and text it never trained on; nothing here was used to tune the model.

`compare` runs `crnn predict` (the default path: ONNX Runtime) and Tesseract 5 (`--psm 7`,
`eng`, all images in one process, OMP_THREAD_LIMIT=1), each pinned to one core with taskset,
one after the other on the same crops: CER, exact-line accuracy and lines/s of wall time
(process start included). Tesseract's typographic output (curly quotes, ligatures, long dashes)
is mapped to plain characters before scoring (`normalise`), for both readers. `--model` (repeatable)
compares several models, `--int8` adds each one quantised, `--no-tesseract` leaves Tesseract out;
every crnn reader is run once untimed on two images first, so a .pt file's ONNX export is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import unicodedata
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_latin_text  # noqa: E402  (the training text's alphabet)

from crnn_core.metrics import char_errors  # noqa: E402

HELD_OUT = re.compile(r"LiberationSerif|URWBookman|FreeMono|NimbusSansNarrow|EBGaramond|LinLibertine|LinBiolinum|"
                      r"Lato-|Carlito|Caladea|OpenSans", re.IGNORECASE)
NOT_TEXT = re.compile(r"LinLibertine_I|LinBiolinum_K|Hairline|Thin|D050000L|StandardSymbols|Dingbats|Z003|MathTeXGyre|"
                      r"Smallcaps|caps\d|STIX(Math|Integrals|Size|NonUnicode|Variants)|latinmodern-math|NotoSansMath|"
                      r"NotoSansSymbols|Nushu|\[wght\]|/lm(?!roman10-|sans10-|mono10-)[a-z]", re.IGNORECASE)
# Designs a held-out family comes from or shares (Noto Sans grew out of Open Sans; Tinos and
# Liberation Serif 2 are one design; TeX Gyre Bonum is URW Bookman): in no list.
LIKE_HELD_OUT = re.compile(r"NotoSans-|NotoSansDisplay-|Tinos|TeXGyreBonum", re.IGNORECASE)
# Families kept out of training and of the test sets since the fifth session: the set the
# shipped model is chosen on, so that the held-out sets stay unread until the choice is made.
DEV = re.compile(r"RobotoSlab|/PTF\d|Inconsolata|Cabin|Cantarell", re.IGNORECASE)  # PTF: PT Serif
BASIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
STYLES = {"Regular": 0, "Roman": 0, "Book": 0, "Bold": 1, "Italic": 2, "Oblique": 2, "Bold Italic": 3, "Bold Oblique": 3}
CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
# Rendering of the three test sets. Training used `crnn synth`'s defaults (height 32, blur 0-1,
# noise 0-8, rotate 1.5, JPEG 30-90 with chance 0.3, pad-x 0.05-0.5; from the fourth session also
# word spacing 0.6-1.6 and stretch 0.8-1.15). The sets were made before the spacing knobs existed:
# NEUTRAL keeps each font's own spacing, so they are made again byte for byte.
NEUTRAL = ["--word-spacing", "1", "--letter-spacing", "0", "--stretch", "1"]
SETS = {
    "prose-clean": ["--height", "48", "--font-size", "40-64", "--ink", "0-40", "--paper", "220-255", "--invert", "0",
                    "--texture", "0", "--noise", "0", "--blur", "0", "--jpeg", "0", "--rotate", "0", "--shear", "0",
                    "--perspective", "0", "--underline", "0", "--neighbours", "0", "--pad-x", "0.2-0.6",
                    "--pad-y", "0.1-0.3"],
    "docs-clean-32": ["--height", "32", "--font-size", "24-48", "--ink", "0-60", "--paper", "200-255", "--invert", "0",
                      "--texture", "0-6", "--noise", "0-3", "--blur", "0-0.5", "--jpeg", "0", "--rotate", "0.5",
                      "--shear", "0", "--perspective", "0", "--underline", "0", "--neighbours", "0"],
    "mixed-unseen": ["--height", "40", "--font-size", "16-56", "--blur", "0.5-1.4", "--noise", "4-12", "--jpeg", "0.6",
                     "--jpeg-quality", "25-60", "--rotate", "2.5", "--shear", "0.2", "--pad-x", "0.02-0.9",
                     "--neighbours", "0.2", "--underline", "0.1"],
}


def _family_files(per_family: int) -> list[str]:
    """Font files fontconfig lists that draw all of a-z A-Z 0-9, at most `per_family` a family
    (regular, bold, italic and bold italic first, then the rest by name), so that a family with
    36 weights is not drawn 36 times as often as one with four."""
    from crnn_core.synth_fonts import load_font

    listed = subprocess.run(["fc-list", "--format", "%{family[0]}|%{style[0]}|%{file}\n"], capture_output=True,
                            text=True, check=True)
    families: dict[str, list[tuple[int, str]]] = {}
    seen = set()
    for row in sorted(set(listed.stdout.splitlines())):
        family, style, path = row.split("|", 2)
        if not path.lower().endswith((".ttf", ".otf")) or NOT_TEXT.search(path) or Path(path).name in seen:
            continue
        try:
            if load_font(path).missing(BASIC):
                continue
        except OSError:
            continue
        seen.add(Path(path).name)
        families.setdefault(family, []).append((STYLES.get(style, len(STYLES)), path))
    return sorted(path for files in families.values() for _, path in sorted(files)[:per_family])


def font_lists(out: Path, per_family: int | None = None) -> tuple[Path, ...]:
    """train-fonts.txt and heldout-fonts.txt; with `per_family`, the list of the fifth training
    session: Latin-capable files only, capped a family, and dev-fonts.txt (families kept out of
    training and of the test sets, to choose a model on) beside them."""
    out.mkdir(parents=True, exist_ok=True)
    train, held, dev = out / "train-fonts.txt", out / "heldout-fonts.txt", out / "dev-fonts.txt"
    if per_family is None:
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True)
        fonts = sorted({f for f in listed.stdout.splitlines() if f.lower().endswith((".ttf", ".otf", ".pfb", ".t1"))})
        fonts = [f for f in fonts if not NOT_TEXT.search(f)]
        train.write_text("".join(f + "\n" for f in fonts if not HELD_OUT.search(f)), encoding="utf-8")
        held.write_text("".join(f + "\n" for f in fonts if HELD_OUT.search(f)), encoding="utf-8")
        return train, held
    fonts = [f for f in _family_files(per_family) if not HELD_OUT.search(f) and not LIKE_HELD_OUT.search(f)]
    train.write_text("".join(f + "\n" for f in fonts if not DEV.search(f)), encoding="utf-8")
    dev.write_text("".join(f + "\n" for f in fonts if DEV.search(f)), encoding="utf-8")
    return train, dev


def licence_words() -> list[str]:
    words = []
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        if path.is_file():
            words += unicodedata.normalize("NFC", path.read_text(encoding="utf-8", errors="ignore")).split()
    return words


def docstring_words() -> list[str]:
    """The docstrings of Python's standard library (the interpreter running this script)."""
    import ast
    import sysconfig

    words = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
                words += ast.get_docstring(node).split()
    return words


def prose_lines(words: list[str], count: int, seed: int) -> list[str]:
    """Running English text the model never trained on, cut into chunks of 3-10 words, keeping
    those whose characters the model knows."""
    rng, lines, at = random.Random(seed), set(), 0
    while at < len(words):
        n = rng.randint(3, 10)
        text = " ".join(words[at:at + n])[:72].strip()
        at += n
        if set(text) <= make_latin_text.ALPHABET and not set(text) <= set(".-_=* "):
            lines.add(text)
    chosen = sorted(lines)
    rng.shuffle(chosen)
    return chosen[:count]


def make_heldout(out: Path, count: int) -> None:
    _, held = font_lists(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prose.txt").write_text("".join(t + "\n" for t in prose_lines(licence_words(), count, 7)), encoding="utf-8")
    (out / "docs.txt").write_text("".join(t + "\n" for t in prose_lines(docstring_words(), count, 8)), encoding="utf-8")
    subprocess.run([sys.executable, str(Path(__file__).parent / "make_latin_text.py"), "--out", str(out / "mixed.txt"),
                    "--count", str(count), "--seed", "99"], check=True)
    for name, text in (("prose-clean", "prose.txt"), ("mixed-unseen", "mixed.txt"), ("docs-clean-32", "docs.txt")):
        subprocess.run([*CRNN, "synth", str(out / name), "--text", str(out / text), "--count", str(count), "--fonts",
                        str(held), "--seed", "11", "--val-fraction", "0", "--force", *SETS[name], *NEUTRAL], check=True)


# -- scoring ---------------------------------------------------------------------------------------
TYPOGRAPHIC = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "‚": "'", "—": "-", "–": "-",
                             "‐": "-", "‑": "-", "«": '"', "»": '"', "…": "..."})


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text.translate(TYPOGRAPHIC)).split())


def score(labels: list[str], readings: list[str]) -> dict:
    errors = sum(char_errors(t, normalise(r)) for t, r in zip(labels, readings))
    exact = sum(normalise(r) == t for t, r in zip(labels, readings))
    return {"cer": errors / sum(len(t) for t in labels), "accuracy": exact / len(labels), "lines": len(labels)}


def read_set(folder: Path) -> tuple[list[Path], list[str]]:
    rows = [line.split("\t", 1) for line in (folder / "train" / "labels.tsv").read_text(encoding="utf-8").splitlines()]
    return [folder / "train" / name for name, _ in rows], [text for _, text in rows]


def run_crnn(paths: list[Path], model: str, extra: list[str]) -> tuple[list[str], float]:
    command = ["taskset", "-c", "0", *CRNN, "predict", "--model", model, "--format", "jsonl", "--threads", "1",
               *extra, "-"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # once untimed on two images: a model given as a .pt file is exported to ONNX (and quantised) on first use
    subprocess.run(command, input="".join(f"{p}\n" for p in paths[:2]), capture_output=True, text=True, check=True,
                   env=env)
    started = time.monotonic()
    done = subprocess.run(command, input="".join(f"{p}\n" for p in paths), capture_output=True, text=True,
                          check=True, env=env)
    wall = time.monotonic() - started
    by_path = {r["path"]: r["text"] for r in map(json.loads, done.stdout.splitlines())}
    return [by_path[str(p)] for p in paths], wall


def run_tesseract(paths: list[Path], work: Path) -> tuple[list[str], float]:
    listing = work / "tesseract-list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    started = time.monotonic()
    done = subprocess.run(["taskset", "-c", "0", "tesseract", str(listing), "stdout", "--psm", "7", "-l", "eng"],
                          capture_output=True, text=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    wall = time.monotonic() - started
    pages = done.stdout.split("\f")  # one page per image, each ended by a form feed but the last
    if len(pages) != len(paths):
        raise SystemExit(f"tesseract gave {len(pages)} pages for {len(paths)} images")
    return [p.strip() for p in pages], wall


def compare(sets: list[Path], models: list[str], int8: bool, tesseract: bool) -> list[dict]:
    readers = [(f"crnn {m}", m, []) for m in models]
    readers += [(f"crnn {m} int8", m, ["--quantize", "int8"]) for m in models if int8]
    rows = []
    for folder in sets:
        paths, labels = read_set(folder)
        for name, model, extra in readers + ([("tesseract", None, None)] if tesseract else []):
            readings, wall = run_tesseract(paths, folder) if model is None else run_crnn(paths, model, extra)
            rows.append({"set": folder.name, "reader": name, **score(labels, readings), "wall_s": round(wall, 2),
                         "lines_per_s": len(paths) / wall})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# -- fine-tuning -----------------------------------------------------------------------------------
FINETUNE_SIZES = {"train": 400, "val": 100, "test": 1000}


def make_finetune(out: Path) -> None:
    """A few hundred lines of another style: the proxy suite's printed lines (its own renderer,
    32-64 px, textured paper, shear up to 0.3), test lines in fonts its train lines never use."""
    import accuracy_suite as suite

    context = suite._context("lines")
    for split, count in FINETUNE_SIZES.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        with Pool(os.cpu_count(), suite._init_worker, ("lines", str(out), context)) as pool:
            lines = pool.map(suite._one, [(split, i) for i in range(count)], chunksize=32)
        (out / split / "labels.tsv").write_text("".join(lines), encoding="utf-8")


def finetune(data: Path, minutes: list[float], runs: Path, extra_args: list[str]) -> list[dict]:
    rows = []
    for budget in minutes:
        for start, extra in (("scratch (defaults)", []), ("--init latin-print", ["--init", "latin-print"])):
            run = runs / f"{'init' if extra else 'scratch'}-{budget:g}{'-long' if extra_args else ''}"
            started = time.monotonic()
            subprocess.run([*CRNN, "train", str(data), "--out", str(run), "--force", "--max-minutes", str(budget),
                            *extra, *extra_args], check=True, capture_output=True)
            wall = time.monotonic() - started
            scores = json.loads(subprocess.run([*CRNN, "eval", str(run / "best.pt"), str(data / "test"), "--json", "-"],
                                               capture_output=True, text=True, check=True).stdout)
            epochs = len((run / "metrics.jsonl").read_text().splitlines())
            rows.append({"budget_min": budget, "start": start, "train_args": extra_args, "accuracy": scores["accuracy"], "cer": scores["cer"],
                         "samples": scores["samples"], "epochs": epochs, "wall_s": round(wall, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fo = sub.add_parser("fonts")
    fo.add_argument("--out", type=Path, default=Path("bench-out/latin"))
    fo.add_argument("--per-family", type=int, help="the fifth session's lists: Latin-capable files, at most N a family, "
                    "and dev-fonts.txt")
    h = sub.add_parser("heldout")
    h.add_argument("--out", type=Path, default=Path("bench-out/latin/heldout"))
    h.add_argument("--count", type=int, default=1000)
    c = sub.add_parser("compare")
    c.add_argument("--sets", type=Path, nargs="+", required=True)
    c.add_argument("--model", action="append", help="a model name or .pt file; repeatable (default: latin-print)")
    c.add_argument("--int8", action="store_true", help="also read with each model quantised (--quantize int8)")
    c.add_argument("--no-tesseract", dest="tesseract", action="store_false")
    c.add_argument("--json", type=Path, required=True)
    sub.add_parser("finetune-data").add_argument("--out", type=Path, default=Path("bench-out/latin/finetune"))
    f = sub.add_parser("finetune")
    f.add_argument("--data", type=Path, default=Path("bench-out/latin/finetune"))
    f.add_argument("--minutes", default="5,15")
    f.add_argument("--runs", type=Path, default=Path("bench-out/latin/finetune-runs"))
    f.add_argument("--json", type=Path, required=True)
    f.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then extra `crnn train` arguments for every run")
    args = parser.parse_args()
    if args.command == "fonts":
        print("\n".join(map(str, font_lists(args.out, args.per_family))))
    elif args.command == "heldout":
        make_heldout(args.out, args.count)
    elif args.command == "compare":
        args.json.write_text(json.dumps(compare(args.sets, args.model or ["latin-print"], args.int8, args.tesseract), indent=1), encoding="utf-8")
    elif args.command == "finetune-data":
        make_finetune(args.out)
    else:
        extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        rows = finetune(args.data, [float(m) for m in args.minutes.split(",")], args.runs, extra)
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

"""`crnn synth`'s job: sample texts, pick fonts that have every glyph, render in parallel, write a dataset.

Sample i draws from its own stream, `random.Random(f"{seed}:{i}")`, and is written under a name
from i, so the same command writes the same bytes whatever the number of worker processes.
Images are written as they come; each split's labels.tsv is written atomically last, so a
dataset interrupted half-way has no label file that names a missing image.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .choices import DEFAULT_ARCHITECTURE
from .errors import CrnnError
from .modelfile import atomic_write_bytes
from .synth import RenderSettings, max_width_for, min_width_for, render_line
from .synth_fonts import Font
from .synth_text import clean_label

LABEL_FORMATS = ("tsv", "sidecar")
IMAGE_FORMATS = ("png", "jpg")
TEXT_TRIES = 20  # a random source gets this many draws to find a line some font can draw


class TextSource(Protocol):
    random: bool
    dropped: int

    def sample(self, rng: random.Random, index: int) -> str: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class SynthJob:
    """Everything a worker needs to render any sample (pickled once per worker)."""

    source: TextSource
    fonts: tuple[Font, ...]
    settings: RenderSettings = RenderSettings()
    seed: int = 0
    image_format: str = "png"
    fit_model: str = DEFAULT_ARCHITECTURE


@dataclass
class Rendered:
    index: int
    text: str | None  # None: no font could draw any text drawn for this index
    data: bytes | None
    skips: list[tuple[str, str]]  # (font, characters it lacks) for each font passed over
    undrawable: str = ""  # characters no font has, when text is None
    too_wide: bool = False  # wider than the fit model's max_width once at its height: training squeezes it


@dataclass
class FontSkips:
    lines: int = 0
    chars: Counter = field(default_factory=Counter)


@dataclass
class SynthResult:
    out: Path
    splits: dict[str, int]  # split folder -> samples written
    alphabet: str
    fonts: list[str]
    unusable_fonts: list[tuple[str, str]]
    font_skips: dict[str, FontSkips]
    undrawable: int  # samples given up: no font has all of the text's characters
    undrawable_chars: Counter
    too_wide: int
    source: str
    dropped_lines: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "splits": self.splits, "samples": sum(self.splits.values()),
            "alphabet": self.alphabet, "source": self.source, "dropped_source_lines": self.dropped_lines,
            "fonts": self.fonts, "unusable_fonts": [{"font": f, "reason": r} for f, r in self.unusable_fonts],
            "font_skips": {name: {"lines": s.lines, "chars": "".join(sorted(s.chars))}
                           for name, s in sorted(self.font_skips.items())},
            "undrawable_samples": self.undrawable, "undrawable_chars": "".join(sorted(self.undrawable_chars)),
            "too_wide_samples": self.too_wide,
            "seconds": round(self.seconds, 3),
        }


def _pick_font(fonts: tuple[Font, ...], text: str, rng: random.Random,
               skips: list[tuple[str, str]]) -> Font | None:
    """A font with every character of `text`, uniformly among those that have them all."""
    for i in rng.sample(range(len(fonts)), len(fonts)):
        missing = fonts[i].missing(text)
        if not missing:
            return fonts[i]
        skips.append((fonts[i].name, "".join(sorted(missing))))
    return None


def render_sample(job: SynthJob, index: int) -> Rendered:
    """Sample `index`: its text, a font that can draw it, the encoded image."""
    rng = random.Random(f"{job.seed}:{index}")
    skips: list[tuple[str, str]] = []
    undrawable = ""
    for _ in range(TEXT_TRIES if job.source.random else 1):
        text = clean_label(job.source.sample(rng, index))
        if text is None:
            continue
        font = _pick_font(job.fonts, text, rng, skips)
        if font is None:
            undrawable = "".join(sorted(set.intersection(*(f.missing(text) for f in job.fonts))))
            continue
        min_width = min_width_for(text, job.settings.height, job.fit_model)
        image = render_line(text, font.name, rng, job.settings, min_width)
        too_wide = image.width >= max_width_for(job.settings.height, job.fit_model)
        buffer = io.BytesIO()
        if job.image_format == "jpg":
            image.save(buffer, format="JPEG", quality=95)
        else:
            image.save(buffer, format="PNG")
        return Rendered(index, text, buffer.getvalue(), skips, too_wide=too_wide)
    return Rendered(index, None, None, skips, undrawable)


_worker_job: SynthJob | None = None


def _init_worker(job: SynthJob) -> None:
    global _worker_job
    _worker_job = job


def _render_in_worker(index: int) -> Rendered:
    return render_sample(_worker_job, index)


def _rendered(job: SynthJob, count: int, workers: int) -> Iterator[Rendered]:
    """Every sample in index order, rendered here or in `workers` processes."""
    if workers <= 1 or count < 2:
        yield from (render_sample(job, i) for i in range(count))
        return
    # spawn, not fork: the caller may hold threads (torch's, a test runner's) that fork would copy half-way
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(32, count // (workers * 8)))
    with context.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap(_render_in_worker, range(count), chunksize=chunk)


def check_output_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CrnnError(f"{out}: not a folder; give crnn synth a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CrnnError(f"{out}: not empty; give an empty or new folder, or --force to write into it "
                        "(files of the same names are replaced)")


def val_count(count: int, val_fraction: float) -> int:
    """Samples for val/: the last ones, so that train/ is the same set whatever the fraction's rounding."""
    return min(count, round(count * val_fraction))


def synthesize(out: Path, job: SynthJob, count: int, *, val_fraction: float = 0.1, label_format: str = "tsv",
               workers: int | None = None, force: bool = False, unusable_fonts: list[tuple[str, str]] | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> SynthResult:
    """Render `count` samples into OUT/train and OUT/val (the last `val_fraction` of them)."""
    out = Path(out)
    check_output_folder(out, force)
    max_width_for(job.settings.height, job.fit_model)  # an unknown --fit-model fails here, not in a worker
    started = time.monotonic()
    n_val = val_count(count, val_fraction)
    digits = max(6, len(str(count - 1)))
    labels: dict[str, list[str]] = {"train": [], "val": []} if n_val else {"train": []}
    for name in labels:
        (out / name).mkdir(parents=True, exist_ok=True)
    skips: dict[str, FontSkips] = {}
    undrawable, undrawable_chars, too_wide = 0, Counter(), 0
    workers = workers or os.cpu_count() or 1
    for done, sample in enumerate(_rendered(job, count, workers), start=1):
        for font, missing in sample.skips:
            entry = skips.setdefault(font, FontSkips())
            entry.lines += 1
            entry.chars.update(missing)
        too_wide += sample.too_wide
        if sample.text is None:
            undrawable += 1
            undrawable_chars.update(sample.undrawable)
        else:
            split = "train" if sample.index < count - n_val else "val"
            _write_sample(out / split, f"{sample.index:0{digits}d}.{job.image_format}", sample, label_format,
                          labels[split])
        if on_progress is not None:
            on_progress(done, count)
    if label_format == "tsv":
        for name, lines in labels.items():
            atomic_write_bytes(out / name / "labels.tsv", "".join(lines).encode("utf-8"))
    texts = [line.split("\t", 1)[1].rstrip("\n") for lines in labels.values() for line in lines]
    return SynthResult(out, {name: len(lines) for name, lines in labels.items()},
                       "".join(sorted(set("".join(texts)))), [f.name for f in job.fonts], unusable_fonts or [],
                       skips, undrawable, undrawable_chars, too_wide, job.source.describe(), job.source.dropped,
                       time.monotonic() - started)


def _write_sample(folder: Path, name: str, sample: Rendered, label_format: str, lines: list[str]) -> None:
    """The image (plainly: nothing names it until the labels are written) and its label."""
    (folder / name).write_bytes(sample.data)
    lines.append(f"{name}\t{sample.text}\n")  # kept for the alphabet even with sidecars
    if label_format == "sidecar":
        stem = name.rsplit(".", 1)[0]
        atomic_write_bytes(folder / f"{stem}.gt.txt", (sample.text + "\n").encode("utf-8"))

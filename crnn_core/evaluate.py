"""Evaluation of a model on a labelled dataset into a `Report`, and its JSON form.

The JSON report (documented in docs/report-format.md) is stable: keys are only ever added.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .confusion import ErrorAnalysis, analyse
from .data import Dataset, Problem, discover, is_image, load_all
from .errors import DatasetError
from .gates import GateOutcome
from .metrics import Scores, char_errors
from .calibration import Calibration, fit_readings
from .modelfile import LoadedModel, load_model, save_model
from .outputs import check_output_path, dumps
from .recognizer import Recognizer, recognize_arrays
from .runners import resolve_device

REPORT_FORMAT = "crnn-eval"
REPORT_VERSION = 2  # 2 added characters, confusions, gates, passed, baseline


@dataclass
class SampleResult:
    path: str
    expected: str
    predicted: str
    confidence: float
    errors: int  # character edit distance


@dataclass
class Report:
    model: str
    data: str
    scores: Scores
    seconds: float
    results: list[SampleResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    beam: int = 1
    constraint: dict[str, Any] | None = None  # the --pattern / --lexicon used, if any
    unmatched: int = 0  # samples for which the constraint found no accepted reading

    @property
    def lines_per_second(self) -> float:
        return self.scores.samples / self.seconds if self.seconds > 0 else 0.0

    def worst(self, count: int = 10) -> list[SampleResult]:
        """Wrong predictions, most character errors first (relative to length), then least confident."""
        wrong = [r for r in self.results if r.predicted != r.expected]
        wrong.sort(key=lambda r: (-r.errors / max(1, len(r.expected)), r.confidence))
        return wrong[:count]

    def analysis(self) -> ErrorAnalysis:
        """Per-character error counts and confusion pairs over every evaluated sample."""
        return analyse((r.expected, r.predicted) for r in self.results)

    def to_dict(self, per_sample: bool = False, outcome: GateOutcome | None = None) -> dict[str, Any]:
        s = self.scores
        analysis = self.analysis()
        report: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "model": self.model,
            "data": self.data,
            "samples": s.samples,
            "accuracy": s.accuracy,
            "cer": s.cer,
            "wer": s.wer,
            "correct": s.correct,
            "char_errors": s.char_errors,
            "chars": s.chars,
            "word_errors": s.word_errors,
            "words": s.words,
            "skipped": len(self.problems),
            "skipped_examples": [str(p) for p in self.problems[:20]],
            "seconds": self.seconds,
            "lines_per_second": self.lines_per_second,
            "decoder": "greedy" if self.beam <= 1 else f"beam-{self.beam}",
            "constraint": self.constraint,
            "unmatched": self.unmatched,
            "crnn_version": __version__,
            "worst": [vars(r) for r in self.worst(10)],
            "characters": analysis.characters_list(),
            "confusions": analysis.confusions_list(),
        }
        report.update((outcome or GateOutcome()).to_dict())
        if per_sample:
            report["per_sample"] = [vars(r) for r in self.results]
        return report

    def to_json(self, per_sample: bool = False, outcome: GateOutcome | None = None) -> str:
        return dumps(self.to_dict(per_sample, outcome), indent=2) + "\n"


def eval_split(path: str | Path, splits: tuple[str, ...] = ("test", "val")) -> Path:
    """The folder to read: DATA itself when it holds labels, else the first of DATA's `splits` it has."""
    path = Path(path)
    if path.is_dir():
        from .data import LIST_FILE_NAMES, SIDECAR_SUFFIX

        has_labels = any((path / n).is_file() for n in LIST_FILE_NAMES) or any(path.glob("*" + SIDECAR_SUFFIX))
        if not has_labels:
            for split in splits:
                if (path / split).is_dir():
                    return path / split
    return path


def _require_samples(source: Path, count: int, problems: list[Problem]) -> None:
    """Zero samples measure nothing: scores of 0 errors on them would pass every gate."""
    if count == 0:
        first = f", first: {problems[0]}" if problems else ""
        raise DatasetError(f"{source}: no usable samples ({len(problems)} problems{first})")


@dataclass
class Labelled:
    """A labelled set read for a model: its samples' arrays (None where unreadable) and problems."""

    source: Path
    dataset: Dataset
    arrays: list
    problems: list[Problem]

    @property
    def keep(self) -> list[int]:
        return [i for i, a in enumerate(self.arrays) if a is not None]


def read_labelled(data: str | Path, loaded: LoadedModel, labels: str, threads: int, on_progress,
                  splits: tuple[str, ...] = ("test", "val")) -> Labelled:
    """DATA's labelled split (eval_split), preprocessed for `loaded`; DatasetError if nothing is usable."""
    source = eval_split(data, splits)
    if source.is_file() and is_image(source):
        raise DatasetError(f"{source}: an image, not a labelled dataset (give a folder, or a list file of "
                           "PATH<TAB>LABEL lines)")
    dataset: Dataset = discover(source, labels)
    _require_samples(source, len(dataset.samples), dataset.problems)
    arrays, problems = load_all([s.path for s in dataset.samples], loaded.preprocess, threads, on_progress)
    read = Labelled(source, dataset, arrays, dataset.problems + problems)
    _require_samples(source, len(read.keep), read.problems)
    return read


def evaluate(model: str | Path | LoadedModel | None, data: str | Path, labels: str = "auto",
             batch_size: int = 64, beam: int = 1, device: str = "auto", threads: int = 2,
             on_progress=None, pattern: str | None = None, lexicon: str | Path | None = None) -> Report:
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    recognizer = Recognizer(loaded, device=device, batch_size=batch_size, beam=beam, threads=threads,
                            pattern=pattern, lexicon=lexicon)  # a bad --pattern fails before any image is read
    started = time.monotonic()  # lines/s counts reading the images too
    read = read_labelled(data, loaded, labels, threads, on_progress)
    keep = read.keep
    outputs = recognizer.predict_arrays([read.arrays[i] for i in keep])
    seconds = time.monotonic() - started
    scores = Scores()
    results = []
    unmatched = 0
    for i, out in zip(keep, outputs):
        unmatched += not out.matched  # the constraint found no accepted reading: scored as an empty one
        sample = read.dataset.samples[i]
        scores.add(sample.text, out.text)
        results.append(SampleResult(str(sample.path), sample.text, out.text, out.confidence,
                                    char_errors(sample.text, out.text)))
    constraint = recognizer.constraint.to_dict() if recognizer.constraint is not None else None
    return Report(str(loaded.path), str(read.source), scores, seconds, results, read.problems, beam,
                  constraint, unmatched)


@dataclass
class Calibrated:
    """What `calibrate` fitted and wrote."""

    model: str
    data: str
    out: Path
    calibration: Calibration
    accuracy: float  # the share of the lines read right
    problems: list[Problem]


def calibrate(model: str | Path | LoadedModel | None, data: str | Path, out: str | Path, labels: str = "auto",
              device: str = "auto", threads: int = 2, on_progress=None) -> Calibrated:
    """Fit the model's confidence calibration on labelled data (DATA, else its val/ split) and write
    the model with it to `out`; the weights are unchanged. The caller checks `out` against the
    model and the data's list files; here it is checked against the images read."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    read = read_labelled(data, loaded, labels, threads, on_progress, splits=("val",))
    check_output_path(out, [s.path for s in read.dataset.samples], "--out")
    texts = [read.dataset.samples[i].text for i in read.keep]
    calibration, accuracy = calibrate_arrays(loaded, [read.arrays[i] for i in read.keep], texts, Path(out),
                                             resolve_device(device))
    return Calibrated(str(loaded.path), str(read.source), Path(out), calibration, accuracy, read.problems)


def calibrate_arrays(loaded: LoadedModel, arrays: list, texts: list[str], out: Path, device=None
                     ) -> tuple[Calibration, float]:
    """Fit a calibration on preprocessed arrays and their labels (greedy readings) and write the
    model file with it, atomically, to `out`. Returns the map and the share of lines read right."""
    model = loaded.model.to(device) if device is not None else loaded.model
    model.eval()
    outputs = recognize_arrays(model, arrays, loaded.alphabet.decode, batch_size=64, device=device)
    correct = [o.text == expected for o, expected in zip(outputs, texts)]
    calibration = fit_readings(outputs, correct)
    save_model(out, model, loaded.alphabet, loaded.preprocess, dict(loaded.train, calibration=calibration.to_dict()))
    return calibration, sum(correct) / len(correct)

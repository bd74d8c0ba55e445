"""Subcommands: parse options, call crnn_core, hand results to `render`.

crnn_core (and so torch) is imported inside each command, never at module level.
"""

from __future__ import annotations

import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from crnn_core.choices import ALPHABET_MODES, AUGMENT_LEVELS, AUGMENT_RENAMED, DEFAULT_ARCHITECTURE, DEFAULT_AUGMENT, PRECISIONS
from crnn_core.heads import HEADS
from crnn_core.synth_settings import KNOB_HELP, RenderSettings, default_text

from . import render


class OutputFormat(str, Enum):
    text = "text"
    tsv = "tsv"
    jsonl = "jsonl"


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class Quantize(str, Enum):
    int8 = "int8"


class LabelMode(str, Enum):
    auto = "auto"
    filename = "filename"


def _choices(name: str, values) -> type[Enum]:
    """An option's choices as the str Enum Typer wants, from the one tuple the library checks against."""
    return Enum(name, {value: value for value in values}, type=str)


# crnn_core.choices and crnn_core.heads import nothing heavy, so `crnn --help` stays fast.
Head = _choices("Head", HEADS)
Precision = _choices("Precision", PRECISIONS)
AlphabetMode = _choices("AlphabetMode", ALPHABET_MODES)
Augment = _choices("Augment", AUGMENT_LEVELS + tuple(AUGMENT_RENAMED))  # the config check reads old names as new


def _path(value) -> Path:
    """A path argument as given: an empty one (an unset "$DATA") is a usage error, not the current folder."""
    if isinstance(value, Path):
        return value
    if value == "":
        raise typer.BadParameter("'' is an empty path (is a variable unset?)")
    return Path(value)


def _file_path(value) -> Path:
    """A path to write a file at: also not one ending in '/' (a folder, which Path would make a file name)."""
    if isinstance(value, str) and value.endswith(("/", os.sep)):
        raise typer.BadParameter(f"{value!r} names a folder; give a file name")
    return _path(value)


MAX_BEAM = 1024  # 64 reads no better than 16 (docs/accuracy.md); 20,000 took >20 s and 510 MB for one image
MODEL_HELP = "A model file, a run folder, or a bundled model's name."
PATTERN_HELP = ("Only readings the regex accepts in full, e.g. '[A-Z]{3}[0-9]{4}' (beam search over the "
                "regex's automaton; --beam defaults to 16 here).")
LABELS_HELP = "auto: list file or .gt.txt sidecars; filename: the file name is the label."
LEXICON_HELP = "Only readings that are a line of this UTF-8 file (beam search over a word trie)."


def train(
    data: Optional[Path] = typer.Argument(None, parser=_path, help="Dataset folder or list file (not needed with --resume)."),
    val: Optional[Path] = typer.Option(None, "--val", parser=_path, help="Validation set (default: DATA/val, else a hashed 10% of DATA)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Architecture: a bundled config name or a YAML file (default: crnn-fast)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_path, help="Run folder (default: runs/DATE-TIME)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Most epochs to run (default: 30; with --max-minutes, as many as the budget allows)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0, help="Time budget for the whole run (loading, training, the last validation and calibration), in minutes; the run stops cleanly before it, keeping the best model. 0: no limit."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Training samples per step, per process (default: 16)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate, above 0 and at most 10 (default: 0.002)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW's decoupled weight decay, at least 0 and at most 1 (default: 0.05; 1e-4 with --init)."),
    height: Optional[int] = typer.Option(None, "--height", min=8, help="Input height in px; the widest input scales alike (default: a bundled architecture's 32, or, when the training images are taller than 40 px, their median height rounded to 16, up to 64, or 48 for images more than 4 times as wide as high)."),
    width_scale: Optional[float] = typer.Option(None, "--width-scale", help="Stretch images across by this factor, 0.25 to 8, after resizing to the input height: more CTC steps per character (default: 1, or, when more than one label in ten would need more than half its image's steps, the smallest of 1.25, 1.5, 2, 2.5, 3 that brings nine in ten to half or less)."),
    head: Optional[Head] = typer.Option(None, "--head", help="ctc (any length) or softmax (at most L characters), overriding the architecture's."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Softmax head: positions L (default: the architecture's, else the longest label)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: auto)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: 0)."),
    resume: Optional[Path] = typer.Option(None, "--resume", parser=_path, help="Continue the run in this folder from its last.pt."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from this trained model (its architecture and preprocessing)."),
    alphabet: AlphabetMode = typer.Option("union", "--alphabet", help="With --init: union adds the data's new characters; new keeps only the data's; keep refuses unknown ones."),
    freeze_backbone: Optional[str] = typer.Option(None, "--freeze-backbone", metavar="EPOCHS|all", help="Train only the recurrent layers and head for the first EPOCHS epochs, or 'all' of them."),
    config: Optional[Path] = typer.Option(None, "--config", parser=_path, help="YAML with 'model:' and/or 'train:' sections (a run's config.yaml works)."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels", help=LABELS_HELP),
    augment: Optional[Augment] = typer.Option(None, "--augment", help=f"Training augmentation strength (default: {DEFAULT_AUGMENT}; 'default' is the old name of medium)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Stop after this many epochs without a better validation CER (default: 8; with --max-minutes, none: the budget ends the run)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: all cores)."),
    ema: Optional[float] = typer.Option(None, "--ema", help="Validate and keep an exponential moving average of the weights with this decay, at least 0 and below 1, warmed up over the first steps (default: 0.999; 0 turns it off)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Share of the recurrent layers' outputs zeroed in training, at least 0 and below 1 (default: 0)."),
    elastic: Optional[float] = typer.Option(None, "--elastic", help="Augmentation's smooth local warps of strokes, their size as a share of the input height, 0 to 1 (default: 0, none; 0.05 bends a 32-px line's strokes by about 1.6 px)."),
    precision: Optional[Precision] = typer.Option(None, "--precision", help="auto: bf16 (or fp16) autocast on CUDA; bf16 on CPUs with AVX-512 BF16 or AMX, else fp32."),
    force: bool = typer.Option(False, "--force", help="Replace the models already in the --out folder (without it, a folder holding best.pt or last.pt is refused)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Train in N processes on this machine (torchrun + DDP; gloo on CPU, nccl on GPU). --batch-size is per process."),
) -> None:
    """Train a model on DATA; writes best.pt, last.pt, config.yaml and metrics.jsonl to the run folder.

    The path of the best model is printed on stdout when training ends.
    """
    if nproc is not None and nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        raise typer.Exit(_launch_processes(nproc))

    from crnn_core.train import train as run_training

    if data is None and resume is None:
        raise typer.BadParameter("give a DATA folder, or --resume RUN", param_hint="DATA")
    # Every setting below is checked and combined in one place: crnn_core.config.resolve_run_config.
    model_flags = {"height": height, "width_scale": width_scale, "head": head.value if head else None,
                   "max_length": max_length}
    overrides = {k: v for k, v in {
        "epochs": epochs, "max_minutes": max_minutes, "batch_size": batch_size, "lr": lr, "device": device,
        "seed": seed, "augment": augment.value if augment else None, "patience": patience, "threads": threads,
        "precision": precision.value if precision else None, "freeze_backbone": _freeze_epochs(freeze_backbone),
        "ema": ema, "weight_decay": weight_decay, "dropout": dropout, "elastic": elastic,
    }.items() if v is not None}
    with render.TrainDisplay() as display:
        result = run_training(data, out, model, val=val, labels=labels.value, resume=resume, init=init,
                              init_alphabet=alphabet.value, overrides=overrides, on_event=display.on_event,
                              should_stop=display.should_stop, config_file=config, model_flags=model_flags,
                              force=force)
    if result.rank != 0:  # under torchrun, rank 0 reports for all
        return
    render.train_summary(result)
    best = result.run_dir / "best.pt"
    typer.echo(str(best if best.exists() else result.run_dir / "last.pt"))


def _freeze_epochs(value: Optional[str]):
    """--freeze-backbone: a number of epochs or 'all' (range checked with the other settings)."""
    if value is None or value.strip().lower() == "all":
        return None if value is None else "all"
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"a number of epochs or 'all', not {value!r}", param_hint="--freeze-backbone") from None


def _launch_processes(nproc: int) -> int:
    """Run this same `crnn train` command line under torchrun with N processes; its exit code.

    The children start with PYTHONSAFEPATH=1 (Python 3.11+), so a `crnn_core/` source folder
    in the current folder cannot shadow the installed package. A failed child is one line.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--nproc":
            del args[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del args[i]
            break
    # Share the cores out: N processes each with all cores' threads would oversubscribe them.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ["PYTHONSAFEPATH"] = "1"
    launch = ["--standalone", f"--nproc-per-node={nproc}", "-m", "crnn_core.cli.app", *args]
    render.note(f"launching {nproc} processes: PYTHONSAFEPATH=1 torchrun {' '.join(launch)}")
    # torchrun's agent logs each failure, then raises a many-line error: the children have
    # already said what went wrong in their own one line each.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(launch))
    except ChildFailedError as exc:
        # The root cause: the first process that exited by itself (torchrun then stops the
        # others with SIGTERM), else the lowest rank.
        exited = [(f.timestamp, rank, f) for rank, f in exc.failures.items() if f.exitcode >= 0]
        _, rank, failure = min(exited) if exited else min((0, r, f) for r, f in exc.failures.items())
        how = f"exit code {failure.exitcode}" if failure.exitcode >= 0 else failure.signal_name()
        render.error(f"{len(exc.failures)} of {nproc} training processes failed (rank {rank}: {how}); "
                     "their own messages are above")
        return 1
    except SignalException:  # Ctrl-C or SIGTERM: the agent has passed it on; each rank saved and said so
        return 130
    return 0


def evaluate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Argument(..., parser=_path, help="Labelled dataset: a folder (its test/ or val/ split if it has one) or a list file."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON report to FILE, or '-' for stdout."),
    per_sample: bool = typer.Option(False, "--per-sample", help="Include every sample's result in the JSON report."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels", help=LABELS_HELP),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images the model reads at once (more is faster, up to memory)."),
    beam: int = typer.Option(1, "--beam", min=1, max=MAX_BEAM, help="Beam width; 1 = greedy decoding."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: cuda when available)."),
    show: int = typer.Option(10, "--show", min=0, help="How many of the worst errors to list."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", min=0.0, max=1.0, help="Gate: exit 1 if sequence accuracy is below this fraction."),
    max_cer: Optional[float] = typer.Option(None, "--max-cer", min=0.0, help="Gate: exit 1 if the CER is above this fraction."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", parser=_path, help="Gate: compare with this earlier --json report; exit 1 on a regression."),
    max_regression: Optional[float] = typer.Option(None, "--max-regression", min=0.0, help="Largest accuracy drop / CER rise (fractions) allowed against --baseline (default: 0)."),
    junit: Optional[Path] = typer.Option(None, "--junit", parser=_file_path, help="Write JUnit XML: one test case per gate, the failed samples (capped)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", parser=_file_path, help="Write a Markdown summary (for a CI job summary)."),
    html: Optional[Path] = typer.Option(None, "--html", parser=_file_path, help="Write a self-contained HTML report with a gallery of the errors."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help=PATTERN_HELP),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", parser=_path, help=LEXICON_HELP),
) -> None:
    """Measure a model on labelled data: sequence accuracy, CER, WER, speed, the worst errors.

    With gates (--min-accuracy, --max-cer, --baseline), exits 1 when one fails, after writing every report.
    """
    from crnn_core import gates

    if max_regression is not None and baseline is None:
        raise typer.BadParameter("needs --baseline", param_hint="--max-regression")
    base = gates.load_baseline(baseline) if baseline is not None else None  # fail fast, before torch loads
    requested = {"--json": None if json_out in (None, "-") else json_out, "--junit": junit,
                 "--markdown": markdown, "--html": html}
    _eval_outputs(requested, [model, data, baseline, lexicon, *_list_files(data)])  # fail fast, as above
    from crnn_core import reports
    from crnn_core.evaluate import evaluate as run_eval
    from crnn_core.modelfile import atomic_write_bytes

    _check_one_constraint(pattern, lexicon)
    report = run_eval(model, data, labels=labels.value, batch_size=batch_size, beam=beam, device=device,
                      pattern=pattern, lexicon=lexicon)
    for line in (report.constraint or {}).get("notes", []):
        render.note(line)
    targets = _eval_outputs(requested, _report_inputs(report))  # now that the images are known too
    s = report.scores
    outcome = gates.check({"accuracy": s.accuracy, "cer": s.cer, "wer": s.wer}, s.samples, report.data,
                          min_accuracy, max_cer, base, max_regression or 0.0)
    to_stdout = json_out == "-"
    render.eval_summary(report, show, to_stderr=to_stdout)
    render.gate_summary(outcome, to_stderr=to_stdout)
    if json_out is not None:
        text = report.to_json(per_sample, outcome)
        if to_stdout:
            sys.stdout.write(text)
        else:
            atomic_write_bytes(targets["--json"], text.encode())
            render.note(f"wrote {json_out}")
    if junit is not None:
        atomic_write_bytes(targets["--junit"], reports.junit_xml(report, outcome))
        render.note(f"wrote {junit}")
    if markdown is not None:
        atomic_write_bytes(targets["--markdown"], render.printable(reports.markdown(report, outcome)).encode())
        render.note(f"wrote {markdown}")
    if html is not None:
        from crnn_core.report_html import html_report

        atomic_write_bytes(targets["--html"], render.printable(html_report(report, outcome)).encode())
        render.note(f"wrote {html}")
    if not outcome.passed:
        render.gate_failures(outcome)
        raise typer.Exit(1)


def _eval_outputs(requested: dict, inputs: list) -> dict:
    """The files to write for eval's report options, each checked against the inputs and the others."""
    from crnn_core.outputs import check_distinct_outputs, check_output_path

    check_distinct_outputs({option: Path(out) for option, out in requested.items() if out})
    return {option: check_output_path(out, inputs, option) for option, out in requested.items() if out is not None}


def _list_files(data: Path) -> list:
    """The list files eval may read in DATA (its own, or its test/ or val/ split's)."""
    from crnn_core.data import LIST_FILE_NAMES

    return [data / split / name for split in ("", "test", "val") for name in LIST_FILE_NAMES]


def _report_inputs(report) -> list:
    """Every file an evaluation read: the model, the data's list files, each image and its sidecar."""
    from crnn_core.data import SIDECAR_SUFFIX

    files = [report.model, report.data, *_list_files(Path(report.data))]
    for r in report.results:
        files += [r.path, Path(r.path).with_suffix(SIDECAR_SUFFIX)]
    return files


def _check_one_constraint(pattern: Optional[str], lexicon: Optional[Path]) -> None:
    if pattern is not None and lexicon is not None:
        raise typer.BadParameter("give --pattern or --lexicon, not both", param_hint="--pattern")


def _low(prediction, threshold: float) -> bool:
    value = prediction.p_correct if prediction.p_correct is not None else prediction.confidence
    return value < threshold


class _BadInput:
    """An argument that names no image to read (an empty path, a folder without images)."""

    def __init__(self, path: str, error: str) -> None:
        self.path, self.error = path, error


def _expand_inputs(inputs: List[str]):
    """Paths from arguments: files as given, folders as their images (sorted), '-' as stdin lines.

    An empty argument (an unset "$IMG") is an error, not the current folder; so is a folder
    with no image in it: each keeps its place in the output, as an unreadable file does.
    """
    from crnn_core.data import list_images

    for item in inputs:
        if item == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        elif item == "":
            yield _BadInput(item, "'': empty path (is a variable unset?)")
        elif Path(item).is_dir():
            images = list_images(Path(item))
            if not images:
                yield _BadInput(item, f"{item}: folder holds no images")
            yield from (str(p) for p in images)
        else:
            yield item


def _predictions(recognizer, items, max_wait: Optional[float]):
    """Predictions in input order; the bad arguments come through as error predictions in their place."""
    from itertools import groupby

    from crnn_core.recognizer import Prediction

    for bad, group in groupby(items, key=lambda item: isinstance(item, _BadInput)):
        if bad:
            yield from (Prediction(item.path, error=item.error) for item in group)
        else:
            yield from recognizer.predict_paths(group, max_wait=max_wait)


def _record(prediction, fmt: OutputFormat, min_confidence: Optional[float]) -> str:
    """One input's output line ('' for an error outside jsonl); never more than one line."""
    from crnn_core.outputs import dumps, tsv_field

    if prediction.error is not None:
        return dumps({"path": prediction.path, "error": prediction.error}) + "\n" if fmt is OutputFormat.jsonl else ""
    if fmt is OutputFormat.text:
        return prediction.text.replace("\r", "\\r").replace("\n", "\\n") + "\n"
    if fmt is OutputFormat.tsv:
        return f"{tsv_field(prediction.path)}\t{tsv_field(prediction.text)}\t{prediction.confidence:.4f}\n"
    record = {"path": prediction.path, "text": prediction.text, "confidence": round(prediction.confidence, 4)}
    if prediction.matched is not None:
        record["matched"] = prediction.matched
    if prediction.p_correct is not None:
        record["p_correct"] = round(prediction.p_correct, 4)
    if min_confidence is not None:
        record["low_confidence"] = _low(prediction, min_confidence)
    return dumps(record) + "\n"


def predict(
    inputs: Optional[List[str]] = typer.Argument(None, help="Images, folders, or '-' to read paths from stdin, one a line."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " (default: the bundled latin-print)"),
    fmt: OutputFormat = typer.Option(OutputFormat.text, "--format", "-f", help="text: the text; tsv: path, text, confidence; jsonl: one JSON object a line."),
    beam: int = typer.Option(1, "--beam", min=1, max=MAX_BEAM, help="Beam width; 1 = greedy decoding."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images the model reads at once (more is faster, up to memory)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: cuda when available)."),
    threads: int = typer.Option(2, "--threads", min=1, help="Image-decoding threads."),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="auto: ONNX Runtime for models that ship as ONNX (the bundled ones, a .onnx file) on the CPU, else torch; torch (eager); onnx (ONNX Runtime; a .pt model is exported once into a cache)."),
    quantize: Optional[Quantize] = typer.Option(None, "--quantize", help="int8: dynamic int8 quantisation of the LSTM and linear layers (CPU; see docs/performance.md for its accuracy cost)."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help=PATTERN_HELP),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", parser=_path, help=LEXICON_HELP),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Flag lines whose calibrated chance of being right (raw confidence if the model has no calibration) is below this."),
    low_exit_code: Optional[int] = typer.Option(None, "--low-exit-code", min=2, max=125, help="With --min-confidence: exit with this code when any line was flagged."),
) -> None:
    """Read the text in images. Results stream to stdout in input order; errors go to stderr.

    Exit code 1 if any input could not be read (the others still get results). With --pattern
    or --lexicon, an image with no accepted reading gets an empty text, confidence 0 and, in
    jsonl, "matched": false.
    """
    from crnn_core.recognizer import Recognizer

    if not inputs:  # stdin is read only when asked: a forgotten argument must not read a cron job's stdin
        raise typer.BadParameter("give images or folders, or '-' to read paths from stdin", param_hint="INPUTS")
    reading_stdin = "-" in inputs
    if reading_stdin and sys.stdin is None:  # started with descriptor 0 closed
        raise typer.BadParameter("'-' reads paths from stdin, which is closed", param_hint="INPUTS")
    _check_one_constraint(pattern, lexicon)
    recognizer = Recognizer(model, device=device, batch_size=batch_size, beam=beam, threads=threads,
                            backend=backend.value, quantize=quantize.value if quantize else None,
                            pattern=pattern, lexicon=lexicon)
    for line in recognizer.constraint.notes if recognizer.constraint else ():
        render.note(line)
    sys.stdout.reconfigure(line_buffering=reading_stdin)
    failures = unmatched = flagged = 0
    with render.PredictDisplay(None if reading_stdin else list(_expand_inputs(inputs))) as display:
        items = display.paths if display.paths is not None else _expand_inputs(inputs)
        for prediction in _predictions(recognizer, items, 0.2 if reading_stdin else None):
            if prediction.error is not None:
                failures += 1
                render.error(prediction.error)
            sys.stdout.write(_record(prediction, fmt, min_confidence))
            unmatched += prediction.matched is False
            flagged += prediction.error is None and min_confidence is not None and _low(prediction, min_confidence)
            display.advance()
    sys.stdout.flush()
    if unmatched:
        render.note(f"{unmatched} input(s) had no reading the {recognizer.constraint.kind} accepts (empty text)")
    if min_confidence is not None:
        measure = "calibrated chance of being right" if recognizer.calibration else "raw confidence (no calibration)"
        render.note(f"{flagged} line(s) below --min-confidence {min_confidence:g} ({measure})")
    if failures:
        render.note(f"{failures} input(s) could not be read")
        raise typer.Exit(1)
    if flagged and low_exit_code is not None:
        raise typer.Exit(low_exit_code)


def export(
    model: str = typer.Argument(..., help=MODEL_HELP),
    fmt: ExportFormat = typer.Option(..., "--format", "-f", help="onnx (onnxruntime, dynamic batch and width) or pt2 (torch.export)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_file_path, help="Output file (default: beside the model, same name); never the model itself, a folder or a device."),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists (without it, an existing file is refused)."),
) -> None:
    """Export a model, then check the file against the eager model on rendered text images."""
    from crnn_core.export import export as run_export
    from crnn_core.modelfile import load_model

    report = run_export(load_model(model), fmt.value, out, replace=force)
    render.export_summary(report)
    typer.echo(str(report.path))


def calibrate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Argument(..., parser=_path, help="Labelled lines like those the model will read: a folder (its val/ split if it has one) or a list file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_file_path, help="The model file to write, with the new calibration (required; never the model itself)."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels", help=LABELS_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: cuda when available)."),
    force: bool = typer.Option(False, "--force", help="Replace the --out file if it exists (never the model itself nor the data)."),
) -> None:
    """Refit a model's confidence calibration on labelled data; the weights stay as they are.

    For a model that will read other lines than its validation set's (a bundled model on your
    scans): `crnn predict --min-confidence` then flags by the chance of being right on lines like these.
    """
    from crnn_core.evaluate import calibrate as run_calibrate
    from crnn_core.modelfile import resolve_model
    from crnn_core.outputs import check_output_path

    if out is None:
        raise typer.BadParameter("give the model file to write", param_hint="--out")
    if out.suffix.lower() == ".onnx":
        raise typer.BadParameter("calibrate writes a torch model file (.pt); `crnn export` makes its ONNX twin",
                                 param_hint="--out")
    source = resolve_model(model)
    target = check_output_path(out, [source, data, *_list_files(data)], "--out", replace=force)
    result = run_calibrate(str(source), data, target, labels=labels.value, device=device)
    render.calibration_summary(result)
    typer.echo(str(out))


def info(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP + " (default: the bundled latin-print)"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Alphabet, architecture, parameter counts, preprocessing and training summary of a model."""
    from crnn_core.modelfile import load_model
    from crnn_core.model import parameter_breakdown

    loaded = load_model(model)
    summary = {
        "path": str(loaded.path),
        "bytes": loaded.path.stat().st_size if loaded.path else None,
        "name": loaded.config.name,
        "head": loaded.config.head,
        "alphabet": loaded.alphabet.chars,
        "classes": loaded.alphabet.num_classes,
        "parameters": parameter_breakdown(loaded.model),
        "preprocess": loaded.preprocess.to_dict(),
        "config": loaded.config.to_dict(),
        "train": loaded.train,
    }
    if as_json:
        from crnn_core.outputs import dumps

        typer.echo(dumps(summary, indent=2))
    else:
        render.model_info(summary, loaded.config)


def data_check(
    data: Path = typer.Argument(..., parser=_path, help="Dataset folder or list file."),
    model: str = typer.Option(DEFAULT_ARCHITECTURE, "--model", "-m", help="Architecture whose height and width rules to check against (a bundled one at the height and width scale training would fit to the data)."),
    head: Optional[Head] = typer.Option(None, "--head", help="Check against this head instead of the architecture's."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Softmax head: positions L to check labels against."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels", help=LABELS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    show: int = typer.Option(20, "--show", min=0, help="How many problems to list."),
) -> None:
    """Counts, alphabet, sizes, unreadable files and labels too long for the head (CTC at their width, or
    softmax's L). Exit code 1 if anything is wrong."""
    from crnn_core.config import apply_model_flags, input_from_architecture, load_model_config
    from crnn_core.datacheck import check_dataset

    config = apply_model_flags(load_model_config(model), head=head.value if head else None, max_length=max_length)
    result = check_dataset(data, config, labels.value, fit=input_from_architecture(model, None, None))
    if as_json:
        from crnn_core.outputs import dumps

        typer.echo(dumps({
            "model": result.model,
            "input": {"height": result.height, "width_scale": result.width_scale},
            "alphabet": result.alphabet.chars,
            "unseen_in_train": "".join(sorted(result.unseen_in_train())),
            "splits": [{"name": s.name, "source": s.source, "samples": s.samples, "readable": s.readable,
                        "label_lengths": list(s.label_lengths), "widths": list(s.widths),
                        "problems": [str(p) for p in s.problems], "unlabelled": s.unlabelled} for s in result.splits],
        }, indent=2))
    else:
        render.data_check(result, show)
    if result.problems:
        raise typer.Exit(1)


# -- crnn synth ---------------------------------------------------------------------------
def _span(value: str, option: str, lowest: float = 0.0) -> tuple[float, float]:
    """A knob's 'LOW-HIGH' (or one number for a fixed value) as (low, high); a usage error if not.

    Only knobs with `lowest` below 0 take negative numbers ('-0.02-0.08')."""
    match = re.fullmatch(r"\s*(-?[^-\s]+)\s*(?:-\s*(-?[^-\s]+)\s*)?", value)
    try:
        if match is None:
            raise ValueError
        span = (float(match[1]), float(match[2] if match[2] is not None else match[1]))
    except ValueError:
        raise typer.BadParameter(f"a number or a range LOW-HIGH of numbers at least {lowest:g}, not {value!r}",
                                 param_hint=option) from None
    if not (lowest <= span[0] <= span[1] < float("inf")):
        raise typer.BadParameter(f"a range LOW-HIGH with {lowest:g} <= LOW <= HIGH, not {value!r}", param_hint=option)
    return span


def _chance(value: float, option: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"a chance from 0 to 1, not {value:g}", param_hint=option)
    return value


def _knob(name: str) -> str:
    return KNOB_HELP[name]  # Typer adds the [default: ...] from the option's value


_DEFAULTS = RenderSettings()


class SynthLabels(str, Enum):
    tsv = "tsv"
    sidecar = "sidecar"


class SynthImage(str, Enum):
    png = "png"
    jpg = "jpg"


def synth(
    out: Path = typer.Argument(..., parser=_path, help="Folder to write the dataset into (new or empty, unless --force)."),
    text: Optional[Path] = typer.Option(None, "--text", parser=_path, help="Lines of a UTF-8 file, in order (starting over at the end)."),
    words: Optional[Path] = typer.Option(None, "--words", parser=_path, help="Random lines of --words-per-line words from this word list (one a line)."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Codes matching this pattern: literals, [A-Z0-9] classes, \\d \\w \\s, (a|b), ? * + {n} {m,n}; e.g. '[A-Z]{3} [0-9]{4}'."),
    words_per_line: str = typer.Option("1-3", "--words-per-line", help="With --words: words a line, a number or LOW-HIGH."),
    count: Optional[int] = typer.Option(None, "--count", "-n", min=1, help="Samples to make (default: the lines of --text, else 1000)."),
    fonts: Optional[List[str]] = typer.Option(None, "--fonts", help="A font file, a folder of fonts, a file listing font paths, 'system' (fc-list) or 'builtin' (Pillow's); repeatable (default: system, else builtin)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and options write the same bytes."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="Rendering processes (default: all cores)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=1.0, help="Share of the samples written to val/ (the last ones); 0: train/ only."),
    labels: SynthLabels = typer.Option(SynthLabels.tsv, "--labels", help="tsv: labels.tsv in each split; sidecar: NAME.gt.txt beside each image."),
    image_format: SynthImage = typer.Option(SynthImage.png, "--image-format", help="png (lossless) or jpg (quality 95; --jpeg adds compression artefacts either way)."),
    fit_model: str = typer.Option(DEFAULT_ARCHITECTURE, "--fit-model", help="Pad short crops so this architecture's CTC head has the steps each label needs."),
    height: int = typer.Option(_DEFAULTS.height, "--height", min=8, max=512, help=_knob("height")),
    font_size: str = typer.Option(default_text("font_size"), "--font-size", help=_knob("font_size")),
    ink: str = typer.Option(default_text("ink"), "--ink", help=_knob("ink")),
    paper: str = typer.Option(default_text("paper"), "--paper", help=_knob("paper")),
    invert: float = typer.Option(_DEFAULTS.invert, "--invert", help=_knob("invert")),
    texture: str = typer.Option(default_text("texture"), "--texture", help=_knob("texture")),
    noise: str = typer.Option(default_text("noise"), "--noise", help=_knob("noise")),
    blur: str = typer.Option(default_text("blur"), "--blur", help=_knob("blur")),
    jpeg: float = typer.Option(_DEFAULTS.jpeg, "--jpeg", help=_knob("jpeg")),
    jpeg_quality: str = typer.Option(default_text("jpeg_quality"), "--jpeg-quality", help=_knob("jpeg_quality")),
    rotate: float = typer.Option(_DEFAULTS.rotate, "--rotate", min=0.0, max=45.0, help=_knob("rotate")),
    shear: float = typer.Option(_DEFAULTS.shear, "--shear", min=0.0, max=1.0, help=_knob("shear")),
    perspective: float = typer.Option(_DEFAULTS.perspective, "--perspective", min=0.0, max=1.0, help=_knob("perspective")),
    underline: float = typer.Option(_DEFAULTS.underline, "--underline", help=_knob("underline")),
    neighbours: float = typer.Option(_DEFAULTS.neighbours, "--neighbours", help=_knob("neighbours")),
    pad_x: str = typer.Option(default_text("pad_x"), "--pad-x", help=_knob("pad_x")),
    pad_y: str = typer.Option(default_text("pad_y"), "--pad-y", help=_knob("pad_y")),
    word_spacing: str = typer.Option(default_text("word_spacing"), "--word-spacing", help=_knob("word_spacing")),
    letter_spacing: str = typer.Option(default_text("letter_spacing"), "--letter-spacing", help=_knob("letter_spacing")),
    stretch: str = typer.Option(default_text("stretch"), "--stretch", help=_knob("stretch")),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty (files of the same names are replaced)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Make labelled line images from fonts and text: OUT/train and OUT/val, ready for `crnn train OUT`.

    Each line is drawn in a font that has all of its characters (the fonts passed over are counted, per font), then degraded like a real crop. Prints OUT (or the JSON summary) on stdout.
    """
    from crnn_core.synth_fonts import find_fonts
    from crnn_core.synth_run import SynthJob, synthesize

    for option, given in (("--text", text), ("--words", words)):
        splits = [(out / split).resolve() for split in ("train", "val")]
        if given is not None and force and any(given.resolve().is_relative_to(split) for split in splits):
            raise typer.BadParameter(f"{given} is inside {out}/train or {out}/val, which --force rewrites",
                                     param_hint=option)
    source = _synth_source(text, words, pattern, _span(words_per_line, "--words-per-line"))
    settings = _render_settings(height, rotate, shear, perspective, spans={
        "font_size": font_size, "ink": ink, "paper": paper, "texture": texture, "noise": noise, "blur": blur,
        "jpeg_quality": jpeg_quality, "pad_x": pad_x, "pad_y": pad_y, "word_spacing": word_spacing,
        "stretch": stretch, "letter_spacing": letter_spacing}, chances={
        "invert": invert, "jpeg": jpeg, "underline": underline, "neighbours": neighbours})
    found = find_fonts(fonts)
    job = SynthJob(source, tuple(found.fonts), settings, seed, image_format.value, fit_model)
    total = count or (len(source.lines) if text is not None else 1000)
    with render.SynthDisplay(total) as display:
        result = synthesize(out, job, total, val_fraction=val_fraction, label_format=labels.value,
                            workers=workers, force=force, unusable_fonts=found.unusable, on_progress=display.update)
    _synth_report(out, result, as_json)


def _render_settings(height: int, rotate: float, shear: float, perspective: float, spans: dict[str, str],
                     chances: dict[str, float]) -> RenderSettings:
    """The degradation knobs as RenderSettings, each checked; a usage error names the flag at fault."""
    ranges = {name: _span(value, "--" + name.replace("_", "-"), lowest=-0.5 if name == "letter_spacing" else 0.0)
              for name, value in spans.items()}
    chances = {name: _chance(value, "--" + name) for name, value in chances.items()}
    if ranges["font_size"][0] < 4 or ranges["font_size"][1] > 400:
        raise typer.BadParameter("font sizes from 4 to 400 px", param_hint="--font-size")
    if not (0.2 <= ranges["stretch"][0] and ranges["stretch"][1] <= 5):
        raise typer.BadParameter("a width scale from 0.2 to 5", param_hint="--stretch")
    for name, highest in (("ink", 255), ("paper", 255)):
        if ranges[name][1] > highest:
            raise typer.BadParameter(f"grey levels from 0 to {highest}", param_hint="--" + name)
    if not (1 <= ranges["jpeg_quality"][0] and ranges["jpeg_quality"][1] <= 100):
        raise typer.BadParameter("a JPEG quality from 1 to 100", param_hint="--jpeg-quality")
    return RenderSettings(height=height, rotate=rotate, shear=shear, perspective=perspective, **ranges, **chances)


def _synth_report(out: Path, result, as_json: bool) -> None:
    """The summary on stdout (OUT, or JSON); a data set of no samples is a failure, not a result
    (a script would go on with it)."""
    written = sum(result.splits.values())
    if as_json:
        from crnn_core.outputs import dumps

        typer.echo(dumps(result.to_dict(), indent=2))
    else:
        render.synth_summary(result)
        if written:
            typer.echo(str(out))
    if not written:
        from crnn_core.errors import CrnnError

        raise CrnnError(f"{out}: no sample written: all {result.undrawable} given up, no font has every "
                        "character of their text (give --fonts with fonts that do)")


def _synth_source(text: Optional[Path], words: Optional[Path], pattern: Optional[str], per_line: tuple[float, float]):
    from crnn_core.synth_text import LineSource, PatternSource, WordSource

    given = [name for name, value in (("--text", text), ("--words", words), ("--pattern", pattern)) if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give one of --text FILE, --words FILE or --pattern PATTERN"
                                 + (f", not {' and '.join(given)}" if given else ""), param_hint="--text")
    if text is not None:
        return LineSource.from_file(text)
    if words is not None:
        low, high = int(per_line[0]), int(per_line[1])
        if low < 1 or low != per_line[0] or high != per_line[1]:
            raise typer.BadParameter("whole numbers of words from 1", param_hint="--words-per-line")
        return WordSource.from_file(words, low, high)
    return PatternSource(pattern)

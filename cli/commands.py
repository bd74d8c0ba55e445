"""Subcommands: parse options, call crnn_core, hand results to `render`.

crnn_core (and so torch) is imported inside each command, never at module level.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from crnn_core.choices import ALPHABET_MODES, AUGMENT_LEVELS, DEFAULT_ARCHITECTURE, PRECISIONS
from crnn_core.heads import HEADS

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
Augment = _choices("Augment", AUGMENT_LEVELS)


MODEL_HELP = "A model file, a run folder, or a bundled model's name."
PATTERN_HELP = ("Only readings the regex accepts in full, e.g. '[A-Z]{3}[0-9]{4}' (beam search over the "
                "regex's automaton; --beam defaults to 16 here).")
LEXICON_HELP = "Only readings that are a line of this UTF-8 file (beam search over a word trie)."


def train(
    data: Optional[Path] = typer.Argument(None, help="Dataset folder or list file (not needed with --resume)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation set (default: DATA/val, else a hashed 10% of DATA)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Architecture: a bundled config name or a YAML file (default: crnn-fast)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/DATE-TIME)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Most epochs to run (default: 30)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0, help="Time budget for the whole run (loading, training, the last validation and calibration), in minutes; the run stops cleanly before it, keeping the best model. 0: no limit."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="(default: 16)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate, above 0 and at most 10 (default: 0.002)."),
    height: Optional[int] = typer.Option(None, "--height", min=8, help="Input height in px, overriding the architecture's."),
    head: Optional[Head] = typer.Option(None, "--head", help="ctc (any length) or softmax (at most L characters), overriding the architecture's."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Softmax head: positions L (default: the architecture's, else the longest label)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: auto)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: 0)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from this trained model (its architecture and preprocessing)."),
    alphabet: AlphabetMode = typer.Option("union", "--alphabet", help="With --init: union adds the data's new characters; new keeps only the data's; keep refuses unknown ones."),
    freeze_backbone: Optional[str] = typer.Option(None, "--freeze-backbone", metavar="EPOCHS|all", help="Train only the recurrent layers and head for the first EPOCHS epochs, or 'all' of them."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with 'model:' and/or 'train:' sections (a run's config.yaml works)."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels", help="auto: list file or .gt.txt sidecars; filename: the file name is the label."),
    augment: Optional[Augment] = typer.Option(None, "--augment", help="Training augmentation strength (default: default)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Stop after this many epochs without a better validation CER (default: 8)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: all cores)."),
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
    model_flags = {"height": height, "head": head.value if head else None, "max_length": max_length}
    overrides = {k: v for k, v in {
        "epochs": epochs, "max_minutes": max_minutes, "batch_size": batch_size, "lr": lr, "device": device,
        "seed": seed, "augment": augment.value if augment else None, "patience": patience, "threads": threads,
        "precision": precision.value if precision else None, "freeze_backbone": _freeze_epochs(freeze_backbone),
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
    """Run this same `crnn train` command line under torchrun with N processes; its exit code."""
    import subprocess

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--nproc":
            del args[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del args[i]
            break
    env = dict(os.environ)
    # Share the cores out: N processes each with all cores' threads would oversubscribe them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "crnn_core.cli.app", *args]
    render.note(f"launching {nproc} processes: torchrun --standalone --nproc-per-node={nproc} -m crnn_core.cli.app "
                + " ".join(args))
    return subprocess.call(cmd, env=env)


def evaluate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Argument(..., help="Labelled dataset: a folder (its test/ or val/ split if it has one) or a list file."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON report to FILE, or '-' for stdout."),
    per_sample: bool = typer.Option(False, "--per-sample", help="Include every sample's result in the JSON report."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    beam: int = typer.Option(1, "--beam", min=1, help="Beam width; 1 = greedy decoding."),
    device: str = typer.Option("auto", "--device"),
    show: int = typer.Option(10, "--show", min=0, help="How many of the worst errors to list."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", min=0.0, max=1.0, help="Gate: exit 1 if sequence accuracy is below this fraction."),
    max_cer: Optional[float] = typer.Option(None, "--max-cer", min=0.0, help="Gate: exit 1 if the CER is above this fraction."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Gate: compare with this earlier --json report; exit 1 on a regression."),
    max_regression: Optional[float] = typer.Option(None, "--max-regression", min=0.0, help="Largest accuracy drop / CER rise (fractions) allowed against --baseline (default: 0)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML: one test case per gate, the failed samples (capped)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write a Markdown summary (for a CI job summary)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report with a gallery of the errors."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help=PATTERN_HELP),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help=LEXICON_HELP),
) -> None:
    """Measure a model on labelled data: sequence accuracy, CER, WER, speed, the worst errors.

    With gates (--min-accuracy, --max-cer, --baseline), exits 1 when one fails, after writing every report.
    """
    from crnn_core import gates

    if max_regression is not None and baseline is None:
        raise typer.BadParameter("needs --baseline", param_hint="--max-regression")
    base = gates.load_baseline(baseline) if baseline is not None else None  # fail fast, before torch loads
    from crnn_core import reports
    from crnn_core.evaluate import evaluate as run_eval
    from crnn_core.modelfile import atomic_write_bytes

    _check_one_constraint(pattern, lexicon)
    report = run_eval(model, data, labels=labels.value, batch_size=batch_size, beam=beam, device=device,
                      pattern=pattern, lexicon=lexicon)
    for line in (report.constraint or {}).get("notes", []):
        render.note(line)
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
            atomic_write_bytes(Path(json_out), text.encode())
            render.note(f"wrote {json_out}")
    if junit is not None:
        atomic_write_bytes(junit, reports.junit_xml(report, outcome))
        render.note(f"wrote {junit}")
    if markdown is not None:
        atomic_write_bytes(markdown, reports.markdown(report, outcome).encode())
        render.note(f"wrote {markdown}")
    if html is not None:
        from crnn_core.report_html import html_report

        atomic_write_bytes(html, html_report(report, outcome).encode())
        render.note(f"wrote {html}")
    if not outcome.passed:
        render.gate_failures(outcome)
        raise typer.Exit(1)


def _check_one_constraint(pattern: Optional[str], lexicon: Optional[Path]) -> None:
    if pattern is not None and lexicon is not None:
        raise typer.BadParameter("give --pattern or --lexicon, not both", param_hint="--pattern")


def _low(prediction, threshold: float) -> bool:
    value = prediction.p_correct if prediction.p_correct is not None else prediction.confidence
    return value < threshold


def _expand_inputs(inputs: List[str]):
    """Paths from arguments: files as given, folders as their images (sorted), '-' as stdin lines."""
    from crnn_core.data import list_images

    for item in inputs:
        if item == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        elif Path(item).is_dir():
            yield from (str(p) for p in list_images(Path(item)))
        else:
            yield item


def predict(
    inputs: Optional[List[str]] = typer.Argument(None, help="Images, folders, or '-' to read paths from stdin (the default when stdin is a pipe)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " (default: the bundled codes-fast)"),
    fmt: OutputFormat = typer.Option(OutputFormat.text, "--format", "-f", help="text: the text; tsv: path, text, confidence; jsonl: one JSON object a line."),
    beam: int = typer.Option(1, "--beam", min=1, help="Beam width; 1 = greedy decoding."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device"),
    threads: int = typer.Option(2, "--threads", min=1, help="Image-decoding threads."),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="auto: ONNX Runtime for models that ship as ONNX (the bundled ones, a .onnx file) on the CPU, else torch; torch (eager); onnx (ONNX Runtime; a .pt model is exported once into a cache)."),
    quantize: Optional[Quantize] = typer.Option(None, "--quantize", help="int8: dynamic int8 quantisation of the LSTM and linear layers (CPU; see docs/performance.md for its accuracy cost)."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help=PATTERN_HELP),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help=LEXICON_HELP),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Flag lines whose calibrated chance of being right (raw confidence if the model has no calibration) is below this."),
    low_exit_code: Optional[int] = typer.Option(None, "--low-exit-code", min=2, max=125, help="With --min-confidence: exit with this code when any line was flagged."),
) -> None:
    """Read the text in images. Results stream to stdout in input order; errors go to stderr.

    Exit code 1 if any input could not be read (the others still get results). With --pattern
    or --lexicon, an image with no accepted reading gets an empty text, confidence 0 and, in
    jsonl, "matched": false.
    """
    from crnn_core.recognizer import Recognizer

    if not inputs:
        if sys.stdin is None or sys.stdin.isatty():
            raise typer.BadParameter("give images or folders, or pipe paths in with '-'", param_hint="INPUTS")
        inputs = ["-"]
    reading_stdin = "-" in inputs
    _check_one_constraint(pattern, lexicon)
    recognizer = Recognizer(model, device=device, batch_size=batch_size, beam=beam, threads=threads,
                            backend=backend.value, quantize=quantize.value if quantize else None,
                            pattern=pattern, lexicon=lexicon)
    for line in recognizer.constraint.notes if recognizer.constraint else ():
        render.note(line)
    sys.stdout.reconfigure(line_buffering=reading_stdin)
    failures = 0
    unmatched = 0
    flagged = 0
    with render.PredictDisplay(None if reading_stdin else list(_expand_inputs(inputs))) as display:
        paths = display.paths if display.paths is not None else _expand_inputs(inputs)
        for prediction in recognizer.predict_paths(paths, max_wait=0.2 if reading_stdin else None):
            if prediction.error is not None:
                failures += 1
                render.error(prediction.error)
                if fmt is OutputFormat.jsonl:
                    sys.stdout.write(json.dumps({"path": prediction.path, "error": prediction.error},
                                                ensure_ascii=False) + "\n")
            elif fmt is OutputFormat.text:
                sys.stdout.write(prediction.text + "\n")
            elif fmt is OutputFormat.tsv:
                sys.stdout.write(f"{prediction.path}\t{prediction.text}\t{prediction.confidence:.4f}\n")
            else:
                record = {"path": prediction.path, "text": prediction.text, "confidence": round(prediction.confidence, 4)}
                if prediction.matched is not None:
                    record["matched"] = prediction.matched
                if prediction.p_correct is not None:
                    record["p_correct"] = round(prediction.p_correct, 4)
                if min_confidence is not None:
                    record["low_confidence"] = _low(prediction, min_confidence)
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default: beside the model, same name)."),
) -> None:
    """Export a model, then check the file against the eager model on rendered text images."""
    from crnn_core.export import export as run_export
    from crnn_core.modelfile import load_model

    report = run_export(load_model(model), fmt.value, out)
    render.export_summary(report)
    typer.echo(str(report.path))


def info(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP + " (default: the bundled codes-fast)"),
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
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        render.model_info(summary, loaded.config)


def data_check(
    data: Path = typer.Argument(..., help="Dataset folder or list file."),
    model: str = typer.Option(DEFAULT_ARCHITECTURE, "--model", "-m", help="Architecture whose height and width rules to check against."),
    head: Optional[Head] = typer.Option(None, "--head", help="Check against this head instead of the architecture's."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Softmax head: positions L to check labels against."),
    labels: LabelMode = typer.Option(LabelMode.auto, "--labels"),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    show: int = typer.Option(20, "--show", min=0, help="How many problems to list."),
) -> None:
    """Counts, alphabet, sizes, unreadable files and labels too long for the head (CTC at their width, or
    softmax's L). Exit code 1 if anything is wrong."""
    from crnn_core.config import apply_model_flags, load_model_config
    from crnn_core.datacheck import check_dataset

    config = apply_model_flags(load_model_config(model), head=head.value if head else None, max_length=max_length)
    result = check_dataset(data, config, labels.value)
    if as_json:
        typer.echo(json.dumps({
            "model": result.model,
            "alphabet": result.alphabet.chars,
            "unseen_in_train": "".join(sorted(result.unseen_in_train())),
            "splits": [{"name": s.name, "source": s.source, "samples": s.samples, "readable": s.readable,
                        "label_lengths": list(s.label_lengths), "widths": list(s.widths),
                        "problems": [str(p) for p in s.problems]} for s in result.splits],
        }, ensure_ascii=False, indent=2))
    else:
        render.data_check(result, show)
    if result.problems:
        raise typer.Exit(1)

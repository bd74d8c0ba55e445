"""Everything the CLI shows a person: Rich progress and tables on stderr, summaries.

Progress displays never redirect stdout, so results written there stay a clean stream.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from crnn_core.config import UNTIL_BUDGET
from crnn_core.heads import head_for

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


# Control characters a file name can hold (a line break, ESC starting a terminal sequence, BEL)
# shown as escapes: a message stays one line and cannot recolour or retitle the terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def one_line(message: object) -> str:
    """A message (or a path, a problem) that stays one line and inert on a terminal, whatever the
    paths in it hold."""
    return printable(str(message)).translate(_CONTROLS)


def error(message: str) -> None:
    sys.stderr.write(f"crnn: error: {one_line(message)}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    err.print(one_line(message), markup=False)


def plain(value: object) -> Text:
    """A table cell or title shown as it is: Rich would read a label `[b]` as a style and fail on
    a path holding `[/]`; control characters escaped as in `one_line`."""
    return Text(one_line(value))


class _Table(Table):
    """A Rich table whose string cells and title are `plain`; a cell meant to be styled or to
    span lines is passed as a `Text`."""

    def __init__(self, *columns: str, title: str | None = None, **options: Any) -> None:
        super().__init__(*columns, title=None if title is None else plain(title), **options)

    def add_row(self, *cells: Any, **options: Any) -> None:
        super().add_row(*(plain(c) if isinstance(c, str) else c for c in cells), **options)


def _say_aborted() -> None:
    # Straight to the file descriptor, not through Rich: the signal can land while Rich is in the
    # middle of rendering (the summary table), and a print from there goes to Rich's buffer, which
    # the os._exit that follows would drop.
    os.write(2, b"aborted: last.pt holds the last saved checkpoint (resume with --resume)\n")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err, transient=True, redirect_stdout=False, redirect_stderr=False,
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def printable(text: str) -> str:
    """A path for the terminal or a report file: a file name's bytes that are not UTF-8 as \\udcff, not a crash."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(value: Any, fmt: str) -> str:
    """A number of a model file's train record as `fmt` says, anything else (a damaged record) as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _pct(value) if fmt == "%" else format(value, fmt)
    return repr(value)


def _share(value: float) -> str:
    return f"{100 * value:.0f}%"


class TrainDisplay:
    """Renders training events; the first Ctrl-C asks for a clean stop, a second one aborts."""

    def __init__(self) -> None:
        self.progress = _progress()
        self.task = None
        self.load_task = None
        self.load_split = None
        self.stop_requested = False
        self._previous_handler = None
        self._previous_term = None
        self.epochs = 0
        self.live = False

    def __enter__(self) -> "TrainDisplay":
        # Only on a terminal: off one, a stopping Progress prints an empty line, which would
        # come before the error line of a failed run.
        self.live = err.is_terminal
        if self.live:
            self.progress.__enter__()
        self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        # SIGTERM too: batch schedulers send it, and torchrun sends it to every worker on Ctrl-C.
        self._previous_term = signal.signal(signal.SIGTERM, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        # After a first Ctrl-C the run is over and saved: a second one from here to the end of the
        # process (the summary, the interpreter's shutdown hooks) ends it at once, with no traceback.
        signal.signal(signal.SIGINT, self._abort_now if self.stop_requested else self._previous_handler)
        signal.signal(signal.SIGTERM, self._previous_term)
        if self.live:
            self.progress.__exit__(*exc)

    def _on_sigint(self, signum, frame) -> None:
        if self.stop_requested:
            _say_aborted()
            raise KeyboardInterrupt
        self.stop_requested = True
        err.print("[yellow]stopping after this step (Ctrl-C again to abort)...[/]")

    def _abort_now(self, signum, frame) -> None:
        _say_aborted()
        sys.stdout.flush()
        os._exit(130)  # not SystemExit: torch's exit hooks would run, and a signal there prints a traceback

    def should_stop(self) -> bool:
        return self.stop_requested

    def on_event(self, kind: str, info: dict[str, Any]) -> None:
        getattr(self, "_" + kind)(info)

    def _loading(self, info: dict[str, Any]) -> None:
        if self.load_task is None or self.load_split != info["split"]:
            if self.load_task is not None:
                self.progress.remove_task(self.load_task)
            self.load_split = info["split"]
            self.load_task = self.progress.add_task(f"loading {info['split']} images", total=info["total"], info="")
        self.progress.update(self.load_task, completed=info["done"])

    def _skipped(self, info: dict[str, Any]) -> None:
        problems = info["problems"]
        reasons = Counter(p.reason for p in problems)
        err.print(Text.assemble((f"skipped {len(problems)} sample(s): ", "yellow"), one_line("; ".join(
            f"{n} × {reason}" for reason, n in reasons.most_common(5)))))
        for p in problems[:5]:
            err.print(f"  {one_line(p)}", markup=False)
        if len(problems) > 5:
            err.print(f"  ... and {len(problems) - 5} more (crnn data check lists them all)", markup=False)

    def _fitted(self, info: dict[str, Any]) -> None:
        if "height" in info and info["height"] != info["architecture_height"]:
            long = (f", not above {info['height']} px as they are {info['median_aspect']:g} times as wide as high"
                    if info.get("long_images_cap") else "")
            note(f"input height {info['height']} px, fitted to the training images' median height of "
                 f"{info['median_height']:g} px{long} (the architecture's is {info['architecture_height']}; "
                 "--height chooses another)")
        if info.get("width_scale", 1.0) != 1.0:
            note(f"images stretched across {info['width_scale']:g} times: densely set text, nine labels in ten "
                 f"need up to {_share(info['ctc_fill_p90_unstretched'])} of their images' CTC steps unstretched "
                 "(--width-scale chooses another)")

    def _data(self, info: dict[str, Any]) -> None:
        height, fill = info["height"], info["ctc_fill"]
        note(f"data: {info['images']} training images, height {height['median']:g} px median "
             f"(p10 {height['p10']:g}, p90 {height['p90']:g}), read at {info['model_height']} px; "
             f"{info['chars_per_px']:.3f} chars/px against {info['steps_per_px']:.3f} CTC steps/px; a label needs "
             f"{_share(fill['median'])} of its steps (p90 {_share(fill['p90'])}, max {_share(fill['max'])})")

    def _finetune(self, info: dict[str, Any]) -> None:
        frozen = info["freeze_backbone"]
        freeze = {0: ""}.get(frozen, "; backbone frozen " + ("throughout" if frozen == "all" else f"for {frozen} epoch(s)"))
        note(f"fine-tuning {info['init']} (--alphabet {info['alphabet_mode']}): {info['summary']}{freeze}")

    def _calibrated(self, info: dict[str, Any]) -> None:
        note(f"calibrated confidence on {info['samples']} validation lines (crnn info shows the table)")

    def _start(self, info: dict[str, Any]) -> None:
        if self.load_task is not None:
            self.progress.remove_task(self.load_task)
            self.load_task = None
        self.epochs = info["epochs"]
        note(f"training {info['model']} ({info['parameters']:,} parameters) on {info['train_samples']} samples, "
             f"validating on {info['val_samples']}; {len(info['alphabet'])} characters; device {info['device']} "
             f"({info.get('precision', 'float32')}); "
             f"run folder {info['run_dir']}")

    def _step(self, info: dict[str, Any]) -> None:
        # a budgeted run without --epochs goes on until the clock stops it (config.UNTIL_BUDGET)
        description = f"epoch {info['epoch']}" + (f"/{self.epochs}" if self.epochs < UNTIL_BUDGET else "")
        if self.task is None:
            self.task = self.progress.add_task(description, total=info["steps"], info="")
        self.progress.update(self.task, description=description, completed=info["step"], total=info["steps"],
                             info=f"loss {info['loss']:.3f}  {info['samples_per_s']:.0f} samples/s")

    def _epoch(self, info: dict[str, Any]) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        mark = "  [green]best[/]" if info["improved"] else ""
        err.print(f"epoch {info['epoch']:>3}  loss {info['train_loss']:.4f}  val CER {info['val_cer']:.4f}  "
                  f"accuracy {_pct(info['val_accuracy'])}  {info['samples_per_s']:.0f} samples/s  "
                  f"{info['elapsed_seconds']:.0f} s{mark}", highlight=False)

    def _kept_last(self, info: dict[str, Any]) -> None:
        earlier = info["instead_of"]
        note(f"best.pt: the last epoch ({info['epoch']}, validation {_pct(info['accuracy'])}), within the noise of "
             f"epoch {earlier['epoch']}'s {_pct(earlier['accuracy'])} on this validation set")

    def _warning(self, info: dict[str, Any]) -> None:
        err.print(f"warning: {one_line(info['message'])}", markup=False)

    def _threads(self, info: dict[str, Any]) -> None:
        busy = "other programs are busy" if info["threads"] < info["most"] else "the cores are free again"
        err.print(f"{busy}: training on {info['threads']} of {info['most']} threads", markup=False)

    def _stop(self, info: dict[str, Any]) -> None:
        note(f"stopped: {info['reason']}")
        digests = info.get("rank_digests") or []
        if digests:
            same = len(set(digests)) == 1
            note(f"{info['processes']} processes {'in sync' if same else 'OUT OF SYNC'}: weights digest per rank "
                 + ", ".join(digests))


def train_summary(result) -> None:
    table = _Table(title="training summary", show_header=False, title_justify="left")
    best = result.best
    table.add_row("run folder", str(result.run_dir))
    table.add_row("best epoch", f"{result.best_epoch} of {result.epochs_run}")
    if result.best_epoch:
        table.add_row("validation accuracy", _pct(best.get("accuracy", 0.0)))
        table.add_row("validation CER", f"{best.get('cer', float('nan')):.4f}")
    else:  # stopped before the first validation
        table.add_row("validation", "no epoch finished yet")
    table.add_row("time", f"{result.seconds:.1f} s")
    table.add_row("stopped", result.stop_reason)
    table.add_row("skipped samples", str(len(result.skipped)))
    err.print(table)


class PredictDisplay:
    """A progress bar on stderr when it is a terminal and the inputs are known in advance."""

    def __init__(self, paths: list[str] | None) -> None:
        self.paths = paths
        self.enabled = paths is not None and err.is_terminal and len(paths) > 1
        self.progress = _progress() if self.enabled else None
        self.task = None

    def __enter__(self) -> "PredictDisplay":
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("reading", total=len(self.paths), info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


def eval_summary(report, show: int, to_stderr: bool) -> None:
    console = err if to_stderr else out
    s = report.scores
    table = _Table(title=f"{report.model} on {report.data}", show_header=False, title_justify="left")
    table.add_row("samples", str(s.samples))
    table.add_row("sequence accuracy", f"{_pct(s.accuracy)}  ({s.correct}/{s.samples})")
    table.add_row("CER", f"{s.cer:.4f}  ({s.char_errors}/{s.chars} chars)")
    table.add_row("WER", f"{s.wer:.4f}  ({s.word_errors}/{s.words} words)")
    table.add_row("speed", f"{report.lines_per_second:.0f} lines/s  ({report.seconds:.2f} s)")
    if report.problems:
        table.add_row("skipped", f"{len(report.problems)} (first: {report.problems[0]})")
    if getattr(report, "constraint", None):
        c = report.constraint
        table.add_row(c["kind"], f"{c['source']}  (beam {c['beam']}; no accepted reading: {report.unmatched})")
    console.print(table)
    worst = report.worst(show)
    if worst:
        errors = _Table(title=f"worst {len(worst)} errors", title_justify="left")
        for column in ("image", "expected", "predicted", "confidence"):
            errors.add_column(column)
        for r in worst:
            errors.add_row(r.path, r.expected, r.predicted, f"{r.confidence:.3f}")
        console.print(errors)


def gate_summary(outcome, to_stderr: bool) -> None:
    """The gates and baseline deltas under the eval table (nothing when none was asked for)."""
    if not outcome.gates:
        return
    console = err if to_stderr else out
    if outcome.baseline is not None:
        deltas = "  ".join(f"{k} {v:+.4f}" for k, v in outcome.deltas.items())
        console.print(f"against baseline {one_line(outcome.baseline.path)}: {deltas}", markup=False)
    table = _Table(title="gates", title_justify="left")
    for column in ("gate", "measured", "limit", "result"):
        table.add_column(column)
    for g in outcome.gates:
        table.add_row(g.name, f"{g.measured:.6g}", f"{g.limit:.6g}", "pass" if g.passed else Text("FAIL", style="red"))
    console.print(table)
    for warning in outcome.warnings:
        err.print(f"warning: {one_line(warning)}", markup=False)


def gate_failures(outcome) -> None:
    """One line per failed gate on stderr: what was measured and the limit."""
    for g in outcome.failed:
        sys.stderr.write(f"crnn: gate failed: {one_line(g.message)}\n")
    sys.stderr.flush()


def export_summary(report) -> None:
    shapes = ", ".join(f"{b}x{w}" for b, w in report.shapes)
    runtime = "onnxruntime" if report.format == "onnx" else "torch.export.load"
    note(f"wrote {report.path} ({report.bytes / 1e6:.2f} MB); checked in {runtime} at batch x width {shapes}: "
         f"{report.texts_equal}/{report.texts_checked} texts equal to the eager model, "
         f"largest log-prob difference {report.max_abs_diff:.2e}")


def model_info(summary: dict[str, Any], config) -> None:
    table = _Table(title=f"{summary['name']} — {summary['path']}", show_header=False, title_justify="left")
    size = summary["bytes"]
    table.add_row("file size", f"{size / 1e6:.2f} MB" if size else "-")
    head = head_for(config)
    table.add_row("head", head.describe(config))
    table.add_row("alphabet", f"{summary['alphabet']!r} ({len(summary['alphabet'])} characters + "
                              f"{head.special_description})")
    params = summary["parameters"]
    table.add_row("parameters", f"{params['total']:,} (backbone {params['backbone']:,}, "
                                f"rnn {params['rnn']:,}, head {params['head']:,})")
    pre = summary["preprocess"]
    table.add_row("input", f"height {pre['height']} px, {'grayscale' if pre['channels'] == 1 else 'RGB'}, "
                           f"width {pre['min_width']}..{pre['max_width']} px"
                           + (f" stretched across {pre['width_scale']:g}x" if pre.get("width_scale", 1) != 1 else "")
                           + f", {pre['normalize']}")
    layers = []
    for layer in config.backbone:
        if layer.kind == "conv":
            layers.append(f"conv{layer.kernel[0]}x{layer.kernel[1]}-{layer.out}" + ("+bn" if layer.batch_norm else ""))
        else:
            layers.append(f"pool{layer.kernel[0]}x{layer.kernel[1]}")
    table.add_row("backbone", " ".join(layers))
    table.add_row("sequence", f"T = {config.time_steps(100)} steps for a 100 px wide image")
    kind = "BiLSTM" if config.rnn_bidirectional else "LSTM"
    table.add_row("rnn", f"{kind} {config.rnn_layers} x {config.rnn_hidden}" if config.rnn_layers else "none")
    train = summary["train"]
    if train:
        table.add_row("trained on", f"{train.get('data')} ({train.get('train_samples')} samples, "
                                    f"{train.get('epochs')} epochs, {_shown(train.get('seconds', 0), '.0f')} s)")
        table.add_row("validation", f"accuracy {_shown(train.get('val_accuracy', 0.0), '%')}, "
                                    f"CER {_shown(train.get('val_cer', 0.0), '.4f')} "
                                    f"at epoch {train.get('best_epoch')} on {train.get('val_samples')} samples")
    if (train or {}).get("init"):
        surgery = train.get("surgery") or {}
        added = "".join(surgery.get("seeded", {})) + surgery.get("fresh", "")
        table.add_row("fine-tuned from", f"{train['init']} (--alphabet {train.get('init_alphabet')}): kept "
                                         f"{surgery.get('kept', '?')} characters, added {added!r}, dropped "
                                         f"{surgery.get('dropped', '')!r}")
    from crnn_core.calibration import Calibration

    raw = (train or {}).get("calibration")
    calibration = Calibration.from_dict(raw)  # checked when the model was loaded
    if calibration is not None:
        table.add_row("calibration", Text(f"on {calibration.samples} lines; " + _calibration_rows(calibration)))
    elif raw:
        table.add_row("calibration", "a map this crnn cannot read (a newer method or score); not used")
    else:
        table.add_row("calibration", "none (models trained before calibration existed)")
    out.print(table)


def _calibration_rows(calibration) -> str:
    """What a calibration maps, then its reliability table: one line per raw-score bin with lines."""
    from crnn_core.calibration import SCORES

    rows = [f"{b['low']:.2f}-{b['high']:.2f}: {b['lines']} lines, right {_pct(b['accuracy'])}, "
            f"calibrated {_pct(b['calibrated'])}" for b in calibration.table if b["lines"]]
    return "\n".join([f"raw score: {SCORES.get(calibration.score, calibration.score)}", *rows])


def calibration_summary(result) -> None:
    """`crnn calibrate`: where the map was fitted, how often the model was right, the table."""
    for problem in result.problems[:5]:
        note(f"skipped {problem}")
    if result.problems:
        note(f"{len(result.problems)} sample(s) skipped")
    note(f"calibrated {result.model} on {result.calibration.samples} lines of {result.data} "
         f"(read right: {_pct(result.accuracy)}); " + _calibration_rows(result.calibration).replace("\n", "; "))


def data_check(result, show: int) -> None:
    stretch = f", stretched across {result.width_scale:g}x" if result.width_scale != 1 else ""
    table = _Table(title=f"dataset check (rules of {result.model} at {result.height} px{stretch})", title_justify="left")
    for column in ("split", "samples", "readable", "label chars", "width px", "problems"):
        table.add_column(column)
    for s in result.splits:
        table.add_row(s.name, str(s.samples), str(s.readable), f"{s.label_lengths[0]}..{s.label_lengths[1]}",
                      f"{s.widths[0]}..{s.widths[1]}", str(len(s.problems)))
    out.print(table)
    for s in result.splits:
        out.print(f"{s.name}: {one_line(s.source)}", markup=False)
    out.print(f"alphabet ({len(result.alphabet)}): {result.alphabet.chars!r}", markup=False)
    unseen = result.unseen_in_train()
    if unseen:
        out.print(f"characters in val/test but never in train: {''.join(sorted(unseen))!r}", markup=False)
    for s in result.splits:
        if s.unlabelled:
            out.print(f"{s.name}: {len(s.unlabelled)} image(s) in the folder are not used: no label names them, "
                      f"or their label is reported below (first: {one_line(s.unlabelled[0])})", markup=False)
    problems = result.problems
    for p in problems[:show]:
        out.print(f"  {one_line(p)}", markup=False)
    if len(problems) > show:
        out.print(f"  ... and {len(problems) - show} more", markup=False)
    if not problems:
        unused = sum(len(s.unlabelled) for s in result.splits)
        out.print("no problems found" + (f" in the labelled samples ({unused} image(s) without a label)" if unused else ""),
                  markup=False)


class SynthDisplay:
    """`crnn synth`'s progress bar on stderr (only on a terminal: piped runs stay quiet)."""

    def __init__(self, total: int) -> None:
        self.progress = _progress() if err.is_terminal else None
        self.task = None
        self.total = total

    def __enter__(self) -> "SynthDisplay":
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("rendering", total=self.total, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total)


def synth_summary(result) -> None:
    """What `crnn synth` wrote, the alphabet, and every font or character it had to pass over."""
    splits = ", ".join(f"{name}/ {n}" for name, n in result.splits.items())
    note(f"wrote {sum(result.splits.values())} samples to {result.out} ({splits}) in {result.seconds:.1f} s "
         f"from {result.source} in {len(result.fonts)} font(s)")
    note(f"alphabet ({len(result.alphabet)}): {result.alphabet!r}")
    if result.dropped_lines:
        note(f"{result.dropped_lines} source line(s) dropped: control or format characters")
    if result.unusable_fonts:
        note(f"{len(result.unusable_fonts)} font(s) could not be used, first: "
             f"{result.unusable_fonts[0][0]}: {result.unusable_fonts[0][1]}")
    for name, skip in sorted(result.font_skips.items(), key=lambda item: -item[1].lines)[:10]:
        chars = "".join(c for c, _ in skip.chars.most_common(20))
        note(f"  passed over {name} for {skip.lines} line(s): lacks {chars!r}")
    if len(result.font_skips) > 10:
        note(f"  ... and {len(result.font_skips) - 10} more font(s) (--json lists them all)")
    if result.too_wide:
        note(f"{result.too_wide} sample(s) wider than the --fit-model's max width at its height: training squeezes "
             "them (shorter lines, or a model with a larger max_width)")
    if result.undrawable:
        chars = "".join(sorted(result.undrawable_chars))
        note(f"{result.undrawable} sample(s) given up: no font has {chars!r}")

"""The training loop: AdamW with warm-up and cosine decay, validation, checkpoints, exact resume.

`train()` runs a `Trainer`: set-up (runprep.py: settings, data, model), then epochs of
`train_epoch` and `validate`, with `stop_reason` deciding after each, and `checkpoint` writing
`last.pt` (the whole `TrainState`, so that --resume continues as if never stopped).
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__, distributed
from .augment import augment_batch
from .averaging import weight_average
from .calibration import Calibration
from .config import ModelConfig, TrainConfig, dump_run_config
from .cpushare import CpuShare
from .data import Problem, width_batches
from .errors import CrnnError
from .evaluate import calibrate_arrays
from .finetune import backbone_frozen, set_backbone_frozen
from .heads import head_for
from .memory import release_free_memory
from .metrics import Scores, score
from .model import count_parameters
from .modelfile import atomic_write_bytes, load_model, preprocess_for, save_checkpoint, save_model
from .outputs import dumps
from .plots import CurvePlotter
from .recognizer import recognize_arrays, resolve_device
from .runprep import RunData, RunPlan, build_model, plan_run, prepare_data

Callback = Callable[[str, dict[str, Any]], None]
# Training batches are padded to a multiple of this width. Every distinct batch shape makes
# oneDNN build and cache new kernels: with free widths, resident memory grew ~150 MB an epoch.
TRAIN_WIDTH_MULTIPLE = 16
# Training stops (best model kept) after this many batches in a row with a non-finite loss
# or gradient: past that, the run is not recovering on its own.
MAX_NONFINITE_STREAK = 50


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best: dict[str, Any]
    epochs_run: int
    stop_reason: str
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    rank: int = 0  # under torchrun, which process this is; only rank 0 wrote files
    rank_digests: list[str] = field(default_factory=list)  # weights hash per rank, at the end of a distributed run


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type for a precision setting; None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cpu":
            # Only where the CPU computes in bf16 natively; elsewhere it is emulated and slower.
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise CrnnError("--precision fp16 needs a CUDA device (on CPU use bf16)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX-512 BF16 or AMX; Linux only).

    There, bf16 autocast trained crnn-fast 1.13x faster end to end and crnn-small's step 1.41x,
    with the same validation accuracy (docs/performance.md), so `--precision auto` uses it.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup: int, total: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak by the last planned step.

    With a time budget, `time_progress` (the share of the budget used) moves the decay along
    when the clock, not the step count, will end the run, so a budget-capped run still ends
    at a low learning rate.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    lines = (dumps(h) + "\n" for h in history)  # strict JSON: a NaN loss is written as null
    atomic_write_bytes(path, "".join(lines).encode())


def _rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": list(random.getstate()[1])}


def _set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate((3, tuple(state["python"]), None))


def calibrate_file(path: Path, arrays: list[np.ndarray], texts: list[str], device: torch.device | None = None
                   ) -> Calibration:
    """Fit the calibration of the model file at `path` on labelled arrays and store it in the file."""
    return calibrate_arrays(load_model(path), arrays, texts, path, device)[0]


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@dataclass
class TrainState:
    """Where a run is: everything besides weights, optimiser and RNG that resume needs."""

    epoch: int = 0  # the last epoch fully trained and validated
    best: dict[str, Any] = field(default_factory=lambda: {"cer": math.inf, "accuracy": -1.0, "epoch": 0})
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # run time before this process (resumed runs), loading included
    pending: dict[str, Any] | None = None  # a partly trained epoch: its batches and next step

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "best": dict(self.best), "bad_epochs": self.bad_epochs,
                "history": list(self.history), "seconds": self.seconds, "pending": self.pending}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.epoch = int(saved["epoch"])
        self.best = dict(saved["best"])
        self.bad_epochs = int(saved["bad_epochs"])
        self.history = [h for h in saved["history"] if not h.get("partial")]
        self.seconds = float(saved.get("seconds", 0.0))
        self.pending = saved.get("pending")

    def keeps_last(self, samples: int) -> bool:
        """Whether the last validated weights should be best.pt once the schedule has ended.

        By then the learning rate has decayed to its floor over the averaged weights, and an
        earlier epoch that scored higher on a few hundred validation images is as likely lucky
        as better: on the proxy captchas an epoch-6 model 0.8 points ahead on 500 validation
        images read 93.7% of the test set, the last epoch's 96.2% (docs/accuracy.md, "The end
        of the schedule"). So the last one is kept unless its accuracy is more than two
        binomial standard errors (at least one image's worth) below the best's.
        """
        if not self.history or self.best["epoch"] in (0, self.history[-1]["epoch"]):
            return False
        best, last = self.best["accuracy"], self.history[-1]["val_accuracy"]
        spread = math.sqrt(max(best * (1 - best), 1 / samples) / samples)
        return last >= best - 2 * spread

    def take_last(self) -> None:
        """Make the last validation the best one (what `keeps_last` allows)."""
        last = self.history[-1]
        self.best = {"cer": last["val_cer"], "accuracy": last["val_accuracy"], "wer": last["val_wer"],
                     "epoch": last["epoch"]}
        self.bad_epochs = 0

    def record(self, scores: Scores, epoch: int, partial: bool) -> bool:
        """Count a validation; True when it is the best so far (lower CER, then higher accuracy)."""
        improved = (scores.cer, -scores.accuracy) < (self.best["cer"], -self.best["accuracy"])
        if improved:
            self.best = {"cer": scores.cer, "accuracy": scores.accuracy, "wer": scores.wer, "epoch": epoch}
            self.bad_epochs = 0
        elif not partial:
            self.bad_epochs += 1
        return improved


class Clock:
    """The run's time budget, counting time spent before a resume as used."""

    def __init__(self, budget: float | None, before: float = 0.0):
        self.budget, self.before, self.started = budget, before, time.monotonic()

    def used(self) -> float:
        return self.before + time.monotonic() - self.started

    def progress(self) -> float:
        return self.used() / self.budget if self.budget else 0.0

    def over(self, reserve: float = 0.0) -> bool:
        """Whether the budget is spent, keeping `reserve` seconds for what must follow."""
        return self.budget is not None and self.used() + reserve > self.budget


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Lets a run take its cached images out of the collector's scans (gc.freeze), undone at the end.

    The caches live for the whole run; the collector's full passes over them cost ~7% of
    crnn-fast's training rate. A caller's own freeze is left alone.
    """
    frozen_before = gc.get_freeze_count()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


@contextlib.contextmanager
def clear_memory_errors(run_dir: Any) -> Iterator[None]:
    """An allocation failure becomes one line that says what to shrink."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, RuntimeError) and not any(
                s in text for s in ("allocate memory", "out of memory", "DefaultCPUAllocator")):
            raise
        raise CrnnError(f"{run_dir or 'training'}: out of memory ({text[:120]}); try a smaller --batch-size, "
                        "--height or model") from None


def train(data: str | Path | None, out_dir: str | Path | None, model_config: ModelConfig | str | None = None,
          train_config: TrainConfig | None = None, val: str | Path | None = None, labels: str = "auto",
          resume: str | Path | None = None, init: str | Path | None = None, init_alphabet: str = "union",
          overrides: dict[str, Any] | None = None, on_event: Callback | None = None,
          should_stop: Callable[[], bool] | None = None, *, config_file: str | Path | None = None,
          model_flags: dict[str, Any] | None = None, force: bool = False) -> TrainResult:
    """Train a CRNN on DATA into a run directory; see docs for the files it writes.

    Settings are decided once by `config.resolve_run_config`: defaults, then `config_file`,
    then `model_config`/`train_config`, `model_flags` (height, head, max_length) and
    `overrides` (train settings given on the command line); on `resume`, the checkpoint's.
    With `init`, the model's architecture and preprocessing are used and `init_alphabet`
    (union, new, keep) says how its alphabet meets the data's (see finetune.py). A folder
    that already holds a model is replaced only with `force`. `on_event(kind, info)` receives
    progress ("loading", "skipped", "data", "finetune", "start", "step", "threads", "epoch", "calibrated",
    "stop", "warning"); "data" carries the training images' statistics (datastats.DataStats.to_dict),
    also written under `data:` in config.yaml.
    `should_stop()` is polled between steps for a clean stop (e.g. on SIGINT).
    """
    emit: Callback = on_event or (lambda kind, info: None)
    with frozen_gc(), clear_memory_errors(out_dir or resume):
        plan = plan_run(data, out_dir, model_config, train_config, val, labels, resume, init, overrides,
                        config_file, model_flags, force)
        trainer = Trainer(plan, init_alphabet, emit, should_stop)
        return trainer.fit()


class Trainer:
    """One run: set up once, then `fit` alternates `train_epoch` and `validate` until `stop_reason`."""

    def __init__(self, plan: RunPlan, init_alphabet: str, emit: Callback, should_stop: Callable[[], bool] | None):
        self.clock = Clock(plan.train_config.budget_seconds)
        self.plan, self.config = plan, plan.train_config
        self.should_stop = should_stop or (lambda: False)
        seed_everything(self.config.seed)
        self.np_rng = np.random.default_rng(self.config.seed)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        ctx, self.device = distributed.from_environment(resolve_device(self.config.device))
        self.ctx = ctx
        try:
            self._set_up(plan, init_alphabet, emit)
        except BaseException:
            ctx.close()  # a process group left open can abort the process at exit (SIGABRT under gloo)
            raise

    def _set_up(self, plan: RunPlan, init_alphabet: str, emit: Callback) -> None:
        """Everything after joining the process group: data, model, optimiser, a resumed state."""
        ctx = self.ctx
        self.emit = emit if ctx.is_main else (lambda kind, info: None)  # rank 0 reports for every rank
        self.run_dir = Path(ctx.broadcast(str(plan.run_dir)))  # a default name holds a time stamp: take rank 0's
        # Batch order comes from np_rng, the same on every rank; augmentation draws from a stream
        # of its own per rank. In one process both are the one stream, as they always were.
        self.aug_rng = self.np_rng if not ctx.enabled else np.random.default_rng([self.config.seed, ctx.rank])
        self.amp_dtype = autocast_dtype(self.config.precision, self.device)
        # One AMP path: the scaler only acts for fp16 (small gradients would flush to zero).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.data: RunData = prepare_data(plan, init_alphabet, self.emit)
        self.model_config = self.data.model_config
        self.head = head_for(self.model_config)
        self.preprocess = plan.preprocess or preprocess_for(self.model_config)
        gc.collect()
        gc.freeze()  # see frozen_gc
        self.model, self.surgery = build_model(plan, self.data, self.device, self.emit)
        self.model.dropout.p = self.config.dropout
        if self.surgery is not None:
            self.emit("finetune", {"init": plan.init_name,
                                   "alphabet_mode": init_alphabet, "summary": self.surgery.summary(),
                                   "freeze_backbone": self.config.freeze_backbone})
        self.init_alphabet = init_alphabet
        self.val_seconds: float | None = None
        # Without --threads, a CPU run follows the cores other programs leave free (cpushare.py).
        adapt = self.config.threads is None and self.device.type == "cpu" and not ctx.enabled
        self.cpu_share = CpuShare(torch.get_num_threads()) if adapt else None
        self._set_up_optimisation()
        self.state = TrainState()
        if plan.saved:
            self._restore(plan.saved)
        self.clock.before = self.state.seconds
        self.curves = CurvePlotter(self.run_dir / "curves.png", lambda message: emit("warning", {"message": message}))

    def _set_up_optimisation(self) -> None:
        self.net: nn.Module = self.model
        self.ddp_frozen = False
        # The unwrapped module's weights, averaged after each step (decay 0: the model itself);
        # what is validated and saved as best.pt. Copied before DDP wraps the model.
        self.average = weight_average(self.model, self.config.ema)
        if self.ctx.enabled:
            self.net = self._wrap_ddp()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        batches = math.ceil(len(self.data.train) / self.config.batch_size)
        self.steps_per_epoch = max(1, batches // self.ctx.world)
        total_steps = self.steps_per_epoch * self.config.epochs
        warmup = min(self.config.warmup_steps, max(1, total_steps // 5))  # short runs still get a decay
        self.agreed_progress = 0.0  # with several ranks, the clock they agreed on at the last step

        def time_progress() -> float:  # every rank must compute the same learning rate
            return self.agreed_progress if self.ctx.enabled else self.clock.progress()

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup, total_steps, time_progress()))

    def _wrap_ddp(self) -> nn.Module:  # DDP averages gradients across ranks during backward
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["state_dict"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.average.load_state_dict(saved.get("average"))  # older checkpoints have none
        _set_rng_state(saved["rng"], self.np_rng)
        rank_states = saved["rng"].get("augment")
        if self.ctx.enabled and rank_states and len(rank_states) == self.ctx.world:
            self.aug_rng.bit_generator.state = rank_states[self.ctx.rank]
        self.state.load_state_dict(saved)
        if self.state.pending is not None and self.state.pending.get("world", 1) != self.ctx.world:
            self.state.pending = None  # shards of another process count: restart the interrupted epoch

    # -- the run ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        except BaseException:
            self.ctx.close()
            raise

    def _fit(self) -> TrainResult:
        self._start()
        stop_reason, epoch = None, self.state.epoch
        self.nonfinite_streak = 0
        self.last_checkpoint: tuple[int, dict[str, Any] | None] | None = None  # end_epoch's last.pt: epoch done, partial
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            outcome = self.train_epoch(epoch)
            if outcome.stop == "interrupted":
                # Save the exact position (batches, step, RNG) so --resume continues as if never stopped.
                self.checkpoint(epoch - 1, self._train_info(epoch - 1), outcome.partial)
                stop_reason = "interrupted; continue with --resume"
                break
            self.end_epoch(epoch, outcome)
            stop_reason = self.stop_reason(outcome)
            if stop_reason:
                break
        return self._finish(stop_reason or "completed all epochs", epoch)

    def _start(self) -> None:
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.run_dir / "config.yaml",
                               dump_run_config(self.model_config, self.config, self.data.record()).encode())
        self.emit("start", {
            "run_dir": str(self.run_dir), "epochs": self.config.epochs, "start_epoch": self.state.epoch + 1,
            "steps_per_epoch": self.steps_per_epoch, "train_samples": len(self.data.train),
            "val_samples": len(self.data.val), "parameters": count_parameters(self.model),
            "alphabet": self.data.alphabet.chars, "device": str(self.device), "model": self.model_config.name,
            "processes": self.ctx.world, "precision": str(self.amp_dtype or torch.float32).replace("torch.", "")})

    def _reserve(self, samples_per_s: float | None = None) -> float:
        """Seconds to keep for what follows the last step: a validation, then calibration (about one more)."""
        if self.val_seconds is not None:
            return 2 * self.val_seconds
        if not samples_per_s:
            return 0.0
        return 2 * len(self.data.val) / (3 * samples_per_s)  # reading runs ~3x faster than training

    def _position(self) -> tuple[list[list[int]], int, list[float]]:
        """This epoch's batches (all ranks'), the step to start at, and the losses so far."""
        pending, self.state.pending = self.state.pending, None
        if pending is not None:  # finish the epoch an interruption cut short, with the same batches
            return pending["batches"], pending["next_step"], list(pending["losses"])
        return width_batches(self.data.train.widths, self.config.batch_size, self.np_rng), 0, []

    def train_epoch(self, epoch: int) -> EpochOutcome:
        """Steps over this epoch's batches until they end, the budget is spent or a stop is asked for."""
        self.model.train()
        frozen = backbone_frozen(self.config.freeze_backbone, epoch)
        set_backbone_frozen(self.model, frozen)
        if self.ctx.enabled and frozen != self.ddp_frozen:  # DDP reduces only the parameters that wanted gradients when built
            self.net, self.ddp_frozen = self._wrap_ddp(), frozen
        all_batches, first_step, losses = self._position()
        batches = self.ctx.shard(all_batches)
        outcome = EpochOutcome(losses=losses, started=time.monotonic())
        for step in range(first_step, len(batches)):
            outcome.stop = self._should_stop_before(step > first_step, outcome)
            if outcome.stop:
                outcome.partial = {"batches": all_batches, "next_step": step, "losses": losses, "world": self.ctx.world}
                break
            loss = self.train_step(batches[step])
            if loss is None:
                outcome.skipped_steps += 1
                self._count_nonfinite(epoch, step)
            else:
                losses.append(loss)
                self.nonfinite_streak = 0
            self.scheduler.step()
            self._share_cores()
            outcome.seen += len(batches[step]) * self.ctx.world
            self.emit("step", {"epoch": epoch, "step": step + 1, "steps": len(batches),
                               "loss": losses[-1] if losses else math.nan, "samples_per_s": outcome.rate(),
                               "lr": self.scheduler.get_last_lr()[0]})
        outcome.train_seconds = time.monotonic() - outcome.started
        return outcome

    def _share_cores(self) -> None:
        threads = self.cpu_share.check() if self.cpu_share is not None else None
        if threads is not None:
            torch.set_num_threads(threads)
            self.emit("threads", {"threads": threads, "most": self.cpu_share.most})

    def _should_stop_before(self, stepped: bool, outcome: EpochOutcome) -> str | None:
        """"interrupted", "budget" or None; at least one step of an epoch always runs."""
        interrupted = self.should_stop()
        late = stepped and self.clock.over(self._reserve(outcome.rate()))
        if self.ctx.enabled:  # one rank's Ctrl-C or clock decides for all; so does the slowest clock
            flags = self.ctx.max([interrupted, late, self.clock.progress()])
            interrupted, late, self.agreed_progress = bool(flags[0]), bool(flags[1]), flags[2]
        return "interrupted" if interrupted else "budget" if late else None

    def train_step(self, batch: list[int]) -> float | None:
        """One optimiser step on a batch; its loss, or None when the loss or gradient was not finite."""
        train = self.data.train
        images, widths = augment_batch([train.arrays[i] for i in batch], self.aug_rng, self.config.augment,
                                       self.model_config.max_width, TRAIN_WIDTH_MULTIPLE, self.config.elastic)
        if self.device.type == "cuda":
            images = images.pin_memory()
        input_lengths = torch.tensor([self.model_config.time_steps(w) for w in widths], dtype=torch.long)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            # a head that reads lengths sees each image's own columns, as it will alone at inference
            log_probs = self.net(images.to(self.device, non_blocking=True), input_lengths)
        loss = self.head.loss(log_probs, [train.targets[i] for i in batch], input_lengths)
        self.optimizer.zero_grad(set_to_none=True)
        # A non-finite loss on any rank skips the step on all (a rank alone in backward would hang).
        (non_finite,) = self.ctx.any(not bool(torch.isfinite(loss)))
        if non_finite:
            return None
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        # DDP averages gradients, so every rank sees the same norm and takes the same branch
        finite = bool(torch.isfinite(grad_norm))
        if finite:  # a NaN gradient would poison every weight
            self.scaler.step(self.optimizer)
            self.average.update(self.model)
        self.scaler.update()
        return loss.item() if finite else None

    def _count_nonfinite(self, epoch: int, step: int) -> None:
        self.nonfinite_streak += 1
        if self.nonfinite_streak >= MAX_NONFINITE_STREAK:
            best = self.state.best
            kept = f"best.pt from epoch {best['epoch']} is kept" if best["epoch"] else "no best model yet"
            raise CrnnError(
                f"{self.run_dir}: training stopped at epoch {epoch}, step {step + 1}: {self.nonfinite_streak} batches "
                f"in a row gave a non-finite loss or gradient (try a lower --lr, or check the data); {kept}")

    def validate(self) -> Scores:
        """Scores of the weights best.pt would keep (the averaged ones with `ema`) on the validation set;
        each rank reads its share with rank 0's weights and statistics."""
        started = time.monotonic()
        ctx, val, model = self.ctx, self.data.val, self.average.model
        # Rank 0's statistics in the trained model (the rank digests compare it) and in the averaged
        # one that is validated (the same module when not averaging).
        for module in dict.fromkeys((self.model, model)):
            ctx.sync_buffers(module)
        mine = range(ctx.rank, len(val), ctx.world)
        predictions = recognize_arrays(model, [val.arrays[i] for i in mine], self.data.alphabet.decode,
                                       batch_size=64, device=self.device)
        scores = score([val.texts[i] for i in mine], [p.text for p in predictions])
        if ctx.enabled:
            scores = Scores(*ctx.sum([scores.samples, scores.correct, scores.char_errors, scores.chars,
                                      scores.word_errors, scores.words]))
        self.val_seconds = time.monotonic() - started
        return scores

    def end_epoch(self, epoch: int, outcome: EpochOutcome) -> None:
        """Validate, keep the best weights, write last.pt and the metrics, report the epoch."""
        scores = self.validate()
        partial = outcome.stop is not None
        record = {
            "epoch": epoch, "train_loss": float(np.mean(outcome.losses)) if outcome.losses else math.nan,
            "val_cer": scores.cer, "val_wer": scores.wer, "val_accuracy": scores.accuracy,
            "lr": self.scheduler.get_last_lr()[0], "samples_per_s": outcome.seen / max(outcome.train_seconds, 1e-9),
            "epoch_seconds": time.monotonic() - outcome.started, "elapsed_seconds": self.clock.used(),
            "skipped_batches": outcome.skipped_steps, "partial": partial,
        }
        if self.ctx.enabled:
            record["processes"] = self.ctx.world
        self.state.history.append(record)
        improved = self.state.record(scores, epoch, partial)
        if improved and not weights_finite(self.average.model):
            improved = False  # never a best.pt of NaN weights, whatever the scores say
            self.emit("warning", {"message": f"epoch {epoch}: the weights are not finite; best.pt is not updated"})
        info = self._train_info(epoch)
        if improved and self.ctx.is_main:
            save_model(self.run_dir / "best.pt", self.average.model, self.data.alphabet, self.preprocess, info)
        self.last_checkpoint = (epoch - 1 if partial else epoch, outcome.partial if partial else None)
        self.checkpoint(self.last_checkpoint[0], info, self.last_checkpoint[1])
        self.emit("epoch", dict(record, best_epoch=self.state.best["epoch"], improved=improved))
        release_free_memory()

    def stop_reason(self, outcome: EpochOutcome) -> str | None:
        """Why the run ends after this epoch, or None to go on."""
        if outcome.stop == "budget":
            return f"time budget of {self.config.max_minutes:g} min reached"
        if self.state.bad_epochs >= self.config.patience:
            return f"early stop: no better validation CER for {self.config.patience} epochs"
        late, interrupted = self.ctx.any(self.clock.over(self._reserve()), self.should_stop())
        if late:
            return f"time budget of {self.config.max_minutes:g} min reached"
        if interrupted:
            return "interrupted; continue with --resume"
        return None

    def _train_info(self, epochs: int) -> dict[str, Any]:
        """The training record stored in best.pt and last.pt."""
        plan, best = self.plan, self.state.best
        return {
            "data": str(plan.data), "val": str(plan.val) if plan.val is not None else None, "labels": plan.labels,
            "config": self.config.to_dict(), "crnn_version": __version__, "torch_version": str(torch.__version__),
            "train_samples": len(self.data.train), "val_samples": len(self.data.val),
            "init": plan.init_name, "init_alphabet": self.init_alphabet if plan.init_name else None,
            "surgery": self.surgery.to_dict() if self.surgery else None,
            "epochs": epochs, "best_epoch": best["epoch"], "val_cer": best["cer"], "val_accuracy": best["accuracy"],
            "seconds": self.clock.used(),
        }

    def checkpoint(self, epoch_done: int, info: dict[str, Any], partial: dict[str, Any] | None) -> None:
        """last.pt with everything --resume needs; collective: every rank reaches every checkpoint."""
        rng = _rng_state(self.np_rng)
        if self.ctx.enabled:
            rng["augment"] = self.ctx.gather(self.aug_rng.bit_generator.state)
        if not self.ctx.is_main:
            return
        state = TrainState(epoch_done, self.state.best, self.state.bad_epochs, self.state.history,
                           self.clock.used(), partial)
        save_checkpoint(self.run_dir / "last.pt", self.model, self.data.alphabet, self.preprocess, info, dict(
            state.state_dict(), optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(), rng=rng,
            average=self.average.state_dict()))
        _write_metrics(self.run_dir / "metrics.jsonl", self.state.history)
        self.curves.update(self.state.history, self.state.best["epoch"])  # never raises

    def keep_schedule_end(self, stop_reason: str) -> None:
        """best.pt becomes the last epoch's weights where `TrainState.keeps_last` says so, on runs
        that ended by their schedule (budget or epochs), not by early stopping or an interrupt."""
        on_schedule = stop_reason == "completed all epochs" or stop_reason.startswith("time budget")
        if (not on_schedule or self.last_checkpoint is None or not self.state.keeps_last(len(self.data.val))
                or not weights_finite(self.average.model)):
            return
        earlier = dict(self.state.best)
        self.state.take_last()
        kept = self.state.best
        info = self._train_info(kept["epoch"])
        if self.ctx.is_main:
            save_model(self.run_dir / "best.pt", self.average.model, self.data.alphabet, self.preprocess, info)
        epoch_done, partial = self.last_checkpoint
        self.checkpoint(epoch_done, info, partial)  # last.pt's state names the same best, for --resume
        self.emit("kept_last", {"epoch": kept["epoch"], "accuracy": kept["accuracy"], "cer": kept["cer"],
                                "instead_of": earlier})

    def _finish(self, stop_reason: str, epoch: int) -> TrainResult:
        ctx = self.ctx
        self.keep_schedule_end(stop_reason)
        if ctx.is_main and not stop_reason.startswith("interrupted") and (self.run_dir / "best.pt").exists():
            # Confidence -> chance of being right, fitted on the validation set, stored in best.pt.
            calibration = calibrate_file(self.run_dir / "best.pt", self.data.val.arrays, self.data.val.texts,
                                         self.device)
            self.emit("calibrated", {"samples": calibration.samples, "table": calibration.table})
        seconds = self.clock.used()
        digests = ctx.gather(distributed.weights_digest(self.model)) if ctx.enabled else []
        self.emit("stop", {"reason": stop_reason, "seconds": seconds, "processes": ctx.world, "rank_digests": digests})
        ctx.barrier()  # nobody leaves before rank 0 has written its files
        ctx.close()
        return TrainResult(self.run_dir, self.state.best["epoch"], self.state.best, epoch, stop_reason, seconds,
                           self.state.history, self.data.skipped, ctx.rank, digests)


@dataclass
class EpochOutcome:
    """How an epoch's steps went: losses, samples seen, and why it ended early (if it did)."""

    losses: list[float] = field(default_factory=list)
    started: float = 0.0
    seen: int = 0
    skipped_steps: int = 0
    train_seconds: float = 0.0
    stop: str | None = None  # "interrupted" or "budget"
    partial: dict[str, Any] | None = None  # where the epoch stopped, for resume

    def rate(self) -> float:
        return self.seen / max(1e-9, time.monotonic() - self.started)

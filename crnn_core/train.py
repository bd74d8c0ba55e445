"""The training loop: AdamW with warm-up and cosine decay, CTC, validation, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__, distributed
from .alphabet import Alphabet
from .augment import augment_batch
from .calibration import calibrate_file
from .config import DEFAULT_MODEL, ModelConfig, TrainConfig, dump_run_config, load_model_config
from .data import Dataset, Preprocess, Problem, load_all, split_dataset, width_batches
from .errors import CrnnError, DatasetError
from .finetune import backbone_frozen, init_from, plan_alphabet, set_backbone_frozen
from .memory import release_free_memory
from .metrics import Scores, score
from .model import CRNN, count_parameters
from .modelfile import (CHECKPOINT_FORMAT, LoadedModel, atomic_write_bytes, load_model, preprocess_for,
                        read_payload, remove_stale_temp_files, save_checkpoint, save_model)
from .plots import CurvePlotter
from .recognizer import recognize_arrays, resolve_device

Callback = Callable[[str, dict[str, Any]], None]
MIN_TRAIN_SAMPLES = 2
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


def ctc_needed_steps(ids: list[int]) -> int:
    """Frames CTC needs for a label: one per symbol plus a blank between each repeated pair."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


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


class _Prepared:
    """A split decoded once into memory: uint8 arrays, texts, encoded targets."""

    def __init__(self, arrays: list[np.ndarray], texts: list[str], paths: list[Path], origins: list[str] | None = None):
        self.arrays = arrays
        self.texts = texts
        self.paths = paths
        self.origins = origins or [str(p) for p in paths]  # label file:line, for messages
        self.widths = [a.shape[1] for a in arrays]
        self.targets: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.arrays)


def _prepare(dataset: Dataset, preprocess, threads: int, emit: Callback, split: str) -> tuple[_Prepared, list[Problem]]:
    total = len(dataset.samples)
    arrays, problems = load_all([s.path for s in dataset.samples], preprocess, threads,
                                lambda done: emit("loading", {"split": split, "done": done, "total": total}))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    prepared = _Prepared([arrays[i] for i in keep], [dataset.samples[i].text for i in keep],
                         [dataset.samples[i].path for i in keep], [dataset.samples[i].origin or
                                                                   str(dataset.samples[i].path) for i in keep])
    return prepared, problems


def too_long_for_head(texts: list[str], paths: list[Path], config: ModelConfig) -> list[Problem]:
    """Labels longer than the softmax head's L positions (none for CTC)."""
    if config.head != "softmax" or config.head_length is None:
        return []
    return [Problem(str(path), f"label of {len(text)} chars is longer than the softmax head's "
                               f"{config.head_length} positions")
            for text, path in zip(texts, paths) if len(text) > config.head_length]


def _check_head_length(train: _Prepared, val: _Prepared, data: Any, config: ModelConfig) -> None:
    too_long = too_long_for_head(train.texts + val.texts, train.paths + val.paths, config)
    if too_long:
        raise DatasetError(
            f"{data}: {len(too_long)} labels are longer than the softmax head's {config.head_length} positions "
            f"(first: {too_long[0]}); raise the head length (--max-length) or leave it unset to use the "
            "longest label")


def softmax_targets(targets: list[list[int]], length: int) -> torch.Tensor:
    """B x L class indices: the label's ids, then the end symbol (0) in every remaining position."""
    out = torch.zeros(len(targets), length, dtype=torch.long)
    for row, ids in enumerate(targets):
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _drop_unusable(train: _Prepared, alphabet: Alphabet, config: ModelConfig) -> list[Problem]:
    """Encode targets; drop samples CTC cannot learn from (too long for their width)."""
    keep, problems, targets = [], [], []
    for i, text in enumerate(train.texts):
        ids = alphabet.encode(text)
        if config.head == "softmax":  # every width works; labels longer than L were refused earlier
            keep.append(i)
            targets.append(ids)
            continue
        steps = config.time_steps(train.widths[i])
        needed = ctc_needed_steps(ids)
        if needed > steps:
            problems.append(Problem(train.origins[i],
                                    f"label of {len(text)} chars needs {needed} CTC steps, the image gives {steps} "
                                    f"({train.paths[i].name}: width {train.widths[i]} px at height {config.height}); "
                                    "skipped"))
            continue
        keep.append(i)
        targets.append(ids)
    train.arrays = [train.arrays[i] for i in keep]
    train.texts = [train.texts[i] for i in keep]
    train.paths = [train.paths[i] for i in keep]
    train.origins = [train.origins[i] for i in keep]
    train.widths = [train.widths[i] for i in keep]
    train.targets = targets
    return problems


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(h) + "\n" for h in history).encode())


def _rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": list(random.getstate()[1])}


def _set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate((3, tuple(state["python"]), None))


def train(*args: Any, **kwargs: Any) -> TrainResult:
    """Train a CRNN on DATA into a run directory; see docs for the files it writes.

    `overrides` are train settings given explicitly (e.g. on the command line); they apply on
    top of `train_config`, or of the saved settings when resuming. With `init`, the model's
    architecture and preprocessing are used and `init_alphabet` (union, new, keep) says how
    its alphabet meets the data's (see finetune.py). `on_event(kind, info)` receives progress ("loading", "skipped", "start", "step", "epoch",
    "stop", "warning"); `should_stop()` is polled between steps for a clean stop (e.g. on SIGINT).
    """
    frozen_before = gc.get_freeze_count()
    try:
        return _train(*args, **kwargs)
    finally:
        if not frozen_before:  # leave a caller's own gc.freeze() alone
            gc.unfreeze()


def _train(data: str | Path | None, out_dir: str | Path | None, model_config: ModelConfig | None = None,
           train_config: TrainConfig | None = None, val: str | Path | None = None, labels: str = "auto",
           resume: str | Path | None = None, init: str | Path | None = None, init_alphabet: str = "union",
           overrides: dict[str, Any] | None = None, on_event: Callback | None = None, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """The body of `train`."""
    emit: Callback = on_event or (lambda kind, info: None)
    started = time.monotonic()
    state: dict[str, Any] = {}
    alphabet: Alphabet | None = None
    init_model: LoadedModel | None = None
    preprocess: Preprocess | None = None

    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "last.pt"
        payload = read_payload(last)
        if payload["format"] != CHECKPOINT_FORMAT or "state" not in payload:
            raise CrnnError(f"{last}: not a resumable checkpoint")
        model_config = ModelConfig.from_dict(payload["config"], source=str(last))
        info = payload["train"]
        train_config = TrainConfig.from_dict(dict(info["config"], **(overrides or {})), source=str(last))
        data = data or info["data"]
        val = val or info.get("val")
        labels = info.get("labels", labels)
        alphabet = Alphabet(payload["alphabet"])
        preprocess = Preprocess.from_dict(payload["preprocess"])
        state = payload["state"]
        state["state_dict"] = payload["state_dict"]
        remove_stale_temp_files(run_dir)  # left by a write that a kill cut short
    else:
        if data is None:
            raise CrnnError("no training data given")
        run_dir = Path(out_dir) if out_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if (run_dir / "last.pt").exists():
            raise CrnnError(f"{run_dir}: already holds a run (last.pt); use --resume {run_dir} or another --out")
        base = (train_config or TrainConfig()).to_dict()
        train_config = TrainConfig.from_dict(dict(base, **(overrides or {})), source="options")
        if init is not None:
            init_model = load_model(init)
            model_config = init_model.config
            # Fine-tuning reads images exactly as the initial model was trained to, never re-guessed.
            preprocess = init_model.preprocess
        model_config = model_config or load_model_config(DEFAULT_MODEL)

    assert train_config is not None and model_config is not None
    seed_everything(train_config.seed)
    np_rng = np.random.default_rng(train_config.seed)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    device = resolve_device(train_config.device)
    ctx, device = distributed.from_environment(device)
    if not ctx.is_main:
        emit = lambda kind, info: None  # noqa: E731 - rank 0 reports for every rank
    run_dir = Path(ctx.broadcast(str(run_dir)))  # a default name holds a time stamp: take rank 0's
    # Batch order comes from np_rng, the same on every rank; augmentation draws from a stream
    # of its own per rank. In one process both are the one stream, as they always were.
    aug_rng = np_rng if not ctx.enabled else np.random.default_rng([train_config.seed, ctx.rank])
    amp_dtype = autocast_dtype(train_config.precision, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    preprocess = preprocess or preprocess_for(model_config)

    train_set, val_set = split_dataset(data, val, labels, train_config.val_fraction)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, min(4, (os.cpu_count() or 1) // local_processes))
    train_data, train_bad = _prepare(train_set, preprocess, threads, emit, "train")
    val_data, val_bad = _prepare(val_set, preprocess, threads, emit, "val")
    if init_model is not None:
        alphabet = plan_alphabet(init_model.alphabet, train_data.texts, init_alphabet, str(data))
    if alphabet is None:
        alphabet = Alphabet.from_texts(train_data.texts)
    else:
        unknown = sorted(set().union(*(alphabet.unknown(t) for t in train_data.texts)))
        if unknown:
            first = next(i for i, t in enumerate(train_data.texts) if alphabet.unknown(t))
            raise DatasetError(
                f"{data}: characters not in the model's alphabet: {''.join(unknown)!r} "
                f"(first in {train_data.origins[first]}: {train_data.texts[first]!r}) "
                "(a run's alphabet is fixed; start a new run with --init and --alphabet union)")
    if model_config.head == "softmax" and model_config.head_length is None:
        # L from the data: the longest label in either split, so validation can be read in full.
        longest = max(len(t) for t in train_data.texts + val_data.texts) if len(train_data) + len(val_data) else 1
        model_config = dataclasses.replace(model_config, head_length=max(1, longest))
    _check_head_length(train_data, val_data, data, model_config)
    ctc_bad = _drop_unusable(train_data, alphabet, model_config)
    skipped = train_set.problems + val_set.problems + train_bad + val_bad + ctc_bad
    if skipped:
        emit("skipped", {"problems": skipped})
    if len(train_data) < MIN_TRAIN_SAMPLES:
        raise DatasetError(f"{data}: only {len(train_data)} usable training samples "
                           f"({len(skipped)} skipped, first: {skipped[0] if skipped else '-'})")
    if len(val_data) == 0:
        raise DatasetError(f"{val or data}: no usable validation samples")
    # The cached images and labels live for the whole run: take them out of the garbage
    # collector's scans (its full passes over them cost ~7% of crnn-fast's training rate).
    gc.collect()
    gc.freeze()

    model = CRNN(model_config, alphabet.num_classes)
    surgery = None
    if init_model is not None:
        surgery = init_from(model, init_model.model.state_dict(), init_model.alphabet, alphabet,
                            head_keys=("head.classify.weight", "head.classify.bias") if model_config.head == "softmax"
                            else ("head.weight", "head.bias"), seed=train_config.seed)
        emit("finetune", {"init": str(init), "alphabet_mode": init_alphabet, "summary": surgery.summary(),
                          "freeze_backbone": train_config.freeze_backbone})
    model.to(device)
    net: nn.Module = model
    ddp_frozen = False

    def wrap_ddp() -> nn.Module:  # DDP averages gradients across ranks during backward
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if ctx.enabled:
        net = wrap_ddp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_data) / train_config.batch_size) // ctx.world)
    total_steps = steps_per_epoch * train_config.epochs
    warmup = min(train_config.warmup_steps, max(1, total_steps // 5))  # short runs still get a decay
    budget = train_config.max_minutes * 60 if train_config.max_minutes else None

    agreed = {"progress": 0.0}  # with several ranks, the clock they agreed on at the last step

    def time_progress() -> float:
        if ctx.enabled:  # every rank must compute the same learning rate
            return agreed["progress"]
        return (time.monotonic() - started) / budget if budget else 0.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, time_progress()))
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    history: list[dict[str, Any]] = []
    start_epoch = 1
    best = {"cer": math.inf, "accuracy": -1.0, "epoch": 0}
    bad_epochs = 0
    elapsed_before = 0.0
    pending: dict[str, Any] | None = None  # a partly trained epoch to finish first
    if state:
        model.load_state_dict(state.pop("state_dict"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], np_rng)
        rank_states = state["rng"].get("augment")
        if ctx.enabled and rank_states and len(rank_states) == ctx.world:
            aug_rng.bit_generator.state = rank_states[ctx.rank]
        history = [h for h in state["history"] if not h.get("partial")]
        best = dict(state["best"])
        bad_epochs = int(state["bad_epochs"])
        start_epoch = int(state["epoch"]) + 1
        elapsed_before = float(state.get("seconds", 0.0))
        pending = state.get("pending")
        if pending is not None and pending.get("world", 1) != ctx.world:
            pending = None  # shards of another process count: restart the interrupted epoch

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.yaml", dump_run_config(model_config, train_config).encode())
    train_info_base = {
        "data": str(data), "val": str(val) if val is not None else None, "labels": labels,
        "config": train_config.to_dict(), "crnn_version": __version__, "torch_version": str(torch.__version__),
        "train_samples": len(train_data), "val_samples": len(val_data), "init": str(init) if init else None,
        "init_alphabet": init_alphabet if init else None, "surgery": surgery.to_dict() if surgery else None,
    }
    emit("start", {"run_dir": str(run_dir), "epochs": train_config.epochs, "start_epoch": start_epoch,
                   "steps_per_epoch": steps_per_epoch, "train_samples": len(train_data),
                   "val_samples": len(val_data), "parameters": count_parameters(model),
                   "alphabet": alphabet.chars, "device": str(device), "model": model_config.name,
                   "processes": ctx.world, "precision": str(amp_dtype or torch.float32).replace("torch.", "")})
    curves = CurvePlotter(run_dir / "curves.png", lambda message: emit("warning", {"message": message}))

    def checkpoint(epoch_done: int, info: dict[str, Any], partial: dict[str, Any] | None) -> None:
        rng = _rng_state(np_rng)
        if ctx.enabled:  # collective: every rank reaches every checkpoint
            rng["augment"] = ctx.gather(aug_rng.bit_generator.state)
        if not ctx.is_main:
            return
        save_checkpoint(run_dir / "last.pt", model, alphabet, preprocess, info, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
            "history": history, "best": best, "bad_epochs": bad_epochs, "epoch": epoch_done,
            "seconds": elapsed_before + time.monotonic() - started, "pending": partial})
        _write_metrics(run_dir / "metrics.jsonl", history)
        curves.update(history)  # never raises

    deadline = (started + train_config.max_minutes * 60) if train_config.max_minutes else None
    stop_reason = "completed all epochs"
    epoch = start_epoch - 1
    nonfinite_streak = 0
    for epoch in range(start_epoch, train_config.epochs + 1):
        model.train()
        frozen = backbone_frozen(train_config.freeze_backbone, epoch)
        set_backbone_frozen(model, frozen)
        if ctx.enabled and frozen != ddp_frozen:  # DDP reduces only the parameters that wanted gradients when built
            net, ddp_frozen = wrap_ddp(), frozen
        epoch_start = time.monotonic()
        if pending is not None:  # finish the epoch an interruption cut short, with the same batches
            all_batches, first_step, losses = pending["batches"], pending["next_step"], list(pending["losses"])
            pending = None
        else:
            all_batches, first_step, losses = width_batches(train_data.widths, train_config.batch_size, np_rng), 0, []
        batches = ctx.shard(all_batches)
        seen = 0
        skipped_steps = 0
        stop_now = None
        for step in range(first_step, len(batches)):
            interrupted = should_stop is not None and should_stop()
            late = deadline is not None and time.monotonic() > deadline and step > first_step
            if ctx.enabled:  # one rank's Ctrl-C or clock decides for all; so does the slowest clock
                flags = ctx.max([interrupted, late, (time.monotonic() - started) / budget if budget else 0.0])
                interrupted, late, agreed["progress"] = bool(flags[0]), bool(flags[1]), flags[2]
            if interrupted:
                stop_now = "interrupted"
            elif late:
                stop_now = f"time budget of {train_config.max_minutes:g} min reached"
            if stop_now:
                partial = {"batches": all_batches, "next_step": step, "losses": losses, "world": ctx.world}
                break
            batch = batches[step]
            images, widths = augment_batch([train_data.arrays[i] for i in batch], aug_rng, train_config.augment,
                                           model_config.max_width, TRAIN_WIDTH_MULTIPLE)
            if device.type == "cuda":
                images = images.pin_memory()
            targets = [train_data.targets[i] for i in batch]
            input_lengths = torch.tensor([model_config.time_steps(w) for w in widths], dtype=torch.long)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                # the softmax head reads each image's own columns, as it will alone at inference
                log_probs = net(images.to(device, non_blocking=True),
                                input_lengths if model_config.head == "softmax" else None)
            if model_config.head == "softmax":
                loss = nn.functional.nll_loss(log_probs.permute(1, 2, 0),
                                              softmax_targets(targets, log_probs.shape[0]).to(device))
            else:
                flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long)
                target_lengths = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
                loss = ctc(log_probs, flat.to(device), input_lengths, target_lengths)
            optimizer.zero_grad(set_to_none=True)
            stepped = False
            # A non-finite loss on any rank skips the step on all (a rank alone in backward would hang).
            (non_finite,) = ctx.any(not bool(torch.isfinite(loss)))
            if not non_finite:
                if scaler is not None:  # fp16: scale the loss so small gradients do not flush to zero
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
                    scaler.step(optimizer)  # skips the update by itself on an inf/NaN gradient
                    scaler.update()
                else:
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
                    if torch.isfinite(grad_norm):  # a NaN gradient would poison every weight
                        optimizer.step()
                # DDP averages gradients, so every rank sees the same norm and takes the same branch
                if torch.isfinite(grad_norm):
                    losses.append(loss.item())
                    stepped = True
            if stepped:
                nonfinite_streak = 0
            else:
                skipped_steps += 1
                nonfinite_streak += 1
                if nonfinite_streak >= MAX_NONFINITE_STREAK:
                    kept = f"best.pt from epoch {best['epoch']} is kept" if best["epoch"] else "no best model yet"
                    raise CrnnError(
                        f"{run_dir}: training stopped at epoch {epoch}, step {step + 1}: {nonfinite_streak} batches "
                        f"in a row gave a non-finite loss or gradient (try a lower --lr, or check the data); {kept}")
            scheduler.step()
            seen += len(batch) * ctx.world
            emit("step", {"epoch": epoch, "step": step + 1, "steps": len(batches),
                          "loss": losses[-1] if losses else math.nan,
                          "samples_per_s": seen / max(1e-9, time.monotonic() - epoch_start),
                          "lr": scheduler.get_last_lr()[0]})
        train_seconds = time.monotonic() - epoch_start

        if stop_now == "interrupted":
            # Save the exact position (batches, step, RNG) so --resume continues as if never stopped.
            checkpoint(epoch - 1, dict(train_info_base, epochs=epoch - 1, best_epoch=best["epoch"],
                                       val_cer=best["cer"], val_accuracy=best["accuracy"]), partial)
            stop_reason = "interrupted; continue with --resume"
            break

        # Each rank reads its share of the validation set with rank 0's weights and statistics.
        ctx.sync_buffers(model)
        mine = range(ctx.rank, len(val_data), ctx.world)
        predictions = recognize_arrays(model, [val_data.arrays[i] for i in mine], alphabet.decode, batch_size=64,
                                       device=device)
        scores = score([val_data.texts[i] for i in mine], [text for text, _ in predictions])
        if ctx.enabled:
            scores = Scores(*ctx.sum([scores.samples, scores.correct, scores.char_errors, scores.chars,
                                      scores.word_errors, scores.words]))
        record = {
            "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
            "val_cer": scores.cer, "val_wer": scores.wer, "val_accuracy": scores.accuracy,
            "lr": scheduler.get_last_lr()[0], "samples_per_s": seen / max(train_seconds, 1e-9),
            "epoch_seconds": time.monotonic() - epoch_start,
            "elapsed_seconds": elapsed_before + time.monotonic() - started, "skipped_batches": skipped_steps,
            "partial": stop_now is not None,
        }
        if ctx.enabled:
            record["processes"] = ctx.world
        history.append(record)
        improved = (scores.cer, -scores.accuracy) < (best["cer"], -best["accuracy"])
        if improved:
            best = {"cer": scores.cer, "accuracy": scores.accuracy, "wer": scores.wer, "epoch": epoch}
            bad_epochs = 0
        elif stop_now is None:
            bad_epochs += 1
        train_info = dict(train_info_base, epochs=epoch, best_epoch=best["epoch"], val_cer=best["cer"],
                          val_accuracy=best["accuracy"], seconds=record["elapsed_seconds"])
        if improved and ctx.is_main:
            save_model(run_dir / "best.pt", model, alphabet, preprocess, train_info)
        checkpoint(epoch - 1 if stop_now else epoch, train_info, partial if stop_now else None)
        emit("epoch", dict(record, best_epoch=best["epoch"], improved=improved))
        release_free_memory()
        if stop_now:
            stop_reason = stop_now
            break
        if bad_epochs >= train_config.patience:
            stop_reason = f"early stop: no better validation CER for {train_config.patience} epochs"
            break
        late, interrupted = ctx.any(deadline is not None and time.monotonic() > deadline,
                                    should_stop is not None and should_stop())
        if late:
            stop_reason = f"time budget of {train_config.max_minutes:g} min reached"
            break
        if interrupted:
            stop_reason = "interrupted; continue with --resume"
            break
    if ctx.is_main and not stop_reason.startswith("interrupted") and (run_dir / "best.pt").exists():
        # Confidence -> chance of being right, fitted on the validation set, stored in best.pt.
        calibration = calibrate_file(run_dir / "best.pt", val_data.arrays, val_data.texts, device)
        emit("calibrated", {"samples": calibration.samples, "table": calibration.table})
    seconds = elapsed_before + time.monotonic() - started
    digests = ctx.gather(distributed.weights_digest(model)) if ctx.enabled else []
    emit("stop", {"reason": stop_reason, "seconds": seconds, "processes": ctx.world, "rank_digests": digests})
    ctx.barrier()  # nobody leaves before rank 0 has written its files
    ctx.close()
    return TrainResult(run_dir, best["epoch"], best, epoch, stop_reason, seconds, history, skipped, ctx.rank, digests)


train.__signature__ = inspect.signature(_train)  # help() and IDEs show the real arguments

"""The training loop: AdamW with warm-up and cosine decay, CTC, validation, checkpoints, resume."""

from __future__ import annotations

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

from . import __version__
from .alphabet import Alphabet
from .augment import augment
from .calibration import calibrate_file
from .config import ModelConfig, TrainConfig, dump_run_config
from .data import Dataset, Preprocess, Problem, load_all, split_dataset, to_tensor_batch, width_batches
from .errors import CrnnError, DatasetError
from .finetune import backbone_frozen, init_from, plan_alphabet, set_backbone_frozen
from .memory import release_free_memory
from .metrics import score
from .model import CRNN, count_parameters
from .modelfile import (CHECKPOINT_FORMAT, LoadedModel, atomic_write_bytes, load_model, preprocess_for,
                        read_payload, save_checkpoint, save_model)
from .recognizer import recognize_arrays, resolve_device

Callback = Callable[[str, dict[str, Any]], None]
MIN_TRAIN_SAMPLES = 2
# Training batches are padded to a multiple of this width. Every distinct batch shape makes
# oneDNN build and cache new kernels: with free widths, resident memory grew ~150 MB an epoch.
TRAIN_WIDTH_MULTIPLE = 16


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


def ctc_needed_steps(ids: list[int]) -> int:
    """Frames CTC needs for a label: one per symbol plus a blank between each repeated pair."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


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

    def __init__(self, arrays: list[np.ndarray], texts: list[str], paths: list[Path]):
        self.arrays = arrays
        self.texts = texts
        self.paths = paths
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
                         [dataset.samples[i].path for i in keep])
    return prepared, problems


def _drop_unusable(train: _Prepared, alphabet: Alphabet, config: ModelConfig) -> list[Problem]:
    """Encode targets; drop samples CTC cannot learn from (too long for their width)."""
    keep, problems, targets = [], [], []
    for i, text in enumerate(train.texts):
        ids = alphabet.encode(text)
        steps = config.time_steps(train.widths[i])
        needed = ctc_needed_steps(ids)
        if needed > steps:
            problems.append(Problem(str(train.paths[i]),
                                    f"label of {len(text)} chars needs {needed} CTC steps, the image gives {steps} "
                                    f"(width {train.widths[i]} px at height {config.height}); skipped"))
            continue
        keep.append(i)
        targets.append(ids)
    train.arrays = [train.arrays[i] for i in keep]
    train.texts = [train.texts[i] for i in keep]
    train.paths = [train.paths[i] for i in keep]
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


def train(data: str | Path | None, out_dir: str | Path | None, model_config: ModelConfig | None = None,
          train_config: TrainConfig | None = None, val: str | Path | None = None, labels: str = "auto",
          resume: str | Path | None = None, init: str | Path | None = None, init_alphabet: str = "union",
          overrides: dict[str, Any] | None = None, on_event: Callback | None = None, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a CRNN on DATA into a run directory; see docs for the files it writes.

    `overrides` are train settings given explicitly (e.g. on the command line); they apply on
    top of `train_config`, or of the saved settings when resuming. With `init`, the model's
    architecture and preprocessing are used and `init_alphabet` (union, new, keep) says how
    its alphabet meets the data's (see finetune.py). `on_event(kind, info)` receives progress ("loading", "skipped", "start", "step", "epoch",
    "stop"); `should_stop()` is polled between steps for a clean stop (e.g. on SIGINT).
    """
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
        model_config = model_config or ModelConfig()

    assert train_config is not None and model_config is not None
    seed_everything(train_config.seed)
    np_rng = np.random.default_rng(train_config.seed)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    device = resolve_device(train_config.device)
    preprocess = preprocess or preprocess_for(model_config)

    train_set, val_set = split_dataset(data, val, labels, train_config.val_fraction)
    threads = max(1, min(4, os.cpu_count() or 1))
    train_data, train_bad = _prepare(train_set, preprocess, threads, emit, "train")
    val_data, val_bad = _prepare(val_set, preprocess, threads, emit, "val")
    if init_model is not None:
        alphabet = plan_alphabet(init_model.alphabet, train_data.texts, init_alphabet, str(data))
    if alphabet is None:
        alphabet = Alphabet.from_texts(train_data.texts)
    else:
        unknown = sorted(set().union(*(alphabet.unknown(t) for t in train_data.texts)))
        if unknown:
            raise DatasetError(
                f"{data}: characters not in the model's alphabet: {''.join(unknown)!r} "
                "(a run's alphabet is fixed; start a new run with --init and --alphabet union)")
    ctc_bad = _drop_unusable(train_data, alphabet, model_config)
    skipped = train_set.problems + val_set.problems + train_bad + val_bad + ctc_bad
    if skipped:
        emit("skipped", {"problems": skipped})
    if len(train_data) < MIN_TRAIN_SAMPLES:
        raise DatasetError(f"{data}: only {len(train_data)} usable training samples "
                           f"({len(skipped)} skipped, first: {skipped[0] if skipped else '-'})")
    if len(val_data) == 0:
        raise DatasetError(f"{val or data}: no usable validation samples")

    model = CRNN(model_config, alphabet.num_classes)
    surgery = None
    if init_model is not None:
        surgery = init_from(model, init_model.model.state_dict(), init_model.alphabet, alphabet,
                            seed=train_config.seed)
        emit("finetune", {"init": str(init), "alphabet_mode": init_alphabet, "summary": surgery.summary(),
                          "freeze_backbone": train_config.freeze_backbone})
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / train_config.batch_size)
    total_steps = steps_per_epoch * train_config.epochs
    warmup = min(train_config.warmup_steps, max(1, total_steps // 5))  # short runs still get a decay
    budget = train_config.max_minutes * 60 if train_config.max_minutes else None

    def time_progress() -> float:
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
        history = [h for h in state["history"] if not h.get("partial")]
        best = dict(state["best"])
        bad_epochs = int(state["bad_epochs"])
        start_epoch = int(state["epoch"]) + 1
        elapsed_before = float(state.get("seconds", 0.0))
        pending = state.get("pending")

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
                   "alphabet": alphabet.chars, "device": str(device), "model": model_config.name})

    def checkpoint(epoch_done: int, info: dict[str, Any], partial: dict[str, Any] | None) -> None:
        save_checkpoint(run_dir / "last.pt", model, alphabet, preprocess, info, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(np_rng),
            "history": history, "best": best, "bad_epochs": bad_epochs, "epoch": epoch_done,
            "seconds": elapsed_before + time.monotonic() - started, "pending": partial})
        _write_metrics(run_dir / "metrics.jsonl", history)

    deadline = (started + train_config.max_minutes * 60) if train_config.max_minutes else None
    stop_reason = "completed all epochs"
    epoch = start_epoch - 1
    for epoch in range(start_epoch, train_config.epochs + 1):
        model.train()
        set_backbone_frozen(model, backbone_frozen(train_config.freeze_backbone, epoch))
        epoch_start = time.monotonic()
        if pending is not None:  # finish the epoch an interruption cut short, with the same batches
            batches, first_step, losses = pending["batches"], pending["next_step"], list(pending["losses"])
            pending = None
        else:
            batches, first_step, losses = width_batches(train_data.widths, train_config.batch_size, np_rng), 0, []
        seen = 0
        skipped_steps = 0
        stop_now = None
        for step in range(first_step, len(batches)):
            if should_stop is not None and should_stop():
                stop_now = "interrupted"
            elif deadline is not None and time.monotonic() > deadline and step > first_step:
                stop_now = f"time budget of {train_config.max_minutes:g} min reached"
            if stop_now:
                partial = {"batches": batches, "next_step": step, "losses": losses}
                break
            batch = batches[step]
            images, widths = to_tensor_batch([
                augment(train_data.arrays[i], np_rng, train_config.augment, model_config.max_width) for i in batch],
                width_multiple=TRAIN_WIDTH_MULTIPLE)
            targets = [train_data.targets[i] for i in batch]
            flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long)
            target_lengths = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
            input_lengths = torch.tensor([model_config.time_steps(w) for w in widths], dtype=torch.long)
            log_probs = model(images.to(device, non_blocking=True))
            loss = ctc(log_probs, flat.to(device), input_lengths, target_lengths)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
                optimizer.step()
                losses.append(loss.item())
            else:
                skipped_steps += 1
            scheduler.step()
            seen += len(batch)
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

        predictions = recognize_arrays(model, val_data.arrays, alphabet.decode, batch_size=64, device=device)
        scores = score(val_data.texts, [text for text, _ in predictions])
        record = {
            "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
            "val_cer": scores.cer, "val_wer": scores.wer, "val_accuracy": scores.accuracy,
            "lr": scheduler.get_last_lr()[0], "samples_per_s": seen / max(train_seconds, 1e-9),
            "epoch_seconds": time.monotonic() - epoch_start,
            "elapsed_seconds": elapsed_before + time.monotonic() - started, "skipped_batches": skipped_steps,
            "partial": stop_now is not None,
        }
        history.append(record)
        improved = (scores.cer, -scores.accuracy) < (best["cer"], -best["accuracy"])
        if improved:
            best = {"cer": scores.cer, "accuracy": scores.accuracy, "wer": scores.wer, "epoch": epoch}
            bad_epochs = 0
        elif stop_now is None:
            bad_epochs += 1
        train_info = dict(train_info_base, epochs=epoch, best_epoch=best["epoch"], val_cer=best["cer"],
                          val_accuracy=best["accuracy"], seconds=record["elapsed_seconds"])
        if improved:
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
        if deadline is not None and time.monotonic() > deadline:
            stop_reason = f"time budget of {train_config.max_minutes:g} min reached"
            break
        if should_stop is not None and should_stop():
            stop_reason = "interrupted; continue with --resume"
            break
    if not stop_reason.startswith("interrupted") and (run_dir / "best.pt").exists():
        # Confidence -> chance of being right, fitted on the validation set, stored in best.pt.
        calibration = calibrate_file(run_dir / "best.pt", val_data.arrays, val_data.texts, device)
        emit("calibrated", {"samples": calibration.samples, "table": calibration.table})
    seconds = elapsed_before + time.monotonic() - started
    emit("stop", {"reason": stop_reason, "seconds": seconds})
    return TrainResult(run_dir, best["epoch"], best, epoch, stop_reason, seconds, history, skipped)

"""Before the first step of a run: its settings, its data in memory, its model.

`plan_run` decides what the run is (a new one, a resumed one, a fine-tuning one) and its
settings, through `config.resolve_run_config`; `prepare_data` decodes both splits once and
keeps what the model's head can learn; `build_model` makes the network, with the weights of
`--init` carried over. The loop itself is in train.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .alphabet import Alphabet
from .config import ModelConfig, TrainConfig, input_from_architecture, resolve_run_config
from .data import Dataset, Preprocess, Problem, read_all, split_dataset
from .datastats import DataStats, data_stats
from .errors import CrnnError, DatasetError, UsageError, quoted
from .finetune import Surgery, init_from, plan_alphabet
from .fitting import fit_input
from .heads import head_for
from .modelfile import (CHECKPOINT_FORMAT, LoadedModel, load_model, model_parts, preprocess_for, read_payload,
                        remove_stale_temp_files)

Callback = Callable[[str, dict[str, Any]], None]
MIN_TRAIN_SAMPLES = 2
MODEL_FILES = ("best.pt", "last.pt")  # a folder holding one of these is a run, never silently replaced


@dataclass
class RunPlan:
    """What a run is: where it writes, what it reads, its settings, and what it starts from."""

    run_dir: Path
    data: Any
    val: Any
    labels: str
    model_config: ModelConfig
    train_config: TrainConfig
    alphabet: Alphabet | None = None  # fixed by a resumed checkpoint
    preprocess: Preprocess | None = None  # fixed by a checkpoint or an --init model
    saved: dict[str, Any] = field(default_factory=dict)  # a resumed checkpoint's "state" (with its weights)
    init_model: LoadedModel | None = None
    init_name: str | None = None  # --init as the user gave it (a file, run folder or bundled name)
    fit_height: bool = False  # the input height is a bundled architecture's default: the data may decide it
    fit_width: bool = False  # so is the width scale (the stretch across)


def plan_run(data: Any, out_dir: Any, model: ModelConfig | str | None, train: TrainConfig | None, val: Any,
             labels: str, resume: Any, init: Any, overrides: dict[str, Any] | None, config_file: Any,
             model_flags: dict[str, Any] | None, force: bool) -> RunPlan:
    """A new, resumed or fine-tuning run, its settings decided once (see resolve_run_config)."""
    if resume is not None:
        if init is not None:
            raise UsageError("--init starts a new run; it cannot be combined with --resume")
        run_dir = Path(resume)
        last = run_dir / "last.pt"
        payload = read_payload(last)
        if payload["format"] != CHECKPOINT_FORMAT or "state" not in payload:
            raise CrnnError(f"{last}: not a resumable checkpoint")
        model_config, train_config = resolve_run_config(
            model, train, config_file=config_file, model_flags=model_flags, train_flags=overrides,
            checkpoint=payload, checkpoint_source=str(last))
        info = payload["train"]
        saved = dict(payload["state"], state_dict=payload["state_dict"])
        _, alphabet, preprocess = model_parts(last, payload)  # each checked, a damaged one named
        remove_stale_temp_files(run_dir)  # left by a write that a kill cut short
        return RunPlan(run_dir, data or info["data"], val or info.get("val"), info.get("labels", labels),
                       model_config, train_config, alphabet, preprocess, saved)
    if data is None:
        raise UsageError("no training data given")
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    _check_run_dir(run_dir, force)
    init_model = load_model(init) if init is not None else None
    model_config, train_config = resolve_run_config(
        model, train, config_file=config_file, model_flags=model_flags, train_flags=overrides,
        init=init_model.config if init_model else None)
    # Fine-tuning reads images exactly as the initial model was trained to, never re-guessed.
    return RunPlan(run_dir, data, val, labels, model_config, train_config,
                   preprocess=init_model.preprocess if init_model else None, init_model=init_model,
                   init_name=str(init) if init is not None else None,
                   fit_height=init is None and input_from_architecture(model, config_file, model_flags),
                   fit_width=init is None and input_from_architecture(model, config_file, model_flags, "width_scale"))


def _check_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise CrnnError(f"{run_dir}: not a folder; give --out a folder for the run")
    held = [name for name in MODEL_FILES if (run_dir / name).exists()]
    if "last.pt" in held and not force:
        raise CrnnError(f"{run_dir}: already holds a run (last.pt); use --resume {run_dir}, another --out, "
                        "or --force to replace it")
    if held and not force:
        raise CrnnError(f"{run_dir}: already holds a model ({', '.join(held)}); use another --out, "
                        "or --force to replace it")


class Prepared:
    """A split decoded once into memory: uint8 arrays, texts, encoded targets."""

    def __init__(self, arrays: list[np.ndarray], texts: list[str], paths: list[Path], origins: list[str] | None = None,
                 *, sizes: list[tuple[int, int]]):
        self.arrays = arrays
        self.texts = texts
        self.paths = paths
        self.origins = origins or [str(p) for p in paths]  # label file:line, for messages
        self.widths = [a.shape[1] for a in arrays]
        self.sizes = sizes  # each image's own (width, height), before resizing (data statistics)
        self.targets: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.arrays)

    def keep(self, indices: list[int]) -> None:
        for name in ("arrays", "texts", "paths", "origins", "widths", "sizes"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in indices])


def _decode_split(dataset: Dataset, preprocess: Preprocess, threads: int, emit: Callback,
                  split: str) -> tuple[Prepared, list[Problem]]:
    total = len(dataset.samples)
    arrays, sizes, problems = read_all([s.path for s in dataset.samples], preprocess, threads,
                                       lambda done: emit("loading", {"split": split, "done": done, "total": total}))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    samples = [dataset.samples[i] for i in keep]
    prepared = Prepared([arrays[i] for i in keep], [s.text for s in samples], [s.path for s in samples],
                        [s.origin or str(s.path) for s in samples], sizes=[sizes[i] for i in keep])
    return prepared, problems


@dataclass
class RunData:
    train: Prepared
    val: Prepared
    alphabet: Alphabet
    model_config: ModelConfig  # with what the data decides filled in (the softmax head's L)
    skipped: list[Problem]
    stats: DataStats  # the training images as read (datastats.py), before unlearnable labels are dropped
    fitted: dict[str, Any] | None = None  # the input height and width scale the data decided (fit_input), if it could

    def record(self) -> dict[str, Any]:
        """What config.yaml keeps under `data:`."""
        return {**self.stats.to_dict(), **({"fitted": self.fitted} if self.fitted else {})}


def prepare_data(plan: RunPlan, init_alphabet: str, emit: Callback) -> RunData:
    """Both splits decoded, the alphabet planned, unlearnable labels dropped with a reason."""
    train_set, val_set = split_dataset(plan.data, plan.val, plan.labels, plan.train_config.val_fraction)
    config, fitted = fit_input(plan.model_config, train_set, plan.fit_height, plan.fit_width, emit) \
        if plan.fit_height or plan.fit_width else (plan.model_config, None)
    preprocess = plan.preprocess or preprocess_for(config)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, min(4, (os.cpu_count() or 1) // local_processes))
    train_data, train_bad = _decode_split(train_set, preprocess, threads, emit, "train")
    val_data, val_bad = _decode_split(val_set, preprocess, threads, emit, "val")
    alphabet = _plan_alphabet(plan, train_data, init_alphabet)
    model_config = head_for(config).resolve(config, train_data.texts + val_data.texts)
    _refuse_too_long_for_head(train_data, val_data, model_config, plan.data)
    stats = training_stats(train_data, preprocess, model_config)
    dropped = _drop_unlearnable(train_data, alphabet, model_config)
    skipped = train_set.problems + val_set.problems + train_bad + val_bad + dropped
    if skipped:
        emit("skipped", {"problems": skipped})
    if len(train_data) < MIN_TRAIN_SAMPLES:
        raise DatasetError(f"{plan.data}: only {len(train_data)} usable training samples "
                           f"({len(skipped)} skipped, first: {skipped[0] if skipped else '-'})")
    if len(val_data) == 0:
        raise DatasetError(f"{plan.val or plan.data}: no usable validation samples")
    emit("data", stats.to_dict())
    return RunData(train_data, val_data, alphabet, model_config, skipped, stats, fitted)


def training_stats(train: Prepared, preprocess: Preprocess, config: ModelConfig) -> DataStats:
    """Heights as read, widths at the model height, and the time steps the model reads each image with."""
    return data_stats([h for _, h in train.sizes], [preprocess.target_width(w, h) for w, h in train.sizes],
                      train.texts, train.widths, [config.time_steps(w) for w in train.widths], preprocess.height)


def _plan_alphabet(plan: RunPlan, train_data: Prepared, init_alphabet: str) -> Alphabet:
    if plan.init_model is not None:
        return plan_alphabet(plan.init_model.alphabet, train_data.texts, init_alphabet, str(plan.data))
    if plan.alphabet is None:
        return Alphabet.from_texts(train_data.texts)
    unknown = sorted(set().union(*(plan.alphabet.unknown(t) for t in train_data.texts)))
    if unknown:
        first = next(i for i, t in enumerate(train_data.texts) if plan.alphabet.unknown(t))
        raise DatasetError(
            f"{plan.data}: characters not in the model's alphabet: {quoted(''.join(unknown))} "
            f"(first in {train_data.origins[first]}: {quoted(train_data.texts[first])}) "
            "(a run's alphabet is fixed; start a new run with --init and --alphabet union)")
    return plan.alphabet


def _refuse_too_long_for_head(train: Prepared, val: Prepared, config: ModelConfig, data: Any) -> None:
    """Labels longer than any image can carry (the softmax head's L): a setting to change, not samples to skip."""
    limit = head_for(config).max_label_length(config)
    if limit is None:
        return
    too_long = [(path, text) for part in (train, val) for path, text in zip(part.paths, part.texts) if len(text) > limit]
    if too_long:
        path, text = too_long[0]
        raise DatasetError(
            f"{data}: {len(too_long)} labels are longer than the {head_for(config).name} head's {limit} positions "
            f"(first: {path}: label of {len(text)} chars); raise the head length (--max-length) or leave it unset "
            "to use the longest label")


def _drop_unlearnable(train: Prepared, alphabet: Alphabet, config: ModelConfig) -> list[Problem]:
    """Encode targets; drop samples the head cannot learn at their width (CTC: too narrow)."""
    head = head_for(config)
    keep, problems, targets = [], [], []
    for i, text in enumerate(train.texts):
        ids = alphabet.encode(text)
        problem = head.label_problem(config, ids, train.widths[i])
        if problem is not None:
            problems.append(Problem(train.origins[i], f"{problem} ({train.paths[i].name}); skipped"))
            continue
        keep.append(i)
        targets.append(ids)
    train.keep(keep)
    train.targets = targets
    return problems


def build_model(plan: RunPlan, run_data: RunData, device: Any, emit: Callback):
    """The network for the run's config and alphabet, on `device`; with --init, its weights carried over."""
    from .model import CRNN

    model = CRNN(run_data.model_config, run_data.alphabet.num_classes)
    surgery: Surgery | None = None
    if plan.init_model is not None:
        head = head_for(run_data.model_config)
        surgery = init_from(model, plan.init_model.model.state_dict(), plan.init_model.alphabet, run_data.alphabet,
                            rows=head.rows, head_keys=head.classifier_keys, seed=plan.train_config.seed)
    return model.to(device), surgery

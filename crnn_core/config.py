"""Model and training configs: dataclasses, typed validation, YAML round trip, bundled names.

Every setting has one `Setting` (its type and bounds) that checks it the same way whether it
comes from a YAML file, a flag or a checkpoint; `resolve_run_config` is the one place that
decides a run's settings (defaults -> config file -> flags, or the checkpoint on resume).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .choices import AUGMENT_LEVELS, AUGMENT_RENAMED, DEFAULT_ARCHITECTURE, DEFAULT_AUGMENT, PRECISIONS
from .errors import ConfigError, UsageError
from .heads import HEADS, head_for

# How the softmax head turns the column sequence into its L positions.
REDUCTIONS = ("mean", "last", "attention")
DEFAULT_MODEL = DEFAULT_ARCHITECTURE
_YAML_11_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")
# A model bigger than this is a typo (`--height 100000` built 614 M parameters and was killed
# by the kernel), not a CRNN: the bundled ones have 0.1-8 M.
MAX_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class Setting:
    """One setting's type and bounds; `check` returns the value or raises one clear line."""

    kind: type  # int, float, bool or str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # None (unset) allowed
    renamed: tuple[tuple[str, str], ...] = ()  # (old name, choice): old names still accepted, read as the new

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices[:-1]) + " or " + self.choices[-1]
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a number" if self.kind is float else "a text"
        bounds = []
        if self.lo is not None:
            bounds.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            bounds.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: Any, name: str) -> Any:
        if value is None and self.optional:
            return None
        if self.kind is float and isinstance(value, str) and _YAML_11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `lr: 1e-3` (no dot) as a string
        if isinstance(value, str):
            value = dict(self.renamed).get(value, value)
        if not self._valid(value):
            shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40] + "...")
            raise ConfigError(f"{name} must be {self.expected()}, not {shown}")
        return float(value) if self.kind is float else value

    def _valid(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False  # YAML's "30" and true are not numbers
        if self.kind is int and not isinstance(value, int):
            return False  # 16.9 channels is a typo, not 16
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return self.hi is None or (value < self.hi or (not self.hi_open and value == self.hi))


def _int(lo: int, hi: int, optional: bool = False) -> Setting:
    return Setting(int, lo, hi, optional=optional)


# The model file's layers and input: bounds far beyond any CRNN, tight enough to catch typos.
LAYER_SETTINGS = {"conv": _int(1, 4096), "kernel": _int(1, 31), "stride": _int(1, 31), "padding": _int(0, 31),
                  "pool": _int(1, 31)}
INPUT_SETTINGS = {"height": _int(8, 1024), "channels": _int(1, 3), "max_width": _int(8, 20_000),
                  "width_scale": Setting(float, 0.25, 8)}
RNN_SETTINGS = {"hidden": _int(1, 4096), "layers": _int(0, 8), "dropout": Setting(float, 0, 1, hi_open=True),
                "bidirectional": Setting(bool)}


@dataclass
class LayerSpec:
    """One backbone layer: a conv (3x3 by default, 'same' padding) or a max pool."""

    kind: str  # "conv" | "pool"
    out: int = 0  # conv output channels
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    batch_norm: bool = True

    @classmethod
    def parse(cls, raw: Any, default_bn: bool, source: str = "config") -> "LayerSpec":
        if not isinstance(raw, dict) or len({"conv", "pool"} & raw.keys()) != 1:
            raise ConfigError(f"{source}: backbone layer {raw!r}: expected a mapping with 'conv: CHANNELS' or "
                              "'pool: SIZE'")
        unknown = set(raw) - {"conv", "pool", "kernel", "stride", "padding", "bn"}
        if unknown:
            raise ConfigError(f"{source}: backbone layer {raw!r}: unknown keys {sorted(unknown)}")
        where = f"{source}: backbone layer {raw!r}:"
        if "conv" in raw:
            kernel = _pair(raw.get("kernel", 3), f"{where} kernel")
            return cls(
                kind="conv",
                out=LAYER_SETTINGS["conv"].check(raw["conv"], f"{where} conv"),
                kernel=kernel,
                stride=_pair(raw.get("stride", 1), f"{where} stride"),
                padding=_pair(raw.get("padding", (kernel[0] // 2, kernel[1] // 2)), f"{where} padding"),
                batch_norm=Setting(bool).check(raw.get("bn", default_bn), f"{where} bn"),
            )
        kernel = _pair(raw["pool"], f"{where} pool")
        return cls(
            kind="pool",
            kernel=kernel,
            stride=_pair(raw.get("stride", kernel), f"{where} stride"),
            padding=_pair(raw.get("padding", 0), f"{where} padding"),
            batch_norm=False,
        )

    def to_dict(self, default_bn: bool) -> dict[str, Any]:
        if self.kind == "pool":
            d: dict[str, Any] = {"pool": list(self.kernel)}
            if self.stride != self.kernel:
                d["stride"] = list(self.stride)
            if self.padding != (0, 0):
                d["padding"] = list(self.padding)
            return d
        d = {"conv": self.out}
        if self.kernel != (3, 3):
            d["kernel"] = list(self.kernel)
        if self.stride != (1, 1):
            d["stride"] = list(self.stride)
        if self.padding != (self.kernel[0] // 2, self.kernel[1] // 2):
            d["padding"] = list(self.padding)
        if self.batch_norm != default_bn:
            d["bn"] = self.batch_norm
        return d

    def out_size(self, size: int, axis: int) -> int:
        """Output length along axis 0 (height) or 1 (width) for an input of `size`."""
        return (size + 2 * self.padding[axis] - self.kernel[axis]) // self.stride[axis] + 1

    def parameters(self, channels_in: int) -> int:
        if self.kind == "pool":
            return 0
        weights = channels_in * self.out * self.kernel[0] * self.kernel[1]
        return weights + (2 * self.out if self.batch_norm else self.out)


def _pair(value: Any, name: str) -> tuple[int, int]:
    """An int or an [height, width] pair of ints, each within the layer bounds."""
    setting = LAYER_SETTINGS["padding" if name.endswith("padding") else "kernel"]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (setting.check(value[0], name), setting.check(value[1], name))
    if isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be an integer or an [height, width] pair, not {value!r}")
    single = setting.check(value, name)
    return (single, single)


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    description: str = ""
    height: int = 32
    channels: int = 1
    max_width: int = 800
    # Images are resized to `height` and stretched across by this factor: more time steps per
    # character for densely set text (fitting.fit_input); max_width counts stretched pixels.
    width_scale: float = 1.0
    backbone: list[LayerSpec] = field(default_factory=list)
    batch_norm: bool = True
    rnn_hidden: int = 128
    rnn_layers: int = 2
    rnn_dropout: float = 0.0
    rnn_bidirectional: bool = True
    head: str = "ctc"
    head_length: int | None = None  # softmax head: positions L (None = the longest training label)
    head_reduce: str = "mean"  # softmax head: "mean" (L averaged bins of columns) or "last" (the final RNN state)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"model {self.name}: head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.head_reduce not in REDUCTIONS:
            raise ConfigError(f"model {self.name}: head reduce {self.head_reduce!r} is not one of {', '.join(REDUCTIONS)}")
        if self.head_length is not None and self.head_length < 1:
            raise ConfigError(f"model {self.name}: head length must be at least 1, not {self.head_length}")
        head_for(self).check(self)
        if self.channels not in (1, 3):
            raise ConfigError(f"model {self.name}: channels must be 1 (grayscale) or 3 (RGB), not {self.channels}")
        if not self.backbone:
            raise ConfigError(f"model {self.name}: the backbone has no layers")
        if self.rnn_layers < 0 or self.rnn_hidden < 1:
            raise ConfigError(f"model {self.name}: rnn needs hidden >= 1 and layers >= 0")
        if self.feature_height() < 1:
            raise ConfigError(f"model {self.name}: the backbone shrinks a height of {self.height} px to nothing")
        if self.min_width > self.max_width:
            raise ConfigError(f"model {self.name}: max_width {self.max_width} is below the smallest usable width {self.min_width}")
        if self.estimated_parameters() > MAX_PARAMETERS:
            raise ConfigError(f"model {self.name}: about {self.estimated_parameters():,} parameters at height "
                              f"{self.height} px, more than the {MAX_PARAMETERS:,} a CRNN could use (a smaller "
                              "--height, or a backbone that pools the height down)")

    def _through(self, size: int, axis: int) -> int:
        for layer in self.backbone:
            size = layer.out_size(size, axis)
            if size < 1:
                return 0
        return size

    def feature_height(self) -> int:
        return self._through(self.height, 0)

    def feature_channels(self) -> int:
        return [layer.out for layer in self.backbone if layer.kind == "conv"][-1] if any(
            layer.kind == "conv" for layer in self.backbone) else self.channels

    def estimated_parameters(self) -> int:
        """Backbone and RNN weights (the output layer, sized by the alphabet, is left out)."""
        total, channels = 0, self.channels
        for layer in self.backbone:
            total += layer.parameters(channels)
            channels = layer.out if layer.kind == "conv" else channels
        size, directions = self.feature_channels() * self.feature_height(), 2 if self.rnn_bidirectional else 1
        for _ in range(self.rnn_layers):
            total += directions * 4 * self.rnn_hidden * (size + self.rnn_hidden + 2)
            size = directions * self.rnn_hidden
        return total

    def time_steps(self, width: int) -> int:
        """Length of the sequence the backbone reads from an image `width` px wide."""
        return self._through(width, 1)

    @property
    def min_width(self) -> int:
        """The narrowest input that still gives one time step."""
        width = 1
        while self.time_steps(width) < 1:
            width += 1
        return width

    def output_length(self, width: int) -> int:
        """Frames the model outputs for an image `width` px wide: T for CTC, L for softmax."""
        return head_for(self).output_length(self, width)

    def width_for_length(self, length: int) -> int:
        """The narrowest input whose sequence can carry a CTC label of `length` symbols."""
        width = self.min_width
        while self.time_steps(width) < length:
            width += 1
        return width

    # -- YAML --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input": self._input_dict(),
            "batch_norm": self.batch_norm,
            "backbone": [layer.to_dict(self.batch_norm) for layer in self.backbone],
            "rnn": self._rnn_dict(),
            "head": head_for(self).to_yaml(self),
        }

    def _input_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"height": self.height, "channels": self.channels, "max_width": self.max_width}
        if self.width_scale != 1.0:  # only where it matters, so that files crnn wrote before it still match
            d["width_scale"] = self.width_scale
        return d

    def _rnn_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"hidden": self.rnn_hidden, "layers": self.rnn_layers, "dropout": self.rnn_dropout}
        if not self.rnn_bidirectional:
            d["bidirectional"] = False
        return d

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "ModelConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a model config must be a mapping")
        _no_unknown(raw, {"name", "description", "input", "batch_norm", "backbone", "rnn", "head"}, source, "model")
        inp = _section(raw, "input", source, INPUT_SETTINGS)
        rnn = _section(raw, "rnn", source, RNN_SETTINGS)
        default_bn = Setting(bool).check(raw.get("batch_norm", True), f"{source}: batch_norm")
        layers = raw.get("backbone")
        if not isinstance(layers, list):
            raise ConfigError(f"{source}: 'backbone' must be a list of layers")
        head = _head_section(raw.get("head", "ctc"), source)
        return cls(
            name=_text(raw.get("name", Path(source).stem), f"{source}: name"),
            description=_text(raw.get("description", ""), f"{source}: description", empty=True),
            height=inp.get("height", 32),
            channels=inp.get("channels", 1),
            max_width=inp.get("max_width", 800),
            width_scale=inp.get("width_scale", 1.0),
            backbone=[LayerSpec.parse(layer, default_bn, source) for layer in layers],
            batch_norm=default_bn,
            rnn_hidden=rnn.get("hidden", 128),
            rnn_layers=rnn.get("layers", 2),
            rnn_dropout=rnn.get("dropout", 0.0),
            rnn_bidirectional=rnn.get("bidirectional", True),
            head=head.get("type", "ctc"),
            head_length=head.get("length"),
            head_reduce=head.get("reduce", "mean"),
        )


def _no_unknown(raw: Mapping[str, Any], known: set[str], source: str, what: str) -> None:
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{source}: unknown {what} keys {sorted(map(str, unknown))} (known: {sorted(known)})")


def _section(raw: Mapping[str, Any], key: str, source: str, settings: Mapping[str, Setting]) -> dict[str, Any]:
    """A nested mapping (input:, rnn:) with each value checked against its setting."""
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: '{key}' must be a mapping")
    _no_unknown(section, set(settings), source, key)
    return {k: settings[k].check(v, f"{source}: {key}.{k}") for k, v in section.items()}


def _head_section(head: Any, source: str) -> dict[str, Any]:
    if isinstance(head, str):
        head = {"type": head}
    if not isinstance(head, dict) or set(head) - {"type", "length", "reduce"}:
        raise ConfigError(f"{source}: 'head' must be ctc, softmax, or a mapping with type, length, reduce")
    checks = {"type": Setting(str, choices=tuple(HEADS)), "length": _int(1, 10_000, optional=True),
              "reduce": Setting(str, choices=REDUCTIONS)}
    return {k: checks[k].check(v, f"{source}: head.{k}") for k, v in head.items()}


def _text(value: Any, name: str, empty: bool = False) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # `name: 2024` is a fine name
    if not isinstance(value, str) or (not value and not empty):
        raise ConfigError(f"{name} must be a text, not {value!r}")
    return value


class _FreezeSetting(Setting):
    """--freeze-backbone: a number of epochs, or 'all'."""

    def expected(self) -> str:
        return "a number of epochs (>= 0) or 'all'"

    def _valid(self, value: Any) -> bool:
        return value == "all" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000)


# Every training setting, its type and bounds: YAML files, flags and checkpoints all pass here.
TRAIN_SETTINGS: dict[str, Setting] = {
    "epochs": _int(1, 100_000),
    "batch_size": _int(1, 4096),
    "lr": Setting(float, 0, 10, lo_open=True),
    "weight_decay": Setting(float, 0, 1),
    "warmup_steps": _int(0, 10_000_000),
    "grad_clip": Setting(float, 0, 1e6, lo_open=True),
    "patience": _int(1, 100_000),
    "max_minutes": Setting(float, 0, 1e6, optional=True),  # 0 or unset: no time limit
    "seed": _int(0, 2**32 - 1),
    "device": Setting(str),
    "val_fraction": Setting(float, 0, 1, lo_open=True, hi_open=True),
    "augment": Setting(str, choices=AUGMENT_LEVELS, renamed=tuple(AUGMENT_RENAMED.items())),
    "threads": _int(1, 1024, optional=True),
    "precision": Setting(str, choices=PRECISIONS),
    "freeze_backbone": _FreezeSetting(int),
    "ema": Setting(float, 0, 1, hi_open=True),  # a decay of 1 would never move from the first step's weights
    "dropout": Setting(float, 0, 1, hi_open=True),
    "elastic": Setting(float, 0, 1),
}
# With a time budget the clock ends a run: the epoch cap and early stopping apply only when a
# flag or config file asks for them. With them, 10-minute runs on captchas and handwritten
# digits stopped at 8.5 min while validation accuracy still swung by 4 points between epochs
# (issue 15), and the learning rate decays with the clock anyway (train.lr_factor).
UNTIL_BUDGET = 100_000  # the most epochs and patience a setting allows: no limit before the budget's
# AdamW's decay pulls weights towards zero, not towards the model a run starts from: with --init
# it erodes what that model knew. Fine-tuning latin-print on 400 lines for 2 minutes, 1e-4 read
# more test lines than 0.05 in each of four pairs of runs (93.73% against 93.30% over the three seeds of one day;
# docs/accuracy.md, "Weight decay: a second seed, and fine-tuning").
FINETUNE_WEIGHT_DECAY = 1e-4
# What `--resume` may change: how long and where the run goes on, never what it learns from.
# `ema` is not among them: the average in last.pt was built with the run's decay, and a new
# one from here on would make best.pt a mix of two rules that no uninterrupted run gives.
RESUMABLE = frozenset({"epochs", "max_minutes", "patience", "threads", "device", "precision"})


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3
    # AdamW's decoupled decay; 0.05 since issue 15 (1e-4 before): on the rebuilt proxy suite it
    # read more test strings right on all four kinds, one seed each (docs/accuracy.md, "The suite
    # rebuilt"); a second seed on three of them came out about even ("Weight decay: a second
    # seed"). A run started from another model (--init) uses FINETUNE_WEIGHT_DECAY instead
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 5.0
    patience: int = 8
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    # "light" since issue 15 ("medium", then called "default", before): on the proxy suite, 10 minutes
    # of captchas left CTC's all-blank start after 1 epoch instead of 3 and read 96.5% of the test
    # strings instead of 93.3%; digits, plates and lines were level within the noise (docs/accuracy.md,
    # "Lighter augmentation by default")
    augment: str = DEFAULT_AUGMENT
    threads: int | None = None
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), fp32, bf16, fp16
    freeze_backbone: int | str = 0  # fine-tuning: train only the RNN and head for this many epochs, or "all"
    # weight averaging: the decay of an exponential moving average (averaging.py); 0 = off. On by
    # default since issue 15: with the budget and height changes it hurt none of the four proxy
    # sets (docs/accuracy.md); its own share of the gains was not separated
    ema: float = 0.999
    # the share of the recurrent layers' outputs zeroed before the output layer in training (the
    # place kraken's and calamari's default networks put a dropout of 0.5); 0 = none
    dropout: float = 0.0
    # the size of augmentation's smooth local warps (augment._elastic_field), as a share of the
    # input height; 0 = none
    elastic: float = 0.0

    def __post_init__(self) -> None:
        for key, setting in TRAIN_SETTINGS.items():
            setattr(self, key, setting.check(getattr(self, key), f"train.{key}"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def budget_seconds(self) -> float | None:
        """The time budget, or None when the run has none (`max_minutes` unset or 0)."""
        return self.max_minutes * 60 if self.max_minutes else None

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "TrainConfig":
        if raw is None:
            return cls()
        return cls(**check_train_values(raw, source))


def check_train_values(raw: Any, source: str, flags: bool = False) -> dict[str, Any]:
    """Checked training settings from a file's 'train:' mapping (or flags, named --like-this)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping")
    _no_unknown(raw, set(TRAIN_SETTINGS), source, "train")
    checked = {}
    for key, value in raw.items():
        if flags:
            try:
                checked[key] = TRAIN_SETTINGS[key].check(value, "--" + key.replace("_", "-"))
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
        else:
            checked[key] = TRAIN_SETTINGS[key].check(value, f"{source}: train.{key}")
    return checked


# -- one resolution of a run's settings ----------------------------------------------------
MODEL_FLAGS = ("height", "width_scale", "head", "max_length")


def resolve_run_config(model: ModelConfig | str | None = None, train: TrainConfig | None = None, *,
                       config_file: str | Path | None = None, model_flags: Mapping[str, Any] | None = None,
                       train_flags: Mapping[str, Any] | None = None, checkpoint: Mapping[str, Any] | None = None,
                       checkpoint_source: str = "checkpoint", init: ModelConfig | None = None,
                       ) -> tuple[ModelConfig, TrainConfig]:
    """A run's model and training settings, decided once.

    Precedence: defaults -> `config_file` ('model:' and 'train:' sections) -> explicit
    arguments (`model`, `train`) and flags. A `checkpoint` (resume) or an `init` model fixes
    the architecture; resuming also fixes every training setting outside RESUMABLE. Anything
    that would be ignored is refused with one line naming it.
    """
    model_flags = {k: v for k, v in (model_flags or {}).items() if v is not None}
    train_flags = {k: v for k, v in (train_flags or {}).items() if v is not None}
    _no_unknown(model_flags, set(MODEL_FLAGS), "options", "model option")
    file_model, file_train = _read_run_file(config_file) if config_file is not None else (None, None)
    if checkpoint is not None or init is not None:
        fixed_by = "--resume" if checkpoint is not None else "--init"
        for given, what in ((model, "--model"), (file_model, f"{config_file}'s model: section"),
                            *((value, "--" + key.replace("_", "-")) for key, value in model_flags.items())):
            if given is not None:
                raise UsageError(f"{what}: {fixed_by} takes the architecture and input height from its model; "
                                 "drop it")
        model_config = (ModelConfig.from_dict(checkpoint["config"], source=checkpoint_source)
                        if checkpoint is not None else init)
    else:
        if isinstance(model, str):
            model = load_model_config(model)
        model_config = apply_model_flags(model or file_model or load_model_config(DEFAULT_MODEL), **model_flags)
    train_config = _resolve_train(train, file_train, str(config_file), train_flags, checkpoint, checkpoint_source,
                                  fine_tuning=init is not None)
    return model_config, train_config


def _read_run_file(path: str | Path) -> tuple[ModelConfig | None, dict[str, Any] | None]:
    raw = read_yaml(Path(path))
    if not isinstance(raw, dict) or not ({"model", "train"} & raw.keys()):
        raise ConfigError(f"{path}: expected a mapping with a 'model:' and/or 'train:' section")
    # 'data:' is what a run's config.yaml recorded about its data (datastats.py): not a setting, ignored.
    _no_unknown(raw, {"model", "train", "data"}, str(path), "top-level")
    model = ModelConfig.from_dict(raw["model"], source=str(path)) if raw.get("model") is not None else None
    train = check_train_values(raw["train"], str(path)) if raw.get("train") is not None else None
    return model, train


def _resolve_train(train: TrainConfig | None, file_train: dict[str, Any] | None, file_name: str,
                   flags: dict[str, Any], checkpoint: Mapping[str, Any] | None, source: str,
                   fine_tuning: bool = False) -> TrainConfig:
    flags = check_train_values(flags, "options", flags=True)
    if checkpoint is None:
        base = (train or TrainConfig()).to_dict()
        merged = {**base, **(file_train or {}), **flags}  # a flag overrides the file's value
        given = (file_train or {}).keys() | flags.keys()
        if merged["max_minutes"] and train is None:
            merged.update({key: UNTIL_BUDGET for key in ("epochs", "patience") if key not in given})
        if fine_tuning and train is None and "weight_decay" not in given:
            merged["weight_decay"] = FINETUNE_WEIGHT_DECAY
        return TrainConfig(**merged)
    # a checkpoint from before `ema` existed trained without averaging, whatever today's default
    base = TrainConfig.from_dict({"ema": 0.0, **checkpoint["train"]["config"]}, source).to_dict()
    for changes, name in ((file_train or {}, lambda k: f"{file_name}: train.{k}"),
                          (train.to_dict() if train is not None else {}, lambda k: f"train config {k}"),
                          (flags, lambda k: "--" + k.replace("_", "-"))):
        for key, value in changes.items():
            if value != base[key] and key not in RESUMABLE:
                raise UsageError(f"{name(key)}: a resumed run keeps its {key} ({base[key]!r}); "
                                 "start a new run (with --init) to change it")
        base.update({k: v for k, v in changes.items() if k in RESUMABLE})
    return TrainConfig(**base)


def input_from_architecture(model: ModelConfig | str | None, config_file: str | Path | None,
                            model_flags: Mapping[str, Any] | None, setting: str = "height") -> bool:
    """Whether a new run's input `setting` (height, width_scale) would be a bundled architecture's
    own: none was chosen by its flag, a config file's model: section, an architecture file or a
    ModelConfig. Only then may the data decide it (fitting.fit_input)."""
    if (model_flags or {}).get(setting) is not None or not (model is None or isinstance(model, str)):
        return False
    if model is not None and _names_a_file(model):
        return False
    return config_file is None or _read_run_file(config_file)[0] is None


def with_height(config: ModelConfig, height: int, source: str | None = None) -> ModelConfig:
    """The architecture read at another height, its widest input scaled alike (the same aspect cap)."""
    return _with_input(config, source or config.name, height=height,
                       max_width=_widest(config.max_width * height / config.height))


def with_width_scale(config: ModelConfig, scale: float, source: str | None = None) -> ModelConfig:
    """The architecture reading images stretched across by `scale`, its widest input alike."""
    return _with_input(config, source or config.name, width_scale=scale,
                       max_width=_widest(config.max_width * scale / config.width_scale))


def _widest(width: float) -> int:
    setting = INPUT_SETTINGS["max_width"]
    return int(min(max(round(width), setting.lo), setting.hi))


def _with_input(config: ModelConfig, source: str, **changes: Any) -> ModelConfig:
    """The architecture with some `input:` settings changed, checked as a file's would be."""
    raw = config.to_dict()
    return ModelConfig.from_dict(dict(raw, input=dict(raw["input"], **changes)), source=source)


def apply_model_flags(config: ModelConfig, height: int | None = None, head: str | None = None,
                      max_length: int | None = None, width_scale: float | None = None) -> ModelConfig:
    """The architecture with --height, --width-scale, --head and --max-length applied (train and data check)."""
    try:
        if height is not None:  # the widest input scales alike, as for a fitted height
            config = with_height(config, INPUT_SETTINGS["height"].check(height, "--height"), "--height")
        if width_scale is not None:
            config = with_width_scale(config, INPUT_SETTINGS["width_scale"].check(width_scale, "--width-scale"),
                                      "--width-scale")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if head is not None and head != config.head:
        config = dataclasses.replace(config, head=head, head_length=None)
    if max_length is not None:
        if not head_for(config).has_length:
            raise UsageError(f"--max-length applies to a head with positions, not {config.head} (add --head softmax)")
        config = dataclasses.replace(config, head_length=max_length)
    return config


# -- bundled configs ------------------------------------------------------------------
def bundled_dir():
    """The folder of bundled configs and models (the repository's `models/`)."""
    return resources.files("crnn_core.models")


def bundled_config_names() -> list[str]:
    return sorted(p.name[:-5] for p in bundled_dir().iterdir() if p.name.endswith(".yaml"))


MAX_YAML_VALUES = 100_000  # far beyond any architecture; a "billion laughs" alias tree is refused


def read_yaml(path: Path) -> Any:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        size = _expanded_size(raw, {}, set())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: cannot read YAML: nested too deeply") from None
    if size > MAX_YAML_VALUES:
        raise ConfigError(f"{path}: cannot read YAML: its aliases (*name) expand to more than "
                          f"{MAX_YAML_VALUES} values")
    return raw


def _expanded_size(value: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `value` holds once every alias is written out, counted without writing them
    out (an alias is the same object: each is counted once and reused). ValueError for a cycle."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in open_:
        raise ValueError("an alias (*name) that contains itself")
    if key not in sizes:
        open_.add(key)
        items = list(value.values()) if isinstance(value, dict) else value
        sizes[key] = 1 + sum(_expanded_size(item, sizes, open_) for item in items)
        open_.discard(key)
    return sizes[key]


def _names_a_file(name_or_path: str | Path) -> bool:
    """An architecture given as a YAML file, not as a bundled config's name."""
    text = str(name_or_path)
    return text.endswith((".yaml", ".yml")) or Path(text).is_file()


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A bundled config by name (`crnn-small`) or a YAML file path."""
    text = str(name_or_path)
    if _names_a_file(text):
        raw = read_yaml(Path(text))
        if isinstance(raw, dict) and "model" in raw and "backbone" not in raw:
            raw = raw["model"]  # a run directory's config.yaml
        return ModelConfig.from_dict(raw, source=text)
    resource = bundled_dir() / f"{text}.yaml"
    if not text or not resource.is_file():
        raise ConfigError(
            f"unknown model {text!r}: not a file, and not a bundled config ({', '.join(bundled_config_names())})")
    return ModelConfig.from_dict(yaml.safe_load(resource.read_text(encoding="utf-8")), source=f"{text}.yaml")


def dump_run_config(model: ModelConfig, train: TrainConfig, data: Mapping[str, Any] | None = None) -> str:
    """A run's config.yaml: its settings, and what its training data measured (a record, never read back)."""
    run = {"model": model.to_dict(), "train": train.to_dict()}
    if data is not None:
        run["data"] = dict(data)
    return yaml.safe_dump(run, sort_keys=False, allow_unicode=True)

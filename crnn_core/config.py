"""Model and training configs: dataclasses, YAML round trip, bundled names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

HEADS = ("ctc", "softmax")
# How the softmax head turns the column sequence into its L positions.
REDUCTIONS = ("mean", "last", "attention")
DEFAULT_MODEL = "crnn-fast"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    def parse(cls, raw: Any, default_bn: bool) -> "LayerSpec":
        if not isinstance(raw, dict) or len({"conv", "pool"} & raw.keys()) != 1:
            raise ConfigError(f"backbone layer {raw!r}: expected a mapping with 'conv: CHANNELS' or 'pool: SIZE'")
        unknown = set(raw) - {"conv", "pool", "kernel", "stride", "padding", "bn"}
        if unknown:
            raise ConfigError(f"backbone layer {raw!r}: unknown keys {sorted(unknown)}")
        if "conv" in raw:
            kernel = _pair(raw.get("kernel", 3), raw)
            return cls(
                kind="conv",
                out=int(raw["conv"]),
                kernel=kernel,
                stride=_pair(raw.get("stride", 1), raw),
                padding=_pair(raw.get("padding", (kernel[0] // 2, kernel[1] // 2)), raw),
                batch_norm=bool(raw.get("bn", default_bn)),
            )
        kernel = _pair(raw["pool"], raw)
        return cls(
            kind="pool",
            kernel=kernel,
            stride=_pair(raw.get("stride", kernel), raw),
            padding=_pair(raw.get("padding", 0), raw),
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


def _pair(value: Any, raw: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"backbone layer {raw!r}: {value!r} is not an int or an [height, width] pair")


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    description: str = ""
    height: int = 32
    channels: int = 1
    max_width: int = 800
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
        if self.head == "softmax" and self.head_reduce == "last" and self.rnn_layers == 0:
            raise ConfigError(f"model {self.name}: head reduce 'last' needs an rnn (layers >= 1)")
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
        if self.head == "softmax":
            assert self.head_length is not None, "softmax head length not resolved"
            return self.head_length
        return self.time_steps(width)

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
            "input": {"height": self.height, "channels": self.channels, "max_width": self.max_width},
            "batch_norm": self.batch_norm,
            "backbone": [layer.to_dict(self.batch_norm) for layer in self.backbone],
            "rnn": self._rnn_dict(),
            "head": self._head_dict(),
        }

    def _rnn_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"hidden": self.rnn_hidden, "layers": self.rnn_layers, "dropout": self.rnn_dropout}
        if not self.rnn_bidirectional:
            d["bidirectional"] = False
        return d

    def _head_dict(self) -> str | dict[str, Any]:
        if self.head == "ctc":
            return "ctc"
        d: dict[str, Any] = {"type": self.head, "reduce": self.head_reduce}
        if self.head_length is not None:
            d["length"] = self.head_length
        return d

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "ModelConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a model config must be a mapping")
        known = {"name", "description", "input", "batch_norm", "backbone", "rnn", "head"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        inp = raw.get("input") or {}
        rnn = raw.get("rnn") or {}
        default_bn = bool(raw.get("batch_norm", True))
        layers = raw.get("backbone")
        if not isinstance(layers, list):
            raise ConfigError(f"{source}: 'backbone' must be a list of layers")
        head = raw.get("head", "ctc")
        if isinstance(head, str):
            head = {"type": head}
        if not isinstance(head, dict) or set(head) - {"type", "length", "reduce"}:
            raise ConfigError(f"{source}: 'head' must be ctc, softmax, or a mapping with type, length, reduce")
        if set(rnn) - {"hidden", "layers", "dropout", "bidirectional"}:
            raise ConfigError(f"{source}: unknown rnn keys {sorted(set(rnn) - {'hidden', 'layers', 'dropout', 'bidirectional'})}")
        try:
            return cls(
                name=str(raw.get("name", Path(source).stem)),
                description=str(raw.get("description", "")),
                height=int(inp.get("height", 32)),
                channels=int(inp.get("channels", 1)),
                max_width=int(inp.get("max_width", 800)),
                backbone=[LayerSpec.parse(layer, default_bn) for layer in layers],
                batch_norm=default_bn,
                rnn_hidden=int(rnn.get("hidden", 128)),
                rnn_layers=int(rnn.get("layers", 2)),
                rnn_dropout=float(rnn.get("dropout", 0.0)),
                rnn_bidirectional=bool(rnn.get("bidirectional", True)),
                head=str(head.get("type", "ctc")),
                head_length=None if head.get("length") is None else int(head["length"]),
                head_reduce=str(head.get("reduce", "mean")),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: {exc}") from None


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 5.0
    patience: int = 8
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    augment: str = "default"
    threads: int | None = None
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), fp32, bf16, fp16
    freeze_backbone: int | str = 0  # fine-tuning: train only the RNN and head for this many epochs, or "all"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "TrainConfig":
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: 'train' must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"{source}: unknown train keys {sorted(unknown)} (known: {sorted(names)})")
        if "augment" in raw and raw["augment"] not in ("none", "light", "default", "heavy"):
            raise ConfigError(f"{source}: augment must be none, light, default or heavy, not {raw['augment']!r}")
        if "precision" in raw and raw["precision"] not in PRECISIONS:
            raise ConfigError(f"{source}: precision must be one of {', '.join(PRECISIONS)}, not {raw['precision']!r}")
        freeze = raw.get("freeze_backbone", 0)
        if not (freeze == "all" or (isinstance(freeze, int) and not isinstance(freeze, bool) and freeze >= 0)):
            raise ConfigError(f"{source}: freeze_backbone must be a number of epochs or 'all', not {freeze!r}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None


# -- bundled configs ------------------------------------------------------------------
def bundled_dir():
    """The folder of bundled configs and models (the repository's `models/`)."""
    return resources.files("crnn_core.models")


def bundled_config_names() -> list[str]:
    return sorted(p.name[:-5] for p in bundled_dir().iterdir() if p.name.endswith(".yaml"))


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {str(exc).splitlines()[0]}") from None


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A bundled config by name (`crnn-small`) or a YAML file path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        raw = read_yaml(Path(text))
        if isinstance(raw, dict) and "model" in raw and "backbone" not in raw:
            raw = raw["model"]  # a run directory's config.yaml
        return ModelConfig.from_dict(raw, source=text)
    resource = bundled_dir() / f"{text}.yaml"
    if not resource.is_file():
        raise ConfigError(
            f"unknown model {text!r}: not a file, and not a bundled config ({', '.join(bundled_config_names())})")
    return ModelConfig.from_dict(yaml.safe_load(resource.read_text(encoding="utf-8")), source=f"{text}.yaml")


def dump_run_config(model: ModelConfig, train: TrainConfig) -> str:
    return yaml.safe_dump({"model": model.to_dict(), "train": train.to_dict()}, sort_keys=False, allow_unicode=True)

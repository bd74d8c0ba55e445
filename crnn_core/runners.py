"""Where the model's forward pass runs, chosen in one place.

A runner has the model's settings (`.config`) and one method, `run(images) -> log_probs`, numpy
in and out (float32 images B x C x H x W, pixel / 127.5 - 1; log-probs T x B x classes), so
the recogniser's batching and decoding are the same for all of them:

- `TorchRunner`: the eager model (or its int8 dynamic quantisation, backends.py), on a device.
- `OnnxRunner` (onnx_runner.py): an ONNX Runtime session on the CPU, without torch.

`resolve_runner(model, backend, device, quantize)` picks one from `PLANS`, the decision table,
and loads it. torch is imported only when a torch runner is built: the ONNX Runtime path of
`crnn predict` never loads it (tests/test_backends.py checks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .config import ModelConfig
from .errors import CrnnError
from .modelfile import LoadedModel, load_model
from .onnx_runner import bundled_onnx, load_onnx_model, onnxruntime_available
from .torch_runner import TorchRunner

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "torch", "onnx")
QUANTIZE = ("int8",)
DEVICES = "auto, cpu, cuda, cuda:N"


class Runner(Protocol):
    config: ModelConfig

    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 images B x C x H x W -> log-probs T x B x classes."""


# --------------------------------------------------------------------------------------------
# Devices

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_device(device: str) -> None:
    """The device's spelling, without importing torch."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise CrnnError(f"unknown device {device} (use {DEVICES})")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for `--device`; a device this machine or torch build lacks is a CrnnError."""
    check_device(device)
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.backends.cuda.is_built():
            raise CrnnError(f"device {device}: this torch build has no CUDA")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CrnnError(f"device {device}: no CUDA device is available")
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise CrnnError(f"device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise CrnnError("device mps: not available on this machine")
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# The decision table

# What the model is ("bundled": a bundled model that ships an ONNX twin; "onnx": a .onnx file;
# "pt": anything else, a .pt file, a run folder, a bundled model without a twin, a model in
# memory), --backend and --quantize -> the runners to try, best first. A runner is passed over
# when it cannot serve the device (all but "torch" run on the CPU only) or onnxruntime is
# missing; when none fits, the last one's own error is raised. `auto` prefers ONNX Runtime
# where the model ships as ONNX (no torch import, faster on a CPU). A .onnx file has no eager
# weights, so it runs in ONNX Runtime whatever the backend, and cannot be quantised here.
PLANS: dict[tuple[str, str, str | None], tuple[str, ...]] = {
    ("bundled", "auto", None): ("onnx-file", "torch"),
    ("bundled", "auto", "int8"): ("torch-int8",),
    ("bundled", "torch", None): ("torch",),
    ("bundled", "torch", "int8"): ("torch-int8",),
    ("bundled", "onnx", None): ("onnx-file",),
    ("bundled", "onnx", "int8"): ("onnx-export",),
    ("onnx", "auto", None): ("onnx-file",),
    ("onnx", "torch", None): ("onnx-file",),
    ("onnx", "onnx", None): ("onnx-file",),
    ("pt", "auto", None): ("torch",),
    ("pt", "auto", "int8"): ("torch-int8",),
    ("pt", "torch", None): ("torch",),
    ("pt", "torch", "int8"): ("torch-int8",),
    ("pt", "onnx", None): ("onnx-export",),
    ("pt", "onnx", "int8"): ("onnx-export",),
}
CPU_ONLY = {"onnx-file", "onnx-export", "torch-int8"}
NEEDS_ONNXRUNTIME = {"onnx-file", "onnx-export"}


def model_kind(model: str | Path | LoadedModel | None) -> str:
    if isinstance(model, LoadedModel):
        return "pt"
    if bundled_onnx(model) is not None:
        return "bundled"
    return "onnx" if str(model).endswith(".onnx") else "pt"


def choose_plan(kind: str, backend: str, device: str, quantize: str | None, has_onnxruntime: bool,
                name: str = "the model") -> str:
    """The runner for a request, from PLANS (raises CrnnError for one that cannot be served)."""
    if backend not in BACKENDS:
        raise CrnnError(f"unknown backend {backend!r} (use {', '.join(BACKENDS)})")
    if quantize is not None and quantize not in QUANTIZE:
        raise CrnnError(f"unknown quantisation {quantize!r} (use {' or '.join(QUANTIZE)})")
    check_device(device)
    plans = PLANS.get((kind, backend, quantize))
    if plans is None:
        raise CrnnError(f"{name}: --quantize applies to .pt models (it quantises them before export)")
    on_cpu = device in ("auto", "cpu")
    for plan in plans:
        if (on_cpu or plan not in CPU_ONLY) and (has_onnxruntime or plan not in NEEDS_ONNXRUNTIME):
            return plan
    plan = plans[-1]
    if not on_cpu and plan in CPU_ONLY:
        what = f"--quantize {quantize}" if plan == "torch-int8" else "--backend onnx" if kind != "onnx" \
            else "a .onnx model"
        raise CrnnError(f"{what} runs on the CPU only (got --device {device})")
    return plan  # onnxruntime missing: loading says so


@dataclass
class Resolved:
    runner: Runner
    loaded: LoadedModel  # the model's settings; `.model` is the eager CRNN, None for a .onnx file
    backend: str  # where it runs: "torch" or "onnx"


def resolve_runner(model: str | Path | LoadedModel | None, backend: str = "auto", device: str = "auto",
                   quantize: str | None = None, threads: int | None = None) -> Resolved:
    """The runner for `model` (a path, a bundled name, None for the default, or a LoadedModel)."""
    kind = model_kind(model)
    plan = choose_plan(kind, backend, device, quantize, onnxruntime_available(), str(model))
    if plan == "onnx-file":
        loaded, runner = load_onnx_model(bundled_onnx(model) if kind == "bundled" else model, threads)
        return Resolved(runner, loaded, "onnx")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    return Resolved(LOADERS[plan](loaded, device, quantize, threads), loaded, plan.partition("-")[0])


def _torch(loaded: LoadedModel, device: str, quantize: str | None, threads: int | None) -> Runner:
    target = resolve_device(device)
    return TorchRunner(loaded.model.to(target).eval(), target)


def _torch_int8(loaded: LoadedModel, device: str, quantize: str | None, threads: int | None) -> Runner:
    from .backends import int8_runner  # torch

    return int8_runner(loaded)


def _onnx_export(loaded: LoadedModel, device: str, quantize: str | None, threads: int | None) -> Runner:
    from .backends import exported_onnx_runner  # torch, for the export

    return exported_onnx_runner(loaded, quantize, threads)


# How each plan of PLANS builds its runner from a loaded .pt model ("onnx-file" needs none).
LOADERS = {"torch": _torch, "torch-int8": _torch_int8, "onnx-export": _onnx_export}

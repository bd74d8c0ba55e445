"""Where the model's forward pass runs: PyTorch eager, ONNX Runtime, or int8 dynamic quantisation.

Each backend has the CRNN's calling convention (a `.config`, images in, log-probs out), so the
recogniser's preprocessing, batching and decoding stay the same for all; the ONNX Runtime
runner (onnx_runner.py) takes and returns numpy arrays and needs no torch.

- `torch`: the eager model.
- `onnx`: an ONNX Runtime session. From a .onnx file made by `crnn export` (its metadata
  carries the alphabet, preprocessing and architecture), or exported on the fly from a .pt
  model into a cache (beside the model, else a temp folder) keyed by the model file's digest,
  so the export and its parity check are paid once.
- `quantize="int8"`: nn.LSTM and nn.Linear weights as int8, activations quantised on the fly
  (torch.ao dynamic quantisation); convolutions stay fp32. With `onnx`, ONNX Runtime's own
  dynamic quantisation of the exported file (MatMul/LSTM weights as int8).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import CrnnError, ExportError
from .modelfile import LoadedModel, load_model
from .onnx_runner import OnnxRunner, load_onnx_model

BACKENDS = ("torch", "onnx")
QUANTIZE = ("int8",)


def quantize_int8(model: nn.Module) -> nn.Module:
    """int8 weights for nn.LSTM and nn.Linear; the model's attributes (config) carry over."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {nn.LSTM, nn.Linear}, dtype=torch.qint8)


def _digest(loaded: LoadedModel, quantize: str | None) -> str:
    h = hashlib.sha256()
    if loaded.path is not None and loaded.path.is_file():
        with open(loaded.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:  # a model in memory: its weights and settings
        buffer = io.BytesIO()
        torch.save(loaded.model.state_dict(), buffer)
        h.update(buffer.getvalue())
        h.update(json.dumps([loaded.config.to_dict(), loaded.alphabet.chars]).encode())
    h.update(f"torch {torch.__version__} {quantize or 'fp32'}".encode())
    return h.hexdigest()[:16]


def onnx_cache_path(loaded: LoadedModel, quantize: str | None = None) -> Path:
    """Beside the model file when its folder is writable (and not the bundled models), else a temp folder."""
    from .config import bundled_dir

    stem = loaded.path.stem if loaded.path is not None else loaded.config.name
    name = f".{stem}.{_digest(loaded, quantize)}{'.int8' if quantize else ''}.onnx"
    if loaded.path is not None:
        folder = loaded.path.parent
        bundled = Path(str(bundled_dir())).resolve()
        if folder.resolve() != bundled and os.access(folder, os.W_OK):
            return folder / name
    return Path(tempfile.gettempdir()) / f"crnn-onnx-cache-{os.getuid()}" / name


def _quantize_onnx(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .export import _temp_path

    import logging

    tmp = _temp_path(out)
    logging.disable(logging.WARNING)  # its advice to pre-process is printed through the root logger
    try:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    finally:
        logging.disable(logging.NOTSET)
        tmp.unlink(missing_ok=True)


def cached_onnx(loaded: LoadedModel, quantize: str | None = None) -> Path:
    """The model as ONNX, exported (and parity-checked) on first use."""
    from .export import export_onnx

    out = onnx_cache_path(loaded, quantize)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = onnx_cache_path(loaded, None)
    if not plain.is_file():
        report = export_onnx(loaded, plain)
        if not report.ok:
            plain.unlink(missing_ok=True)
            raise ExportError(f"{loaded.path or loaded.config.name}: the ONNX export reads "
                              f"{report.texts_checked - report.texts_equal} of {report.texts_checked} check images "
                              "differently from the eager model; use --backend torch")
    if quantize:
        _quantize_onnx(plain, out)
    return out


def load_for_backend(model: str | Path | LoadedModel | None, backend: str = "torch", quantize: str | None = None,
                     threads: int | None = None) -> LoadedModel:
    """A LoadedModel whose `.model` runs on `backend` (and `quantize`), ready for the Recognizer."""
    if backend not in BACKENDS:
        raise CrnnError(f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    if quantize is not None and quantize not in QUANTIZE:
        raise CrnnError(f"unknown quantisation {quantize!r} (use {' or '.join(QUANTIZE)})")
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        # a .onnx file can only run in ONNX Runtime, whatever the backend's default
        if quantize:
            raise CrnnError(f"{model}: --quantize applies to .pt models (it quantises them before export)")
        return load_onnx_model(model, threads)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if backend == "onnx":
        path = cached_onnx(loaded, quantize)
        runner = OnnxRunner(path, loaded.config, threads)
    elif quantize == "int8":
        runner = quantize_int8(_copy(loaded.model))
    else:
        return loaded
    return LoadedModel(runner, loaded.config, loaded.alphabet, loaded.preprocess, loaded.train, loaded.path)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def backend_device(device: str, backend: str, quantize: str | None, model=None) -> str:
    """ONNX Runtime (CPU provider) and dynamic int8 run on the CPU; asking for another device is an error."""
    if backend == "torch" and not quantize:
        return device if not str(model).endswith(".onnx") else backend_device(device, "onnx", None)
    if device not in ("auto", "cpu"):
        what = f"--backend {backend}" if backend != "torch" else f"--quantize {quantize}"
        raise CrnnError(f"{what} runs on the CPU only (got --device {device})")
    return "cpu"

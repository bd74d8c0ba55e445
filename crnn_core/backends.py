"""The runners that need torch to build (runners.py chooses among them): int8 and ONNX-from-.pt.

- int8: nn.LSTM and nn.Linear weights as int8, activations quantised on the fly (torch.ao
  dynamic quantisation); convolutions stay fp32.
- ONNX Runtime for a .pt model: exported on the fly into a cache (beside the model, else a temp
  folder) keyed by the model file's digest, so the export and its parity check are paid once.
  With int8, ONNX Runtime's own dynamic quantisation of the exported file (MatMul/LSTM weights).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import ExportError, ModelFileError
from .modelfile import LoadedModel, temp_path_beside
from .onnx_runner import OnnxRunner, check_graph
from .torch_runner import TorchRunner


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
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = temp_path_beside(out)
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


def int8_runner(loaded: LoadedModel) -> TorchRunner:
    """A quantised copy of the eager model (the loaded one stays fp32), on the CPU."""
    return TorchRunner(quantize_int8(copy.deepcopy(loaded.model)), torch.device("cpu"))


def exported_onnx_runner(loaded: LoadedModel, quantize: str | None = None, threads: int | None = None) -> OnnxRunner:
    """The .pt model in ONNX Runtime, through the export cache.

    A cache file that cannot be opened or is not this model's graph (damaged, cut short or
    replaced since it was written) is made again once, not reused until someone deletes it.
    """
    try:
        return _cached_runner(loaded, quantize, threads)
    except ModelFileError:
        onnx_cache_path(loaded, quantize).unlink(missing_ok=True)
        onnx_cache_path(loaded, None).unlink(missing_ok=True)
        return _cached_runner(loaded, quantize, threads)


def _cached_runner(loaded: LoadedModel, quantize: str | None, threads: int | None) -> OnnxRunner:
    runner = OnnxRunner(cached_onnx(loaded, quantize), loaded.config, threads)
    check_graph(runner.path, runner.session, loaded.preprocess, loaded.alphabet)
    return runner

"""The model file and resumable checkpoints: plain data only, written atomically.

A model file is `torch.save` of a dict of plain types and tensors:
    {"format": "crnn-model", "version": 1, "config": {...}, "alphabet": "...",
     "preprocess": {...}, "state_dict": {...}, "train": {...}}
and is read with `weights_only=True`, so loading a stranger's file cannot run code.
A checkpoint is the same dict with format "crnn-checkpoint" plus optimiser, scheduler,
epoch, history and RNG state.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .alphabet import Alphabet
from .config import ModelConfig, bundled_dir
from .data import Preprocess
from .errors import ModelFileError, WriteError

if TYPE_CHECKING:
    from .model import CRNN

# torch is imported where a .pt file is read or written, so the ONNX Runtime path of
# `crnn predict` (onnx_runner.py) can use this module without paying torch's import (~1 s).

MODEL_FORMAT = "crnn-model"
CHECKPOINT_FORMAT = "crnn-checkpoint"
FORMAT_VERSION = 1
DEFAULT_BUNDLED_MODEL = "codes-fast"


@dataclass
class LoadedModel:
    model: CRNN | None  # None for a .onnx file (no eager weights); runners.py picks what runs
    config: ModelConfig
    alphabet: Alphabet
    preprocess: Preprocess
    train: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def preprocess_for(config: ModelConfig) -> Preprocess:
    return Preprocess(height=config.height, channels=config.channels, max_width=config.max_width,
                      min_width=config.min_width)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """An open temporary file in `path`'s folder (so a rename is atomic), with normal permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; our files are as readable as any other
    return fd, tmp


def temp_path_beside(path: Path) -> Path:
    """A new, closed temporary file beside `path`, for writers that want a path (then os.replace)."""
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it.

    A crash at any moment leaves either the old file or the new one, never a half-written one.
    A failed write (full disk, read-only folder) raises WriteError and leaves the old file as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = temp_file_beside(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            kept = " (the previous version is unchanged)" if path.exists() else ""
            raise WriteError(f"{path}: cannot write: {exc.strerror or exc}{kept}") from None
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems do not support fsync on folders


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (`.NAME.XXXX.tmp`); returns them."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _payload(model: CRNN, alphabet: Alphabet, preprocess: Preprocess, train: dict[str, Any], fmt: str) -> dict:
    return {
        "format": fmt,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "alphabet": alphabet.chars,
        "preprocess": preprocess.to_dict(),
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "train": train,
    }


def _save(path: Path, payload: dict) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_model(path: str | Path, model: CRNN, alphabet: Alphabet, preprocess: Preprocess,
               train: dict[str, Any] | None = None) -> None:
    _save(Path(path), _payload(model, alphabet, preprocess, train or {}, MODEL_FORMAT))


def save_checkpoint(path: str | Path, model: CRNN, alphabet: Alphabet, preprocess: Preprocess,
                    train: dict[str, Any], state: dict[str, Any]) -> None:
    payload = _payload(model, alphabet, preprocess, train, CHECKPOINT_FORMAT)
    payload["state"] = state
    _save(Path(path), payload)


def resolve_model(name_or_path: str | Path | None) -> Path:
    """A model file path, or the name of a bundled model (`codes-fast`); None = the default."""
    text = str(name_or_path) if name_or_path is not None else DEFAULT_BUNDLED_MODEL
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ModelFileError(f"{path}: a folder without best.pt or last.pt")
    resource = bundled_dir() / f"{text}.pt"
    if "/" not in text and resource.is_file():
        return Path(str(resource))
    bundled = sorted(p.name[:-3] for p in bundled_dir().iterdir() if p.name.endswith(".pt"))
    raise ModelFileError(f"{text}: no such model file, and not a bundled model ({', '.join(bundled) or 'none'})")


def read_payload(path: Path) -> dict[str, Any]:
    """Read and validate a model file or checkpoint without running any pickled code."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not raw.startswith(b"PK\x03\x04"):  # torch.save's zip container; anything else is not ours
        raise ModelFileError(f"{path}: not a crnn model file (not a torch.save zip archive)")
    import torch

    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFileError(
            f"{path}: refused: the file holds Python objects other than plain data and tensors "
            "(it could run code when loaded); only crnn model files are accepted") from None
    except Exception as exc:  # torch raises many types for damaged archives
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable crnn model file (damaged or another format: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ModelFileError(f"{path}: not a crnn model file (no 'format: {MODEL_FORMAT}' marker)")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: made by a newer crnn (format version {version}; this one reads up to {FORMAT_VERSION}): upgrade crnn")
    missing = {"config", "alphabet", "preprocess", "state_dict"} - payload.keys()
    if missing:
        raise ModelFileError(f"{path}: damaged model file, missing {sorted(missing)}")
    return payload


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Load a model file, a checkpoint, a run directory, or a bundled model by name."""
    from .model import CRNN

    path = resolve_model(name_or_path)
    payload = read_payload(path)
    try:
        config = ModelConfig.from_dict(payload["config"], source=str(path))
        alphabet = Alphabet(payload["alphabet"])
        preprocess = Preprocess.from_dict(payload["preprocess"])
        model = CRNN(config, alphabet.num_classes)
        model.load_state_dict(payload["state_dict"])
    except ModelFileError:
        raise
    except Exception as exc:  # a well-formed file whose contents do not fit together
        raise ModelFileError(f"{path}: damaged model file: {str(exc).splitlines()[0]}") from None
    model.eval()
    return LoadedModel(model, config, alphabet, preprocess, payload.get("train") or {}, path)

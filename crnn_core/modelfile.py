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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .alphabet import Alphabet, alphabet_fault
from .calibration import Calibration
from .config import ModelConfig, bundled_dir
from .data import Preprocess
from .errors import ModelFileError, WriteError, first_line, quoted

if TYPE_CHECKING:
    from .model import CRNN

# torch is imported where a .pt file is read or written, so the ONNX Runtime path of
# `crnn predict` (onnx_runner.py) can use this module without paying torch's import (~1 s).

MODEL_FORMAT = "crnn-model"
CHECKPOINT_FORMAT = "crnn-checkpoint"
FORMAT_VERSION = 1
DEFAULT_BUNDLED_MODEL = "latin-print"  # printed Latin lines: what a stranger's img.png most likely holds


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
                      min_width=config.min_width, width_scale=config.width_scale)


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
    """A model file path, or the name of a bundled model (`latin-print`, `codes-fast`); None = the default."""
    text = str(name_or_path) if name_or_path is not None else DEFAULT_BUNDLED_MODEL
    if text == "":  # an unset "$MODEL": not the current folder's best.pt
        raise ModelFileError("'': empty model path (is a variable unset?)")
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
    """Read and validate a model file or checkpoint without running any pickled code.

    Every failure is one ModelFileError line naming the file, in our words: what the file is
    instead (empty, an ONNX or .pt2 export, cut short, another zip), at most the first
    sentence of torch's own message.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: a folder, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _check_container(path, raw)
    payload = _unpickle(path, raw)
    if not isinstance(payload, dict) or payload.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ModelFileError(f"{path}: not a crnn model file (no 'format: {MODEL_FORMAT}' marker)")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: invalid format version {first_line(repr(version), 60)}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: made by a newer crnn (format version {version}; this one reads up to {FORMAT_VERSION}): upgrade crnn")
    missing = {"config", "alphabet", "preprocess", "state_dict"} - payload.keys()
    if missing:
        raise ModelFileError(f"{path}: damaged model file, missing {sorted(missing)}")
    return payload


def _looks_like_onnx(path: Path, raw: bytes) -> bool:
    # An ONNX file is a protobuf ModelProto: field 1 (ir_version) first, then the producer.
    return path.suffix.lower() == ".onnx" or (raw[:1] == b"\x08" and b"\x12\x07pytorch" in raw[:16])


def _check_container(path: Path, raw: bytes) -> None:
    """Refuse, before torch sees it, whatever is not a whole zip archive written by torch.save."""
    if not raw:
        raise ModelFileError(f"{path}: empty file (0 bytes), not a model file")
    if not raw.startswith(b"PK\x03\x04"):  # torch.save's zip container; anything else is not ours
        if _looks_like_onnx(path, raw):
            raise ModelFileError(
                f"{path}: not a crnn model file but an ONNX export; `crnn predict` runs .onnx files, "
                "other commands take the .pt model file it was exported from")
        raise ModelFileError(f"{path}: not a crnn model file (not a torch.save zip archive)")
    try:
        names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
    except Exception:  # noqa: BLE001 - zipfile raises several types for a damaged archive
        raise ModelFileError(f"{path}: damaged model file: not a complete zip archive "
                             f"({len(raw):,} bytes; cut short while copying or saving?)") from None
    if any(name.endswith("/archive_format") for name in names):
        raise ModelFileError(f"{path}: not a crnn model file but a torch.export (.pt2) archive; "
                             "give the .pt model file it was exported from")
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise ModelFileError(f"{path}: not a crnn model file (a zip archive, but not one torch.save wrote)")


def _unpickle(path: Path, raw: bytes) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFileError(
            f"{path}: refused: the file holds Python objects other than plain data and tensors "
            "(it could run code when loaded); only crnn model files are accepted") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged archives
        detail = first_line(exc) if type(exc) is RuntimeError else f"{type(exc).__name__}: {first_line(exc)}"
        raise ModelFileError(f"{path}: damaged model file: torch cannot unpack it ({detail})") from None


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Load a model file, a checkpoint, a run directory, or a bundled model by name."""
    path = resolve_model(name_or_path)
    payload = read_payload(path)
    config, alphabet, preprocess = model_parts(path, payload)
    model = _network(path, payload["state_dict"], config, alphabet)
    train = payload.get("train") or {}
    if not isinstance(train, dict):
        raise _damaged(path, "train", f"a {type(train).__name__}, not a mapping")
    try:
        Calibration.from_dict(train.get("calibration"))
    except ValueError as exc:
        raise _damaged(path, "calibration", exc) from None
    return LoadedModel(model, config, alphabet, preprocess, train, path)


def _damaged(path: Path, part: str, detail: object) -> ModelFileError:
    if isinstance(detail, KeyError):
        detail = f"missing {detail}"
    return ModelFileError(f"{path}: damaged model file: {part}: {first_line(detail)}")


def model_parts(path: Path, payload: dict) -> tuple[ModelConfig, Alphabet, Preprocess]:
    """Config, alphabet and preprocessing of a model file, each checked on its own."""
    try:
        config = ModelConfig.from_dict(payload["config"], source=str(path))
    except Exception as exc:  # noqa: BLE001 - ConfigError, or a type error from a hostile value
        raise _damaged(path, "config", str(exc).removeprefix(f"{path}: ") or exc) from None
    chars = payload["alphabet"]
    if not isinstance(chars, str) or not chars:
        raise _damaged(path, "alphabet", "empty" if chars == "" else f"a {type(chars).__name__}, not a string")
    try:
        alphabet = Alphabet(chars)
    except ValueError as exc:
        raise _damaged(path, "alphabet", exc) from None
    if fault := alphabet_fault(chars):
        raise _damaged(path, "alphabet", fault)
    try:
        preprocess = Preprocess.from_dict(payload["preprocess"])
    except Exception as exc:  # noqa: BLE001 - a missing key, or a value that is not a number
        raise _damaged(path, "preprocess", exc) from None
    if (preprocess.height, preprocess.channels) != (config.height, config.channels):
        raise _damaged(path, "preprocess", f"height {preprocess.height} x {preprocess.channels} channel(s), "
                                           f"the config says {config.height} x {config.channels}")
    return config, alphabet, preprocess


def _network(path: Path, state: Any, config: ModelConfig, alphabet: Alphabet) -> CRNN:
    """The network, after checking on a weightless copy (torch's meta device) that the weights fit.

    Checking first keeps a hostile config from allocating memory it describes, and names the
    first tensor that does not fit, where torch's own message has nothing after its colon.
    """
    import torch

    from .model import CRNN

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _damaged(path, "weights", "not a mapping of names to tensors")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in CRNN(config, alphabet.num_classes).state_dict().items()}
    except Exception as exc:  # noqa: BLE001 - a config torch cannot build
        raise _damaged(path, "config", f"cannot build the network: {first_line(exc)}") from None
    misfit = _weights_misfit(expected, state)
    if misfit:
        raise _damaged(path, "weights", f"do not fit its config and {len(alphabet)}-character alphabet: {misfit}")
    model = CRNN(config, alphabet.num_classes)
    model.load_state_dict(state)
    model.eval()
    return model


def _weights_misfit(expected: dict[str, tuple[int, ...]], state: dict) -> str:
    """The first tensor whose name or shape differs from the network's, and how many more; '' if none."""
    shape = " x ".join
    wrong = [f"{quoted(k)} is {shape(map(str, state[k].shape)) or 'a scalar'}, the network needs "
             f"{shape(map(str, expected[k])) or 'a scalar'}"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    wrong += [f"{quoted(k)} is missing" for k in expected if k not in state]
    wrong += [f"{quoted(str(k))} is not part of the network" for k in state if k not in expected]
    if not wrong:
        return ""
    return wrong[0] + (f" ({len(wrong) - 1} more)" if len(wrong) > 1 else "")

"""ONNX Runtime inference without torch: the fast path of `crnn predict`.

Importing torch costs about a second, most of what `crnn predict one.png` took. An exported
model (`crnn export --format onnx`, or a bundled model's `.onnx` twin made the same way and
parity-checked against the eager model) carries everything needed to read images in its
metadata, so numpy, Pillow and onnxruntime suffice. `backend="auto"` (the default) takes
this path when the model has such a file and onnxruntime is installed (runners.py decides).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .alphabet import Alphabet, alphabet_fault
from .calibration import Calibration
from .config import ModelConfig, bundled_dir
from .data import Preprocess
from .errors import CrnnError, ModelFileError
from .modelfile import DEFAULT_BUNDLED_MODEL, LoadedModel


# The newest crnn.version this crnn reads. export.py writes the oldest that describes the file:
# 2 only where preprocessing stretches images across (width_scale), which a reader of 1 would skip.
EXPORT_VERSION = "2"


class OnnxRunner:
    """An ONNX Runtime session as a runner (runners.Runner): numpy in, numpy out, on the CPU."""

    def __init__(self, path: str | Path, config: ModelConfig, threads: int | None = None, session=None):
        self.path = Path(path)
        self.config = config
        self.session = session if session is not None else open_session(self.path, threads)

    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 images B x C x H x W (pixel / 127.5 - 1) -> log-probs T x B x classes."""
        (log_probs,) = self.session.run(["log_probs"], {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return log_probs


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def open_session(path: Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise CrnnError("ONNX Runtime is missing (a dependency of crnn): pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings would land in our stderr
    try:
        model = Path(path).read_bytes()  # bytes, not the name: ONNX Runtime refuses a name that is not UTF-8
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types; one line for all
        raise ModelFileError(f"{path}: not a readable ONNX file: {str(exc).splitlines()[0]}") from None


def load_onnx_model(path: str | Path, threads: int | None = None) -> tuple[LoadedModel, OnnxRunner]:
    """A .onnx file written by `crnn export`: its settings (no eager model) and its runner."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    session = open_session(path, threads)
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("crnn.format") != "crnn-export":
        raise ModelFileError(f"{path}: an ONNX file without crnn metadata (make it with `crnn export --format onnx`)")
    version = meta.get("crnn.version", "1")
    if version not in ("1", EXPORT_VERSION):
        newer = re.fullmatch(r"[0-9]{1,6}", version) is not None and int(version) > int(EXPORT_VERSION)
        raise ModelFileError(f"{path}: made by a newer crnn (export version {version}; this one reads "
                             f"{EXPORT_VERSION}): upgrade crnn" if newer else
                             f"{path}: damaged crnn metadata: invalid export version {version[:20]!r}")
    try:
        config = ModelConfig.from_dict(json.loads(meta["crnn.config"]), source=str(path))
        alphabet = Alphabet(meta["crnn.alphabet"])
        if fault := alphabet_fault(alphabet.chars):
            raise ValueError(fault)
        preprocess = Preprocess.from_dict(json.loads(meta["crnn.preprocess"]))
        calibration = json.loads(meta["crnn.calibration"]) if "crnn.calibration" in meta else None
        Calibration.from_dict(calibration)  # checked here, where the file is named
    except Exception as exc:  # noqa: BLE001 - any damage to the metadata is one line
        raise ModelFileError(f"{path}: damaged crnn metadata: {str(exc).splitlines()[0]}") from None
    check_graph(path, session, preprocess, alphabet)
    train = {"calibration": calibration} if calibration else {}
    return LoadedModel(None, config, alphabet, preprocess, train, path), OnnxRunner(path, config, session=session)


def check_graph(path: Path, session, preprocess: Preprocess, alphabet: Alphabet) -> None:
    """The metadata against the graph it describes: a wrong height would fail inside ONNX Runtime
    without naming the file, and a wrong alphabet would read wrong text without a word."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if "images" not in inputs or "log_probs" not in outputs:
        raise ModelFileError(f"{path}: damaged crnn metadata: the graph has no 'images' input and 'log_probs' output")
    shape, classes = inputs["images"], outputs["log_probs"]
    wanted = (preprocess.channels, preprocess.height)
    if len(shape) == 4 and all(isinstance(v, int) for v in shape[1:3]) and tuple(shape[1:3]) != wanted:
        raise ModelFileError(f"{path}: damaged crnn metadata: preprocess says {wanted[1]} px x {wanted[0]} channel(s), "
                             f"the graph reads {shape[2]} px x {shape[1]}")
    if classes and isinstance(classes[-1], int) and classes[-1] != alphabet.num_classes:
        raise ModelFileError(f"{path}: damaged crnn metadata: a {len(alphabet)}-character alphabet "
                             f"({alphabet.num_classes} classes), the graph gives {classes[-1]}")


def bundled_onnx(model: str | Path | None) -> Path | None:
    """The shipped ONNX twin of a bundled model named by `model` (None = the default), if any."""
    name = DEFAULT_BUNDLED_MODEL if model is None else str(model)
    if "/" in name or name.endswith((".pt", ".onnx")) or Path(name).exists():
        return None  # a file or folder of the user's: not a bundled name
    twin = Path(str(bundled_dir())) / f"{name}.onnx"
    return twin if twin.is_file() else None

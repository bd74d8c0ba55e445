"""Running a trained model: batches of preprocessed images in, text and confidence out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .calibration import Calibration
from .constrained import DEFAULT_BEAM, Constraint, decode_batch_constrained, make_constraint
from .data import Preprocess, chunked, equal_width_batches, timed_chunks, to_array_batch
from .decode import decode_batch
from .errors import CrnnError, ImageError
from .memory import release_free_memory
from .modelfile import LoadedModel
from .onnx_runner import OnnxRunner, bundled_onnx, load_onnx_model, onnxruntime_available

if TYPE_CHECKING:
    import torch

    from .model import CRNN

# torch is imported only when a torch model runs: the ONNX Runtime path never loads it.
BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Prediction:
    path: str
    text: str = ""
    confidence: float = 0.0
    error: str | None = None  # set when the input could not be read; text is then empty
    matched: bool | None = None  # with a pattern or lexicon: False when no accepted reading was found
    p_correct: float | None = None  # calibrated chance the text is right, when the model has a calibration


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def recognize_arrays(model: CRNN, arrays: Sequence[np.ndarray], alphabet_decode, batch_size: int = 64,
                     beam: int = 1, device: torch.device | None = None,
                     constraint: Constraint | None = None) -> list[tuple[str, float]]:
    """Texts and confidences for preprocessed uint8 arrays, in input order.

    With a `constraint` (a pattern or lexicon), a text is None where no accepted reading was found.

    Images are batched only with others of exactly the same (preprocessed) width, so there is
    no batch padding and an image reads the same alone or in any company.
    """
    if isinstance(model, OnnxRunner):  # numpy in, numpy out
        forward = model.run
        restore = None
    else:
        forward, restore = _torch_forward(model, device)
    results: list[tuple[str, float]] = [("", 0.0)] * len(arrays)
    widths = [a.shape[1] for a in arrays]
    for batch in equal_width_batches(widths, batch_size):
        images, batch_widths = to_array_batch([arrays[i] for i in batch])
        log_probs = forward(images)
        lengths = [model.config.output_length(w) for w in batch_widths]
        decoded_batch = (decode_batch(log_probs, lengths, beam, model.config.head) if constraint is None else
                         decode_batch_constrained(log_probs, lengths, constraint.automaton, constraint.beam))
        for i, decoded in zip(batch, decoded_batch):
            text = alphabet_decode(decoded.ids) if getattr(decoded, "matched", True) else None
            results[i] = (text, decoded.confidence)
    if restore is not None:
        restore()
    return results


def _torch_forward(model: CRNN, device: torch.device | None):
    """The eager model as numpy in, numpy out, in eval mode; and how to restore its mode."""
    import torch

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(device)).float().cpu().numpy()

    return forward, lambda: model.train(was_training)


class Recognizer:
    """A loaded model ready to read images: `Recognizer("codes-fast").predict_paths([...])`."""

    def __init__(self, model: str | Path | LoadedModel | None = None, device: str = "auto",
                 batch_size: int = 64, beam: int = 1, threads: int = 2, backend: str = "torch",
                 quantize: str | None = None, pattern: str | None = None, lexicon: str | Path | None = None):
        if backend not in BACKENDS:
            raise CrnnError(f"unknown backend {backend!r} (use {', '.join(BACKENDS)})")
        twin = bundled_onnx(model) if not isinstance(model, LoadedModel) else None
        if backend == "auto":
            # ONNX Runtime where the model ships as ONNX (no torch import, faster on a CPU);
            # the eager model for everything else, and for CUDA or int8 requests.
            fast = device in ("auto", "cpu") and not quantize and onnxruntime_available() and (
                twin is not None or str(model).endswith(".onnx"))
            backend = "onnx" if fast else "torch"
        if backend == "onnx" and twin is not None and not quantize and device in ("auto", "cpu"):
            self.loaded = load_onnx_model(twin)
            device = "cpu"
        elif backend != "torch" or quantize or str(model).endswith(".onnx"):  # ONNX Runtime or int8: backends.py
            from .backends import backend_device, load_for_backend

            device = backend_device(device, backend, quantize, model)
            self.loaded = load_for_backend(model, backend, quantize)
        else:
            from .modelfile import load_model

            self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.backend = backend
        # --pattern / --lexicon: a beam search (default width 16) over the regex's automaton or the word trie
        self.constraint = make_constraint(self.loaded.alphabet, pattern, lexicon, beam if beam > 1 else DEFAULT_BEAM,
                                          self.loaded.config.head)
        self.calibration = Calibration.from_dict(self.loaded.train.get("calibration"))
        if isinstance(self.loaded.model, OnnxRunner):  # CPU, no torch
            self.device = None
            self.model = self.loaded.model
        else:
            self.device = resolve_device(device)
            self.model = self.loaded.model.to(self.device).eval()
        self.batch_size = batch_size
        self.beam = beam
        self.threads = threads

    @property
    def preprocess(self) -> Preprocess:
        return self.loaded.preprocess

    def predict_arrays(self, arrays: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        return recognize_arrays(self.model, arrays, self.loaded.alphabet.decode, self.batch_size, self.beam,
                                self.device, self.constraint)

    def predict_images(self, images) -> list[tuple[str, float]]:
        """PIL images in, (text, confidence) out."""
        return self.predict_arrays([self.preprocess.from_pil(image) for image in images])

    def _load(self, path: str) -> np.ndarray | str:
        try:
            return self.preprocess.load(path)
        except ImageError as exc:
            return str(exc)

    def predict_paths(self, paths: Iterable[str | Path], chunk_size: int = 1024,
                      max_wait: float | None = None) -> Iterator[Prediction]:
        """Stream predictions in input order with bounded memory.

        Paths are taken `chunk_size` at a time; while the model reads one chunk, a thread pool
        is already decoding the next one's images. Unreadable inputs yield a Prediction with
        `error` set instead of stopping the stream. With `max_wait`, a partial chunk is processed
        once the source has been silent that long (for paths trickling in on stdin).
        """
        names = (str(p) for p in paths)
        chunks = timed_chunks(names, chunk_size, max_wait) if max_wait else chunked(names, chunk_size)
        with ThreadPoolExecutor(max(1, self.threads)) as pool:
            pending = None
            for chunk in chunks:
                submitted = (chunk, pool.map(self._load, chunk))
                if pending is not None:  # the model reads the previous chunk while the pool decodes this one
                    yield from self._finish(*pending)
                pending = submitted
                if max_wait:  # a slow source: answer now rather than wait for the next chunk
                    yield from self._finish(*pending)
                    pending = None
            if pending is not None:
                yield from self._finish(*pending)

    def _finish(self, chunk: list[str], loaded) -> Iterator[Prediction]:
        release_free_memory()  # a stream of varied widths would otherwise fragment the heap
        loaded = list(loaded)
        good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
        outputs = dict(zip(good, self.predict_arrays([loaded[i] for i in good]))) if good else {}
        for i, path in enumerate(chunk):
            if i in outputs:
                text, confidence = outputs[i]
                p_correct = None
                if self.calibration is not None:
                    p_correct = self.calibration(confidence) if text is not None else 0.0
                if self.constraint is None:
                    yield Prediction(path, text, confidence, p_correct=p_correct)
                else:
                    yield Prediction(path, text or "", confidence, matched=text is not None, p_correct=p_correct)
            else:
                yield Prediction(path, error=loaded[i])

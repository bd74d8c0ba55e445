"""Running a trained model: batches of preprocessed images in, text and confidence out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .calibration import Calibration
from .constrained import DEFAULT_BEAM, Constraint, make_constraint
from .data import Preprocess, chunked, equal_width_batches, timed_chunks, to_array_batch
from .decode import Decoded, beam_search
from .errors import ImageError
from .heads import head_named
from .memory import release_free_memory
from .modelfile import LoadedModel
from .runners import Runner, resolve_device, resolve_runner  # noqa: F401 - train.py imports resolve_device from here
from .torch_runner import as_runner

if TYPE_CHECKING:
    import torch

    from .model import CRNN


@dataclass(frozen=True)
class Prediction:
    path: str
    text: str = ""
    confidence: float = 0.0
    error: str | None = None  # set when the input could not be read; text is then empty
    matched: bool | None = None  # with a pattern or lexicon: False when no accepted reading was found
    p_correct: float | None = None  # calibrated chance the text is right, when the model has a calibration


def recognize_arrays(model: Runner | CRNN, arrays: Sequence[np.ndarray], alphabet_decode, batch_size: int = 64,
                     beam: int = 1, device: torch.device | None = None,
                     constraint: Constraint | None = None) -> list[Decoded]:
    """Readings (with `.text`) for preprocessed uint8 arrays, in input order.

    `model` is a runner, or a torch module (read on `device`, default its own). With a
    `constraint` (a pattern or lexicon), a reading is `matched=False` (text "") where no
    accepted one was found.

    Images are batched only with others of exactly the same (preprocessed) width, so there is
    no batch padding and an image reads the same alone or in any company. The decoder then
    takes up to DECODE_GROUP of them at once whatever their widths (each with its own length):
    the beam search costs per frame, not per image, so a stream of varied widths decodes as
    fast as one of equal widths.
    """
    runner = as_runner(model, device)
    results: list[Decoded] = [Decoded((), 0.0)] * len(arrays)
    pending: list[tuple[list[int], np.ndarray, list[int]]] = []
    widths = [a.shape[1] for a in arrays]
    for batch in equal_width_batches(widths, batch_size):
        images, batch_widths = to_array_batch([arrays[i] for i in batch])
        pending.append((batch, runner.run(images), [runner.config.output_length(w) for w in batch_widths]))
        if sum(len(p[0]) for p in pending) >= DECODE_GROUP:
            _decode(pending, results, runner.config.head, beam, constraint, alphabet_decode)
    _decode(pending, results, runner.config.head, beam, constraint, alphabet_decode)
    return results


DECODE_GROUP = 256  # images decoded together; bounds the decoder's B x beam x classes arrays


def _decode(pending: list, results: list[Decoded], head: str, beam: int, constraint: Constraint | None,
            alphabet_decode) -> None:
    """Decode the forward passes in `pending` as one padded T x B x C array; fill `results`; empty `pending`."""
    if not pending:
        return
    steps = max(log_probs.shape[0] for _, log_probs, _ in pending)
    log_probs = np.concatenate([np.pad(lp, ((0, steps - lp.shape[0]), (0, 0), (0, 0))) for _, lp, _ in pending], 1)
    lengths = [n for _, _, batch_lengths in pending for n in batch_lengths]
    decoded = (head_named(head).decode(log_probs, lengths, beam) if constraint is None else
               beam_search(log_probs, lengths, constraint.beam, constraint.automaton))
    for i, d in zip((i for batch, _, _ in pending for i in batch), decoded):
        results[i] = replace(d, text=alphabet_decode(d.ids) if d.matched else "")
    pending.clear()


class Recognizer:
    """A loaded model ready to read images: `Recognizer("codes-fast").predict_paths([...])`."""

    def __init__(self, model: str | Path | LoadedModel | None = None, device: str = "auto",
                 batch_size: int = 64, beam: int = 1, threads: int = 2, backend: str = "auto",
                 quantize: str | None = None, pattern: str | None = None, lexicon: str | Path | None = None):
        resolved = resolve_runner(model, backend, device, quantize)  # runners.py: the decision table
        self.runner, self.loaded, self.backend = resolved.runner, resolved.loaded, resolved.backend
        # --pattern / --lexicon: a beam search (default width 16) over the regex's automaton or the word trie
        self.constraint = make_constraint(self.loaded.alphabet, pattern, lexicon, beam if beam > 1 else DEFAULT_BEAM,
                                          self.loaded.config.head)
        self.calibration = Calibration.from_dict(self.loaded.train.get("calibration"))
        self.batch_size = batch_size
        self.beam = beam
        self.threads = threads

    @property
    def preprocess(self) -> Preprocess:
        return self.loaded.preprocess

    def predict_arrays(self, arrays: Sequence[np.ndarray]) -> list[Decoded]:
        return recognize_arrays(self.runner, arrays, self.loaded.alphabet.decode, self.batch_size, self.beam,
                                constraint=self.constraint)

    def predict_images(self, images) -> list[Decoded]:
        """PIL images in, readings (`.text`, `.confidence`) out."""
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
                out = outputs[i]
                p_correct = self.calibration.p_correct(out) if self.calibration is not None else None
                matched = out.matched if self.constraint is not None else None
                yield Prediction(path, out.text, out.confidence, matched=matched, p_correct=p_correct)
            else:
                yield Prediction(path, error=loaded[i])

"""Datasets: finding labelled samples, loading and preprocessing images, batching by width."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .alphabet import label_fault, normalize
from .errors import DatasetError, ImageError, first_line, quoted

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pbm", ".pgm", ".ppm"}
LIST_FILE_NAMES = ("labels.tsv", "labels.txt", "gt.txt")
SIDECAR_SUFFIX = ".gt.txt"
SPLIT_NAMES = ("train", "val", "test")
LABEL_MODES = ("auto", "filename")


@dataclass(frozen=True)
class Sample:
    path: Path
    text: str
    origin: str = ""  # where the label came from, e.g. "labels.tsv:12", for messages


@dataclass(frozen=True)
class Problem:
    where: str  # a path, or path:line
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    @property
    def reason(self) -> str:
        """The message without names, numbers and details: for counting problems by kind."""
        head = self.message.split(":")[0].split(" (")[0].split(";")[0]
        return re.sub(r"'[^']*'|\d+", "_", head)


@dataclass
class Dataset:
    samples: list[Sample]
    source: str
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


# -- finding samples -----------------------------------------------------------------
def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """The image-named entries under `folder`, sorted: files, and also broken links and pipes
    named like images, so that reading them reports each in its place instead of passing over
    it unseen (a pipe is never opened: `Preprocess.read` refuses it by its type)."""
    return sorted(p for p in folder.rglob("*") if is_image(p) and not _path_is(Path.is_dir, p))


def read_list_file(list_file: Path) -> Dataset:
    """`relative/path<TAB>label` lines; paths are relative to the list file's folder.

    Lines are split on LF only (a CR before it is dropped), so a label holding U+2028 or a
    form feed cannot shift the line numbers in messages. Each line is decoded on its own: a
    line that is not UTF-8 is reported and skipped, the rest of the file is still used.
    """
    try:
        raw = list_file.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{list_file}: cannot read: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError(f"{list_file}: UTF-16 text; save it as UTF-8")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: dict[str, tuple[int, str]] = {}  # normalised path -> (first line, label)
    newline = b"\n" if b"\n" in raw or b"\r" not in raw else b"\r"  # old Mac files end lines in CR alone
    for line_no, raw_line in enumerate(raw.split(newline), start=1):
        where = f"{list_file}:{line_no}"
        parsed = _parse_list_line(raw_line, list_file.parent, where)
        if parsed is None or isinstance(parsed, Problem):
            problems.extend([parsed] if parsed else [])
            continue
        rel, path, label = parsed
        key = os.path.normpath(path)
        if key in seen:
            first, first_label = seen[key]
            if first_label == label:
                problems.append(Problem(where, f"duplicate of line {first} ({quoted(rel)}); skipped"))
            else:
                problems.append(Problem(where, f"image {quoted(rel)} listed again with another label "
                                               f"({quoted(label)}; line {first} says {quoted(first_label)}); skipped"))
            continue
        seen[key] = (line_no, label)
        samples.append(Sample(path, label, where))
    return Dataset(samples, str(list_file), problems)


def _parse_list_line(raw_line: bytes, base: Path, where: str) -> tuple[str, Path, str] | Problem | None:
    """One list-file line: (path as written, its file, label), a Problem, or None for a blank line.

    The path is kept verbatim (a file may be named ' a.png'); the label loses surrounding
    whitespace, which no crop can show.
    """
    try:
        line = raw_line.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        return Problem(where, f"not UTF-8 text (byte 0x{raw_line[exc.start]:02x} at column {exc.start + 1})")
    if not line.strip():
        return None
    if "\t" not in line:
        return Problem(where, "no TAB between path and label")
    rel, label = line.split("\t", 1)
    label = normalize(label.strip())
    if not rel.strip():
        return Problem(where, "no image path before the TAB")
    if not label:
        return Problem(where, "empty label")
    if "\t" in label:
        return Problem(where, "more than one TAB (a third column?): lines are PATH<TAB>LABEL, "
                              "and a label cannot hold a TAB")
    fault = label_fault(label)
    if fault is not None:
        return Problem(where, fault)
    path = base / rel
    if not _path_is(Path.is_file, path):
        hint = ""
        if rel.strip() != rel and _path_is(Path.is_file, base / rel.strip()):
            hint = f" ({quoted(rel.strip())} exists: paths are read as written, spaces included)"
        return Problem(where, f"image {quoted(rel)} not found{hint}")
    return rel, path, label


def _path_is(test: Callable[[Path], bool], path: Path) -> bool:
    """`Path.is_file`/`is_dir` answering False, not raising, for a name too long for the file
    system or holding a NUL byte."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def read_sidecars(folder: Path) -> Dataset:
    samples: list[Sample] = []
    problems: list[Problem] = []
    for image in list_images(folder):
        gt = image.with_name(image.stem + SIDECAR_SUFFIX)
        if not gt.is_file():
            problems.append(Problem(str(image), f"no {gt.name} beside it"))
            continue
        label = _read_sidecar(gt)
        if isinstance(label, Problem):
            problems.append(label)
        else:
            samples.append(Sample(image, label, str(gt)))
    return Dataset(samples, str(folder), problems)


def _read_sidecar(gt: Path) -> str | Problem:
    """The label in a `.gt.txt` file: its text without surrounding whitespace (a final newline)."""
    try:
        raw = gt.read_bytes()
    except OSError as exc:
        return Problem(str(gt), f"cannot read: {exc.strerror or exc}")
    try:
        label = normalize(raw.decode("utf-8-sig").strip())
    except UnicodeDecodeError:
        return Problem(str(gt), "not UTF-8 text")
    if not label:
        return Problem(str(gt), "empty label")
    if "\n" in label or "\r" in label:
        return Problem(str(gt), "more than one line: a sidecar holds one label, on one line")
    fault = label_fault(label)
    return Problem(str(gt), fault) if fault is not None else label


_COPY_SUFFIX = re.compile(r"_\d+$")


def read_filename_labels(folder: Path) -> Dataset:
    """Label = file stem with a trailing `_N` dropped (`7GX2K_2.png` -> `7GX2K`)."""
    samples: list[Sample] = []
    problems: list[Problem] = []
    for path in list_images(folder):
        label = normalize(_COPY_SUFFIX.sub("", path.stem))
        fault = "empty label" if not label else label_fault(label)
        if fault is not None:
            problems.append(Problem(str(path), fault))
        else:
            samples.append(Sample(path, label, str(path)))
    return Dataset(samples, str(folder), problems)


def discover(path: str | Path, labels: str = "auto") -> Dataset:
    """Samples in a folder or list file, by the label formats in order (see docs)."""
    path = Path(path)
    if labels not in LABEL_MODES:
        raise DatasetError(f"unknown label mode {quoted(labels)} (use one of {', '.join(LABEL_MODES)})")
    if path.is_file():
        return read_list_file(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")
    if labels == "filename":
        dataset = read_filename_labels(path)
    else:
        odd = next((path / n for n in LIST_FILE_NAMES if (path / n).exists() and not (path / n).is_file()), None)
        if odd is not None:
            raise DatasetError(f"{odd}: not a regular file (a folder, pipe or device); a label list is a text file")
        list_file = next((path / n for n in LIST_FILE_NAMES if (path / n).is_file()), None)
        if list_file is not None:
            dataset = read_list_file(list_file)
        elif any(path.rglob("*" + SIDECAR_SUFFIX)):
            dataset = read_sidecars(path)
        else:
            count = len(list_images(path))
            hint = f" ({count} images found: use --labels filename if the names are the labels)" if count else ""
            raise DatasetError(
                f"{path}: no labels found: expected {', '.join(LIST_FILE_NAMES)} or NAME.gt.txt sidecars{hint}")
    if not dataset.samples:
        raise DatasetError(f"{path}: no usable samples ({len(dataset.problems)} problems, first: "
                           f"{dataset.problems[0] if dataset.problems else 'none'})")
    return dataset


def in_holdout(path: Path, fraction: float) -> bool:
    """Stable across runs and machines: decided by a hash of the file name and parent."""
    key = f"{path.parent.name}/{path.name}".encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2**64 < fraction


def split_dataset(data: str | Path, val: str | Path | None = None, labels: str = "auto",
                  val_fraction: float = 0.1) -> tuple[Dataset, Dataset]:
    """Train and validation sets: `--val`, else DATA/val, else a hashed holdout of the training data."""
    data = Path(data)
    train_dir = data / "train"
    if data.is_dir() and train_dir.is_dir():
        train = discover(train_dir, labels)
        if val is None and (data / "val").is_dir():
            val = data / "val"
    else:
        train = discover(data, labels)
    if val is not None:
        return train, discover(val, labels)
    held = [s for s in train.samples if in_holdout(s.path, val_fraction)]
    kept = [s for s in train.samples if not in_holdout(s.path, val_fraction)]
    if not held or not kept:
        raise DatasetError(f"{data}: too few samples ({len(train.samples)}) to hold out a validation set; pass --val")
    return (Dataset(kept, train.source, train.problems),
            Dataset(held, f"{train.source} (held out {val_fraction:.0%})"))


# -- images ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How an image becomes model input; stored in the model file so it travels with the weights."""

    height: int = 32
    channels: int = 1
    max_width: int = 800
    min_width: int = 4
    # Widths are padded up to a multiple of this, so inference can batch images of exactly
    # equal width: an image then reads the same alone or among others (no batch padding).
    width_multiple: int = 8
    # Stretch across after resizing to `height` (ModelConfig.width_scale): more CTC steps per character.
    width_scale: float = 1.0

    def to_dict(self) -> dict:
        scale = {"width_scale": self.width_scale} if self.width_scale != 1.0 else {}  # files from before it match
        return {"height": self.height, "channels": self.channels, "max_width": self.max_width,
                "min_width": self.min_width, "width_multiple": self.width_multiple, **scale,
                "normalize": "x / 127.5 - 1", "pad": "right, to a multiple of width_multiple, with the median of the last column"}

    @classmethod
    def from_dict(cls, raw: dict) -> "Preprocess":
        """From a model file's record, checked: a damaged one must not blame every image instead."""
        made = cls(int(raw["height"]), int(raw["channels"]), int(raw["max_width"]), int(raw["min_width"]),
                   int(raw.get("width_multiple", 1)), float(raw.get("width_scale", 1.0)))
        if made.channels not in (1, 3) or not 1 <= made.height <= 4096:
            raise ValueError(f"height {made.height} x {made.channels} channel(s): not an image shape crnn reads")
        if not 1 <= made.min_width <= made.max_width <= 1_000_000 or not 1 <= made.width_multiple <= 4096:
            raise ValueError(f"widths {made.min_width}-{made.max_width} in steps of {made.width_multiple}: "
                             "not 1 <= min_width <= max_width <= 1000000 with a step of 1-4096")
        if not 0.25 <= made.width_scale <= 8:  # also refuses NaN
            raise ValueError(f"width_scale {made.width_scale}: not between 0.25 and 8")
        return made

    def target_width(self, width: int, height: int) -> int:
        scaled = round(width * self.height / max(height, 1) * self.width_scale)
        return min(max(scaled, self.min_width), self.max_width)

    def padded_width(self, width: int) -> int:
        return min(-(-width // self.width_multiple) * self.width_multiple, max(self.max_width, width))

    def from_pil(self, image: Image.Image) -> np.ndarray:
        """A PIL image to a uint8 array, H x W (gray) or H x W x 3 (RGB), at the model height."""
        image = ImageOps.exif_transpose(image)
        if getattr(image, "is_animated", False):
            image.seek(0)
        mode = "L" if self.channels == 1 else "RGB"
        if image.mode != mode:
            if image.mode.startswith("I;16"):
                # Pillow's point() and convert() cannot scale every 16-bit layout; numpy can.
                image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8), "L")
            elif image.mode in ("I", "F"):
                image = Image.fromarray(to_eight_bits(np.asarray(image)), "L")
            elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            image = image.convert(mode)
        width = self.target_width(*image.size)
        image = image.resize((width, self.height), Image.Resampling.BILINEAR)
        return pad_right(np.asarray(image, dtype=np.uint8), self.padded_width(width))

    def load(self, path: str | Path) -> np.ndarray:
        """Decode and preprocess one image file; raises ImageError naming the file."""
        return self.read(path)[0]

    def read(self, path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
        """`load`, and the image's own (width, height) upright, before resizing (for data statistics)."""
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
                raise ImageError(f"{path}: a device, pipe or socket, not an image file")  # never read: it may not end
            if info.st_size == 0 and stat.S_ISREG(info.st_mode):
                raise ImageError(f"{path}: empty file (0 bytes)")
            with Image.open(path) as image:
                w, h = image.size
                # Stored turned by 90 degrees (EXIF orientation 5-8). Only JPEG is asked, as before:
                # other formats rarely carry it, and then only the statistics see the size turned.
                turned = image.format == "JPEG" and image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                if image.format == "JPEG":
                    # Let libjpeg decode at a reduced scale when the result is much smaller anyway.
                    mode = "L" if self.channels == 1 else "RGB"
                    image.draft(mode, (self.height, self.target_width(h, w)) if turned
                                else (self.target_width(w, h), self.height))
                check_pixel_limit(path, image.size)
                return self.from_pil(image), ((h, w) if turned else (w, h))
        except ImageError:
            raise
        except FileNotFoundError:
            what = "a broken link (its target is gone)" if os.path.islink(path) else "no such file"
            raise ImageError(f"{path}: {what}") from None
        except IsADirectoryError:
            raise ImageError(f"{path}: is a folder, not an image") from None
        except PermissionError:
            raise ImageError(f"{path}: cannot read: permission denied") from None
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image Pillow can read") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{path}: image too large: {_bomb_message()}") from None
        except MemoryError:
            raise ImageError(f"{path}: not enough memory to decode this image") from None
        except Exception as exc:  # noqa: BLE001 - a damaged file may make any decoder raise anything
            raise ImageError(f"{path}: cannot decode image: {first_line(exc)}") from None


def header_sizes(paths: Sequence[Path], most: int = 500) -> list[tuple[int, int]]:
    """The own (width, height) of up to `most` of `paths`, evenly spread, from their headers (no decoding)."""
    return [size for _, size in indexed_header_sizes(paths, most)]


def indexed_header_sizes(paths: Sequence[Path], most: int = 500) -> list[tuple[int, tuple[int, int]]]:
    """`header_sizes`, each with the index in `paths` of the file it is from.

    Unreadable files are left out here; reading the data reports them. EXIF rotation is not
    looked at: a guess of the usual size needs no exactness.
    """
    step = max(1, len(paths) // most)
    sizes = []
    for index in range(0, len(paths), step)[:most]:
        try:
            if not os.path.isfile(paths[index]):  # a pipe would never end; reading the data names it
                continue
            with Image.open(paths[index]) as image:
                sizes.append((index, image.size))
        except Exception:  # noqa: BLE001 - any unreadable file is skipped, and named when the data is read
            continue
    return sizes


def to_eight_bits(values: np.ndarray) -> np.ndarray:
    """Grey values of Pillow's modes I (int32) and F (float32) to uint8, by the range they use.

    These modes say nothing about the scale, so the values decide: floats within [0, 1] are
    multiplied by 255; values within [0, 255] are 8-bit data in a wider container and kept;
    values within [0, 65535] are 16-bit and divided by 256 (as the I;16 modes are); anything
    else (negative, larger) is stretched from its own minimum to its maximum. NaN counts as the
    minimum, infinities as the ends of the finite range.
    """
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    values = np.clip(np.where(np.isnan(values), low, values), low, high)
    if is_float and low >= 0 and high <= 1:
        values = values * 255
    elif low >= 0 and high <= 65535 and high > 255:
        values = values / 256
    elif low < 0 or high > 65535:
        values = (values - low) * 255 / (high - low) if high > low else np.zeros_like(values)
    return np.floor(values).astype(np.uint8)


def _bomb_message(pixels: int | None = None) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    size = f"{pixels:,} pixels, " if pixels is not None else ""
    return f"{size}more than the limit of {limit:,} (a decompression bomb, or a page rather than a text line)"


def check_pixel_limit(path: str | Path, size: tuple[int, int]) -> None:
    """Refuse before decoding what Pillow would only warn about (up to 2x its limit it still decodes)."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise ImageError(f"{path}: image too large: {size[0]} x {size[1]} = {_bomb_message(pixels)}")


def load_all(paths: Sequence[Path], preprocess: Preprocess, threads: int = 2,
             on_progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray | None], list[Problem]]:
    """Decode every image once (Pillow releases the GIL, so threads overlap decoding)."""
    arrays, _, problems = read_all(paths, preprocess, threads, on_progress)
    return arrays, problems


def read_all(paths: Sequence[Path], preprocess: Preprocess, threads: int = 2,
             on_progress: Callable[[int], None] | None = None
             ) -> tuple[list[np.ndarray | None], list[tuple[int, int] | None], list[Problem]]:
    """`load_all`, with each image's own (width, height) before resizing (None where it failed)."""

    def one(path: Path) -> tuple[np.ndarray, tuple[int, int]] | Problem:
        try:
            return preprocess.read(path)
        except ImageError as exc:
            return Problem(str(path), str(exc).removeprefix(f"{path}: "))

    arrays: list[np.ndarray | None] = []
    sizes: list[tuple[int, int] | None] = []
    problems: list[Problem] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, result in enumerate(pool.map(one, paths, chunksize=32), start=1):
            if isinstance(result, Problem):
                problems.append(result)
                arrays.append(None)
                sizes.append(None)
            else:
                arrays.append(result[0])
                sizes.append(result[1])
            if on_progress is not None and (i % 64 == 0 or i == len(paths)):
                on_progress(i)
    return arrays, sizes, problems


def pad_right(array: np.ndarray, width: int) -> np.ndarray:
    """Widen to `width` with the image's own background (the median of its last column)."""
    if array.shape[1] >= width:
        return array
    out = np.empty((array.shape[0], width) + array.shape[2:], dtype=array.dtype)
    out[:, : array.shape[1]] = array
    out[:, array.shape[1]:] = np.median(array[:, -1], axis=0).astype(array.dtype)
    return out


# -- batches ---------------------------------------------------------------------------
def to_tensor_batch(arrays: Sequence[np.ndarray], width_multiple: int = 1):
    """uint8 arrays of one height, varied widths -> float tensor B x C x H x W and widths.

    Narrower images are padded on the right with their own background (the median of their
    last column), so padding looks like more empty paper rather than a black bar. W is the
    widest image rounded up to `width_multiple`: in training, few distinct batch shapes let
    oneDNN reuse its cached kernels instead of building (and keeping) new ones per width.
    """
    import torch

    batch, widths = to_array_batch(arrays, width_multiple)
    return torch.from_numpy(batch), widths


def to_array_batch(arrays: Sequence[np.ndarray], width_multiple: int = 1) -> tuple[np.ndarray, list[int]]:
    """`to_tensor_batch` as a float32 numpy array (for ONNX Runtime, which needs no torch)."""
    widths = [a.shape[1] for a in arrays]
    widest = -(-max(widths) // width_multiple) * width_multiple
    batch = np.stack([pad_right(a, widest) for a in arrays])
    if batch.ndim == 3:
        batch = batch[..., None]
    out = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out, widths


def equal_width_batches(widths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by identical width (no padding at all), at most `batch_size` a batch."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(widths):
        groups.setdefault(w, []).append(i)
    return [g[i: i + batch_size] for _, g in sorted(groups.items()) for i in range(0, len(g), batch_size)]


def width_batches(widths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar width; shuffled when an rng is given.

    With an rng, widths are jittered before sorting so batch membership changes between
    epochs, and the batch order is shuffled; without one the order is deterministic.
    """
    widths = np.asarray(widths, dtype=np.float64)
    keys = widths * (1.0 + rng.uniform(-0.05, 0.05, len(widths))) if rng is not None else widths
    order = np.argsort(keys, kind="stable")
    batches = [order[i: i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def padding_fraction(widths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the batch tensors' columns that are padding."""
    total = sum(max(widths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(widths) / total if total else 0.0


def timed_chunks(items: Iterable, size: int, max_wait: float = 0.2) -> Iterator[list]:
    """Like `chunked`, but also hands over a partial chunk once no item came for `max_wait` s.

    For a slow producer (paths typed or trickling in on stdin) results keep flowing instead
    of waiting for a full chunk. Reading happens in a daemon thread.
    """
    import queue
    import threading

    done = object()
    q: queue.Queue = queue.Queue(maxsize=size * 4)
    failure: list[BaseException] = []

    def reader() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, not lost in the thread
            failure.append(exc)
        finally:
            q.put(done)

    threading.Thread(target=reader, daemon=True).start()
    chunk: list = []
    while True:
        try:
            item = q.get(timeout=max_wait) if chunk else q.get()
        except queue.Empty:
            yield chunk
            chunk = []
            continue
        if item is done:
            break
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    if failure:
        raise failure[0]

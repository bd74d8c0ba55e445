"""`crnn data check`: what is wrong with a dataset before training on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .alphabet import Alphabet
from .config import ModelConfig
from .data import Dataset, Problem, discover, list_images, load_all
from .errors import quoted
from .heads import head_for
from .fitting import fit_input
from .modelfile import preprocess_for


@dataclass
class SplitSummary:
    name: str
    source: str
    samples: int
    readable: int
    chars: Counter
    label_lengths: tuple[int, int]
    widths: tuple[int, int]  # after resizing to the model height
    problems: list[Problem] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # images in its folder that are not among its samples


@dataclass
class DataCheck:
    splits: list[SplitSummary]
    alphabet: Alphabet
    model: str
    height: int  # the input height checked against (the architecture's, or fitted to the data as training would)
    width_scale: float = 1.0  # the same for the stretch across

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.splits for p in s.problems]

    def unseen_in_train(self) -> set[str]:
        train = next((s for s in self.splits if s.name == "train"), None)
        if train is None:
            return set()
        return {c for s in self.splits if s.name != "train" for c in s.chars} - set(train.chars)


def unused_images(folder: Path, dataset: Dataset) -> list[str]:
    """Images under a labelled folder that are not among its samples: no label names them (a
    labels.tsv that lost lines, images copied in later), or their label was refused."""
    used = {s.path.resolve() for s in dataset.samples}
    return [str(p) for p in list_images(folder) if p.resolve() not in used]


def outside(dataset: Dataset, root: Path) -> list[Problem]:
    """Samples whose image lies outside `root` (`../x.png`, an absolute path, a symlink out)."""
    root = root.resolve()
    found = []
    for sample in dataset.samples:
        target = sample.path.resolve()
        if not target.is_relative_to(root):
            found.append(Problem(sample.origin or str(sample.path),
                                 f"path points outside the dataset folder {quoted(str(root))}: {quoted(str(target))}"))
    return found


def _summarise(name: str, dataset: Dataset, config: ModelConfig, threads: int, root: Path) -> SplitSummary:
    preprocess = preprocess_for(config)
    arrays, bad = load_all([s.path for s in dataset.samples], preprocess, threads)
    problems = list(dataset.problems) + outside(dataset, root) + bad
    chars: Counter = Counter()
    lengths, widths = [], []
    alphabet = Alphabet.from_texts(s.text for s in dataset.samples)
    head = head_for(config)
    for sample, array in zip(dataset.samples, arrays):
        chars.update(sample.text)
        lengths.append(len(sample.text))
        if array is None:
            continue
        widths.append(array.shape[1])
        # the same rule training uses to skip a sample (heads.py)
        problem = head.label_problem(config, alphabet.encode(sample.text), array.shape[1])
        if problem is not None:
            problems.append(Problem(sample.origin or str(sample.path), f"{problem}: {quoted(sample.text)}"))
        if array.shape[1] >= config.max_width:
            problems.append(Problem(str(sample.path), f"squeezed to the maximum width {config.max_width} px"))
    readable = sum(a is not None for a in arrays)
    return SplitSummary(name, dataset.source, len(dataset.samples), readable, chars,
                        (min(lengths, default=0), max(lengths, default=0)),
                        (min(widths, default=0), max(widths, default=0)), problems)


def check_dataset(data: str | Path, config: ModelConfig, labels: str = "auto", threads: int = 2,
                  fit: bool = False) -> DataCheck:
    """Each split present (train/val/test subfolders, or the folder itself), summarised and checked.

    With `fit`, against the input height and width scale that `crnn train` would fit to the
    first split (fitting.fit_input), as it does for a bundled architecture.
    """
    data = Path(data)
    found = [(n, data / n) for n in ("train", "val", "test") if (data / n).is_dir()] if data.is_dir() else []
    if not found:
        found = [("all", data)]
    root = data if data.is_dir() else data.parent
    datasets = [(name, path, discover(path, labels)) for name, path in found]
    if fit:
        config = fit_input(config, datasets[0][2], True, True, lambda *_: None)[0]
    splits = []
    for name, path, dataset in datasets:
        summary = _summarise(name, dataset, config, threads, root)
        summary.unlabelled = unused_images(path, dataset) if path.is_dir() else []
        splits.append(summary)
    all_chars = set().union(*(s.chars for s in splits))
    return DataCheck(splits, Alphabet(sorted(all_chars)), config.name, config.height, config.width_scale)

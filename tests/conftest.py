"""Shared fixtures: tiny datasets made on the fly, and a tiny trained model."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
SLOW = {line.strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: takes a second or more (listed in tests/slow_tests.txt)")


def pytest_collection_modifyitems(items) -> None:
    # The fast tier for development: `python -m pytest -q -m "not slow"` runs in seconds.
    for item in items:
        if item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


def render_text(text: str, height: int = 32, seed: int = 0) -> Image.Image:
    font = ImageFont.load_default(size=int(height * 0.7))
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 10, height), 240)
    ImageDraw.Draw(image).text((5 - left, (height - (bottom - top)) // 2 - top), text, font=font, fill=15)
    return image


def make_list_dataset(folder: Path, count: int, seed: int = 0, chars: str = "0123456789") -> list[tuple[str, str]]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(2, 5)))
        name = f"img{i:03d}.png"
        render_text(text).save(folder / name)
        rows.append((name, text))
    (folder / "labels.tsv").write_text("".join(f"{n}\t{t}\n" for n, t in rows), encoding="utf-8")
    return rows


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """tiny/train (48 images) and tiny/val (12 images), digits, list-file format."""
    root = tmp_path_factory.mktemp("tiny")
    make_list_dataset(root / "train", 48, seed=1)
    make_list_dataset(root / "val", 12, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A crnn-tiny trained for two epochs: a real model file, not a good one."""
    from crnn_core.config import TrainConfig, load_model_config
    from crnn_core.train import train

    run = tmp_path_factory.mktemp("run") / "run"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(epochs=2, batch_size=16, threads=2))
    return run / "best.pt"


@pytest.fixture
def sidecar_copy(tmp_path) -> Path:
    target = tmp_path / "sidecar"
    shutil.copytree(SAMPLE / "sidecar", target)
    return target


def search(log_probs, beam: int = 8, automaton=None, prune: float | None = None):
    """One sample's T x C log-probs through the batch prefix beam search (crnn_core.decode.beam_search)."""
    from crnn_core.decode import beam_search

    return beam_search(log_probs[:, None, :], [log_probs.shape[0]], beam, automaton, prune)[0]

"""Data statistics at the start of `crnn train`: the arithmetic by hand, the one stderr line,
config.yaml's `data:` section (and that it is read back without complaint), one decode per image."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from conftest import render_text
from crnn_core.config import load_model_config
from crnn_core.datastats import data_stats
from test_robust_settings import run_cli


def test_statistics_by_hand():
    stats = data_stats(heights=[10, 20, 30, 40, 50], widths=[100, 50, 40, 200, 10],
                       texts=["ab", "aa", "abcd", "x", "q"], read_widths=[104, 56, 40, 200, 16],
                       steps=[26, 14, 10, 50, 4], model_height=32)
    assert stats.images == 5 and stats.model_height == 32
    # numpy's linear percentiles: rank 0.4 and 3.6 of the sorted heights
    assert (stats.height_median, stats.height_p10, stats.height_p90) == pytest.approx((30, 14, 46))
    # chars per px: 0.02, 0.04, 0.1, 0.005, 0.1 -> median 0.04
    assert stats.chars_per_px == pytest.approx(0.04)
    # steps per px of the width read: 0.25 each
    assert stats.steps_per_px == pytest.approx(0.25)
    # needed CTC steps 2, 3 (a repeat needs a blank), 4, 1, 1 over 26, 14, 10, 50, 4
    fill = sorted([2 / 26, 3 / 14, 4 / 10, 1 / 50, 1 / 4])
    assert stats.ctc_fill_median == pytest.approx(fill[2])
    assert stats.ctc_fill_p90 == pytest.approx(fill[3] + 0.6 * (fill[4] - fill[3]))
    assert stats.ctc_fill_max == pytest.approx(0.4)
    d = stats.to_dict()
    assert d["height"] == {"median": 30.0, "p10": 14.0, "p90": 46.0} and d["ctc_fill"]["max"] == 0.4


def test_no_images_and_mismatched_inputs():
    empty = data_stats([], [], [], [], [], model_height=32)
    assert empty.images == 0 and empty.height_median is None
    assert empty.to_dict()["ctc_fill"] == {"median": None, "p90": None, "max": None}
    assert data_stats([5], [1], ["abc"], [0], [0], 32).ctc_fill_max == 3.0  # no step at all: counted as one
    with pytest.raises(ValueError):
        data_stats([1, 2], [1], ["a"], [1], [1], 32)


def test_the_module_needs_no_torch():
    code = "import sys, crnn_core.datastats; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_read_gives_each_image_its_own_upright_size(tmp_path):
    from PIL import Image

    from crnn_core.data import Preprocess, read_all

    Image.new("L", (90, 30), 255).save(tmp_path / "plain.png")
    image = Image.new("L", (40, 20), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # stored 40 x 20, shown turned: 20 x 40
    image.save(tmp_path / "rot.jpg", exif=exif)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    arrays, sizes, problems = read_all([tmp_path / n for n in ("plain.png", "rot.jpg", "bad.png")], Preprocess())
    assert sizes == [(90, 30), (20, 40), None] and len(problems) == 1
    assert [a.shape for a in arrays[:2]] == [(32, 96), (32, 16)] and arrays[2] is None


HEIGHTS = [20 + 4 * i for i in range(10)]  # 20 .. 56 px


@pytest.fixture(scope="module")
def mixed_heights(tmp_path_factory):
    """Ten training images of ten heights, four validation images."""
    root = tmp_path_factory.mktemp("heights")
    for split, heights in (("train", HEIGHTS), ("val", [32, 32, 40, 40])):
        (root / split).mkdir()
        rows = []
        for i, height in enumerate(heights):
            text = ["12", "345", "6677", "8"][i % 4]
            render_text(text, height=height).save(root / split / f"{i}.png")
            rows.append(f"{i}.png\t{text}\n")
        (root / split / "labels.tsv").write_text("".join(rows))
    return root


def test_train_reports_the_data_in_one_line_and_in_config_yaml(mixed_heights, tmp_path, monkeypatch, capfd):
    from PIL import Image

    from crnn_core import data as data_module

    opened: Counter = Counter()
    real_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened[str(path)] += 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(data_module.Image, "open", counting_open)
    run = tmp_path / "run"
    code, out, err = run_cli("train", mixed_heights, "--model", "crnn-tiny", "--epochs", "1", "--threads", "2",
                             "--out", run, capfd=capfd)
    assert code == 0, err
    monkeypatch.undo()
    # opened twice: its header once (the input height is fitted from the sizes alone), decoded once
    assert all(opened[str(mixed_heights / "train" / f"{i}.png")] == 2 for i in range(10)), opened
    assert all(opened[str(mixed_heights / "val" / f"{i}.png")] == 1 for i in range(2, 4)), opened
    lines = [line for line in err.splitlines() if line.startswith("data: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("data: 10 training images, height 38 px median (p10 23.6, p90 52.4), read at 32 px")
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded["images"] == 10 and recorded["height"] == {"median": 38.0, "p10": 23.6, "p90": 52.4}
    # chars per px at 32 px: each image's width scaled by 32 / its height, as the preprocessing resizes it
    config = load_model_config("crnn-tiny")
    ratios, fills = [], []
    for i, height in enumerate(HEIGHTS):
        text = ["12", "345", "6677", "8"][i % 4]
        width = round(render_text(text, height=height).width * 32 / height)
        steps = config.time_steps(math.ceil(width / 8) * 8)  # read padded to a multiple of 8
        ratios.append(len(text) / width)
        fills.append((len(text) + (text == "6677") * 2) / steps)
    assert recorded["chars_per_px"] == pytest.approx(sorted(ratios)[4] / 2 + sorted(ratios)[5] / 2, abs=1e-4)
    assert recorded["ctc_fill"]["max"] == pytest.approx(max(fills), abs=1e-3)
    assert f"{recorded['chars_per_px']:.3f} chars/px against 0.250 CTC steps/px" in lines[0]


def test_a_config_yaml_with_data_is_read_back(mixed_heights, tmp_path, capfd):
    run = tmp_path / "run"
    code, out, err = run_cli("train", mixed_heights, "--model", "crnn-tiny", "--epochs", "1", "--threads", "2",
                             "--out", run, capfd=capfd)
    assert code == 0, err
    config = run / "config.yaml"
    assert "data" in yaml.safe_load(config.read_text())
    code, out, err = run_cli("train", mixed_heights, "--config", config, "--epochs", "1", "--out", tmp_path / "again",
                             capfd=capfd)
    assert code == 0, err
    # --resume refuses a model: section (the checkpoint has the architecture); train: and data: pass
    settings = yaml.safe_load(config.read_text())
    del settings["model"]
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    code, out, err = run_cli("train", "--resume", run, "--config", tmp_path / "settings.yaml", "--epochs", "2",
                             capfd=capfd)
    assert code == 0, err
    assert yaml.safe_load(config.read_text())["data"]["images"] == 10  # rewritten by the resumed run
    assert yaml.safe_load(config.read_text())["train"]["epochs"] == 2

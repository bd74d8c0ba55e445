"""Defaults decided from the data and the budget (issue 15): the input height from the training
images' heights, and a time budget that the epoch cap and early stopping no longer cut short."""

from __future__ import annotations

import pytest
import yaml

from conftest import render_text
from crnn_core.config import (FINETUNE_WEIGHT_DECAY, UNTIL_BUDGET, TrainConfig, height_from_architecture, load_model_config,
                              resolve_run_config, with_height)
from crnn_core.datastats import LONG_ASPECT, fitted_height
from crnn_core.data import header_sizes
from test_robust_settings import run_cli


@pytest.mark.parametrize("median, expected", [
    (None, 32), (12, 32), (32, 32), (39.9, 32), (40, 32),  # 40/16 = 2.5 rounds to 2: the default
    (44, 48), (48, 48), (55.9, 48), (56, 64), (60, 64), (64, 64), (300, 64),  # taller: a multiple of 16, at most 2x
])
def test_fitted_height_rule(median, expected):
    assert fitted_height(median, 32) == expected


@pytest.mark.parametrize("median, aspect, expected", [
    (60, 2.67, 64), (60, LONG_ASPECT, 64), (300, 1.0, 64),  # short images (captchas) may go to twice the default
    (60, LONG_ASPECT + 0.01, 48), (76, 7.8, 48), (300, 20.0, 48),  # long lines stop at 1.5x: half the cost of 2x
    (48, 7.8, 48), (44, 30.0, 48), (40, 7.8, 32), (20, 7.8, 32),  # below the cap the width changes nothing
])
def test_long_images_stop_at_one_and_a_half_times_the_default(median, aspect, expected):
    assert fitted_height(median, 32, aspect) == expected


def test_fitted_height_for_another_default():
    assert fitted_height(100, 64) == 96 and fitted_height(70, 64) == 64 and fitted_height(20, 64) == 64
    assert fitted_height(28, 28) == 28 and fitted_height(35, 28) == 28  # seed-fusion's 28 x 28 characters
    assert fitted_height(40, 28) == 32 and fitted_height(60, 28) == 56  # 64 capped at 2 x 28
    assert fitted_height(60, 28, 8.0) == 32 and fitted_height(200, 64, 8.0) == 96  # long: a multiple of 16 <= 1.5x


def test_with_height_keeps_the_aspect_cap():
    base = load_model_config("crnn-fast")
    tall = with_height(base, 48)
    assert (tall.height, tall.max_width) == (48, base.max_width * 3 // 2)
    assert tall.backbone == base.backbone and tall.head == base.head


def test_only_a_bundled_architectures_height_is_fitted(tmp_path):
    assert height_from_architecture(None, None, None)
    assert height_from_architecture("crnn-small", None, {"height": None})
    assert not height_from_architecture(None, None, {"height": 32})  # --height is the user's choice
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump(load_model_config("crnn-tiny").to_dict()))
    assert not height_from_architecture(str(own), None, None)  # so is an architecture file
    assert not height_from_architecture(load_model_config("crnn-tiny"), None, None)
    with_model = tmp_path / "with-model.yaml"
    with_model.write_text(yaml.safe_dump({"model": load_model_config("crnn-tiny").to_dict()}))
    train_only = tmp_path / "train-only.yaml"
    train_only.write_text(yaml.safe_dump({"train": {"lr": 0.001}}))
    assert not height_from_architecture(None, with_model, None)
    assert height_from_architecture(None, train_only, None)


def test_header_sizes_spread_and_skip_unreadable(tmp_path):
    paths = []
    for i, height in enumerate([20, 30, 40, 50]):
        path = tmp_path / f"{i}.png"
        render_text("12", height=height).save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    sizes = header_sizes(paths + [tmp_path / "bad.png"])
    assert [h for _, h in sizes] == [20, 30, 40, 50] and all(w > 10 for w, _ in sizes)
    assert [h for _, h in header_sizes(paths, most=2)] == [20, 40]


def _tall_data(root, height, digits=2):
    for split, count in (("train", 24), ("val", 6)):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(count):
            text = (str(1000 + 37 * i) * 4)[: digits + i % 3]
            render_text(text, height=height).save(folder / f"{i}.png")
            rows.append(f"{i}.png\t{text}\n")
        (folder / "labels.tsv").write_text("".join(rows))
    return root


def test_tall_images_are_read_taller_and_a_flag_still_wins(tmp_path, capfd):
    data = _tall_data(tmp_path / "tall", 60)
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--out", tmp_path / "fit",
                             capfd=capfd)
    assert code == 0, err
    assert "input height 64 px, fitted to the training images' median height of 60 px" in err
    saved = yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())
    assert saved["model"]["input"]["height"] == 64 and saved["data"]["model_height"] == 64
    fitted = saved["data"]["fitted"]
    assert 1.0 < fitted.pop("median_aspect") < LONG_ASPECT
    assert fitted == {"height": 64, "architecture_height": 32, "median_height": 60.0, "looked_at": 24,
                      "long_images_cap": False}
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--height", "32",
                             "--out", tmp_path / "flag", capfd=capfd)
    assert code == 0, err
    assert "fitted" not in err
    saved = yaml.safe_load((tmp_path / "flag" / "config.yaml").read_text())
    assert saved["model"]["input"]["height"] == 32 and "fitted" not in saved["data"]


def test_tall_long_images_are_read_at_one_and_a_half_times(tmp_path, capfd):
    data = _tall_data(tmp_path / "long", 60, digits=14)  # about 6 times as wide as high
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--out", tmp_path / "fit",
                             capfd=capfd)
    assert code == 0, err
    assert "input height 48 px, fitted to the training images' median height of 60 px, not above 48 px as they" in err
    saved = yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())
    assert saved["model"]["input"]["height"] == 48 and saved["data"]["fitted"]["long_images_cap"] is True
    assert saved["data"]["fitted"]["median_aspect"] > LONG_ASPECT


def test_images_of_the_default_height_change_nothing(tiny_data, tmp_path, capfd):
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--epochs", "1", "--out", tmp_path / "run",
                             capfd=capfd)
    assert code == 0, err
    assert "fitted to" not in err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["input"]["height"] == 32 and saved["data"]["fitted"]["height"] == 32


def test_a_budget_lifts_the_epoch_cap_and_early_stopping(tmp_path):
    _, plain = resolve_run_config(train_flags={})
    assert (plain.epochs, plain.patience) == (30, 8)  # no budget: as before
    _, budget = resolve_run_config(train_flags={"max_minutes": 5})
    assert (budget.epochs, budget.patience) == (UNTIL_BUDGET, UNTIL_BUDGET)
    _, asked = resolve_run_config(train_flags={"max_minutes": 5, "epochs": 12})
    assert (asked.epochs, asked.patience) == (12, UNTIL_BUDGET)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"max_minutes": 5, "patience": 3}}))
    _, from_file = resolve_run_config(config_file=config)
    assert (from_file.epochs, from_file.patience) == (UNTIL_BUDGET, 3)
    _, explicit = resolve_run_config(train=TrainConfig(max_minutes=5))  # a library caller's object is taken as is
    assert (explicit.epochs, explicit.patience) == (30, 8)


def test_fine_tuning_keeps_a_small_weight_decay_unless_one_is_given(tmp_path):
    init = load_model_config("crnn-tiny")
    _, scratch = resolve_run_config(train_flags={})
    _, tuned = resolve_run_config(train_flags={}, init=init)
    assert (scratch.weight_decay, tuned.weight_decay) == (0.05, FINETUNE_WEIGHT_DECAY) and FINETUNE_WEIGHT_DECAY < 0.05
    _, flag = resolve_run_config(train_flags={"weight_decay": 0.02}, init=init)
    assert flag.weight_decay == 0.02
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"weight_decay": 0.03}}))
    _, from_file = resolve_run_config(config_file=config, init=init)
    assert from_file.weight_decay == 0.03
    _, explicit = resolve_run_config(train=TrainConfig(weight_decay=0.05), init=init)  # taken as is
    assert explicit.weight_decay == 0.05


def test_a_budgeted_run_shows_no_epoch_total(tiny_data, tmp_path, capfd):
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--max-minutes", "0.05",
                             "--out", tmp_path / "run", capfd=capfd)
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == UNTIL_BUDGET and saved["train"]["patience"] == UNTIL_BUDGET
    assert "time budget of 0.05 min reached" in err and f"/{UNTIL_BUDGET}" not in err


def test_resuming_a_checkpoint_from_before_ema_keeps_it_off(tiny_data, tmp_path):
    import io

    import torch

    from crnn_core.modelfile import read_payload
    from crnn_core.train import train

    run = tmp_path / "old"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(epochs=1, batch_size=16, threads=2, ema=0.0))
    payload = read_payload(run / "last.pt")
    del payload["train"]["config"]["ema"]  # as written before the setting existed
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (run / "last.pt").write_bytes(buffer.getvalue())
    train(None, None, resume=run, overrides={"epochs": 2})
    assert read_payload(run / "last.pt")["train"]["config"]["ema"] == 0.0

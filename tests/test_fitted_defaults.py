"""Defaults decided from the data and the budget (issue 15): the input height from the training
images' heights, the width scale from how densely their labels fill the CTC steps, and a time
budget that the epoch cap and early stopping no longer cut short."""

from __future__ import annotations

import json

import onnx
import pytest
import yaml
from PIL import Image

from conftest import render_text
from crnn_core.config import (FINETUNE_WEIGHT_DECAY, UNTIL_BUDGET, ModelConfig, TrainConfig, apply_model_flags,
                              input_from_architecture, load_model_config, resolve_run_config, with_height,
                              with_width_scale)
from crnn_core.data import Preprocess, header_sizes
from crnn_core.datastats import LONG_ASPECT, fitted_height, fitted_width_scale
from crnn_core.errors import UsageError
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
    assert input_from_architecture(None, None, None)
    assert input_from_architecture("crnn-small", None, {"height": None})
    assert not input_from_architecture(None, None, {"height": 32})  # --height is the user's choice
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump(load_model_config("crnn-tiny").to_dict()))
    assert not input_from_architecture(str(own), None, None)  # so is an architecture file
    assert not input_from_architecture(load_model_config("crnn-tiny"), None, None)
    with_model = tmp_path / "with-model.yaml"
    with_model.write_text(yaml.safe_dump({"model": load_model_config("crnn-tiny").to_dict()}))
    train_only = tmp_path / "train-only.yaml"
    train_only.write_text(yaml.safe_dump({"train": {"lr": 0.001}}))
    assert not input_from_architecture(None, with_model, None)
    assert input_from_architecture(None, train_only, None)


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
                      "long_images_cap": False, "width_scale": 1.0, "ctc_fill_p90_unstretched": 0.158}
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--height", "32",
                             "--out", tmp_path / "flag", capfd=capfd)
    assert code == 0, err
    assert "fitted" not in err
    saved = yaml.safe_load((tmp_path / "flag" / "config.yaml").read_text())
    assert saved["model"]["input"]["height"] == 32 and "height" not in saved["data"]["fitted"]


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


@pytest.mark.parametrize("fill, expected", [
    (None, 1.0), (float("nan"), 1.0), (0.0, 1.0), (0.34, 1.0), (0.5, 1.0),  # the suite's kinds: at most 0.34
    (0.51, 1.25), (0.625, 1.25), (0.7, 1.5), (0.75, 1.5), (0.93, 2.0), (1.0, 2.0), (1.2, 2.5), (1.5, 3.0),
    (9.0, 3.0),  # at most 3: the compute grows with the scale
])
def test_fitted_width_scale_rule(fill, expected):
    assert fitted_width_scale(fill) == expected


def test_the_width_scale_stretches_the_resized_image_across():
    plain, wide = Preprocess(height=32, max_width=800), Preprocess(height=32, max_width=1600, width_scale=2.0)
    image = Image.new("L", (120, 64), 200)
    assert plain.from_pil(image).shape == (32, 64) and wide.from_pil(image).shape == (32, 120)
    assert wide.target_width(4000, 32) == 1600  # the widest input counts stretched pixels
    assert "width_scale" not in plain.to_dict()  # files written before it stay byte-identical
    assert Preprocess.from_dict(wide.to_dict()) == wide and Preprocess.from_dict(plain.to_dict()) == plain
    for bad in (0, 0.1, 9, float("nan")):
        with pytest.raises(ValueError, match="width_scale"):
            Preprocess.from_dict(dict(wide.to_dict(), width_scale=bad))


def test_width_scale_in_architectures_and_flags():
    base = load_model_config("crnn-fast")
    assert "width_scale" not in base.to_dict()["input"] and base.width_scale == 1.0
    wide = with_width_scale(base, 2.0)
    assert (wide.width_scale, wide.max_width) == (2.0, 2 * base.max_width)
    assert ModelConfig.from_dict(wide.to_dict()) == wide and wide.to_dict()["input"]["width_scale"] == 2.0
    assert with_width_scale(wide, 1.0).max_width == base.max_width
    tall_wide = with_height(wide, 48)
    assert (tall_wide.width_scale, tall_wide.max_width) == (2.0, 3 * base.max_width)
    assert apply_model_flags(base, width_scale=1.5).width_scale == 1.5
    with pytest.raises(UsageError, match="--width-scale must be a number >= 0.25 and <= 8, not 0"):
        apply_model_flags(base, width_scale=0)
    assert not input_from_architecture(None, None, {"width_scale": 1.0}, "width_scale")
    assert input_from_architecture(None, None, {"height": 32}, "width_scale")  # --height leaves the width to the data


def _dense_data(root):
    """Digit strings squeezed to a third of their width: at 32 px a label needs most of its CTC steps."""
    for split, count in (("train", 24), ("val", 6)):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(count):
            text = (str(1000 + 37 * i) * 4)[: 6 + i % 3]
            image = render_text(text, height=32)
            image.resize((image.width // 3, 32), Image.Resampling.BOX).save(folder / f"{i}.png")
            rows.append(f"{i}.png\t{text}\n")
        (folder / "labels.tsv").write_text("".join(rows))
    return root


def test_dense_text_is_stretched_across_and_the_model_reads_it_so(tmp_path, capfd):
    data = _dense_data(tmp_path / "dense")
    run = tmp_path / "run"
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--out", run, capfd=capfd)
    assert code == 0, err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    scale = saved["data"]["fitted"]["width_scale"]
    assert scale > 1.0 and saved["data"]["fitted"]["ctc_fill_p90_unstretched"] > 0.5
    assert f"images stretched across {scale:g} times" in err
    assert saved["model"]["input"]["width_scale"] == scale and saved["data"]["ctc_fill"]["p90"] <= 0.5
    code, out, err = run_cli("info", run / "best.pt", "--json", capfd=capfd)
    assert code == 0, err
    assert json.loads(out)["preprocess"]["width_scale"] == scale
    code, out, err = run_cli("export", run / "best.pt", "--format", "onnx", "-o", tmp_path / "m.onnx", capfd=capfd)
    assert code == 0, err  # export compares the ONNX file's readings with the model's: the same stretch
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["crnn.version"] == "2" and json.loads(meta["crnn.preprocess"])["width_scale"] == scale
    images = sorted((data / "val").glob("*.png"))
    torch_out = run_cli("predict", "--model", run / "best.pt", *images, "--format", "jsonl", capfd=capfd)[1]
    onnx_out = run_cli("predict", "--model", tmp_path / "m.onnx", *images, "--format", "jsonl", capfd=capfd)[1]
    assert [json.loads(x)["text"] for x in torch_out.splitlines()] == [json.loads(x)["text"] for x in onnx_out.splitlines()]
    code, out, err = run_cli("data", "check", data, "--model", "crnn-tiny", "--json", capfd=capfd)
    assert code == 0, out  # checked as training reads it: stretched, every label fits
    assert json.loads(out)["input"] == {"height": 32, "width_scale": scale}
    own = tmp_path / "tiny.yaml"  # an architecture file keeps its input as it is: labels too long for CTC
    own.write_text(yaml.safe_dump(load_model_config("crnn-tiny").to_dict()))
    code, out, err = run_cli("data", "check", data, "--model", own, "--json", capfd=capfd)
    report = json.loads(out)
    assert report["input"] == {"height": 32, "width_scale": 1.0}
    assert code == 1 and any("CTC steps" in p for s in report["splits"] for p in s["problems"])
    code, out, err = run_cli("train", data, "--model", "crnn-tiny", "--epochs", "1", "--width-scale", "1",
                             "--out", tmp_path / "flag", capfd=capfd)
    assert code == 0, err
    assert "images stretched across" not in err
    saved = yaml.safe_load((tmp_path / "flag" / "config.yaml").read_text())
    assert "width_scale" not in saved["model"]["input"] and "width_scale" not in saved["data"]["fitted"]


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


def test_synth_fits_crops_to_a_model_that_stretches(tmp_path):
    from crnn_core.synth import max_width_for, min_width_for

    wide = tmp_path / "wide.yaml"
    wide.write_text(yaml.safe_dump(with_width_scale(load_model_config("crnn-fast"), 2.0).to_dict()))
    assert max_width_for(32, "crnn-fast") == 800 and max_width_for(32, str(wide)) == 800  # 1,600 stretched px
    assert min_width_for("1234567890", 32, str(wide)) < min_width_for("1234567890", 32, "crnn-fast")

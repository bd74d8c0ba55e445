"""curves.png: drawn each epoch from the metrics history; a drawing failure never stops training."""

from __future__ import annotations

import math

from PIL import Image

HISTORY = [{"epoch": e, "train_loss": 30.0 / e, "val_cer": 1.0 / e, "val_accuracy": 1 - 1.0 / e} for e in range(1, 6)]


def test_curves_png_is_a_picture(tmp_path):
    from crnn_core.plots import CurvePlotter

    plotter = CurvePlotter(tmp_path / "curves.png")
    assert plotter.update(HISTORY[:1]) and plotter.update(HISTORY + [dict(HISTORY[0], epoch=6, train_loss=math.nan)])
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1200, 360)
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # something was drawn
    assert not plotter.update([])


def test_the_dashed_line_marks_the_epoch_best_pt_holds():
    from crnn_core.plots import marked_epoch

    assert marked_epoch(HISTORY, None)["epoch"] == 5  # the lowest validation CER
    assert marked_epoch(HISTORY, 3)["epoch"] == 3  # the one training kept, whatever its CER
    assert marked_epoch(HISTORY, 9)["epoch"] == 5 and marked_epoch([], 1) is None


def test_a_plotting_failure_is_reported_once_and_never_raised(tmp_path, monkeypatch):
    from crnn_core import plots

    def broken(history, kept_epoch=None):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "curves_png", broken)
    heard = []
    plotter = plots.CurvePlotter(tmp_path / "curves.png", heard.append)
    assert not plotter.update(HISTORY) and not plotter.update(HISTORY)
    assert heard == ["could not draw curves.png (RuntimeError: no fonts); training goes on"]
    assert not (tmp_path / "curves.png").exists()


def test_training_goes_on_when_plotting_fails(tiny_data, tmp_path, monkeypatch):
    from crnn_core import plots
    from crnn_core.config import TrainConfig, load_model_config
    from crnn_core.train import train

    def missing(history, kept_epoch=None):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "curves_png", missing)
    events = []
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"),
                   TrainConfig(epochs=2, batch_size=48, threads=2), on_event=lambda k, i: events.append((k, i)))
    assert result.epochs_run == 2 and (tmp_path / "run" / "best.pt").exists()
    warnings = [i["message"] for k, i in events if k == "warning"]
    assert warnings == ["could not draw curves.png (matplotlib is not installed); training goes on"]


import json

import pytest

from conftest import render_text
from crnn_core.config import TrainConfig, load_model_config
from crnn_core.errors import CrnnError
from crnn_core.modelfile import read_payload
from crnn_core.heads import ctc_needed_steps
from crnn_core.train import lr_factor, train

TINY = dict(batch_size=16, threads=2)


def test_ctc_needed_steps_counts_repeats():
    assert ctc_needed_steps([1, 2, 3]) == 3
    assert ctc_needed_steps([1, 1, 2, 2, 2]) == 8


def test_schedule_warms_up_then_decays():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.05)
    assert lr_factor(20, 10, 100, time_progress=1.0) == pytest.approx(0.05)  # the clock ends the run
    assert lr_factor(20, 10, 100, time_progress=0.0) > 0.9


def test_run_folder_contents_and_metrics(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=2, **TINY))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "config.yaml", "metrics.jsonl"}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert all(0.0 <= m["val_accuracy"] <= 1.0 and m["val_cer"] >= 0.0 for m in lines)
    assert read_payload(run / "last.pt")["format"] == "crnn-checkpoint"
    assert read_payload(run / "best.pt")["train"]["best_epoch"] == result.best_epoch
    assert __import__("gc").get_freeze_count() == 0  # the run's gc.freeze() is undone when it returns


def test_interrupted_run_resumes_to_the_same_result(tiny_data, tmp_path):
    config = load_model_config("crnn-tiny")
    straight = train(tiny_data, tmp_path / "a", config, TrainConfig(epochs=3, seed=5, **TINY))
    polls = iter(range(10**6))
    stop_after = 5  # polled before each step and after each epoch: stops before step 2 of epoch 2
    first = train(tiny_data, tmp_path / "b", config, TrainConfig(epochs=3, seed=5, **TINY),
                  should_stop=lambda: next(polls) >= stop_after)
    assert first.stop_reason.startswith("interrupted")
    resumed = train(None, None, resume=tmp_path / "b")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert not any(h["partial"] for h in resumed.history)
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_cer"] == pytest.approx(b["val_cer"], abs=1e-9)


def test_resume_can_extend_the_epochs(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "c", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))
    resumed = train(None, None, resume=tmp_path / "c", overrides={"epochs": 2})
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_refuses_to_overwrite_a_run(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))
    with pytest.raises(CrnnError, match="already holds a run"):
        train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))


def test_time_budget_stops_cleanly_and_keeps_a_model(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"),
                   TrainConfig(epochs=50, max_minutes=0.0001, **TINY))
    assert "time budget" in result.stop_reason
    assert result.epochs_run == 1
    assert (tmp_path / "run" / "best.pt").is_file()


def test_labels_too_long_for_ctc_are_skipped_and_reported(tiny_data, tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    import shutil
    shutil.copytree(tiny_data / "val", data / "val")
    rows = []
    for i, text in enumerate(["12", "345", "0123456789012345678901234567890123456789"]):
        render_text(text[:3]).save(data / "train" / f"{i}.png")  # the long label on a short image
        rows.append(f"{i}.png\t{text}\n")
    (data / "train" / "labels.tsv").write_text("".join(rows))
    result = train(data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))
    assert len(result.skipped) == 1
    assert "CTC steps" in result.skipped[0].message and "2.png" in result.skipped[0].message
    assert result.skipped[0].where.endswith("labels.tsv:3")


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch):
    import torch

    from crnn_core import train as train_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    assert train_module.autocast_dtype("auto", cpu) == torch.bfloat16
    assert train_module.autocast_dtype("fp32", cpu) is None
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    assert train_module.autocast_dtype("auto", cpu) is None
    assert train_module.autocast_dtype("bf16", cpu) == torch.bfloat16  # asked for explicitly: honoured
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    monkeypatch.undo()
    assert train_module.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def _state(accuracies, best_epoch):
    from crnn_core.train import TrainState

    history = [{"epoch": e, "val_accuracy": a, "val_cer": 1 - a, "val_wer": 1 - a} for e, a in enumerate(accuracies, 1)]
    best = history[best_epoch - 1]
    return TrainState(epoch=len(history), history=history,
                      best={"cer": best["val_cer"], "accuracy": best["val_accuracy"], "epoch": best_epoch})


def test_the_last_epoch_is_kept_within_two_standard_errors_of_the_best():
    # 500 images at 96.6%: one standard error is 0.81 points, so 95.0% is inside and 94.9% outside
    assert _state([0.9, 0.966, 0.958], best_epoch=2).keeps_last(500)
    assert _state([0.9, 0.966, 0.950], best_epoch=2).keeps_last(500)
    assert not _state([0.9, 0.966, 0.949], best_epoch=2).keeps_last(500)
    assert not _state([0.9, 0.966, 0.958], best_epoch=2).keeps_last(50_000)  # a large set tells them apart
    assert not _state([0.9, 0.97], best_epoch=2).keeps_last(500)  # the last is the best already
    # a perfect best still allows one image's worth of noise: 2 * sqrt(1/500) / sqrt(500) = 0.4 points
    assert _state([1.0, 0.996], best_epoch=1).keeps_last(500)
    assert not _state([1.0, 0.994], best_epoch=1).keeps_last(500)


def _scripted_validation(monkeypatch, accuracies):
    from crnn_core import train as train_module
    from crnn_core.metrics import Scores

    scripted = iter(accuracies)

    def validate(self):
        correct = next(scripted)
        return Scores(samples=12, correct=correct, char_errors=12 - correct, chars=48, word_errors=12 - correct, words=12)

    monkeypatch.setattr(train_module.Trainer, "validate", validate)


def test_a_run_that_ends_by_its_schedule_keeps_its_last_epoch_when_validation_cannot_tell(tiny_data, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [6, 11, 10])  # epoch 2 is best; epoch 3 one image behind of 12
    events = []
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=3, **TINY),
                   on_event=lambda kind, info: events.append((kind, info)))
    assert result.best_epoch == 3 and result.best["accuracy"] == pytest.approx(10 / 12)
    assert read_payload(tmp_path / "run" / "best.pt")["train"]["best_epoch"] == 3
    assert read_payload(tmp_path / "run" / "last.pt")["state"]["best"]["epoch"] == 3  # what --resume reads
    kept = [info for kind, info in events if kind == "kept_last"]
    assert len(kept) == 1 and kept[0]["epoch"] == 3 and kept[0]["instead_of"]["epoch"] == 2


def test_a_clearly_worse_last_epoch_or_an_early_stop_keeps_the_best(tiny_data, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [6, 12, 1])  # 1 of 12 against 12 of 12: beyond any noise
    result = train(tiny_data, tmp_path / "a", load_model_config("crnn-tiny"), TrainConfig(epochs=3, **TINY))
    assert result.best_epoch == 2
    assert read_payload(tmp_path / "a" / "best.pt")["train"]["best_epoch"] == 2
    _scripted_validation(monkeypatch, [11, 10, 10, 10])  # patience 2 ends it at epoch 3, before the schedule's end
    result = train(tiny_data, tmp_path / "b", load_model_config("crnn-tiny"), TrainConfig(epochs=4, patience=2, **TINY))
    assert result.stop_reason.startswith("early stop") and result.best_epoch == 1

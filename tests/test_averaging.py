"""Weight averaging (`ema`): the update rule by hand, best.pt holding the averaged weights,
resume continuing the average, the setting's checks, and decay 0 changing nothing."""

from __future__ import annotations

import io
import shutil

import pytest
import torch
import yaml
from torch import nn

from crnn_core.averaging import EmaWeights, RawWeights, warmed_decay, weight_average
from crnn_core.config import TrainConfig, load_model_config
from crnn_core.modelfile import read_payload
from crnn_core.train import Trainer, train
from test_robust_settings import one_clean_line, run_cli

TINY = dict(batch_size=16, threads=2, seed=3)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.register_buffer("running", torch.tensor([0.0]))


def _set(model: Tiny, weight: list[float], running: float) -> None:
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
        model.running.fill_(running)


def test_the_update_rule_by_hand():
    # decay after n earlier updates: min(0.9, (1 + n) / (10 + n)), i.e. 2/11, then 3/12, then 4/13
    model = Tiny()
    average = weight_average(model, 0.9)
    assert isinstance(average, EmaWeights) and average.model is not model
    _set(model, [3.0, 4.0], 7.0)
    average.update(model)  # the first update copies
    assert average.model.weight.tolist() == [3.0, 4.0]
    _set(model, [5.0, 0.0], 8.0)
    average.update(model)  # 2/11 * [3, 4] + 9/11 * [5, 0]
    assert average.model.weight.tolist() == pytest.approx([51 / 11, 8 / 11], abs=1e-6)
    _set(model, [1.0, 1.0], 9.0)
    average.update(model)  # 3/12 * [51/11, 8/11] + 9/12 * [1, 1]
    second = [0.25 * 51 / 11 + 0.75, 0.25 * 8 / 11 + 0.75]
    assert average.model.weight.tolist() == pytest.approx(second, abs=1e-6)
    assert average.model.running.tolist() == [9.0]  # buffers are copied, not averaged
    assert model.weight.tolist() == [1.0, 1.0]  # the trained model is left alone
    restored = weight_average(Tiny(), 0.9)
    restored.load_state_dict(average.state_dict())
    _set(model, [0.0, 0.0], 1.0)
    restored.update(model)  # continues the average and its count: 4/13 * second
    assert restored.model.weight.tolist() == pytest.approx([4 / 13 * v for v in second], abs=1e-6)


def test_the_warm_up_reaches_the_decay_and_stays():
    assert [warmed_decay(0.999, n) for n in (0, 1, 90)] == pytest.approx([0.1, 2 / 11, 0.91])
    assert warmed_decay(0.9, 78) < 0.9 and warmed_decay(0.9, 81) == 0.9 == warmed_decay(0.9, 10**6)
    assert warmed_decay(0.999, 8_988) < 0.999 and warmed_decay(0.999, 8_992) == 0.999


def test_decay_zero_is_the_model_itself():
    model = Tiny()
    average = weight_average(model, 0.0)
    assert isinstance(average, RawWeights) and average.model is model and average.state_dict() is None
    average.update(model)
    average.load_state_dict(None)
    assert model.weight.tolist() == [1.0, 2.0]


def _record_weights(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The trained (raw) model's weights after every step that changed them, seen from outside the averaging."""
    snapshots: list[dict[str, torch.Tensor]] = []
    original = Trainer.train_step

    def step(self, batch):
        loss = original(self, batch)
        if loss is not None:
            snapshots.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", step)
    return snapshots


def test_best_pt_holds_the_averaged_weights(tiny_data, tmp_path, monkeypatch, capfd):
    snapshots = _record_weights(monkeypatch)
    run = tmp_path / "run"
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--epochs", "1", "--batch-size", "16",
                             "--threads", "2", "--ema", "0.9", "--out", run, capfd=capfd)
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["ema"] == 0.9
    best = read_payload(run / "best.pt")["state_dict"]
    assert len(snapshots) == 3  # 48 images, batches of 16
    expected = dict(snapshots[0])
    for n, raw in enumerate(snapshots[1:], start=1):
        d = min(0.9, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * v if v.is_floating_point() else v for k, v in raw.items()}
    last = snapshots[-1]
    for key, value in best.items():
        if "running" in key or "num_batches" in key:  # batch-norm statistics: the trained model's, copied
            assert torch.equal(value, last[key]), key
        else:
            assert torch.allclose(value, expected[key], atol=1e-6), key
    assert any(not torch.allclose(best[k], last[k]) for k in best if best[k].is_floating_point())  # not the raw ones
    assert torch.equal(read_payload(run / "last.pt")["state_dict"]["head.weight"], last["head.weight"])  # resumes from raw


def test_resume_continues_the_average(tiny_data, tmp_path):
    config = load_model_config("crnn-tiny")
    straight = train(tiny_data, tmp_path / "a", config, TrainConfig(epochs=2, ema=0.8, **TINY))
    polls = iter(range(10**6))
    first = train(tiny_data, tmp_path / "b", config, TrainConfig(epochs=2, ema=0.8, **TINY),
                  should_stop=lambda: next(polls) >= 5)  # stops before step 2 of epoch 2
    assert first.stop_reason.startswith("interrupted")
    resumed = train(None, None, resume=tmp_path / "b")
    a = read_payload(tmp_path / "a" / "last.pt")["state"]["average"]
    b = read_payload(tmp_path / "b" / "last.pt")["state"]["average"]
    assert int(a["n_averaged"]) == int(b["n_averaged"]) == 6
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key
    for x, y in zip(straight.history, resumed.history):
        assert x["val_cer"] == pytest.approx(y["val_cer"], abs=1e-9)


def _rewrite(path, change) -> None:
    payload = read_payload(path)
    change(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())


def test_checkpoints_without_an_average_still_resume(tiny_data, tmp_path):
    config = load_model_config("crnn-tiny")
    train(tiny_data, tmp_path / "old", config, TrainConfig(epochs=1, **TINY))
    train(tiny_data, tmp_path / "ema", config, TrainConfig(epochs=1, ema=0.9, **TINY))

    def as_before_the_setting(payload):  # what last.pt held before `ema` existed
        del payload["state"]["average"]
        del payload["train"]["config"]["ema"]

    _rewrite(tmp_path / "old" / "last.pt", as_before_the_setting)
    _rewrite(tmp_path / "ema" / "last.pt", lambda payload: payload["state"].pop("average"))
    assert [h["epoch"] for h in train(None, None, resume=tmp_path / "old", overrides={"epochs": 2}).history] == [1, 2]
    assert [h["epoch"] for h in train(None, None, resume=tmp_path / "ema", overrides={"epochs": 2}).history] == [1, 2]
    assert int(read_payload(tmp_path / "ema" / "last.pt")["state"]["average"]["n_averaged"]) == 3  # begun anew


def test_averaging_never_changes_the_training_itself(tiny_data, tmp_path):
    config = load_model_config("crnn-tiny")
    default = train(tiny_data, tmp_path / "default", config, TrainConfig(epochs=2, **TINY))
    zero = train(tiny_data, tmp_path / "zero", config, TrainConfig(epochs=2, ema=0.0, **TINY))
    averaged = train(tiny_data, tmp_path / "ema", config, TrainConfig(epochs=2, ema=0.9, **TINY))
    assert TrainConfig().ema == 0.999  # on by default (issue 15)
    losses = [[h["train_loss"] for h in r.history] for r in (default, zero, averaged)]
    assert losses[0] == losses[1] == losses[2]  # bit for bit: the average is never trained
    raw = [read_payload(tmp_path / name / "last.pt")["state_dict"] for name in ("default", "zero", "ema")]
    assert all(torch.equal(raw[0][k], raw[1][k]) and torch.equal(raw[0][k], raw[2][k]) for k in raw[0])
    assert read_payload(tmp_path / "zero" / "last.pt")["state"]["average"] is None


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "inf", "1.5"])
def test_bad_ema_values_are_usage_errors(tiny_data, tmp_path, capfd, value):
    code, out, err = run_cli("train", tiny_data, "--ema", value, "--out", tmp_path / "run", capfd=capfd)
    line = one_clean_line(err)
    assert code == 2 and "--ema must be a number >= 0 and < 1" in line, line
    assert len([x for x in err.splitlines() if x.strip()]) == 1
    assert not (tmp_path / "run").exists()


def test_a_bad_ema_in_a_config_file_names_the_file_and_key(tiny_data, tmp_path, capfd):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"ema": 2}}))
    code, out, err = run_cli("train", tiny_data, "--config", config, "--out", tmp_path / "run", capfd=capfd)
    line = one_clean_line(err)
    assert code == 1 and f"{config}: train.ema must be a number >= 0 and < 1, not 2" in line, line
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_decay(tiny_data, tmp_path, capfd):
    run = tmp_path / "run"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(epochs=1, ema=0.5, **TINY))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    code, out, err = run_cli("train", "--resume", copy, "--ema", "0.9", capfd=capfd)
    assert code == 2 and "--ema: a resumed run keeps its ema (0.5)" in one_clean_line(err)

"""Settings a hostile user gives: flags and config files get the same checks, runs end within
their budget, a resumed run keeps what it cannot change, nothing non-finite is saved or written."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crnn_core.config import ModelConfig, TrainConfig, load_model_config, resolve_run_config
from crnn_core.errors import ConfigError, UsageError
from crnn_core.modelfile import read_payload
from crnn_core.outputs import dumps, finite
from crnn_core.train import Clock, Trainer, train

TINY = dict(epochs=1, batch_size=16, threads=2)


def run_cli(*args, capfd) -> tuple[int, str, str]:
    """The real entry point, in this process (no torch start-up per case): exit code, stdout, stderr."""
    import torch

    from crnn_core.cli import app, state

    argv, sys.argv, threads = sys.argv, ["crnn", *map(str, args)], torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_info:
            app.main()
    finally:
        sys.argv, state.debug = argv, False
        torch.set_num_threads(threads)  # a fuzzed --threads must not slow the tests that follow
    out, err = capfd.readouterr()
    return exit_info.value.code or 0, out, err


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def one_clean_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "unexpected" not in err, err
    assert lines and lines[-1].startswith("crnn: error: "), err
    return lines[-1]


# -- config files: each value checked, named by file and key -----------------------------------
@pytest.mark.parametrize("section, value, named", [
    ({"train": {"epochs": -5}}, "train.epochs must be an integer >= 1", "-5"),
    ({"train": {"batch_size": 0}}, "train.batch_size must be an integer >= 1", "0"),
    ({"train": {"epochs": "3"}}, "train.epochs must be an integer", "'3'"),
    ({"train": {"lr": -1}}, "train.lr must be a number > 0", "-1"),
    ({"train": {"lr": float("inf")}}, "train.lr must be a number > 0", "inf"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number", "'fast'"),
    ({"train": {"grad_clip": -1}}, "train.grad_clip must be a number > 0", "-1"),
    ({"train": {"seed": -1}}, "train.seed must be an integer >= 0", "-1"),
    ({"train": {"threads": 0}}, "train.threads must be an integer >= 1", "0"),
    ({"model": {"backbone": [{"conv": 16.9}, {"pool": 2}]}}, "conv must be an integer", "16.9"),
    ({"model": {"backbone": [{"conv": 16, "bn": "false"}, {"pool": 2}]}}, "bn must be true or false", "'false'"),
    ({"model": {"input": {"height": 100000}, "backbone": [{"conv": 8}]}}, "input.height must be an integer", "100000"),
    ({"model": {"rnn": {"layers": "2"}, "backbone": [{"conv": 8}]}}, "rnn.layers must be an integer", "'2'"),
])
def test_config_file_values_are_checked_with_the_key_and_file_named(tiny_data, tmp_path, capfd, section, value,
                                                                    named):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(section))
    code, out, err = run_cli("train", tiny_data, "--config", config, "--out", tmp_path / "run", capfd=capfd)
    line = one_clean_line(err)
    assert code == 1 and str(config) in line and value in line and named in line, line
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_option_overrides_the_same_setting_in_a_config_file(tiny_data, tmp_path, capfd):
    # `crnn train --config run/config.yaml --epochs 1` was an "unexpected TypeError" (a key given twice)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"epochs": 3, "lr": 0.01, "threads": 2}}))
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--config", config, "--epochs", "1",
                             "--out", tmp_path / "run", capfd=capfd)
    assert code == 0, err
    settings = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert (settings["epochs"], settings["lr"]) == (1, 0.01)


def test_weight_decay_flag_reaches_the_optimizer_and_config(tiny_data, tmp_path, capfd):
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--epochs", "1", "--threads", "2",
                             "--weight-decay", "0.02", "--out", tmp_path / "run", capfd=capfd)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["weight_decay"] == 0.02
    groups = read_payload(tmp_path / "run" / "last.pt")["state"]["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.02] * len(groups)  # not the default (0.05)


def test_yaml_scientific_notation_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads `1e-3` as a string; a user meant the number.
    assert TrainConfig.from_dict({"lr": "1e-3"}).lr == 0.001
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        TrainConfig.from_dict({"lr": "1e-3x"})


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "inf", "--lr must be a number > 0 and <= 10, not inf"),
    ("--lr", "nan", "--lr must be a number > 0"),
    ("--lr", "0", "--lr must be a number > 0"),
    ("--seed", "-1", "--seed must be an integer >= 0"),
    ("--height", "100000", "--height must be an integer >= 8 and <= 1024, not 100000"),
    ("--freeze-backbone", "-1", "--freeze-backbone must be a number of epochs (>= 0) or 'all', not -1"),
    ("--max-minutes", "inf", "--max-minutes must be a number >= 0"),
    ("--weight-decay", "2", "--weight-decay must be a number >= 0 and <= 1, not 2"),
    ("--weight-decay", "nan", "--weight-decay must be a number >= 0 and <= 1, not nan"),
])
def test_bad_flag_values_are_usage_errors_naming_the_flag(tiny_data, tmp_path, capfd, flag, value, expected):
    code, out, err = run_cli("train", tiny_data, flag, value, "--out", tmp_path / "run", capfd=capfd)
    line = one_clean_line(err)
    assert code == 2 and expected in line, line
    assert not (tmp_path / "run").exists()


def test_a_huge_model_is_refused_before_it_is_built():
    config = load_model_config("crnn-fast")
    raw = config.to_dict()
    # no pooling of the height: a 1024 px input keeps 1024 rows per column for the LSTM
    raw["backbone"] = [{"conv": 512}, {"pool": [1, 2]}]
    raw["input"]["height"] = 1024
    with pytest.raises(ConfigError, match="parameters at height 1024 px, more than the 100,000,000"):
        ModelConfig.from_dict(raw, source="big.yaml")


def test_an_allocation_failure_is_one_line_naming_the_run(tiny_data, tmp_path, monkeypatch, capfd):
    def fail(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 98765432100 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Trainer, "fit", fail)
    code, out, err = run_cli("train", tiny_data, "--out", tmp_path / "run", "--epochs", "1", capfd=capfd)
    line = one_clean_line(err)
    assert code == 1 and "out of memory" in line and str(tmp_path / "run") in line and "--batch-size" in line


# -- the run folder ------------------------------------------------------------------------------
def test_a_folder_holding_a_model_is_not_replaced_without_force(tiny_data, tiny_model, tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_model, run / "best.pt")  # an earlier best.pt, no last.pt
    before = (run / "best.pt").read_bytes()
    code, out, err = run_cli("train", tiny_data, "--out", run, "--epochs", "1", "--model", "crnn-tiny", capfd=capfd)
    line = one_clean_line(err)
    assert code == 1 and "already holds a model (best.pt)" in line and "--force" in line
    assert (run / "best.pt").read_bytes() == before
    code, out, err = run_cli("train", tiny_data, "--out", run, "--epochs", "1", "--model", "crnn-tiny", "--force",
                             capfd=capfd)
    assert code == 0, err
    assert (run / "best.pt").read_bytes() != before


# -- resume keeps what it cannot change -----------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**TINY))
    return run


@pytest.mark.parametrize("args, named", [
    (["--model", "crnn-small"], "--model"),
    (["--height", "40"], "--height"),
    (["--head", "softmax"], "--head"),
    (["--lr", "0.01"], "--lr: a resumed run keeps its lr (0.002)"),
    (["--batch-size", "4"], "--batch-size: a resumed run keeps its batch_size (16)"),
    (["--seed", "3"], "--seed"),
])
def test_resume_refuses_what_it_would_ignore(finished_run, tmp_path, capfd, args, named):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    code, out, err = run_cli("train", "--resume", run, *args, capfd=capfd)
    line = one_clean_line(err)
    assert code == 2 and named in line, line


def test_resume_refuses_a_config_file_that_changes_the_model_or_the_lr(finished_run, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"lr": 0.5}}))
    code, out, err = run_cli("train", "--resume", run, "--config", config, capfd=capfd)
    assert code == 2 and f"{config}: train.lr: a resumed run keeps its lr" in one_clean_line(err)
    config.write_text(yaml.safe_dump({"model": load_model_config("crnn-tiny").to_dict()}))
    code, out, err = run_cli("train", "--resume", run, "--config", config, capfd=capfd)
    assert code == 2 and "model: section: --resume takes the architecture" in one_clean_line(err)


def test_resume_takes_what_it_can_change_and_equal_values(finished_run):
    payload = {"config": load_model_config("crnn-tiny").to_dict(),
               "train": {"config": TrainConfig(**TINY).to_dict()}}
    model, settings = resolve_run_config(train_flags={"epochs": 4, "lr": 0.002, "max_minutes": 1.5},
                                         checkpoint=payload)
    assert (settings.epochs, settings.lr, settings.max_minutes, settings.batch_size) == (4, 0.002, 1.5, 16)
    assert model.name == "crnn-tiny"
    with pytest.raises(UsageError):
        resolve_run_config(model="crnn-small", checkpoint=payload)


# -- the time budget -------------------------------------------------------------------------------
def test_the_clock_counts_time_before_a_resume():
    clock = Clock(budget=60.0, before=45.0)
    assert 0.75 <= clock.progress() < 0.8
    assert not clock.over() and clock.over(reserve=20.0)
    assert Clock(None, 1e9).progress() == 0.0 and not Clock(None, 1e9).over()


def test_a_budget_bounds_the_whole_run(tiny_data, tmp_path):
    budget_minutes = 0.1
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"),
                   TrainConfig(epochs=10_000, batch_size=16, threads=2, max_minutes=budget_minutes, patience=10_000))
    assert result.stop_reason == f"time budget of {budget_minutes:g} min reached"
    # loading, every step, the last validation and the calibration: within the budget, give or
    # take what a loaded machine adds to the estimate of the last validation (before: 42 s for 6)
    assert result.seconds <= budget_minutes * 60 + 2.5, result.seconds


class _FakeTime:
    """The training loop's clock, moved on by a fixed 20 ms each time it is read: a loaded
    machine cannot make the run's timing, and so this test, vary."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.02
        return self.now


def test_a_resumed_budgeted_run_keeps_its_budget_and_its_decay(tiny_data, tmp_path, monkeypatch):
    import crnn_core.train as train_module

    settings = TrainConfig(epochs=10_000, batch_size=16, threads=2, max_minutes=0.1, patience=10_000,
                           warmup_steps=0)
    run = tmp_path / "run"
    lrs: list[float] = []

    def on_event(kind, info):
        if kind == "step":
            lrs.append(info["lr"])

    monkeypatch.setattr(train_module, "time", _FakeTime())
    first = train(tiny_data, run, load_model_config("crnn-tiny"), settings, on_event=on_event,
                  should_stop=lambda: train_module.time.now > 4.0)  # two thirds of the 6 s budget
    assert first.stop_reason.startswith("interrupted")
    before = list(lrs)
    lrs.clear()
    monkeypatch.setattr(train_module, "time", _FakeTime())  # a new process: its clock starts anew
    resumed = train(None, None, resume=run, on_event=on_event)
    # The schedule goes on decaying from where it stopped; it does not jump back to the peak.
    assert lrs[0] <= before[-1] + 1e-12 < settings.lr
    # One budget for both processes together: 6 s in all, and a last step, validation and
    # calibration (the bug gave the resumed run a fresh budget: 4 + 6 s).
    assert resumed.stop_reason == "time budget of 0.1 min reached"
    assert first.seconds < resumed.seconds <= 0.1 * 60 + 1.0, (first.seconds, resumed.seconds)


# -- nothing non-finite is saved or written as JSON -----------------------------------------------
def test_non_finite_weights_are_never_saved_as_best(tiny_data, tmp_path, monkeypatch):
    real_validate = Trainer.validate

    def poisoned_validate(self):
        next(self.average.model.parameters()).data.fill_(math.nan)  # the weights validated and kept
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", poisoned_validate)
    warnings = []
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(**TINY),
                   on_event=lambda kind, info: warnings.append(info["message"]) if kind == "warning" else None)
    assert not (tmp_path / "run" / "best.pt").exists()
    assert any("not finite" in w for w in warnings)
    assert result.best_epoch == 1  # the epoch counted, its weights not kept
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        strict_loads(line)


def test_strict_json_maps_non_finite_numbers_to_null():
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": (2.0, math.nan)}, "e": "nan"}
    assert finite(value) == {"a": None, "b": [None, None, 1.5], "c": {"d": [2.0, None]}, "e": "nan"}
    assert strict_loads(dumps(value)) == finite(value)


def test_data_check_does_not_import_torch(tiny_data):
    code = ("import sys\nfrom crnn_core.cli import app\nsys.argv = ['crnn', 'data', 'check', sys.argv[1]]\n"
            "try:\n    app.main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(tiny_data)], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr



# -- the class: any option value, any config file value -----------------------------------------
# Types, signs, zero, huge, NaN/inf, empty and odd spellings; valid ones too, so that a run happens.
ODD_VALUES = ["0", "-1", "1", "2", "8", "33", "1025", "1000000000", "-1000000000", "nan", "inf", "-inf", "",
              "abc", "1e-3", "3.5", "0x10", " 3", "1e400", "all", "cuda", "tpu", "cuda:7", "cpu"]
TRAIN_OPTIONS = ["--epochs", "--max-minutes", "--batch-size", "--lr", "--height", "--max-length", "--device",
                 "--seed", "--freeze-backbone", "--patience", "--threads", "--augment", "--precision", "--head", "--ema",
                 "--weight-decay", "--width-scale"]
YAML_VALUES = [-5, 0, 1, 2, 2.5, 1e12, "3", "fast", "", True, False, None, [], {}, [1, 2], math.nan, math.inf,
               -math.inf, "1e-3", "all", "heavy", "bf16"]


def _check_outcome(code: int, err: str, run: Path) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    if code:
        assert err.strip().splitlines()[-1].startswith(("crnn: error: ", "Error", "Try ", "╰")), err
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            strict_loads(line)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.lists(st.tuples(st.sampled_from(TRAIN_OPTIONS), st.sampled_from(ODD_VALUES)), min_size=1,
                       max_size=2, unique_by=lambda pair: pair[0]))
def test_any_train_option_value_gets_a_clean_answer(tiny_data, tmp_path_factory, capfd, choice):
    run = tmp_path_factory.mktemp("fuzz") / "run"
    args = ["train", tiny_data, "--model", "crnn-tiny", "--out", run]
    given_options = {flag for flag, _ in choice}
    for flag, value in choice:
        args += [flag, value]
    # keep the valid cases short: one epoch, a few seconds
    args += [] if "--epochs" in given_options else ["--epochs", "1"]
    args += [] if "--max-minutes" in given_options else ["--max-minutes", "0.05"]
    code, out, err = run_cli(*args, capfd=capfd)
    _check_outcome(code, err, run)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train_values=st.dictionaries(st.sampled_from(sorted(TrainConfig().to_dict())), st.sampled_from(YAML_VALUES),
                                    max_size=3),
       model_change=st.one_of(st.none(), st.tuples(st.sampled_from(["height", "max_width", "width_scale", "hidden", "layers",
                                                                    "conv", "pool", "bn", "head"]),
                                                   st.sampled_from(YAML_VALUES))))
def test_any_config_file_value_gets_a_clean_answer(tiny_data, tmp_path_factory, capfd, train_values, model_change):
    folder = tmp_path_factory.mktemp("fuzzcfg")
    run, config = folder / "run", folder / "c.yaml"
    content: dict = {"train": dict(train_values, epochs=1, max_minutes=0.05)} if "epochs" not in train_values \
        else {"train": dict(train_values, max_minutes=0.05)}
    if model_change is not None:
        model = load_model_config("crnn-tiny").to_dict()
        key, value = model_change
        if key in ("height", "max_width", "width_scale"):
            model["input"][key] = value
        elif key in ("hidden", "layers"):
            model["rnn"][key] = value
        elif key in ("conv", "pool", "bn"):
            model["backbone"][0] = {"conv": 8, key: value} if key != "conv" else {"conv": value}
        else:
            model["head"] = value
        content["model"] = model
    config.write_text(yaml.safe_dump(content))
    code, out, err = run_cli("train", tiny_data, "--config", config, "--out", run, capfd=capfd)
    _check_outcome(code, err, run)


def test_dropout_flag_reaches_the_config_and_the_training_model(tiny_data, tmp_path, capfd, monkeypatch):
    seen = []
    real_epoch = Trainer.train_epoch

    def recording_epoch(self, epoch):
        seen.append(self.model.dropout.p)
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", recording_epoch)
    code, out, err = run_cli("train", tiny_data, "--model", "crnn-tiny", "--epochs", "1", "--threads", "2",
                             "--dropout", "0.3", "--out", tmp_path / "run", capfd=capfd)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["dropout"] == 0.3
    assert seen == [0.3]
    code, out, err = run_cli("train", tiny_data, "--dropout", "1", "--out", tmp_path / "bad", capfd=capfd)
    assert code == 2 and "--dropout must be a number >= 0 and < 1, not 1" in one_clean_line(err)


def test_dropout_acts_in_training_only_and_adds_no_weights():
    import torch

    from crnn_core.model import CRNN

    torch.manual_seed(0)
    plain = CRNN(load_model_config("crnn-tiny"), 5)
    dropped = CRNN(load_model_config("crnn-tiny"), 5)
    dropped.load_state_dict(plain.state_dict())  # the same keys: a model file does not change
    dropped.dropout.p = 0.5
    images = torch.rand(2, 1, 32, 64) * 2 - 1
    plain.train(), dropped.train()
    assert not torch.allclose(plain(images), dropped(images))
    plain.eval(), dropped.eval()
    assert torch.equal(plain(images), dropped(images))

"""Faults during training: Ctrl-C, kill -9, a full disk or read-only folder, non-finite losses."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from crnn_core import heads, modelfile
from crnn_core import train as train_module
from crnn_core.config import TrainConfig, load_model_config
from crnn_core.errors import CrnnError, WriteError
from crnn_core.modelfile import load_model, read_payload
from crnn_core.train import train

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
SETTINGS = dict(epochs=3, seed=3, batch_size=16, threads=2)
CLI_SETTINGS = ["--model", "crnn-tiny", "--epochs", "3", "--seed", "3", "--batch-size", "16", "--threads", "2"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_result(run: Path, reference: list[dict]) -> None:
    got = metrics(run)
    assert [m["epoch"] for m in got] == [m["epoch"] for m in reference]
    for a, b in zip(got, reference):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_cer"] == pytest.approx(b["val_cer"], abs=1e-6)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-6)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> list[dict]:
    """The uninterrupted run every interrupted one must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**SETTINGS))
    return metrics(run)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- Ctrl-C ------------------------------------------------------------------------------------
def test_sigint_saves_and_cli_resume_reaches_the_uninterrupted_result(tiny_data, tmp_path, reference):
    run = tmp_path / "run"
    process = subprocess.Popen([*CRNN, "train", str(tiny_data), *CLI_SETTINGS, "--out", str(run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "config.yaml", process)  # written once data is loaded, just before the first step
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "stopped: interrupted; continue with --resume" in err
    assert out.strip() in (str(run / "best.pt"), str(run / "last.pt"))
    saved = read_payload(run / "last.pt")
    assert saved["state"]["epoch"] < SETTINGS["epochs"]  # really cut short
    resumed = subprocess.run([*CRNN, "train", "--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run, reference)


def test_second_ctrl_c_aborts_at_once(tiny_data, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([*CRNN, "train", str(tiny_data), *CLI_SETTINGS, "--epochs", "50", "--out", str(run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "config.yaml", process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    # 130: aborted. 0 or -SIGINT: the clean stop won the race and the second signal came as the
    # process was finishing (during interpreter shutdown the default handler is back).
    assert process.returncode in (0, 130, -signal.SIGINT), err
    assert "Traceback" not in err
    if process.returncode == 130:
        assert "aborted: last.pt holds the last saved checkpoint" in err
    check_run_files(run)  # an abort mid-write leaves whole files too


def test_abort_message_survives_a_signal_inside_a_rich_print():
    # The race CI once lost: the second Ctrl-C landed while Rich was rendering the summary table,
    # the "aborted" line went to Rich's buffer, and os._exit dropped it. Inside Rich's buffer on
    # purpose, the message must still reach stderr.
    script = textwrap.dedent("""
        from crnn_core.cli import render
        display = render.TrainDisplay()
        with render.err:
            render.err.print("half a table")
            display._abort_now(2, None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "aborted: last.pt holds the last saved checkpoint" in done.stderr


# -- kill -9 -------------------------------------------------------------------------------------
def check_run_files(run: Path) -> dict[str, object]:
    """Whatever a kill left must be complete: loadable checkpoints, whole JSON lines."""
    state: dict[str, object] = {}
    if (run / "last.pt").exists():
        payload = read_payload(run / "last.pt")
        assert payload["format"] == "crnn-checkpoint" and "state" in payload
        state["last_epoch"] = payload["state"]["epoch"]
    if (run / "best.pt").exists():
        assert load_model(run / "best.pt").alphabet.chars
        state["best"] = True
    if (run / "metrics.jsonl").exists():
        raw = (run / "metrics.jsonl").read_text()
        assert raw == "" or raw.endswith("\n")
        epochs = [json.loads(line)["epoch"] for line in raw.splitlines()]
        assert epochs == list(range(1, len(epochs) + 1))
        state["metrics_epochs"] = len(epochs)
    return state


def test_sigkill_at_random_moments_then_resume_reaches_the_same_result(tiny_data, tmp_path, reference):
    run = tmp_path / "run"
    rng = random.Random(20240605)
    rounds = []
    for attempt in range(3):
        args = ["train", "--resume", str(run)] if (run / "last.pt").exists() else \
            ["train", str(tiny_data), *CLI_SETTINGS, "--out", str(run)]
        process = subprocess.Popen([*CRNN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(1.0, 6.0)
        time.sleep(delay)
        process.kill()
        process.wait(timeout=60)
        rounds.append((round(delay, 2), process.returncode, check_run_files(run)))
    print("kill rounds (delay s, exit code, files):", rounds)
    # Finish from whatever the kills left: the last complete checkpoint, or from scratch.
    if (run / "last.pt").exists():
        train(None, None, resume=run)
    else:
        train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**SETTINGS))
    assert not list(run.glob(".*.tmp"))  # resume removed what a killed write left
    assert_same_result(run, reference)


def test_sigkill_during_writes_always_leaves_a_whole_file(tmp_path):
    """Kill a process that does nothing but rewrite one file, at random moments."""
    target = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import sys
        from crnn_core.modelfile import atomic_write_bytes
        size = 8 * 1024 * 1024
        i = 0
        while True:
            i += 1
            atomic_write_bytes({str(target)!r}, i.to_bytes(8, "big") + bytes([i % 256]) * size)
            if i == 1:
                print("ready", flush=True)
    """)
    rng = random.Random(7)
    versions = []
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.5))
        process.kill()
        process.wait(timeout=30)
        data = target.read_bytes()
        version = int.from_bytes(data[:8], "big")
        assert len(data) == 8 + 8 * 1024 * 1024 and data[8:] == bytes([version % 256]) * (8 * 1024 * 1024)
        versions.append(version)
    print("versions found after each kill:", versions)


# -- full disk, read-only folder --------------------------------------------------------------------
def _break_saving_after_epoch_1(monkeypatch, failure):
    """Returns an on_event callback that makes every file write fail from epoch 2 on."""
    real_fsync, real_mkstemp = os.fsync, modelfile.tempfile.mkstemp
    broken = {"on": False}

    def fsync(fd):
        if broken["on"] and failure == errno.ENOSPC:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    def mkstemp(*args, **kwargs):
        if broken["on"] and failure == errno.EROFS:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(modelfile.os, "fsync", fsync)
    monkeypatch.setattr(modelfile.tempfile, "mkstemp", mkstemp)

    def on_event(kind, info):
        if kind == "step" and info["epoch"] == 2:
            broken["on"] = True

    return on_event, broken


@pytest.mark.parametrize("failure,text", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EROFS, "Read-only file system")])
def test_failed_save_is_a_clear_error_and_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch,
                                                                          failure, text):
    # Simulated: the disk is full (fsync fails after the data went to the temporary file) or the
    # folder turned read-only (the temporary file cannot be created) during epoch 2.
    run = tmp_path / "run"
    saved = {}

    def keep_epoch_1(kind, info):
        if kind == "epoch" and info["epoch"] == 1:
            saved.update(snapshot(run))
        on_event(kind, info)

    on_event, broken = _break_saving_after_epoch_1(monkeypatch, failure)
    with pytest.raises(WriteError, match=f"run/(best|last).pt: cannot write: {text} "
                                         r"\(the previous version is unchanged\)"):
        train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**dict(SETTINGS, epochs=2)),
              on_event=keep_epoch_1)
    assert broken["on"]
    assert snapshot(run) == saved  # every file exactly as after epoch 1, no temporary file left
    monkeypatch.undo()
    result = train(None, None, resume=run)  # and the run goes on once the disk is fixed
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_cli_failed_save_is_one_line(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    script = textwrap.dedent(f"""
        import errno, os, sys
        from crnn_core import modelfile
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        modelfile.os.fsync = fsync
        sys.argv = ["crnn", "eval", "codes-small", {str(Path(__file__).parents[1] / "sample_data" / "sidecar")!r},
                    "--json", {str(target)!r}]
        from crnn_core.cli.app import main
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"crnn: error: {target}: cannot write: No space left on device "
                                              "(the previous version is unchanged)")
    assert "Traceback" not in result.stderr and target.read_text() == "old"


def _make_read_only(folder: Path) -> str | None:
    """Really read-only, even for root where possible: chmod, else the immutable attribute."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return "chmod"
    probe.unlink()
    folder.chmod(0o755)
    try:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            return "chattr"
    except FileNotFoundError:  # no e2fsprogs
        pass
    return None


def _make_writable(folder: Path, how: str | None) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_really_read_only_run_folder(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**dict(SETTINGS, epochs=1)))
    before = snapshot(run)
    how = _make_read_only(run)
    if how is None:
        pytest.skip("cannot make a folder read-only here (root without chattr support)")
    try:
        with pytest.raises(WriteError, match="run/config.yaml: cannot write: (Permission denied|Operation not permitted)"):
            train(None, None, resume=run, overrides={"epochs": 2})
    finally:
        _make_writable(run, how)
    assert snapshot(run) == before


# -- non-finite losses -------------------------------------------------------------------------------
_real_ctc_loss = heads.CTCHead.loss


class _PoisonedCTC:
    """The real CTC loss, made non-finite (or given a NaN gradient) on chosen calls."""

    calls = 0
    nan_loss: set[int] = set()
    nan_grad: set[int] = set()

    @staticmethod
    def loss(head, log_probs, *args):
        self = _PoisonedCTC
        self.calls += 1
        loss = _real_ctc_loss(head, log_probs, *args)
        if self.calls in self.nan_loss:
            return loss * float("nan")
        if self.calls in self.nan_grad:  # forward finite, backward NaN: d sqrt(x)/dx at 0 is inf, times 0
            return loss + torch.sqrt(log_probs.sum() * 0.0)
        return loss


@pytest.fixture
def poisoned(monkeypatch):
    _PoisonedCTC.calls = 0
    _PoisonedCTC.nan_loss, _PoisonedCTC.nan_grad = set(), set()
    monkeypatch.setattr(heads.CTCHead, "loss", _PoisonedCTC.loss)
    return _PoisonedCTC


def test_single_nan_loss_and_nan_gradient_batches_are_skipped_and_counted(tiny_data, tmp_path, poisoned):
    poisoned.nan_loss, poisoned.nan_grad = {2}, {5}  # 3 batches an epoch: epoch 1 step 2, epoch 2 step 2
    result = train(tiny_data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(**dict(SETTINGS, epochs=2)))
    assert result.stop_reason == "completed all epochs"
    assert [h["skipped_batches"] for h in result.history] == [1, 1]
    weights = load_model(tmp_path / "run" / "best.pt").model.state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights)


def test_repeated_non_finite_losses_stop_with_a_clear_message_keeping_the_best(tiny_data, tmp_path, poisoned,
                                                                              monkeypatch):
    monkeypatch.setattr(train_module, "MAX_NONFINITE_STREAK", 4)
    poisoned.nan_loss = set(range(4, 1000))  # fine in epoch 1, broken from then on
    run = tmp_path / "run"
    after_epoch_1 = {}

    def on_event(kind, info):
        if kind == "epoch" and info["epoch"] == 1:
            after_epoch_1.update(snapshot(run))

    with pytest.raises(CrnnError, match=r"training stopped at epoch 3, step 1: 4 batches in a row gave a "
                                        r"non-finite loss or gradient .*; best.pt from epoch 1 is kept"):
        train(tiny_data, run, load_model_config("crnn-tiny"), TrainConfig(**dict(SETTINGS, epochs=5)),
              on_event=on_event)
    assert (run / "best.pt").read_bytes() == after_epoch_1["best.pt"]
    assert [m["skipped_batches"] for m in metrics(run)] == [0, 3]
    assert load_model(run / "best.pt").train["best_epoch"] == 1

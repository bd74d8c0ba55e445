"""Two training processes under torchrun (gloo on CPU), launched the way users do: `crnn train --nproc 2`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
SIDECAR = Path(__file__).resolve().parents[1] / "sample_data" / "sidecar"  # 24 crops: plates, meters, codes


def crnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_process_run(tiny_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run = tmp_path_factory.mktemp("ddp") / "run"
    # Fine-tuned from the bundled model, so that the evaluation check below compares real
    # readings (a model trained from scratch for a few steps reads every image as empty).
    result = crnn("train", tiny_data, "--val", SIDECAR, "--nproc", "2", "--init", "codes-small", "--lr", "1e-4",
                  "--epochs", "1", "--batch-size", "8", "--out", run)
    assert result.returncode == 0, result.stderr
    return run, result


def test_ranks_stay_in_sync_and_write_one_set_of_files(two_process_run):
    run, result = two_process_run
    assert result.stdout.splitlines() == [str(run / "best.pt")]  # one result line, from rank 0
    sync = [line for line in result.stderr.splitlines() if "weights digest per rank" in line]
    assert len(sync) == 1 and sync[0].startswith("2 processes in sync"), result.stderr
    digests = sync[0].split("rank ")[1].split(", ")
    assert len(digests) == 2 and digests[0] == digests[1]
    assert sum(line.startswith("epoch   1") for line in result.stderr.splitlines()) == 1  # rank 0 logs alone
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "curves.png", "last.pt", "metrics.jsonl"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1] and history[0]["processes"] == 2


def test_the_result_evaluates_like_a_single_process_model(two_process_run):
    run, _ = two_process_run
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    report = crnn("eval", run / "best.pt", SIDECAR, "--json", "-")
    assert report.returncode == 0, report.stderr
    measured = json.loads(report.stdout)
    # Validation was split over the two ranks and its counts summed; one process reading the
    # saved model over the whole validation set must find exactly the same.
    assert measured["samples"] == 24
    assert measured["accuracy"] > 0.5  # real readings, not an empty model's
    assert measured["cer"] == pytest.approx(history[0]["val_cer"], abs=1e-12)
    assert measured["accuracy"] == pytest.approx(history[0]["val_accuracy"], abs=1e-12)


def test_a_distributed_run_resumes(two_process_run, tmp_path):
    import shutil

    run, _ = two_process_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = crnn("train", "--resume", copy, "--epochs", "2", "--nproc", "2")
    assert result.returncode == 0, result.stderr
    history = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert "2 processes in sync" in result.stderr


def test_two_processes_average_the_unwrapped_model(tiny_data, tmp_path):
    import torch

    from crnn_core.modelfile import read_payload

    run = tmp_path / "run"
    result = crnn("train", tiny_data, "--model", "crnn-tiny", "--nproc", "2", "--ema", "0.9", "--epochs", "1",
                  "--batch-size", "8", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "2 processes in sync" in result.stderr
    last = read_payload(run / "last.pt")
    best = read_payload(run / "best.pt")["state_dict"]
    average = last["state"]["average"]
    assert int(average["n_averaged"]) == 3  # 48 images, batches of 8, shared by 2: 3 steps
    # weights named as the model's own (no DDP "module." of its own), equal to best.pt, unlike the raw ones
    assert all(torch.equal(best[k], average["module." + k]) for k in best)
    assert any(not torch.equal(best[k], last["state_dict"][k]) for k in best if best[k].is_floating_point())

"""Confidence calibration: the isotonic fit, its storage in the model file, predict's flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crnn_core.calibration import Calibration, fit
from crnn_core.decode import Decoded
from crnn_core.modelfile import load_model

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


def test_the_fit_is_monotone_smoothed_and_close_to_the_truth():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 5000)
    correct = rng.uniform(0, 1, 5000) < confidence**2  # overconfident raw scores: P(right) = c^2
    calibration = fit(confidence.tolist(), correct.tolist())
    assert all(a <= b for a, b in zip(calibration.y, calibration.y[1:]))
    assert 0.0 < calibration(0.0) and calibration(1.0) < 1.0  # smoothed: never certain
    for c in (0.2, 0.5, 0.7, 0.9):
        assert calibration(c) == pytest.approx(c**2, abs=0.08)
    assert sum(b["lines"] for b in calibration.table) == 5000
    assert Calibration.from_dict(calibration.to_dict()).y == calibration.y
    assert Calibration.from_dict(None) is None


def test_no_errors_seen_still_leaves_room_for_one():
    calibration = fit([0.9, 0.95, 0.99], [True, True, True])
    assert calibration(0.99) == pytest.approx(4 / 5)  # (3 right + 1) / (3 + 2)


def test_training_stores_a_calibration_and_predict_flags_low_lines(tiny_model, tiny_data):
    loaded = load_model(tiny_model)
    stored = loaded.train["calibration"]
    assert stored["samples"] == loaded.train["val_samples"] and stored["score"] == "weakest"
    images = sorted(str(p) for p in (tiny_data / "val").glob("*.png"))[:4]
    crnn = [sys.executable, "-m", "crnn_core.cli.app", "predict", "-m", str(tiny_model), *images, "-f", "jsonl"]
    result = subprocess.run([*crnn, "--min-confidence", "1", "--low-exit-code", "3"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 3, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["low_confidence"] and 0.0 < r["p_correct"] < 1.0 for r in rows)
    assert "4 line(s) below --min-confidence 1 (calibrated chance of being right)" in result.stderr
    result = subprocess.run([*crnn, "--min-confidence", "0", "--low-exit-code", "3"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and not any(json.loads(line)["low_confidence"] for line in result.stdout.splitlines())


def test_a_map_reads_the_score_it_was_fitted_on():
    # A reading whose best path is improbable (a long line) but whose weakest character is sure.
    reading = Decoded((1, 2), confidence=0.1, weakest=0.95)
    new = fit([0.1, 0.95], [False, True])
    assert new.score == "weakest" and new.p_correct(reading) == pytest.approx(new(0.95))
    old_file = {k: v for k, v in new.to_dict().items() if k != "score"}  # written before the score was stored
    old = Calibration.from_dict(old_file)
    assert old.score == "best-path" and old.p_correct(reading) == pytest.approx(old(0.1))
    assert old.p_correct(reading) < new.p_correct(reading)
    assert new.p_correct(Decoded((), 0.0, matched=False)) == 0.0  # a constraint's non-match
    assert Calibration.from_dict(dict(new.to_dict(), score="from-the-future")) is None  # not misread


def test_calibrate_refits_a_bundled_model_on_labelled_data(tmp_path):
    from crnn_core.evaluate import calibrate, evaluate

    out = tmp_path / "codes-fast-recalibrated.pt"
    result = calibrate("codes-fast", SAMPLE / "codes", out, device="cpu")
    assert result.data == str(SAMPLE / "codes" / "val") and result.calibration.samples == 400
    report = evaluate("codes-fast", SAMPLE / "codes" / "val", device="cpu")
    assert result.accuracy == pytest.approx(report.scores.accuracy)
    before, after = load_model("codes-fast"), load_model(out)
    assert after.train["calibration"]["score"] == "weakest" and after.train["calibration"]["samples"] == 400
    for (name, a), b in zip(before.model.state_dict().items(), after.model.state_dict().values()):
        assert torch.equal(a, b), name  # only the calibration changed
    assert {k: v for k, v in after.train.items() if k != "calibration"} == \
        {k: v for k, v in before.train.items() if k != "calibration"}


def test_calibrate_never_overwrites_its_input_and_needs_an_out(tiny_model, tiny_data, tmp_path):
    def crnn(*args):
        return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=300)

    before = tiny_model.read_bytes()
    result = crnn("calibrate", tiny_model, tiny_data, "--out", tiny_model)
    assert result.returncode == 1 and "refusing to overwrite it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and tiny_model.read_bytes() == before
    result = crnn("calibrate", tiny_model, tiny_data)
    assert result.returncode == 2 and "--out" in result.stderr
    image = next((tiny_data / "val").glob("*.png"))
    result = crnn("calibrate", tiny_model, image, "--out", tmp_path / "x.pt")
    assert result.returncode == 1 and "not a labelled dataset" in result.stderr and not (tmp_path / "x.pt").exists()
    result = crnn("calibrate", tiny_model, tiny_data, "--out", tmp_path / "new.pt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "new.pt") and "on 12 lines of" in result.stderr
    assert load_model(tmp_path / "new.pt").train["calibration"]["samples"] == 12
    # An existing file is replaced only with --force; an image of the data never.
    written = (tmp_path / "new.pt").read_bytes()
    result = crnn("calibrate", tiny_model, tiny_data, "--out", tmp_path / "new.pt")
    assert result.returncode == 1 and "already exists" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and (tmp_path / "new.pt").read_bytes() == written
    assert crnn("calibrate", tiny_model, tiny_data, "--out", tmp_path / "new.pt", "--force").returncode == 0
    pixels = image.read_bytes()
    result = crnn("calibrate", tiny_model, tiny_data, "--out", image, "--force")
    assert result.returncode == 1 and "refusing to overwrite it" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and image.read_bytes() == pixels

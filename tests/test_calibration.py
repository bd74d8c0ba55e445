"""Confidence calibration: the isotonic fit, its storage in the model file, predict's flags."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from crnn_core.calibration import Calibration, fit
from crnn_core.modelfile import load_model


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
    assert stored["samples"] == loaded.train["val_samples"]
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

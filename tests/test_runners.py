"""Where the model runs: the decision table of runners.py, walked, and bad devices at the CLI."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from conftest import SAMPLE
from crnn_core.errors import CrnnError
from crnn_core.runners import BACKENDS, CPU_ONLY, NEEDS_ONNXRUNTIME, PLANS, QUANTIZE, choose_plan, model_kind

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
VAL = SAMPLE / "codes" / "val"

# (what the model is, --backend, --quantize, --device, onnxruntime installed) -> runner, or words of the error.
CASES = [
    ("bundled", "auto", None, "auto", True, "onnx-file"),  # the shipped twin: no torch import
    ("bundled", "auto", None, "cpu", False, "torch"),  # no onnxruntime: auto falls back
    ("bundled", "auto", None, "cuda", True, "torch"),  # ONNX Runtime runs on the CPU only
    ("bundled", "auto", "int8", "cpu", True, "torch-int8"),
    ("bundled", "auto", "int8", "cuda", True, "--quantize int8 runs on the CPU only (got --device cuda)"),
    ("bundled", "torch", None, "auto", True, "torch"),
    ("bundled", "torch", None, "cuda:1", True, "torch"),
    ("bundled", "onnx", None, "cpu", True, "onnx-file"),
    ("bundled", "onnx", None, "cpu", False, "onnx-file"),  # asked for: loading says onnxruntime is missing
    ("bundled", "onnx", None, "cuda", True, "--backend onnx runs on the CPU only (got --device cuda)"),
    ("bundled", "onnx", "int8", "auto", True, "onnx-export"),
    ("onnx", "auto", None, "auto", True, "onnx-file"),
    ("onnx", "torch", None, "cpu", True, "onnx-file"),  # a .onnx file has no eager weights
    ("onnx", "onnx", None, "auto", True, "onnx-file"),
    ("onnx", "auto", None, "cuda", True, "a .onnx model runs on the CPU only (got --device cuda)"),
    ("onnx", "auto", "int8", "cpu", True, "m.onnx: --quantize applies to .pt models"),
    ("pt", "auto", None, "auto", True, "torch"),
    ("pt", "auto", None, "cuda", True, "torch"),
    ("pt", "auto", "int8", "cpu", True, "torch-int8"),
    ("pt", "torch", "int8", "auto", True, "torch-int8"),
    ("pt", "onnx", None, "cpu", True, "onnx-export"),
    ("pt", "onnx", "int8", "cpu", True, "onnx-export"),
    ("pt", "onnx", "int8", "cuda:0", True, "--backend onnx runs on the CPU only (got --device cuda:0)"),
    ("pt", "tensorrt", None, "cpu", True, "unknown backend 'tensorrt' (use auto, torch, onnx)"),
    ("pt", "torch", "int4", "cpu", True, "unknown quantisation 'int4' (use int8)"),
    ("pt", "torch", None, "tpu", True, "unknown device tpu (use auto, cpu, cuda, cuda:N)"),
    ("bundled", "auto", None, "cuda:x", True, "unknown device cuda:x"),
]


@pytest.mark.parametrize("kind, backend, quantize, device, ort, expected", CASES)
def test_the_decision_table(kind, backend, quantize, device, ort, expected):
    if expected in ("torch", "torch-int8", "onnx-file", "onnx-export"):
        assert choose_plan(kind, backend, device, quantize, ort, "m.onnx") == expected
    else:
        with pytest.raises(CrnnError) as info:
            choose_plan(kind, backend, device, quantize, ort, "m.onnx")
        assert expected in str(info.value)


def test_every_request_gets_a_runner_that_can_serve_it_or_an_error():
    for kind, backend, quantize, device, ort in itertools.product(
            ("bundled", "onnx", "pt"), BACKENDS, (None, *QUANTIZE), ("auto", "cpu", "cuda", "cuda:2"), (True, False)):
        try:
            plan = choose_plan(kind, backend, device, quantize, ort)
        except CrnnError:
            assert (kind, backend, quantize) not in PLANS or device.startswith("cuda")
            continue
        assert plan in PLANS[(kind, backend, quantize)]
        assert not (plan in CPU_ONLY and device.startswith("cuda"))
        if plan in NEEDS_ONNXRUNTIME and not ort:  # only where nothing else was allowed
            assert PLANS[(kind, backend, quantize)] == (plan,)


def test_model_kind(tmp_path):
    from crnn_core.modelfile import load_model

    assert model_kind(None) == "bundled"  # codes-fast ships codes-fast.onnx
    assert model_kind("codes-fast") == "bundled"
    assert model_kind("codes-small") == "pt"  # bundled, but no twin
    assert model_kind(tmp_path / "m.onnx") == "onnx"
    assert model_kind(tmp_path / "m.pt") == "pt"
    assert model_kind(load_model("codes-small")) == "pt"


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("device, words", [
    ("tpu", "unknown device tpu (use auto, cpu, cuda, cuda:N)"),
    ("cuda", "device cuda: this torch build has no CUDA"),
])
def test_cli_bad_device_is_one_line(command, device, words):
    import torch

    if device == "cuda" and torch.backends.cuda.is_built():
        pytest.skip("this torch build has CUDA")
    args = ["predict", str(VAL / "00000.jpg")] if command == "predict" else ["eval", "codes-fast", str(VAL)]
    result = subprocess.run([*CRNN, *args, "--device", device], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"crnn: error: {words}"], result.stderr
    assert "unexpected" not in result.stderr and result.stdout == ""

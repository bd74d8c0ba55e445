"""Prediction backends: ONNX Runtime and int8 read like the eager model, through the same Recognizer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import SAMPLE
from test_cli import CRNN

pytest.importorskip("onnxruntime")

VAL = SAMPLE / "codes" / "val"


def crnn(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def val_images(count: int) -> tuple[list[str], list[str]]:
    rows = [line.split("\t") for line in (VAL / "labels.tsv").read_text(encoding="utf-8").splitlines()][:count]
    return [str(VAL / name) for name, _ in rows], [text for _, text in rows]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The ONNX cache of a bundled model goes to the temp folder: make it this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def read(recognizer, paths):
    return [(p.text, p.confidence) for p in recognizer.predict_paths(paths)]


def test_onnx_backend_reads_like_eager(private_tmp):
    from crnn_core.onnx_runner import OnnxRunner
    from crnn_core.recognizer import Recognizer

    paths, _ = val_images(24)
    eager = read(Recognizer("codes-small"), paths)
    onnx = Recognizer("codes-small", backend="onnx")
    assert isinstance(onnx.runner, OnnxRunner)
    assert onnx.runner.path.parent.parent == private_tmp  # the bundled folder is not written to
    got = read(onnx, paths)
    assert [t for t, _ in got] == [t for t, _ in eager]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, eager)) < 1e-3


def test_onnx_cache_beside_model_is_made_once(tmp_path):
    from crnn_core.config import bundled_dir
    from crnn_core.runners import resolve_runner

    model = tmp_path / "codes.pt"
    shutil.copy(Path(str(bundled_dir())) / "codes-small.pt", model)
    first = resolve_runner(model, "onnx").runner.path
    assert first.parent == tmp_path and first.suffix == ".onnx"
    stamp = first.stat().st_mtime_ns
    second = resolve_runner(model, "onnx").runner.path
    assert second == first and second.stat().st_mtime_ns == stamp  # reused, not exported again


@pytest.mark.parametrize("damage", ["cut", "foreign"])
def test_a_damaged_cache_file_is_made_again(damage, tmp_path):
    from crnn_core.config import bundled_dir
    from crnn_core.recognizer import Recognizer
    from crnn_core.runners import resolve_runner

    model = tmp_path / "codes.pt"
    shutil.copy(Path(str(bundled_dir())) / "codes-small.pt", model)
    cache = resolve_runner(model, "onnx").runner.path
    good = cache.read_bytes()
    if damage == "cut":
        bad = good[: len(good) // 3]
    else:  # a valid graph of another model (latin-print: 138 classes, not this model's 37)
        bad = (Path(str(bundled_dir())) / "latin-print.onnx").read_bytes()
    cache.write_bytes(bad)
    again = resolve_runner(model, "onnx").runner.path
    assert again == cache and cache.read_bytes() != bad  # exported again, not reused
    paths, _ = val_images(4)
    assert [t for t, _ in read(Recognizer(str(model), backend="onnx"), paths)] == \
        [t for t, _ in read(Recognizer(str(model)), paths)]


def test_exported_onnx_file_runs_directly(tmp_path):
    from crnn_core.export import export
    from crnn_core.modelfile import load_model
    from crnn_core.recognizer import Recognizer

    out = export(load_model("codes-small"), "onnx", tmp_path / "codes.onnx").path
    paths, _ = val_images(8)
    direct = Recognizer(str(out))  # a .onnx file runs in ONNX Runtime without asking
    assert direct.loaded.alphabet.chars == load_model("codes-small").alphabet.chars
    assert [t for t, _ in read(direct, paths)] == [t for t, _ in read(Recognizer("codes-small"), paths)]


def test_int8_quantizes_lstm_and_linear_and_keeps_accuracy(private_tmp):
    import torch

    from crnn_core.recognizer import Recognizer

    paths, truth = val_images(60)
    int8 = Recognizer("codes-small", quantize="int8")
    modules = list(int8.runner.module.modules())
    kinds = {type(m).__name__ for m in modules}
    assert {"LSTM", "Linear"} <= kinds
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.LSTM) for m in modules)
    assert not any(type(m) is torch.nn.Linear for m in modules)
    eager = [t for t, _ in read(Recognizer("codes-small"), paths)]
    quant = [t for t, _ in read(int8, paths)]
    agree = sum(a == b for a, b in zip(eager, quant))
    assert agree >= 0.9 * len(paths), (agree, len(paths))
    right_eager = sum(a == b for a, b in zip(eager, truth))
    right_quant = sum(a == b for a, b in zip(quant, truth))
    assert right_quant >= right_eager - 0.05 * len(paths)


def test_cli_backends_print_the_same(private_tmp):
    paths, _ = val_images(4)
    env_tmp = {"TMPDIR": str(private_tmp)}
    outputs = {}
    for args in ((), ("--backend", "onnx"), ("--backend", "onnx", "--quantize", "int8")):
        result = crnn("predict", *paths, "--format", "text", *args, env=env_tmp)
        assert result.returncode == 0, result.stderr
        outputs[args] = result.stdout
    assert outputs[("--backend", "onnx")] == outputs[()]
    assert len(outputs[("--backend", "onnx", "--quantize", "int8")].splitlines()) == 4


def test_cli_backend_errors_are_one_line(tmp_path):
    path = val_images(1)[0][0]
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not onnx")
    for args, words in ((("--backend", "onnx", "--device", "cuda"), "CPU only"),
                        (("--model", onnx_file), "not a readable ONNX file"),
                        (("--model", onnx_file, "--backend", "onnx"), "not a readable ONNX file")):
        result = crnn("predict", path, *args)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("crnn: error:") and words in lines[-1], result.stderr
        assert "Traceback" not in result.stderr


PRINTED = SAMPLE / "printed"


@pytest.mark.parametrize("name", ["codes-fast", "latin-print"])
def test_bundled_onnx_twin_is_made_from_the_bundled_model_and_reads_like_it(name):
    """models/NAME.onnx must be re-exported whenever NAME.pt is retrained."""
    import hashlib

    from crnn_core.config import bundled_dir
    from crnn_core.onnx_runner import OnnxRunner, bundled_onnx
    from crnn_core.recognizer import Recognizer

    twin = bundled_onnx(name)
    assert twin is not None and twin.name == f"{name}.onnx"
    meta = OnnxRunner(twin, None).session.get_modelmeta().custom_metadata_map
    pt = Path(str(bundled_dir())) / f"{name}.pt"
    assert meta["crnn.source_sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest(), \
        f"re-export: crnn export {name} --format onnx --out models/{name}.onnx --force"
    paths = val_images(40)[0] if name == "codes-fast" else sorted(map(str, PRINTED.glob("*.png")))
    fast = Recognizer(name, backend="auto")
    assert fast.backend == "onnx" and isinstance(fast.runner, OnnxRunner) and fast.calibration is not None
    eager = Recognizer(name, backend="torch")
    got, want = list(fast.predict_paths(paths)), list(eager.predict_paths(paths))
    assert [p.text for p in got] == [p.text for p in want]
    assert max(abs(a.confidence - b.confidence) for a, b in zip(got, want)) < 1e-3
    assert max(abs(a.p_correct - b.p_correct) for a, b in zip(got, want)) < 1e-3


def test_the_default_model_reads_printed_lines_it_never_trained_on():
    """`crnn predict img.png` without --model: the bundled latin-print, from its ONNX twin, on
    sample_data/printed (rendered in font families held out of its training)."""
    from crnn_core.metrics import char_errors
    from crnn_core.onnx_runner import bundled_onnx

    assert bundled_onnx(None).name == "latin-print.onnx"
    paths = sorted(PRINTED.glob("*.png"))
    result = subprocess.run([*CRNN, "predict", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    truth = [p.with_suffix(".gt.txt").read_text(encoding="utf-8").strip() for p in paths]
    read = result.stdout.splitlines()
    assert len(read) == len(truth)
    errors = sum(char_errors(b, a) for a, b in zip(read, truth))
    assert errors <= 0.05 * sum(map(len, truth)), list(zip(read, truth))


def test_auto_backend_uses_torch_where_onnx_does_not_apply(tmp_path):
    from crnn_core.config import bundled_dir
    from crnn_core.recognizer import Recognizer

    own = tmp_path / "mine.pt"
    shutil.copy(Path(str(bundled_dir())) / "codes-fast.pt", own)
    assert Recognizer(own, backend="auto").backend == "torch"  # a user's .pt: no ONNX twin
    assert Recognizer("codes-small", backend="auto").backend == "torch"  # bundled, but no .onnx shipped
    assert Recognizer(backend="auto", quantize="int8").backend == "torch"


def test_default_predict_never_imports_torch():
    """The start-up cost of `crnn predict` is mostly torch's import; the default path avoids it."""
    path = val_images(1)[0][0]
    code = ("import sys\nfrom crnn_core.cli.app import main\nsys.argv = ['crnn', 'predict', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('torch' in sys.modules, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False"
    assert len(result.stdout.splitlines()) == 1 and result.stdout.strip()

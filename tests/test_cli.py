"""End to end through the real command line, as a user or a CI job runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import render_text

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


def crnn(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def cli_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    result = crnn("train", tiny_data, "--model", "crnn-tiny", "--epochs", "2", "--batch-size", "16", "--out", run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "best.pt")  # stdout carries only the result
    assert "epoch" in result.stderr
    return run


def test_version_and_help():
    version = crnn("--version")
    assert version.returncode == 0 and version.stdout.startswith("crnn ")
    help_text = crnn("--help")
    assert help_text.returncode == 0
    for command in ("train", "eval", "predict", "export", "info", "data"):
        assert command in help_text.stdout


def test_help_does_not_import_torch():
    code = ("import sys; from crnn_core.cli.app import app; "
            "sys.argv=['crnn','--help']\ntry: app(prog_name='crnn')\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip().endswith("False")


def test_train_writes_the_run_folder(cli_run):
    assert {p.name for p in cli_run.iterdir()} >= {"best.pt", "last.pt", "config.yaml", "metrics.jsonl", "curves.png"}


def test_eval_json_to_stdout_is_valid(cli_run, tiny_data):
    result = crnn("eval", cli_run / "best.pt", tiny_data, "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["samples"] == 12
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["cer"] >= 0.0 and report["wer"] >= 0.0  # error rates can pass 1 for long wrong outputs
    assert report["model"].endswith("best.pt")
    assert "sequence accuracy" in result.stderr  # the table moved to stderr


def test_eval_json_file(cli_run, tiny_data, tmp_path):
    out = tmp_path / "report.json"
    result = crnn("eval", cli_run, tiny_data / "val", "--json", out, "--per-sample")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert len(report["per_sample"]) == report["samples"] == 12
    assert "sequence accuracy" in result.stdout


def test_predict_from_stdin_streams_jsonl(cli_run, tiny_data):
    paths = sorted(str(p) for p in (tiny_data / "val").glob("*.png"))
    result = crnn("predict", "-", "--model", cli_run / "best.pt", "--format", "jsonl", stdin="\n".join(paths) + "\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths  # input order kept
    assert all(isinstance(r["text"], str) and 0.0 <= r["confidence"] <= 1.0 for r in rows)


def test_predict_reads_stdin_only_with_dash(cli_run, tiny_data):
    path = str(next((tiny_data / "val").glob("*.png")))
    result = crnn("predict", "--model", cli_run, "--format", "tsv", stdin=path + "\n")
    assert result.returncode == 2 and result.stdout == ""  # no arguments is a usage error, piped or not
    result = crnn("predict", "-", "--model", cli_run, "--format", "tsv", stdin=path + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == path


def test_corrupt_image_among_good_ones(cli_run, tiny_data, tmp_path):
    good = sorted((tiny_data / "val").glob("*.png"))[:3]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    inputs = [good[0], bad, good[1], good[2]]
    for fmt in ("text", "tsv", "jsonl"):
        result = crnn("predict", *inputs, "--model", cli_run, "--format", fmt)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("crnn: error:")]
        assert len(errors) == 1 and "broken.png" in errors[0]
        lines = result.stdout.splitlines()
        if fmt == "jsonl":
            rows = [json.loads(line) for line in lines]
            assert [Path(r["path"]).name for r in rows] == [p.name for p in inputs]
            assert "error" in rows[1] and "text" in rows[0]
        elif fmt == "tsv":
            assert [Path(line.split("\t")[0]).name for line in lines] == [good[0].name, good[1].name, good[2].name]
        else:
            assert len(lines) == 3


def test_predict_folder_and_bundled_default_model(tiny_data):
    result = crnn("predict", tiny_data / "val", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 12


def test_export_onnx_runs_in_onnxruntime_like_predict(cli_run, tiny_data, tmp_path):
    import onnx
    import onnxruntime as ort

    from crnn_core.data import Preprocess, to_tensor_batch
    from crnn_core.decode import greedy

    out = tmp_path / "model.onnx"
    result = crnn("export", cli_run / "best.pt", "--format", "onnx", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "texts equal" in result.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    alphabet = meta["crnn.alphabet"]
    pre = Preprocess.from_dict(json.loads(meta["crnn.preprocess"]))
    config = json.loads(meta["crnn.config"])
    session = ort.InferenceSession(str(out))
    paths = sorted((tiny_data / "val").glob("*.png"))
    expected = crnn("predict", *paths, "--model", cli_run / "best.pt", "--format", "tsv")
    expected_texts = [line.split("\t")[1] for line in expected.stdout.splitlines()]
    from crnn_core.config import ModelConfig

    model_config = ModelConfig.from_dict(config)
    texts = []
    for path in paths:  # one at a time: every image at its own width
        images, widths = to_tensor_batch([pre.load(path)])
        log_probs = session.run(None, {"images": images.numpy()})[0]
        (decoded,) = greedy(log_probs, [model_config.time_steps(widths[0])])
        texts.append("".join(alphabet[i - 1] for i in decoded.ids))
    assert texts == expected_texts
    # and a batch of several widths padded together
    batch, _ = to_tensor_batch([pre.load(p) for p in paths[:4]])
    assert session.run(None, {"images": batch.numpy()})[0].shape[1] == 4


def test_export_pt2(cli_run, tmp_path):
    import torch

    out = tmp_path / "model.pt2"
    result = crnn("export", cli_run, "--format", "pt2", "--out", out)
    assert result.returncode == 0, result.stderr
    extra = {"crnn.json": ""}
    program = torch.export.load(str(out), extra_files=extra)
    assert "crnn.alphabet" in json.loads(extra["crnn.json"])
    log_probs = program.module()(torch.zeros(2, 1, 32, 203))
    assert log_probs.shape[1] == 2 and np.isfinite(log_probs.detach().numpy()).all()


def test_info_and_json(cli_run):
    result = crnn("info", cli_run / "best.pt")
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "crnn-tiny" in result.stdout
    data = json.loads(crnn("info", cli_run / "best.pt", "--json").stdout)
    assert data["parameters"]["total"] > 0 and data["alphabet"]


def test_data_check_clean_and_broken(tiny_data, tmp_path):
    clean = crnn("data", "check", tiny_data)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no problems found" in clean.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    render_text("12").save(broken / "a.png")
    render_text("1").save(broken / "short.png")
    (broken / "b.png").write_bytes(b"not an image")
    (broken / "labels.tsv").write_text("a.png\t12\nb.png\t3\nshort.png\t" + "1" * 40 + "\nmissing.png\t4\n")
    result = crnn("data", "check", broken, "--json")
    assert result.returncode == 1
    problems = " ".join(json.loads(result.stdout)["splits"][0]["problems"])
    assert "b.png" in problems and "CTC steps" in problems and "missing.png" in problems


def test_user_errors_are_one_line_with_exit_codes(tmp_path):
    missing = crnn("predict", "x.png", "--model", tmp_path / "nope.pt")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nope.pt" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_data = crnn("train", tmp_path / "nothing-here")
    assert no_data.returncode == 1 and "nothing-here" in no_data.stderr and "Traceback" not in no_data.stderr
    usage = crnn("predict", "--format", "xml", "a.png")
    assert usage.returncode == 2
    assert usage.stderr.startswith("crnn: error: Invalid value for '--format'") and usage.stderr.count("\n") == 1
    assert "'xml' is not one of 'text', 'tsv', 'jsonl'" in usage.stderr and "(see 'crnn predict --help')" in usage.stderr
    for args, words in ((["trian"], "No such command 'trian'"), (["eval", "--bogus"], "No such option: --bogus")):
        result = crnn(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    bare = crnn()
    assert bare.returncode == 2 and "Usage: crnn" in bare.stdout and bare.stderr == ""
    debug = crnn("--debug", "info", tmp_path / "nope.pt")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_train_display_handles_every_event_kind():
    from crnn_core.data import Problem
    from crnn_core.cli.render import TrainDisplay

    display = TrainDisplay()
    with display:
        for split, total in (("train", 300), ("val", 130)):
            for done in range(64, total + 64, 64):
                display.on_event("loading", {"split": split, "done": min(done, total), "total": total})
        display.on_event("skipped", {"problems": [Problem(f"x{i}.png", "cannot decode image: bad") for i in range(7)]})
        display.on_event("start", {"model": "m", "parameters": 10, "train_samples": 300, "val_samples": 130,
                                   "alphabet": "0123", "device": "cpu", "run_dir": "r", "epochs": 2})
        for step in range(1, 4):
            display.on_event("step", {"epoch": 1, "step": step, "steps": 3, "loss": 1.0, "samples_per_s": 10.0})
        display.on_event("epoch", {"epoch": 1, "train_loss": 1.0, "val_cer": 0.5, "val_accuracy": 0.25,
                                   "samples_per_s": 10.0, "elapsed_seconds": 3.0, "improved": True})
        display.on_event("warning", {"message": "could not draw curves.png"})
        display.on_event("kept_last", {"epoch": 2, "accuracy": 0.24, "cer": 0.5,
                                       "instead_of": {"epoch": 1, "accuracy": 0.25, "cer": 0.5}})
        display.on_event("stop", {"reason": "done", "seconds": 3.0})
    assert display.task is None and not display.stop_requested

"""Bad input through the real command line: one line per bad item, the good ones still served."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import render_text

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


def crnn(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mixed_inputs(tiny_data, tmp_path_factory) -> tuple[list[Path], dict[str, str]]:
    """Good images interleaved with every kind of bad one; bad name -> expected message part."""
    folder = tmp_path_factory.mktemp("mixed")
    good = sorted((tiny_data / "val").glob("*.png"))[:4]
    bad = {
        "empty.png": "empty file (0 bytes)",
        "text.jpg": "not an image Pillow can read",
        "missing.png": "no such file",
        "cut.png": "cannot decode image",
    }
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("hello\n")
    whole = good[0].read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    inputs = [good[0], folder / "empty.png", good[1], folder / "text.jpg", folder / "missing.png", good[2],
              folder / "cut.png", good[3]]
    return inputs, bad


@pytest.mark.parametrize("fmt", ["text", "tsv", "jsonl"])
def test_predict_mix_of_good_and_bad_inputs(mixed_inputs, fmt):
    inputs, bad = mixed_inputs
    result = crnn("predict", *inputs, "--format", fmt)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("crnn: error:")]
    bad_inputs = [p for p in inputs if p.name in bad]
    good_inputs = [p for p in inputs if p.name not in bad]
    assert len(errors) == len(bad_inputs) == 4
    for line, path in zip(errors, bad_inputs):
        assert line.startswith(f"crnn: error: {path}: ") and bad[path.name] in line
    assert "Traceback" not in result.stderr and "4 input(s) could not be read" in result.stderr
    lines = result.stdout.splitlines()
    if fmt == "text":
        assert len(lines) == len(good_inputs)
    elif fmt == "tsv":
        rows = list(csv.reader(io.StringIO(result.stdout), delimiter="\t"))
        assert [r[0] for r in rows] == [str(p) for p in good_inputs]
        assert all(len(r) == 3 and 0.0 <= float(r[2]) <= 1.0 for r in rows)
    else:
        rows = [json.loads(line) for line in lines]  # every line valid JSON, one per input, in order
        assert [r["path"] for r in rows] == [str(p) for p in inputs]
        for row, path in zip(rows, inputs):
            assert ("error" in row) == (path.name in bad)
            assert ("text" in row) == (path.name not in bad)


def test_predict_from_stdin_with_bad_lines(mixed_inputs):
    inputs, bad = mixed_inputs
    stdin = "\n".join(str(p) for p in inputs) + "\n\n"  # a blank line is ignored
    result = crnn("predict", "-", "--format", "jsonl", stdin=stdin)
    assert result.returncode == 1
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(p) for p in inputs]


def test_train_summarises_skipped_samples_and_goes_on(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train_dir = data / "train"
    (train_dir / "zero.png").write_bytes(b"")
    (train_dir / "text.png").write_text("not an image")
    render_text("1").save(train_dir / "narrow.png")
    with open(train_dir / "labels.tsv", "a", encoding="utf-8") as fh:
        fh.write("zero.png\t12\ntext.png\t34\nnarrow.png\t" + "1" * 40 + "\n"
                 "gone1.png\t5\ngone2.png\t6\ngone3.png\t7\nno tab here\n")
    run = tmp_path / "run"
    result = crnn("train", data, "--model", "crnn-tiny", "--epochs", "1", "--batch-size", "16", "--out", run)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "skipped 7 sample(s): 3 × image _ not found; 1 × no TAB between path and label" in err
    assert "1 × empty file; 1 × not an image Pillow can read; 1 × label of _ chars needs _ CTC steps" in err
    assert "train/labels.tsv:52: image 'gone1.png' not found" in err  # the first few, with file and line
    assert "... and 2 more (crnn data check lists them all)" in err
    assert "training crnn-tiny" in err and "on 48 samples" in err
    assert result.stdout.strip() == str(run / "best.pt")


def test_train_stops_with_one_clear_error_when_too_few_samples_remain(tmp_path, tiny_data):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    shutil.copytree(tiny_data / "val", data / "val")
    render_text("1").save(data / "train" / "a.png")
    (data / "train" / "b.png").write_bytes(b"")
    (data / "train" / "labels.tsv").write_text("a.png\t1\nb.png\t2\nc.png\t3\n", encoding="utf-8")
    result = crnn("train", data, "--model", "crnn-tiny", "--epochs", "1", "--out", tmp_path / "run")
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"crnn: error: {data}: only 1 usable training samples (2 skipped, first: ")
    assert "skipped 2 sample(s)" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_eval_skips_and_counts_bad_samples(tiny_data, tmp_path):
    data = tmp_path / "val"
    shutil.copytree(tiny_data / "val", data)
    (data / "zero.png").write_bytes(b"")
    with open(data / "labels.tsv", "a", encoding="utf-8") as fh:
        fh.write("zero.png\t1\ngone.png\t2\n")
    result = crnn("eval", "codes-small", data, "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["samples"] == 12 and report["skipped"] == 2
    assert [e.rsplit("/", 1)[-1] for e in report["skipped_examples"]] == [
        "labels.tsv:14: image 'gone.png' not found", "zero.png: empty file (0 bytes)"]


def test_summary_of_a_run_stopped_before_its_first_validation(capsys):
    import math

    from crnn_core.cli import render
    from crnn_core.train import TrainResult

    result = TrainResult(Path("run"), 0, {"cer": math.inf, "accuracy": -1.0, "epoch": 0}, 1,
                         "interrupted; continue with --resume", 1.4)
    render.train_summary(result)
    err = capsys.readouterr().err
    assert "no epoch finished yet" in err
    assert "-100.00%" not in err and "inf" not in err  # what it showed before


def test_tables_show_brackets_in_labels_and_paths_as_they_are(capsys):
    """Rich reads `[b]` as a style and fails on `[/]`: a label or a file name must do neither."""
    from types import SimpleNamespace

    from crnn_core.cli import render

    scores = SimpleNamespace(samples=2, accuracy=0.0, correct=0, cer=0.5, char_errors=3, chars=6, wer=1.0,
                             word_errors=2, words=2)
    rows = [SimpleNamespace(path="data/[/]x.png", expected="see [b] here", predicted="[/]", confidence=0.5)]
    report = SimpleNamespace(scores=scores, model="m[/].pt", data="data/[red]", lines_per_second=10.0, seconds=0.2,
                             problems=[], constraint=None, worst=lambda show: rows)
    render.eval_summary(report, show=5, to_stderr=False)
    shown = capsys.readouterr().out
    for text in ("m[/].pt on data/[red]", "data/[/]x.png", "see [b] here", "[/]"):
        assert text in shown

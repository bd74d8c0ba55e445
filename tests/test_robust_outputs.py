"""Every bad input gets a clear answer, and no output can destroy an input: through the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import render_text

REPO = Path(__file__).resolve().parents[1]
CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
SIDECAR = REPO / "sample_data" / "sidecar"


def crnn(*args, stdin: str | None = None, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300,
                          cwd=cwd, **kw)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The only stderr line, which must be crnn's own one-line error."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crnn: error: "), result.stderr
    return lines[0]


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = []
    for i, text in enumerate(("12", "345")):
        path = tmp_path / f"img{i}.png"
        render_text(text).save(path)
        paths.append(path)
    return paths


# --- eval: zero samples ----------------------------------------------------------------

def test_eval_gate_on_a_file_with_no_usable_line_is_an_error(tmp_path):
    data = tmp_path / "x.tsv"
    data.write_text("a.png b\n")
    result = crnn("eval", "codes-fast", data, "--max-cer", "0.01", "--json", "-")
    assert result.returncode == 1 and result.stdout == ""
    assert "no usable samples" in one_error_line(result) and "x.tsv" in result.stderr


def test_eval_on_an_image_is_an_error(images):
    result = crnn("eval", "codes-fast", images[0], "--min-accuracy", "0.5")
    assert result.returncode == 1
    assert "an image, not a labelled dataset" in one_error_line(result)


def test_eval_where_no_image_can_be_read_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "labels.tsv").write_text("a.png\t12\n")
    result = crnn("eval", "codes-fast", tmp_path, "--max-cer", "0.5")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "no usable samples" in line and "empty file" in line


def test_a_gate_cannot_pass_on_zero_samples():
    from crnn_core import gates
    from crnn_core.errors import CrnnError

    with pytest.raises(CrnnError, match="no samples"):
        gates.check({"accuracy": 0.0, "cer": 0.0, "wer": 0.0}, 0, "d", max_cer=0.01)


# --- output paths ------------------------------------------------------------------------

def _alias(kind: str, target: Path, where: Path) -> str:
    """A path naming `target` in the way `kind` says."""
    if kind == "same":
        return str(target)
    if kind == "relative":
        return os.path.relpath(target)
    if kind == "dotted":
        return str(target.parent / "." / target.name)
    alias = where / f"alias-{kind}{target.suffix}"
    if kind == "hardlink":
        os.link(target, alias)
    else:
        os.symlink(target, alias)
    return str(alias)


ALIASES = ["same", "relative", "dotted", "hardlink", "symlink"]


@pytest.mark.parametrize("kind", ALIASES)
def test_export_refuses_to_overwrite_its_input(tmp_path, kind, monkeypatch):
    model = tmp_path / "m.pt"
    shutil.copy(REPO / "models" / "codes-fast.pt", model)
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = _alias(kind, model, tmp_path)
    result = crnn("export", model, "--format", "pt2", "--out", out)
    assert result.returncode == 1, result.stderr
    assert "refusing to overwrite" in one_error_line(result)
    assert model.read_bytes() == before and not model.is_symlink()


def test_export_replaces_an_existing_file_only_with_force(tmp_path):
    out = tmp_path / "precious.txt"
    out.write_text("not a model\n")
    result = crnn("export", "codes-fast", "--format", "pt2", "--out", out)
    assert result.returncode == 1, result.stderr
    assert "already exists" in one_error_line(result) and out.read_text() == "not a model\n"
    result = crnn("export", "codes-fast", "--format", "pt2", "--out", out, "--force")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:2] == b"PK"  # a torch.export archive now


# Every spelling once with --json, and every other writer with the two that need an inode check.
EVAL_CASES = [("--json", kind) for kind in ALIASES] + [
    (option, kind) for option in ("--junit", "--markdown", "--html") for kind in ("hardlink", "symlink")]


@pytest.mark.parametrize("option,kind", EVAL_CASES)
def test_eval_reports_refuse_to_overwrite_the_label_file(tmp_path, option, kind, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(SIDECAR, data)
    labels = data / "labels.tsv"
    labels.write_text("".join(f"{p.name}\t{p.with_suffix('').with_suffix('.gt.txt').read_text().strip()}\n"
                              for p in sorted(data.glob("*.png"))[:3]))
    before = labels.read_bytes()
    monkeypatch.chdir(tmp_path)
    result = crnn("eval", "codes-small", data, option, _alias(kind, labels, tmp_path))
    assert result.returncode == 1, result.stderr
    assert "refusing to overwrite" in one_error_line(result) and result.stdout == ""
    assert labels.read_bytes() == before


def test_eval_reports_refuse_an_image_of_the_data(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SIDECAR, data)
    image = sorted(data.glob("*.png"))[0]
    before = image.read_bytes()
    link = tmp_path / "report.html"
    link.symlink_to(image)
    result = crnn("eval", "codes-small", data, "--html", link)
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr.splitlines()[-1]
    assert image.read_bytes() == before


def _special(kind: str, tmp_path: Path) -> str:
    if kind == "folder":
        (tmp_path / "out.json").mkdir()
        return str(tmp_path / "out.json")
    if kind == "fifo":
        os.mkfifo(tmp_path / "out.json")
        return str(tmp_path / "out.json")
    if kind == "link-to-device":
        (tmp_path / "out.json").symlink_to("/dev/null")
        return str(tmp_path / "out.json")
    return {"dev-null": "/dev/null", "dev-full": "/dev/full", "empty": ""}[kind]


@pytest.mark.parametrize("kind", ["folder", "fifo", "dev-null", "dev-full", "link-to-device", "empty"])
def test_reports_refuse_special_files_and_leave_them_alone(tmp_path, kind):
    out = _special(kind, tmp_path)
    before = os.lstat(out) if out else None
    result = crnn("eval", "codes-small", SIDECAR, "--json", out)
    assert result.returncode == 1
    line = one_error_line(result)
    assert ("not a regular file" in line) or (kind == "empty" and "empty output path" in line)
    if before is not None:
        after = os.lstat(out)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)


def test_export_refuses_a_device(tmp_path):
    result = crnn("export", "codes-fast", "--format", "onnx", "--out", "/dev/full")
    assert result.returncode == 1 and "a character device" in one_error_line(result)
    assert Path("/dev/full").is_char_device()


def test_a_symlink_output_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "reports" / "real.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    result = crnn("eval", "codes-small", SIDECAR, "--json", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert strict_json(target.read_text())["format"] == "crnn-eval"


def test_two_reports_into_one_file_are_refused(tmp_path):
    out = tmp_path / "r.txt"
    result = crnn("eval", "codes-small", SIDECAR, "--junit", out, "--markdown", tmp_path / "." / "r.txt")
    assert result.returncode == 1 and "given to both --junit and --markdown" in one_error_line(result)
    assert not out.exists()


# --- predict inputs ----------------------------------------------------------------------

def test_empty_path_is_a_bad_input_not_the_current_folder(images, tmp_path):
    (tmp_path / "sub").mkdir()
    render_text("9").save(tmp_path / "sub" / "elsewhere.png")  # what '' used to read, recursively
    result = crnn("predict", images[0], "", images[1], "-f", "jsonl", cwd=tmp_path)
    assert result.returncode == 1
    rows = [strict_json(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(images[0]), "", str(images[1])]
    assert "empty path" in rows[1]["error"] and "text" in rows[0] and "text" in rows[2]
    assert [line for line in result.stderr.splitlines() if line.startswith("crnn: error:")] == [
        "crnn: error: '': empty path (is a variable unset?)"]


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_empty_folder_and_folder_named_like_an_image_are_errors_in_place(images, tmp_path, fmt):
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir.png").mkdir()
    inputs = [images[0], tmp_path / "empty", tmp_path / "dir.png", images[1]]
    result = crnn("predict", *inputs, "-f", fmt)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("crnn: error:")]
    assert errors == [f"crnn: error: {tmp_path / 'empty'}: folder holds no images",
                      f"crnn: error: {tmp_path / 'dir.png'}: folder holds no images"]
    if fmt == "jsonl":
        rows = [strict_json(line) for line in result.stdout.splitlines()]
        assert [r["path"] for r in rows] == [str(p) for p in inputs]
        assert ["error" in r for r in rows] == [False, True, True, False]
    else:
        assert len(result.stdout.splitlines()) == 2


def test_predict_without_arguments_is_a_usage_error_whatever_stdin_is(images):
    result = crnn("predict", stdin=f"{images[0]}\n")
    assert result.returncode == 2 and result.stdout == ""
    assert "'-'" in result.stderr


def test_a_newline_in_a_path_stays_inside_one_tsv_record(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    render_text("12").save(folder / "a\nb.png")
    render_text("34").save(folder / "c\td.png")
    result = crnn("predict", folder, "-f", "tsv")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == [str(folder) + "/a\\nb.png", str(folder) + "/c\\td.png"]
    assert all(len(r) == 3 for r in rows)


def test_an_error_about_a_path_with_a_newline_is_one_line(tmp_path):
    result = crnn("predict", tmp_path / "x\ny.png")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("crnn: error:")] == [
        f"crnn: error: {tmp_path}/x\\ny.png: no such file"]


def test_control_characters_in_a_path_reach_the_terminal_escaped(tmp_path):
    """ESC could recolour or retitle the terminal, BEL ring it: both are shown as escapes."""
    result = crnn("predict", tmp_path / "a\x1b]0;owned\x07b.png")
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert f"crnn: error: {tmp_path}/a\\x1b]0;owned\\x07b.png: no such file" in result.stderr.splitlines()


def test_a_pipe_and_a_broken_link_in_a_folder_are_reported_in_their_place(tmp_path):
    """Named like images, they are not passed over unseen; the pipe is never opened (it would not end)."""
    folder = tmp_path / "in"
    folder.mkdir()
    render_text("12").save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    (folder / "c.png").symlink_to(tmp_path / "gone.png")
    render_text("34").save(folder / "d.png")
    result = crnn("predict", folder, "-f", "jsonl", "--model", "codes-fast")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["a.png", "b.png", "c.png", "d.png"]
    assert records[1]["error"] == f"{folder}/b.png: a device, pipe or socket, not an image file"
    assert records[2]["error"] == f"{folder}/c.png: a broken link (its target is gone)"
    assert "text" in records[0] and "text" in records[3]
    assert "2 input(s) could not be read" in result.stderr


# --- closed pipes ------------------------------------------------------------------------

def _closed_reader(args: list[str], stdin=subprocess.DEVNULL) -> subprocess.Popen:
    process = subprocess.Popen([*CRNN, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader goes away before anything is written
    return process


def test_closed_pipe_ends_predict_silently_by_sigpipe(images):
    process = _closed_reader(["predict", *map(str, images)])
    assert process.wait(timeout=120) == -signal.SIGPIPE
    assert process.stderr.read() == b""


def test_closed_pipe_in_stdin_mode_stops_reading_input(images):
    process = _closed_reader(["predict", "-"], stdin=subprocess.PIPE)
    process.stdin.write(f"{images[0]}\n{images[1]}\n".encode())
    process.stdin.flush()  # and stdin stays open: crnn must not wait for more of it
    try:
        assert process.wait(timeout=120) == -signal.SIGPIPE
    finally:
        process.kill()
    assert process.stderr.read() == b""


def test_closed_pipe_during_help_is_silent():
    process = _closed_reader(["predict", "--help"])
    assert process.wait(timeout=60) == -signal.SIGPIPE and process.stderr.read() == b""


# --- train's first line, help texts, strict JSON ----------------------------------------

def test_train_error_is_the_first_and_only_stderr_line(tmp_path):
    result = crnn("train", tmp_path / "nothing-here")
    assert result.returncode == 1
    assert result.stderr == f"crnn: error: {tmp_path / 'nothing-here'}: no such file or folder\n"


def test_every_option_of_every_command_has_a_description():
    import re

    import typer.main

    from crnn_core.cli.app import app

    def walk(command, name):
        yield name, command
        for sub_name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{name} {sub_name}")

    missing = []
    for name, command in walk(typer.main.get_command(app), "crnn"):
        for param in command.params:
            text = (getattr(param, "help", None) or "").strip()
            if not text or re.fullmatch(r"\(?default:[^)]*\)?\.?", text, re.IGNORECASE):
                missing.append(f"{name} {param.opts[0] if param.opts else param.name}")
    assert missing == []


def test_info_json_is_strict_even_with_non_finite_numbers(tmp_path):
    import torch

    payload = torch.load(REPO / "models" / "codes-fast.pt", weights_only=True)
    payload["train"] = dict(payload.get("train") or {}, val_cer=float("nan"), val_loss=float("inf"))
    model = tmp_path / "nan.pt"
    torch.save(payload, model)
    result = crnn("info", model, "--json")
    assert result.returncode == 0, result.stderr
    summary = strict_json(result.stdout)
    assert summary["train"]["val_cer"] is None and summary["train"]["val_loss"] is None


def test_strict_dumps_maps_non_finite_to_null():
    from crnn_core.outputs import dumps

    assert dumps({"a": [float("nan"), 1.5, float("-inf")], "b": (float("inf"),)}) == '{"a": [null, 1.5, null], "b": [null]}'


# --- torchrun children ----------------------------------------------------------------

def test_nproc_children_are_not_shadowed_by_a_source_folder_and_fail_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "crnn"
    if not script.exists():
        pytest.skip("no crnn console script beside this Python")
    fake = tmp_path / "crnn_core" / "cli"
    fake.mkdir(parents=True)
    (tmp_path / "crnn_core" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "app.py").write_text("raise SystemExit('shadowed by the current folder')\n")
    started = time.monotonic()
    result = subprocess.run([str(script), "train", "missing-data", "--nproc", "2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 1
    assert "shadowed" not in result.stderr and "Traceback" not in result.stderr
    assert "ChildFailedError" not in result.stderr and "Root Cause" not in result.stderr
    lines = result.stderr.splitlines()
    # The first rank to fail names the cause; torchrun may stop the other one before it says anything.
    assert re.fullmatch(r"crnn: error: [12] of 2 training processes failed \(rank [01]: exit code 1\); "
                        r"their own messages are above", lines[-1]), lines[-1]
    assert 1 <= lines.count("crnn: error: missing-data: no such file or folder") <= 2  # each child's own line
    assert time.monotonic() - started < 300


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("info", "codes-fast"), ("info", "--json", "codes-fast")])
def test_results_that_cannot_reach_stdout_are_one_error_line(args):
    with open("/dev/full", "w") as full:
        result = subprocess.run([*CRNN, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 1
    assert one_error_line(result) == "crnn: error: stdout: No space left on device"


def test_a_closed_stdout_is_refused_before_any_work():
    command = " ".join([*CRNN, "info", "codes-fast"])
    result = subprocess.run(["sh", "-c", f"exec {command} >&-"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "stdout: is closed" in one_error_line(result)


def test_dumps_escapes_file_names_that_are_not_utf8():
    from crnn_core.outputs import dumps

    name = b"x\xff.png".decode("utf-8", "surrogateescape")  # how Python holds such a file name
    text = dumps({"path": name, "text": "é"})
    text.encode("utf-8")  # writable as UTF-8, so the output stays valid JSON
    assert strict_json(text) == {"path": name, "text": "é"}
    assert dumps({"text": "é"}) == '{"text": "é"}'  # other text is left as it is


def test_export_and_predict_with_a_model_name_that_is_not_utf8(tmp_path, images):
    """ONNX Runtime refuses such a name ("unexpected TypeError" before): it is given the bytes."""
    from crnn_core.config import bundled_dir

    model = Path(os.fsdecode(os.fsencode(tmp_path) + b"/m\xff.pt"))
    shutil.copy(bundled_dir() / "codes-fast.pt", model)
    onnx = model.with_suffix(".onnx")
    exported = crnn("export", model, "--format", "onnx", "--out", onnx, errors="surrogateescape")  # prints the name
    assert exported.returncode == 0 and onnx.is_file(), exported.stderr
    readings = [crnn("predict", "--model", m, "--format", "tsv", *images) for m in (model, onnx)]
    assert all(r.returncode == 0 for r in readings), readings[1].stderr
    torch_rows, onnx_rows = ([row.split("\t")[1] for row in r.stdout.splitlines()] for r in readings)
    assert onnx_rows == torch_rows and len(onnx_rows) == 2

"""Arguments a script gets wrong: an unset variable (''), a folder where a file goes, values out of range,
stdin closed. Each is one clear answer and nothing is written (hostile-input review, docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crnn_core.automata import read_lexicon
from test_robust_settings import run_cli


def flat(err: str) -> str:
    """A usage error's words without the box typer draws around them and its line breaks."""
    return " ".join(err.replace("│", " ").split())

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


@pytest.mark.parametrize("args", [("data", "check", ""), ("eval", "codes-fast", ""), ("train", "", "--epochs", "1"),
                                  ("calibrate", "codes-fast", "", "-o", "new.pt"), ("export", "codes-fast", "-o", ""),
                                  ("synth", "", "--pattern", "AB")])
def test_an_empty_path_is_a_usage_error_not_the_current_folder(args, tiny_model, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pt").write_bytes(tiny_model.read_bytes())  # what '' used to mean: ./best.pt, ./ as data
    code, out, err = run_cli(*args, capfd=capfd)
    assert code == 2 and "'' is an empty path (is a variable unset?)" in flat(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"] and out == ""


@pytest.mark.parametrize("args", [("info", ""), ("predict", "-m", "", "x.png"), ("calibrate", "", "data", "-o", "n.pt")])
def test_an_empty_model_is_an_error_not_the_current_folders_run(args, tiny_model, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pt").write_bytes(tiny_model.read_bytes())
    (tmp_path / "data").mkdir()
    code, out, err = run_cli(*args, capfd=capfd)
    assert (code, err) == (1, "crnn: error: '': empty model path (is a variable unset?)\n") and out == ""


@pytest.mark.parametrize("out, words", [("newdir/", "'newdir/' names a folder; give a file name"),
                                        ("cal.onnx", "calibrate writes a torch model file (.pt)")])
def test_calibrate_writes_a_model_file_and_nothing_else(out, words, tiny_data, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("calibrate", "codes-fast", tiny_data, "-o", out, capfd=capfd)
    assert code == 2 and words in flat(err), err
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "cal.onnx").exists()


def test_reports_and_exports_need_a_file_name(tiny_data, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    for args in (("export", "codes-fast", "-o", "x/"), ("eval", "codes-fast", tiny_data, "--html", "r/")):
        code, _, err = run_cli(*args, capfd=capfd)
        assert code == 2 and "names a folder; give a file name" in flat(err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value", [("--ink", "300"), ("--paper", "100-256"), ("--jpeg-quality", "0-50"),
                                           ("--jpeg-quality", "101")])
def test_synth_levels_and_qualities_stay_in_their_ranges(option, value, tmp_path, capfd):
    code, _, err = run_cli("synth", tmp_path / "out", "--pattern", "AB", option, value, capfd=capfd)
    assert code == 2 and option in err, err
    assert not (tmp_path / "out").exists()


def test_the_beam_has_an_upper_bound(tmp_path, capfd):
    code, _, err = run_cli("predict", "-m", "codes-fast", "--beam", "1025", tmp_path / "x.png", capfd=capfd)
    assert code == 2 and "--beam" in err and "1024" in err, err


def test_a_lexicon_written_with_a_byte_order_mark_keeps_its_first_entry(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_bytes("\ufeffAB-12\nCD-34\n".encode())
    assert read_lexicon(path) == ["AB-12", "CD-34"]


def test_reading_paths_from_a_closed_stdin_is_a_usage_error():
    command = " ".join([*CRNN, "predict", "-m", "codes-fast", "-"])
    result = subprocess.run(["sh", "-c", f"exec {command} <&-"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "reads paths from stdin, which is closed" in flat(result.stderr), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))  # 10^9 values


@pytest.mark.parametrize("text, words", [("[" * 5000 + "]" * 5000, "nested too deeply"),
                                         (LAUGHS, "its aliases (*name) expand to more than 100000 values"),
                                         ("a: &a [1, *a]\n", "an alias (*name) that contains itself")])
def test_hostile_yaml_is_one_line(text, words, tiny_data, tmp_path, capfd):
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    code, _, err = run_cli("data", "check", tiny_data, "-m", path, capfd=capfd)
    assert code == 1 and err == f"crnn: error: {path}: cannot read YAML: {words}\n", err


def test_yaml_aliases_within_reason_still_work(tmp_path):
    from crnn_core.config import read_yaml

    path = tmp_path / "arch.yaml"
    path.write_text("block: &block [{conv: 64}, {pool: 2}]\nbackbone: [*block, *block]\n")
    assert read_yaml(path)["backbone"] == [[{"conv": 64}, {"pool": 2}]] * 2


def test_reports_show_a_file_name_that_is_not_utf8(tmp_path, capfd):
    from conftest import render_text

    data = tmp_path / "data"
    data.mkdir()
    stem = bytes(data) + b"/x\xff"  # a file name from another system's encoding
    render_text("12").save(os.fsdecode(stem + b".png"))
    Path(os.fsdecode(stem + b".gt.txt")).write_text("99\n")  # read wrong, so the reports list it
    code, _, err = run_cli("eval", "codes-fast", data, "--markdown", tmp_path / "r.md", "--html", tmp_path / "r.html",
                           capfd=capfd)
    assert code == 0, err
    reports = [(tmp_path / name).read_bytes().decode("utf-8") for name in ("r.md", "r.html")]  # valid UTF-8
    assert any("x\\udcff.png" in text for text in reports)


def test_synth_force_never_rewrites_its_own_text(tmp_path, capfd):
    text = tmp_path / "out" / "train" / "labels.tsv"
    text.parent.mkdir(parents=True)
    text.write_text("HELLO\nWORLD\n")
    code, _, err = run_cli("synth", tmp_path / "out", "--text", text, "--force", capfd=capfd)
    assert code == 2 and "--force rewrites" in flat(err), err
    assert text.read_text() == "HELLO\nWORLD\n"


def test_data_check_names_images_no_label_names(tmp_path, capfd):
    from conftest import make_list_dataset

    folder = tmp_path / "data"
    make_list_dataset(folder, 6)
    lines = (folder / "labels.tsv").read_text().splitlines(keepends=True)
    (folder / "labels.tsv").write_text("".join(lines[:4]))  # two lines lost
    code, out, err = run_cli("data", "check", folder, capfd=capfd)
    assert code == 0, err
    assert "2 image(s) in the folder are not used" in " ".join(out.split()), out
    code, out, err = run_cli("data", "check", "--json", folder, capfd=capfd)
    assert code == 0 and [len(s["unlabelled"]) for s in json.loads(out)["splits"]] == [2]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_given_as_an_image_is_named_for_what_it_is(tmp_path, capfd):
    os.mkfifo(tmp_path / "f.png")  # opening it to read would wait for a writer forever
    code, out, err = run_cli("predict", "-m", "codes-fast", tmp_path / "f.png", capfd=capfd)
    assert code == 1 and "f.png: a device, pipe or socket, not an image file" in err, err


def test_a_label_list_that_is_a_folder_is_named_for_what_it_is(tmp_path, capfd):
    (tmp_path / "data" / "labels.tsv").mkdir(parents=True)
    code, _, err = run_cli("data", "check", tmp_path / "data", capfd=capfd)
    assert code == 1 and "labels.tsv: not a regular file (a folder, pipe or device)" in err, err

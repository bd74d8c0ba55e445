"""Hostile and foreign model files: `info`, `eval` and `predict --model` answer in one line naming the file.

Each case is a file a user could plausibly hand over (cut short, edited, an export, not a model at
all); the answer says in our words what it is, exit code 1, no traceback and no 'unexpected'.
The table runs through the CLI's own entry point in process (cheap), a few cases also in a real
subprocess, and hypothesis flips and cuts bytes of a real model file at the library level.
"""

from __future__ import annotations

import pickle
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import render_text
from crnn_core.errors import ModelFileError
from crnn_core.modelfile import load_model, resolve_model

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
BUNDLED = resolve_model("codes-fast")  # a real model file, no training needed
BUNDLED_ONNX = BUNDLED.with_suffix(".onnx")


def _edited(change):
    def write(path: Path) -> None:
        payload = torch.load(BUNDLED, weights_only=True)
        change(payload)
        torch.save(payload, path)
    return write


def _set(key, value):
    return _edited(lambda p: p.__setitem__(key, value))


def _calibration(change):
    return _edited(lambda p: p["train"].__setitem__("calibration", change(p["train"]["calibration"])))


def _first_tensor(payload, value):
    state = dict(payload["state_dict"])
    state[next(iter(state))] = value
    payload["state_dict"] = state


def _cut(fraction: float = 0.0, size: int = 0):
    return lambda path: path.write_bytes(BUNDLED.read_bytes()[: size or int(BUNDLED.stat().st_size * fraction)])


def _fake_pt2(path: Path) -> None:  # the layout torch.export.save writes
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("archive/archive_format", "pt2"), ("archive/models/model.json", "{}"),
                           ("archive/data/weights/weight_0", "\0" * 64)):
            archive.writestr(name, data)


def _foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


# name -> (file name, how to make it, words the message must hold)
CASES = {
    "cut at 3 bytes": ("m.pt", _cut(size=3), "not a torch.save zip archive"),
    "cut at 5 bytes": ("m.pt", _cut(size=5), "not a complete zip archive (5 bytes; cut short"),
    "cut at 1%": ("m.pt", _cut(0.01), "not a complete zip archive"),
    "cut at 50%": ("m.pt", _cut(0.5), "not a complete zip archive"),
    "cut 1 byte short": ("m.pt", lambda p: p.write_bytes(BUNDLED.read_bytes()[:-1]), "not a complete zip archive"),
    "wrong tensor shape": ("m.pt", _edited(lambda p: _first_tensor(p, torch.zeros(3, 3))),
                           "'backbone.0.weight' is 3 x 3, the network needs 16 x 1 x 3 x 3"),
    "a tensor missing": ("m.pt", _edited(lambda p: p.__setitem__("state_dict", dict(list(p["state_dict"].items())[1:]))),
                         "'backbone.0.weight' is missing"),
    "alphabet one short": ("m.pt", _edited(lambda p: p.__setitem__("alphabet", p["alphabet"][:-1])),
                           "do not fit its config and 35-character alphabet: 'head.weight' is 37 x 256"),
    "empty alphabet": ("m.pt", _set("alphabet", ""), "damaged model file: alphabet: empty"),
    "alphabet not text": ("m.pt", _set("alphabet", [1, 2]), "alphabet: a list, not a string"),
    "repeated alphabet": ("m.pt", _set("alphabet", "aa"), "alphabet: alphabet has repeated characters"),
    "alphabet with a control character": ("m.pt", _edited(lambda p: p.__setitem__("alphabet", p["alphabet"].replace("B", "\t"))),
                                          "alphabet: alphabet holds a control character (U+0009 TAB"),
    "preprocess width step 0": ("m.pt", _edited(lambda p: p["preprocess"].__setitem__("width_multiple", 0)),
                                "preprocess: widths 4-800 in steps of 0"),
    "preprocess stretch of nan": ("m.pt", _edited(lambda p: p["preprocess"].__setitem__("width_scale", float("nan"))),
                                  "preprocess: width_scale nan: not between 0.25 and 8"),
    "config not a mapping": ("m.pt", _set("config", "crnn-fast"), "config: a model config must be a mapping"),
    "config bad backbone": ("m.pt", _edited(lambda p: p["config"].__setitem__("backbone", 7)),
                            "config: 'backbone' must be a list of layers"),
    # checked on torch's meta device: nothing of the size the config asks for is allocated
    "config asks for a huge network": ("m.pt", _edited(lambda p: p["config"]["rnn"].__setitem__("hidden", 10**5)),
                                       "config: rnn.hidden must be an integer >= 1 and <= 4096, not 100000"),
    "config asks for an impossible network": ("m.pt", _edited(lambda p: p["config"]["rnn"].__setitem__("hidden", 10**9)),
                                              "config: rnn.hidden must be an integer >= 1 and <= 4096, not 1000000000"),
    "preprocess missing height": ("m.pt", _set("preprocess", {}), "preprocess: missing 'height'"),
    "preprocess of another height": ("m.pt", _edited(lambda p: p["preprocess"].__setitem__("height", 64)),
                                     "preprocess: height 64 x 1 channel(s), the config says 32 x 1"),
    "weights not tensors": ("m.pt", _set("state_dict", {"a": 1}), "weights: not a mapping of names to tensors"),
    "train not a mapping": ("m.pt", _set("train", [1]), "train: a list, not a mapping"),
    "calibration not a mapping": ("m.pt", _calibration(lambda c: "hello"), "calibration: a str, not a mapping"),
    "calibration x and y differ": ("m.pt", _calibration(lambda c: dict(c, y=[0.5])),
                                   "calibration: x and y hold 4 and 1 values"),
    "calibration x not numbers": ("m.pt", _calibration(lambda c: dict(c, x="abc")), "calibration: x: not a list of numbers"),
    "calibration samples not a count": ("m.pt", _calibration(lambda c: dict(c, samples="many")),
                                        "calibration: samples: 'many' is not a count"),
    "calibration table row": ("m.pt", _calibration(lambda c: dict(c, table=[{"low": "a"}])),
                              "calibration: table: a malformed row"),
    "onnx export": ("m.onnx", lambda p: shutil.copy(BUNDLED_ONNX, p), "not a crnn model file but an ONNX export"),
    "onnx export named .pt": ("m.pt", lambda p: shutil.copy(BUNDLED_ONNX, p), "not a crnn model file but an ONNX export"),
    "pt2 export": ("m.pt2", _fake_pt2, "not a crnn model file but a torch.export (.pt2) archive"),
    "another zip": ("m.pt", _foreign_zip, "a zip archive, but not one torch.save wrote"),
    "random bytes": ("m.pt", lambda p: p.write_bytes(random.Random(0).randbytes(5000)), "not a torch.save zip archive"),
    "zero bytes": ("m.pt", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "a plain pickle": ("m.pt", lambda p: p.write_bytes(pickle.dumps({"format": "crnn-model"})), "not a torch.save zip archive"),
    "a folder": ("m", lambda p: p.mkdir(), "a folder without best.pt or last.pt"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    render_text("12").save(folder / "a.png")
    render_text("34").save(folder / "b.png")
    (folder / "labels.tsv").write_text("a.png\t12\nb.png\t34\n")
    return folder


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The CLI through its entry point (where errors become one line), in this process."""
    from crnn_core.cli.app import main

    monkeypatch.setattr(sys, "argv", ["crnn", *map(str, args)])
    with pytest.raises(SystemExit) as stopped:
        main()
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def _assert_one_line(code: int, err: str, path: Path, words: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith(f"crnn: error: {path}: "), err
    assert words in err and len(err) < 300, err
    assert "unexpected" not in err and "Traceback" not in err


# `crnn predict` runs a .onnx file (tests/test_backends.py), so that pair is not a failure case
@pytest.mark.parametrize("case,command", [(case, command) for case in CASES for command in ("info", "eval", "predict")
                                          if not (command == "predict" and CASES[case][0].endswith(".onnx"))])
def test_hostile_model_files_through_the_cli(case, command, tmp_path, dataset, monkeypatch, capsys):
    name, make, words = CASES[case]
    path = tmp_path / name
    make(path)
    args = {"info": ["info", path], "eval": ["eval", path, dataset],
            "predict": ["predict", "--model", path, dataset / "a.png"]}[command]
    code, out, err = run_main(monkeypatch, capsys, *args)
    _assert_one_line(code, err, path, words)
    assert out == ""


def test_hostile_model_files_in_a_real_process(tmp_path, dataset):
    cases = ["onnx export", "cut at 50%", "wrong tensor shape", "pt2 export"]
    for command, case in zip(["info", "eval", "predict", "info"], cases):
        name, make, words = CASES[case]
        path = tmp_path / case.replace(" ", "-") / name
        path.parent.mkdir()
        make(path)
        args = {"info": ["info", path], "eval": ["eval", path, dataset],
                "predict": ["predict", "--model", path, dataset / "a.png"]}[command]
        result = subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=300)
        _assert_one_line(result.returncode, result.stderr, path, words)


def test_a_damaged_onnx_file_given_to_predict_is_one_line(tmp_path, dataset, monkeypatch, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(BUNDLED_ONNX.read_bytes()[:5000])
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", path, dataset / "a.png")
    _assert_one_line(code, err, path, "not a readable ONNX file")


_RAW = BUNDLED.read_bytes()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.none(), st.integers(0, len(_RAW))),
       flips=st.lists(st.tuples(st.one_of(st.integers(0, 4000), st.integers(0, len(_RAW) - 1)), st.integers(0, 255)),
                      max_size=16))
def test_cut_or_flipped_model_files_load_or_fail_in_one_line(tmp_path, cut, flips):
    data = bytearray(_RAW[:cut] if cut is not None else _RAW)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    path = tmp_path / "fuzzed.pt"
    path.write_bytes(bytes(data))
    try:
        load_model(path)
    except ModelFileError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 300, message


def _onnx_with(path: Path, key: str, value: str) -> Path:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    graph = onnx.load(str(BUNDLED_ONNX))
    for prop in graph.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save(graph, str(path))
    return path


@pytest.mark.parametrize("key, value, words", [
    ("crnn.calibration", '{"method": "isotonic", "x": [0.1, 0.9], "y": [0.5], "samples": 3}',
     "damaged crnn metadata: x and y hold 2 and 1 values"),
    ("crnn.alphabet", "AB", "damaged crnn metadata: a 2-character alphabet (3 classes), the graph gives 37"),
    ("crnn.preprocess", '{"height": 64, "channels": 1, "max_width": 800, "min_width": 4, "width_multiple": 8}',
     "damaged crnn metadata: preprocess says 64 px x 1 channel(s), the graph reads 32 px x 1"),
    ("crnn.preprocess", '{"height": 32, "channels": 1, "max_width": 800, "min_width": 4, "width_multiple": 0}',
     "damaged crnn metadata: widths 4-800 in steps of 0"),
    ("crnn.preprocess", '{"height": 32, "channels": 1, "max_width": 800, "min_width": 4, "width_scale": 0}',
     "damaged crnn metadata: width_scale 0.0: not between 0.25 and 8"),
    ("crnn.version", "3", "made by a newer crnn (export version 3; this one reads 2): upgrade crnn"),
    ("crnn.version", "x", "damaged crnn metadata: invalid export version 'x'"),
])
def test_an_onnx_files_metadata_is_checked_against_its_graph(key, value, words, tmp_path, dataset, monkeypatch,
                                                              capsys):
    path = _onnx_with(tmp_path / "m.onnx", key, value)
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", path, dataset / "a.png")
    _assert_one_line(code, err, path, words)


@pytest.mark.parametrize("field, value", [("val_cer", "bad"), ("seconds", "x"), ("val_accuracy", [1])])
def test_info_shows_a_train_record_of_wrong_types_as_it_is(field, value, tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.pt"
    _edited(lambda p: p["train"].__setitem__(field, value))(path)
    code, out, err = run_main(monkeypatch, capsys, "info", path)
    assert code == 0 and err == "", err
    assert repr(value) in out

"""Hostile or foreign files: refused without running code; dataset paths that leave the folder flagged."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import render_text
from crnn_core.config import load_model_config
from crnn_core.datacheck import check_dataset
from crnn_core.errors import ModelFileError
from crnn_core.modelfile import FORMAT_VERSION, load_model, read_payload
from crnn_core.train import train

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


class _Marker:
    """Unpickling this would call os.system('touch MARKER'): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_model(path: Path, marker: Path, base: dict | None = None) -> Path:
    payload = dict(base or {"format": "crnn-model", "version": 1, "config": {}, "alphabet": "a",
                            "preprocess": {}, "state_dict": {}})
    payload["train"] = {"note": _Marker(marker)}
    torch.save(payload, path)
    return path


def test_cli_refuses_a_malicious_model_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    evil = evil_model(tmp_path / "evil.pt", marker)
    for args in (["info", evil], ["predict", "--model", evil, str(tmp_path / "x.png")]):
        result = subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"crnn: error: {evil}: refused")
        assert not marker.exists()


def test_malicious_checkpoint_is_refused_on_resume(tmp_path, tiny_model):
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    base = read_payload(tiny_model)
    evil_model(run / "last.pt", marker, dict(base, format="crnn-checkpoint", state={}))
    with pytest.raises(ModelFileError, match="last.pt: refused"):
        train(None, None, resume=run)
    assert not marker.exists()


def test_plain_pickle_file_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"format": "crnn-model", "x": _Marker(marker)}))
    with pytest.raises(ModelFileError, match="not a torch.save zip archive"):
        load_model(path)
    legacy = tmp_path / "legacy-torch.pt"
    torch.save({"x": _Marker(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="legacy-torch.pt: not a crnn model file"):
        load_model(legacy)
    assert not marker.exists()


@pytest.mark.parametrize("change,message", [
    ({"version": FORMAT_VERSION + 1}, "made by a newer crnn .*: upgrade crnn"),
    ({"version": "1"}, "invalid format version '1'"),
    ({"format": "something-else"}, "not a crnn model file"),
])
def test_format_and_version_checks(tiny_model, tmp_path, change, message):
    path = tmp_path / "m.pt"
    torch.save(dict(read_payload(tiny_model), **change), path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_newer_checkpoint_on_resume_asks_for_an_upgrade(tiny_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(dict(read_payload(tiny_model), format="crnn-checkpoint", version=FORMAT_VERSION + 1, state={}),
               run / "last.pt")
    with pytest.raises(ModelFileError, match="upgrade crnn"):
        train(None, None, resume=run)


def test_exported_files_are_not_taken_for_model_files(tmp_path):
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch")  # a protobuf start
    with pytest.raises(ModelFileError, match="model.onnx: not a crnn model file"):
        load_model(onnx_like)
    pt2_like = tmp_path / "model.pt2"  # a zip archive, but not torch.save's
    import zipfile

    with zipfile.ZipFile(pt2_like, "w") as archive:
        archive.writestr("model/archive_format", "pt2")
    with pytest.raises(ModelFileError, match=r"model.pt2: not a crnn model file but a torch.export \(.pt2\) archive"):
        load_model(pt2_like)


# -- dataset paths leaving the folder ---------------------------------------------------------------
def test_data_check_reports_paths_outside_the_dataset_folder(tmp_path):
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    render_text("12").save(data / "imgs" / "in.png")
    render_text("34").save(tmp_path / "outside.png")
    render_text("56").save(tmp_path / "absolute.png")
    os.symlink(tmp_path / "outside.png", data / "imgs" / "link.png")
    (data / "labels.tsv").write_text(
        "imgs/in.png\t12\n"
        "../outside.png\t34\n"
        f"{tmp_path / 'absolute.png'}\t56\n"
        "imgs/link.png\t34\n"
        "imgs/../imgs/in.png\t12\n", encoding="utf-8")  # the same image again: a duplicate, not outside
    result = check_dataset(data, load_model_config("crnn-tiny"))
    found = [str(p).removeprefix(f"{data}/") for p in result.problems]
    outside = [p for p in found if "outside the dataset folder" in p]
    assert [p.split(":")[1] for p in outside] == ["2", "3", "4"]
    assert any(p.startswith("labels.tsv:5: duplicate of line 1") for p in found)
    cli = subprocess.run([*CRNN, "data", "check", str(data), "--json"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1
    problems = json.loads(cli.stdout)["splits"][0]["problems"]
    assert sum("outside the dataset folder" in p for p in problems) == 3


def test_split_folders_may_share_images_inside_the_dataset(tmp_path):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
    render_text("12").save(data / "train" / "a.png")
    render_text("34").save(data / "train" / "b.png")
    (data / "train" / "labels.tsv").write_text("a.png\t12\n", encoding="utf-8")
    (data / "val" / "labels.tsv").write_text("../train/b.png\t34\n", encoding="utf-8")
    result = check_dataset(data, load_model_config("crnn-tiny"))
    assert not any("outside" in str(p) for p in result.problems)

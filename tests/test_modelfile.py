import os

import pytest
import torch

from crnn_core.errors import ModelFileError
from crnn_core.modelfile import FORMAT_VERSION, load_model, read_payload, resolve_model


class _Evil:
    """Unpickling this calls open(marker, 'w'): proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    loaded = load_model(tiny_model)
    x = torch.randn(2, 1, 32, 80)
    with torch.no_grad():
        before = loaded.model(x)
    payload = read_payload(tiny_model)
    assert payload["format"] == "crnn-model" and payload["version"] == FORMAT_VERSION
    assert payload["alphabet"] == loaded.alphabet.chars
    with torch.no_grad():
        assert torch.equal(load_model(tiny_model).model(x), before)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "crnn-model", "version": 1, "payload": _Evil(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(evil)
    assert not marker.exists()


def test_newer_format_asks_for_an_upgrade(tiny_model, tmp_path):
    payload = read_payload(tiny_model)
    payload["version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    with pytest.raises(ModelFileError, match="upgrade crnn"):
        load_model(newer)


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04broken zip"])
def test_garbage_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="garbage.pt"):
        load_model(path)


def test_a_plain_state_dict_is_not_a_model_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match="not a crnn model file"):
        load_model(path)


def test_bundled_default_model_resolves_and_loads():
    path = resolve_model(None)
    assert path.name == "latin-print.pt" and path.is_file()
    loaded = load_model(None)
    assert set("0123456789 .,;:!?()'\"-/") | set("ABCXYZabcxyzäéßñç€") <= set(loaded.alphabet.chars)
    assert resolve_model("codes-fast").name == "codes-fast.pt"  # still bundled, by name


def test_run_folder_resolves_to_best(tiny_model):
    assert resolve_model(tiny_model.parent) == tiny_model


def test_atomic_save_leaves_no_temporary_files(tiny_model):
    leftovers = [n for n in os.listdir(tiny_model.parent) if n.endswith(".tmp")]
    assert leftovers == []

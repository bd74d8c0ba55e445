"""Bad label files: every problem is one line naming the file and line; good lines are still used."""

from __future__ import annotations

import shutil
import unicodedata

import pytest

from conftest import render_text
from crnn_core.config import TrainConfig, load_model_config
from crnn_core.data import discover
from crnn_core.errors import DatasetError
from crnn_core.train import train

TINY = dict(batch_size=16, threads=2)


@pytest.fixture
def images(tmp_path):
    for name, text in (("a", "12"), ("b", "34"), ("c", "56")):
        render_text(text).save(tmp_path / f"{name}.png")
    return tmp_path


def problems_of(folder):
    return [str(p).removeprefix(f"{folder}/") for p in discover(folder).problems]


def test_utf8_bom_and_windows_line_endings(images):
    (images / "labels.tsv").write_bytes(b"\xef\xbb\xbfa.png\t12\r\nb.png\t34\r\n")
    ds = discover(images)
    assert [(s.path.name, s.text) for s in ds.samples] == [("a.png", "12"), ("b.png", "34")]
    assert ds.problems == []


def test_old_mac_line_endings(images):
    (images / "labels.tsv").write_bytes(b"a.png\t12\rb.png\t34\r")
    assert [s.text for s in discover(images).samples] == ["12", "34"]


def test_utf16_file_is_one_clear_error(images):
    (images / "labels.tsv").write_bytes("a.png\t12\n".encode("utf-16"))
    with pytest.raises(DatasetError, match="labels.tsv: UTF-16 text; save it as UTF-8"):
        discover(images)


def test_latin1_lines_are_skipped_with_their_numbers(images):
    (images / "labels.tsv").write_bytes(b"a.png\t12\nb.png\tcaf\xe9\nc.png\t56\n")
    ds = discover(images)
    assert [s.text for s in ds.samples] == ["12", "56"]
    assert problems_of(images) == ["labels.tsv:2: not UTF-8 text (byte 0xe9 at column 10)"]


def test_every_kind_of_bad_line_is_named_and_the_rest_used(images):
    (images / "labels.tsv").write_text(
        "a.png\t12\n"          # 1 good
        "b.png 34\n"           # 2 no tab
        "\t99\n"               # 3 no path
        "c.png\t\n"            # 4 empty label
        "gone.png\t7\n"        # 5 missing image
        "a.png\t12\n"          # 6 duplicate, same label
        "./a.png\t21\n"        # 7 same image, another label
        "b.png\t34\n"          # 8 good
        "\n", encoding="utf-8")
    ds = discover(images)
    assert [(s.path.name, s.text, s.origin.rsplit("/", 1)[-1]) for s in ds.samples] == [
        ("a.png", "12", "labels.tsv:1"), ("b.png", "34", "labels.tsv:8")]
    assert problems_of(images) == [
        "labels.tsv:2: no TAB between path and label",
        "labels.tsv:3: no image path before the TAB",
        "labels.tsv:4: empty label",
        "labels.tsv:5: image 'gone.png' not found",
        "labels.tsv:6: duplicate of line 1 ('a.png'); skipped",
        "labels.tsv:7: image './a.png' listed again with another label ('21'; line 1 says '12'); skipped",
    ]


def test_line_numbers_survive_unicode_line_separators_in_labels(images):
    # str.splitlines() would split at U+2028 and U+000C and shift every later line number.
    (images / "labels.tsv").write_text("a.png\tx\u2028y\nb.png\tp\x0cq\ngone.png\t1\n", encoding="utf-8")
    assert problems_of(images) == ["labels.tsv:3: image 'gone.png' not found"]


def test_labels_are_nfc_normalised(images):
    (images / "labels.tsv").write_text("a.png\tcafe\u0301\nb.png\tcaf\u00e9\n", encoding="utf-8")
    texts = [s.text for s in discover(images).samples]
    assert texts == ["caf\u00e9", "caf\u00e9"] and all(unicodedata.is_normalized("NFC", t) for t in texts)


def test_sidecar_problems_are_named(tmp_path):
    render_text("1").save(tmp_path / "a.png")
    render_text("2").save(tmp_path / "b.png")
    render_text("3").save(tmp_path / "c.png")
    render_text("4").save(tmp_path / "d.png")
    (tmp_path / "a.gt.txt").write_text("1\n")
    (tmp_path / "b.gt.txt").write_bytes(b"\xff\xfe2")
    (tmp_path / "c.gt.txt").write_text("  \n")
    ds = discover(tmp_path)
    assert [s.text for s in ds.samples] == ["1"]
    assert sorted(str(p).removeprefix(f"{tmp_path}/") for p in ds.problems) == [
        "b.gt.txt: not UTF-8 text", "c.gt.txt: empty label", "d.png: no d.gt.txt beside it"]


def test_a_file_with_no_usable_line_is_one_error_naming_the_first_problem(images):
    (images / "labels.tsv").write_text("gone.png\t1\nb.png\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no usable samples \(2 problems, first: .*labels.tsv:1: image 'gone.png'"):
        discover(images)


def _split(tmp_path, tiny_data, train_rows: list[tuple[str, str]]):
    """DATA/train with the given (image text, label) rows, DATA/val copied from the tiny set."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    shutil.copytree(tiny_data / "val", data / "val")
    lines = []
    for i, (shown, label) in enumerate(train_rows):
        render_text(shown).save(data / "train" / f"{i}.png")
        lines.append(f"{i}.png\t{label}\n")
    (data / "train" / "labels.tsv").write_text("".join(lines), encoding="utf-8")
    return data


def test_label_too_long_for_ctc_is_skipped_naming_file_and_line(tmp_path, tiny_data):
    data = _split(tmp_path, tiny_data, [("12", "12"), ("345", "345"), ("1", "1" * 30), ("78", "78")])
    result = train(data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))
    (problem,) = result.skipped
    assert problem.where.endswith("train/labels.tsv:3")
    assert "needs 59 CTC steps" in problem.message  # 30 ones: 30 symbols + 29 blanks between repeats


def test_fine_tuning_data_outside_the_models_alphabet_names_chars_and_first_line(tmp_path, tiny_data, tiny_model):
    data = _split(tmp_path, tiny_data, [("12", "12"), ("AB", "AB"), ("34", "3Z")])
    # --alphabet keep refuses them (the default, union, adds them: tests/test_finetune.py)
    with pytest.raises(DatasetError, match=r"3 character\(s\) not in the model's alphabet: 'ABZ'"):
        train(data, tmp_path / "run", train_config=TrainConfig(epochs=1, **TINY), init=tiny_model,
              init_alphabet="keep")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_too_few_usable_samples_is_one_clear_error(tmp_path, tiny_data):
    data = _split(tmp_path, tiny_data, [("1", "1" * 30)])
    (data / "train" / "broken.png").write_bytes(b"")
    with open(data / "train" / "labels.tsv", "a") as fh:
        fh.write("broken.png\t12\ngone.png\t3\n")
    with pytest.raises(DatasetError, match=r"only 0 usable training samples \(3 skipped, first: "):
        train(data, tmp_path / "run", load_model_config("crnn-tiny"), TrainConfig(epochs=1, **TINY))

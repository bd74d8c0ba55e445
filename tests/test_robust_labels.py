"""Bad label files: every problem is one line naming the file and line; good lines are still used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import render_text
from crnn_core.alphabet import Alphabet
from crnn_core.config import TrainConfig, load_model_config
from crnn_core.data import discover
from crnn_core.errors import DatasetError
from crnn_core.modelfile import read_payload
from crnn_core.train import train

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]


def crnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=600)

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
    # Such labels are refused (no crop shows a line break), each under its own line number.
    (images / "labels.tsv").write_text("a.png\tx\u2028y\nb.png\tp\x0cq\ngone.png\t1\nc.png\t56\n", encoding="utf-8")
    assert problems_of(images) == [
        "labels.tsv:1: label holds a line break (U+2028 LINE SEPARATOR, character 2 of 3)",
        "labels.tsv:2: label holds a control character (U+000C form feed, character 2 of 3)",
        "labels.tsv:3: image 'gone.png' not found"]


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


# -- characters no crop can show: control characters, line breaks, surrogates, noncharacters --------
def test_a_third_column_is_named_and_never_reaches_the_alphabet(images):
    (images / "labels.tsv").write_text("a.png\t12\textra\nb.png\t34\n", encoding="utf-8")
    ds = discover(images)
    assert [s.text for s in ds.samples] == ["34"]
    assert problems_of(images) == ["labels.tsv:1: more than one TAB (a third column?): lines are "
                                   "PATH<TAB>LABEL, and a label cannot hold a TAB"]


@pytest.mark.parametrize("char,name", [("\x00", "U+0000 NUL"), ("\x1b", "U+001B escape"), ("\r", "U+000D carriage return"),
                                       ("\x7f", "U+007F DEL"), ("\x85", "U+0085 next line"), ("\x9b", "U+009B"),
                                       ("\u2029", "U+2029 PARAGRAPH SEPARATOR"), ("\ufffe", "U+FFFE")])
def test_control_characters_inside_a_list_file_label_are_named(images, char, name):
    (images / "labels.tsv").write_text(f"a.png\t1{char}2\nb.png\t34\n", encoding="utf-8", newline="")
    (problem,) = problems_of(images)
    assert problem.startswith("labels.tsv:1: label holds ") and f"({name}, character 2 of 3)" in problem


def test_format_characters_are_allowed(images):
    # ZWNJ and ZWJ are part of how Persian and Indic scripts (and emoji) are written.
    (images / "labels.tsv").write_text("a.png\t\u0645\u200c\u06cc\nb.png\t\u0915\u094d\u200d\u0937\n", encoding="utf-8")
    assert [len(s.text) for s in discover(images).samples] == [3, 4]


def test_a_two_line_sidecar_is_a_problem_and_a_final_newline_is_not(tmp_path):
    for name in "abc":
        render_text("12").save(tmp_path / f"{name}.png")
    (tmp_path / "a.gt.txt").write_text("12\n34\n")
    (tmp_path / "b.gt.txt").write_bytes(b"12\r\n")
    (tmp_path / "c.gt.txt").write_bytes(b"1\x002\n")
    ds = discover(tmp_path)
    assert [(s.path.name, s.text) for s in ds.samples] == [("b.png", "12")]
    assert sorted(str(p).removeprefix(f"{tmp_path}/") for p in ds.problems) == [
        "a.gt.txt: more than one line: a sidecar holds one label, on one line",
        "c.gt.txt: label holds a control character (U+0000 NUL, character 2 of 3)"]


def test_file_name_labels_with_control_characters_or_nothing_left_are_problems(tmp_path):
    for name in ("AB", "C\tD", "_2", "EF_3"):
        render_text("x").save(tmp_path / f"{name}.png")
    undecodable = tmp_path.joinpath(b"G\xff".decode("utf-8", "surrogateescape") + ".png")
    render_text("x").save(undecodable)
    ds = discover(tmp_path, labels="filename")
    assert sorted(s.text for s in ds.samples) == ["AB", "EF"]
    assert sorted(str(p).removeprefix(f"{tmp_path}/") for p in ds.problems) == sorted([
        "C\tD.png: label holds a control character (U+0009 TAB, character 2 of 3)",
        "_2.png: empty label",
        f"{undecodable.name}: label holds a lone surrogate (U+DCFF, character 2 of 2; the file name is not UTF-8)"])


_REFUSED = st.one_of(st.characters(categories=["Cc", "Zl", "Zp"]),
                     st.sampled_from(["\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff"]))
_VISIBLE = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=4)


def _refused(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") or char in "\ufffe\uffff\ufdd0\U0001fffe\U0010ffff"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_VISIBLE, st.one_of(st.none(), _REFUSED), _VISIBLE), min_size=1, max_size=8))
def test_labels_with_refused_characters_are_reported_and_never_reach_an_alphabet(images, rows):
    # LF ends a list-file line, so it cannot be inside one; sidecars cover it (test above).
    rows = [(a, c, b) for a, c, b in rows if c != "\n"] or [("1", None, "2")]
    lines = [f"a.png\t{a}{c or ''}{b}\n" for a, c, b in rows] + ["b.png\t34\n"]  # b.png: one good line
    (images / "labels.tsv").write_text("".join(lines), encoding="utf-8", newline="")
    ds = discover(images)
    assert not any(_refused(ch) for ch in Alphabet.from_texts(s.text for s in ds.samples).chars)
    by_line = {p.where.rsplit(":", 1)[1]: p.message for p in ds.problems}
    for number, (_, char, _) in enumerate(rows, start=1):
        if char is not None:
            assert by_line[str(number)].startswith(("label holds ", "more than one TAB")), by_line
    clean = [n for n, (_, c, _) in enumerate(rows, start=1) if c is None]
    kept = [s.origin.rsplit(":", 1)[1] for s in ds.samples]
    # the first clean line is used (later ones repeat its image), and b.png's line
    assert kept == [str(n) for n in clean[:1]] + [str(len(rows) + 1)]


def test_cli_data_check_lists_control_characters_and_train_skips_them(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train_dir = data / "train"
    with open(train_dir / "labels.tsv", "a", encoding="utf-8") as fh:  # three more lines: 49, 50, 51
        fh.write("img000.png\t12\textra\nimg001.png\t3\x1b4\nimg002.png\t5\u20286\n")
    check = crnn("data", "check", data, "--json")
    assert check.returncode == 1, check.stderr
    report = json.loads(check.stdout)
    assert not any(_refused(ch) for ch in report["alphabet"])
    problems = [p.removeprefix(f"{train_dir}/") for s in report["splits"] for p in s["problems"]]
    assert [p.split(": ")[0] for p in problems] == ["labels.tsv:49", "labels.tsv:50", "labels.tsv:51"]
    run = tmp_path / "run"
    trained = crnn("train", data, "--model", "crnn-tiny", "--epochs", "1", "--batch-size", "16", "--out", run)
    assert trained.returncode == 0, trained.stderr
    assert "skipped 3 sample(s)" in trained.stderr and "label holds a control character" in trained.stderr
    alphabet = read_payload(run / "best.pt")["alphabet"]
    assert alphabet and not any(_refused(ch) for ch in alphabet)


# -- list-file paths are verbatim --------------------------------------------------------------------
def test_cli_paths_keep_their_spaces(images):
    render_text("78").save(images / " lead.png")
    (images / "labels.tsv").write_text(" lead.png\t78\na.png \t12\nb.png\t 34 \n", encoding="utf-8")
    ds = discover(images)
    assert [(s.path.name, s.text) for s in ds.samples] == [(" lead.png", "78"), ("b.png", "34")]  # labels: stripped
    check = crnn("data", "check", images, "--json")
    assert check.returncode == 1
    (problem,) = [p for s in json.loads(check.stdout)["splits"] for p in s["problems"]]
    assert problem == (f"{images}/labels.tsv:2: image 'a.png ' not found "
                       "('a.png' exists: paths are read as written, spaces included)")


# -- long values are cut in messages -------------------------------------------------------------------
def test_cli_long_labels_and_paths_are_cut_in_messages(images):
    long_label, long_path = "1" * 200_000, "x" * 5000 + ".png"
    (images / "labels.tsv").write_text(f"a.png\t12\na.png\t{long_label}\n{long_path}\t3\nb.png\t34\n", encoding="utf-8")
    check = crnn("data", "check", images, "--json")
    problems = [p for s in json.loads(check.stdout)["splits"] for p in s["problems"]]
    assert len(problems) == 2 and all(len(p) < 300 for p in problems), [p[:300] for p in problems]
    assert "line 1 says '12'" in problems[0] and "… (200,000 characters)" in problems[0]
    assert "… (5,004 characters) not found" in problems[1]


def test_cli_data_check_cuts_a_long_label_too_long_for_ctc(tmp_path):
    render_text("12").save(tmp_path / "a.png")
    (tmp_path / "a.gt.txt").write_text("1" * 200_000 + "\n")
    check = crnn("data", "check", tmp_path, "--json")
    (problem,) = [p for s in json.loads(check.stdout)["splits"] for p in s["problems"]]
    assert len(problem) < 400

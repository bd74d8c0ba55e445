"""`crnn synth`: determinism across worker counts, glyph coverage, output formats, patterns, and that
`crnn data check` and `crnn train` accept what it writes."""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from crnn_core.errors import UsageError
from crnn_core.synth_fonts import BUILTIN, find_fonts
from crnn_core.synth_text import PatternSource, clean_label

CRNN = [sys.executable, "-m", "crnn_core.cli.app"]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def crnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_on_one_or_two_workers(tmp_path):
    common = ["--pattern", "[A-Z]{2}-\\d{3,5}", "-n", "24", "--seed", "7", "--fonts", BUILTIN,
              "--jpeg", "0.5", "--neighbours", "0.5", "--underline", "0.5", "--texture", "5-30"]
    one = crnn("synth", tmp_path / "one", *common, "--workers", "1")
    two = crnn("synth", tmp_path / "two", *common, "--workers", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert one.stdout.strip() == str(tmp_path / "one")
    written = files(tmp_path / "one")
    assert len(written) == 24 + 2  # images and a labels.tsv per split
    assert written == files(tmp_path / "two")
    other = crnn("synth", tmp_path / "other", *common, "--workers", "1", "--seed", "8")
    assert files(tmp_path / "other") != written, other.stderr


def test_fonts_lacking_a_character_are_passed_over_and_counted(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("ABC 12\ncafé\n中文\nXYZ\n", encoding="utf-8")
    fonts = [BUILTIN] + ([str(DEJAVU)] if DEJAVU.is_file() else [])
    args = ["synth", tmp_path / "out", "--text", lines, "--json", "--val-fraction", "0", "--workers", "1"]
    for font in fonts:
        args += ["--fonts", font]
    result = crnn(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    labels = (tmp_path / "out" / "train" / "labels.tsv").read_text(encoding="utf-8")
    # Pillow's built-in font has neither é nor CJK; DejaVu has é but no CJK: 中文 is never drawn
    assert "中文" not in labels and summary["undrawable_samples"] == 1
    assert summary["undrawable_chars"] == "中文"
    builtin = summary["font_skips"][BUILTIN]
    assert set(builtin["chars"]) >= {"中", "文"}
    if DEJAVU.is_file():
        assert "café" in labels and "é" in builtin["chars"]
        assert summary["splits"] == {"train": 3}
    else:
        assert "café" not in labels and summary["undrawable_samples"] == 2
    assert summary["alphabet"] == "".join(sorted(set("".join(line.split("\t")[1] for line in labels.splitlines()))))
    # Text no font can draw at all: no data set, so a failure, not a result (exit 1, one line).
    lines.write_text("中文\n", encoding="utf-8")
    result = crnn("synth", tmp_path / "none", "--text", lines, "--val-fraction", "0", "--workers", "1", "--fonts", BUILTIN)
    assert result.returncode == 1 and result.stdout == ""
    assert "no sample written: all 1 given up" in result.stderr.strip().splitlines()[-1]


def test_fonts_that_cannot_be_opened_are_counted(tmp_path):
    folder = tmp_path / "fonts"
    folder.mkdir()
    (folder / "broken.ttf").write_bytes(b"not a font at all")
    found = find_fonts([str(folder), BUILTIN])
    assert [f.name for f in found.fonts] == [BUILTIN]
    assert [name for name, _ in found.unusable] == [str(folder / "broken.ttf")]
    result = crnn("synth", tmp_path / "out", "--pattern", "\\d{3}", "-n", "3", "--fonts", folder)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "no usable fonts" in result.stderr and "broken.ttf" in result.stderr


def _letter_font(path: Path, framed: bool) -> str:
    """A TrueType font whose letters and digits are all one open 'V' shape, or that shape in a closed frame."""
    from fontTools.agl import UV2AGL
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def glyph(outlines):
        pen = TTGlyphPen(None)
        for points in outlines:
            pen.moveTo(points[0])
            for point in points[1:]:
                pen.lineTo(point)
            pen.closePath()
        return pen.glyph()

    vee = [(50, 700), (130, 700), (250, 100), (370, 700), (450, 700), (290, 0), (210, 0)]
    frame = [[(0, -100), (0, 800), (500, 800), (500, -100)], [(60, -40), (440, -40), (440, 740), (60, 740)]]
    shape = glyph([vee, *frame] if framed else [vee])
    chars = string.ascii_letters + string.digits
    order = [".notdef", "space", *(UV2AGL[ord(c)] for c in chars)]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(order)
    builder.setupCharacterMap({32: "space", **{ord(c): UV2AGL[ord(c)] for c in chars}})
    builder.setupGlyf({name: glyph([]) if name in (".notdef", "space") else shape for name in order})
    builder.setupHorizontalMetrics({name: (560, 0) for name in order})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "Framed" if framed else "Open", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.save(str(path))
    return str(path)


def test_key_cap_fonts_are_passed_over_with_the_reason(tmp_path):
    """A font that draws every letter in a frame (Linux Biolinum Keyboard) covers a-z, yet teaches boxes."""
    folder = tmp_path / "fonts"
    folder.mkdir()
    open_font = _letter_font(folder / "open.ttf", framed=False)
    framed_font = _letter_font(folder / "framed.ttf", framed=True)
    found = find_fonts([str(folder)])
    assert [f.name for f in found.fonts] == [open_font]
    assert found.unusable == [(framed_font, "ValueError: a key-cap font: it draws each letter inside a frame")]
    assert set(string.ascii_letters) <= found.fonts[0].chars


@pytest.mark.parametrize("labels,image_format", [("tsv", "png"), ("tsv", "jpg"), ("sidecar", "png"), ("sidecar", "jpg")])
def test_every_output_format_reads_back(tmp_path, labels, image_format):
    from crnn_core.data import discover

    out = tmp_path / "out"
    result = crnn("synth", out, "--pattern", "[0-9]{2,6}", "-n", "10", "--val-fraction", "0.3", "--fonts", BUILTIN,
                  "--labels", labels, "--image-format", image_format, "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["splits"] == {"train": 7, "val": 3}
    for split, indices in (("train", range(7)), ("val", range(7, 10))):
        dataset = discover(out / split)
        assert [s.path.name for s in dataset.samples] == [f"{i:06d}.{image_format}" for i in indices]
        for sample in dataset.samples:
            assert re.fullmatch("[0-9]{2,6}", sample.text)
            with Image.open(sample.path) as image:
                assert image.format == {"png": "PNG", "jpg": "JPEG"}[image_format] and image.height == 32
        assert (out / split / "labels.tsv").is_file() == (labels == "tsv")
        assert any((out / split).glob("*.gt.txt")) == (labels == "sidecar")


def test_patterns_sample_only_what_they_match():
    for pattern in ["[A-Z]{3} [0-9]{4}", "(AB|C[D-F])-\\d{2,4}", "[A-Z][a-z]+ ?\\d*\\s\\w", "[A-HJ-NP-Z0-9]{5,7}",
                    "x(y|z)?\\.[a\\-b]{1,}", "(?:0|[1-9][0-9]{0,2})(,[0-9]{3})*"]:
        source = PatternSource(pattern)
        rng = random.Random(0)
        samples = [source.sample(rng, i) for i in range(300)]
        assert all(re.fullmatch(pattern, s) for s in samples), pattern
        assert len(set(samples)) > 20, pattern
        assert set("".join(samples)) <= set(source.chars())


@pytest.mark.parametrize("pattern,message", [("[A-Z", "unexpected end"), ("[^0-9]", "negated"),
                                             ("\\q", "unknown escape"), ("a{3,1}", "bad repeat"), ("(ab", "')'"),
                                             ("ab)", "unbalanced"), ("*a", "not supported")])
def test_bad_patterns_name_the_problem(pattern, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        PatternSource(pattern)


def test_bad_usage_is_one_line(tmp_path):
    both = crnn("synth", tmp_path / "a", "--pattern", "\\d", "--words", tmp_path / "w.txt")
    assert both.returncode == 2 and "give one of --text FILE, --words FILE or --pattern" in both.stderr
    bad_pattern = crnn("synth", tmp_path / "b", "--pattern", "[0-9", "--fonts", BUILTIN)
    assert bad_pattern.returncode == 2 and bad_pattern.stderr.startswith("crnn: error: --pattern '[0-9'")
    bad_range = crnn("synth", tmp_path / "c", "--pattern", "\\d", "--noise", "9-3")
    assert bad_range.returncode == 2 and "--noise" in bad_range.stderr


def test_refuses_a_folder_that_is_not_empty_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    args = ["synth", out, "--pattern", "\\d{3}", "-n", "4", "--fonts", BUILTIN, "--workers", "1"]
    refused = crnn(*args)
    assert refused.returncode == 1 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    forced = crnn(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "mine.txt").read_text() == "keep me" and (out / "train" / "labels.tsv").is_file()


def test_labels_are_clean_and_words_make_lines(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("alpha\nbe\tta\ngamma\nCafe\u0301\n\n", encoding="utf-8")
    assert clean_label("  e\u0301 ") == "\u00e9" and clean_label("a\tb") is None and clean_label("a\u200bb") is None
    result = crnn("synth", tmp_path / "out", "--words", words, "--words-per-line", "2-3", "-n", "12",
                  "--fonts", BUILTIN, "--json", "--workers", "1", "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dropped_source_lines"] == 1  # the word with a TAB
    texts = [line.split("\t")[1] for line in (tmp_path / "out" / "train" / "labels.tsv").read_text("utf-8").splitlines()]
    assert all(2 <= len(t.split(" ")) <= 3 and set(t.split(" ")) <= {"alpha", "gamma", "Café"} for t in texts)
    assert summary["undrawable_samples"] == 0  # the built-in font has no é: those lines were redrawn


def test_help_documents_every_knob():
    from crnn_core.synth_settings import KNOB_HELP

    result = crnn("synth", "--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for name in KNOB_HELP:
        assert "--" + name.replace("_", "-") in flat


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    """480 three-digit codes in Pillow's font, lightly degraded: small enough to learn in seconds."""
    out = tmp_path_factory.mktemp("synth") / "digits"
    result = crnn("synth", out, "--pattern", "[0-9]{3}", "-n", "480", "--fonts", BUILTIN, "--seed", "3",
                  "--workers", "2", "--font-size", "28-32", "--noise", "0-3", "--texture", "0-5", "--blur", "0-0.3",
                  "--rotate", "0.5", "--shear", "0.05", "--perspective", "0", "--jpeg", "0", "--neighbours", "0",
                  "--underline", "0", "--invert", "0", "--pad-x", "0.1-0.2", "--pad-y", "0.1")
    assert result.returncode == 0, result.stderr
    return out


def test_data_check_is_clean_on_a_synth_set(synth_set):
    result = crnn("data", "check", synth_set)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout


def test_train_learns_from_a_tiny_synth_set(synth_set, tmp_path):
    run = tmp_path / "run"
    # fp32 and one thread: the fastest settings for a model this small on a shared 2-core machine
    result = crnn("train", synth_set, "--model", "crnn-tiny", "--epochs", "12", "--batch-size", "16",
                  "--out", run, "--threads", "1", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(h["val_accuracy"] for h in history) >= 0.5, history
    assert min(h["val_cer"] for h in history) < 0.5 * history[0]["val_cer"], history

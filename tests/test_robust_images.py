"""Bad and unusual image files: each is read correctly or refused with one ImageError naming it."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import render_text
from crnn_core.data import Preprocess, load_all
from crnn_core.errors import ImageError

PRE = Preprocess(height=32, channels=1)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width x height but holds only a few rows: a tiny bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\x00" + b"\xff" * width) * 2, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# -- refused, with the file named ---------------------------------------------------------
def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.png: empty file \(0 bytes\)"):
        PRE.load(path)


@pytest.mark.parametrize("name,content", [("notes.jpg", b"hello, this is text\n"),
                                          ("page.png", b"<html><body>404</body></html>"),
                                          ("data.tif", bytes(range(256)) * 4)])
def test_non_image_with_an_image_extension(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"{name}: not an image Pillow can read"):
        PRE.load(path)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "gif"])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.95])
def test_truncated_files(tmp_path, fmt, fraction):
    buffer = io.BytesIO()
    render_text("12345").save(buffer, "JPEG" if fmt == "jpg" else fmt.upper())
    raw = buffer.getvalue()
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(ImageError, match=f"cut.{fmt}: "):
        PRE.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nope.png: no such file"):
        PRE.load(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="dir.png: is a folder"):
        PRE.load(tmp_path / "dir.png")


def test_decompression_bomb_is_our_error_from_the_header_alone(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))  # 10^10 pixels in a ~500-byte file
    assert path.stat().st_size < 2000
    with pytest.raises(ImageError, match="bomb.png: image too large"):
        PRE.load(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_pillow_only_warns_about_are_refused_before_decoding(tmp_path, monkeypatch):
    # Between Pillow's limit and twice it, Pillow decodes anyway after a warning; we refuse.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    path = tmp_path / "big.png"
    Image.new("L", (150, 100), 255).save(path)  # 15,000 px: 1.5x the limit
    with pytest.raises(ImageError, match=r"big.png: image too large: 150 x 100 = 15,000 pixels"):
        PRE.load(path)
    Image.new("L", (100, 100), 255).save(tmp_path / "ok.png")  # exactly at the limit: fine
    assert PRE.load(tmp_path / "ok.png").shape == (32, 32)


def test_cli_bomb_is_one_line_without_pillow_warnings(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(12_000, 9_000))  # 108 M px: Pillow warns, does not raise
    result = subprocess.run([sys.executable, "-m", "crnn_core.cli.app", "predict", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("crnn: error:") and "bomb.png: image too large" in lines[0]
    assert "Warning" not in result.stderr


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged metadata
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # a damaged size field; we refuse it
def test_fuzzed_image_files_never_raise_anything_but_image_error(tmp_path):
    """Random byte edits of real files in every format: a result or ImageError, nothing else."""
    seeds = []
    for fmt, kwargs in [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}),
                        ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {}), ("PPM", {})]:
        buffer = io.BytesIO()
        render_text("4711").save(buffer, fmt, **kwargs)
        seeds.append((fmt.lower(), buffer.getvalue()))
    rng = random.Random(1234)
    read = refused = 0
    for i in range(300):
        fmt, raw = rng.choice(seeds)
        data = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[pos] = rng.randrange(256)
            else:
                del data[pos: pos + rng.randint(1, 40)]
        path = tmp_path / f"f{i}.{fmt}"
        path.write_bytes(bytes(data))
        try:
            array = PRE.load(path)
        except ImageError as exc:
            assert str(exc).startswith(str(path))
            refused += 1
        else:
            assert array.dtype == np.uint8 and array.shape[0] == 32
            read += 1
    assert read + refused == 300 and refused > 0


# -- read correctly -------------------------------------------------------------------------
def test_sixteen_bit_grayscale_in_every_byte_order(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    Image.fromarray(values).save(tmp_path / "g16.png")  # opens as I;16
    out = PRE.load(tmp_path / "g16.png")
    assert out[:, 0].max() == 0 and out[:, 63].min() == 255
    for mode, dtype in (("I;16B", ">u2"), ("I;16L", "<u2")):
        image = Image.frombytes(mode, (64, 32), values.astype(dtype).tobytes())
        arr = PRE.from_pil(image)
        assert arr[:, 0].max() == 0 and arr[:, 63].min() == 255, mode


def test_float_images_in_zero_one(tmp_path):
    image = Image.fromarray(np.full((32, 64), 1.0, np.float32))
    assert PRE.from_pil(image).min() == 255


@pytest.mark.parametrize("suffix", ["jpg", "tif"])
def test_cmyk(tmp_path, suffix):
    black = Image.new("CMYK", (64, 32), (0, 0, 0, 255))
    black.paste(Image.new("CMYK", (32, 32), (0, 0, 0, 0)), (32, 0))  # right half white
    black.save(tmp_path / f"c.{suffix}")
    out = PRE.load(tmp_path / f"c.{suffix}")
    assert out[:, :28].mean() < 10 and out[:, 36:64].mean() > 245
    rgb = Preprocess(channels=3).load(tmp_path / f"c.{suffix}")
    assert rgb.shape == (32, 64, 3) and rgb[:, :28].mean() < 10


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (64, 32), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.save(tmp_path / "p.png")
    assert PRE.load(tmp_path / "p.png").min() == 255
    image.info["transparency"] = 1  # index 1 (white) transparent: composited on white paper
    image.save(tmp_path / "pt.png", transparency=1)
    assert PRE.load(tmp_path / "pt.png").min() == 255


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_animated_first_frame(tmp_path, suffix):
    white, black = Image.new("RGB", (64, 32), "white"), Image.new("RGB", (64, 32), "black")
    for first, second, expected in ((white, black, 255), (black, white, 0)):
        path = tmp_path / f"anim.{suffix}"
        first.save(path, save_all=True, append_images=[second], duration=100, loop=0,
                   **({"lossless": True} if suffix == "webp" else {}))
        with Image.open(path) as image:
            assert image.is_animated and image.n_frames == 2
        assert int(PRE.load(path).mean()) == expected


@pytest.mark.parametrize("size,width", [((1, 1), 32), ((1, 32), 8), ((1, 1000), 8), ((1000, 1), 800), ((3, 2), 48)])
def test_tiny_and_extreme_aspect_images(tmp_path, size, width):
    path = tmp_path / "tiny.png"
    Image.new("L", size, 200).save(path)
    out = PRE.load(path)
    assert out.shape == (32, width) and out.dtype == np.uint8


def test_exif_rotation_is_honoured_on_real_content(tmp_path):
    line = render_text("12345")
    line.save(tmp_path / "upright.jpg", quality=95)
    exif = line.getexif()
    exif[0x0112] = 8  # "turn 90 degrees counter-clockwise to show"
    line.rotate(-90, expand=True).save(tmp_path / "stored-rotated.jpg", exif=exif, quality=95)
    upright, shown = PRE.load(tmp_path / "upright.jpg"), PRE.load(tmp_path / "stored-rotated.jpg")
    assert shown.shape == upright.shape
    diff = np.abs(shown.astype(int) - upright.astype(int)).mean()
    flipped = np.abs(shown[::-1, ::-1].astype(int) - upright.astype(int)).mean()
    assert diff < 3 < 10 < flipped  # same picture, and at full resolution (JPEG draft honours the turn)


def test_load_all_reports_each_bad_file_and_keeps_the_good(tmp_path):
    good = tmp_path / "good.png"
    render_text("12").save(good)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("nope")
    paths = [good, tmp_path / "zero.png", tmp_path / "missing.png", tmp_path / "text.jpg", good]
    arrays, problems = load_all(paths, PRE, threads=2)
    assert [a is not None for a in arrays] == [True, False, False, False, True]
    assert [p.where.rsplit("/", 1)[-1] for p in problems] == ["zero.png", "missing.png", "text.jpg"]


# -- modes I (32-bit int), I;16 and F (32-bit float): scaled by the range the values use ---------------
def _bands(values, mode: str) -> Image.Image:
    """Three 32 x 32 bands of the given values, in a 96 x 32 image of `mode` (no resize at height 32)."""
    row = np.repeat(np.asarray(values, dtype=np.float64), 32)
    array = np.tile(row, (32, 1))
    if mode == "I;16":
        return Image.fromarray(array.astype(np.uint16))
    return Image.fromarray(array.astype(np.int32 if mode == "I" else np.float32))


@pytest.mark.parametrize("mode,values,expected", [
    ("I", [0, 128, 255], [0, 128, 255]),            # 8-bit data in a 32-bit container: kept (was 0, 0, 0)
    ("I", [0, 32768, 65535], [0, 128, 255]),        # 16-bit data: / 256, as for I;16
    ("I", [-100, 0, 100], [0, 127, 255]),           # outside both: stretched from min to max
    ("I", [0, 100_000, 200_000], [0, 127, 255]),
    ("I;16", [0, 32768, 65535], [0, 128, 255]),     # the type's own range (unchanged)
    ("I;16", [0, 128, 255], [0, 0, 0]),             # ... even when only the low values are used
    ("F", [0.0, 0.5, 1.0], [0, 127, 255]),          # [0, 1] floats: x 255 (unchanged)
    ("F", [0.0, 128.0, 255.0], [0, 128, 255]),      # 8-bit values (unchanged)
    ("F", [0.0, 32768.0, 65535.0], [0, 128, 255]),  # 16-bit values (were clipped to white)
    ("F", [-1.0, 0.0, 1.0], [0, 127, 255]),         # signed floats (negatives were clipped to black)
])
def test_wide_grey_modes_with_known_values(mode, values, expected):
    image = _bands(values, mode)
    assert image.mode == mode
    out = PRE.from_pil(image)
    assert out.shape == (32, 96)
    assert [int(out[16, 16 + 32 * i]) for i in range(3)] == expected


def test_cli_a_32_bit_tiff_of_8_bit_values_reads_like_the_png(tmp_path):
    import subprocess
    import sys

    gray = render_text("4821")
    gray.save(tmp_path / "line.png")
    Image.fromarray(np.asarray(gray).astype(np.int32)).save(tmp_path / "line.tif")
    assert Image.open(tmp_path / "line.tif").mode == "I"
    result = subprocess.run([sys.executable, "-m", "crnn_core.cli.app", "predict", "--format", "tsv",
                             tmp_path / "line.png", tmp_path / "line.tif"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (_, png_text, png_conf), (_, tif_text, tif_conf) = [line.split("\t") for line in result.stdout.splitlines()]
    assert (tif_text, tif_conf) == (png_text, png_conf)

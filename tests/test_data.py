import numpy as np
import pytest
from PIL import Image

from conftest import make_list_dataset, render_text
from crnn_core.data import (Preprocess, discover, in_holdout, padding_fraction, split_dataset, to_tensor_batch,
                            width_batches)
from crnn_core.errors import DatasetError, ImageError


@pytest.mark.parametrize("name", ["labels.tsv", "labels.txt", "gt.txt"])
def test_list_file_formats(tmp_path, name):
    render_text("12").save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    render_text("34").save(tmp_path / "sub" / "b.jpg")
    (tmp_path / name).write_text("a.png\t12\n\nsub/b.jpg\t 34 \n", encoding="utf-8")
    ds = discover(tmp_path)
    assert [(s.path.name, s.text) for s in ds.samples] == [("a.png", "12"), ("b.jpg", "34")]
    assert ds.samples[0].origin.endswith(f"{name}:1")


def test_list_file_given_directly_with_bom_and_crlf(tmp_path):
    render_text("7").save(tmp_path / "x.png")
    (tmp_path / "mine.tsv").write_bytes("\ufeffx.png\t7\r\n".encode("utf-8"))
    ds = discover(tmp_path / "mine.tsv")
    assert [(s.path.name, s.text) for s in ds.samples] == [("x.png", "7")]


def test_list_file_problems_are_reported_with_line_numbers(tmp_path):
    render_text("1").save(tmp_path / "ok.png")
    (tmp_path / "labels.tsv").write_text("ok.png\t1\nno-tab-here\nmissing.png\t2\nok.png\t\n", encoding="utf-8")
    ds = discover(tmp_path)
    assert len(ds.samples) == 1
    messages = [str(p) for p in ds.problems]
    assert any("labels.tsv:2" in m and "no TAB" in m for m in messages)
    assert any("labels.tsv:3" in m and "not found" in m for m in messages)
    assert any("labels.tsv:4" in m and "empty label" in m for m in messages)


def test_non_utf8_line_is_reported_with_its_number_and_skipped(tmp_path):
    render_text("1").save(tmp_path / "a.png")
    (tmp_path / "labels.tsv").write_bytes(b"a.png\tok\nb.png\t\xff\xfe\n")
    ds = discover(tmp_path)
    assert [s.text for s in ds.samples] == ["ok"]
    assert [str(p).split("/")[-1] for p in ds.problems] == ["labels.tsv:2: not UTF-8 text (byte 0xff at column 7)"]


def test_sidecar_format(sidecar_copy):
    ds = discover(sidecar_copy)
    assert len(ds.samples) == 24
    first = ds.samples[0]
    assert first.text == (first.path.with_name(first.path.stem + ".gt.txt")).read_text().strip()


def test_filename_labels_drop_copy_suffix(tmp_path):
    render_text("7GX2K").save(tmp_path / "7GX2K.png")
    render_text("7GX2K").save(tmp_path / "7GX2K_2.png")
    render_text("AB").save(tmp_path / "AB.jpg")
    ds = discover(tmp_path, labels="filename")
    assert sorted(s.text for s in ds.samples) == ["7GX2K", "7GX2K", "AB"]


def test_folder_without_labels_suggests_filename_mode(tmp_path):
    render_text("1").save(tmp_path / "1.png")
    with pytest.raises(DatasetError, match="--labels filename"):
        discover(tmp_path)


def test_train_val_subfolders_are_the_splits(tiny_data):
    train, val = split_dataset(tiny_data)
    assert (len(train), len(val)) == (48, 12)


def test_explicit_val_overrides(tiny_data):
    train, val = split_dataset(tiny_data / "train", val=tiny_data / "val")
    assert (len(train), len(val)) == (48, 12)


def test_hashed_holdout_is_stable_and_about_the_fraction(tmp_path):
    make_list_dataset(tmp_path, 200, seed=3)
    train1, val1 = split_dataset(tmp_path, val_fraction=0.2)
    train2, val2 = split_dataset(tmp_path, val_fraction=0.2)
    assert [s.path for s in val1.samples] == [s.path for s in val2.samples]
    assert 20 <= len(val1) <= 60
    assert not {s.path for s in train1.samples} & {s.path for s in val1.samples}
    assert all(in_holdout(s.path, 0.2) for s in val1.samples)


def test_preprocess_keeps_aspect_and_height():
    pre = Preprocess(height=32, channels=1, max_width=800, min_width=4)
    array = pre.from_pil(Image.new("L", (200, 50), 255))
    assert array.shape == (32, 128) and array.dtype == np.uint8


def test_preprocess_caps_width_and_floors_it():
    pre = Preprocess(height=32, channels=1, max_width=100, min_width=8)
    assert pre.from_pil(Image.new("L", (2000, 32))).shape == (32, 100)
    assert pre.from_pil(Image.new("L", (1, 32))).shape == (32, 8)


def test_preprocess_rgb_and_grayscale_modes():
    rgb = Image.new("RGB", (64, 32), (255, 0, 0))
    assert Preprocess(channels=3).from_pil(rgb).shape == (32, 64, 3)
    assert Preprocess(channels=1).from_pil(rgb).shape == (32, 64)
    rgba = Image.new("RGBA", (64, 32), (0, 0, 0, 0))  # transparent -> white paper
    assert Preprocess(channels=1).from_pil(rgba).min() == 255


def test_preprocess_honours_exif_orientation(tmp_path):
    image = Image.new("L", (40, 20), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "rot.jpg", exif=exif)
    array = Preprocess(height=32).load(tmp_path / "rot.jpg")
    assert array.shape == (32, 16)  # displayed as 20 x 40, portrait


def test_corrupt_image_raises_image_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="bad.png"):
        Preprocess().load(bad)


def test_width_batches_group_similar_widths():
    rng = np.random.default_rng(0)
    widths = rng.integers(40, 400, size=500).tolist()
    shuffled = [b for b in np.array_split(rng.permutation(500), 16)]
    bucketed = width_batches(widths, 32, np.random.default_rng(1))
    assert sorted(i for b in bucketed for i in b) == list(range(500))
    assert padding_fraction(widths, bucketed) < 0.1 < padding_fraction(widths, [b.tolist() for b in shuffled])


def test_tensor_batch_pads_with_the_background():
    a = np.full((32, 10), 200, np.uint8)
    b = np.full((32, 20), 50, np.uint8)
    batch, widths = to_tensor_batch([a, b])
    assert batch.shape == (2, 1, 32, 20) and widths == [10, 20]
    assert float(batch[0, 0, 0, 15]) == pytest.approx(200 / 127.5 - 1)


def test_widths_are_padded_to_a_multiple_with_background():
    pre = Preprocess(height=32, width_multiple=8)
    array = pre.from_pil(Image.new("L", (100, 32), 222))
    assert array.shape == (32, 104) and (array[:, 100:] == 222).all()


def test_equal_width_batches_never_mix_widths():
    from crnn_core.data import equal_width_batches

    widths = [16, 24, 16, 16, 24, 32]
    batches = equal_width_batches(widths, 2)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len({widths[i] for i in b}) == 1 and len(b) <= 2 for b in batches)


def test_timed_chunks_flush_on_silence_and_pass_on_errors():
    import time

    from crnn_core.data import timed_chunks

    def slow():
        yield 1
        yield 2
        time.sleep(0.3)
        yield 3

    assert list(timed_chunks(slow(), size=10, max_wait=0.1)) == [[1, 2], [3]]

    def broken():
        yield 1
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    with pytest.raises(UnicodeDecodeError):
        list(timed_chunks(broken(), size=10, max_wait=0.1))

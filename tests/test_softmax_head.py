"""The fixed-length softmax head and the seed article's network (models/seed-fusion.yaml)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import render_text
from crnn_core.config import ModelConfig, load_model_config
from crnn_core.decode import best_text, positions
from crnn_core.head_layers import bin_means
from crnn_core.heads import decode_batch
from crnn_core.errors import ConfigError, DatasetError
from crnn_core.model import CRNN, parameter_breakdown
from crnn_core.heads import softmax_targets

CRNN_CLI = [sys.executable, "-m", "crnn_core.cli.app"]


def crnn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN_CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def softmax_config(name: str = "crnn-tiny", length: int = 4, reduce: str = "mean") -> ModelConfig:
    return dataclasses.replace(load_model_config(name), head="softmax", head_length=length, head_reduce=reduce)


# -- shapes --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["mean", "last", "attention"])
@pytest.mark.parametrize("length", [1, 4, 30])  # 30 > T for the narrow image: positions share columns
@pytest.mark.parametrize("width", [20, 100, 313])
def test_output_is_L_positions_whatever_the_width(reduce, length, width):
    config = softmax_config(length=length, reduce=reduce)
    model = CRNN(config, num_classes=11).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, 1, 32, width))
    assert out.shape == (length, 3, 11)
    assert config.output_length(width) == length
    assert torch.allclose(out.exp().sum(-1), torch.ones(length, 3), atol=1e-4)


def test_bin_means_by_hand():
    seq = torch.arange(4, dtype=torch.float32).view(4, 1, 1)  # columns 0, 1, 2, 3
    assert bin_means(seq, 2).flatten().tolist() == [0.5, 2.5]
    assert bin_means(seq, 1).flatten().tolist() == [1.5]
    assert bin_means(seq, 4).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    two = torch.tensor([0.0, 2.0]).view(2, 1, 1)
    # T=2, L=3: bins [0,1), [0,2), [1,2)
    assert bin_means(two, 3).flatten().tolist() == [0.0, 1.0, 2.0]


def test_classifier_rows_are_the_classes():
    model = CRNN(softmax_config(reduce="last"), num_classes=7)
    assert model.classifier.out_features == 7
    assert model.classifier is model.head.classify
    ctc = CRNN(load_model_config("crnn-tiny"), num_classes=7)
    assert ctc.classifier is ctc.head


# -- targets and loss ----------------------------------------------------------------------------
def test_targets_pad_with_the_end_symbol():
    targets = softmax_targets([[3, 1], [], [2, 2, 2, 5]], 4)
    assert targets.tolist() == [[3, 1, 0, 0], [0, 0, 0, 0], [2, 2, 2, 5]]


def test_loss_is_low_for_the_right_answer_and_high_for_a_wrong_one():
    targets = softmax_targets([[3, 1]], 4)  # "ab" in a 4-position head
    right = torch.full((4, 1, 5), -20.0)
    for pos, cls in enumerate([3, 1, 0, 0]):
        right[pos, 0, cls] = 0.0
    wrong = right.clone()
    wrong[2, 0, 0], wrong[2, 0, 4] = -20.0, 0.0  # a fourth character where the end should be
    loss = lambda lp: torch.nn.functional.nll_loss(lp.log_softmax(-1).permute(1, 2, 0), targets).item()  # noqa: E731
    assert loss(right) < 1e-6
    assert loss(wrong) > 4.0


# -- decoding ------------------------------------------------------------------------------
def _lp(rows) -> np.ndarray:
    p = np.asarray(rows, dtype=np.float64)
    return np.log(p / p.sum(-1, keepdims=True))


def test_decode_stops_at_the_first_end():
    # classes: 0 = end, 1..3 = characters
    lp = _lp([[0.01, 0.9, 0.05, 0.04], [0.01, 0.04, 0.9, 0.05], [0.9, 0.05, 0.03, 0.02], [0.1, 0.1, 0.1, 0.7]])
    decoded = best_text(lp)
    assert decoded.ids == (1, 2)  # what follows the end (a confident 3) does not count
    assert decoded.confidence == pytest.approx(0.9 * 0.9 * 0.9)


def test_decode_full_length_needs_no_end():
    lp = _lp([[1e-6, 1, 1e-6, 1e-6], [1e-6, 1e-6, 1, 1e-6]])
    assert best_text(lp).ids == (1, 2)
    empty = _lp([[1, 1e-6, 1e-6, 1e-6], [1, 1e-6, 1e-6, 1e-6]])
    assert best_text(empty).ids == ()


def test_weakest_is_the_least_sure_of_the_characters_and_the_end():
    lp = _lp([[0.01, 0.9, 0.05, 0.04], [0.01, 0.04, 0.7, 0.25], [0.8, 0.1, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7]])
    decoded = best_text(lp)
    assert decoded.ids == (1, 2) and decoded.weakest == pytest.approx(0.7)  # '2' at 0.7; the end at 0.8
    lp = _lp([[0.01, 0.9, 0.05, 0.04], [0.6, 0.04, 0.3, 0.06], [0.1, 0.1, 0.1, 0.7]])
    assert best_text(lp).ids == (1,) and best_text(lp).weakest == pytest.approx(0.6)  # the end is the weakest
    full = _lp([[1e-6, 0.95, 0.05, 1e-6], [1e-6, 0.1, 0.9, 1e-6]])
    assert best_text(full).weakest == pytest.approx(0.9, rel=1e-4)  # all L positions: no end to count


def test_decode_is_not_plain_argmax_when_that_is_less_likely():
    # Argmax reads 'a' then a chain of barely-winning characters; the empty text is likelier.
    lp = _lp([[0.45, 0.5, 0.05, 0.0001]] + [[0.3, 0.35, 0.35, 0.0001]] * 3)
    decoded = best_text(lp)
    assert decoded.ids == ()
    assert decoded.confidence == pytest.approx(0.45, rel=1e-3)


def _brute_force(lp: np.ndarray) -> tuple[tuple[int, ...], float]:
    length, classes = lp.shape
    best, best_p = (), -1.0
    for n in range(length + 1):
        for text in itertools.product(range(1, classes), repeat=n):
            p = float(np.exp(sum(lp[i, c] for i, c in enumerate(text)) + (lp[n, 0] if n < length else 0.0)))
            if p > best_p:
                best, best_p = text, p
    return best, best_p


@pytest.mark.parametrize("seed", range(30))
def test_decode_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    length, classes = rng.integers(1, 5), rng.integers(2, 5)
    lp = np.log(rng.dirichlet(np.full(classes, 0.7), size=length))
    ids, p = _brute_force(lp)
    decoded = best_text(lp)
    assert decoded.confidence == pytest.approx(p, rel=1e-9)
    assert decoded.ids == ids


def test_decode_batch_dispatches_on_the_head():
    lp = _lp([[0.01, 0.9, 0.09], [0.9, 0.05, 0.05]])[:, None, :]  # L x B x C
    assert decode_batch(lp, [2], head="softmax")[0].ids == (1,)
    assert decode_batch(lp, [2], beam=4, head="softmax")[0].ids == (1,)


# -- config ------------------------------------------------------------------------------------
def test_head_yaml_round_trip_and_errors(tmp_path):
    config = softmax_config(reduce="last", length=6)
    again = ModelConfig.from_dict(config.to_dict())
    assert again == config
    assert config.to_dict()["head"] == {"type": "softmax", "reduce": "last", "length": 6}
    assert load_model_config("crnn-tiny").to_dict()["head"] == "ctc"  # old files keep their form
    with pytest.raises(ConfigError, match="reduce"):
        dataclasses.replace(config, head_reduce="max")
    with pytest.raises(ConfigError, match="at least 1"):
        dataclasses.replace(config, head_length=0)
    with pytest.raises(ConfigError, match="needs an rnn"):
        dataclasses.replace(config, rnn_layers=0)
    with pytest.raises(ConfigError, match="length is not set"):
        CRNN(dataclasses.replace(config, head_length=None), 5)


# -- the seed article's network -------------------------------------------------------------------
def test_seed_fusion_is_the_articles_network():
    config = load_model_config("seed-fusion")
    assert (config.height, config.channels) == (28, 1)
    convs = [layer for layer in config.backbone if layer.kind == "conv"]
    pools = [layer for layer in config.backbone if layer.kind == "pool"]
    assert [(c.out, c.kernel, c.padding, c.batch_norm) for c in convs] == [(32, (3, 3), (0, 0), False)]
    assert [p.kernel for p in pools] == [(2, 2)]
    assert config.feature_height() == 13 and config.time_steps(28) == 13  # the 13 x 13 x 32 map, 13 steps
    assert (config.rnn_layers, config.rnn_hidden, config.rnn_bidirectional) == (1, 64, False)
    assert (config.head, config.head_reduce, config.head_length) == ("softmax", "last", None)
    model = CRNN(dataclasses.replace(config, head_length=1), num_classes=11)  # 10 digits + end
    counts = parameter_breakdown(model)
    # Keras: conv 320, LSTM 4*64*(416+64+1) = 123,136, Dense(10) 650. PyTorch's LSTM keeps two
    # bias vectors (+256) and our head has the end class (+65).
    assert counts == {"backbone": 320, "rnn": 123_392, "head": 715, "total": 124_427}
    assert model(torch.zeros(2, 1, 28, 28)).shape == (1, 2, 11)


@pytest.fixture(scope="module")
def single_chars(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chars")
    for split, count in (("train", 40), ("val", 10)):
        (root / split).mkdir()
        rows = []
        for i in range(count):
            char = "0123456789"[i % 10]
            render_text(char, height=28).resize((28, 28)).save(root / split / f"{i:03d}.png")
            rows.append(f"{i:03d}.png\t{char}\n")
        (root / split / "labels.tsv").write_text("".join(rows))
    return root


@pytest.fixture(scope="module")
def seed_run(single_chars, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("seed") / "run"
    result = crnn("train", single_chars, "--model", "seed-fusion", "--epochs", "2", "--batch-size", "8", "--out", run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "best.pt")
    return run


def test_seed_fusion_trains_from_the_cli_and_round_trips(seed_run, single_chars, tmp_path):
    from crnn_core.modelfile import load_model

    loaded = load_model(seed_run / "best.pt")
    assert loaded.config.head == "softmax" and loaded.config.head_length == 1  # L from single characters
    assert loaded.config == load_model_config(seed_run / "config.yaml")
    # the weights in the file give the same outputs after a reload
    again = CRNN(loaded.config, loaded.alphabet.num_classes)
    again.load_state_dict(loaded.model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), loaded.model.eval()(x))

    predicted = crnn("predict", single_chars / "val" / "000.png", single_chars / "val" / "001.png", "--model",
                     seed_run / "best.pt", "--format", "jsonl")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 2 and all(len(r["text"]) <= 1 and 0.0 <= r["confidence"] <= 1.0 for r in rows)

    report = crnn("eval", seed_run / "best.pt", single_chars, "--json", "-")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["samples"] == 10

    info = crnn("info", seed_run / "best.pt")
    assert info.returncode == 0 and "softmax, 1 positions (last)" in info.stderr + info.stdout


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_seed_fusion_exports_with_parity(seed_run, tmp_path, fmt):
    out = tmp_path / f"seed.{fmt}"
    result = crnn("export", seed_run / "best.pt", "--format", fmt, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert "9/9 texts equal to the eager model" in result.stderr  # every parity-check image read the same


def test_softmax_head_on_multi_character_data_end_to_end(tiny_data, tmp_path):
    from crnn_core.modelfile import load_model

    run = tmp_path / "run"
    result = crnn("train", tiny_data, "--model", "crnn-tiny", "--head", "softmax", "--epochs", "2",
                  "--batch-size", "16", "--out", run)
    assert result.returncode == 0, result.stderr
    loaded = load_model(run / "best.pt")
    lengths = [len(line.split("\t")[1].strip()) for split in ("train", "val")
               for line in (tiny_data / split / "labels.tsv").read_text().splitlines()]
    assert (loaded.config.head, loaded.config.head_length, loaded.config.head_reduce) == ("softmax", max(lengths), "mean")
    out = tmp_path / "m.onnx"
    exported = crnn("export", run / "best.pt", "--format", "onnx", "--out", out)
    assert exported.returncode == 0, exported.stderr

    import onnx
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["crnn.head"] == "softmax" and meta["crnn.end"] == "0"
    pt2 = crnn("export", run / "best.pt", "--format", "pt2", "--out", tmp_path / "m.pt2")
    assert pt2.returncode == 0, pt2.stderr
    assert "9/9 texts equal to the eager model" in pt2.stderr  # bin means keep the width dynamic


def test_labels_longer_than_L_are_a_clear_error(tiny_data, tmp_path):
    result = crnn("train", tiny_data, "--model", "crnn-tiny", "--head", "softmax", "--max-length", "3",
                  "--epochs", "1", "--out", tmp_path / "run")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("crnn: error: ") and "longer than the softmax head's 3 positions" in lines[-1]
    assert "Traceback" not in result.stderr

    check = crnn("data", "check", tiny_data, "--model", "crnn-tiny", "--head", "softmax", "--max-length", "3")
    assert check.returncode == 1
    assert "longer than the softmax head's 3 positions" in check.stdout + check.stderr

    usage = crnn("train", tiny_data, "--max-length", "3", "--out", tmp_path / "run2")
    assert usage.returncode == 2 and "--head softmax" in usage.stderr


def test_too_long_labels_raise_from_the_library(tiny_data, tmp_path):
    from crnn_core.config import TrainConfig
    from crnn_core.train import train

    with pytest.raises(DatasetError, match="longer than the softmax head's 2 positions"):
        train(tiny_data, tmp_path / "run", softmax_config(length=2), TrainConfig(epochs=1))


@pytest.mark.parametrize("reduce", ["mean", "last", "attention"])
def test_a_padded_training_batch_reads_each_image_as_it_reads_alone(reduce):
    # Training pads a batch to its widest image; with `lengths` the head must give each image
    # what the model gives it alone (inference batches equal widths, so never pads).
    config = dataclasses.replace(load_model_config("seed-fusion"), head_length=3, head_reduce=reduce)
    model = CRNN(config, num_classes=6).eval()
    narrow, wide = torch.randn(1, 1, 28, 28), torch.randn(1, 1, 28, 60)
    padded = torch.cat([torch.nn.functional.pad(narrow, (0, 32), value=0.3), wide])
    lengths = torch.tensor([config.time_steps(28), config.time_steps(60)])
    with torch.no_grad():
        together = model(padded, lengths)
        assert torch.allclose(together[:, 0], model(narrow)[:, 0], atol=1e-5)
        assert torch.allclose(together[:, 1], model(wide)[:, 0], atol=1e-5)
        assert not torch.allclose(model(padded)[:, 0], model(narrow)[:, 0], atol=1e-3)  # without lengths it differs


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_attention_reduce_exports_with_a_dynamic_width(fmt, tmp_path):
    from crnn_core.alphabet import Alphabet
    from crnn_core.export import export
    from crnn_core.modelfile import LoadedModel, preprocess_for

    torch.manual_seed(0)
    config = softmax_config(length=5, reduce="attention")
    alphabet = Alphabet("0123456789")
    loaded = LoadedModel(CRNN(config, alphabet.num_classes).eval(), config, alphabet, preprocess_for(config))
    report = export(loaded, fmt, tmp_path / f"m.{fmt}")  # raises if any check image reads differently
    assert report.texts_equal == report.texts_checked == 9


def test_positions_reads_each_sample_of_a_batch_like_best_text():
    rng = np.random.default_rng(2)
    lp = np.log(rng.dirichlet(np.full(4, 0.7), size=(5, 3)))  # L x B x C
    assert positions(lp, [5, 5, 5]) == [best_text(lp[:, b]) for b in range(3)]

"""Fine-tuning with a changed alphabet: plans, weight surgery, backbone freezing, end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import make_list_dataset
from crnn_core.alphabet import Alphabet
from crnn_core.config import ConfigError, TrainConfig, load_model_config
from crnn_core.errors import DatasetError, ModelFileError
from crnn_core.finetune import (SEEDED_BIAS_OFFSET, HeadRows, backbone_frozen, ctc_rows, init_from, plan_alphabet,
                                similar_char, transfer_head)
from crnn_core.model import CRNN
from crnn_core.modelfile import load_model
from crnn_core.train import train

DIGITS = Alphabet("0123456789")


def test_alphabet_plans():
    texts = ["12A", "B3", "#1"]
    union = plan_alphabet(DIGITS, texts, "union")
    assert union.chars == "0123456789#AB"  # old ids unchanged, new ones appended
    assert plan_alphabet(DIGITS, texts, "new").chars == "#123AB"
    assert plan_alphabet(DIGITS, ["123"], "keep") is DIGITS
    with pytest.raises(DatasetError, match=r"3 character\(s\) not in the model's alphabet: '#AB'.*LATIN CAPITAL LETTER A"):
        plan_alphabet(DIGITS, texts, "keep", "data/")
    with pytest.raises(DatasetError, match="--alphabet must be one of"):
        plan_alphabet(DIGITS, texts, "merge")


def test_similar_characters():
    known = Alphabet("aeAEn0")
    assert similar_char("à", known) == "a"
    assert similar_char("É", known) == "E"
    assert similar_char("ñ", known) == "n"
    assert similar_char("N", known) == "n"  # the other case
    assert similar_char("Ü", known) is None
    assert similar_char("#", known) is None


def _head(rows: HeadRows, features: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows.classes, features, generator=g), torch.randn(rows.classes, generator=g)


def test_transfer_head_rows_for_ctc():
    old, new = Alphabet("abc"), Alphabet("abcà#")
    weight, bias = _head(ctc_rows(old))
    w, b, surgery = transfer_head(weight, bias, ctc_rows(old), ctc_rows(new), old, similar=True)
    assert torch.equal(w[:4], weight) and torch.equal(b[:4], bias)  # blank and a, b, c untouched
    assert torch.equal(w[4], weight[1]) and b[4] == pytest.approx(float(bias[1]) - SEEDED_BIAS_OFFSET)  # à from a
    assert float(w[5].abs().max()) < float(weight[1:].std())  # '#': small random weights
    assert float(b[5]) == pytest.approx(float(bias[1:].min()))  # ... and the rarest character's bias
    assert surgery.kept == 3 and surgery.seeded == {"à": "a"} and surgery.fresh == "#" and surgery.dropped == ""
    # The default: every new row from random weights.
    w, b, surgery = transfer_head(weight, bias, ctc_rows(old), ctc_rows(new), old)
    assert surgery.seeded == {} and surgery.fresh == "à#" and float(b[4]) == pytest.approx(float(bias[1:].min()))


def test_transfer_head_with_another_heads_row_layout():
    # A softmax-style head: characters in rows 0..K-1, an end symbol in the last row.
    def end_rows(alphabet):
        return HeadRows({c: i for i, c in enumerate(alphabet.chars)}, {"end": len(alphabet)}, len(alphabet) + 1)

    old, new = Alphabet("abc"), Alphabet("cB")  # --alphabet new: 'a', 'b' dropped, 'B' from 'b'
    weight, bias = _head(end_rows(old))
    w, b, surgery = transfer_head(weight, bias, end_rows(old), end_rows(new), old, similar=True)
    assert torch.equal(w[0], weight[2]) and torch.equal(w[1], weight[1]) and torch.equal(w[2], weight[3])
    assert surgery.dropped == "ab" and surgery.seeded == {"B": "b"}


def test_init_from_keeps_every_other_weight():
    config = load_model_config("crnn-tiny")
    old = CRNN(config, DIGITS.num_classes)
    new_alphabet = plan_alphabet(DIGITS, ["12AB"], "union")
    new = CRNN(config, new_alphabet.num_classes)
    surgery = init_from(new, old.state_dict(), DIGITS, new_alphabet)
    assert surgery.kept == 10 and surgery.fresh == "AB"
    for key, value in old.state_dict().items():
        if key.startswith("head."):
            assert torch.equal(new.state_dict()[key][: DIGITS.num_classes], value)
        else:
            assert torch.equal(new.state_dict()[key], value)
    with pytest.raises(ModelFileError, match="a different architecture"):
        init_from(CRNN(load_model_config("crnn-small"), new_alphabet.num_classes), old.state_dict(), DIGITS,
                  new_alphabet)


def test_freeze_schedule_and_config():
    assert [backbone_frozen(2, e) for e in (1, 2, 3)] == [True, True, False]
    assert backbone_frozen("all", 50) and not backbone_frozen(0, 1)
    assert TrainConfig.from_dict({"freeze_backbone": "all"}).freeze_backbone == "all"
    with pytest.raises(ConfigError, match="freeze_backbone"):
        TrainConfig.from_dict({"freeze_backbone": -1})


@pytest.fixture(scope="module")
def letters_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("letters")
    make_list_dataset(root / "train", 32, seed=3, chars="0123456789AB")
    make_list_dataset(root / "val", 8, seed=4, chars="0123456789AB")
    return root


def test_fine_tuning_adds_characters_end_to_end(tiny_model, letters_data, tmp_path):
    base = load_model(tiny_model)
    result = train(letters_data, tmp_path / "ft", train_config=TrainConfig(epochs=1, batch_size=16, threads=2),
                   init=tiny_model, overrides={"freeze_backbone": "all"})
    tuned = load_model(result.run_dir / "last.pt")
    assert tuned.alphabet.chars == base.alphabet.chars + "AB"
    assert tuned.preprocess == base.preprocess and tuned.config == base.config
    assert tuned.train["init_alphabet"] == "union" and tuned.train["surgery"]["fresh"] == "AB"
    # Frozen throughout: the backbone (batch-norm statistics included) is exactly the initial one.
    old_state, new_state = base.model.state_dict(), tuned.model.state_dict()
    for key in old_state:
        if key.startswith("backbone."):
            assert torch.equal(old_state[key], new_state[key]), key
    assert not torch.equal(old_state["head.weight"], new_state["head.weight"][: base.alphabet.num_classes])

    with pytest.raises(DatasetError, match="not in the model's alphabet: 'AB'"):
        train(letters_data, tmp_path / "keep", init=tiny_model, init_alphabet="keep",
              train_config=TrainConfig(epochs=1, threads=2))
    newer = train(letters_data, tmp_path / "new", init=tiny_model, init_alphabet="new",
                  train_config=TrainConfig(epochs=1, batch_size=16, threads=2))
    assert load_model(newer.run_dir / "last.pt").alphabet.chars == "0123456789AB"


def test_fine_tuning_from_the_command_line(tiny_model, letters_data, tmp_path):
    crnn = [sys.executable, "-m", "crnn_core.cli.app"]
    result = subprocess.run([*crnn, "train", str(letters_data), "--init", str(tiny_model), "--alphabet", "keep",
                             "--out", str(tmp_path / "k")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "crnn: error:" in result.stderr and "'AB'" in result.stderr
    result = subprocess.run([*crnn, "train", str(letters_data), "--init", str(tiny_model), "--model", "crnn-small"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--init takes the architecture" in result.stderr
    result = subprocess.run([*crnn, "train", str(letters_data), "--init", str(tiny_model), "--freeze-backbone", "1",
                             "--epochs", "2", "--batch-size", "16", "--out", str(tmp_path / "u")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "kept 10 character rows; added 2 from scratch ('AB'); backbone frozen for 1 epoch(s)" in result.stderr
    assert load_model(result.stdout.strip()).alphabet.chars == "0123456789AB"

import dataclasses

import pytest
import torch

from crnn_core.config import ModelConfig, bundled_config_names, load_model_config
from crnn_core.errors import ConfigError
from crnn_core.model import CRNN, count_parameters


@pytest.mark.parametrize("name", ["crnn-tiny", "crnn-small", "crnn-paper"])
@pytest.mark.parametrize("width", [17, 100, 313])
def test_output_shape_matches_config_time_steps(name, width):
    config = load_model_config(name)
    model = CRNN(config, num_classes=11).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, config.channels, config.height, width))
    assert out.shape == (config.time_steps(width), 3, 11)
    assert torch.allclose(out.exp().sum(-1), torch.ones(out.shape[:2]), atol=1e-4)


def test_every_bundled_config_builds():
    assert {"crnn-tiny", "crnn-small", "crnn-paper"} <= set(bundled_config_names())
    for name in bundled_config_names():
        config = load_model_config(name)
        if config.head == "softmax" and config.head_length is None:  # set from the data at training time
            config = dataclasses.replace(config, head_length=3)
        CRNN(config, 5)


def test_paper_architecture_is_shi_et_al():
    config = load_model_config("crnn-paper")
    convs = [layer for layer in config.backbone if layer.kind == "conv"]
    assert [c.out for c in convs] == [64, 128, 256, 256, 512, 512, 512]
    assert [c.batch_norm for c in convs] == [False] * 4 + [True, True, False]
    assert (config.height, config.rnn_layers, config.rnn_hidden) == (32, 2, 256)
    assert config.feature_height() == 1
    assert config.time_steps(100) == 24
    # ~8.3M parameters in the paper (their alphabet of 37 classes); ours with 37 outputs:
    assert 8.3e6 < count_parameters(CRNN(config, 37)) < 8.8e6


def test_yaml_round_trip():
    config = load_model_config("crnn-paper")
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        load_model_config("no-such-model")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone:\n  - {conv: 8, size: 3}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_model_config(bad)
    shrink = tmp_path / "shrink.yaml"
    shrink.write_text("input: {height: 8}\nbackbone:\n  - {pool: 4}\n  - {pool: 4}\n")
    with pytest.raises(ConfigError, match="to nothing"):
        load_model_config(shrink)

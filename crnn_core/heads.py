"""The heads: what turns the column sequence into classes, and everything that follows from it.

A head kind owns, in one place: how its output layer is built, how long its output is for an
image, which labels it can learn at which width (shared by training and `crnn data check`),
its targets and loss, how its output is decoded, what class 0 means, and the output layer's
weight names (for fine-tuning surgery). The rest of the code asks the model's head kind
(`head_for(config)`) and never branches on its name; a third head is one more class here.

Importing this module does not import torch: the ONNX Runtime predict path decodes through
it without loading torch. `build` and `loss` import torch when they are called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # torch, numpy and the decoders load when a head is used, not when it is named
    import numpy as np
    import torch

    from .config import ModelConfig
    from .decode import Decoded


@dataclass(frozen=True)
class HeadRows:
    """Which output row holds each character, and the head's special rows by name (fine-tuning surgery)."""

    chars: Mapping[str, int]
    special: Mapping[str, int]
    classes: int


def ctc_needed_steps(ids: Sequence[int]) -> int:
    """Frames CTC needs for a label: one per symbol plus a blank between each repeated pair."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def softmax_targets(targets: list[list[int]], length: int) -> torch.Tensor:
    """B x L class indices: the label's ids, then the end symbol (0) in every remaining position."""
    import torch

    out = torch.zeros(len(targets), length, dtype=torch.long)
    for row, ids in enumerate(targets):
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class Head:
    """The interface every head kind implements (see the module docstring)."""

    name: str = ""
    special: str = ""  # what class 0 is called: CTC's blank, the softmax head's end of text
    special_description: str = ""  # the same for people
    classifier_keys: tuple[str, str] = ("head.weight", "head.bias")  # the per-class output rows
    reads_lengths: bool = False  # whether the output layer takes each image's own column count
    constrainable: bool = False  # whether --pattern / --lexicon can steer its decoding (a CTC search)
    has_length: bool = False  # whether it reads a fixed number of positions (--max-length)
    aligns_columns: bool = False  # whether each character needs columns of its own (the width scale can give more)

    def output_length(self, config: ModelConfig, width: int) -> int:
        """Frames the model outputs for an image `width` px wide."""
        raise NotImplementedError

    def rows(self, alphabet) -> HeadRows:
        """Class 0 is the special symbol; characters take rows 1..K in alphabet order."""
        return HeadRows({c: i + 1 for i, c in enumerate(alphabet.chars)}, {self.special: 0}, alphabet.num_classes)

    def label_problem(self, config: ModelConfig, ids: Sequence[int], width: int) -> str | None:
        """Why this head cannot learn a label of these ids from an image this wide, or None."""
        raise NotImplementedError

    def max_label_length(self, config: ModelConfig) -> int | None:
        """The longest label at any width, if the head has such a limit."""
        return None

    def resolve(self, config: ModelConfig, texts: Sequence[str]) -> ModelConfig:
        """The config with settings the data decides filled in (none by default)."""
        return config

    def check(self, config: ModelConfig) -> None:
        """Raise ConfigError for head settings this kind cannot use."""

    def to_yaml(self, config: ModelConfig) -> str | dict[str, Any]:
        return self.name

    def describe(self, config: ModelConfig) -> str:
        return self.name

    def export_metadata(self, config: ModelConfig) -> dict[str, str]:
        raise NotImplementedError

    def build(self, config: ModelConfig, features: int, num_classes: int, bidirectional: bool):
        """The output layer, called as `layer(seq)`, or `layer(seq, lengths)` if `reads_lengths`."""
        raise NotImplementedError

    def loss(self, log_probs: torch.Tensor, targets: list[list[int]], input_lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, log_probs: np.ndarray, lengths: Sequence[int], beam: int = 1) -> list[Decoded]:
        """Ids and confidence per sample of an N x B x C log-prob array (N = output length)."""
        raise NotImplementedError


class CTCHead(Head):
    """One frame per column, class 0 = blank; any label length that fits the image's columns."""

    name = "ctc"
    special = "blank"
    special_description = "blank"
    constrainable = True
    aligns_columns = True

    def output_length(self, config: ModelConfig, width: int) -> int:
        return config.time_steps(width)

    def label_problem(self, config: ModelConfig, ids: Sequence[int], width: int) -> str | None:
        needed, steps = ctc_needed_steps(ids), config.time_steps(width)
        if needed <= steps:
            return None
        return (f"label of {len(ids)} chars needs {needed} CTC steps, the image gives {steps} "
                f"(width {width} px at height {config.height})")

    def check(self, config: ModelConfig) -> None:
        if config.head_length is not None:
            raise ConfigError(f"model {config.name}: a CTC head has no length (that is the softmax head's)")

    def export_metadata(self, config: ModelConfig) -> dict[str, str]:
        return {
            "crnn.blank": "0",
            "crnn.output": "log_probs: float32 [time, batch, classes], class 0 = CTC blank, class i = alphabet[i-1]",
            "crnn.time_steps": "width -> sequence length per crnn.config backbone; decode only the first T(width) frames",
        }

    def build(self, config: ModelConfig, features: int, num_classes: int, bidirectional: bool):
        from torch import nn

        # a plain Linear, so that int8 dynamic quantisation recognises it
        return nn.Linear(features, num_classes)

    def loss(self, log_probs: torch.Tensor, targets: list[list[int]], input_lengths: torch.Tensor) -> torch.Tensor:
        import torch
        from torch import nn

        flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long, device=log_probs.device)
        target_lengths = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
        # zero_infinity: a label that cannot be aligned contributes nothing instead of inf
        return nn.functional.ctc_loss(log_probs, flat, input_lengths, target_lengths, blank=0,
                                      zero_infinity=True)

    def decode(self, log_probs: np.ndarray, lengths: Sequence[int], beam: int = 1) -> list[Decoded]:
        from . import decode

        if beam <= 1:
            return decode.greedy(log_probs, lengths)
        return decode.beam_search(log_probs, lengths, beam, prune=decode.BEAM_PRUNE)


class SoftmaxHead(Head):
    """L positions, each a class over the alphabet plus the end of text (class 0)."""

    name = "softmax"
    special = "end"
    special_description = "end symbol"
    has_length = True
    classifier_keys = ("head.classify.weight", "head.classify.bias")
    reads_lengths = True  # in a padded training batch, positions read only the image's own columns

    def output_length(self, config: ModelConfig, width: int) -> int:
        if config.head_length is None:
            raise ConfigError(f"model {config.name}: the softmax head's length is not set")
        return config.head_length

    def max_label_length(self, config: ModelConfig) -> int | None:
        return config.head_length

    def label_problem(self, config: ModelConfig, ids: Sequence[int], width: int) -> str | None:
        # Every width works; only the number of positions bounds a label.
        if config.head_length is not None and len(ids) > config.head_length:
            return f"label of {len(ids)} chars is longer than the softmax head's {config.head_length} positions"
        return None

    def resolve(self, config: ModelConfig, texts: Sequence[str]) -> ModelConfig:
        if config.head_length is not None:
            return config
        # L from the data: the longest label, so that every label can be read in full.
        return dataclasses.replace(config, head_length=max([1, *(len(t) for t in texts)]))

    def check(self, config: ModelConfig) -> None:
        if config.head_reduce == "last" and config.rnn_layers == 0:
            raise ConfigError(f"model {config.name}: head reduce 'last' needs an rnn (layers >= 1)")

    def to_yaml(self, config: ModelConfig) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.name, "reduce": config.head_reduce}
        if config.head_length is not None:
            d["length"] = config.head_length
        return d

    def describe(self, config: ModelConfig) -> str:
        return f"softmax, {config.head_length} positions ({config.head_reduce})"

    def export_metadata(self, config: ModelConfig) -> dict[str, str]:
        return {
            "crnn.end": "0",
            "crnn.output": (f"log_probs: float32 [{config.head_length} positions, batch, classes], "
                            "class 0 = end of text, class i = alphabet[i-1]; the text is the characters "
                            "before the first end"),
        }

    def build(self, config: ModelConfig, features: int, num_classes: int, bidirectional: bool):
        from .head_layers import PositionsHead

        return PositionsHead(features, num_classes, self.output_length(config, 0), config.head_reduce,
                             bidirectional)

    def loss(self, log_probs: torch.Tensor, targets: list[list[int]], input_lengths: torch.Tensor) -> torch.Tensor:
        from torch import nn

        wanted = softmax_targets(targets, log_probs.shape[0]).to(log_probs.device)
        return nn.functional.nll_loss(log_probs.permute(1, 2, 0), wanted)

    def decode(self, log_probs: np.ndarray, lengths: Sequence[int], beam: int = 1) -> list[Decoded]:
        from .decode import positions

        # Exact at any beam: the most probable text is found without a search.
        return positions(log_probs, lengths)


HEADS: dict[str, Head] = {head.name: head for head in (CTCHead(), SoftmaxHead())}


def head_named(name: str) -> Head:
    try:
        return HEADS[name]
    except KeyError:
        raise ConfigError(f"head {name!r} is not one of {', '.join(HEADS)}") from None


def decode_batch(log_probs: np.ndarray, lengths: Sequence[int], beam: int = 1, head: str = "ctc") -> list[Decoded]:
    """The decoder of the head named `head`: CTC greedy (beam 1) or beam search; softmax exact."""
    return head_named(head).decode(log_probs, lengths, beam)


def head_for(config: ModelConfig) -> Head:
    """The head kind of a model config."""
    return head_named(config.head)

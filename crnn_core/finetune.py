"""Fine-tuning a trained model on data whose alphabet differs: alphabet plans and weight surgery.

`crnn train DATA --init MODEL --alphabet union|new|keep`:

- union (default): every known character keeps its output row; the data's new characters get
  new rows at the end (so old class ids do not move);
- new: only the data's characters; the rows of those the model knew are carried over;
- keep: the model's alphabet as is; characters it lacks are refused, listed.

New rows start from small random weights and the lowest character bias, so that a new class
starts out rare instead of stealing frames from the old ones. With `similar=True` a new
character whose base letter (after Unicode decomposition, `à` from `a`) or other case is
known starts as a copy of that row, bias lowered. That is off by default because it measured
worse: fine-tuning codes-small to Ä É Ü # / for 8 epochs read 84.3% of the new validation
lines with seeded rows and 89.0% with random ones (old validation set: 95.25% vs 94.75%);
the copied row fires on every A-shape and the model is slow to learn that the dots matter
(docs/accuracy.md).

The surgery works on state dicts and on "which output row is character c" maps supplied by a
small function per head kind (`ctc_rows` here; another head supplies its own), so it does not
depend on the head's layout beyond its weight and bias having one row per class.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .alphabet import Alphabet
from .choices import ALPHABET_MODES
from .errors import DatasetError, ModelFileError
from .heads import HeadRows, head_named

# A seeded row's bias starts this much below its model's (in logits): the old character keeps
# winning at first instead of the two splitting every frame.
SEEDED_BIAS_OFFSET = 1.0
# Random new rows: this fraction of the spread of the existing character rows' weights.
RANDOM_ROW_SCALE = 0.1


RowsFunction = Callable[[Alphabet], HeadRows]


def ctc_rows(alphabet: Alphabet) -> HeadRows:
    """The CTC head: row 0 is the blank, characters take rows 1..K in alphabet order."""
    return head_named("ctc").rows(alphabet)


def plan_alphabet(old: Alphabet, texts: Iterable[str], mode: str = "union", source: str = "data") -> Alphabet:
    """The alphabet to fine-tune with, from the model's and the training labels' characters."""
    if mode not in ALPHABET_MODES:
        raise DatasetError(f"--alphabet must be one of {', '.join(ALPHABET_MODES)}, not {mode!r}")
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    unknown = sorted(c for c in seen if c not in old)
    if mode == "keep":
        if unknown:
            raise DatasetError(
                f"{source}: {len(unknown)} character(s) not in the model's alphabet: {''.join(unknown)!r} "
                f"({', '.join(_describe(c) for c in unknown[:10])}); use --alphabet union to add them, "
                "or remove those labels")
        return old
    if mode == "union":
        return Alphabet(old.chars + "".join(unknown))
    return Alphabet(sorted(seen))


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, '?')}"


def similar_char(char: str, known: Alphabet) -> str | None:
    """A known character to start `char`'s row from: its decomposed base letter, or a case variant."""
    base = unicodedata.normalize("NFD", char)[0]
    candidates = [base] if base != char else []
    candidates += [base.swapcase(), char.swapcase()]
    for c in candidates:
        if len(c) == 1 and c != char and c in known:
            return c
    return None


@dataclass
class Surgery:
    """What the weight transfer did, for the run's log and the model's training record."""

    kept: int = 0  # characters whose rows were carried over
    dropped: str = ""  # known characters left out (--alphabet new)
    seeded: dict[str, str] = field(default_factory=dict)  # new character -> the known one it started from
    fresh: str = ""  # new characters started from small random weights

    def to_dict(self) -> dict:
        return {"kept": self.kept, "dropped": self.dropped, "seeded": dict(self.seeded), "fresh": self.fresh}

    def summary(self) -> str:
        parts = [f"kept {self.kept} character rows"]
        if self.seeded:
            parts.append(f"added {len(self.seeded)} from similar ones ("
                         + ", ".join(f"{new} from {old}" for new, old in self.seeded.items()) + ")")
        if self.fresh:
            parts.append(f"added {len(self.fresh)} from scratch ({self.fresh!r})")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} ({self.dropped!r})")
        return "; ".join(parts)


def transfer_head(old_weight: torch.Tensor, old_bias: torch.Tensor, old_rows: HeadRows, new_rows: HeadRows,
                  old_alphabet: Alphabet, generator: torch.Generator | None = None, similar: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, Surgery]:
    """New output-layer weight (classes x features) and bias, row by row from the old ones."""
    if old_weight.shape[0] != old_rows.classes or old_bias.shape[0] != old_rows.classes:
        raise ModelFileError(f"the model's output layer has {old_weight.shape[0]} rows, its alphabet needs "
                             f"{old_rows.classes}")
    features = old_weight.shape[1]
    weight = torch.empty(new_rows.classes, features, dtype=old_weight.dtype)
    bias = torch.empty(new_rows.classes, dtype=old_bias.dtype)
    char_rows = list(old_rows.chars.values())
    spread = float(old_weight[char_rows].std()) if len(char_rows) > 1 else 0.1
    floor = float(old_bias[char_rows].min()) if char_rows else float(old_bias.min())
    surgery = Surgery()
    for name, row in new_rows.special.items():
        if name not in old_rows.special:
            raise ModelFileError(f"the model has no {name!r} output row to carry over")
        weight[row] = old_weight[old_rows.special[name]]
        bias[row] = old_bias[old_rows.special[name]]
    for char, row in new_rows.chars.items():
        if char in old_rows.chars:
            weight[row] = old_weight[old_rows.chars[char]]
            bias[row] = old_bias[old_rows.chars[char]]
            surgery.kept += 1
            continue
        base = similar_char(char, old_alphabet) if similar else None
        if base is not None:
            weight[row] = old_weight[old_rows.chars[base]]
            bias[row] = old_bias[old_rows.chars[base]] - SEEDED_BIAS_OFFSET
            surgery.seeded[char] = base
        else:
            weight[row] = torch.randn(features, generator=generator, dtype=old_weight.dtype) * spread * RANDOM_ROW_SCALE
            bias[row] = floor
            surgery.fresh += char
    surgery.dropped = "".join(c for c in old_alphabet.chars if c not in new_rows.chars)
    return weight, bias, surgery


def init_from(model: nn.Module, old_state: Mapping[str, torch.Tensor], old_alphabet: Alphabet,
              new_alphabet: Alphabet, rows: RowsFunction = ctc_rows,
              head_keys: tuple[str, str] = ("head.weight", "head.bias"), seed: int = 0,
              similar: bool = False) -> Surgery:
    """Load a trained model's weights into `model` (built for `new_alphabet`), re-rowing the head.

    Every tensor but the output layer's must match in shape; the output layer's rows are
    carried over, seeded or made by `transfer_head`.
    """
    state = model.state_dict()
    missing = [k for k in state if k not in old_state]
    if missing:
        raise ModelFileError(f"the initial model lacks weights {missing[:3]}: a different architecture")
    new_state = {}
    for key, value in state.items():
        if key in head_keys:
            continue
        if old_state[key].shape != value.shape:
            raise ModelFileError(f"the initial model's {key} has shape {tuple(old_state[key].shape)}, "
                                 f"this architecture needs {tuple(value.shape)}")
        new_state[key] = old_state[key]
    generator = torch.Generator().manual_seed(seed)
    weight, bias, surgery = transfer_head(old_state[head_keys[0]], old_state[head_keys[1]], rows(old_alphabet),
                                          rows(new_alphabet), old_alphabet, generator, similar)
    new_state[head_keys[0]], new_state[head_keys[1]] = weight, bias
    model.load_state_dict(new_state)
    return surgery


def backbone_frozen(freeze: int | str, epoch: int) -> bool:
    """Whether epoch `epoch` (from 1) trains with the backbone frozen."""
    return freeze == "all" or (isinstance(freeze, int) and epoch <= freeze)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze or thaw the conv backbone; frozen, its batch-norm statistics stay as they are too."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()

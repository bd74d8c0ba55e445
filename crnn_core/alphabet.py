"""Characters <-> class ids. Id 0 is the CTC blank; characters take ids 1..K."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .errors import DatasetError


def normalize(text: str) -> str:
    """Unicode NFC, so that 'é' typed two ways is one character for the model."""
    return unicodedata.normalize("NFC", text)


class Alphabet:
    BLANK = 0

    def __init__(self, chars: str | Iterable[str]):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise ValueError("alphabet has repeated characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError("alphabet entries must be single characters")
        self.chars = "".join(chars)
        self._index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Alphabet":
        """The sorted set of characters in the given (already normalised) texts."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def num_classes(self) -> int:
        """Output size of a CTC head: the characters plus the blank."""
        return len(self.chars) + 1

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def unknown(self, text: str) -> set[str]:
        return {c for c in text if c not in self._index}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError:
            missing = "".join(sorted(self.unknown(text)))
            raise DatasetError(f"label {text!r} has characters outside the alphabet: {missing!r}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; the blank and out-of-range ids are dropped."""
        n = len(self.chars)
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Alphabet({self.chars!r})"

"""Characters <-> class ids. Id 0 is the CTC blank; characters take ids 1..K."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .errors import DatasetError, quoted


def normalize(text: str) -> str:
    """Unicode NFC, so that 'é' typed two ways is one character for the model."""
    return unicodedata.normalize("NFC", text)


_CONTROL_NAMES = {"\t": "TAB", "\n": "line feed", "\r": "carriage return", "\x00": "NUL",
                  "\x0b": "vertical tab", "\x0c": "form feed", "\x1b": "escape", "\x7f": "DEL",
                  "\x85": "next line"}


def _is_noncharacter(char: str) -> bool:
    """U+FDD0..U+FDEF and the last two code points of every plane: never characters, in any version."""
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def label_fault(text: str) -> str | None:
    """Why `text` cannot be a label (a character no image can show), or None if it can.

    Refused: control characters (category Cc: TAB, LF, CR, NUL, the other C0 and C1 codes),
    line and paragraph separators (a label is one line), lone surrogates (what Python makes of
    a file name that is not UTF-8) and noncharacters (U+FFFE, U+FDD0...). Allowed: format
    characters (Cf), because ZWJ / ZWNJ, soft hyphens and direction marks are part of how some
    scripts are written; and unassigned code points, because this Python's Unicode database
    may simply be older than the text.
    """
    for position, char in enumerate(text, start=1):
        category = unicodedata.category(char)
        if category == "Cc":
            kind = "a control character"
        elif category in ("Zl", "Zp"):
            kind = "a line break"
        elif category == "Cs":
            kind = "a lone surrogate"  # only file names that are not UTF-8 give these
        elif _is_noncharacter(char):
            kind = "a noncharacter"
        else:
            continue
        name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
        what = f"U+{ord(char):04X}{' ' + name if name else ''}"
        hint = "; the file name is not UTF-8" if category == "Cs" else ""
        return f"label holds {kind} ({what}, character {position} of {len(text)}{hint})"
    return None


def alphabet_fault(chars: str) -> str | None:
    """Why a model file's alphabet cannot be one a model was trained on (labels never bring a
    control character, line break, lone surrogate or noncharacter), or None."""
    fault = label_fault(chars)
    return fault.replace("label holds", "alphabet holds", 1) if fault else None


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
            raise DatasetError(f"label {quoted(text)} has characters outside the alphabet: {quoted(missing)}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; the blank and out-of-range ids are dropped."""
        n = len(self.chars)
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Alphabet({self.chars!r})"

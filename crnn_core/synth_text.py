"""Text for `crnn synth`: lines from a file, random n-word lines from a word list, or codes from a pattern.

Every source draws from the random stream it is given (one per sample), so a sample's text
depends only on the seed and the sample's index, never on which process renders it.
"""

from __future__ import annotations

import random
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .alphabet import normalize
from .errors import DatasetError, UsageError

# What the pattern escapes stand for. Patterns describe codes people type, so \w is the ASCII
# word characters, not all of Unicode's letters.
ESCAPES = {
    "d": string.digits,
    "w": string.ascii_letters + string.digits + "_",
    "s": " ",  # a label's only blank is the space
}
UNBOUNDED = 8  # `*` draws 0..8 repeats and `+` 1..8: a code longer than that is rarely wanted


def clean_label(text: str) -> str | None:
    """The label as the dataset readers will see it (NFC, outer blanks stripped), or None when it
    holds control or format characters (a TAB would break labels.tsv) or is empty."""
    text = normalize(text).strip()
    if not text or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        return None
    return text


def _read_lines(path: Path, what: str) -> tuple[list[str], int]:
    """The usable lines of a UTF-8 file and how many were dropped (blank lines are not counted)."""
    try:
        raw = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    kept, dropped = [], 0
    for line in raw.split("\n"):
        if not line.strip():
            continue
        label = clean_label(line)
        if label is None:
            dropped += 1
        else:
            kept.append(label)
    if not kept:
        raise DatasetError(f"{path}: no usable {what} (UTF-8, one a line, no control characters)")
    return kept, dropped


@dataclass(frozen=True)
class LineSource:
    """Lines of a file, in order, starting over at the end: sample i is line i mod n."""

    lines: tuple[str, ...]
    dropped: int = 0
    random: bool = False  # the same index always gives the same line, so retrying is pointless

    @classmethod
    def from_file(cls, path: Path) -> "LineSource":
        lines, dropped = _read_lines(path, "lines")
        return cls(tuple(lines), dropped)

    def sample(self, rng: random.Random, index: int) -> str:
        return self.lines[index % len(self.lines)]

    def describe(self) -> str:
        return f"{len(self.lines)} lines"


@dataclass(frozen=True)
class WordSource:
    """Lines of `min_words`..`max_words` words drawn at random from a word list."""

    words: tuple[str, ...]
    min_words: int = 1
    max_words: int = 3
    dropped: int = 0
    random: bool = True

    @classmethod
    def from_file(cls, path: Path, min_words: int, max_words: int) -> "WordSource":
        words, dropped = _read_lines(path, "words")
        return cls(tuple(words), min_words, max_words, dropped)

    def sample(self, rng: random.Random, index: int) -> str:
        count = rng.randint(self.min_words, self.max_words)
        return " ".join(rng.choice(self.words) for _ in range(count))

    def describe(self) -> str:
        return f"{self.min_words}-{self.max_words} words a line from {len(self.words)}"


@dataclass(frozen=True)
class PatternSource:
    """Codes matching a regex-like pattern: `[A-Z]{3} [0-9]{4}`, `(AB|CD)-\\d{2,4}`."""

    pattern: str
    dropped: int = 0
    random: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tree", parse_pattern(self.pattern))

    def sample(self, rng: random.Random, index: int) -> str:
        return sample_tree(self._tree, rng)

    def describe(self) -> str:
        return f"pattern {self.pattern!r}"

    def chars(self) -> str:
        """Every character the pattern can produce, sorted."""
        return "".join(sorted(_tree_chars(self._tree)))


# -- patterns ---------------------------------------------------------------------------
# A tree of tuples: ("set", chars) draws one of chars; ("seq", parts); ("alt", options);
# ("rep", node, lo, hi). A literal is a set of one character.
# constrained.py parses full regexes into automata for decoding; this is the small, sampling-only
# subset, kept apart so that neither has to know the other's representation.


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text, self.pos = pattern, 0

    def fail(self, message: str) -> UsageError:
        return UsageError(f"--pattern {self.text!r}: {message} at position {self.pos + 1}")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def take(self) -> str:
        char = self.peek()
        if char is None:
            raise self.fail("unexpected end")
        self.pos += 1
        return char

    def alternation(self) -> tuple:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else ("alt", tuple(options))

    def sequence(self) -> tuple:
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repeat(self.atom()))
        return ("seq", tuple(parts))

    def atom(self) -> tuple:
        char = self.take()
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            inner = self.alternation()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return inner
        if char == "[":
            return ("set", self.char_class())
        if char == "\\":
            return ("set", self.escape())
        if char in "*+?{})]|.^$":
            raise self.fail(f"{char!r} is not supported here (escape it as \\{char} for the character)")
        return ("set", char)

    def escape(self) -> str:
        char = self.take()
        if char in ESCAPES:
            return ESCAPES[char]
        if char.isalnum():
            raise self.fail(f"unknown escape \\{char} (known: \\d \\w \\s)")
        return char

    def char_class(self) -> str:
        if self.peek() == "^":
            raise self.fail("negated classes [^...] are not supported (list the characters wanted)")
        chars: list[str] = []
        while True:
            char = self.take()
            if char == "]" and chars:
                break
            first = self.escape() if char == "\\" else char
            if len(first) == 1 and self.peek() == "-" and self.text[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.pos += 1
                last = self.take()
                last = self.escape() if last == "\\" else last
                if len(last) != 1 or ord(last) < ord(first):
                    raise self.fail(f"bad range {first}-{last}")
                chars.extend(chr(c) for c in range(ord(first), ord(last) + 1))
            else:
                chars.extend(first)
        return "".join(dict.fromkeys(chars))

    def repeat(self, node: tuple) -> tuple:
        char = self.peek()
        if char in ("?", "*", "+"):
            self.pos += 1
            lo, hi = {"?": (0, 1), "*": (0, UNBOUNDED), "+": (1, UNBOUNDED)}[char]
        elif char == "{":
            lo, hi = self.counts()
        else:
            return node
        return self.repeat(("rep", node, lo, hi))

    def counts(self) -> tuple[int, int]:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.fail("'{' without '}'")
        body, start = self.text[self.pos + 1:end], self.pos
        self.pos = end + 1
        lo, _, hi = body.partition(",")
        try:
            low = int(lo)
            high = low if "," not in body else (int(hi) if hi.strip() else low + UNBOUNDED)
        except ValueError:
            self.pos = start
            raise self.fail(f"bad repeat {{{body}}}") from None
        if not 0 <= low <= high <= 1000:
            self.pos = start
            raise self.fail(f"bad repeat {{{body}}} (0 <= m <= n <= 1000)")
        return low, high


def parse_pattern(pattern: str) -> tuple:
    """The pattern's tree; UsageError naming the position of what is not understood."""
    parser = _Parser(pattern)
    tree = parser.alternation()
    if parser.peek() is not None:
        raise parser.fail("unbalanced ')'")
    if not _tree_chars(tree):
        raise UsageError(f"--pattern {pattern!r}: produces no characters")
    return tree


def sample_tree(node: tuple, rng: random.Random) -> str:
    kind = node[0]
    if kind == "set":
        return node[1][rng.randrange(len(node[1]))]
    if kind == "seq":
        return "".join(sample_tree(part, rng) for part in node[1])
    if kind == "alt":
        return sample_tree(node[1][rng.randrange(len(node[1]))], rng)
    _, inner, lo, hi = node
    return "".join(sample_tree(inner, rng) for _ in range(rng.randint(lo, hi)))


def _tree_chars(node: tuple) -> set[str]:
    if node[0] == "set":
        return set(node[1])
    if node[0] == "rep":
        return _tree_chars(node[1]) if node[3] > 0 else set()
    return set().union(*(_tree_chars(part) for part in node[1]))

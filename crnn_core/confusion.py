"""Character-level error analysis from the edit-distance alignment of expected and predicted text.

The alignment is rapidfuzz's Levenshtein `editops` (unit costs). When several alignments have
the same cost, rapidfuzz picks one deterministically; counts follow that choice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein

EQUAL, REPLACE, DELETE, INSERT = "equal", "replace", "delete", "insert"


def align(expected: str, predicted: str) -> list[tuple[str, str, str]]:
    """Character by character: (op, expected char, predicted char); '' where a side has none.

    The number of non-equal ops is the Levenshtein distance.
    """
    out: list[tuple[str, str, str]] = []
    i = j = 0
    for op in Levenshtein.editops(expected, predicted):
        while i < op.src_pos:  # characters before an edit are matched one to one
            out.append((EQUAL, expected[i], predicted[j]))
            i += 1
            j += 1
        if op.tag == REPLACE:
            out.append((REPLACE, expected[i], predicted[j]))
            i += 1
            j += 1
        elif op.tag == DELETE:
            out.append((DELETE, expected[i], ""))
            i += 1
        else:
            out.append((INSERT, "", predicted[j]))
            j += 1
    while i < len(expected):
        out.append((EQUAL, expected[i], predicted[j]))
        i += 1
        j += 1
    return out


@dataclass
class CharCounts:
    expected: int = 0     # occurrences in the references
    correct: int = 0      # of those, read as themselves
    substituted: int = 0  # read as another character
    deleted: int = 0      # missing from the prediction
    inserted: int = 0     # predicted where the reference has nothing

    @property
    def errors(self) -> int:
        return self.substituted + self.deleted + self.inserted


@dataclass
class ErrorAnalysis:
    characters: dict[str, CharCounts]
    confusions: Counter  # (expected char, predicted char) -> count; '' marks a deletion / insertion

    def characters_list(self) -> list[dict]:
        """Characters with any error first (most errors, then highest error rate), then the rest."""
        rows = sorted(self.characters.items(),
                      key=lambda kv: (-kv[1].errors, -(kv[1].substituted + kv[1].deleted) / max(1, kv[1].expected), kv[0]))
        return [dict(char=c, **asdict(n), errors=n.errors) for c, n in rows]

    def confusions_list(self, limit: int | None = None) -> list[dict]:
        rows = sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"expected": e, "predicted": p, "count": n} for (e, p), n in rows[:limit]]


def analyse(pairs: Iterable[tuple[str, str]]) -> ErrorAnalysis:
    """Per-character counts and confusion pairs over (expected, predicted) pairs."""
    characters: dict[str, CharCounts] = {}
    confusions: Counter = Counter()

    def counts(char: str) -> CharCounts:
        if char not in characters:
            characters[char] = CharCounts()
        return characters[char]

    for expected, predicted in pairs:
        for op, e, p in align(expected, predicted):
            if e:
                counts(e).expected += 1
            if op == EQUAL:
                counts(e).correct += 1
                continue
            confusions[(e, p)] += 1
            if op == REPLACE:
                counts(e).substituted += 1
            elif op == DELETE:
                counts(e).deleted += 1
            else:
                counts(p).inserted += 1
    return ErrorAnalysis(characters, confusions)

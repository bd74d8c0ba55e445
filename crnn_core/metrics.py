"""Edit-distance metrics: CER, WER, exact-match sequence accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein


def char_errors(expected: str, predicted: str) -> int:
    return Levenshtein.distance(expected, predicted)


def word_errors(expected: str, predicted: str) -> int:
    return Levenshtein.distance(expected.split(), predicted.split())


@dataclass
class Scores:
    samples: int = 0
    correct: int = 0
    char_errors: int = 0
    chars: int = 0
    word_errors: int = 0
    words: int = 0

    def add(self, expected: str, predicted: str) -> None:
        self.samples += 1
        self.correct += expected == predicted
        self.char_errors += char_errors(expected, predicted)
        self.chars += len(expected)
        self.word_errors += word_errors(expected, predicted)
        self.words += len(expected.split())

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else 0.0

    @property
    def cer(self) -> float:
        """Character errors over reference characters (can exceed 1 for long wrong outputs)."""
        return self.char_errors / self.chars if self.chars else 0.0

    @property
    def wer(self) -> float:
        return self.word_errors / self.words if self.words else 0.0


def score(expected: Sequence[str], predicted: Sequence[str]) -> Scores:
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted differ in length")
    scores = Scores()
    for e, p in zip(expected, predicted):
        scores.add(e, p)
    return scores

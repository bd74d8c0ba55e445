"""Decoding log-probabilities into ids and a confidence.

CTC (T x C per sample, class 0 = blank): greedy best path or prefix beam search. Softmax head
(L x C per sample, class 0 = end of text): the most probable text, exactly.

Confidence: for greedy decoding, the probability of the best path (the product over frames
of the top class's probability); for beam search, the total probability of the chosen text
summed over the alignments the beam kept. Both lie in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BLANK = 0
NEG_INF = -math.inf


@dataclass(frozen=True)
class Decoded:
    ids: tuple[int, ...]
    confidence: float


def collapse(path: Sequence[int]) -> tuple[int, ...]:
    """Merge repeats, then drop blanks: the CTC many-to-one map."""
    out: list[int] = []
    prev = -1
    for k in path:
        if k != prev and k != BLANK:
            out.append(int(k))
        prev = k
    return tuple(out)


def greedy(log_probs: np.ndarray, lengths: Sequence[int]) -> list[Decoded]:
    """Best-path decoding of a T x B x C array; `lengths` gives each sample's valid frames."""
    best = log_probs.argmax(-1)  # T x B
    top = np.take_along_axis(log_probs, best[..., None], -1)[..., 0]
    results = []
    for b, length in enumerate(lengths):
        results.append(Decoded(collapse(best[:length, b].tolist()), float(np.exp(top[:length, b].sum()))))
    return results


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def beam_search(log_probs: np.ndarray, beam: int = 8, prune: float = -12.0) -> Decoded:
    """CTC prefix beam search over one sample's T x C log-probs.

    Each prefix keeps two scores: ending in a blank and ending in its last character, so that
    'aa' (with a blank between) and 'a' (a repeat) stay apart. Classes whose log-prob in a
    frame is below `prune` are skipped there (they cannot change the top beams).
    """
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for frame in log_probs:
        candidates = np.flatnonzero(frame >= prune)
        if candidates.size == 0:
            candidates = np.array([int(frame.argmax())])
        nxt: dict[tuple[int, ...], list[float]] = {}

        def get(prefix: tuple[int, ...]) -> list[float]:
            entry = nxt.get(prefix)
            if entry is None:
                entry = nxt[prefix] = [NEG_INF, NEG_INF]
            return entry

        for prefix, (p_blank, p_char) in beams.items():
            total = _logaddexp(p_blank, p_char)
            last = prefix[-1] if prefix else None
            for k in candidates.tolist():
                lp = float(frame[k])
                if k == BLANK:
                    e = get(prefix)
                    e[0] = _logaddexp(e[0], total + lp)
                    continue
                extended = prefix + (k,)
                e = get(extended)
                if k == last:
                    # A repeat only extends the prefix after a blank; otherwise it merges.
                    e[1] = _logaddexp(e[1], p_blank + lp)
                    same = get(prefix)
                    same[1] = _logaddexp(same[1], p_char + lp)
                else:
                    e[1] = _logaddexp(e[1], total + lp)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam]
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked}
    prefix, (p_blank, p_char) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
    return Decoded(prefix, float(math.exp(_logaddexp(p_blank, p_char))))


END = 0


def positions(log_probs: np.ndarray) -> Decoded:
    """The most probable text from one sample's L x C softmax-head log-probs (class 0 = end).

    A text of n < L characters has probability prod_{i<n} p_i(c_i) * p_n(end): what follows
    the first end does not matter. So the best text of each length n takes the best non-end
    class at positions before n, and the answer is the best over n = 0..L (n = L needs no end).
    Reading argmax up to the first end is not always this: a likely end at position 0 can
    beat a long run of barely-winning characters.
    """
    length = log_probs.shape[0]
    chars = log_probs[:, 1:]
    best = chars.argmax(-1) + 1
    best_lp = np.take_along_axis(log_probs, best[:, None], -1)[:, 0]
    prefix = np.concatenate([[0.0], np.cumsum(best_lp, dtype=np.float64)])  # prefix[n]: best n characters
    scores = prefix[:length] + log_probs[:, END]
    scores = np.append(scores, prefix[length])
    n = int(scores.argmax())
    return Decoded(tuple(int(k) for k in best[:n]), float(np.exp(scores[n])))


def decode_batch(log_probs: np.ndarray, lengths: Sequence[int], beam: int = 1, head: str = "ctc") -> list[Decoded]:
    """CTC: greedy when beam <= 1, prefix beam search otherwise. Softmax head: always exact."""
    if head == "softmax":
        return [positions(log_probs[:, b]) for b in range(log_probs.shape[1])]
    if beam <= 1:
        return greedy(log_probs, lengths)
    return [beam_search(log_probs[:length, b], beam) for b, length in enumerate(lengths)]

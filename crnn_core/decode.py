"""Decoding log-probabilities into ids and a confidence: every decoder of the project.

Each decoder takes a T x B x C array of log-probabilities and each sample's valid length, and
returns one `Decoded` per sample. CTC (class 0 = blank): greedy best path, or prefix beam
search, which walks an automaton over class ids (automata.py): a constraint's (`--pattern`,
`--lexicon`), or the universal one for unconstrained decoding, so there is one beam search.
Softmax head (L x C per sample, class 0 = end of text): the most probable text, exactly.

Confidence: for greedy decoding, the probability of the best path (the product over frames
of the top class's probability); for beam search, the total probability of the chosen text
summed over the alignments the beam kept. Both lie in [0, 1].

Weakest: the probability of the reading's least certain character, each character taken at
its most probable frame along the reading's most probable alignment (the softmax head: the
least probable of the chosen characters and the end). A product over every frame falls with
the length of the line whatever its quality; the weakest character does not, and it is what
decides whether a reading is right, so calibration maps this score (docs/accuracy.md, "Which
score says a reading is right": it ranks right above wrong readings far better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .automata import Automaton, universal

BLANK = 0
END = 0  # the softmax head's end-of-text class
# Unconstrained beam search skips classes below this log-prob in a frame (e^-12 ~ 6e-6): they
# cannot change the top beams, and skipping them keeps the search small.
BEAM_PRUNE = -12.0


@dataclass(frozen=True)
class Decoded:
    """One sample's reading. `matched` is False when a constrained search found no accepted
    reading (ids are then empty and confidence 0). `text` is filled in by the recogniser,
    which knows the alphabet; decoders leave it empty. `weakest`: the probability of the least
    certain character (module docstring)."""

    ids: tuple[int, ...]
    confidence: float
    matched: bool = True
    text: str = ""
    weakest: float = 0.0


NO_MATCH = Decoded((), 0.0, False)


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
    """Best-path decoding; `lengths` gives each sample's valid frames."""
    best = log_probs.argmax(-1)  # T x B
    top = np.take_along_axis(log_probs, best[..., None], -1)[..., 0]
    return [_best_path(best[:length, b].tolist(), top[:length, b]) for b, length in enumerate(lengths)]


def _best_path(path: list[int], top: np.ndarray) -> Decoded:
    """A best path's reading and probability, and its weakest character: each character's best
    frame, the least of those (no character: the least sure frame)."""
    ids: list[int] = []
    best: list[float] = []
    prev = -1
    for k, lp in zip(path, top.tolist()):
        if k != BLANK and k == prev:
            best[-1] = max(best[-1], lp)
        elif k != BLANK:
            ids.append(int(k))
            best.append(lp)
        prev = k
    weakest = min(best) if best else float(top.min(initial=0.0))
    return Decoded(tuple(ids), float(np.exp(top.sum())), weakest=float(np.exp(weakest)))


def weakest_characters(log_probs: np.ndarray, lengths: Sequence[int], readings: Sequence[Sequence[int]]) -> list[float]:
    """Each reading's weakest character along its most probable CTC alignment (Viterbi) in a
    T x B x C log-prob array: each character at its best frame, the least of those; with no
    character, the least sure blank. 0.0 where a reading needs more frames than its sample has.

    All samples at once: states are blank, c1, blank, c2, ..., blank, padded to the longest.
    """
    batch = len(readings)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(batch)
    sizes = np.array([2 * len(ids) + 1 for ids in readings])
    labels = np.zeros((batch, int(sizes.max(initial=1))), dtype=np.int64)
    for b, ids in enumerate(readings):
        labels[b, 1:sizes[b]:2] = ids
    # a character state may also be entered from two back (over a blank) when the character differs
    skip = np.zeros(labels.shape, dtype=bool)
    skip[:, 3::2] = labels[:, 3::2] != labels[:, 1:-2:2]
    frames = np.take_along_axis(log_probs[: int(lengths.max(initial=0))], labels[None], 2)  # T x B x S
    score = np.full(labels.shape, -np.inf)
    score[:, :2] = frames[0, :, :2] if len(frames) else -np.inf
    back = np.zeros(frames.shape, dtype=np.int8)  # how many states back each state came from
    for t in range(1, len(frames)):
        padded = np.pad(score, ((0, 0), (2, 0)), constant_values=-np.inf)
        one, two = padded[:, 1:-1], np.where(skip, padded[:, :-2], -np.inf)
        back[t] = one > score  # ties go to the nearer state (as argmax over stay, one, two back would)
        best = np.maximum(score, one)
        over = two > best
        back[t][over] = 2
        best[over] = two[over]
        score = np.where((t < lengths)[:, None], best + frames[t], score)
    rows = np.arange(batch)
    last = np.maximum(sizes - 2, 0)
    end = np.where(score[rows, sizes - 1] >= score[rows, last], sizes - 1, last)
    possible = (lengths > 0) & np.isfinite(score[rows, end])
    best = np.full(labels.shape, -np.inf)
    for t in range(len(frames) - 1, -1, -1):  # walk each alignment back, keeping each state's best frame
        on = t < lengths
        best[rows[on], end[on]] = np.maximum(best[rows[on], end[on]], frames[t, rows[on], end[on]])
        end = np.where(on, end - back[t, rows, end], end)
    out = []
    for b, ids in enumerate(readings):
        chosen = best[b, 1:sizes[b]:2] if len(ids) else log_probs[: lengths[b], b, BLANK]
        out.append(float(np.exp(chosen.min())) if possible[b] else 0.0)
    return out


def positions(log_probs: np.ndarray, lengths: Sequence[int] | None = None) -> list[Decoded]:
    """Softmax head: each sample's most probable text. Every sample has all L positions, so
    `lengths` is not needed (it is accepted for the common signature)."""
    return [best_text(log_probs[:, b]) for b in range(log_probs.shape[1])]


def best_text(log_probs: np.ndarray) -> Decoded:
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
    chosen = np.append(best_lp[:n], log_probs[n, END] if n < length else [])  # its characters and its end
    weakest = float(np.exp(chosen.min())) if chosen.size else 1.0
    return Decoded(tuple(int(k) for k in best[:n]), float(np.exp(scores[n])), weakest=weakest)


def _frame_probs(log_probs: np.ndarray, prune: float | None) -> np.ndarray:
    """Probabilities in float64, zero below `prune` (a frame always keeps its best class)."""
    probs = np.exp(log_probs.astype(np.float64))
    if prune is not None:
        below = log_probs < prune
        np.put_along_axis(below, log_probs.argmax(-1)[..., None], False, -1)
        probs[below] = 0.0
    return probs


def beam_search(log_probs: np.ndarray, lengths: Sequence[int], beam: int = 8, automaton: Automaton | None = None,
                prune: float | None = None) -> list[Decoded]:
    """CTC prefix beam search of every sample at once, restricted to `automaton` (None: any text).

    Each prefix keeps two scores, its alignments ending in a blank and ending in its last
    symbol, so that 'aa' (with a blank between) and 'a' (a repeat) stay apart, and carries its
    automaton state. Each frame scores every (prefix, class) extension of every sample at once:
    zero where the automaton has no transition or the new prefix would need more symbols than
    frames are left. Scores are probabilities rescaled every frame (a sample's prefixes share
    the scale, so the ranking is unchanged and nothing underflows). `prune` drops classes
    below that log-prob in a frame. With `beam` at least the number of live prefixes and no
    `prune`, the result is the exact most probable accepted reading; a sample whose beam ends
    holding no accepted prefix gets NO_MATCH.
    """
    _, batch, classes = log_probs.shape
    automaton = automaton or universal(classes)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(batch)
    probs = _frame_probs(log_probs, prune)
    search = _Search(automaton, batch, beam, classes)
    search.beams.blank[:, 0] = automaton.remaining[automaton.start] <= lengths  # else it can never match
    for t in range(int(lengths.max(initial=0))):
        search.step(probs[t], lengths - 1 - t, t < lengths)
    results = search.results()
    weakest = weakest_characters(log_probs, lengths, [d.ids for d in results])
    return [replace(d, weakest=w) if d.matched else d for d, w in zip(results, weakest)]


class _Search:
    """The beam of every sample, B x W slots; prefixes are nodes of one shared trie. W starts at
    min(beam, 16) and grows up to the beam width only as far as some sample has that many live
    prefixes, so a very wide beam (an exact search) costs what the lattice needs."""

    def __init__(self, automaton: Automaton, batch: int, width: int, classes: int):
        self.automaton, self.width, self.classes = automaton, width, classes
        self.remaining, self.accepting = automaton.tables()
        self.parent, self.symbol, self.children = [-3], [0], {}  # node 0: the empty prefix
        self.rows = np.arange(batch)[:, None]
        self.beams = _widen(_Beams(np.zeros((batch, 1), dtype=np.int64), np.zeros((batch, 1)), np.zeros((batch, 1)),
                                   np.full((batch, 1), automaton.start), np.zeros((batch, 1), dtype=np.int64),
                                   np.full((batch, 1), -2)), min(width, 16), automaton.start)
        self.log_scale = np.zeros(batch)

    def step(self, frame: np.ndarray, left: np.ndarray, active: np.ndarray) -> None:
        """One frame (B x C) for the samples still `active`; `left`: frames after this one."""
        old, rem = self.beams, self.remaining
        total = old.blank + old.char
        on_last = frame[self.rows, old.last] * (old.last > 0)  # the last symbol held over this frame
        stay = rem[old.state] <= left[:, None]  # a prefix that stays can still reach acceptance
        new_blank = total * frame[:, :1] * stay
        new_char = old.char * on_last * stay
        targets = self.automaton.next_states(old.state.ravel(), self.classes).reshape(*old.state.shape, -1)
        valid = rem[targets] <= left[:, None, None]  # a transition, and acceptance still in reach
        ext = total[:, :, None] * frame[:, None, :] * valid  # B x W x C
        _repeats_and_merges(old, ext, valid, old.blank * on_last, new_char)
        chosen = self._choose(new_blank, new_char, ext, targets)
        top = (chosen.blank + chosen.char).max(1)
        top[(top <= 0.0) | ~active] = 1.0  # nothing left (every slot is zero, and stays so), or finished
        self.log_scale += np.log(top)
        chosen.blank /= top[:, None]
        chosen.char /= top[:, None]
        if not active.all():  # samples past their length keep their beams
            old = _widen(old, chosen.node.shape[1], self.automaton.start)
            chosen = _Beams(*(np.where(active[:, None], b, a) for a, b in zip(vars(old).values(), vars(chosen).values())))
        self.beams = chosen

    def _choose(self, new_blank: np.ndarray, new_char: np.ndarray, ext: np.ndarray, targets: np.ndarray) -> _Beams:
        """Each sample's best candidates: its slots staying as they are, then every extension."""
        batch, width, classes = ext.shape
        blanks = np.concatenate((new_blank, np.zeros((batch, width * classes))), 1)
        chars = np.concatenate((new_char, ext.reshape(batch, -1)), 1)
        scores = blanks + chars
        keep = width if width >= self.width else min(self.width, max(width, int(np.count_nonzero(scores, 1).max())))
        pick = np.argpartition(-scores, keep - 1, 1)[:, :keep]
        kept = pick < width
        slot = np.where(kept, pick, (pick - width) // classes)
        rows, old = self.rows, self.beams
        symbol = np.where(kept, old.last[rows, slot], (pick - width) % classes)
        state = np.where(kept, old.state[rows, slot], targets[rows, slot, symbol])
        alive = scores[rows, pick] > 0.0
        source = old.node[rows, slot]
        node = self._nodes(source, symbol, kept, alive)
        up = np.where(alive, np.where(kept, old.up[rows, slot], source), -2)
        return _Beams(node, blanks[rows, pick] * alive, chars[rows, pick] * alive,
                      np.where(alive, state, self.automaton.start), np.where(alive, symbol, 0), up)

    def _nodes(self, source: np.ndarray, symbol: np.ndarray, kept: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """The trie node of each chosen candidate (-1 for an empty slot), adding new prefixes to the trie."""
        node = np.where(kept & alive, source, -1)
        for b, i in zip(*np.nonzero(~kept & alive)):
            key = (int(source[b, i]), int(symbol[b, i]))
            child = self.children.get(key)
            if child is None:
                child = self.children[key] = len(self.parent)
                self.parent.append(key[0])
                self.symbol.append(key[1])
            node[b, i] = child
        return node

    def results(self) -> list[Decoded]:
        beams = self.beams
        total = (beams.blank + beams.char) * self.accepting[beams.state] * (beams.node >= 0)
        out = []
        for b, best in enumerate(total.argmax(1).tolist()):
            if total[b, best] <= 0.0:
                out.append(NO_MATCH)
                continue
            ids, node = [], int(beams.node[b, best])
            while node > 0:
                ids.append(self.symbol[node])
                node = self.parent[node]
            out.append(Decoded(tuple(reversed(ids)), math.exp(math.log(total[b, best]) + self.log_scale[b])))
        return out


def _repeats_and_merges(old: _Beams, ext: np.ndarray, valid: np.ndarray, repeat: np.ndarray,
                        new_char: np.ndarray) -> None:
    """Two corrections, in place. After its own last symbol, a prefix starts a new one only from
    alignments ending in a blank (`repeat`). And an extension that is already a prefix in the
    beam adds to that prefix instead of competing with it."""
    b, i = np.nonzero(old.last > 0)
    k = old.last[b, i]
    ext[b, i, k] = repeat[b, i] * valid[b, i, k]
    same = old.up[:, :, None] == old.node[:, None, :]  # B x W x W: slot j holds slot i's parent
    b, i, j = np.nonzero(same)
    k = old.last[b, i]
    new_char[b, i] += ext[b, j, k]
    ext[b, j, k] = 0.0


def _widen(beams: _Beams, width: int, start: int) -> _Beams:
    """The same beams with empty slots appended up to `width`."""
    batch, extra = beams.node.shape[0], width - beams.node.shape[1]
    if extra <= 0:
        return beams
    empty = {"node": -1, "blank": 0.0, "char": 0.0, "state": start, "last": 0, "up": -2}
    return _Beams(**{name: np.concatenate((a, np.full((batch, extra), empty[name], dtype=a.dtype)), 1)
                     for name, a in vars(beams).items()})


@dataclass
class _Beams:
    node: np.ndarray  # the prefix, as a node of the search's trie; -1: an empty slot
    blank: np.ndarray  # probability of the prefix with its alignment ending in a blank
    char: np.ndarray  # ... ending in its last symbol
    state: np.ndarray  # automaton state after the prefix
    last: np.ndarray  # the prefix's last symbol, 0 (the blank) for the empty prefix
    up: np.ndarray  # the node of the prefix without its last symbol; -2 for the empty prefix and empty slots

"""Automata over a model's class ids: what constrained decoding walks.

A constraint (`--pattern`, `--lexicon`) becomes a deterministic automaton over the class ids
1..K (the CTC blank is never a symbol): a regex through patterns.py, a word list as a trie
here. Unconstrained beam search walks the universal automaton (one accepting state, every
class a loop), so there is one prefix beam search (decode.py) for both.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .alphabet import Alphabet, normalize
from .errors import ConstraintError

# A table of next states is built densely up to this many entries (8 MB); a larger trie
# builds only the rows the beam visits.
DENSE_TABLE_LIMIT = 1 << 20


@dataclass
class Automaton:
    """A DFA over class ids, trimmed: every state can still reach an accepting one.

    `transitions[s]` maps a class id to the next state (missing = rejected); `remaining[s]`
    is the fewest further symbols that lead from `s` to acceptance.
    """

    start: int
    transitions: list[dict[int, int]]
    accepting: list[bool]
    remaining: list[int]
    description: str = ""

    _rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _dense: np.ndarray | None = field(default=None, repr=False, compare=False)
    _arrays: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def states(self) -> int:
        return len(self.transitions)

    def _row(self, state: int, classes: int) -> np.ndarray:
        row = self._rows.get(state)
        if row is None or row.shape[0] != classes:
            row = np.full(classes, -1, dtype=np.int64)
            for k, t in self.transitions[state].items():
                if k < classes:
                    row[k] = t
            self._rows[state] = row
        return row

    def next_states(self, states: np.ndarray, classes: int) -> np.ndarray:
        """len(states) x classes: the state after each class id, -1 where there is none.

        A small automaton answers from one dense table; a large trie builds (and caches) only
        the rows the beam visits.
        """
        if self.states * classes <= DENSE_TABLE_LIMIT:
            if self._dense is None or self._dense.shape[1] != classes:
                self._dense = np.stack([self._row(s, classes) for s in range(self.states)])
            return self._dense[states]
        return np.stack([self._row(s, classes) for s in states.tolist()])

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """`remaining` and `accepting` as arrays. `remaining` has one extra last entry, larger
        than any frame count, so that indexing it with -1 (no state) says "never accepted"."""
        if self._arrays is None:
            never = np.iinfo(np.int64).max
            self._arrays = (np.array([*self.remaining, never], dtype=np.int64), np.array(self.accepting, dtype=bool))
        return self._arrays

    def run(self, ids: Iterable[int]) -> int | None:
        state: int | None = self.start
        for k in ids:
            state = self.transitions[state].get(int(k))
            if state is None:
                return None
        return state

    def accepts(self, ids: Iterable[int]) -> bool:
        state = self.run(ids)
        return state is not None and self.accepting[state]


def trim(start: int, transitions: list[dict[int, int]], accepting: list[bool], description: str,
          empty_message: str) -> Automaton:
    """Drop states that cannot reach acceptance, renumber, and compute `remaining`."""
    n = len(transitions)
    reverse: list[list[int]] = [[] for _ in range(n)]
    for s, trans in enumerate(transitions):
        for t in trans.values():
            reverse[t].append(s)
    remaining = [math.inf] * n
    queue = deque(s for s in range(n) if accepting[s])
    for s in queue:
        remaining[s] = 0
    while queue:
        s = queue.popleft()
        for p in reverse[s]:
            if remaining[p] == math.inf:
                remaining[p] = remaining[s] + 1
                queue.append(p)
    if remaining[start] == math.inf:
        raise ConstraintError(empty_message)
    # Keep the live states reachable from the start, numbered in BFS order.
    order = {start: 0}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        for t in transitions[s].values():
            if remaining[t] != math.inf and t not in order:
                order[t] = len(order)
                queue.append(t)
    live = sorted(order, key=order.get)
    new_trans = [{k: order[t] for k, t in transitions[s].items() if t in order} for s in live]
    return Automaton(0, new_trans, [accepting[s] for s in live], [int(remaining[s]) for s in live], description)



def read_lexicon(path: str | Path) -> list[str]:
    """One entry a line, exactly as written (only the line ending removed); empty lines skipped.
    A byte-order mark (as Windows editors write) is not part of the first entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConstraintError(f"{path}: no such lexicon file") from None
    except UnicodeDecodeError as exc:
        raise ConstraintError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConstraintError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return [normalize(line) for line in text.splitlines() if line]


@dataclass
class Lexicon:
    automaton: Automaton
    words: int
    unusable: list[str]  # entries with characters the model cannot emit


def compile_lexicon(words: Iterable[str], alphabet: Alphabet, source: str = "lexicon") -> Lexicon:
    """A trie over class ids; entries with characters outside the alphabet are left out (and listed)."""
    transitions: list[dict[int, int]] = [{}]
    accepting = [False]
    unusable: list[str] = []
    count = 0
    for word in words:
        word = normalize(word)
        if alphabet.unknown(word):
            unusable.append(word)
            continue
        state = 0
        for k in alphabet.encode(word):
            nxt = transitions[state].get(k)
            if nxt is None:
                nxt = transitions[state][k] = len(transitions)
                transitions.append({})
                accepting.append(False)
            state = nxt
        if not accepting[state]:
            count += 1
        accepting[state] = True
    if count == 0:
        detail = f" ({len(unusable)} entries need characters outside {alphabet.chars!r})" if unusable else ""
        raise ConstraintError(f"{source}: no usable entries{detail}")
    automaton = trim(0, transitions, accepting, f"lexicon {source}", f"{source}: no usable entries")
    return Lexicon(automaton, count, unusable)



@lru_cache(maxsize=8)
def universal(classes: int) -> Automaton:
    """Accepts every labelling over class ids 1..classes-1: unconstrained decoding."""
    return Automaton(0, [{k: 0 for k in range(1, classes)}], [True], [0], "any text")

"""Constrained CTC decoding: the most probable reading that a regex or a word list accepts.

Both constraints become the same thing, a deterministic automaton over the model's class ids
(1..K; the blank is never a symbol): a regular expression through a Thompson NFA and the
subset construction, a lexicon as a trie. The decoder is CTC prefix beam search in which
every prefix carries its automaton state, a prefix is only extended along a transition, and
the answer is chosen among prefixes in an accepting state. When the beam holds none at the
end, the result says so (`matched=False`, no ids) instead of returning a rejected string.

Python's `re` exposes no automaton, so the supported regex subset is parsed here: literals,
escapes (\\d \\w \\s and their negations, \\. and other escaped punctuation, \\t \\n \\xHH
\\uHHHH), `.`, character classes `[...]` (their members are worked out by `re` itself, so
ranges and negation mean exactly what they mean in Python), groups `(...)` `(?:...)`
`(?P<name>...)`, alternation `|`, quantifiers `? * +` `{m}` `{m,}` `{,n}` `{m,n}` (a lazy
`?` suffix is accepted: it does not change which strings match), and `^` / `$` at the very
ends. The pattern must match the whole reading, as `re.fullmatch` does. Characters outside
the model's alphabet can never be emitted, so the branches that need one are dropped.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .alphabet import Alphabet, normalize
from .errors import CrnnError

BLANK = 0
# Limits that keep a pathological pattern from eating the machine; real ones are far below.
MAX_NFA_STATES = 50_000
MAX_DFA_STATES = 20_000
DEFAULT_BEAM = 16


class ConstraintError(CrnnError):
    """A pattern or lexicon that cannot be used."""


# --------------------------------------------------------------------------------------------
# The automaton


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
    _arrays: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def states(self) -> int:
        return len(self.transitions)

    def rows(self, states: list[int], classes: int) -> np.ndarray:
        """len(states) x classes: the next state for each class id, -1 where there is none.

        Rows are built on first use and cached, so a large trie never needs a dense table.
        """
        out = np.empty((len(states), classes), dtype=np.int64)
        for i, s in enumerate(states):
            row = self._rows.get(s)
            if row is None or row.shape[0] != classes:
                row = np.full(classes, -1, dtype=np.int64)
                for k, t in self.transitions[s].items():
                    if k < classes:
                        row[k] = t
                self._rows[s] = row
            out[i] = row
        return out

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.array(self.remaining, dtype=np.int64), np.array(self.accepting, dtype=bool))
        return self._arrays

    def remaining_of(self, states: np.ndarray) -> np.ndarray:
        return self._tables()[0][states]

    def accepting_of(self, states: np.ndarray) -> np.ndarray:
        return self._tables()[1][states]

    def need_after(self, targets: np.ndarray) -> np.ndarray:
        """For a table of next states (-1 = none): the symbols each still needs (huge for none)."""
        remaining = self._tables()[0]
        return np.where(targets >= 0, remaining[np.maximum(targets, 0)], np.iinfo(np.int64).max)

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


def _trim(start: int, transitions: list[dict[int, int]], accepting: list[bool], description: str,
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


# --------------------------------------------------------------------------------------------
# Regex -> syntax tree (tuples): ("set", frozenset ids) | ("cat", [..]) | ("alt", [..]) | ("rep", node, m, n|None)

_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")
_SIMPLE_ESCAPES = set("dDwWsStnrfva")


class _Parser:
    def __init__(self, pattern: str, alphabet: Alphabet):
        self.p = pattern
        self.i = 0
        self.alphabet = alphabet
        self.every = frozenset(range(1, len(alphabet) + 1))

    def fail(self, message: str, at: int | None = None) -> ConstraintError:
        at = self.i if at is None else at
        return ConstraintError(f"pattern {self.p!r}: {message} at position {at}")

    def members(self, source: str, at: int) -> frozenset[int]:
        """The alphabet's characters that a one-character regex (a class or an escape) matches."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "possible nested set" and the like
                compiled = re.compile(source)
        except re.error as exc:
            raise self.fail(f"{exc.msg} in {source!r}", at) from None
        return frozenset(i + 1 for i, c in enumerate(self.alphabet.chars) if compiled.fullmatch(c))

    def literal(self, char: str) -> tuple:
        return ("set", frozenset([self.alphabet.chars.index(char) + 1]) if char in self.alphabet else frozenset())

    def parse(self) -> tuple:
        p = self.p
        lo, hi = 0, len(p)
        if p.startswith("^"):
            lo = 1
        if p.endswith("$") and not _escaped(p, len(p) - 1) and len(p) - 1 >= lo:
            hi = len(p) - 1
        self.i = lo
        self.end = hi
        node = self.alternation()
        if self.i < self.end:
            raise self.fail("unbalanced ')'" if p[self.i] == ")" else f"unexpected {p[self.i]!r}")
        return node

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < self.end else None

    def alternation(self) -> tuple:
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self) -> tuple:
        items = []
        while self.peek() is not None and self.peek() not in "|)":
            items.append(self.repeat())
        return items[0] if len(items) == 1 else ("cat", items)

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        if c == "{":
            m = _QUANTIFIER.match(self.p, self.i, self.end)
            if m and (m.group(1) or m.group(3) or m.group(2)):
                low = int(m.group(1)) if m.group(1) else 0
                high: int | None
                if m.group(2):
                    high = int(m.group(3)) if m.group(3) else None
                else:
                    high = low
                if high is not None and high < low:
                    raise self.fail("min repeat greater than max repeat")
                self.i = m.end()
                return low, high
        return None

    def repeat(self) -> tuple:
        node = self.atom()
        q = self.quantifier()
        if q is None:
            return node
        if self.peek() == "?":  # lazy: the same strings match
            self.i += 1
        elif self.peek() == "+":
            raise self.fail("possessive quantifiers are not supported")
        if self.quantifier() is not None:
            raise self.fail("multiple repeat")
        return ("rep", node, q[0], q[1])

    def atom(self) -> tuple:
        p, i = self.p, self.i
        c = p[i]
        if c == "(":
            self.i += 1
            if p.startswith("?:", self.i):
                self.i += 2
            elif p.startswith("?P<", self.i):
                close = p.find(">", self.i)
                if close < 0:
                    raise self.fail("unterminated group name")
                self.i = close + 1
            elif p.startswith("?", self.i):
                raise self.fail("lookarounds, flags and other '(?' groups are not supported")
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing ')', unterminated group", i)
            self.i += 1
            return node
        if c in "*+?":
            raise self.fail("nothing to repeat")
        if c == "{" and self.quantifier() is not None:
            raise self.fail("nothing to repeat", i)
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            self.i += 1
            return ("set", frozenset(k for k in self.every if self.alphabet.chars[k - 1] != "\n"))
        if c == "\\":
            return ("set", self.escape())
        if c in "^$":
            raise self.fail(f"{c!r} is only supported at the very start or end (the whole reading must match anyway)")
        self.i += 1
        return self.literal(c)

    def char_class(self) -> frozenset[int]:
        p, start = self.p, self.i
        j = start + 1
        if j < self.end and p[j] == "^":
            j += 1
        if j < self.end and p[j] == "]":  # a ']' first is a literal
            j += 1
        while j < self.end and p[j] != "]":
            if p[j] == "[" and p.startswith(("[:", "[=", "[."), j):
                raise self.fail("POSIX classes are not supported", j)
            j += 2 if p[j] == "\\" else 1
        if j >= self.end:
            raise self.fail("unterminated character set", start)
        self.i = j + 1
        return self.members(p[start:self.i], start)

    def escape(self) -> frozenset[int]:
        p, start = self.p, self.i
        if start + 1 >= self.end:
            raise self.fail("bad escape (end of pattern)")
        c = p[start + 1]
        length = 2
        if c in _SIMPLE_ESCAPES:
            pass
        elif c == "x":
            length = 4
        elif c == "u":
            length = 6
        elif c == "U":
            length = 10
        elif c == "0":
            length = 2
            while length < 4 and start + length < self.end and p[start + length] in "01234567":
                length += 1
        elif c == "N":
            close = p.find("}", start)
            length = (close - start + 1) if close > 0 else 2
        elif c.isdigit():
            raise self.fail("back-references are not supported")
        elif c in "bBAZz":
            raise self.fail(f"the anchor \\{c} is not supported")
        elif c.isascii() and c.isalnum():
            raise self.fail(f"bad escape \\{c}")
        if start + length > self.end:
            raise self.fail("incomplete escape")
        self.i = start + length
        return self.members(p[start:self.i], start)


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - 1 - backslashes >= 0 and text[index - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


# --------------------------------------------------------------------------------------------
# Syntax tree -> Thompson NFA -> DFA


class _NFA:
    def __init__(self, pattern: str):
        self.pattern = pattern
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[frozenset[int], int]]] = []

    def state(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise ConstraintError(f"pattern {self.pattern!r}: too large (over {MAX_NFA_STATES} automaton states); "
                                  "use smaller repeat counts")
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node: tuple) -> tuple[int, int]:
        """A fragment for `node`: (entry, exit) states."""
        kind = node[0]
        if kind == "set":
            s, e = self.state(), self.state()
            if node[1]:
                self.edges[s].append((node[1], e))
            return s, e
        if kind == "cat":
            s = e = self.state()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[e].append(cs)
                e = ce
            return s, e
        if kind == "alt":
            s, e = self.state(), self.state()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[s].append(cs)
                self.eps[ce].append(e)
            return s, e
        _, child, low, high = node
        s = e = self.state()
        for _ in range(low):
            cs, ce = self.build(child)
            self.eps[e].append(cs)
            e = ce
        if high is None:  # a loop: zero or more further copies
            cs, ce = self.build(child)
            end = self.state()
            self.eps[e] += [cs, end]
            self.eps[ce] += [cs, end]
            return s, end
        end = self.state()
        for _ in range(high - low):  # optional copies, each skippable to the end
            self.eps[e].append(end)
            cs, ce = self.build(child)
            self.eps[e].append(cs)
            e = ce
        self.eps[e].append(end)
        return s, end


def compile_pattern(pattern: str, alphabet: Alphabet) -> Automaton:
    """A DFA over `alphabet`'s class ids accepting exactly the readings `re.fullmatch(pattern, ...)` accepts."""
    pattern = normalize(pattern)
    tree = _Parser(pattern, alphabet).parse()
    nfa = _NFA(pattern)
    start, accept = nfa.build(tree)

    closures: dict[frozenset[int], frozenset[int]] = {}

    def closure(states: Iterable[int]) -> frozenset[int]:
        key = frozenset(states)
        found = closures.get(key)
        if found is None:
            seen = set(key)
            stack = list(key)
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            found = closures[key] = frozenset(seen)
        return found

    first = closure([start])
    index = {first: 0}
    subsets = [first]
    transitions: list[dict[int, int]] = []
    accepting: list[bool] = []
    for subset in subsets:  # grows while we iterate
        moves: dict[int, set[int]] = {}
        for s in subset:
            for symbols, target in nfa.edges[s]:
                for k in symbols:
                    moves.setdefault(k, set()).add(target)
        trans: dict[int, int] = {}
        for k, targets in moves.items():
            nxt = closure(targets)
            j = index.get(nxt)
            if j is None:
                if len(subsets) >= MAX_DFA_STATES:
                    raise ConstraintError(f"pattern {pattern!r}: too complex (over {MAX_DFA_STATES} DFA states)")
                j = index[nxt] = len(subsets)
                subsets.append(nxt)
            trans[k] = j
        transitions.append(trans)
        accepting.append(accept in subset)
    return _trim(0, transitions, accepting, f"pattern {pattern}",
                 f"pattern {pattern!r} accepts no text made of the model's characters "
                 f"({alphabet.chars!r})")


# --------------------------------------------------------------------------------------------
# Lexicon -> trie


def read_lexicon(path: str | Path) -> list[str]:
    """One entry a line, exactly as written (only the line ending removed); empty lines skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
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
    automaton = _trim(0, transitions, accepting, f"lexicon {source}", f"{source}: no usable entries")
    return Lexicon(automaton, count, unusable)


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class ConstrainedDecoded:
    ids: tuple[int, ...]
    confidence: float  # probability of the reading, summed over the alignments the beam kept
    matched: bool  # False: the beam found no accepted reading; ids is then empty
    log_prob: float = -math.inf


def constrained_beam_search(log_probs: np.ndarray, automaton: Automaton, beam: int = DEFAULT_BEAM,
                            prune: float | None = None) -> ConstrainedDecoded:
    """CTC prefix beam search over one sample's T x C log-probs, restricted to `automaton`.

    Each frame scores every (prefix, class) extension at once with numpy: a B x C matrix,
    zero where the automaton has no transition or where the new prefix would need more
    symbols than frames are left (it could never end accepted). Scores are probabilities
    rescaled every frame (all prefixes share the scale, so the ranking is unchanged and
    nothing underflows). `prune` optionally drops classes whose log-prob in a frame is below
    it. With `beam` at least the number of live prefixes and no `prune`, the result is the
    exact most probable accepted reading.
    """
    steps, classes = log_probs.shape
    no_match = ConstrainedDecoded((), 0.0, False)
    if automaton.remaining[automaton.start] > steps:
        return no_match
    probs = np.exp(log_probs.astype(np.float64))
    if prune is not None:
        probs[log_probs < prune] = 0.0
    prefixes: list[tuple[int, ...]] = [()]
    p_blank = np.ones(1)  # probability of the prefix with its alignment ending in a blank
    p_char = np.zeros(1)  # ... ending in its last symbol
    states = np.array([automaton.start])
    log_scale = 0.0
    for t in range(steps):
        frame = probs[t]
        left = steps - 1 - t  # frames after this one
        count = len(prefixes)
        targets = automaton.rows(states.tolist(), classes)  # count x C next states, -1 = none
        need = automaton.need_after(targets)  # symbols still needed after each extension
        total = p_blank + p_char
        last = np.array([p[-1] if p else 0 for p in prefixes])
        stay = automaton.remaining_of(states) <= left
        # Staying on the same prefix: a blank, or the last symbol held over another frame.
        new_blank = np.where(stay, total * frame[BLANK], 0.0)
        new_char = np.where(stay & (last > 0), p_char * frame[last], 0.0)
        ext = total[:, None] * frame[None, :]
        rows = np.arange(count)
        has_last = last > 0
        # After the same symbol, only a blank-separated path starts a new one.
        ext[rows[has_last], last[has_last]] = p_blank[has_last] * frame[last[has_last]]
        ext[need > left] = 0.0
        ext[:, BLANK] = 0.0
        # An extension that is already a prefix in the beam adds to that prefix.
        index = {p: i for i, p in enumerate(prefixes)}
        for i, p in enumerate(prefixes):
            if p:
                parent = index.get(p[:-1])
                if parent is not None:
                    new_char[i] += ext[parent, p[-1]]
                    ext[parent, p[-1]] = 0.0
        scores = np.concatenate([new_blank + new_char, ext.ravel()])
        live = np.flatnonzero(scores > 0.0)
        if live.size == 0:
            return no_match
        if live.size > beam:
            live = live[np.argpartition(-scores[live], beam - 1)[:beam]]
        top = scores[live].max()
        next_prefixes, next_blank, next_char, next_states = [], [], [], []
        for j in live.tolist():
            if j < count:
                next_prefixes.append(prefixes[j])
                next_blank.append(new_blank[j])
                next_char.append(new_char[j])
                next_states.append(states[j])
            else:
                b, k = divmod(j - count, classes)
                next_prefixes.append(prefixes[b] + (k,))
                next_blank.append(0.0)
                next_char.append(ext[b, k])
                next_states.append(targets[b, k])
        prefixes = next_prefixes
        p_blank = np.array(next_blank) / top
        p_char = np.array(next_char) / top
        states = np.array(next_states)
        log_scale += math.log(top)
    total = p_blank + p_char
    finals = [(total[i], prefixes[i]) for i in np.flatnonzero(automaton.accepting_of(states)).tolist()]
    if not finals:
        return no_match
    best, prefix = max(finals)
    if best <= 0.0:
        return no_match
    log_prob = math.log(best) + log_scale
    return ConstrainedDecoded(prefix, math.exp(log_prob), True, log_prob)


def decode_batch_constrained(log_probs: np.ndarray, lengths: Sequence[int], automaton: Automaton,
                             beam: int = DEFAULT_BEAM, prune: float | None = None) -> list[ConstrainedDecoded]:
    """`constrained_beam_search` for each sample of a T x B x C array."""
    return [constrained_beam_search(log_probs[:length, b], automaton, beam, prune)
            for b, length in enumerate(lengths)]


@dataclass
class Constraint:
    """What predict and eval were asked to enforce: an automaton and how it was given."""

    automaton: Automaton
    kind: str  # "pattern" or "lexicon"
    source: str  # the regex, or the lexicon's path
    beam: int = DEFAULT_BEAM
    notes: tuple[str, ...] = ()  # e.g. lexicon entries that were left out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "beam": self.beam, "states": self.automaton.states,
                "notes": list(self.notes)}


def make_constraint(alphabet: Alphabet, pattern: str | None = None, lexicon: str | Path | None = None,
                    beam: int = DEFAULT_BEAM, head: str = "ctc") -> Constraint | None:
    """The constraint for `--pattern` / `--lexicon` (at most one), or None when neither is given."""
    if pattern is None and lexicon is None:
        return None
    if pattern is not None and lexicon is not None:
        raise ConstraintError("give --pattern or --lexicon, not both")
    if head != "ctc":
        raise ConstraintError(f"constrained decoding needs a CTC model; this one has a {head!r} head")
    if pattern is not None:
        return Constraint(compile_pattern(pattern, alphabet), "pattern", pattern, beam)
    lex = compile_lexicon(read_lexicon(lexicon), alphabet, str(lexicon))
    notes = ()
    if lex.unusable:
        shown = ", ".join(repr(w) for w in lex.unusable[:5]) + (", ..." if len(lex.unusable) > 5 else "")
        notes = (f"{lexicon}: {len(lex.unusable)} entries left out, they need characters the model lacks: {shown}",)
    return Constraint(lex.automaton, "lexicon", str(lexicon), beam, notes)

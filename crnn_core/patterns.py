"""A regex (the subset below) as a DFA over a model's class ids, for `--pattern`.

Python's `re` exposes no automaton, so the supported regex subset is parsed here: literals,
escapes (\\d \\w \\s and their negations, \\. and other escaped punctuation, \\t \\n \\xHH
\\uHHHH), `.`, character classes `[...]` (their members are worked out by `re` itself, so
ranges and negation mean exactly what they mean in Python), groups `(...)` `(?:...)`
`(?P<name>...)`, alternation `|`, quantifiers `? * +` `{m}` `{m,}` `{,n}` `{m,n}` (a lazy
`?` suffix is accepted: it does not change which strings match), and `^` / `$` at the very
ends. The pattern must match the whole reading, as `re.fullmatch` does. Characters outside
the model's alphabet can never be emitted, so the branches that need one are dropped.
Syntax tree -> Thompson NFA -> subset construction -> trimmed DFA (automata.py).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from .alphabet import Alphabet, normalize
from .automata import Automaton, trim
from .errors import ConstraintError

# Limits that keep a pathological pattern from eating the machine; real ones are far below.
MAX_NFA_STATES = 50_000
MAX_DFA_STATES = 20_000

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
    return trim(0, transitions, accepting, f"pattern {pattern}",
                 f"pattern {pattern!r} accepts no text made of the model's characters "
                 f"({alphabet.chars!r})")

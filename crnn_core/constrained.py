"""Constraints for predict and eval: `--pattern` or `--lexicon` as an automaton and a beam width.

The decoder is the one CTC prefix beam search (decode.beam_search) walking the constraint's
automaton: a prefix is only extended along a transition and the answer is chosen among
prefixes in an accepting state; when the beam holds none at the end, the result says so
(`matched=False`, no ids) instead of returning a rejected string.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .alphabet import Alphabet
from .automata import Automaton, compile_lexicon, read_lexicon
from .errors import ConstraintError
from .heads import head_named
from .patterns import compile_pattern

DEFAULT_BEAM = 16


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
    if not head_named(head).constrainable:
        raise ConstraintError(f"constrained decoding needs a CTC model; this one has a {head!r} head")
    if pattern is not None:
        return Constraint(compile_pattern(pattern, alphabet), "pattern", pattern, beam)
    lex = compile_lexicon(read_lexicon(lexicon), alphabet, str(lexicon))
    notes = ()
    if lex.unusable:
        shown = ", ".join(repr(w) for w in lex.unusable[:5]) + (", ..." if len(lex.unusable) > 5 else "")
        notes = (f"{lexicon}: {len(lex.unusable)} entries left out, they need characters the model lacks: {shown}",)
    return Constraint(lex.automaton, "lexicon", str(lexicon), beam, notes)

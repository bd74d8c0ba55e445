"""Constrained decoding: the regex subset agrees with `re`, outputs are always accepted, and a
wide beam finds the brute-force optimum over every accepted labelling."""

import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crnn_core.alphabet import Alphabet
from conftest import search
from crnn_core.automata import compile_lexicon, read_lexicon
from crnn_core.constrained import make_constraint
from crnn_core.errors import ConstraintError
from crnn_core.patterns import compile_pattern

ABC = Alphabet("abc")


def words(alphabet: Alphabet, max_len: int):
    for n in range(max_len + 1):
        for combo in itertools.product(alphabet.chars, repeat=n):
            yield "".join(combo)


# Random regexes over a, b, c plus 'z', which the alphabet lacks (its branches must die).
_atoms = st.sampled_from(["a", "b", "c", "z", ".", "[ab]", "[^a]", "[a-c]", r"\w", r"\.", "(?:)", "[bz]"])


def _combine(children):
    quantifiers = st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,3}", "{2,}", "{,1}", "*?"])
    return st.one_of(
        st.tuples(children, children).map(lambda ab: ab[0] + ab[1]),
        st.tuples(children, children).map(lambda ab: f"(?:{ab[0]}|{ab[1]})"),
        st.tuples(children, quantifiers).map(lambda aq: f"({aq[0]}){aq[1]}"),
        children.map(lambda a: f"({a})"),
    )


regexes = st.recursive(_atoms, _combine, max_leaves=6)


def random_lattice(rng: np.random.Generator, steps: int, classes: int, peaky: float = 2.0) -> np.ndarray:
    logits = rng.normal(0.0, peaky, (steps, classes))
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def ctc_probability(log_probs: np.ndarray, ids) -> float:
    """P(labelling | lattice) by torch's CTC forward algorithm (an independent implementation)."""
    lp = torch.from_numpy(log_probs)[:, None, :]
    targets = torch.tensor([list(ids)], dtype=torch.long).reshape(1, -1)
    loss = torch.nn.functional.ctc_loss(lp, targets, torch.tensor([log_probs.shape[0]]),
                                        torch.tensor([len(ids)]), reduction="none", zero_infinity=False)
    return math.exp(-float(loss[0]))


def brute_force(log_probs: np.ndarray, alphabet: Alphabet, accept) -> tuple[float, str | None]:
    """The most probable labelling that `accept` admits, over every string up to T symbols."""
    best, best_text = 0.0, None
    for text in words(alphabet, log_probs.shape[0]):
        if accept(text):
            p = ctc_probability(log_probs, alphabet.encode(text))
            if p > best:
                best, best_text = p, text
    return best, best_text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes)
def test_the_automaton_accepts_exactly_what_re_fullmatch_accepts(pattern):
    try:
        automaton = compile_pattern(pattern, ABC)
    except ConstraintError as exc:
        assert "accepts no text" in str(exc)
        assert not any(re.fullmatch(pattern, w) for w in words(ABC, 5))
        return
    for w in words(ABC, 5):
        assert automaton.accepts(ABC.encode(w)) == bool(re.fullmatch(pattern, w)), w


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes, st.integers(1, 12), st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4, 8]))
def test_the_output_is_always_accepted_or_flagged(pattern, steps, seed, beam):
    try:
        automaton = compile_pattern(pattern, ABC)
    except ConstraintError:
        return
    log_probs = random_lattice(np.random.default_rng(seed), steps, len(ABC) + 1, peaky=4.0)
    result = search(log_probs, beam, automaton)
    text = ABC.decode(result.ids)
    if result.matched:
        assert re.fullmatch(pattern, text), (pattern, text)
        assert 0.0 <= result.confidence <= 1.0
    else:
        assert text == "" and result.confidence == 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes, st.integers(1, 6), st.integers(0, 2**32 - 1), st.sampled_from(["ab", "abc"]))
def test_a_wide_beam_finds_the_brute_force_optimum(pattern, steps, seed, chars):
    alphabet = Alphabet(chars)
    try:
        automaton = compile_pattern(pattern, alphabet)
    except ConstraintError:
        return
    log_probs = random_lattice(np.random.default_rng(seed), steps, len(alphabet) + 1)
    best, best_text = brute_force(log_probs, alphabet, lambda w: re.fullmatch(pattern, w))
    result = search(log_probs, 10_000, automaton)
    if best_text is None:
        assert not result.matched
        return
    assert result.matched
    # Ties between labellings are possible, so compare the probability, then check the text's own.
    assert result.confidence == pytest.approx(best, rel=1e-9)
    assert ctc_probability(log_probs, result.ids) == pytest.approx(best, rel=1e-9)


def test_the_brute_force_reference_covers_every_labelling():
    # Every path collapses to some labelling of at most T symbols, so their probabilities sum to 1.
    log_probs = random_lattice(np.random.default_rng(1), 5, 4)
    total = sum(ctc_probability(log_probs, ABC.encode(w)) for w in words(ABC, 5))
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("pattern", ["a*b+", "(ab|ba){1,2}c?", "[ab]{2,4}", ".a.", "(a|b)*a(a|b)", "c|aa|bbb"])
def test_the_optimum_at_full_size_lattices(pattern):
    # Hypothesis favours short lattices; these are all T=6 over 3 characters + blank (1,093 labellings).
    for seed in range(4):
        log_probs = random_lattice(np.random.default_rng(seed), 6, 4, peaky=1.0 + seed)
        best, best_text = brute_force(log_probs, ABC, lambda w: re.fullmatch(pattern, w))
        result = search(log_probs, 2_000, compile_pattern(pattern, ABC))
        assert result.matched and result.confidence == pytest.approx(best, rel=1e-9), (seed, best_text)
        # A modest beam usually agrees too, and is never outside the pattern.
        narrow = search(log_probs, 8, compile_pattern(pattern, ABC))
        assert narrow.matched and re.fullmatch(pattern, ABC.decode(narrow.ids))


def test_a_pattern_that_accepts_everything_agrees_with_plain_beam_search():
    rng = np.random.default_rng(3)
    for _ in range(20):
        log_probs = random_lattice(rng, 6, 4)
        plain = search(log_probs, 10_000)  # the universal automaton
        constrained = search(log_probs, 10_000, compile_pattern("[abc]*", ABC))
        assert constrained.ids == plain.ids
        assert constrained.confidence == pytest.approx(plain.confidence)


def test_the_pattern_overrides_the_models_favourite_reading():
    # Frames strongly say "a b", but the pattern wants a digit-free 'c' in the middle.
    alphabet = Alphabet("abc")
    p = np.full((3, 4), 0.01)
    p[0, 1], p[1, 0], p[2, 2] = 0.9, 0.9, 0.9
    p[1, 3] = 0.05
    log_probs = np.log(p / p.sum(1, keepdims=True))
    assert alphabet.decode(search(log_probs, 8).ids) == "ab"
    result = search(log_probs, 16, compile_pattern("acb", alphabet))
    assert result.matched and alphabet.decode(result.ids) == "acb"


def test_too_few_frames_for_any_accepted_reading_is_flagged():
    result = search(random_lattice(np.random.default_rng(0), 3, 4), 16, compile_pattern("a{5}", ABC))
    assert not result.matched and result.ids == () and result.confidence == 0.0


@pytest.mark.parametrize("pattern, message", [
    ("(a", "missing ')'"),
    ("a)", "unbalanced ')'"),
    ("*a", "nothing to repeat"),
    ("a**", "multiple repeat"),
    ("(?=a)b", "lookarounds"),
    (r"(a)\1", "back-references"),
    (r"a\b", "anchor"),
    ("a^b", "only supported at the very start or end"),
    ("[ab", "unterminated character set"),
    ("a{3,2}", "min repeat greater than max repeat"),
    ("a*+", "possessive"),
    (r"\q", "bad escape"),
    ("[xyz]+", "accepts no text made of the model's characters"),
])
def test_unsupported_or_broken_patterns_get_a_clear_error(pattern, message):
    with pytest.raises(ConstraintError, match=re.escape(message)):
        compile_pattern(pattern, ABC)


def test_the_sample_sets_kinds_of_pattern():
    alphabet = Alphabet(" -.0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
    automaton = compile_pattern(r"^[A-Z]{3}[0-9]{4}$", alphabet)
    assert automaton.accepts(alphabet.encode("ABC1234"))
    assert not automaton.accepts(alphabet.encode("AB1234"))
    # [A-Z] means the 23 capitals this alphabet has (no I, O, Q): one transition each.
    assert len(automaton.transitions[automaton.start]) == 23
    meter = compile_pattern(r"\d+(\.\d+)?", alphabet)
    assert meter.accepts(alphabet.encode("12.5")) and not meter.accepts(alphabet.encode("12."))


def test_a_lexicon_decodes_to_its_best_word_by_ctc_likelihood(tmp_path):
    rng = np.random.default_rng(5)
    lexicon_words = ["ab", "ba", "abc", "cab", "a", "bb"]
    lexicon = compile_lexicon(lexicon_words + ["xyz"], ABC)
    assert lexicon.words == 6 and lexicon.unusable == ["xyz"]
    for _ in range(30):
        log_probs = random_lattice(rng, int(rng.integers(1, 7)), 4)
        best, best_text = brute_force(log_probs, ABC, lambda w: w in lexicon_words)
        result = search(log_probs, 10_000, lexicon.automaton)
        if best_text is None:
            assert not result.matched
        else:
            assert ABC.decode(result.ids) in lexicon_words
            assert result.confidence == pytest.approx(best, rel=1e-9)


def test_lexicon_files_and_make_constraint(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("ab\n\ncab\nzzz\n", encoding="utf-8")
    assert read_lexicon(path) == ["ab", "cab", "zzz"]
    constraint = make_constraint(ABC, lexicon=path)
    assert constraint.kind == "lexicon" and constraint.notes and "zzz" in constraint.notes[0]
    assert make_constraint(ABC) is None
    with pytest.raises(ConstraintError, match="not both"):
        make_constraint(ABC, pattern="a", lexicon=path)
    with pytest.raises(ConstraintError, match="no such lexicon file"):
        make_constraint(ABC, lexicon=tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("xyz\n", encoding="utf-8")
    with pytest.raises(ConstraintError, match="no usable entries"):
        make_constraint(ABC, lexicon=tmp_path / "bad.txt")


def test_predict_and_eval_with_a_pattern_or_lexicon_through_the_cli(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import SAMPLE

    val = SAMPLE / "codes" / "val"
    images = [str(val / name) for name in ("00000.jpg", "00001.jpg", "00004.png", "00013.jpg")]
    crnn = [sys.executable, "-m", "crnn_core.cli.app"]

    def run(*args):
        return subprocess.run([*crnn, *args], capture_output=True, text=True, timeout=300)

    pattern = "[A-Z]{2}[0-9]{3}"
    result = run("predict", *images, "-f", "jsonl", "--pattern", pattern)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(r["matched"] and re.fullmatch(pattern, r["text"]) for r in rows)
    assert rows[0]["text"] == "CL880"  # its label, which the pattern accepts, still wins

    # More characters than any of these images has frames for: flagged, never a rejected text.
    result = run("predict", *images, "-f", "jsonl", "--pattern", "[0-9]{90}")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    # (the bundled codes-fast is calibrated, so each line also says p_correct 0 for no reading)
    assert all(r == {"path": p, "text": "", "confidence": 0.0, "matched": False, "p_correct": 0.0}
               for r, p in zip(rows, images))
    assert "4 input(s) had no reading the pattern accepts" in result.stderr

    lexicon = tmp_path / "words.txt"
    lexicon.write_text("CL880\nMDF 90\n1581\n", encoding="utf-8")
    result = run("predict", *images, "--lexicon", str(lexicon))
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split("\n")[:4]) <= {"CL880", "MDF 90", "1581"}
    assert result.stdout.split("\n")[:3] == ["CL880", "MDF 90", "1581"]

    result = run("eval", "codes-small", str(SAMPLE / "sidecar"), "--pattern", r"[A-Z0-9 .-]{3,10}", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["constraint"]["kind"] == "pattern" and report["constraint"]["beam"] == 16
    assert report["samples"] == 24 and report["unmatched"] == 0
    assert all(re.fullmatch(r"[A-Z0-9 .-]{3,10}", r["predicted"]) for r in report["worst"])

    result = run("predict", images[0], "--pattern", "(?=A)B")
    assert result.returncode == 1 and result.stderr.startswith("crnn: error: pattern") and "Traceback" not in result.stderr
    result = run("predict", images[0], "--pattern", "A", "--lexicon", str(lexicon))
    assert result.returncode == 2

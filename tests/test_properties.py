"""Property tests (hypothesis): codec, CTC decoders, label-file parser, edit distance."""

from __future__ import annotations

import itertools
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import render_text, search
from crnn_core.alphabet import Alphabet, normalize
from crnn_core.data import read_list_file
from crnn_core.decode import BEAM_PRUNE, BLANK, collapse, greedy, weakest_characters
from crnn_core.heads import decode_batch
from crnn_core.errors import DatasetError
from crnn_core.metrics import char_errors, word_errors

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- alphabet -------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=60))
def test_alphabet_round_trip_on_any_text(text):
    alphabet = Alphabet.from_texts([text])
    ids = alphabet.encode(text)
    assert all(1 <= i <= len(alphabet) for i in ids)  # never the blank
    assert alphabet.decode(ids) == text


@FAST
@given(st.text(max_size=30), st.text(max_size=30))
def test_encode_refuses_exactly_the_unknown_characters(known, text):
    alphabet = Alphabet.from_texts([known])
    if set(text) <= set(known):
        assert alphabet.decode(alphabet.encode(text)) == text
    else:
        with pytest.raises(DatasetError, match="outside the alphabet"):
            alphabet.encode(text)


@FAST
@given(st.text(max_size=40))
def test_nfc_is_idempotent_and_what_labels_get(text):
    once = normalize(text)
    assert normalize(once) == once and unicodedata.is_normalized("NFC", once)


# -- CTC decoders -----------------------------------------------------------------------------------
def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@st.composite
def lattices(draw, max_t: int = 12, max_c: int = 6):
    """T x C log-probabilities: arbitrary logits, sometimes with some classes impossible (-inf)."""
    t = draw(st.integers(1, max_t))
    c = draw(st.integers(2, max_c))
    logits = np.array(draw(st.lists(st.floats(-20, 20), min_size=t * c, max_size=t * c))).reshape(t, c)
    if draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=t * c, max_size=t * c))).reshape(t, c)
        mask[np.arange(t), logits.argmax(-1)] = False  # keep each frame's best class possible
        logits[mask] = -np.inf
    return log_softmax(logits)


@st.composite
def confident_lattices(draw, top: float = 0.75):
    """Every frame's best class has probability >= `top` (the rest split at random)."""
    t = draw(st.integers(1, 12))
    c = draw(st.integers(2, 6))
    frames = []
    for _ in range(t):
        best = draw(st.integers(0, c - 1))
        p_best = draw(st.floats(top, 1.0))
        rest = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=c - 1, max_size=c - 1)))
        frame = np.insert(rest / rest.sum() * (1.0 - p_best), best, p_best)
        frames.append(frame)
    with np.errstate(divide="ignore"):
        return np.log(np.array(frames))


@FAST
@given(lattices())
def test_decoders_never_output_the_blank_and_confidence_is_a_probability(frames):
    c = frames.shape[1]
    (g,) = greedy(frames[:, None, :], [frames.shape[0]])
    assert g.ids == collapse(frames.argmax(-1).tolist())
    b = search(frames, 4, prune=BEAM_PRUNE)
    for decoded in (g, b):
        assert BLANK not in decoded.ids and all(0 < k < c for k in decoded.ids)
        assert 0.0 <= decoded.confidence <= 1.0 + 1e-9


@FAST
@given(lattices())
def test_beam_option_one_is_greedy(frames):
    batch = frames[:, None, :]
    assert decode_batch(batch, [frames.shape[0]], beam=1) == greedy(batch, [frames.shape[0]])


@FAST
@given(confident_lattices())
def test_width_one_prefix_beam_equals_greedy_when_frames_are_confident(frames):
    # With each frame's best class at p >= 0.75 (> 1/sqrt(2) suffices), the single kept prefix
    # always follows the best path; below that, a prefix's summed probability can win.
    (g,) = greedy(frames[:, None, :], [frames.shape[0]])
    assert search(frames, 1, prune=BEAM_PRUNE).ids == g.ids


def test_width_one_prefix_beam_can_differ_from_greedy_on_unsure_frames():
    # Why `--beam 1` means greedy: frame 2's best class (2, p=.331) barely beats the blank, but
    # prefix "1" is kept by blank + repeat (.326 + .075 = .401): a width-1 prefix beam reads "1".
    frames = np.log(np.array([[0.064, 0.484, 0.117, 0.335], [0.326, 0.075, 0.331, 0.268]]))
    assert greedy(frames[:, None, :], [2])[0].ids == (1, 2)
    assert search(frames, 1).ids == (1,)


def brute_force(frames: np.ndarray) -> dict[tuple[int, ...], float]:
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(frames.shape[1]), repeat=frames.shape[0]):
        key = collapse(path)
        totals[key] = totals.get(key, 0.0) + math.exp(sum(frames[t, k] for t, k in enumerate(path)))
    return totals


@FAST
@given(lattices(max_t=5, max_c=3))
def test_unpruned_wide_beam_is_exact(frames):
    totals = brute_force(frames)
    best = max(totals.values())
    found = search(frames, len(totals) + 1)
    assert found.confidence == pytest.approx(best, rel=1e-6, abs=1e-12)
    assert totals[found.ids] == pytest.approx(best, rel=1e-6, abs=1e-12)


def weakest_by_enumeration(frames: np.ndarray, ids: tuple[int, ...]) -> float:
    """The oracle: over every path that collapses to `ids`, the most probable one; along it,
    each character's run of frames gives its best frame, and the least of those is the answer."""
    best_lp, answer = -math.inf, 0.0
    for path in itertools.product(range(frames.shape[1]), repeat=frames.shape[0]):
        if collapse(path) != ids:
            continue
        lp = sum(frames[t, k] for t, k in enumerate(path))
        if lp <= best_lp:
            continue
        runs = [max(frames[t, k] for t, _ in run) for k, run in itertools.groupby(enumerate(path), key=lambda x: x[1])
                if k != BLANK]
        best_lp = lp
        answer = math.exp(min(runs)) if runs else math.exp(min(frames[:, BLANK]))
    return answer


@FAST
@given(lattices(max_t=5, max_c=3), st.lists(st.integers(1, 2), max_size=3))
def test_weakest_character_is_taken_along_the_most_probable_alignment(frames, other):
    (g,) = greedy(frames[:, None, :], [frames.shape[0]])
    assert g.weakest == pytest.approx(weakest_by_enumeration(frames, g.ids), rel=1e-6, abs=1e-12)
    readings = [g.ids, tuple(min(k, frames.shape[1] - 1) for k in other)]  # the best path's reading, and any other (perhaps too long to align)
    batch = np.repeat(frames[:, None, :], 2, 1)
    found = weakest_characters(batch, [frames.shape[0]] * 2, readings)
    for ids, value in zip(readings, found):
        assert value == pytest.approx(weakest_by_enumeration(frames, ids), rel=1e-6, abs=1e-12)


def test_weakest_character_ignores_the_frames_between_characters():
    # "12" read from four frames: two sure characters, and two blank frames at p=0.6 that drag the
    # best path's probability down to 0.9*0.6*0.6*0.8 = 0.26; the weakest character is still 0.8.
    frames = np.log(np.array([[0.05, 0.9, 0.05], [0.6, 0.2, 0.2], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]))
    (g,) = greedy(frames[:, None, :], [4])
    assert g.ids == (1, 2) and g.confidence == pytest.approx(0.2592)
    assert g.weakest == pytest.approx(0.8)
    assert search(frames, 4).weakest == pytest.approx(0.8)
    # lengths differ within a batch: the second sample's frames past its length are ignored
    batch = np.stack([frames, np.log(np.full((4, 3), 1 / 3))], 1)
    assert weakest_characters(batch, [4, 1], [(1, 2), (1,)]) == pytest.approx([0.8, 1 / 3])
    assert weakest_characters(batch, [4, 1], [(1, 1, 1), (1, 2)]) == [0.0, 0.0]  # too long to align


# -- label-file parser ----------------------------------------------------------------------------
FRAGMENTS = [b"a.png", b"b.png", b"missing.png", b"../a.png", b"./b.png", b"\t", b"\t", b"\n", b"\n", b"\r\n",
             b"\r", b" ", b"12", b"\xc3\xa9", b"e\xcc\x81", b"\xe2\x80\xa8", b"\x0c", b"\x00", b"\xff", b"\xef\xbb\xbf",
             b"\xfe\xff", b"\xed\xa0\x80", "\u00e9\u4e2d\U0001f600".encode(), b"/" * 300, b"a" * 5000]


@pytest.fixture(scope="module")
def label_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("labels")
    render_text("1").save(folder / "a.png")
    render_text("2").save(folder / "b.png")
    return folder


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=400),
                 st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)))
def test_label_parser_never_crashes(label_folder, content):
    list_file = label_folder / "labels.tsv"
    list_file.write_bytes(content)
    try:
        dataset = read_list_file(list_file)
    except DatasetError as exc:
        assert str(exc).startswith(str(list_file))
        return
    lines = max(1, content.count(b"\n") + 1, content.count(b"\r") + 1)
    for sample in dataset.samples:
        assert sample.path.is_file() and sample.text and sample.text == normalize(sample.text)
        assert "\n" not in sample.text and "\t" not in sample.path.name
        assert 1 <= int(sample.origin.rsplit(":", 1)[1]) <= lines
    for problem in dataset.problems:
        where, _, line = problem.where.rpartition(":")
        assert where == str(list_file) and 1 <= int(line) <= lines and problem.message
    assert len({s.path.resolve() for s in dataset.samples}) == len(dataset.samples)  # no duplicates


# -- edit distance ------------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.sampled_from("ab c\u00e9\U0001f600"), max_size=12) | st.text(max_size=12)


@FAST
@given(TEXT, TEXT, TEXT)
def test_character_edit_distance_is_a_metric(a, b, c):
    d = char_errors
    assert d(a, a) == 0
    assert (d(a, b) == 0) == (a == b)
    assert d(a, b) == d(b, a)
    assert d(a, c) <= d(a, b) + d(b, c)
    assert abs(len(a) - len(b)) <= d(a, b) <= max(len(a), len(b))


@FAST
@given(TEXT, TEXT, TEXT)
def test_word_edit_distance_is_a_metric_on_word_sequences(a, b, c):
    d = word_errors
    assert d(a, a) == 0
    assert (d(a, b) == 0) == (a.split() == b.split())
    assert d(a, b) == d(b, a)
    assert d(a, c) <= d(a, b) + d(b, c)
    assert abs(len(a.split()) - len(b.split())) <= d(a, b) <= max(len(a.split()), len(b.split()))

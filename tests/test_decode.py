import itertools
import math

import numpy as np
import pytest

from conftest import search
from crnn_core.decode import BEAM_PRUNE, collapse, greedy
from crnn_core.heads import decode_batch


def log(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


def test_collapse_merges_repeats_and_drops_blanks():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0]) == (1, 1, 2)
    assert collapse([0, 0, 0]) == ()


def test_greedy_on_hand_made_frames_and_its_confidence():
    # T=4, B=1, C=3: best path 1 1 0 2 -> "1 2"
    frames = log([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])[:, None, :]
    (decoded,) = greedy(frames, [4])
    assert decoded.ids == (1, 2)
    assert decoded.confidence == pytest.approx(0.8 * 0.7 * 0.6 * 0.8)


def test_greedy_respects_each_samples_length():
    frames = log([[[0.1, 0.9], [0.1, 0.9]], [[0.9, 0.1], [0.1, 0.9]]])  # T=2, B=2, C=2
    a, b = greedy(frames, [1, 2])
    assert a.ids == (1,) and b.ids == (1,)


def brute_force_best(frames):
    """The most probable labelling, summing every alignment (exponential; tiny inputs only)."""
    totals = {}
    for path in itertools.product(range(frames.shape[1]), repeat=frames.shape[0]):
        p = math.exp(sum(frames[t, k] for t, k in enumerate(path)))
        key = collapse(path)
        totals[key] = totals.get(key, 0.0) + p
    return max(totals.items(), key=lambda kv: kv[1])


def test_beam_finds_the_labelling_greedy_misses():
    # Best path is blank-blank ("" with p=0.36) but "a" summed over paths is more likely (0.64).
    frames = log([[0.6, 0.4], [0.6, 0.4]])
    assert greedy(frames[:, None, :], [2])[0].ids == ()
    best = search(frames, 4, prune=BEAM_PRUNE)
    assert best.ids == (1,)
    assert best.confidence == pytest.approx(0.64)


def test_beam_matches_brute_force_on_random_small_lattices():
    rng = np.random.default_rng(0)
    for _ in range(25):
        frames = np.log(rng.dirichlet(np.ones(3) * 0.7, size=4))
        ids, p = brute_force_best(frames)
        got = search(frames, 16)
        assert got.ids == ids
        assert got.confidence == pytest.approx(p)


def test_repeated_characters_need_a_blank_between():
    frames = log([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    assert search(frames, 4, prune=BEAM_PRUNE).ids == (1, 1)
    assert decode_batch(frames[:, None, :], [3], beam=1)[0].ids == (1, 1)


def test_beam_search_reads_each_sample_of_a_mixed_length_batch_as_alone():
    # The recogniser decodes forward passes of different widths together, padded to the longest.
    from conftest import search
    from crnn_core.decode import beam_search

    rng = np.random.default_rng(7)
    samples = [np.log(rng.dirichlet(np.ones(5) * 0.5, size=n)) for n in (3, 9, 1, 6)]
    batch = np.zeros((9, len(samples), 5))
    for b, frames in enumerate(samples):
        batch[: len(frames), b] = frames
    together = beam_search(batch, [len(f) for f in samples], 8, prune=BEAM_PRUNE)
    assert together == [search(f, 8, prune=BEAM_PRUNE) for f in samples]

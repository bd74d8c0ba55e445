import pytest

from crnn_core.metrics import char_errors, score, word_errors


def test_char_errors_known_pairs():
    assert char_errors("kitten", "sitting") == 3
    assert char_errors("ABC", "ABC") == 0
    assert char_errors("", "AB") == 2


def test_word_errors_count_whole_words():
    assert word_errors("AB 123 X", "AB 128 X") == 1
    assert word_errors("AB 123", "AB123") == 2  # one word replaced, one deleted


def test_scores_are_fractions():
    s = score(["ABC", "12 34", "X"], ["ABC", "12 35", "Y"])
    assert s.samples == 3 and s.correct == 1
    assert s.accuracy == pytest.approx(1 / 3)
    assert s.cer == pytest.approx(2 / 9)  # 1 + 1 errors over 3 + 5 + 1 chars
    assert s.wer == pytest.approx(2 / 4)


def test_empty_is_zero_not_a_crash():
    s = score([], [])
    assert (s.accuracy, s.cer, s.wer) == (0.0, 0.0, 0.0)

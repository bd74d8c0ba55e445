import pytest

from crnn_core.alphabet import Alphabet, normalize
from crnn_core.errors import DatasetError


def test_ids_start_after_blank_and_round_trip():
    alphabet = Alphabet("ab c")
    assert alphabet.num_classes == 5
    assert alphabet.encode("a c") == [1, 3, 4]
    assert alphabet.decode([1, 3, 4]) == "a c"


def test_decode_drops_blank_and_out_of_range_ids():
    alphabet = Alphabet("xyz")
    assert alphabet.decode([0, 1, 0, 3, 99, -1]) == "xz"


def test_from_texts_is_sorted_and_unique():
    assert Alphabet.from_texts(["ba", "ca", "a"]).chars == "abc"


def test_unknown_character_is_a_clear_error():
    with pytest.raises(DatasetError, match="outside the alphabet: 'q'"):
        Alphabet("ab").encode("aqb")


def test_repeated_characters_are_rejected():
    with pytest.raises(ValueError):
        Alphabet("aa")


def test_nfc_makes_composed_and_decomposed_equal():
    composed, decomposed = "\u00e9", "e\u0301"
    assert normalize(decomposed) == composed
    assert Alphabet.from_texts([normalize(decomposed), composed]).chars == composed

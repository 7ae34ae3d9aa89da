import numpy as np
import pytest

from microturn.codecs.text import VOCAB_SIZE, ByteTokenizer, Special

tok = ByteTokenizer()


@pytest.mark.parametrize("text", ["", "hello", "say 'turn left' in 30 s", "über 😀 mañana"])
def test_round_trip(text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_specials_are_outside_bytes_and_skipped_by_decode() -> None:
    assert all(256 <= s < VOCAB_SIZE for s in Special)
    ids = [*tok.encode("hi"), Special.PAD, Special.MISSING, *tok.encode("!", eom=True)]
    assert tok.decode(ids) == "hi!"


def test_split_messages() -> None:
    ids = [
        *tok.encode("one", eom=True),
        Special.PAD,
        *tok.encode("two", eom=True),
        *tok.encode("th"),
    ]
    assert tok.split_messages(ids) == ["one", "two", "th"]


def test_broken_utf8_never_raises() -> None:
    assert tok.decode([0xE2, 0x82]) == "\ufffd"


@pytest.mark.parametrize("ids", [[VOCAB_SIZE], [-1], np.array([1.5])])
def test_out_of_range_ids(ids) -> None:
    with pytest.raises(ValueError):
        tok.decode(ids)


def test_non_string() -> None:
    with pytest.raises(ValueError, match="must be str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]

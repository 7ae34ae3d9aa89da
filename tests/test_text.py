import numpy as np
import pytest

from microturn.codecs.text import VOCAB_SIZE, ByteTokenizer, MessageReader, Special

tok = ByteTokenizer()


@pytest.mark.parametrize("text", ["", "hello", "say 'turn left' in 30 s", "über 😀 mañana"])
def test_round_trip(text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_specials_are_outside_bytes_and_skipped_by_decode() -> None:
    assert all(256 <= s < VOCAB_SIZE for s in Special)
    ids = [*tok.encode("hi"), Special.PAD, Special.MISSING, *tok.encode("!", eom=True)]
    assert tok.decode(ids) == "hi!"


def test_message_reader_assembles_messages_across_micro_turns() -> None:
    reader = MessageReader(max_bytes=4)
    assert reader.feed([*tok.encode("on"), Special.PAD], 0) == []
    assert reader.feed([*tok.encode("e", eom=True), Special.EOM], 1) == [(0, "one")]
    assert reader.unfinished() is None  # a lone EOM closes nothing
    assert reader.feed([*tok.encode("twelve"), Special.PAD], 2) == []
    assert reader.unfinished() == (2, "twel")  # never closed: stops growing at max_bytes
    assert reader.feed([Special.EOM, *tok.encode("th")], 3) == [(2, "twel")]
    assert reader.unfinished() == (3, "th")


def test_broken_utf8_never_raises() -> None:
    assert tok.decode([0xE2, 0x82]) == "\ufffd"


@pytest.mark.parametrize("ids", [[VOCAB_SIZE], [-1], np.array([1.5])])
def test_out_of_range_ids(ids) -> None:
    with pytest.raises(ValueError):
        tok.decode(ids)


def test_non_string() -> None:
    with pytest.raises(ValueError, match="must be str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]

"""festival: the held-out engine of the unseen_engine split (render, word timings, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.codecs.audio import SAMPLE_RATE
from microturn.voices import (
    ENGINES,
    MissingSynthesizerError,
    Voice,
    festival,
    list_voices,
    synthesize,
)

TEXT = "Remind me to breathe every 4 seconds, Dr. Smith."
TOKENS = ["Remind", "me", "to", "breathe", "every", "4", "seconds", "Dr", "Smith"]


@pytest.mark.parametrize("name", ["kal_diphone", "ked_diphone"])
def test_render_words_ordered_inside_audio(name: str) -> None:
    audio, words = festival.render(TEXT, Voice("festival", name))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.all(np.isfinite(audio)) and 0.05 < np.abs(audio).max() <= 1.0
    duration = audio.size / SAMPLE_RATE
    assert 1.5 < duration < 8.0
    assert [w.text for w in words] == TOKENS  # "4" said as "four", "Dr." as "doctor"
    prev_end = 0.0
    for w in words:
        assert prev_end <= w.start_s < w.end_s <= duration
        prev_end = w.end_s
        seg = audio[int(w.start_s * SAMPLE_RATE) : int(w.end_s * SAMPLE_RATE)]
        assert np.abs(seg).max() > 0.01, w  # each word covers sound


def test_rate_and_pitch_change_the_audio() -> None:
    plain, _ = festival.render("count down from ten", Voice("festival", "kal_diphone"))
    slow, _ = festival.render("count down from ten", Voice("festival", "kal_diphone", rate=120))
    high, _ = festival.render("count down from ten", Voice("festival", "kal_diphone", pitch=90))
    assert slow.size > plain.size * 1.2
    assert high.size == pytest.approx(plain.size, rel=0.05)
    assert not np.array_equal(high[: plain.size], plain[: high.size])


def test_registered_and_listed(voice_cache) -> None:
    assert "festival" in ENGINES
    assert {v.name for v in list_voices("festival")} == {"kal_diphone", "ked_diphone"}
    s = synthesize("turn left", "festival:ked_diphone", cache_dir=voice_cache)
    assert [w.text for w in s.words] == ["turn", "left"]
    again = synthesize("turn left", "festival:ked_diphone", cache_dir=voice_cache)
    assert np.array_equal(s.audio, again.audio)


def test_quotes_and_backslashes_are_spoken_safely() -> None:
    audio, words = festival.render('say "hi" \\ now', Voice("festival", "kal_diphone"))
    assert audio.size > 0
    assert words[0].text == "say"


def test_missing_binary_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(festival.shutil, "which", lambda _name: None)
    with pytest.raises(MissingSynthesizerError, match="festvox-kallpc16k festvox-kdlpc16k"):
        festival.render("hello", Voice("festival", "kal_diphone"))
    with pytest.raises(MissingSynthesizerError, match="apt-get install festival"):
        list_voices("festival")


def test_unknown_or_missing_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not one of"):
        festival.render("hello", Voice("festival", "nope_diphone"))
    monkeypatch.setattr(festival, "_installed", lambda _binary: ("kal_diphone",))
    with pytest.raises(MissingSynthesizerError, match="festvox-kdlpc16k"):
        festival.render("hello", Voice("festival", "ked_diphone"))


def test_align_gives_up_when_tokens_differ() -> None:
    assert festival._align("one two", [[(0.1, 0.3)]]) == ()
    words = festival._align("a -- b", [[(0.1, 0.2)], [], [(0.3, 0.5)]])
    assert [(w.text, w.start_s, w.end_s) for w in words] == [("a", 0.1, 0.2), ("b", 0.3, 0.5)]

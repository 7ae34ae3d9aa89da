"""ASR of the model's audio: voice activity, pocketsphinx transcripts, the ASR timeline."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.bench import asr
from microturn.codecs.audio import SAMPLE_RATE
from microturn.scenarios.base import MODEL_VOICE
from microturn.stream.episode import ActionEvent, SpeechSegment, Timeline
from microturn.voices import synthesize
from tests.helpers import tone


def _place(total_s: float, parts: list[tuple[str, float]]) -> tuple[np.ndarray, list]:
    """Model-voice utterances placed at times; returns audio and (text, first, last word)."""
    audio = np.zeros(round(total_s * SAMPLE_RATE), np.float32)
    spans = []
    for text, at in parts:
        s = synthesize(text, MODEL_VOICE)
        i = round(at * SAMPLE_RATE)
        audio[i : i + s.audio.size] += s.audio
        spans.append((text, at + s.words[0].start_s, at + s.words[-1].end_s))
    return audio, spans


def test_transcribes_the_model_voice() -> None:
    for text in ("Turn left.", "Drink some water.", "Okay, I will remind you every five seconds."):
        heard = asr.transcribe(synthesize(text, MODEL_VOICE).audio)
        assert asr.word_error_rate(text, heard) == (0, len(text.split())), heard


def test_silence_is_nothing_and_the_decoder_is_kept() -> None:
    assert asr.transcribe(np.zeros(SAMPLE_RATE, np.float32)) == ""
    assert asr._decoder() is asr._decoder()
    assert asr.asr_segments(np.zeros(2 * SAMPLE_RATE, np.float32)) == []


def test_same_audio_same_text_whatever_came_before() -> None:
    a = synthesize("Stand up.", MODEL_VOICE).audio
    first = asr.transcribe(a)
    asr.transcribe(synthesize("The capital of France is Paris.", MODEL_VOICE).audio)
    assert asr.transcribe(a) == first


def test_rejects_bad_audio() -> None:
    with pytest.raises(ValueError, match="float"):
        asr.transcribe(np.zeros(1600, np.int16))
    with pytest.raises(ValueError, match="mono"):
        asr.asr_segments(np.zeros((2, 1600), np.float32))


def test_stretches_bridge_short_gaps_only() -> None:
    total = 4.0
    audio = tone(0.5, start_s=0.5, total_s=total)
    audio += tone(0.5, start_s=1.2, total_s=total)  # 0.2 s gap: same stretch
    audio += tone(0.5, start_s=2.5, total_s=total)  # 0.8 s gap: a new stretch
    audio += tone(0.03, start_s=3.6, total_s=total)  # a 30 ms click: dropped
    audio += tone(0.3, start_s=3.2, total_s=total, amp=0.003)  # -53 dBFS: not speech
    stretches = asr.speech_stretches(audio)
    assert len(stretches) == 2
    (a0, a1), (b0, b1) = stretches
    assert a0 == pytest.approx(0.5, abs=0.011) and a1 == pytest.approx(1.7, abs=0.011)
    assert b0 == pytest.approx(2.5, abs=0.011) and b1 == pytest.approx(3.0, abs=0.011)


def test_asr_timeline_keeps_only_what_was_said() -> None:
    audio, spans = _place(9.0, [("Turn left.", 0.8), ("Drink some water.", 4.0)])
    written = [SpeechSegment(s, e, t) for t, s, e in spans]
    written.append(SpeechSegment(7.0, 7.8, "Never voiced."))  # on the text track only
    action = ActionEvent(2.0, "delegate", "look it up")
    tl = Timeline("sys", 0.2, "ep", speech=written, actions=[action], meta={"k": 1})
    heard = asr.asr_timeline(tl, audio)
    assert [s.text for s in heard.speech] == ["turn left", "drink some water"]
    for seg, (_, start, end) in zip(heard.speech, spans, strict=True):
        assert seg.start_s == pytest.approx(start, abs=0.06)
        assert seg.end_s == pytest.approx(end, abs=0.06)
        assert [w.text for w in seg.words] == seg.text.split()
        assert all(seg.start_s <= w.start_s <= w.end_s <= seg.end_s for w in seg.words)
    assert heard.actions == [action] and heard.meta["k"] == 1
    assert heard.meta["speech_source"] == "asr"
    assert len(tl.speech) == 3  # the input timeline is not changed


def test_numbers_a_second_apart_stay_apart() -> None:
    audio, _ = _place(5.0, [("Nine.", 0.5), ("Eight.", 1.5), ("Seven.", 2.5)])
    heard = asr.asr_segments(audio)
    assert [s.text for s in heard] == ["nine", "eight", "seven"]


def test_word_error_rate() -> None:
    assert asr.word_error_rate("Turn left.", "turn right") == (1, 2)
    assert asr.word_error_rate("every 4 seconds", "every four seconds") == (0, 3)
    assert asr.word_error_rate("breathe in", "") == (2, 2)
    assert asr.word_error_rate("stop", "please stop now") == (2, 1)


def test_measure_wer_reports_both_conditions() -> None:
    result = asr.measure_wer(("Turn left.", "Seven."))
    assert result["sentences"] == 2 and result["voice"] == MODEL_VOICE.key()
    assert 0.0 <= result["wer_clean"] <= 0.5 and 0.0 <= result["wer_dmel"] <= 1.0
    assert [r["text"] for r in result["rows"]] == ["Turn left.", "Seven."]

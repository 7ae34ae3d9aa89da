"""Speech synthesis: both engines, word timings, rate / pitch, the disk cache, errors."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.episode import Word
from microturn.voices import (
    MissingSynthesizerError,
    Speech,
    Voice,
    espeak,
    flite,
    list_voices,
    synthesize,
)
from microturn.voices import cache as voice_cache

REMIND = "remind me to breathe every four seconds"
COUNT = "count down from ten"


def _words(text: str) -> list[str]:
    return [t.strip(".,!?;:\"'") for t in text.split()]


def _check_speech(s: Speech, text: str, *, words: bool = True) -> None:
    assert isinstance(s, Speech) and s.text == text
    assert s.audio.dtype == np.float32 and s.audio.ndim == 1 and s.audio.size > SAMPLE_RATE // 4
    assert np.all(np.isfinite(s.audio)) and np.abs(s.audio).max() <= 1.0
    assert np.abs(s.audio).max() > 0.05  # not silence
    assert s.duration_s == pytest.approx(s.audio.size / SAMPLE_RATE)
    if not words:
        return
    assert [w.text for w in s.words] == _words(text)
    prev_end = 0.0
    for w in s.words:
        assert isinstance(w.start_s, float) and isinstance(w.end_s, float)
        assert prev_end <= w.start_s < w.end_s <= s.duration_s + 1e-9
        prev_end = w.end_s
        # each word covers sound, not only silence
        seg = s.audio[int(w.start_s * SAMPLE_RATE) : int(w.end_s * SAMPLE_RATE)]
        assert np.abs(seg).max() > 0.01, w


def _f0(audio: np.ndarray) -> float:
    """Median pitch (Hz) of the loud 40 ms frames, by autocorrelation: enough to compare."""
    n = 640
    frames = audio[: len(audio) // n * n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    f0s = []
    for fr in frames[rms > 0.3 * rms.max()]:
        fr = fr - fr.mean()
        ac = np.correlate(fr, fr, "full")[n - 1 :]
        lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 50
        f0s.append(SAMPLE_RATE / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0s))


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        ("espeak-ng:en-us", REMIND),
        ("espeak-ng:en-gb-scotland+m2", COUNT),
        ("espeak-ng:en-us+f3@160/50", "Remind me to breathe every 4 seconds!"),
        ("flite:slt", REMIND),
        ("flite:slt", "Count down from ten."),
        ("flite:awb", "Remind me to breathe every 4 seconds!"),
        ("flite:kal", COUNT),  # 8 kHz voice, resampled
    ],
)
def test_synthesize_gives_16k_audio_and_word_timings(tmp_path, voice, text) -> None:
    s = synthesize(text, voice, cache_dir=tmp_path)
    assert s.voice == Voice.parse(voice)
    _check_speech(s, text)


def test_espeak_non_ascii_text_maps_words_by_character(tmp_path) -> None:
    text = "Café naïve, über résumé ok"
    s = synthesize(text, "espeak-ng:en-us", cache_dir=tmp_path)
    _check_speech(s, text)


def test_espeak_word_ends_stop_at_a_pause(tmp_path) -> None:
    s = synthesize("Hello, world. Don't stop.", "espeak-ng:en-us", cache_dir=tmp_path)
    assert [w.text for w in s.words] == ["Hello", "world", "Don't", "stop"]
    hello, world = s.words[:2]
    assert world.start_s - hello.end_s > 0.05  # the comma's pause belongs to no word
    assert s.words[-1].end_s < s.duration_s  # trailing silence trimmed


def test_espeak_merges_events_of_one_token(tmp_path) -> None:
    # espeak-ng gives several WORD events for "3.5" and one for part of "twenty-one"
    text = "add 3.5 cups, twenty-one times"
    s = synthesize(text, "espeak-ng:en-us", cache_dir=tmp_path)
    assert [w.text for w in s.words] == ["add", "3.5", "cups", "twenty-one", "times"]


def test_flite_walk_allows_vowel_changes_but_not_a_lost_place() -> None:
    segments = [("pau", 0.1), ("ax", 0.2), ("t", 0.3), ("ay", 0.4), ("m", 0.5), ("pau", 0.6)]
    said_alone = {"a": ("ey",), "time.": ("t", "ay", "m")}  # "a" alone is "ey"
    assert flite._align("a time.", segments, said_alone) == (
        Word("a", 0.1, 0.2),
        Word("time", 0.2, 0.5),
    )
    assert flite._align("a time.", segments, {"a": ("ey",), "time.": ("t", "ay")}) == ()
    assert flite._align("a time.", segments, {"a": ("t", "ax"), "time.": ("ay", "m")}) == ()


def test_flite_words_left_out_when_phones_do_not_line_up(tmp_path) -> None:
    # "Dr." alone is "drive", before a name "doctor": the walk must not guess
    s = synthesize("Dr. Smith is here.", "flite:slt", cache_dir=tmp_path)
    _check_speech(s, s.text, words=False)
    assert s.words == ()


@pytest.mark.parametrize("name", ["espeak-ng:en-us", "flite:slt"])
def test_faster_rate_is_shorter(tmp_path, name) -> None:
    slow = synthesize(REMIND, f"{name}@120", cache_dir=tmp_path)
    fast = synthesize(REMIND, f"{name}@300", cache_dir=tmp_path)
    assert fast.duration_s < 0.75 * slow.duration_s
    assert fast.words[-1].end_s < slow.words[-1].end_s


@pytest.mark.parametrize("name", ["espeak-ng:en-us", "flite:slt", "flite:kal16"])
def test_higher_pitch_is_higher(tmp_path, name) -> None:
    low = synthesize(REMIND, f"{name}@-/20", cache_dir=tmp_path)
    high = synthesize(REMIND, f"{name}@-/80", cache_dir=tmp_path)
    assert _f0(high.audio) > 1.2 * _f0(low.audio)


def test_flite_pitch_50_keeps_the_voice_pitch() -> None:
    assert flite.f0_target_hz("slt", 50) == pytest.approx(172.0)
    assert flite.f0_target_hz("awb", 0) < flite.f0_target_hz("awb", 99)


@pytest.mark.parametrize("voice", ["flite:slt", "espeak-ng:en-us+f3"])
def test_cache_hit_is_identical_and_faster(tmp_path, voice) -> None:
    t0 = time.perf_counter()
    first = synthesize(REMIND, voice, cache_dir=tmp_path)
    t1 = time.perf_counter()
    again = synthesize(REMIND, voice, cache_dir=tmp_path)
    t2 = time.perf_counter()
    assert np.array_equal(first.audio, again.audio) and again.audio.dtype == np.float32
    assert first.words == again.words and first.voice == again.voice
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.rglob("*.tmp"))
    if voice.startswith("flite"):  # espeak-ng renders in a few ms: too close to time
        assert t2 - t1 < (t1 - t0) / 2


def test_cache_keys_differ_by_voice_rate_pitch_and_text(tmp_path) -> None:
    paths = {
        voice_cache.entry_path(tmp_path, Voice.parse(v), t)
        for v, t in [
            ("flite:slt", "a b"),
            ("flite:slt", "a b "),
            ("flite:awb", "a b"),
            ("flite:slt@150", "a b"),
            ("flite:slt@-/40", "a b"),
            ("espeak-ng:slt", "a b"),
        ]
    }
    assert len(paths) == 6


@pytest.mark.parametrize("damage", [b"", b"not a zip file", "truncate"])
def test_corrupt_cache_file_is_rendered_again(tmp_path, damage) -> None:
    first = synthesize(COUNT, "flite:slt", cache_dir=tmp_path)
    (path,) = tmp_path.rglob("*.npz")
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(damage)
    again = synthesize(COUNT, "flite:slt", cache_dir=tmp_path)
    _check_speech(again, COUNT)
    assert np.array_equal(first.audio, again.audio)  # flite is deterministic
    assert voice_cache.load(path, again.voice, COUNT) is not None  # rewritten whole


def _render_in_worker(cache_dir: str) -> bytes:
    return synthesize(REMIND, "flite:slt", cache_dir=Path(cache_dir)).audio.tobytes()


def test_worker_processes_share_one_cache(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        audios = list(pool.map(_render_in_worker, [str(tmp_path)] * 8))
    assert len(set(audios)) == 1
    assert len(list(tmp_path.rglob("*.npz"))) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_use_cache_false_neither_reads_nor_writes(tmp_path) -> None:
    synthesize(COUNT, "espeak-ng:en-us", cache_dir=tmp_path, use_cache=False)
    assert not list(tmp_path.rglob("*"))


def test_default_cache_dir_follows_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MICROTURN_CACHE", str(tmp_path))
    assert voice_cache.default_cache_dir() == tmp_path / "voices"
    monkeypatch.delenv("MICROTURN_CACHE")
    assert voice_cache.default_cache_dir().parts[-3:] == (".cache", "microturn", "voices")


def test_threads_share_the_espeak_library(tmp_path) -> None:
    texts = [f"thread number {i} says {REMIND}" for i in range(8)]
    out: dict[int, Speech] = {}

    def work(i: int) -> None:
        out[i] = synthesize(texts[i], "espeak-ng:en-us", use_cache=False)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, text in enumerate(texts):
        _check_speech(out[i], text)


def test_espeak_is_fast() -> None:
    synthesize("warm up", "espeak-ng:en-us", use_cache=False)
    t0 = time.perf_counter()
    for i in range(20):
        synthesize(f"This is sentence {i}, of a usual length.", "espeak-ng:en-us", use_cache=False)
    assert time.perf_counter() - t0 < 2.0  # about 0.1 s on a laptop core


@pytest.mark.parametrize(
    "voice",
    [
        Voice("espeak-ng", "en-us"),
        Voice("espeak-ng", "en-us+f3", 160, 50),
        Voice("espeak-ng", "en-gb-scotland+m2", None, 0),
        Voice("flite", "slt", 200),
        Voice("flite", "kal16", None, 99),
    ],
)
def test_voice_key_round_trip(voice) -> None:
    assert Voice.parse(voice.key()) == voice
    assert str(voice) == voice.key()


def test_voice_parse_forms() -> None:
    assert Voice.parse("espeak-ng:en-us+f3@160/50").key() == "espeak-ng:en-us+f3@160/50"
    assert Voice.parse("flite:slt") == Voice("flite", "slt")
    assert Voice.parse("flite:slt@180") == Voice("flite", "slt", 180)
    assert Voice.parse(" espeak-ng:en-us@/60 ") == Voice("espeak-ng", "en-us", None, 60)
    for bad in ["slt", "flite:slt@fast", "flite:", "flite:slt@100/200", "flite:slt@10"]:
        with pytest.raises(ValueError):
            Voice.parse(bad)


def test_errors(tmp_path) -> None:
    for text in ["", "   \n\t"]:
        with pytest.raises(ValueError, match="empty"):
            synthesize(text, "flite:slt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"espeak-ng, flite"):
        synthesize("hi", "sapi:kal", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"espeak-ng, flite"):
        Voice("sapi", "david")
    with pytest.raises(ValueError, match=r"espeak-ng, flite"):
        list_voices("sapi")
    with pytest.raises(ValueError, match="no voice 'xx-nope'"):
        synthesize("hi", "espeak-ng:xx-nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no voice variant 'nope'"):
        synthesize("hi", "espeak-ng:en-us+nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no voice 'nope'"):  # flite alone would fall back
        synthesize("hi", "flite:nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="rate"):
        Voice("espeak-ng", "en-us", rate=1000)
    with pytest.raises(TypeError):
        synthesize("hi", 3, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.rglob("*.npz"))


def test_missing_flite_names_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingSynthesizerError, match="apt-get install flite"):
        synthesize(COUNT, "flite:slt", cache_dir=tmp_path)
    with pytest.raises(MissingSynthesizerError):
        list_voices("flite")
    assert all(v.engine == "espeak-ng" for v in list_voices())  # the missing one is skipped


def test_missing_espeak_library_names_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(espeak, "_STATE", None)
    monkeypatch.setattr(espeak, "_LIB_NAME", "libespeak-ng-not-here.so.1")
    with pytest.raises(MissingSynthesizerError, match="apt-get install espeak-ng"):
        synthesize(COUNT, "espeak-ng:en-us", cache_dir=tmp_path)


def test_cache_hit_needs_no_engine(tmp_path, monkeypatch) -> None:
    first = synthesize(COUNT, "flite:slt", cache_dir=tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert np.array_equal(synthesize(COUNT, "flite:slt", cache_dir=tmp_path).audio, first.audio)


def test_list_voices() -> None:
    es = list_voices("espeak-ng")
    fl = list_voices("flite")
    assert {v.name for v in fl} == {"slt", "awb", "rms", "kal16", "kal"}
    names = {v.name for v in es}
    assert {"en-us", "en-gb", "en-us+f3", "en-gb-scotland+m2", "en-us+whisper"} <= names
    assert not any(n.endswith("+fast") for n in names)
    assert len(es) == len(names) > 100
    assert all(v.rate is None and v.pitch is None for v in es + fl)
    assert list_voices() == es + fl + list_voices("festival")
    # every accent speaks; so does a sample of variants (all ~800 take ~2 s)
    accents = [v for v in es if "+" not in v.name]
    assert len(accents) >= 5
    for v in [*accents, *es[1::97]]:
        s = synthesize(COUNT, v, use_cache=False)
        assert [w.text for w in s.words] == COUNT.split(), v

"""Speech synthesis for training and evaluation data: text -> 16 kHz mono float32 + words.

Three engines, all small Debian packages that run on any CPU:
- espeak-ng (`apt-get install espeak-ng`), through its C library so word timings are exact;
  voices like "en-us", "en-us+f3", "en-gb-scotland+m2".
- flite (`apt-get install flite`), through its CLI; voices "slt", "awb", "rms", "kal16",
  "kal" (8 kHz, resampled).
- festival (`apt-get install festival festvox-kallpc16k festvox-kdlpc16k`), through its CLI;
  voices "kal_diphone", "ked_diphone". Used only for the held-out `unseen_engine` split.

Renders are cached on disk (see `cache.py`), so a data pipeline can ask for the same
sentence many times and workers can share one cache directory.

    >>> s = synthesize("count down from ten", "flite:slt")
    >>> s.audio.dtype, [w.text for w in s.words]
    (dtype('float32'), ['count', 'down', 'from', 'ten'])
"""

from __future__ import annotations

from pathlib import Path

from microturn.codecs.audio import SAMPLE_RATE, validate_pcm

from . import espeak, festival, flite
from .base import ENGINES, MissingSynthesizerError, Speech, Voice
from .cache import CACHE_VERSION, default_cache_dir, entry_path, load, store

__all__ = [
    "CACHE_VERSION",
    "ENGINES",
    "MissingSynthesizerError",
    "Speech",
    "Voice",
    "default_cache_dir",
    "list_voices",
    "synthesize",
]

_BACKENDS = {espeak.ENGINE: espeak, flite.ENGINE: flite, festival.ENGINE: festival}


def _as_voice(voice: Voice | str) -> Voice:
    if isinstance(voice, Voice):
        return voice
    if isinstance(voice, str):
        return Voice.parse(voice)
    raise TypeError(f"voice must be a Voice or a string like 'flite:slt', got {type(voice)}")


def synthesize(
    text: str,
    voice: Voice | str,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> Speech:
    """Render `text` with `voice` (a Voice or its key, e.g. "espeak-ng:en-us+f3@160/50").

    Returns 16 kHz mono float32 audio and word timings (empty when flite's phones cannot
    be matched to the words). The result comes from the disk cache when it is there
    (`cache_dir`, default `default_cache_dir()`); `use_cache=False` neither reads nor
    writes it. A cache hit does not need the engine installed.
    """
    voice = _as_voice(voice)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"nothing to say: text is empty or whitespace ({text!r})")
    if "\0" in text:
        raise ValueError("text contains a NUL character (no engine can take it)")
    path = None
    if use_cache:
        path = entry_path(cache_dir if cache_dir is not None else default_cache_dir(), voice, text)
        hit = load(path, voice, text)
        if hit is not None:
            return Speech(text, voice, hit[0], hit[1])
    audio, words = _BACKENDS[voice.engine].render(text, voice)
    audio = validate_pcm(audio, SAMPLE_RATE, what=f"{voice} speech")
    if path is not None:
        store(path, voice, text, audio, words)
    return Speech(text, voice, audio, words)


def list_voices(engine: str | None = None) -> list[Voice]:
    """The voices this machine offers (rate and pitch left at their defaults).

    espeak-ng: each English accent (gmw/* voices; mbrola ones need extra packages) alone
    and with each variant ("+f3", "+m2", "+whisper", ...; see `espeak.EXCLUDED_VARIANTS`).
    flite: its built-in voices except the talking clock awb_time. With no `engine`, an
    engine that is not installed is skipped; naming it raises MissingSynthesizerError.
    """
    if engine is not None:
        if engine not in _BACKENDS:
            raise ValueError(
                f"unknown speech engine {engine!r}; the engines are: {', '.join(ENGINES)}"
            )
        return _BACKENDS[engine].list_voices()
    voices: list[Voice] = []
    for backend in _BACKENDS.values():
        try:
            voices += backend.list_voices()
        except MissingSynthesizerError:
            continue
    return voices

"""espeak-ng through its C library (ctypes), because only the library reports word events.

The CLI can write audio but cannot say where each word is; the library's synthesis
callback gets WORD events with the sample index where each word starts. The library keeps
global state (one current voice, one callback), so every use holds one process-wide lock,
and it is initialised once per process (rendering is then ~5 ms a sentence).

espeak-ng writes digital silence between phrases; nothing here adds noise (augmentation
is done elsewhere). It also carries a little state from one utterance to the next (the
phase of its pitch flutter, a static inside the library that cannot be reset), so the
same text rendered twice in one process differs slightly (a few samples in length, same
words); the disk cache pins one rendering. A fresh process repeats the same sequence.
"""

from __future__ import annotations

import bisect
import ctypes
import threading
from dataclasses import dataclass, field

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, from_pcm16, resample_pcm
from microturn.stream.episode import Word

from .base import DEFAULT_RATE, MissingSynthesizerError, Voice, token_spans, word_text

ENGINE = "espeak-ng"
_LIB_NAME = "libespeak-ng.so.1"
_INSTALL = "apt-get install espeak-ng (it brings libespeak-ng1 and espeak-ng-data)"

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() when data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_DEFAULT_PITCH = 50

# Variants left out of list_voices(): "fast" is espeak-ng's own "unstable" speed test.
# Names with spaces ("Mr serious") cannot be written in a voice key and are left out too.
EXCLUDED_VARIANTS = frozenset({"fast"})

# Word-end trimming on the 16 kHz audio: 5 ms frames, "silent" below -40 dB of the
# loudest frame, and a pause counts when it lasts at least 30 ms.
_FRAME = 80
_SILENCE_DB = -40.0
_MIN_PAUSE_S = 0.03


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters of the (UTF-8) input
        ("length", ctypes.c_int),  # characters
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index from the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class _VoiceInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, C string)* then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_lock = threading.Lock()
_chunks: list[bytes] = []
_events: list[tuple[int, int, int, int]] = []  # (type, text_position, length, sample)


def _on_synth(wav: ctypes._Pointer, n: int, events: ctypes._Pointer) -> int:
    """Library callback: keep the audio chunk and this chunk's events (0 = go on)."""
    if n > 0 and wav:
        _chunks.append(ctypes.string_at(wav, 2 * n))
    if events:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            _events.append((e.type, e.text_position, e.length, e.sample))
            i += 1
    return 0


# Module-level so ctypes never frees the trampoline while the library holds it.
_CALLBACK = _SynthCallback(_on_synth)


@dataclass
class _Library:
    lib: ctypes.CDLL
    sample_rate: int
    variants: frozenset[str] = field(default_factory=frozenset)  # "f3", "m2", "whisper", ...
    languages: dict[str, str] = field(default_factory=dict)  # "en-gb" -> "gmw/en"


_STATE: _Library | None = None


def _library() -> _Library:
    """Load and initialise libespeak-ng once per process."""
    global _STATE
    if _STATE is not None:
        return _STATE
    with _lock:
        if _STATE is not None:
            return _STATE
        try:
            lib = ctypes.CDLL(_LIB_NAME)
        except OSError as err:
            raise MissingSynthesizerError(
                f"espeak-ng library {_LIB_NAME} not found ({err}); {_INSTALL}"
            ) from err
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceInfo)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise MissingSynthesizerError(
                f"espeak-ng could not initialise (error {rate}; is espeak-ng-data missing?); "
                f"{_INSTALL}"
            )
        lib.espeak_SetSynthCallback(_CALLBACK)
        state = _Library(lib, rate)
        state.variants = frozenset(ident.split("/", 1)[1] for ident, _ in _list(state, "variant"))
        state.languages = _language_map(state)
        _STATE = state
        return state


def _list(state: _Library, language: str | None) -> list[tuple[str, list[tuple[int, str]]]]:
    """(identifier, [(priority, language)]) of the voices for a language ("variant" for the
    variants; None for every voice except variants and mbrola ones), best first."""
    spec_lang = ctypes.create_string_buffer((language or "").encode())
    spec = _VoiceInfo(languages=ctypes.cast(spec_lang, ctypes.c_void_p))
    found = state.lib.espeak_ListVoices(ctypes.byref(spec) if language else None)
    out = []
    i = 0
    while found and found[i]:
        v = found[i].contents
        langs = []
        p = v.languages
        while p and (priority := ctypes.string_at(p, 1)[0]) != 0:
            s = ctypes.string_at(p + 1)
            langs.append((priority, s.decode(errors="replace")))
            p += len(s) + 2
        out.append(((v.identifier or b"").decode(errors="replace"), langs))
        i += 1
    return out


def _language_map(state: _Library) -> dict[str, str]:
    """Language code -> identifier of its best voice ("en-gb" -> "gmw/en").

    espeak_SetVoiceByName only knows voice names and file names ("en-us" works because the
    file is gmw/en-US, "en-gb" does not: its file is gmw/en), and selecting by language
    ignores "+variant"; so language codes are turned into file names here, as the CLI's
    `-v en-gb+f3` effectively does.
    """
    best: dict[str, tuple[int, str]] = {}
    for ident, langs in _list(state, None):
        for priority, lang in langs:
            key = lang.lower()
            if key not in best or priority < best[key][0]:
                best[key] = (priority, ident)
    return {lang: ident for lang, (_, ident) in best.items()}


def list_voices() -> list[Voice]:
    """English accents (gmw/* files, not mbrola) x (no variant + every usable variant)."""
    state = _library()
    with _lock:
        bases = []
        for ident, langs in _list(state, "en"):
            if ident.startswith("gmw/") and langs and langs[0][1] not in bases:
                bases.append(langs[0][1])
    variants = sorted(
        (
            v
            for v in state.variants
            if v not in EXCLUDED_VARIANTS and v.isprintable() and not any(c.isspace() for c in v)
        ),
        key=str.lower,
    )
    suffixes = ["", *(f"+{v}" for v in variants)]
    return [Voice(ENGINE, base + suffix) for base in bases for suffix in suffixes]


def render(text: str, voice: Voice) -> tuple[np.ndarray, tuple[Word, ...]]:
    """Speak `text` with `voice`: 16 kHz float32 audio and word timings from WORD events."""
    state = _library()
    base, plus, variant = voice.name.partition("+")
    if plus and variant not in state.variants:
        raise ValueError(
            f"espeak-ng has no voice variant {variant!r} (in {voice.name!r}); "
            "see list_voices('espeak-ng') or `espeak-ng --voices=variant`"
        )
    ident = state.languages.get(base.lower(), base)
    data = ctypes.create_string_buffer(text.encode("utf-8"))
    with _lock:
        if not base or state.lib.espeak_SetVoiceByName((ident + plus + variant).encode()) != 0:
            raise ValueError(
                f"espeak-ng has no voice {base!r}; see list_voices('espeak-ng') "
                "or `espeak-ng --voices=en`"
            )
        state.lib.espeak_SetParameter(_PARAM_RATE, voice.rate or DEFAULT_RATE, 0)
        pitch = _DEFAULT_PITCH if voice.pitch is None else voice.pitch
        state.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        _chunks.clear()
        _events.clear()
        try:
            err = state.lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            state.lib.espeak_Synchronize()
            pcm = b"".join(_chunks)
            events = list(_events)
        finally:
            _chunks.clear()
            _events.clear()
    if err != 0:
        raise RuntimeError(f"espeak-ng failed to synthesise (error {err}) for {text!r}")
    if not pcm:
        raise ValueError(f"espeak-ng produced no audio for {text!r} (nothing speakable?)")
    native = from_pcm16(pcm)
    # Loud variants sit at full scale, and resampling can overshoot it slightly.
    audio = np.clip(resample_pcm(native, state.sample_rate), -1.0, 1.0)
    starts = _word_starts(text, events, state.sample_rate)
    return audio, _timed_words(starts, audio)


def _word_starts(
    text: str, events: list[tuple[int, int, int, int]], sample_rate: int
) -> list[tuple[str, float]]:
    """Map WORD events to whitespace tokens of `text`: (word text, start in seconds).

    espeak-ng may give several events for one token ("3.5" is three words, "1,234" five)
    or point at part of it ("Don" of "Don't"), and may add a zero-length event at the end;
    events in the same token are merged (first start wins), others are dropped.
    """
    spans = token_spans(text)
    token_starts = [s for s, _ in spans]
    out: list[tuple[str, float]] = []
    last_token = -1
    last_sample = -1
    for etype, position, length, sample in events:
        if etype != _EVENT_WORD or length <= 0:
            continue
        char = position - 1
        i = bisect.bisect_right(token_starts, char) - 1
        if i < 0 or char >= spans[i][1] or i < last_token or sample < last_sample:
            continue
        if i > last_token:
            s, e = spans[i]
            out.append((word_text(text[s:e]), sample / sample_rate))
            last_token, last_sample = i, sample
    return out


def _timed_words(starts: list[tuple[str, float]], audio: np.ndarray) -> tuple[Word, ...]:
    """Give each word an end: the next word's start, pulled back over a clear pause.

    A word also starts at its first voiced frame (espeak-ng may place a pause before it in
    its own span), and the last word ends where the voiced audio ends.
    """
    if not starts:
        return ()
    n = len(audio) // _FRAME
    frames = audio[: n * _FRAME].reshape(n, _FRAME) if n else np.zeros((1, _FRAME), np.float32)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    threshold = max(float(rms.max()) * 10 ** (_SILENCE_DB / 20), 1e-5)
    voiced = np.flatnonzero(rms > threshold)
    frame_s = _FRAME / SAMPLE_RATE
    duration = len(audio) / SAMPLE_RATE
    min_pause = int(np.ceil(_MIN_PAUSE_S / frame_s))
    words = []
    for k, (text, start) in enumerate(starts):
        last = k == len(starts) - 1
        end = duration if last else starts[k + 1][1]
        # frames wholly before the next word: its onset must not count as this word
        lo, hi = int(np.floor(start / frame_s)), int(np.floor(end / frame_s))
        inside = voiced[(voiced >= lo) & (voiced < hi)]
        if inside.size:
            start = max(start, float(inside[0]) * frame_s)
            voiced_end = float(inside[-1] + 1) * frame_s
            if last or hi - (inside[-1] + 1) >= min_pause:
                end = min(end, voiced_end)
        start = min(start, duration)
        end = min(max(end, start), duration)
        words.append(Word(text, round(start, 5), round(end, 5)))
    return tuple(words)

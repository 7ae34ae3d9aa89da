"""flite through its CLI; word timings from its phone segments (`-psdur`).

flite prints each phone with its end time but not which word it belongs to, so each
token's phones are looked up on their own (`-ps`, all distinct tokens of a sentence in one
extra run) and the sentence's phones are walked token by token. Context can change a
word: vowels are reduced ("a" alone is "ey", in a sentence "ax"), which the walk allows,
and some tokens expand differently ("Dr." alone is "drive", before a name "doctor"; "&"
alone is "ampersand", in a sentence "and"); when the phones do not line up (count, or
the vowel/consonant pattern of a token) the words are left out (empty tuple) rather than
guessed.

Rate maps to `duration_stretch = 175 / rate` (175 wpm = flite's own pace, stretch 1).
Pitch maps to `int_f0_target_mean = base * 2 ** ((pitch - 50) / 75)` Hz, with `base` the
voice's own mean F0 (measured: slt 172, awb 129, rms 99, kal/kal16 89; others 110), so
pitch 50 keeps the voice's pitch and 0 / 99 give about x0.63 / x1.57, near espeak-ng's
range. rms ignores int_f0_target_mean (its F0 does not change).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, resample_pcm
from microturn.stream.episode import Word

from .base import DEFAULT_RATE, MissingSynthesizerError, Voice, token_spans, word_text

ENGINE = "flite"
_INSTALL = "apt-get install flite"
# awb_time is a limited-domain voice that can only say clock times.
EXCLUDED_VOICES = frozenset({"awb_time"})
F0_BASE_HZ = {"slt": 172.0, "awb": 129.0, "rms": 99.0, "kal": 89.0, "kal16": 89.0}
_F0_BASE_DEFAULT = 110.0
_TIMEOUT_S = 120
_SEGMENT = re.compile(r"(\S+):(\d+(?:\.\d+)?)")
# Vowels of flite's US English phone set (cmu_us_phoneset).
_VOWELS = frozenset(
    {
        "aa",
        "ae",
        "ah",
        "ao",
        "aw",
        "ax",
        "axr",
        "ay",
        "eh",
        "er",
        "ey",
        "ih",
        "ix",
        "iy",
        "ow",
        "oy",
        "uh",
        "uw",
    }
)
_phone_cache: dict[tuple[str, str], tuple[str, ...]] = {}
_PHONE_CACHE_MAX = 200_000


def _binary() -> str:
    path = shutil.which("flite")
    if path is None:
        raise MissingSynthesizerError(f"flite is not installed (not on PATH); {_INSTALL}")
    return path


def _run(args: list[str]) -> str:
    """Run flite in the C locale (it reads floats with atof) and return its stdout."""
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(args, capture_output=True, env=env, timeout=_TIMEOUT_S, check=False)
    out = proc.stdout.decode("utf-8", errors="replace")
    err = proc.stderr.decode("utf-8", errors="replace").strip()
    if proc.returncode != 0 or err.startswith("Error"):
        raise RuntimeError(f"flite failed ({proc.returncode}): {err or out[-500:]}")
    return out


@lru_cache(maxsize=4)
def _voice_names(binary: str) -> tuple[str, ...]:
    """The built-in voices of this flite binary (`flite -lv`), awb_time included."""
    out = _run([binary, "-lv"])
    _, _, names = out.partition(":")
    return tuple(names.split())


def list_voices() -> list[Voice]:
    """flite's built-in voices (`flite -lv`) except the talking clock awb_time."""
    names = _voice_names(_binary())
    return [Voice(ENGINE, n) for n in sorted(names) if n not in EXCLUDED_VOICES]


def f0_target_hz(name: str, pitch: int) -> float:
    """int_f0_target_mean for a 0..99 pitch: 50 = the voice's own mean, 75 steps an octave."""
    return F0_BASE_HZ.get(name, _F0_BASE_DEFAULT) * 2 ** ((pitch - 50) / 75)


def render(text: str, voice: Voice) -> tuple[np.ndarray, tuple[Word, ...]]:
    """Speak `text` with flite: 16 kHz float32 audio and (when they line up) word timings."""
    import soundfile as sf

    binary = _binary()
    names = _voice_names(binary)
    if voice.name not in names or voice.name in EXCLUDED_VOICES:
        usable = ", ".join(n for n in names if n not in EXCLUDED_VOICES)
        # flite itself would silently fall back to its default voice.
        raise ValueError(f"flite has no voice {voice.name!r}; it has: {usable}")
    args = [binary, "-voice", voice.name]
    if voice.rate is not None:
        args += ["--setf", f"duration_stretch={DEFAULT_RATE / voice.rate:.4f}"]
    if voice.pitch is not None:
        args += ["--setf", f"int_f0_target_mean={f0_target_hz(voice.name, voice.pitch):.1f}"]
    with tempfile.TemporaryDirectory(prefix="microturn-flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        out = _run([*args, "-psdur", "-t", text, "-o", str(wav)])
        if not wav.is_file():
            raise RuntimeError(f"flite wrote no audio for {text!r}")
        pcm, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = np.clip(resample_pcm(pcm.mean(axis=1), rate), -1.0, 1.0)
    if audio.size == 0:
        raise ValueError(f"flite produced no audio for {text!r} (nothing speakable?)")
    segments = [(p, float(t)) for p, t in _SEGMENT.findall(out)]
    words = _align(text, segments, _token_phones(binary, voice.name, text))
    duration = len(audio) / SAMPLE_RATE
    words = tuple(Word(w.text, min(w.start_s, duration), min(w.end_s, duration)) for w in words)
    return audio, words


def _phones(line: str) -> tuple[str, ...]:
    return tuple(p for p in line.split() if p != "pau")


def _token_phones(binary: str, voice: str, text: str) -> dict[str, tuple[str, ...]]:
    """Phones (no pauses) of each distinct token of `text`, each said on its own."""
    tokens = list(dict.fromkeys(text[s:e] for s, e in token_spans(text)))
    known = {t: _phone_cache.get((voice, t)) for t in tokens}
    missing = [t for t, phones in known.items() if phones is None]
    if missing:
        with tempfile.TemporaryDirectory(prefix="microturn-flite-") as tmp:
            path = Path(tmp) / "tokens.txt"
            # A blank line ends an utterance: flite prints one line of phones per token.
            path.write_text("\n\n".join(missing) + "\n", encoding="utf-8")
            out = _run([binary, "-voice", voice, "-ps", "-f", str(path), "none"])
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if len(lines) == len(missing):
            found = dict(zip(missing, map(_phones, lines), strict=True))
        else:  # a token split into several utterances: ask one at a time
            found = {
                t: _phones(_run([binary, "-voice", voice, "-ps", "-t", t, "none"])) for t in missing
            }
        if len(_phone_cache) > _PHONE_CACHE_MAX:
            _phone_cache.clear()
        for t, phones in found.items():
            _phone_cache[(voice, t)] = phones
        known.update(found)
    return {t: phones for t, phones in known.items() if phones is not None}


def _align(
    text: str, segments: list[tuple[str, float]], phones: dict[str, tuple[str, ...]]
) -> tuple[Word, ...]:
    """Walk the sentence's phones token by token; () when they do not line up.

    A token's vowels may change in context ("a" is "ey" alone, "ax" in a sentence; "the"
    is "dh ax" or "dh iy"), so a token is accepted when its phones match one to one in
    kind (vowel or consonant); a walk that has lost its place breaks that pattern.
    """
    timed = []  # (phone, start, end) without pauses
    prev_end = 0.0
    for phone, end in segments:
        if end < prev_end:
            return ()
        if phone != "pau":
            timed.append((phone, prev_end, end))
        prev_end = end
    spans = token_spans(text)
    if sum(len(phones[text[s:e]]) for s, e in spans) != len(timed):
        return ()
    words = []
    k = 0
    for s, e in spans:
        expected = phones[text[s:e]]
        if not expected:
            continue
        got = timed[k : k + len(expected)]
        if any((a in _VOWELS) != (b[0] in _VOWELS) for a, b in zip(expected, got, strict=True)):
            return ()
        words.append(Word(word_text(text[s:e]), got[0][1], got[-1][2]))
        k += len(expected)
    return tuple(words)

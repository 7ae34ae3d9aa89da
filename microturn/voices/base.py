"""Types shared by the synthesis engines: a Voice (how to speak), a Speech (what came out).

Kept apart from the engines so that `espeak.py` and `flite.py` can import them without a
cycle through the package `__init__`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.episode import Word

ENGINES = ("espeak-ng", "flite", "festival")  # festival: held out for unseen_engine
RATE_RANGE = (80, 450)  # words per minute; espeak-ng's own limits
PITCH_RANGE = (0, 99)
DEFAULT_RATE = 175  # espeak-ng's default words per minute; flite's duration_stretch=1 is near it

_PARAMS = re.compile(r"^(?P<rate>\d+|-)?(?:/(?P<pitch>\d+|-)?)?$")


class MissingSynthesizerError(RuntimeError):
    """A speech engine is not installed; the message names the Debian package to install."""


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r}; the engines are: {', '.join(ENGINES)}")


@dataclass(frozen=True)
class Voice:
    """One way of speaking: engine, voice name and optional rate / pitch.

    `rate` is words per minute (80..450; None = the engine's default, 175). `pitch` is
    0..99 with 50 the voice's own pitch (None = the default). The voice name itself is
    checked when it is used, since only the engine knows which names exist.
    """

    engine: str
    name: str
    rate: int | None = None
    pitch: int | None = None

    def __post_init__(self) -> None:
        _check_engine(self.engine)
        if not self.name or any(c.isspace() or c in "@" for c in self.name):
            raise ValueError(f"bad voice name {self.name!r}: it must be non-empty, no spaces or @")
        for what, value, (lo, hi) in (
            ("rate", self.rate, RATE_RANGE),
            ("pitch", self.pitch, PITCH_RANGE),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"voice {what} must be an int in {lo}..{hi}, got {value!r}")

    def key(self) -> str:
        """Stable text form, e.g. "espeak-ng:en-us+f3@160/50"; `parse` reads it back."""
        base = f"{self.engine}:{self.name}"
        if self.rate is None and self.pitch is None:
            return base
        rate = "-" if self.rate is None else str(self.rate)
        pitch = "-" if self.pitch is None else str(self.pitch)
        return f"{base}@{rate}/{pitch}"

    def __str__(self) -> str:
        return self.key()

    @classmethod
    def parse(cls, spec: str) -> Voice:
        """Read "engine:name[@rate[/pitch]]" ("-" or nothing for a default), e.g. "flite:slt"."""
        engine, sep, rest = spec.strip().partition(":")
        if not sep:
            raise ValueError(
                f"bad voice {spec!r}: expected 'engine:name', e.g. 'espeak-ng:en-us' or "
                f"'flite:slt' (engines: {', '.join(ENGINES)})"
            )
        _check_engine(engine)
        name, _, params = rest.partition("@")
        rate = pitch = None
        if params:
            m = _PARAMS.match(params)
            if m is None:
                raise ValueError(f"bad voice {spec!r}: expected '@rate/pitch' after the name")
            if m["rate"] not in (None, "-"):
                rate = int(m["rate"])
            if m["pitch"] not in (None, "-"):
                pitch = int(m["pitch"])
        return cls(engine, name, rate, pitch)


@dataclass(frozen=True, eq=False)  # eq on a numpy array is ambiguous; compare fields yourself
class Speech:
    """Rendered text: 16 kHz mono float32 audio and, where the engine tells, word timings."""

    text: str
    voice: Voice
    audio: np.ndarray
    words: tuple[Word, ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated tokens: both engines split words this way."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def word_text(token: str) -> str:
    """A token without the punctuation around it ("seconds!" -> "seconds", "4" stays "4").

    Inner punctuation stays ("don't", "U.S.A", "3.5"); a token that is all punctuation
    ("&", spoken "and") stays as it is.
    """
    start, end = 0, len(token)
    while start < end and not token[start].isalnum():
        start += 1
    while end > start and not token[end - 1].isalnum():
        end -= 1
    return token[start:end] or token

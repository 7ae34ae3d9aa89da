"""Scoring helpers every scenario uses: what counts as saying something, and when."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from microturn.stream.episode import SpeechSegment, Timeline

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """0..999999 -> English words ("one hundred twenty three")."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _UNITS[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _UNITS[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + number_words(n % 100)
        return _UNITS[n // 100] + " hundred" + rest
    if n < 1_000_000:
        rest = "" if n % 1000 == 0 else " " + number_words(n % 1000)
        return number_words(n // 1000) + " thousand" + rest
    raise ValueError(f"number_words supports 0..999999, got {n}")


def _spoken_digits(digits: str) -> str:
    """A run of digits as it would be read: a number up to 999,999, else digit by
    digit (a model may write any run of digits; scoring it must not fail)."""
    n = int(digits)
    if n < 1_000_000:
        return number_words(n)
    return " ".join(_UNITS[int(d)] for d in digits)


def normalize(text: str) -> str:
    """Lowercase words, digits spelled out, punctuation gone: what ASR would return."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,234 -> 1234
    text = re.sub(r"\d+", lambda m: " " + _spoken_digits(m.group()) + " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


def says(segment_text: str, expected: str) -> bool:
    """Whether `expected` (a word or phrase) is said in `segment_text`, word-aligned."""
    hay, needle = f" {normalize(segment_text)} ", f" {normalize(expected)} "
    return needle.strip() != "" and needle in hay


def tolerance_s(target_s: float, relative: float = 0.15, floor_s: float = 0.5) -> float:
    """How far from `target_s` (measured from the cue the timing refers to) still counts
    as on time: max(floor, relative * target)."""
    return max(floor_s, relative * abs(target_s))


def within(actual_s: float, target_s: float, relative: float = 0.15, floor_s: float = 0.5) -> bool:
    """Timing check used across scenarios: |actual - target| <= `tolerance_s`."""
    return abs(actual_s - target_s) <= tolerance_s(target_s, relative, floor_s)


def segments_between(timeline: Timeline, start_s: float, end_s: float) -> list[SpeechSegment]:
    """Model speech that starts in [start_s, end_s)."""
    return [s for s in timeline.speech if start_s <= s.start_s < end_s]


def first_speech_after(timeline: Timeline, t: float) -> SpeechSegment | None:
    after = [s for s in timeline.speech if s.start_s >= t]
    return min(after, key=lambda s: s.start_s) if after else None


def speaking_at(timeline: Timeline, t: float) -> bool:
    return any(s.start_s <= t < s.end_s for s in timeline.speech)


def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def rate(flags: Iterable[bool]) -> float | None:
    vals = [bool(f) for f in flags]
    return float(np.mean(vals)) if vals else None


_WORD_UNITS = {number_words(n): n for n in range(20)}
_WORD_TENS = {number_words(n): n for n in range(20, 100, 10)}
_SINGLE = {"once": 1, "twice": 2, "thrice": 3}


def numbers_in(text: str) -> list[int]:
    """Every number said in `text`, in order: digits ("7", "10,063") and words ("seven",
    "ten thousand sixty three", "one hundred and five", "twice"). Words that cannot
    continue a number start a new one: "six seven" is [6, 7], "nineteen sixty" [19, 60]."""
    out: list[int] = []
    total = group = 0
    last: str | None = None  # kind of the previous number word; None: not in a number

    def flush() -> None:
        nonlocal total, group, last
        if last is not None:
            out.append(total + group)
        total = group = 0
        last = None

    words = normalize(text).split()
    for i, w in enumerate(words):
        if w in _SINGLE:
            flush()
            out.append(_SINGLE[w])
        elif w in _WORD_UNITS:
            v = _WORD_UNITS[w]
            kind = "unit" if v < 10 else "teen"
            fits = last in (None, "hundred", "thousand") or (
                kind == "unit" and last == "tens" and group % 10 == 0 and v > 0
            )
            if not fits or (v == 0 and last is not None):
                flush()
            group += v
            last = kind
        elif w in _WORD_TENS:
            if last not in (None, "hundred", "thousand"):
                flush()
            group += _WORD_TENS[w]
            last = "tens"
        elif w == "hundred":
            if last in ("unit", "teen") and 0 < group < 100:
                group *= 100
            else:
                flush()
                group = 100
            last = "hundred"
        elif w == "thousand":
            if last is not None and group > 0:
                if total:  # "five thousand three thousand": a second number
                    out.append(total)
                total, group = group * 1000, 0
            else:
                flush()
                total = 1000
            last = "thousand"
        elif w == "and" and last in ("hundred", "thousand") and i + 1 < len(words):
            nxt = words[i + 1]
            if nxt not in _WORD_UNITS and nxt not in _WORD_TENS:
                flush()
        else:
            flush()
    flush()
    return out


def _get(scores: dict[str, float], key: str) -> float:
    return float(scores.get(key) or 0.0)  # a metric with no applicable episode counts 0


# One figure per scenario that says whether it works (higher is better, at most 1);
# rates of doing the wrong thing are subtracted so that talking all the time never pays.
HEADLINE = {
    "turn_taking": lambda m: _get(m, "turn_tor") - _get(m, "pause_tor"),
    "interruption": lambda m: _get(m, "stop_rate_0_5s"),
    "backchannel": lambda m: _get(m, "reply_rate") - _get(m, "takeover_rate"),
    "time_awareness": lambda m: _get(m, "macro_accuracy"),
    "proactive_vision": lambda m: _get(m, "accuracy") - _get(m, "false_alarm_rate"),
    "repetition_counting": lambda m: _get(m, "accuracy"),
    "delegation": lambda m: _get(m, "accuracy"),
}


def headline(scores: dict[str, dict[str, float]]) -> float:
    """Mean headline figure over the evaluated scenarios: what picks the best checkpoint in
    training and what `microturn bench compare` tests."""
    values = [HEADLINE[name](metrics) for name, metrics in scores.items()]
    return float(np.mean(values)) if values else 0.0

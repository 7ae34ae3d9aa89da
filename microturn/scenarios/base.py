"""What every scenario shares: splits and their voices, a builder that turns a script of
timed utterances into an Episode, and the Scenario interface (generate + score).

Scenarios know episodes and timelines, never the model: they generate and they score.
The same `generate` feeds training (split "train") and the benchmark ("eval",
"unseen_engine"), so a task is defined exactly once.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microturn.codecs.audio import ACTIVITY_FRAME, SAMPLE_RATE
from microturn.stream.episode import (
    ActionEvent,
    Episode,
    Event,
    Reference,
    SpeechSegment,
    TextEvent,
    Timeline,
    VideoTrack,
    Word,
)
from microturn.stream.layout import Layout
from microturn.voices import Voice, synthesize
from microturn.voices.base import word_text

SPLITS = ("train", "eval", "unseen_engine")
# Train-split seeds from here on form the tune set (`bench calibrate`): new episodes with
# the training voices, on which sampling is chosen. Training data stays below it.
TUNE_FIRST_SEED = 9_000_000
DRIVERS = ("speech", "text")  # how the user gives the request: spoken or typed

# The model always speaks with one voice: flite's slt (clear to ASR, never a user voice).
MODEL_VOICE = Voice("flite", "slt")
# The first output window opens one micro-turn (200 ms) in; reference behaviour must not
# start earlier. Scenarios keep a margin.
EARLIEST_MODEL_S = 0.4


def rng_for(scenario: str, seed: int, split: str) -> np.random.Generator:
    """A generator that depends on (scenario, seed, split) only: same seed, same episode."""
    digest = hashlib.sha256(f"{scenario}/{split}/{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    return split


@dataclass
class EpisodeBuilder:
    """Place user utterances, typed text, model reference speech and events on one time
    axis; `build()` mixes the audio and returns the Episode.

    Times are seconds from the episode start. Speech is synthesized (disk-cached) and
    placed sample-accurately; word timings come along, shifted to episode time.
    """

    scenario: str
    seed: int
    split: str
    rng: np.random.Generator
    user_voice: Voice
    meta: dict[str, Any] = field(default_factory=dict)
    _user: list[tuple[int, np.ndarray]] = field(default_factory=list)
    _model: list[tuple[int, np.ndarray]] = field(default_factory=list)
    user_speech: list[SpeechSegment] = field(default_factory=list)
    model_speech: list[SpeechSegment] = field(default_factory=list)
    user_text: list[TextEvent] = field(default_factory=list)
    background: list[TextEvent] = field(default_factory=list)
    actions: list[ActionEvent] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    video: VideoTrack | None = None

    def __post_init__(self) -> None:
        check_split(self.split)

    def _speak(self, text: str, voice: Voice, at: float) -> tuple[SpeechSegment, np.ndarray]:
        speech = synthesize(text, voice)
        audio = speech.audio
        words = tuple(Word(w.text, at + w.start_s, at + w.end_s) for w in speech.words)
        start = words[0].start_s if words else at
        end = words[-1].end_s if words else at + speech.duration_s
        return SpeechSegment(start, end, text, words), audio

    def user_says(self, text: str, at: float, voice: Voice | None = None) -> SpeechSegment:
        """The user speaks `text` starting at `at` s; returns its timed segment."""
        seg, audio = self._speak(text, voice or self.user_voice, at)
        self._user.append((round(at * SAMPLE_RATE), audio))
        self.user_speech.append(seg)
        return seg

    def user_says_paused(
        self, text: str, at: float, cut: int, pause_s: float
    ) -> tuple[SpeechSegment, SpeechSegment] | None:
        """The user speaks `text` from `at` s with `pause_s` of silence between word `cut`
        - 1 and word `cut`. One rendering cut at the word boundary, so the first part keeps the
        sentence's unfinished intonation, as a person pausing mid-sentence does (two
        renderings would end the first part like a finished sentence). None when the
        engine gave no word timings to cut at."""
        speech = synthesize(text, self.user_voice)
        tokens = text.split()
        # The timed words are the tokens less any the engine gave no time (espeak-ng may
        # fold a short word into its neighbour): match them up in order.
        timed_index: dict[int, int] = {}
        for i, token in enumerate(tokens):
            j = len(timed_index)
            if j < len(speech.words) and speech.words[j].text == word_text(token):
                timed_index[i] = j
        if cut not in timed_index or len(timed_index) != len(speech.words):
            return None
        words, k = speech.words, timed_index[cut]
        if k == 0:
            return None
        # Cut in the middle of the gap between the two words: neither loses a sound.
        gap = words[k].start_s - words[k - 1].end_s
        split = round((words[k - 1].end_s + gap / 2) * SAMPLE_RATE)
        parts: list[SpeechSegment] = []
        for chunk, shift, timed_span, token_span in (
            (speech.audio[:split], at, slice(0, k), slice(0, cut)),
            (speech.audio[split:], at + max(0.0, pause_s - gap), slice(k, None), slice(cut, None)),
        ):
            timed = tuple(
                Word(w.text, shift + w.start_s, shift + w.end_s) for w in words[timed_span]
            )
            seg = SpeechSegment(
                timed[0].start_s, timed[-1].end_s, " ".join(tokens[token_span]), timed
            )
            self._user.append((round(shift * SAMPLE_RATE) + (split if parts else 0), chunk))
            self.user_speech.append(seg)
            parts.append(seg)
        return parts[0], parts[1]

    def user_types(self, text: str, at: float) -> TextEvent:
        event = TextEvent(at, text)
        self.user_text.append(event)
        return event

    def model_says(self, text: str, at: float) -> SpeechSegment:
        """Reference behaviour: the model speaks `text` from `at` s (its own voice)."""
        if at < EARLIEST_MODEL_S:
            raise ValueError(f"model speech at {at:.2f} s is before {EARLIEST_MODEL_S} s")
        seg, audio = self._speak(text, MODEL_VOICE, at)
        self._model.append((round(at * SAMPLE_RATE), audio))
        self.model_speech.append(seg)
        return seg

    def model_acts(self, kind: str, text: str, at: float) -> ActionEvent:
        action = ActionEvent(at, kind, text)
        self.actions.append(action)
        return action

    def background_result(self, text: str, at: float) -> TextEvent:
        event = TextEvent(at, text)
        self.background.append(event)
        return event

    def event(self, kind: str, at: float, **data: Any) -> Event:
        e = Event(at, kind, data)
        self.events.append(e)
        return e

    def end_s(self) -> float:
        """When the last placed thing ends."""
        ends = [s.end_s for s in self.user_speech + self.model_speech]
        ends += [e.time_s for e in self.user_text + self.background + self.events]
        ends += [a.time_s for a in self.actions]
        return max(ends, default=0.0)

    def build(self, duration_s: float, *, reference: bool = True) -> Episode:
        n = round(duration_s * SAMPLE_RATE)
        user = _mix(self._user, n)
        ref = None
        if reference:
            ref = Reference(_mix(self._model, n), list(self.model_speech), list(self.actions))
        return Episode(
            id=f"{self.scenario}-{self.split}-{self.seed}",
            scenario=self.scenario,
            split=self.split,
            seed=self.seed,
            user_audio=user,
            user_video=self.video,
            user_text=sorted(self.user_text, key=lambda e: e.time_s),
            background=sorted(self.background, key=lambda e: e.time_s),
            user_speech=sorted(self.user_speech, key=lambda s: s.start_s),
            events=sorted(self.events, key=lambda e: e.time_s),
            reference=ref,
            meta={"user_voice": self.user_voice.key(), **self.meta},
        )


def _mix(parts: list[tuple[int, np.ndarray]], n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    for start, audio in parts:
        if start >= n:
            raise ValueError("audio placed after the episode's end")
        end = min(n, start + audio.size)
        out[start:end] += audio[: end - start]
    return np.clip(out, -1.0, 1.0)


class Scenario(ABC):
    """One interaction task: generate episodes from a seed, score a system's Timeline."""

    name: str = ""
    categories: tuple[str, ...] = ()

    @abstractmethod
    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        """A deterministic episode for (seed, split, driver)."""

    @abstractmethod
    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        """Per-episode results (what was right, delays, ...)."""

    @abstractmethod
    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """Per-episode results -> the scenario's metrics (names as in the issue)."""


# ---------------------------------------------------------------------------------
# Which voices each split uses. Whole voices are held out: an espeak-ng voice is
# (accent, variant); eval uses held-out accents or held-out variants, train neither.
# flite: train awb + kal16, eval rms. unseen_engine: festival only, used nowhere else.
# ---------------------------------------------------------------------------------

ESPEAK_TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
ESPEAK_EVAL_ACCENTS = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
FLITE_TRAIN = ("awb", "kal16")
FLITE_EVAL = ("rms",)
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone")
HELD_OUT_VARIANT_EVERY = 5  # every 5th espeak-ng variant (sorted by name) is eval-only


def _espeak_variants() -> list[str]:
    from microturn.voices import list_voices

    names = {v.name.split("+", 1)[1] for v in list_voices("espeak-ng") if "+" in v.name}
    return sorted(names)


def split_variants() -> tuple[list[str], list[str]]:
    """(train variants, eval variants) of espeak-ng; "" is the plain voice (train)."""
    variants = _espeak_variants()
    held = variants[::HELD_OUT_VARIANT_EVERY]
    return [""] + [v for v in variants if v not in held], held


def user_voice(rng: np.random.Generator, split: str) -> Voice:
    """A random user voice for `split`, with random speaking rate and pitch."""
    check_split(split)
    if split == "unseen_engine":
        return Voice("festival", str(rng.choice(FESTIVAL_VOICES)))
    if rng.random() < 0.3:
        name = str(rng.choice(FLITE_TRAIN if split == "train" else FLITE_EVAL))
        return Voice("flite", name, rate=int(rng.integers(150, 200)))
    train_variants, eval_variants = split_variants()
    if split == "train":
        accent = str(rng.choice(ESPEAK_TRAIN_ACCENTS))
        variant = str(rng.choice(train_variants))
    elif rng.random() < 0.5:  # eval: a held-out accent with any train variant ...
        accent = str(rng.choice(ESPEAK_EVAL_ACCENTS))
        variant = str(rng.choice(train_variants))
    else:  # ... or a train accent with a held-out variant
        accent = str(rng.choice(ESPEAK_TRAIN_ACCENTS))
        variant = str(rng.choice(eval_variants))
    name = f"{accent}+{variant}" if variant else accent
    return Voice(
        "espeak-ng", name, rate=int(rng.integers(130, 200)), pitch=int(rng.integers(30, 70))
    )


# ---------------------------------------------------------------------------------
# Shared by every scenario: placing requests and replies, and reading events back
# ---------------------------------------------------------------------------------

TEXT_LAYOUT = Layout.preset("tiny")  # every preset moves text at the same rate
MIN_EPISODE_S = 8.0
MAX_EPISODE_S = 30.0  # the model's attention window: an episode fits in it whole


def check_driver(driver: str) -> str:
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; drivers: {', '.join(DRIVERS)}")
    return driver


def pick(rng: np.random.Generator, options: tuple[Any, ...] | list[Any]) -> Any:
    """One option, chosen by index so tuples of tuples stay intact."""
    return options[int(rng.integers(len(options)))]


def arrival_s(
    messages: list[TextEvent], event: TextEvent, slots: int, layout: Layout = TEXT_LAYOUT
) -> float:
    """When the model has all of `event` (its last byte and EOM) on a text track moving
    `slots` tokens per micro-turn, given every message queued on that track.

    Messages queue in order from the micro-turn they arrive in (what `TurnPacker` does);
    a micro-turn's input is complete when it ends. At 2 slots per 200 ms a 40-byte
    message takes 4 s.
    """
    slot = 0  # the next free slot, counted over the whole episode
    for e in sorted(messages, key=lambda e: e.time_s):
        n = len(e.text.encode("utf-8")) + 1  # + EOM
        slot = max(slot, layout.input_turn(e.time_s) * slots)
        last = slot + n - 1
        slot += n
        if e is event:
            return (last // slots + 1) * layout.micro_turn_s
    raise ValueError("event is not among the messages")


def typing_s(text: str, layout: Layout = TEXT_LAYOUT) -> float:
    """How long a typed message takes to flow in when the queue is empty (bytes + EOM)."""
    tokens = len(text.encode("utf-8")) + 1
    return -(-tokens // layout.user_text_slots) * layout.micro_turn_s


def user_turn(b: EpisodeBuilder, text: str, at: float, driver: str) -> tuple[float, float]:
    """The user says or types `text` from `at` s. Returns (start_s, end_s): when the first
    word is heard (or the message typed) and when the model has all of it (the last word
    ends, or the typed message has fully arrived)."""
    if check_driver(driver) == "speech":
        seg = b.user_says(text, at)
        return seg.start_s, seg.end_s
    event = b.user_types(text, at)
    return at, arrival_s(b.user_text, event, TEXT_LAYOUT.user_text_slots)


def lead_s(text: str, voice: Voice = MODEL_VOICE) -> float:
    """Silence before the first word of `text` said by `voice` (flite leads with ~0.2 s)."""
    words = synthesize(text, voice).words
    return words[0].start_s if words else 0.0


def model_speaks(
    b: EpisodeBuilder, text: str, start_s: float, heard_s: float | None = None
) -> SpeechSegment:
    """Reference speech whose first word starts at `start_s` (as close as the 0.4 s floor
    for the first output window allows), and never before the model could have heard
    what it answers: see `heard_by_s`."""
    begin = max(EARLIEST_MODEL_S, start_s - lead_s(text))
    if heard_s is not None:
        begin = max(begin, heard_by_s(heard_s))
    return b.model_says(text, begin)


def seen_s(frame_s: float, layout: Layout = TEXT_LAYOUT) -> float:
    """When a camera frame shown at `frame_s` has reached the model: the end of the input
    window it falls in (a frame on a window's boundary belongs to the window it opens).
    What a reply to something seen is `heard_s`."""
    return (layout.input_turn(frame_s) + 1) * layout.micro_turn_s


def heard_by_s(heard_s: float, layout: Layout = TEXT_LAYOUT) -> float:
    """The earliest time a reply's sound may start when what it answers was complete at
    `heard_s` (the user's last word, a typed message's arrival, a camera frame's `seen_s`).

    Why: the model writes a reply's text in the micro-turn where its sound starts, and
    output t is decided when input window t closes. A reply whose sound (the voice's
    lead-in included) starts before the first micro-turn boundary after `heard_s` was
    decided before the model had heard its cause: the data taught the model to answer
    while the user was still talking (two thirds of spoken requests in time awareness
    and three quarters of turn-taking replies did, before this rule)."""
    turn = layout.micro_turn_s
    # One activity frame more: packing finds where a sound starts to within a frame.
    return math.ceil(heard_s / turn - 1e-9) * turn + ACTIVITY_FRAME / SAMPLE_RATE


def episode_length(end_s: float, tail_s: float = 1.5) -> float:
    """Episode duration: `tail_s` after the last thing, at least 8 s, a whole micro-turn."""
    turn = TEXT_LAYOUT.micro_turn_s
    length = max(MIN_EPISODE_S, math.ceil((end_s + tail_s) / turn - 1e-9) * turn)
    if length > MAX_EPISODE_S + 1e-9:
        raise ValueError(f"episode would last {length:.1f} s, over {MAX_EPISODE_S} s")
    return round(length, 6)


def find_event(episode: Episode, kind: str) -> Event:
    """The episode's first ground-truth event of `kind` (ValueError if absent)."""
    for e in episode.events:
        if e.kind == kind:
            return e
    raise ValueError(f"episode {episode.id} has no {kind!r} event")

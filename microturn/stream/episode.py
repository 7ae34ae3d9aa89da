"""Episode (what the user does, and for training what the model should do) and Timeline
(what a system did), with timestamps in seconds and a JSON form documented in
docs/timeline.md.

Episodes carry media (audio, video frames) inline as base64 so one JSON file is a whole,
replayable test case; Timelines carry only times and text, so they stay small.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, validate_pcm

EPISODE_SCHEMA = "microturn.episode/1"
TIMELINE_SCHEMA = "microturn.timeline/1"


@dataclass(frozen=True)
class Word:
    """One spoken word and when it is heard."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech: who said what, from when to when (words where known)."""

    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()

    def __post_init__(self) -> None:
        _check_time(self.start_s, "speech start_s")
        _check_time(self.end_s, "speech end_s")
        if self.end_s < self.start_s:
            raise ValueError(
                f"speech segment ends ({self.end_s}) before it starts ({self.start_s})"
            )


@dataclass(frozen=True)
class TextEvent:
    """Text that arrives at one moment: a typed user message or a background result."""

    time_s: float
    text: str

    def __post_init__(self) -> None:
        _check_time(self.time_s, "text event time_s")


@dataclass(frozen=True)
class ActionEvent:
    """Something the model does besides speaking, e.g. `delegate` with its task text."""

    time_s: float
    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_time(self.time_s, "action time_s")
        if not self.kind:
            raise ValueError("action kind must not be empty")


@dataclass(frozen=True)
class Event:
    """A ground-truth happening scorers need (e.g. `visual_event`, `user_turn_end`)."""

    time_s: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_time(self.time_s, "event time_s")


@dataclass
class VideoTrack:
    """Camera frames (uint8 RGB, [F, H, W, 3]) and the time each one is shown."""

    frames: np.ndarray
    times_s: np.ndarray

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.times_s = np.asarray(self.times_s, dtype=np.float64)
        if self.frames.dtype != np.uint8:
            raise ValueError(f"video frames must be uint8, got {self.frames.dtype}")
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"video frames must be [F, H, W, 3] RGB, got {self.frames.shape}")
        if self.times_s.shape != (self.frames.shape[0],):
            raise ValueError(
                f"video has {self.frames.shape[0]} frames but {self.times_s.shape} times"
            )
        if np.any(np.diff(self.times_s) <= 0) or np.any(self.times_s < 0):
            raise ValueError("video frame times must be non-negative and strictly increasing")


@dataclass
class Reference:
    """What a good model does in this episode: the training target (not shown to systems)."""

    audio: np.ndarray
    speech: list[SpeechSegment] = field(default_factory=list)
    actions: list[ActionEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audio = validate_pcm(self.audio, SAMPLE_RATE, what="reference audio")


@dataclass
class Episode:
    """One interaction: the user's input tracks with exact event times, optionally the
    reference model behaviour, and whatever the scorer needs to judge a system."""

    id: str
    scenario: str
    user_audio: np.ndarray
    split: str = "train"
    seed: int = 0
    user_video: VideoTrack | None = None
    user_text: list[TextEvent] = field(default_factory=list)
    background: list[TextEvent] = field(default_factory=list)
    user_speech: list[SpeechSegment] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    reference: Reference | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_audio = validate_pcm(self.user_audio, SAMPLE_RATE, what="user audio")
        duration = self.duration_s
        if self.reference is not None and self.reference.audio.shape != self.user_audio.shape:
            raise ValueError(
                f"reference audio has {self.reference.audio.size} samples, "
                f"user audio {self.user_audio.size}: both must span the episode"
            )
        timed: list[tuple[str, float]] = [("user_text", e.time_s) for e in self.user_text]
        timed += [("background", e.time_s) for e in self.background]
        timed += [("user_speech", s.end_s) for s in self.user_speech]
        timed += [("event", e.time_s) for e in self.events]
        if self.user_video is not None:
            timed += [("user_video", float(self.user_video.times_s[-1]))]
        if self.reference is not None:
            timed += [("reference speech", s.end_s) for s in self.reference.speech]
            timed += [("reference action", a.time_s) for a in self.reference.actions]
        for what, t in timed:
            if t > duration + 1e-9:
                raise ValueError(
                    f"{what} at {t:.3f} s lies after the episode's end ({duration:.3f} s)"
                )

    @property
    def duration_s(self) -> float:
        return self.user_audio.size / SAMPLE_RATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": EPISODE_SCHEMA,
            "id": self.id,
            "scenario": self.scenario,
            "split": self.split,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "sample_rate": SAMPLE_RATE,
            "user_audio": _encode_array(self.user_audio),
            "user_video": None
            if self.user_video is None
            else {
                "frames": _encode_array(self.user_video.frames),
                "times_s": self.user_video.times_s.tolist(),
            },
            "user_text": [asdict(e) for e in self.user_text],
            "background": [asdict(e) for e in self.background],
            "user_speech": [_segment_dict(s) for s in self.user_speech],
            "events": [asdict(e) for e in self.events],
            "reference": None
            if self.reference is None
            else {
                "audio": _encode_array(self.reference.audio),
                "speech": [_segment_dict(s) for s in self.reference.speech],
                "actions": [asdict(a) for a in self.reference.actions],
            },
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        _check_schema(d, EPISODE_SCHEMA)
        if d.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ValueError(f"episode sample_rate {d['sample_rate']} is not {SAMPLE_RATE}")
        video = d.get("user_video")
        ref = d.get("reference")
        try:
            return cls(
                id=d["id"],
                scenario=d["scenario"],
                split=d.get("split", "train"),
                seed=int(d.get("seed", 0)),
                user_audio=_decode_array(d["user_audio"]),
                user_video=None
                if video is None
                else VideoTrack(_decode_array(video["frames"]), np.asarray(video["times_s"])),
                user_text=[TextEvent(**e) for e in d.get("user_text", [])],
                background=[TextEvent(**e) for e in d.get("background", [])],
                user_speech=[_segment_from(s) for s in d.get("user_speech", [])],
                events=[Event(**e) for e in d.get("events", [])],
                reference=None
                if ref is None
                else Reference(
                    audio=_decode_array(ref["audio"]),
                    speech=[_segment_from(s) for s in ref.get("speech", [])],
                    actions=[ActionEvent(**a) for a in ref.get("actions", [])],
                ),
                meta=d.get("meta", {}),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed episode JSON: {err!r}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Episode:
        return cls.from_dict(_loads(text, "episode"))

    def save(self, path: str | Path) -> None:
        _atomic_write(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Episode:
        return cls.from_json(Path(path).read_text())


@dataclass(frozen=True)
class TurnRecord:
    """How one micro-turn went: when it was due, how long the step took, what was missing."""

    index: int
    time_s: float
    step_ms: float = 0.0
    lateness_ms: float = 0.0
    missing: tuple[str, ...] = ()


@dataclass
class Timeline:
    """What a system did in one episode: its speech, its actions, its per-micro-turn timing."""

    system: str
    micro_turn_s: float
    episode_id: str | None = None
    speech: list[SpeechSegment] = field(default_factory=list)
    actions: list[ActionEvent] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.micro_turn_s <= 10:
            raise ValueError(f"micro_turn_s must be in (0, 10], got {self.micro_turn_s}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TIMELINE_SCHEMA,
            "system": self.system,
            "episode_id": self.episode_id,
            "micro_turn_s": self.micro_turn_s,
            "speech": [_segment_dict(s) for s in self.speech],
            "actions": [asdict(a) for a in self.actions],
            "turns": [{**asdict(t), "missing": list(t.missing)} for t in self.turns],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        _check_schema(d, TIMELINE_SCHEMA)
        try:
            return cls(
                system=d["system"],
                micro_turn_s=float(d["micro_turn_s"]),
                episode_id=d.get("episode_id"),
                speech=[_segment_from(s) for s in d.get("speech", [])],
                actions=[ActionEvent(**a) for a in d.get("actions", [])],
                turns=[
                    TurnRecord(**{**t, "missing": tuple(t.get("missing", ()))})
                    for t in d.get("turns", [])
                ],
                meta=d.get("meta", {}),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed timeline JSON: {err!r}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Timeline:
        return cls.from_dict(_loads(text, "timeline"))

    def save(self, path: str | Path) -> None:
        _atomic_write(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Timeline:
        return cls.from_json(Path(path).read_text())


def _check_time(t: float, what: str) -> None:
    if not isinstance(t, int | float) or not np.isfinite(t) or t < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {t!r}")


def _check_schema(d: Any, expected: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object for {expected}, got {type(d).__name__}")
    if d.get("schema") != expected:
        raise ValueError(f"schema is {d.get('schema')!r}, expected {expected!r}")


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from err


def _segment_dict(s: SpeechSegment) -> dict[str, Any]:
    return {
        "start_s": s.start_s,
        "end_s": s.end_s,
        "text": s.text,
        "words": [asdict(w) for w in s.words],
    }


def _segment_from(d: dict[str, Any]) -> SpeechSegment:
    return SpeechSegment(
        start_s=d["start_s"],
        end_s=d["end_s"],
        text=d["text"],
        words=tuple(Word(**w) for w in d.get("words", [])),
    )


_ALLOWED_DTYPES = {"float32", "uint8", "int16", "int32", "int64"}


def _encode_array(arr: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.name not in _ALLOWED_DTYPES:
        raise ValueError(f"cannot serialize dtype {arr.dtype}")
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "base64": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).decode(),
    }


def _decode_array(d: dict[str, Any]) -> np.ndarray:
    try:
        dtype = np.dtype(d["dtype"]).newbyteorder("<")
        if np.dtype(d["dtype"]).name not in _ALLOWED_DTYPES:
            raise ValueError(f"unsupported array dtype {d['dtype']!r}")
        raw = base64.b64decode(d["base64"], validate=True)
        shape = tuple(int(n) for n in d["shape"])
        arr = np.frombuffer(raw, dtype=dtype)
        return arr.reshape(shape).astype(dtype.newbyteorder("="))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed array in JSON: {err}") from err


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

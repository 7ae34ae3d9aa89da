"""What a delegation carries to a thinker (`ContextPackage`) and what comes back
(`DelegationResult`).

Both have a `to_dict()` for Timelines and the server's event stream. Media (the camera
frame, the user's audio) never goes into the dict form: a Timeline stays small and never
holds what the user showed or said, only that it was there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.episode import ActionEvent

ROLES = ("user", "model")

# What went wrong, as `DelegationResult.error`: None when the thinker answered.
ERROR_KINDS = (
    "timeout",  # the delegation (or one HTTP request) ran past its time limit
    "cancelled",  # the engine called cancel(id)
    "malformed",  # a server answered with something that is not a chat completion
    "unavailable",  # no connection, or an HTTP error status
    "unsupported",  # the thinker cannot do this kind of task
    "not_found",  # a fact-table lookup without that key
    "invalid",  # the task itself is wrong (bad expression, division by zero, ...)
    "busy",  # too many delegations in flight
    "error",  # anything else (a bug in a thinker)
)

# What the model hears when a delegation fails: short, in words it can say as they are.
FAILURE_TEXT = {
    "timeout": "I could not finish that: it took too long.",
    "cancelled": "I stopped working on that.",
    "malformed": "I could not finish that: the answer came back garbled.",
    "unavailable": "I could not finish that: I could not reach my helper.",
    "unsupported": "I don't know how to work that out.",
    "not_found": "I could not find that.",
    "invalid": "I could not work that out.",
    "busy": "I could not take that on: too much is going on already.",
    "error": "I could not finish that: something went wrong.",
}


class ThinkerError(Exception):
    """A thinker could not answer. `kind` is one of `ERROR_KINDS`; `spoken` is the short
    sentence the model may voice; `detail` is for logs only."""

    def __init__(self, kind: str, spoken: str | None = None, detail: str = "") -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; kinds: {', '.join(ERROR_KINDS)}")
        self.kind = kind
        self.spoken = spoken or FAILURE_TEXT[kind]
        self.detail = detail
        super().__init__(f"{kind}: {detail or self.spoken}")


@dataclass(frozen=True)
class TranscriptLine:
    """One message of the conversation so far: who wrote it (`user`: typed or heard text;
    `model`: what the model wrote on its text track) and when, in session seconds."""

    time_s: float
    role: str
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"transcript role must be one of {ROLES}, got {self.role!r}")
        if not math.isfinite(self.time_s) or self.time_s < 0:
            raise ValueError(f"transcript time_s must be >= 0 seconds, got {self.time_s!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": round(self.time_s, 3), "role": self.role, "text": self.text}


@dataclass(frozen=True)
class ContextPackage:
    """Everything a thinker gets for one delegation: the task the model wrote, the
    conversation so far, optionally the latest camera frame (uint8 HxWx3) and the last
    user utterance (16 kHz mono float32 PCM), and the session time of the delegation."""

    task: str
    transcript: tuple[TranscriptLine, ...] = ()
    session_s: float = 0.0
    frame: np.ndarray | None = field(default=None, compare=False)
    audio: np.ndarray | None = field(default=None, compare=False)
    session_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise TypeError(f"task must be a string, got {type(self.task).__name__}")
        object.__setattr__(self, "transcript", tuple(self.transcript))
        if self.frame is not None:
            f = np.asarray(self.frame)
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frame must be uint8 [H, W, 3], got {f.dtype} {tuple(f.shape)}")
        if self.audio is not None:
            a = np.asarray(self.audio)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
                raise ValueError(
                    f"audio must be 1-D float PCM at {SAMPLE_RATE} Hz, got {a.dtype} {a.shape}"
                )

    @property
    def audio_s(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without media (only whether a frame / audio came along)."""
        return {
            "task": self.task,
            "session_s": round(self.session_s, 3),
            "session_id": self.session_id,
            "transcript": [line.to_dict() for line in self.transcript],
            "frame_shape": None if self.frame is None else list(np.shape(self.frame)),
            "audio_s": round(self.audio_s, 3),
        }


@dataclass(frozen=True)
class DelegationResult:
    """A thinker's answer, or a failure said in words the model can voice.

    `text` is what goes on the background track either way; `error` is None when the
    thinker answered, else one of `ERROR_KINDS`. `started_s` / `finished_s` are on the
    delegator's clock (the engine passes its own)."""

    id: str
    task: str
    text: str
    error: str | None
    started_s: float
    finished_s: float
    detail: str = ""  # for logs and timelines, never for the background track
    thinker: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def elapsed_s(self) -> float:
        return self.finished_s - self.started_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "text": self.text,
            "ok": self.ok,
            "error": self.error,
            "detail": self.detail,
            "thinker": self.thinker,
            "started_s": round(self.started_s, 3),
            "finished_s": round(self.finished_s, 3),
        }

    def to_action(self, time_s: float) -> ActionEvent:
        """The Timeline record of this result arriving at session time `time_s`
        (kind `delegation_result`, as docs/timeline.md names it)."""
        data = {k: v for k, v in self.to_dict().items() if k != "text"}
        return ActionEvent(round(time_s, 3), "delegation_result", self.text, data)

    def spoken_action(self, time_s: float, message: str) -> ActionEvent:
        """The Timeline record of the model saying this result (`delegation_spoken`)."""
        data = {"id": self.id, "task": self.task, "result": self.text}
        return ActionEvent(round(time_s, 3), "delegation_spoken", message, data)

    def spoken_in(self, message: str) -> bool:
        """Whether a message the model wrote says this result: every number in the
        result among the message's numbers ("10063" in "that's 10,063"), or, for a
        result without digits, its words in order ("Buenos Aires"). A model that
        spells numbers out in words is not recognised (the scorers can; this cannot
        import them)."""
        wanted = _numbers(self.text)
        if wanted:
            return set(wanted) <= set(_numbers(message))
        words = _words(self.text)
        have = _words(message)
        n = len(words)
        return n > 0 and any(have[i : i + n] == words for i in range(len(have) - n + 1))


def delegate_action(delegation_id: str, package: ContextPackage, time_s: float) -> ActionEvent:
    """The Timeline record of a delegation starting (kind `delegate`, the task as its
    text, the delegation id and what context went along in `data`)."""
    data = {"id": delegation_id, **package.to_dict()}
    data["transcript_lines"] = len(data.pop("transcript"))
    return ActionEvent(round(time_s, 3), "delegate", package.task, data)


def _numbers(text: str) -> list[str]:
    """Numbers written with digits, grouping commas dropped: "10,063.5" -> "10063.5"."""
    return [n.replace(",", "") for n in re.findall(r"\d(?:[\d,]*\d)?(?:\.\d+)?", text)]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())

"""Offline runs: replay a recording through a system micro-turn by micro-turn and get
its Timeline and speech. Benchmarks use this, so every system (our model, the cascade
baseline, a user's own) goes through one small interface: feed a micro-turn in, get a
micro-turn out.

Our model's runs answer its own delegations: a `ModelSystem` has the built-in thinker
behind an inline delegator on the run's simulated clock, so results are deterministic
and reach the background track `THINK_HOLD_S` after each task is written. A system that
does this says so with `delegates = True`; the benchmarks then inject no background
results from the episode into it (`microturn.bench.interact.recording_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from microturn.background.builtin import BuiltinThinker
from microturn.background.delegator import Delegator, Thinker
from microturn.engine.clock import SimulatedClock
from microturn.engine.engine import Engine, record_event
from microturn.engine.recorder import TimelineRecorder
from microturn.model import InteractionModel, SamplingConfig
from microturn.stream.episode import (
    ActionEvent,
    Episode,
    TextEvent,
    Timeline,
    TurnRecord,
    VideoTrack,
)
from microturn.stream.layout import Layout

# Offline thinking time: a delegation's result reaches the background track this long
# after its task is written. The delegation scenario trains 1.5-3 s from the `delegate`
# action (`RESULT_DELAY_S`); writing the task takes 0.4 s (arithmetic, "347 * 29") to
# 2.6 s (the longest fact key) at 4 bytes per micro-turn. 1.1 s after the task puts
# arithmetic at the scenario's 1.5 s and lookups at 2.1-3.7 s (35 of the 48 fact keys
# within 3 s): a result never comes earlier than training taught the model to expect.
THINK_HOLD_S = 1.1


@dataclass
class RawTurn:
    """One micro-turn of input as a system receives it."""

    index: int
    audio: np.ndarray | None  # exactly one micro-turn of PCM, or None if it never came
    frame: np.ndarray | None = None  # latest camera frame seen by the window's end
    text: list[str] = field(default_factory=list)  # typed messages that arrived
    background: list[str] = field(default_factory=list)  # injected background results


@dataclass
class TurnReply:
    """One micro-turn of output: the audio to play next, text written, actions taken."""

    audio: np.ndarray
    text: str = ""
    end_of_message: bool = False
    actions: list[ActionEvent] = field(default_factory=list)
    step_ms: float = 0.0
    # Timeline records besides actions (delegation start with its task, results, when
    # they were said); a `delegate` record completes the bare `delegate` action.
    events: list[ActionEvent] = field(default_factory=list)


class SystemSession(Protocol):
    def step(self, turn: RawTurn) -> TurnReply: ...

    def close(self) -> None: ...


class System(Protocol):
    """Anything that can hold a conversation micro-turn by micro-turn."""

    name: str
    layout: Layout

    def open(self, seed: int) -> SystemSession: ...


@dataclass
class Recording:
    """What the user did: audio, optional camera frames (at the layout's size), typed
    text, and background results to inject at fixed times."""

    audio: np.ndarray
    video: VideoTrack | None = None
    text: list[TextEvent] = field(default_factory=list)
    background: list[TextEvent] = field(default_factory=list)

    @classmethod
    def from_episode(cls, episode: Episode) -> Recording:
        return cls(
            episode.user_audio,
            episode.user_video,
            list(episode.user_text),
            list(episode.background),
        )

    @property
    def duration_s(self) -> float:
        return self.audio.size / 16000

    def check(self, layout: Layout) -> None:
        for what, events in (("text", self.text), ("background", self.background)):
            for e in events:
                if e.time_s > self.duration_s:
                    raise ValueError(
                        f"{what} event at {e.time_s:.2f} s lies outside the "
                        f"{self.duration_s:.2f} s recording"
                    )
        if self.video is not None and layout.video_size:
            size = layout.video_size
            if self.video.frames.shape[1:3] != (size, size):
                raise ValueError(f"camera frames must be {size}x{size} for this model")


@dataclass
class RunResult:
    timeline: Timeline
    audio: np.ndarray  # the system's speech, aligned with the recording (t = 0)


def run_recording(
    system: System,
    recording: Recording,
    *,
    seed: int = 0,
    tail_s: float = 1.0,
    episode_id: str | None = None,
) -> RunResult:
    """Replay `recording` (plus `tail_s` of silence so replies can finish)."""
    lay = system.layout
    recording.check(lay)
    spt = lay.samples_per_turn
    n = lay.n_turns(recording.duration_s + tail_s)
    audio = np.zeros(n * spt, np.float32)
    audio[: recording.audio.size] = recording.audio
    text = _by_turn(recording.text, lay)
    background = _by_turn(recording.background, lay)
    video = recording.video
    recorder = TimelineRecorder(system.name, lay.micro_turn_s, episode_id)
    recorder.audio_start_s = lay.output_start_s(0)
    session = system.open(seed)
    try:
        for t in range(n):
            frame = None
            if video is not None:
                end = lay.input_start_s(t + 1)
                idx = int(np.searchsorted(video.times_s, end - 1e-9, side="left")) - 1
                frame = video.frames[idx] if idx >= 0 else None
            reply = session.step(
                RawTurn(
                    t, audio[t * spt : (t + 1) * spt], frame, text.get(t, []), background.get(t, [])
                )
            )
            recorder.add_audio(reply.audio)
            late = max(0.0, reply.step_ms - lay.micro_turn_ms)  # simulated clock: compute only
            recorder.add_turn(
                TurnRecord(
                    t, round(lay.input_start_s(t + 1), 3), round(reply.step_ms, 3), round(late, 3)
                )
            )
            recorder.add_text(lay.output_start_s(t), reply.text, reply.end_of_message)
            for a in reply.actions:
                recorder.add_action(a)
            for e in reply.events:
                record_event(recorder, e)
    finally:
        session.close()
    played = recorder.audio()
    start = round(recorder.audio_start_s * 16000)
    aligned = np.zeros(start + played.size, np.float32)
    aligned[start:] = played
    return RunResult(recorder.timeline(), aligned[: n * spt])


def _by_turn(events: list[TextEvent], lay: Layout) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in sorted(events, key=lambda e: e.time_s):
        out.setdefault(lay.input_turn(e.time_s), []).append(e.text)
    return out


class ModelSystem:
    """Our interaction model through the engine (one session per run, simulated clock).

    Its delegations are answered by `thinker` (default: the built-in one) run inline on
    the run's clock, each result held back to `think_hold_s` after its task was written;
    `delegate=False` leaves them unanswered (background results then come only from the
    recording)."""

    def __init__(
        self,
        model: InteractionModel,
        *,
        name: str = "microturn",
        sampling: SamplingConfig | None = None,
        thinker: Thinker | None = None,
        delegate: bool = True,
        think_hold_s: float = THINK_HOLD_S,
    ) -> None:
        self.name = name
        self.model = model
        self.layout = model.layout
        self.sampling = sampling or model.sampling  # the checkpoint's default unless told
        self.delegates = delegate
        self.thinker = (thinker or BuiltinThinker()) if delegate else None
        self.think_hold_s = think_hold_s

    def open(self, seed: int) -> _EngineSession:
        clock = SimulatedClock()
        delegator = None
        if self.thinker is not None:
            delegator = Delegator(
                self.thinker, clock=clock.now, inline=True, hold_s=self.think_hold_s
            )
        engine = Engine(
            self.model, max_sessions=1, clock=clock, sampling=self.sampling, delegator=delegator
        )
        return _EngineSession(engine, seed)


class _EngineSession:
    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.start_s = engine.clock.now()
        self.session = engine.open("run", seed=seed)

    def step(self, turn: RawTurn) -> TurnReply:
        s = self.session
        if turn.audio is not None:
            s.push_audio(turn.audio)
        if turn.frame is not None:
            s.push_frame(turn.frame)
        for text in turn.text:
            s.push_text(text)
        for text in turn.background:
            s.push_background(text)
        # The tick for micro-turn t is due when its input window closes: the clock (and
        # with it every held delegation result) moves on as it would live.
        deadline = self.start_s + self.engine.layout.input_start_s(turn.index + 1)
        self.engine.clock.sleep_until(deadline)
        out = self.engine.tick(deadline)[s.id]
        return TurnReply(
            out.audio, out.text, out.end_of_message, out.actions, out.step_ms, out.events
        )

    def close(self) -> None:
        self.engine.shutdown()

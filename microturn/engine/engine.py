"""The streaming-session engine: many live conversations, one batched step per tick.

Sessions (after SGLang's streaming sessions): a session owns one row of a preallocated
model state that persists across micro-turns; nothing is re-prefilled or re-allocated.
Exactly one micro-turn is in flight per session and it is committed only when the step
completes: if a step fails, every session's model state, sampling generator and input
packer go back to how they were before it.

The clock never waits for a client: at each tick every open session is stepped in one
batched forward; a session whose input for that micro-turn has not arrived gets it marked
missing. Outputs (audio PCM, text, actions) are handed out per session as soon as the
step ends.

Delegation (with a `thinker` or `delegator`): a `delegate` action's task is the next
message the model writes on its text track at or after the action (the rule of
`microturn.stream.layout.unpack`). When that message ends, the engine packs a
`ContextPackage` (the task, the session's transcript: the user's typed text and the
model's finished messages, the latest camera frame) and submits it without waiting. Each
tick, before inputs are taken, finished delegations are polled and their text (a failure
too, in words the model can say) goes onto the session's background track. The start, the
result and the moment the model says it are Timeline actions (`delegate`,
`delegation_result`, `delegation_spoken`) and `TurnOutputs.events`.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from microturn.background.context import (
    FAILURE_TEXT,
    ContextPackage,
    DelegationResult,
    TranscriptLine,
    delegate_action,
)
from microturn.background.delegator import Delegator, Thinker
from microturn.codecs import dmel
from microturn.codecs.audio import SAMPLE_RATE, validate_pcm
from microturn.codecs.text import ByteTokenizer
from microturn.engine.clock import Clock, SimulatedClock
from microturn.engine.recorder import Message, TimelineRecorder, read_turn
from microturn.engine.vocoder import StreamingVocoder, decode_many
from microturn.model import InteractionModel, SamplingConfig, StepResult, to_batch
from microturn.model.batch import INPUT_KEYS
from microturn.stream.episode import ActionEvent, Timeline, TurnRecord
from microturn.stream.layout import TurnInput, TurnPacker

VOCODER_DELAY_S = dmel.WIN_LENGTH / SAMPLE_RATE  # 50 ms: see engine/vocoder.py
TRANSCRIPT_LINES = 200  # per session: what a thinker gets as "the conversation so far"
MAX_MESSAGE_BYTES = 4096  # a message never closed with EOM stops growing here
UNSPOKEN_KEPT = 16  # results the engine still looks for in what the model says

log = logging.getLogger("microturn.engine")


@dataclass
class TurnOutputs:
    """What one session got from one micro-turn."""

    turn: int
    play_at_s: float  # when this audio starts playing on the session's timeline
    audio: np.ndarray  # PCM, one micro-turn long (its speech runs 50 ms behind its frames)
    text: str  # new text written this micro-turn (bytes decoded)
    end_of_message: bool  # an utterance / message ended this micro-turn
    actions: list[ActionEvent]
    step_ms: float
    lateness_ms: float
    missing: tuple[str, ...]
    # Delegation records this micro-turn (also in the session's Timeline): `delegate`
    # (started, with its task and id), `delegation_result` (arrived on the background
    # track), `delegation_spoken` (the model said it). For the server's event stream.
    events: list[ActionEvent] = field(default_factory=list)


@dataclass
class SessionMetrics:
    turns: int = 0
    missing_inputs: int = 0
    dropped_samples: int = 0
    step_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)


class SessionClosedError(RuntimeError):
    pass


class Session:
    """One live conversation: input buffers, the packer that turns them into slots, the
    vocoder for its speech, its metrics and timeline. Created by `Engine.open`."""

    def __init__(self, engine: Engine, session_id: str, seed: int) -> None:
        self.engine = engine
        self.id = session_id
        self.seed = seed
        self.layout = engine.layout
        self.packer = TurnPacker(self.layout)
        self.vocoder = StreamingVocoder(n_iter=engine.vocoder_iters)
        self.tokenizer = ByteTokenizer()
        self.metrics = SessionMetrics()
        self.recorder = TimelineRecorder(
            "microturn",
            self.layout.micro_turn_s,
            session_id,
            keep_audio=engine.keep_audio,
            max_message_bytes=MAX_MESSAGE_BYTES,
        )
        self.recorder.audio_start_s = self.layout.output_start_s(0)
        # Outputs wait here for a client that polls; bounded (10 s at 200 ms), so a
        # session nobody reads never grows. With `on_output` set, nothing is kept.
        self.outbox: deque[TurnOutputs] = deque(maxlen=50)
        self.on_output: Callable[[Session, TurnOutputs], None] | None = None
        self.row = -1
        self.closed = False
        self.turn = 0
        self.last_input_s = engine.clock.now()
        self.clock0_s = engine.clock.now()  # session time 0 on the engine's clock
        self._audio = np.zeros(0, np.float32)
        self._frame: np.ndarray | None = None
        self._text: list[str] = []
        self._background: list[str] = []
        # Delegation: the conversation so far (typed user text, the model's messages),
        # the ids in flight, results not yet said, and this micro-turn's records. The
        # recorder reads the text track and tells tasks from speech.
        self.transcript: deque[TranscriptLine] = deque(maxlen=TRANSCRIPT_LINES)
        self.delegations: set[str] = set()
        self._unspoken: deque[DelegationResult] = deque(maxlen=UNSPOKEN_KEPT)
        self._events: list[ActionEvent] = []

    # ---- inputs from the client ----------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError(f"session {self.id} is closed")

    def push_audio(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Microphone audio, any chunk size; consumed one micro-turn per tick."""
        self._check_open()
        pcm = validate_pcm(pcm, sample_rate, what=f"session {self.id} audio")
        self._audio = np.concatenate([self._audio, pcm])
        self.last_input_s = self.engine.clock.now()

    def push_frame(self, frame: np.ndarray) -> None:
        """The latest camera frame, already at the layout's size (see VisionCodec.fit)."""
        self._check_open()
        if self.packer.vision is None:
            raise ValueError("this model's layout has no camera slots")
        self.packer.vision.patchify(frame)  # validates size, dtype and channels now
        self._frame = frame
        self.last_input_s = self.engine.clock.now()

    def push_text(self, text: str) -> None:
        """Typed text from the user (also a `user` line of the transcript thinkers get)."""
        self._check_open()
        if not isinstance(text, str) or not text:
            raise ValueError("typed text must be a non-empty string")
        self._text.append(text)
        self.transcript.append(TranscriptLine(self.now_s(), "user", text))
        self.last_input_s = self.engine.clock.now()

    def push_background(self, text: str) -> None:
        """A background result (from a thinker) for the model's background track."""
        self._check_open()
        self._background.append(text)

    def now_s(self) -> float:
        """The session's time now (seconds since its micro-turn 0 began)."""
        return max(0.0, self.engine.clock.now() - self.clock0_s)

    def _inputs_snapshot(self) -> tuple:
        """What `_take_input` consumes, for the engine's rollback of a failed step."""
        m = self.metrics
        return (
            self._audio,
            list(self._text),
            list(self._background),
            m.missing_inputs,
            m.dropped_samples,
        )

    def _restore_inputs(self, snap: tuple) -> None:
        audio, text, background, missing, dropped = snap
        self._audio = audio
        self._text = text + self._text  # `_take_input` emptied them: anything here is new
        self._background = background + self._background
        self.metrics.missing_inputs, self.metrics.dropped_samples = missing, dropped

    def _take_input(self) -> tuple[TurnInput, tuple[str, ...]]:
        """This micro-turn's input; what has not arrived is marked missing."""
        spt = self.layout.samples_per_turn
        missing: tuple[str, ...] = ()
        if self._audio.size >= spt:
            backlog = self._audio.size - 2 * spt
            if backlog > 0:  # a client that fell behind: keep latency bounded
                self._audio = self._audio[backlog:]
                self.metrics.dropped_samples += backlog
            audio, self._audio = self._audio[:spt], self._audio[spt:]
        else:
            audio = None
            missing = ("user_audio",)
            self.metrics.missing_inputs += 1
        frames = []
        if self.packer.vision is not None:
            frames = [self._frame] * self.layout.video_frames
        inputs = TurnInput(
            audio=audio, video=frames, user_text=self._text, background=self._background
        )
        self._text, self._background = [], []
        return inputs, missing

    # ---- delegation ----------------------------------------------------------------
    def _record(self, event: ActionEvent) -> None:
        record_event(self.recorder, event)
        self._events.append(event)

    def _follow(self, finished: list[Message]) -> None:
        """The messages the model finished this micro-turn (read by the recorder): a
        task starts its delegation; any other is a `model` line of the transcript, and
        is checked for results the model has not said yet."""
        for start_s, text, task_of in finished:
            if task_of is not None:
                self.engine._delegate(self, task_of, text.strip())
                continue
            text = text.strip()
            if not text:
                continue
            self.transcript.append(TranscriptLine(start_s, "model", text))
            for r in list(self._unspoken):
                if r.spoken_in(text):
                    self._unspoken.remove(r)
                    self._record(r.spoken_action(start_s, text))

    def _arrive(self, result: DelegationResult) -> None:
        """A result goes onto the background track of this micro-turn's input."""
        self.delegations.discard(result.id)
        self.push_background(result.text)
        lay = self.layout
        first, last = lay.input_start_s(self.turn), lay.input_start_s(self.turn + 1) - 1e-3
        at = min(max(result.finished_s - self.clock0_s, first), last)  # inside its window
        self._record(result.to_action(at))
        self._unspoken.append(result)

    # ---- outputs -------------------------------------------------------------------
    def _emit(self, out: TurnOutputs) -> None:
        if self.on_output is not None:
            self.on_output(self, out)
        else:
            self.outbox.append(out)

    def timeline(self) -> Timeline:
        """What this session's model has done so far."""
        tl = self.recorder.timeline()
        tl.meta = {
            "seed": self.seed,
            "missing_inputs": self.metrics.missing_inputs,
            "dropped_samples": self.metrics.dropped_samples,
            "step_ms_p50": _pct(self.metrics.step_ms, 50),
            "step_ms_p99": _pct(self.metrics.step_ms, 99),
            "lateness_ms_p99": _pct(self.metrics.lateness_ms, 99),
        }
        return tl

    def audio(self) -> np.ndarray:
        """Everything the model said, as played (starts at `recorder.audio_start_s`);
        empty unless the engine keeps audio (`keep_audio=True`)."""
        return self.recorder.audio()


class Engine:
    """Live sessions over one model; `tick()` steps them all once, `run()` keeps time.

    `thinker`: answers delegated tasks through a `Delegator` the engine makes on its own
    clock (worker threads: a tick never waits for it). `delegator`: one made by the
    caller instead (an offline run's `inline=True, hold_s=...` one), on the engine's
    clock (`clock=engine_clock.now`). Neither: delegate actions are still read and
    recorded with their task, and nothing answers them. The engine owns the delegator:
    `shutdown()` closes it.
    """

    def __init__(
        self,
        model: InteractionModel,
        *,
        max_sessions: int = 32,
        clock: Clock | None = None,
        sampling: SamplingConfig | None = None,
        idle_timeout_s: float = 120.0,
        vocoder_iters: int = 2,
        window_turns: int | None = None,
        keep_audio: bool = False,
        thinker: Thinker | None = None,
        delegator: Delegator | None = None,
    ) -> None:
        if thinker is not None and delegator is not None:
            raise ValueError("give a thinker or a delegator, not both")
        self.model = model.eval()
        self.layout = model.layout
        _one_blas_thread()
        self.clock = clock or SimulatedClock()
        self.sampling = sampling or model.sampling  # the checkpoint's default
        self.idle_timeout_s = idle_timeout_s
        self.vocoder_iters = vocoder_iters
        self.keep_audio = keep_audio  # keep every session's speech (offline use only)
        self.state = model.new_state(max_sessions, window_turns=window_turns)
        self.rows: list[Session] = []  # live sessions, row i = self.rows[i]
        self.sessions: dict[str, Session] = {}
        self.ticks = 0
        self._ids = itertools.count()
        if thinker is not None:  # follows the clock even if it is swapped later
            delegator = Delegator(thinker, clock=lambda: self.clock.now())
        self.delegator = delegator
        self._delegations: dict[str, Session] = {}  # delegation id -> whose it is
        self._failed: list[DelegationResult] = []  # submits that raised, said next tick
        self._failures = itertools.count(1)

    @property
    def max_sessions(self) -> int:
        return int(self.state.lengths.shape[0])

    def open(self, session_id: str | None = None, *, seed: int = 0) -> Session:
        if len(self.rows) >= self.max_sessions:
            raise RuntimeError(f"all {self.max_sessions} session slots are in use")
        session_id = session_id or uuid.uuid4().hex[:12]
        if session_id in self.sessions:
            raise ValueError(f"session {session_id!r} already exists")
        session = Session(self, session_id, seed)
        session.row = len(self.rows)
        self.state.reset_rows([session.row])
        self.state.seed_row(session.row, seed)
        self.rows.append(session)
        self.sessions[session_id] = session
        return session

    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise KeyError(f"unknown session {session_id!r}") from None

    def close(self, session: Session | str) -> None:
        """End a session and free its row (the last live row moves into it)."""
        s = self.get(session) if isinstance(session, str) else session
        if s.closed:
            return
        s.closed = True
        if self.delegator is not None:
            for did in sorted(s.delegations):
                self.delegator.cancel(did)  # its result is dropped when polled
        s.delegations.clear()
        del self.sessions[s.id]
        last = self.rows.pop()
        if last is not s:
            self.state.move_row(last.row, s.row)
            last.row = s.row
            self.rows[s.row] = last
        self.state.reset_rows([len(self.rows)])
        s.row = -1

    def shutdown(self) -> None:
        """Close every session and the delegator (its threads go, nothing more is
        answered); idempotent."""
        for s in list(self.rows):
            self.close(s)
        if self.delegator is not None:
            self.delegator.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def close_idle(self) -> list[str]:
        now = self.clock.now()
        idle = [s.id for s in self.rows if now - s.last_input_s > self.idle_timeout_s]
        for sid in idle:
            self.close(sid)
        return idle

    def tick(self, deadline_s: float | None = None) -> dict[str, TurnOutputs]:
        """Step every live session by one micro-turn in one batched forward."""
        deadline_s = self.clock.now() if deadline_s is None else deadline_s
        for s in self.rows:  # this tick ends the session's micro-turn s.turn
            s.clock0_s = deadline_s - self.layout.input_start_s(s.turn + 1)
        self._poll_delegations()
        if not self.rows:
            self.ticks += 1
            return {}
        sessions = list(self.rows)
        packers = [s.packer.snapshot() for s in sessions]
        taken = [s._inputs_snapshot() for s in sessions]
        view = self.state.prefix(len(sessions))
        snapshot = view.snapshot()
        started = time.perf_counter()
        try:
            packed, missing = [], []
            for s in sessions:
                inputs, miss = s._take_input()
                packed.append(s.packer.pack(inputs))
                missing.append(miss)
            batch = to_batch(packed)
            result = self.model.step(
                view, {k: batch[k] for k in INPUT_KEYS}, sampling=self.sampling
            )
        except Exception:
            view.restore(snapshot)  # the micro-turn never happened
            for s, p, inputs in zip(sessions, packers, taken, strict=True):
                s.packer.restore(p)
                s._restore_inputs(inputs)  # audio, typed text, background results
            raise
        bins = result.model_audio.reshape(len(sessions), -1, dmel.N_MELS).numpy()
        speech = decode_many([s.vocoder for s in sessions], list(bins))  # one batch
        step_ms = (time.perf_counter() - started) * 1000
        outputs = {}
        for i, s in enumerate(sessions):
            outputs[s.id] = self._deliver(s, i, result, speech[i], step_ms, deadline_s, missing[i])
        self.ticks += 1
        return outputs

    def _deliver(
        self,
        s: Session,
        i: int,
        result: StepResult,
        pcm: np.ndarray,
        step_ms: float,
        deadline_s: float,
        missing: tuple[str, ...],
    ) -> TurnOutputs:
        lay = self.layout
        play_at = lay.output_start_s(s.turn)
        text_tokens = result.model_text[i].tolist()
        text, eom, actions = read_turn(text_tokens, result.model_action[i].tolist(), play_at)
        lateness_ms = max(0.0, (self.clock.now() - deadline_s) * 1000)
        if isinstance(self.clock, SimulatedClock):
            lateness_ms = 0.0 if step_ms < lay.micro_turn_ms else step_ms - lay.micro_turn_ms
        s.metrics.turns += 1
        s.metrics.step_ms.append(step_ms)
        s.metrics.lateness_ms.append(lateness_ms)
        s.recorder.add_audio(pcm)
        finished = s.recorder.add_output(play_at, text_tokens, actions)
        s._follow(finished)  # may start delegations (never waits)
        events, s._events = s._events, []
        out = TurnOutputs(
            s.turn, play_at, pcm, text, eom, actions, step_ms, lateness_ms, missing, events
        )
        s.recorder.add_turn(
            TurnRecord(
                s.turn,
                round(lay.input_start_s(s.turn + 1), 3),
                round(step_ms, 3),
                round(lateness_ms, 3),
                missing,
            )
        )
        s.turn += 1
        s._emit(out)
        return out

    # ---- delegation --------------------------------------------------------------
    def _delegate(self, s: Session, action: ActionEvent, task: str) -> None:
        """Hand a task to the delegator (returns at once) and record its start; a session
        without a thinker still gets the task recorded on its `delegate` action."""
        session_s = self.layout.input_start_s(s.turn + 1)  # this micro-turn's tick
        if self.delegator is None:
            s._record(ActionEvent(action.time_s, "delegate", task))
            return
        package = ContextPackage(
            task, tuple(s.transcript), session_s, frame=s._frame, session_id=s.id
        )
        try:
            did = self.delegator.submit(package)
        except Exception as err:  # a closed delegator, a bad thinker: said, not dropped
            log.warning("delegation for session %s could not start: %s", s.id, err)
            now = self.clock.now()
            did = f"failed-{next(self._failures)}"
            text = FAILURE_TEXT["error"]
            failed = DelegationResult(did, task, text, "error", now, now, f"{err}"[:500])
            self._failed.append(failed)
        s.delegations.add(did)
        self._delegations[did] = s
        s._record(delegate_action(did, package, action.time_s))

    def _poll_delegations(self) -> None:
        """Put finished delegations on their sessions' background tracks (failures too);
        cancelled ones and those of closed sessions are dropped."""
        if self.delegator is None:
            return
        results, self._failed = self._failed + self.delegator.poll(), []
        for r in results:
            s = self._delegations.pop(r.id, None)
            if s is None or s.closed or r.error == "cancelled":
                continue
            s._arrive(r)

    def run(self, n_ticks: int, feed: Callable[[int], None] | None = None) -> None:
        """Keep time for n_ticks micro-turns: before tick t, `feed(t)` may push inputs;
        the tick for micro-turn t is due when its input window closes."""
        start = self.clock.now()
        for t in range(n_ticks):
            if feed is not None:
                feed(t)
            deadline = start + (t + 1) * self.layout.micro_turn_s
            self.clock.sleep_until(deadline)
            self.tick(deadline)
            self.close_idle()


def record_event(recorder: TimelineRecorder, event: ActionEvent) -> None:
    """Add a delegation record to a Timeline: a `delegate` record (with its task)
    completes the bare `delegate` action read off the action track at the same time;
    the others are added."""
    if event.kind == "delegate":
        for i, a in enumerate(recorder.actions):
            bare = a.kind == "delegate" and not a.text and not a.data
            if bare and abs(a.time_s - event.time_s) < 1e-6:
                recorder.actions[i] = event
                return
    recorder.add_action(event)


def _one_blas_thread() -> None:
    """Keep numpy's BLAS (speech decoding) on one thread: its spinning worker threads
    otherwise fight torch's for the same cores, and a tick of 16 sessions on 2 cores
    took 298 ms instead of 186 ms (measured with `microturn bench engine`)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def load_model(path: str | None, preset: str | None, *, seed: int = 0) -> InteractionModel:
    """A trained checkpoint, or (explicitly) a randomly initialised preset."""
    from microturn.model import ModelConfig, from_pretrained

    if path is not None:
        return from_pretrained(path)
    if preset is None:
        raise ValueError("give a checkpoint folder (--model DIR) or a preset (--preset tiny)")
    torch.manual_seed(seed)
    return InteractionModel(ModelConfig.preset(preset))

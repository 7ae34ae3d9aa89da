"""Build a Timeline from what a system emitted micro-turn by micro-turn.

Any system (our model through the engine, the cascade baseline, a user's adapter) hands
the recorder the same things per micro-turn: the audio it plays, the text it writes, its
actions. Speech segments come from the audio itself (where it is not silent), so a
segment's start and end are what a listener hears; the text written for it is attached.
Text the system writes but never voices stays in the timeline as a text-only segment (the
ASR view of the harness then shows it was not said).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from microturn.codecs.audio import ACTIVITY_FRAME, SAMPLE_RATE, audible_frames
from microturn.codecs.text import ACTION_NAMES, N_BYTES, MessageReader, Special
from microturn.stream.episode import ActionEvent, SpeechSegment, Timeline, TurnRecord

FRAME = ACTIVITY_FRAME  # 10 ms energy frames
MERGE_GAP_S = 0.3  # pauses shorter than this stay inside one utterance
MIN_SEGMENT_S = 0.08
TEXT_ATTACH_S = 1.5  # text attaches to audio that starts within this of the text
WAITING_TASKS = 8  # delegate actions whose task has not been written yet (bounded)

# A message finished on the text track: (start, text, the `delegate` action it is the
# task of, or None when it is something the model says).
Message = tuple[float, str, ActionEvent | None]


@dataclass
class TimelineRecorder:
    system: str
    micro_turn_s: float
    episode_id: str | None = None
    _active: list[bool] = field(default_factory=list)  # per 10 ms frame of played audio
    _audio: list[np.ndarray] = field(default_factory=list)
    _messages: list[tuple[float, str]] = field(default_factory=list)  # (time, text)
    _reader: MessageReader = field(init=False)  # the text track so far
    _waiting: deque[ActionEvent] = field(default_factory=lambda: deque(maxlen=WAITING_TASKS))
    actions: list[ActionEvent] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    audio_start_s: float = 0.0  # when the first recorded audio sample is played

    keep_audio: bool = True  # live sessions keep only speech activity (bounded memory)
    max_message_bytes: int | None = None  # a message never closed stops growing here
    _rest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        self._reader = MessageReader(self.max_message_bytes)

    def add_audio(self, pcm: np.ndarray) -> None:
        """Audio played next (consecutive chunks, any length)."""
        pcm = np.asarray(pcm, np.float32)
        if self.keep_audio:
            self._audio.append(pcm)
        data = np.concatenate([self._rest, pcm])
        n = data.size // FRAME
        self._active.extend(audible_frames(data).tolist())
        self._rest = data[n * FRAME :]

    def add_activity(self, active: np.ndarray) -> None:
        """Speech activity per 10 ms frame, for systems whose speech is not decoded to
        audio (training-time evaluation reads it off the model's dMel frames)."""
        self._active.extend(np.asarray(active, bool).tolist())

    def add_text(self, time_s: float, text: str, end_of_message: bool) -> None:
        """Text written at `time_s`; `end_of_message` closes the current utterance (a
        system that reports decoded text per micro-turn: the cascade, a remote client)."""
        ids = list(text.encode("utf-8")) + ([int(Special.EOM)] if end_of_message else [])
        self.add_output(time_s, ids)

    def add_output(
        self, time_s: float, ids: list[int], actions: Sequence[ActionEvent] = ()
    ) -> list[Message]:
        """One micro-turn of a model's text-track ids and actions, written at `time_s`.
        A message that starts at or after a `delegate` action still waiting for its task
        is that task: handed to a thinker, not said, so it is no speech. Returns the
        messages finished here; one that ends and one that starts in the same micro-turn
        stay two."""
        for a in actions:
            self.add_action(a)
            if a.kind == "delegate":
                self._waiting.append(a)
        finished: list[Message] = []
        for start_s, text in self._reader.feed(ids, time_s):
            task_of = self._waiting.popleft() if self._is_task(start_s) else None
            if task_of is None:
                self._messages.append((start_s, text))
            finished.append((start_s, text, task_of))
        return finished

    def _is_task(self, start_s: float) -> bool:
        return bool(self._waiting) and start_s >= self._waiting[0].time_s - 1e-9

    def add_action(self, action: ActionEvent) -> None:
        self.actions.append(action)

    def add_turn(self, record: TurnRecord) -> None:
        self.turns.append(record)

    def audio(self) -> np.ndarray:
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    def speech_spans(self) -> list[tuple[float, float]]:
        """(start, end) in seconds of where the played audio has speech."""
        active = np.asarray(self._active, bool)
        spans: list[list[float]] = []
        step = FRAME / SAMPLE_RATE
        for i in np.flatnonzero(active):
            t = self.audio_start_s + i * step
            if spans and t - spans[-1][1] <= MERGE_GAP_S:
                spans[-1][1] = t + step
            else:
                spans.append([t, t + step])
        return [(a, b) for a, b in spans if b - a >= MIN_SEGMENT_S]

    def timeline(self) -> Timeline:
        messages = list(self._messages)
        unfinished = self._reader.unfinished()
        if unfinished is not None and not self._is_task(unfinished[0]):
            messages.append(unfinished)
        spans = self.speech_spans()
        texts: list[list[str]] = [[] for _ in spans]
        speech: list[SpeechSegment] = []
        for time_s, text in messages:
            # the first span that is still going at the text's time or starts soon after
            idx = next(
                (
                    i
                    for i, (a, b) in enumerate(spans)
                    if b >= time_s and a <= time_s + TEXT_ATTACH_S
                ),
                None,
            )
            if idx is None:
                speech.append(SpeechSegment(time_s, time_s, text.strip()))
            else:
                texts[idx].append(text.strip())
        for (a, b), t in zip(spans, texts, strict=True):
            speech.append(SpeechSegment(round(a, 3), round(b, 3), " ".join(t)))
        speech.sort(key=lambda s: s.start_s)
        return Timeline(
            system=self.system,
            micro_turn_s=self.micro_turn_s,
            episode_id=self.episode_id,
            speech=speech,
            actions=list(self.actions),
            turns=list(self.turns),
        )


def read_turn(
    text_tokens: list[int], action_tokens: list[int], play_at_s: float
) -> tuple[str, bool, list[ActionEvent]]:
    """One output micro-turn's text track and action slots -> (text, end of message,
    actions): how every system that runs our model reads what it wrote."""
    text_bytes, eom = [], False
    for tok in text_tokens:
        if tok == Special.EOM:
            eom = True
        elif tok < N_BYTES:
            text_bytes.append(tok)
    text = bytes(text_bytes).decode("utf-8", errors="replace")
    actions = [
        ActionEvent(round(play_at_s, 3), ACTION_NAMES[tok])
        for tok in action_tokens
        if tok in ACTION_NAMES
    ]
    return text, eom, actions

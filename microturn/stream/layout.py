"""The micro-turn: the one place that says where every token of a micro-turn goes.

A conversation is cut into micro-turns of `micro_turn_ms` (default 200 ms). Each
micro-turn is a fixed block of slots, inputs first, then outputs:

    | user_audio x A | user_video x V | user_text x Su | background x Sb |   <- input t
    | model_action x Sa | model_text x Sm | model_audio x A |              <- output t

and the sequence is input 0, output 0, input 1, output 1, ... Because every micro-turn
has the same number of slots, a slot's position is `turn * slots_per_turn + slot`: time
can be read off positions, and silence, pauses and overlaps stay in context.

Timing contract: input t holds what the user did during [t*T, (t+1)*T); output t is
computed when that window closes and is played during [(t+1)*T, (t+2)*T). The model is
therefore always one micro-turn behind the world it hears, never ahead of it.

`TurnPacker` turns one micro-turn of raw inputs (PCM, frames, text) into slots; the
live engine calls it every tick and `pack_episode` calls it for every micro-turn of a
recorded episode, so training and live inference share the same placement code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np

from microturn.codecs import dmel
from microturn.codecs.audio import ACTIVITY_FRAME, SAMPLE_RATE, audible_frames
from microturn.codecs.text import (
    ACTION_NAMES,
    ACTIONS,
    VOCAB_SIZE,
    ByteTokenizer,
    MessageReader,
    Special,
)
from microturn.codecs.vision import PATCH, VisionCodec
from microturn.stream.episode import ActionEvent, Episode, TextEvent

OUTPUT_DELAY_TURNS = 1  # output t is played one micro-turn after input t was heard


class Track(StrEnum):
    """Every stream a micro-turn carries. Inputs come from the user's side."""

    USER_AUDIO = "user_audio"
    USER_VIDEO = "user_video"
    USER_TEXT = "user_text"
    BACKGROUND = "background"
    MODEL_ACTION = "model_action"
    MODEL_TEXT = "model_text"
    MODEL_AUDIO = "model_audio"


class SlotKind(StrEnum):
    """What one slot holds, which decides how the model embeds it."""

    AUDIO = "audio"  # `audio_group` dMel frames of 80 bins each
    PATCH = "patch"  # one 40x40 RGB pixel patch
    TOKEN = "token"  # one text / action token id


INPUT_TRACKS: tuple[Track, ...] = (
    Track.USER_AUDIO,
    Track.USER_VIDEO,
    Track.USER_TEXT,
    Track.BACKGROUND,
)
OUTPUT_TRACKS: tuple[Track, ...] = (Track.MODEL_ACTION, Track.MODEL_TEXT, Track.MODEL_AUDIO)
TRACK_ORDER: tuple[Track, ...] = INPUT_TRACKS + OUTPUT_TRACKS
TRACK_KIND: dict[Track, SlotKind] = {
    Track.USER_AUDIO: SlotKind.AUDIO,
    Track.USER_VIDEO: SlotKind.PATCH,
    Track.USER_TEXT: SlotKind.TOKEN,
    Track.BACKGROUND: SlotKind.TOKEN,
    Track.MODEL_ACTION: SlotKind.TOKEN,
    Track.MODEL_TEXT: SlotKind.TOKEN,
    Track.MODEL_AUDIO: SlotKind.AUDIO,
}


def parse_track(name: str) -> Track:
    """Track by name, with a clear error for unknown names."""
    try:
        return Track(name)
    except ValueError:
        known = ", ".join(t.value for t in Track)
        raise ValueError(f"unknown track {name!r}; tracks are: {known}") from None


@dataclass(frozen=True)
class Layout:
    """Slot budget of one micro-turn. Change it and the model must be retrained."""

    micro_turn_ms: float = 200.0
    audio_group: int = 4  # dMel frames per audio slot (k)
    video_size: int = 80  # frame side in pixels (multiple of 40); 0 = no camera slots
    video_frames: int = 1  # camera frames per micro-turn
    user_text_slots: int = 2
    background_slots: int = 2
    action_slots: int = 1
    model_text_slots: int = 4

    def __post_init__(self) -> None:
        if not 40 <= self.micro_turn_ms <= 1000:
            raise ValueError(f"micro_turn_ms must lie in [40, 1000], got {self.micro_turn_ms}")
        if self.audio_group < 1:
            raise ValueError(f"audio_group must be >= 1, got {self.audio_group}")
        slot_ms = self.audio_group * 1000.0 / dmel.FRAMES_PER_SECOND
        turns = self.micro_turn_ms / slot_ms
        if abs(turns - round(turns)) > 1e-9:
            raise ValueError(
                f"micro_turn_ms={self.micro_turn_ms} is not a whole number of audio slots of "
                f"{slot_ms} ms (12.5 ms dMel hop x audio_group={self.audio_group}); "
                f"e.g. {max(slot_ms, round(turns) * slot_ms)} ms works"
            )
        if self.video_size < 0 or self.video_size % PATCH:
            raise ValueError(
                f"video_size must be 0 or a multiple of {PATCH}, got {self.video_size}"
            )
        if self.video_size and self.video_frames < 1:
            raise ValueError("video_frames must be >= 1 when video_size > 0")
        for name in ("user_text_slots", "background_slots", "action_slots", "model_text_slots"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.model_text_slots < 1:
            raise ValueError("model_text_slots must be >= 1: the model's words live there")

    @classmethod
    def preset(cls, name: str) -> Layout:
        try:
            return LAYOUTS[name]
        except KeyError:
            raise ValueError(f"unknown layout {name!r}; presets: {', '.join(LAYOUTS)}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown layout fields: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ---- timing -----------------------------------------------------------------
    @property
    def micro_turn_s(self) -> float:
        return self.micro_turn_ms / 1000.0

    @property
    def samples_per_turn(self) -> int:
        return round(SAMPLE_RATE * self.micro_turn_s)

    @property
    def frames_per_turn(self) -> int:
        """dMel frames per micro-turn (16 at 200 ms)."""
        return self.samples_per_turn // dmel.HOP

    def n_turns(self, duration_s: float) -> int:
        """Micro-turns needed to cover `duration_s` (a started micro-turn counts)."""
        return -(-round(duration_s * SAMPLE_RATE) // self.samples_per_turn)

    def input_turn(self, time_s: float) -> int:
        """The micro-turn whose input window contains `time_s`."""
        return int(np.floor(time_s / self.micro_turn_s + 1e-9))

    def output_turn(self, time_s: float) -> int:
        """The micro-turn whose output is played at `time_s` (-1: before any output)."""
        return self.input_turn(time_s) - OUTPUT_DELAY_TURNS

    def input_start_s(self, turn: int) -> float:
        return turn * self.micro_turn_s

    def output_start_s(self, turn: int) -> float:
        return (turn + OUTPUT_DELAY_TURNS) * self.micro_turn_s

    # ---- slots ------------------------------------------------------------------
    @property
    def patches_per_frame(self) -> int:
        return (self.video_size // PATCH) ** 2

    def slots(self, track: Track) -> int:
        """Slots `track` takes in every micro-turn."""
        return {
            Track.USER_AUDIO: self.frames_per_turn // self.audio_group,
            Track.USER_VIDEO: self.video_frames * self.patches_per_frame if self.video_size else 0,
            Track.USER_TEXT: self.user_text_slots,
            Track.BACKGROUND: self.background_slots,
            Track.MODEL_ACTION: self.action_slots,
            Track.MODEL_TEXT: self.model_text_slots,
            Track.MODEL_AUDIO: self.frames_per_turn // self.audio_group,
        }[track]

    @property
    def slots_per_turn(self) -> int:
        return sum(self.slots(t) for t in TRACK_ORDER)

    @property
    def input_slots(self) -> int:
        return sum(self.slots(t) for t in INPUT_TRACKS)

    def track_slice(self, track: Track) -> slice:
        """Where `track` sits inside one micro-turn's block of slots."""
        start = 0
        for t in TRACK_ORDER:
            if t == track:
                return slice(start, start + self.slots(t))
            start += self.slots(t)
        raise ValueError(f"unknown track {track!r}")

    def slot_tracks(self) -> list[Track]:
        """The track of every slot of one micro-turn, in sequence order."""
        return [t for t in TRACK_ORDER for _ in range(self.slots(t))]

    def positions(self, n_turns: int, first_turn: int = 0) -> np.ndarray:
        """Sequence positions [n_turns * slots_per_turn]: they advance by the same
        amount every micro-turn, so the model can read elapsed time from them."""
        s = self.slots_per_turn
        return np.arange(first_turn * s, (first_turn + n_turns) * s, dtype=np.int64)

    def output_slots(self) -> list[tuple[Track, int]]:
        """(track, index within the track) of every output slot, in generation order."""
        return [(t, i) for t in OUTPUT_TRACKS for i in range(self.slots(t))]

    def interleave(self, per_track: dict[Track, Any], tracks: Sequence[Track] = TRACK_ORDER) -> Any:
        """Per-track arrays [N, slots(track), ...] -> one sequence [N * slots, ...].

        Works for numpy arrays and torch tensors (the model embeds each track, then
        calls this); tracks with zero slots may be left out. `tracks` may name a
        contiguous run of the order (e.g. INPUT_TRACKS: the input block of a turn).
        """
        tracks = tuple(tracks)
        start = TRACK_ORDER.index(tracks[0]) if tracks else 0
        if tracks != TRACK_ORDER[start : start + len(tracks)]:
            raise ValueError("interleave: tracks must be a contiguous run of TRACK_ORDER")
        parts = []
        n = None
        for t in tracks:
            if self.slots(t) == 0:
                continue
            if t not in per_track:
                raise ValueError(f"interleave: track {t.value} missing")
            x = per_track[t]
            if x.shape[1] != self.slots(t):
                raise ValueError(
                    f"interleave: track {t.value} has {x.shape[1]} slots, "
                    f"layout says {self.slots(t)}"
                )
            n = x.shape[0] if n is None else n
            if x.shape[0] != n:
                raise ValueError(f"interleave: track {t.value} has {x.shape[0]} turns, not {n}")
            parts.append(x)
        cat = _concat(parts, axis=1)
        return cat.reshape((n * cat.shape[1], *cat.shape[2:]))

    def split(self, sequence: Any) -> dict[Track, Any]:
        """Inverse of `interleave`: [N * slots_per_turn, ...] -> {track: [N, slots, ...]}."""
        s = self.slots_per_turn
        if sequence.shape[0] % s:
            raise ValueError(
                f"sequence of {sequence.shape[0]} slots is not a whole number of micro-turns of {s}"
            )
        blocks = sequence.reshape((sequence.shape[0] // s, s, *sequence.shape[1:]))
        return {t: blocks[:, self.track_slice(t)] for t in TRACK_ORDER}

    def describe(self) -> str:
        """One line per track: what a micro-turn of this layout holds."""
        lines = [
            f"micro-turn {self.micro_turn_ms:g} ms: {self.slots_per_turn} slots "
            f"({self.input_slots} in, {self.slots_per_turn - self.input_slots} out)"
        ]
        for t in TRACK_ORDER:
            lines.append(f"  {t.value:13s} {self.slots(t):3d} x {TRACK_KIND[t].value}")
        return "\n".join(lines)


# `tiny` fits CPU training: 21 slots per 200 ms (105 per second, 6,300 per minute).
# `base` sees the camera at 160x160 (16 patches per frame): 33 slots per 200 ms.
LAYOUTS: dict[str, Layout] = {
    "tiny": Layout(),
    "base": Layout(video_size=160),
}


def _concat(parts: Sequence[Any], axis: int) -> Any:
    if parts and type(parts[0]).__module__.startswith("torch"):
        import torch

        return torch.cat(list(parts), dim=axis)
    return np.concatenate(parts, axis=axis)


# ---------------------------------------------------------------------------------
# Slots of N micro-turns
# ---------------------------------------------------------------------------------


@dataclass
class MicroTurns:
    """N micro-turns in slot form: one array per track, the leading axis is the turn.

    Audio slots hold `audio_group` dMel frames; `*_present` flags say whether the
    input arrived (False: the model sees a "missing" marker instead).
    """

    user_audio: np.ndarray  # uint8 [N, A, k, 80]
    user_audio_present: np.ndarray  # bool [N]
    user_video: np.ndarray  # uint8 [N, V, 40, 40, 3]
    user_video_present: np.ndarray  # bool [N, video_frames]
    user_text: np.ndarray  # int32 [N, Su]
    background: np.ndarray  # int32 [N, Sb]
    model_action: np.ndarray  # int32 [N, Sa]
    model_text: np.ndarray  # int32 [N, Sm]
    model_audio: np.ndarray  # uint8 [N, A, k, 80]

    @property
    def n_turns(self) -> int:
        return int(self.user_audio.shape[0])

    def track(self, track: Track) -> np.ndarray:
        return getattr(self, track.value)

    @classmethod
    def empty(cls, layout: Layout, n: int) -> MicroTurns:
        """N micro-turns of silence, no camera, no text: PAD everywhere."""
        a, k = layout.slots(Track.USER_AUDIO), layout.audio_group
        pad = int(Special.PAD)
        frames = layout.video_frames if layout.video_size else 0
        return cls(
            user_audio=np.zeros((n, a, k, dmel.N_MELS), np.uint8),
            user_audio_present=np.ones(n, bool),
            user_video=np.zeros((n, layout.slots(Track.USER_VIDEO), PATCH, PATCH, 3), np.uint8),
            user_video_present=np.zeros((n, frames), bool),
            user_text=np.full((n, layout.user_text_slots), pad, np.int32),
            background=np.full((n, layout.background_slots), pad, np.int32),
            model_action=np.full((n, layout.action_slots), pad, np.int32),
            model_text=np.full((n, layout.model_text_slots), pad, np.int32),
            model_audio=np.zeros((n, a, k, dmel.N_MELS), np.uint8),
        )

    def validate(self, layout: Layout) -> MicroTurns:
        """Check every array against the layout; a mismatch is a ValueError naming it."""
        ref = MicroTurns.empty(layout, self.n_turns)
        for f in fields(self):
            got, want = getattr(self, f.name), getattr(ref, f.name)
            if not isinstance(got, np.ndarray):
                raise ValueError(f"{f.name}: expected a numpy array, got {type(got).__name__}")
            if got.shape != want.shape:
                raise ValueError(
                    f"{f.name}: shape {got.shape} does not match the layout {want.shape}"
                )
            if got.dtype != want.dtype:
                raise ValueError(f"{f.name}: dtype {got.dtype}, layout needs {want.dtype}")
        for name in ("user_audio", "model_audio"):
            arr = getattr(self, name)
            if arr.size and arr.max() >= dmel.N_BINS:
                raise ValueError(f"{name}: dMel bins must lie in 0..{dmel.N_BINS - 1}")
        for name in ("user_text", "background", "model_action", "model_text"):
            arr = getattr(self, name)
            if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
                raise ValueError(f"{name}: token ids must lie in 0..{VOCAB_SIZE - 1}")
        return self

    def __getitem__(self, turns: slice) -> MicroTurns:
        if not isinstance(turns, slice):
            raise TypeError("index MicroTurns with a slice of turns")
        return MicroTurns(**{f.name: getattr(self, f.name)[turns] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[MicroTurns]) -> MicroTurns:
        if not parts:
            raise ValueError("concat needs at least one MicroTurns")
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def equals(self, other: MicroTurns) -> bool:
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )


# ---------------------------------------------------------------------------------
# Packing: raw inputs of one micro-turn -> slots
# ---------------------------------------------------------------------------------


@dataclass
class TurnInput:
    """What arrived from the user's side during one micro-turn.

    `audio`: exactly `samples_per_turn` PCM samples, or None if the chunk never came.
    `video`: one frame per camera sub-slot (`video_frames`), each [size, size, 3]
    uint8, None where no frame has been seen yet. `missing`: the whole micro-turn was
    lost (the model sees MISSING markers, queued text waits for the next turn).
    """

    audio: np.ndarray | None = None
    video: list[np.ndarray | None] = field(default_factory=list)
    user_text: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    missing: bool = False


@dataclass
class TurnOutput:
    """What the model does in one micro-turn's output (reference behaviour, training).

    `audio`: the PCM it plays during [(t+1)T, (t+2)T); `text`: utterances that start
    in that window; `actions`: (kind, text) pairs, e.g. ("delegate", "what is 17*23").
    """

    audio: np.ndarray | None = None
    text: list[str] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)


class _TokenQueue:
    """FIFO of token ids drained at a fixed number of slots per micro-turn."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.pending: deque[int] = deque()

    def take(self) -> np.ndarray:
        out = np.full(self.slots, int(Special.PAD), np.int32)
        for i in range(min(self.slots, len(self.pending))):
            out[i] = self.pending.popleft()
        return out


class TurnPacker:
    """Stateful packer: one call per micro-turn, in order, for one conversation.

    Text longer than a track's slots waits in a queue and flows on in the following
    micro-turns; audio keeps 50 ms of dMel context across micro-turns.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.tokenizer = ByteTokenizer()
        self.codec = dmel.shared_codec()
        self.vision = VisionCodec(layout.video_size) if layout.video_size else None
        self._user_audio = self.codec.stream()
        self._model_audio = self.codec.stream()
        self._queues = {
            Track.USER_TEXT: _TokenQueue(layout.user_text_slots),
            Track.BACKGROUND: _TokenQueue(layout.background_slots),
            Track.MODEL_TEXT: _TokenQueue(layout.model_text_slots),
            Track.MODEL_ACTION: _TokenQueue(layout.action_slots),
        }
        self.turn = 0

    def snapshot(self) -> tuple:
        """What a micro-turn changes: the turn count, both encoders' audio context and the
        text queues. Cheap (no codec, no filterbank), for an engine's rollback."""
        return (
            self.turn,
            [(e._context.copy(), e.samples_seen) for e in (self._user_audio, self._model_audio)],
            {t: list(q.pending) for t, q in self._queues.items()},
        )

    def restore(self, snap: tuple) -> None:
        self.turn, encoders, queues = snap
        for enc, (context, seen) in zip(
            (self._user_audio, self._model_audio), encoders, strict=True
        ):
            enc._context, enc.samples_seen = context, seen
        for t, pending in queues.items():
            self._queues[t].pending = deque(pending)

    def pending_tokens(self) -> dict[Track, int]:
        """Tokens still queued per text track (they go out in later micro-turns)."""
        return {t: len(q.pending) for t, q in self._queues.items()}

    def _audio_slots(self, frames: np.ndarray) -> np.ndarray:
        lay = self.layout
        return frames.reshape(lay.slots(Track.USER_AUDIO), lay.audio_group, dmel.N_MELS)

    def _check_chunk(self, pcm: np.ndarray, what: str) -> np.ndarray:
        n = self.layout.samples_per_turn
        if pcm.shape != (n,):
            raise ValueError(f"{what}: a micro-turn needs {n} samples, got shape {pcm.shape}")
        return pcm

    def prime_model_audio(self, pcm: np.ndarray) -> None:
        """Feed the model-audio encoder the window before output 0 (context only)."""
        self._model_audio.push(self._check_chunk(pcm, "model audio"))

    def pack(self, inputs: TurnInput, outputs: TurnOutput | None = None) -> MicroTurns:
        """Slots for the next micro-turn: inputs placed, outputs from `outputs` or left
        empty (PAD / silence) for the model to generate."""
        lay = self.layout
        mt = MicroTurns.empty(lay, 1)
        q = self._queues
        for text in inputs.user_text:
            q[Track.USER_TEXT].pending.extend(self.tokenizer.encode(text, eom=True))
        for text in inputs.background:
            q[Track.BACKGROUND].pending.extend(self.tokenizer.encode(text, eom=True))
        if inputs.missing:
            # Keep the encoder's context continuous: the lost window counts as silence.
            self._user_audio.push(np.zeros(lay.samples_per_turn, np.float32))
            mt.user_audio_present[0] = False
            for track in (Track.USER_TEXT, Track.BACKGROUND):
                mt.track(track)[0] = int(Special.MISSING)
        else:
            if inputs.audio is None:
                self._user_audio.push(np.zeros(lay.samples_per_turn, np.float32))
                mt.user_audio_present[0] = False
            else:
                frames = self._user_audio.push(self._check_chunk(inputs.audio, "user audio"))
                mt.user_audio[0] = self._audio_slots(frames)
            mt.user_text[0] = q[Track.USER_TEXT].take()
            mt.background[0] = q[Track.BACKGROUND].take()
            self._place_video(inputs.video, mt)
        if outputs is not None:
            self._place_outputs(outputs, mt)
        self.turn += 1
        return mt

    def _place_video(self, video: list[np.ndarray | None], mt: MicroTurns) -> None:
        lay = self.layout
        if self.vision is None:
            if any(f is not None for f in video):
                raise ValueError("got camera frames, but this layout has no video slots")
            return
        if video and len(video) != lay.video_frames:
            raise ValueError(
                f"expected {lay.video_frames} camera frame(s) per micro-turn, got {len(video)}"
            )
        p = lay.patches_per_frame
        for i, frame in enumerate(video):
            if frame is None:
                continue
            mt.user_video[0, i * p : (i + 1) * p] = self.vision.patchify(frame)
            mt.user_video_present[0, i] = True

    def _place_outputs(self, outputs: TurnOutput, mt: MicroTurns) -> None:
        q = self._queues
        for kind, text in outputs.actions:
            if kind not in ACTIONS:
                raise ValueError(f"unknown action {kind!r}; actions: {', '.join(ACTIONS)}")
            q[Track.MODEL_ACTION].pending.append(ACTIONS[kind])
            # The action's argument (e.g. the delegated task) is written on the text track.
            q[Track.MODEL_TEXT].pending.extend(self.tokenizer.encode(text, eom=True))
        for text in outputs.text:
            q[Track.MODEL_TEXT].pending.extend(self.tokenizer.encode(text, eom=True))
        mt.model_action[0] = q[Track.MODEL_ACTION].take()
        mt.model_text[0] = q[Track.MODEL_TEXT].take()
        if outputs.audio is not None:
            frames = self._model_audio.push(self._check_chunk(outputs.audio, "model audio"))
            mt.model_audio[0] = self._audio_slots(frames)


def pack_episode(episode: Episode, layout: Layout) -> MicroTurns:
    """A whole episode -> slots of every micro-turn, through the same `TurnPacker` the
    live engine uses. The last micro-turn is completed with silence.

    Raises ValueError when the episode cannot be represented: camera frames of the
    wrong size, reference behaviour before the first output window, or text that
    does not fit in the episode's micro-turns.
    """
    n = layout.n_turns(episode.duration_s)
    spt = layout.samples_per_turn
    user = _pad_to(episode.user_audio, n * spt)
    ref = episode.reference
    ref_audio = _pad_to(ref.audio, (n + OUTPUT_DELAY_TURNS) * spt) if ref is not None else None

    by_turn_text = _group(episode.user_text, layout.input_turn)
    by_turn_bg = _group(episode.background, layout.input_turn)
    out_text: dict[int, list[str]] = {}
    out_actions: dict[int, list[tuple[str, str]]] = {}
    if ref is not None:
        for seg in ref.speech:
            turn = text_turn(layout, ref.audio, seg.start_s)
            out_text.setdefault(turn, []).append(seg.text)
        for act in ref.actions:
            out_actions.setdefault(_output_turn(layout, act.time_s, "action"), []).append(
                (act.kind, act.text)
            )
    video_at = _video_sampler(episode, layout)

    packer = TurnPacker(layout)
    if ref_audio is not None:
        first = ref_audio[:spt]
        if first.size and np.max(np.abs(first)) > 1e-3:
            raise ValueError(
                "reference audio is not silent in the first micro-turn: the model cannot "
                "speak before it has heard one micro-turn"
            )
        packer.prime_model_audio(first)
    turns = []
    for t in range(n):
        inputs = TurnInput(
            audio=user[t * spt : (t + 1) * spt],
            video=video_at(t),
            user_text=by_turn_text.get(t, []),
            background=by_turn_bg.get(t, []),
        )
        outputs = None
        if ref_audio is not None:
            start = (t + OUTPUT_DELAY_TURNS) * spt
            outputs = TurnOutput(
                audio=ref_audio[start : start + spt],
                text=out_text.get(t, []),
                actions=out_actions.get(t, []),
            )
        turns.append(packer.pack(inputs, outputs))
    left = {t.value: k for t, k in packer.pending_tokens().items() if k}
    if left:
        raise ValueError(
            f"text does not fit in the episode's {n} micro-turns; tokens left over: {left}"
        )
    return MicroTurns.concat(turns)


@dataclass
class Unpacked:
    """Micro-turn slots read back as tracks with times (for tests, plots, and engines)."""

    user_audio: np.ndarray  # dMel bins [N * frames_per_turn, 80]
    user_video: list[tuple[float, np.ndarray]]  # (time of the sub-slot, frame)
    user_text: list[TextEvent]  # time = start of the micro-turn its first byte arrived in
    background: list[TextEvent]
    model_text: list[TextEvent]  # time = when the output micro-turn is played
    model_actions: list[ActionEvent]
    model_audio: np.ndarray  # dMel bins [N * frames_per_turn, 80], played from output_start_s(0)


def unpack(turns: MicroTurns, layout: Layout) -> Unpacked:
    """Read slots back into timed tracks; inverse of packing up to micro-turn resolution."""
    turns.validate(layout)
    n = turns.n_turns
    video: list[tuple[float, np.ndarray]] = []
    if layout.video_size:
        vision = VisionCodec(layout.video_size)
        p = layout.patches_per_frame
        for t in range(n):
            for i in range(layout.video_frames):
                if turns.user_video_present[t, i]:
                    frame = vision.unpatchify(turns.user_video[t, i * p : (i + 1) * p])
                    video.append(
                        (
                            layout.input_start_s(t) + i * layout.micro_turn_s / layout.video_frames,
                            frame,
                        )
                    )
    model_text = _read_messages(turns.model_text, layout.output_start_s)
    actions: list[ActionEvent] = []
    for t in range(n):
        for tok in turns.model_action[t]:
            if int(tok) in ACTION_NAMES:
                actions.append(ActionEvent(layout.output_start_s(t), ACTION_NAMES[int(tok)]))
    # An action's argument is the next message on the text track at or after the action.
    for i, act in enumerate(actions):
        arg = next((m for m in model_text if m.time_s >= act.time_s - 1e-9), None)
        if arg is not None:
            model_text.remove(arg)
            actions[i] = ActionEvent(act.time_s, act.kind, arg.text)
    return Unpacked(
        user_audio=turns.user_audio.reshape(-1, dmel.N_MELS),
        user_video=video,
        user_text=_read_messages(turns.user_text, layout.input_start_s),
        background=_read_messages(turns.background, layout.input_start_s),
        model_text=model_text,
        model_actions=actions,
        model_audio=turns.model_audio.reshape(-1, dmel.N_MELS),
    )


def _read_messages(tokens: np.ndarray, turn_time: Any) -> list[TextEvent]:
    reader = MessageReader()
    messages = [m for t in range(tokens.shape[0]) for m in reader.feed(tokens[t], t)]
    if (tail := reader.unfinished()) is not None:
        messages.append(tail)
    return [TextEvent(turn_time(start), text) for start, text in messages]


def _pad_to(pcm: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: min(n, pcm.size)] = pcm[:n]
    return out


def _group(events: list[TextEvent], turn_of: Any) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for e in sorted(events, key=lambda e: e.time_s):
        grouped.setdefault(turn_of(e.time_s), []).append(e.text)
    return grouped


TEXT_LEAD_MAX_S = 0.5
LEAD_IN_DBFS = -85.0  # a synthesizer's lead-in noise (~-65 dBFS) already counts as sound


def _sound_onset(audio: np.ndarray, start_s: float) -> float:
    """When an utterance whose first word starts at `start_s` starts to sound: a
    synthesizer's lead-in (flite: ~200 ms of noise at about -65 dBFS, which dMel bins
    see) can start a few hundred ms before its first word's time.
    Text is written in the micro-turn where the sound starts, so it never trails the
    audio (the model then decides to speak on the text track, not the audio track)."""
    lo = max(0.0, start_s - TEXT_LEAD_MAX_S)
    a, b = round(lo * SAMPLE_RATE), round(start_s * SAMPLE_RATE)
    active = np.flatnonzero(audible_frames(audio[a:b], LEAD_IN_DBFS))
    if not active.size:
        return start_s
    return max(lo, a / SAMPLE_RATE + active[0] * ACTIVITY_FRAME / SAMPLE_RATE)


def text_turn(layout: Layout, audio: np.ndarray, start_s: float) -> int:
    """The output micro-turn where packing puts the text of reference speech whose first
    word starts at `start_s` (`audio`: the whole reference track): where it sounds."""
    return _output_turn(layout, _sound_onset(audio, start_s), "speech")


def written_before(layout: Layout, text: str, audio: np.ndarray, start_s: float, turn: int) -> str:
    """The head of `text` (reference speech from `start_s`, `audio` the whole reference
    track) that packing writes in output micro-turns before `turn`, the text track being
    free when it starts. Why: text runs ahead of its sound (20 bytes/s against ~15), so
    a message cut short by something the model learns of at `turn` was written up to
    there, not up to its last spoken word."""
    free = max(0, turn - text_turn(layout, audio, start_s)) * layout.slots(Track.MODEL_TEXT)
    raw = text.encode("utf-8")
    while free < len(raw):  # a character cut in two is finished: EOM later, never sooner
        try:
            return raw[:free].decode("utf-8")
        except UnicodeDecodeError:
            free += 1
    return text


def _output_turn(layout: Layout, time_s: float, what: str) -> int:
    turn = layout.output_turn(time_s)
    if turn < 0:
        raise ValueError(
            f"reference {what} at {time_s:.3f} s starts before the first output window "
            f"({layout.output_start_s(0):.3f} s)"
        )
    return turn


def _video_sampler(episode: Episode, layout: Layout) -> Any:
    """For micro-turn t, the latest frame shown before each camera sub-slot ends."""
    track = episode.user_video
    if track is None:
        return lambda t: []
    if not layout.video_size:
        raise ValueError("episode has camera frames, but the layout has no video slots")
    size = layout.video_size
    if track.frames.shape[1:3] != (size, size):
        raise ValueError(
            f"camera frames are {track.frames.shape[2]}x{track.frames.shape[1]}, the layout "
            f"needs {size}x{size}; fit them on purpose with VisionCodec({size}).fit_track()"
        )
    sub = layout.micro_turn_s / layout.video_frames

    def frames_for(t: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for i in range(layout.video_frames):
            end = layout.input_start_s(t) + (i + 1) * sub
            idx = int(np.searchsorted(track.times_s, end - 1e-9, side="left")) - 1
            out.append(track.frames[idx] if idx >= 0 else None)
        return out

    return frames_for

"""Hand-made episodes for tests: exact, small, no synthesis needed."""

from __future__ import annotations

from typing import Any

import numpy as np

from microturn.stream.episode import (
    ActionEvent,
    Episode,
    Event,
    Reference,
    SpeechSegment,
    TextEvent,
    VideoTrack,
    Word,
)


def tone(
    seconds: float,
    freq: float = 220.0,
    amp: float = 0.3,
    start_s: float = 0.0,
    total_s: float | None = None,
) -> np.ndarray:
    """A sine burst placed at `start_s` inside silence of `total_s` seconds."""
    total = total_s if total_s is not None else start_s + seconds
    out = np.zeros(round(total * 16000), np.float32)
    t = np.arange(round(seconds * 16000)) / 16000
    a = round(start_s * 16000)
    out[a : a + t.size] = amp * np.sin(2 * np.pi * freq * t)
    return out


def full_episode(size: int = 80, seconds: float = 3.1) -> Episode:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    return Episode(
        id="ep-1",
        scenario="unit",
        split="eval",
        seed=7,
        user_audio=tone(1.0, start_s=0.1, total_s=seconds),
        user_video=VideoTrack(frames, np.array([0.0, 0.5, 0.55, 1.3, 2.9])),
        user_text=[TextEvent(0.45, "hello there"), TextEvent(1.95, "über")],
        background=[TextEvent(2.2, "391")],
        user_speech=[
            SpeechSegment(0.1, 1.1, "la la", (Word("la", 0.1, 0.5), Word("la", 0.6, 1.1)))
        ],
        events=[Event(1.1, "user_turn_end", {"n": 4})],
        reference=Reference(
            audio=tone(0.8, freq=330, start_s=1.4, total_s=seconds),
            speech=[SpeechSegment(1.4, 2.2, "sure thing")],
            actions=[ActionEvent(2.4, "delegate", "what is 17 * 23")],
        ),
        meta={"wording": 2},
    )


def assert_replies_follow_their_causes(episode: Episode, turns: Any, layout: Any) -> None:
    """Every cause of the episode has a reference reply, decided no earlier than the
    cause: the data never asks the model to answer what it has not yet heard or seen."""
    from microturn.train.data import REPLY_CAUSES, reply_slacks

    slacks = reply_slacks(episode, turns, layout)
    assert len(slacks) == sum(e.kind in REPLY_CAUSES for e in episode.events), episode.id
    for kind, slack in slacks:
        assert slack >= -1e-6, (episode.id, kind, slack)

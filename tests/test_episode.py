import json

import numpy as np
import pytest

from microturn.stream.episode import (
    ActionEvent,
    Episode,
    Reference,
    SpeechSegment,
    TextEvent,
    Timeline,
    TurnRecord,
    VideoTrack,
)
from tests.helpers import full_episode, tone


def assert_same_episode(a: Episode, b: Episode) -> None:
    assert np.array_equal(a.user_audio, b.user_audio)
    assert np.array_equal(a.user_video.frames, b.user_video.frames)
    assert np.array_equal(a.user_video.times_s, b.user_video.times_s)
    assert np.array_equal(a.reference.audio, b.reference.audio)
    for name in (
        "id",
        "scenario",
        "split",
        "seed",
        "user_text",
        "background",
        "user_speech",
        "events",
        "meta",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert a.reference.speech == b.reference.speech
    assert a.reference.actions == b.reference.actions


def test_episode_json_round_trip(tmp_path) -> None:
    ep = full_episode()
    assert_same_episode(ep, Episode.from_json(ep.to_json()))
    ep.save(tmp_path / "e.json")
    assert_same_episode(ep, Episode.load(tmp_path / "e.json"))
    d = json.loads(ep.to_json())
    assert d["schema"] == "microturn.episode/1" and d["duration_s"] == pytest.approx(3.1)


def test_minimal_episode_round_trip() -> None:
    ep = Episode(id="x", scenario="s", user_audio=tone(0.5))
    back = Episode.from_json(ep.to_json())
    assert back.user_video is None and back.reference is None
    assert np.array_equal(back.user_audio, ep.user_audio)


def test_timeline_json_round_trip(tmp_path) -> None:
    tl = Timeline(
        system="cascade",
        micro_turn_s=0.2,
        episode_id="ep-1",
        speech=[SpeechSegment(1.0, 2.5, "breathe in")],
        actions=[ActionEvent(3.0, "delegate", "17*23", {"thinker": "tools"})],
        turns=[TurnRecord(0, 0.0, 3.5, 0.2), TurnRecord(1, 0.2, 3.1, 0.0, ("user_audio",))],
        meta={"note": "x"},
    )
    back = Timeline.from_json(tl.to_json())
    assert back == tl
    tl.save(tmp_path / "t.json")
    assert Timeline.load(tmp_path / "t.json") == tl


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: Episode(
                id="x", scenario="s", user_audio=tone(1.0), user_text=[TextEvent(1.5, "late")]
            ),
            "after the episode's end",
        ),
        (lambda: TextEvent(float("nan"), "x"), "finite"),
        (lambda: TextEvent(-1.0, "x"), "non-negative"),
        (lambda: SpeechSegment(2.0, 1.0, "x"), "before it starts"),
        (lambda: Episode(id="x", scenario="s", user_audio=np.zeros(0, np.float32)), "empty"),
        (lambda: Episode(id="x", scenario="s", user_audio=np.zeros((2, 100), np.float32)), "mono"),
        (lambda: VideoTrack(np.zeros((2, 8, 8, 3), np.float32), [0, 1]), "uint8"),
        (lambda: VideoTrack(np.zeros((2, 8, 8, 4), np.uint8), [0, 1]), "RGB"),
        (lambda: VideoTrack(np.zeros((2, 8, 8, 3), np.uint8), [1, 0]), "increasing"),
        (lambda: VideoTrack(np.zeros((2, 8, 8, 3), np.uint8), [0]), "times"),
        (
            lambda: Episode(
                id="x", scenario="s", user_audio=tone(1.0), reference=Reference(tone(0.5))
            ),
            "span the episode",
        ),
        (lambda: ActionEvent(0.0, ""), "kind"),
        (lambda: Timeline(system="x", micro_turn_s=0.0), "micro_turn_s"),
    ],
)
def test_bad_values_are_clear_errors(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"schema": "other/1"}', "schema"),
        ('{"schema": "microturn.episode/1", "id": "x"}', "malformed"),
    ],
)
def test_malformed_episode_json(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Episode.from_json(text)


def test_corrupt_array_in_json() -> None:
    d = json.loads(full_episode().to_json())
    d["user_audio"]["base64"] = "!!!notbase64"
    with pytest.raises(ValueError, match="malformed array"):
        Episode.from_dict(d)
    d = json.loads(full_episode().to_json())
    d["user_audio"]["shape"] = [7]
    with pytest.raises(ValueError, match="malformed array"):
        Episode.from_dict(d)
    d = json.loads(full_episode().to_json())
    d["user_audio"]["dtype"] = "object"
    with pytest.raises(ValueError):
        Episode.from_dict(d)


def test_malformed_timeline_json() -> None:
    with pytest.raises(ValueError, match="malformed"):
        Timeline.from_json('{"schema": "microturn.timeline/1", "system": "x"}')

import numpy as np
import pytest
import torch

from microturn.codecs import dmel
from microturn.codecs.dmel import DMelCodec
from microturn.codecs.text import ByteTokenizer, Special
from microturn.stream.episode import Episode, Reference, SpeechSegment, TextEvent, VideoTrack
from microturn.stream.layout import (
    TRACK_ORDER,
    Layout,
    MicroTurns,
    Track,
    TurnInput,
    TurnPacker,
    pack_episode,
    parse_track,
    unpack,
    written_before,
)
from tests.helpers import full_episode, tone

TINY = Layout.preset("tiny")


def test_tiny_budget() -> None:
    assert TINY.slots_per_turn == 21 <= 30
    assert TINY.frames_per_turn == 16 and TINY.slots(Track.USER_AUDIO) == 4
    assert TINY.slots(Track.USER_VIDEO) == 4  # 80x80 -> 2x2 patches
    assert Layout.preset("base").slots_per_turn == 33
    assert "user_audio" in TINY.describe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"micro_turn_ms": 30}, r"\[40, 1000\]"),
        ({"micro_turn_ms": 1100}, r"\[40, 1000\]"),
        ({"micro_turn_ms": 40}, "whole number of audio slots"),
        ({"micro_turn_ms": 210}, "whole number of audio slots"),
        ({"video_size": 100}, "multiple of 40"),
        ({"audio_group": 0}, "audio_group"),
        ({"model_text_slots": 0}, "model_text_slots"),
    ],
)
def test_bad_layouts(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Layout(**kwargs)


@pytest.mark.parametrize("ms", [50, 100, 400, 1000])
def test_other_micro_turn_durations(ms: float) -> None:
    lay = Layout(micro_turn_ms=ms)
    assert lay.slots(Track.USER_AUDIO) * lay.audio_group * dmel.HOP == lay.samples_per_turn


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown track 'user_smell'"):
        parse_track("user_smell")
    with pytest.raises(ValueError, match="unknown layout"):
        Layout.preset("huge")
    with pytest.raises(ValueError, match="unknown layout fields"):
        Layout.from_dict({"micro_turn_ms": 200, "smell_slots": 2})
    assert Layout.from_dict(TINY.to_dict()) == TINY


def test_slot_order_and_positions() -> None:
    tracks = TINY.slot_tracks()
    assert len(tracks) == TINY.slots_per_turn
    assert tracks[0] == Track.USER_AUDIO and tracks[-1] == Track.MODEL_AUDIO
    # inputs come before outputs in every micro-turn
    first_out = tracks.index(Track.MODEL_ACTION)
    assert set(tracks[:first_out]) == {
        Track.USER_AUDIO,
        Track.USER_VIDEO,
        Track.USER_TEXT,
        Track.BACKGROUND,
    }
    pos = TINY.positions(3, first_turn=5)
    assert pos[0] == 5 * 21 and np.all(np.diff(pos) == 1) and pos.size == 63


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_interleave_then_split_is_identity(backend: str) -> None:
    rng = np.random.default_rng(1)
    per = {t: rng.normal(size=(3, TINY.slots(t), 8)).astype(np.float32) for t in TRACK_ORDER}
    if backend == "torch":
        per = {t: torch.from_numpy(x) for t, x in per.items()}
    seq = TINY.interleave(per)
    assert tuple(seq.shape) == (3 * 21, 8)
    # slot 0 of turn 1 is user audio slot 0 of turn 1
    assert np.allclose(np.asarray(seq[21]), np.asarray(per[Track.USER_AUDIO][1, 0]))
    back = TINY.split(seq)
    for t in TRACK_ORDER:
        assert np.array_equal(np.asarray(back[t]), np.asarray(per[t]))


def test_interleave_rejects_mismatches() -> None:
    per = {t: np.zeros((2, TINY.slots(t))) for t in TRACK_ORDER}
    per[Track.MODEL_TEXT] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="model_text has 3 slots"):
        TINY.interleave(per)
    with pytest.raises(ValueError, match="whole number of micro-turns"):
        TINY.split(np.zeros(22))


def test_pack_then_unpack_is_identity() -> None:
    ep = full_episode()
    turns = pack_episode(ep, TINY).validate(TINY)
    assert turns.n_turns == 16  # 3.1 s -> 16 micro-turns of 0.2 s
    back = unpack(turns, TINY)
    codec = DMelCodec()
    padded = np.zeros(16 * 3200, np.float32)
    padded[: ep.user_audio.size] = ep.user_audio
    assert np.array_equal(back.user_audio, codec.encode(padded))
    # model audio of output t is the reference during [(t+1)T, (t+2)T)
    ref = np.zeros(17 * 3200, np.float32)
    ref[: ep.reference.audio.size] = ep.reference.audio
    assert np.array_equal(back.model_audio, codec.encode(ref)[16:])
    q = TINY.micro_turn_s
    assert back.user_text == [TextEvent(2 * q, "hello there"), TextEvent(9 * q, "über")]
    assert back.background == [TextEvent(11 * q, "391")]
    assert [(m.time_s, m.text) for m in back.model_text] == [(pytest.approx(1.4), "sure thing")]
    assert [(a.time_s, a.kind, a.text) for a in back.model_actions] == [
        (pytest.approx(2.4), "delegate", "what is 17 * 23")
    ]
    # video: latest frame shown before each micro-turn ends
    times = [round(t, 6) for t, _ in back.user_video]
    assert times == [round(t * q, 6) for t in range(16)]
    expect_idx = [0, 0, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4]
    for (_, frame), idx in zip(back.user_video, expect_idx, strict=True):
        assert np.array_equal(frame, ep.user_video.frames[idx])


def test_long_text_flows_over_following_turns() -> None:
    ep = Episode(id="x", scenario="s", user_audio=tone(1.0), user_text=[TextEvent(0.0, "abcdefg")])
    turns = pack_episode(ep, TINY)
    tok = ByteTokenizer()
    assert tok.decode(turns.user_text[0]) == "ab" and tok.decode(turns.user_text[3]) == "g"
    assert turns.user_text[3, 1] == Special.EOM and turns.user_text[4, 0] == Special.PAD


def test_text_that_cannot_fit_is_an_error() -> None:
    ep = Episode(id="x", scenario="s", user_audio=tone(0.4), user_text=[TextEvent(0.1, "x" * 20)])
    with pytest.raises(ValueError, match="does not fit"):
        pack_episode(ep, TINY)


def test_reference_before_first_output_is_an_error() -> None:
    early = Reference(tone(1.0), speech=[SpeechSegment(0.1, 0.5, "hi")])
    ep = Episode(id="x", scenario="s", user_audio=tone(1.0), reference=early)
    with pytest.raises(ValueError, match="before the first output window"):
        pack_episode(ep, TINY)
    loud = Reference(tone(1.0, amp=0.5))
    ep = Episode(id="x", scenario="s", user_audio=tone(1.0), reference=loud)
    with pytest.raises(ValueError, match="not silent in the first micro-turn"):
        pack_episode(ep, TINY)


def test_wrong_video_size_and_no_video_layout() -> None:
    ep = full_episode(size=120)
    with pytest.raises(ValueError, match=r"120x120.*fit_track"):
        pack_episode(ep, TINY)
    with pytest.raises(ValueError, match="no video slots"):
        pack_episode(full_episode(), Layout(video_size=0))


def test_live_packing_matches_episode_packing() -> None:
    """The live path (one micro-turn at a time) gives the same slots as a whole episode."""
    ep = Episode(
        id="x",
        scenario="s",
        user_audio=tone(1.0, start_s=0.2, total_s=2.0),
        user_text=[TextEvent(0.5, "hey you")],
    )
    whole = pack_episode(ep, TINY)
    packer = TurnPacker(TINY)
    live = []
    for t in range(whole.n_turns):
        chunk = ep.user_audio[t * 3200 : (t + 1) * 3200]
        live.append(packer.pack(TurnInput(audio=chunk, user_text=["hey you"] if t == 2 else [])))
    assert MicroTurns.concat(live).equals(whole)


def test_missing_turn_markers() -> None:
    packer = TurnPacker(TINY)
    packer.pack(TurnInput(audio=np.zeros(3200, np.float32), user_text=["abcd"]))
    lost = packer.pack(TurnInput(missing=True))
    assert not lost.user_audio_present[0] and not lost.user_video_present.any()
    assert (lost.user_text == Special.MISSING).all() and (lost.background == Special.MISSING).all()
    after = packer.pack(TurnInput(audio=np.zeros(3200, np.float32)))
    assert ByteTokenizer().decode(after.user_text[0]) == "cd"  # queued text waited


def test_bad_chunks_and_frames() -> None:
    packer = TurnPacker(TINY)
    with pytest.raises(ValueError, match="needs 3200 samples"):
        packer.pack(TurnInput(audio=np.zeros(3000, np.float32)))
    with pytest.raises(ValueError, match="camera frame"):
        packer.pack(
            TurnInput(audio=np.zeros(3200, np.float32), video=[np.zeros((80, 80, 3), np.uint8)] * 2)
        )
    with pytest.raises(ValueError):
        packer.pack(
            TurnInput(audio=np.zeros(3200, np.float32), video=[np.zeros((80, 80, 4), np.uint8)])
        )
    with pytest.raises(ValueError, match="unknown action"):
        from microturn.stream.layout import TurnOutput

        packer.pack(
            TurnInput(audio=np.zeros(3200, np.float32)),
            TurnOutput(audio=np.zeros(3200, np.float32), actions=[("dance", "")]),
        )


def test_microturns_validate() -> None:
    mt = MicroTurns.empty(TINY, 2)
    mt.validate(TINY)
    bad = MicroTurns.empty(TINY, 2)
    bad.model_text = np.zeros((2, 5), np.int32)
    with pytest.raises(ValueError, match="model_text: shape"):
        bad.validate(TINY)
    bad = MicroTurns.empty(TINY, 2)
    bad.user_text = bad.user_text.astype(np.int64)
    with pytest.raises(ValueError, match="dtype"):
        bad.validate(TINY)
    bad = MicroTurns.empty(TINY, 2)
    bad.user_audio[0, 0, 0, 0] = 16
    with pytest.raises(ValueError, match="dMel bins"):
        bad.validate(TINY)
    bad = MicroTurns.empty(TINY, 2)
    bad.model_text[0, 0] = 9999
    with pytest.raises(ValueError, match="token ids"):
        bad.validate(TINY)
    assert MicroTurns.concat([mt, mt])[1:3].n_turns == 2


def test_video_sub_slots() -> None:
    lay = Layout(video_frames=2)
    frames = np.stack([np.full((80, 80, 3), i * 40, np.uint8) for i in range(3)])
    ep = Episode(
        id="x", scenario="s", user_audio=tone(0.6), user_video=VideoTrack(frames, [0.0, 0.15, 0.35])
    )
    turns = pack_episode(ep, lay)
    assert turns.user_video_present.tolist() == [[True, True], [True, True], [True, True]]
    # micro-turn 0: sub-slot ends at 0.1 -> frame 0, at 0.2 -> frame 1
    assert turns.user_video[0, 0].max() == 0 and turns.user_video[0, 4].min() == 40
    assert turns.user_video[1, 4].min() == 80  # 0.4 s -> frame 2


def test_text_starts_where_its_sound_starts() -> None:
    """A synthesizer's quiet lead-in sounds before the first word's time: the text must
    not trail the audio, or a model learns to start speaking on the audio track."""
    from microturn.scenarios import get

    layout = Layout.preset("tiny")
    onsets = with_text = 0
    for seed in range(3):
        turns = pack_episode(get("turn_taking").generate(seed, "train", "speech"), layout)
        text = (turns.model_text != Special.PAD).any(1)
        sound = turns.model_audio.reshape(turns.n_turns, -1).max(1) > 0
        for t in range(1, turns.n_turns):
            if sound[t] and not sound[t - 1]:
                onsets += 1
                with_text += bool(text[t])
    assert onsets >= 3 and with_text == onsets


def test_written_before_is_the_text_packed_before_a_turn() -> None:
    """4 text slots a micro-turn from where the sound starts: a silent track from 1.0 s
    puts the text in output turn 4, so 8 bytes go out before turn 6; a character cut in
    two is finished (its EOM later, never sooner); short text is whole."""
    lay = Layout.preset("tiny")
    silent = np.zeros(3 * 16000, np.float32)
    assert written_before(lay, "abcdefghijkl", silent, 1.0, 6) == "abcdefgh"
    assert written_before(lay, "abcdefgé xyz", silent, 1.0, 6) == "abcdefgé"
    assert written_before(lay, "abc", silent, 1.0, 6) == "abc"
    assert written_before(lay, "abcdefghijkl", silent, 1.0, 3) == ""

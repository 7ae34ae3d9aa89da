"""Training-time evaluation: the stored evaluation set, free running, the text-view
timeline read off the model's tracks, and the headline score."""

from __future__ import annotations

import gzip
import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from microturn.codecs.text import Special
from microturn.codecs.vision import VisionCodec
from microturn.model import InteractionModel, ModelConfig
from microturn.scenarios import get
from microturn.scenarios.scoring import headline
from microturn.stream.layout import INPUT_TRACKS, Layout, MicroTurns, pack_episode
from microturn.train.evaluate import (
    EPISODES_FILE,
    TURNS_FILE,
    StartOdds,
    driver_for,
    free_run,
    load_eval_set,
    slot_tally,
    start_odds,
    timeline_of,
    write_eval_set,
)

TINY = Layout.preset("tiny")
SCENARIOS = ["time_awareness", "delegation", "proactive_vision"]
INPUT_FIELDS = [t.value for t in INPUT_TRACKS] + ["user_audio_present", "user_video_present"]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return write_eval_set(tmp_path_factory.mktemp("eval"), SCENARIOS, 1, TINY)


@pytest.fixture(scope="module")
def eval_set(eval_dir):
    return load_eval_set(eval_dir, TINY)


# ---- the stored set ----------------------------------------------------------------


def test_eval_set_round_trip(eval_set) -> None:
    assert [ep.scenario for ep, _ in eval_set] == SCENARIOS
    for ep, turns in eval_set:
        want = get(ep.scenario).generate(0, "eval", driver_for(0))
        assert ep.id == want.id and ep.split == "eval" and ep.seed == want.seed
        assert ep.events == want.events and ep.meta == want.meta
        assert ep.user_speech == want.user_speech and ep.user_text == want.user_text
        assert ep.background == want.background
        # media blanked: same length, silent, no camera; reference times and words kept
        assert ep.duration_s == want.duration_s and not ep.user_audio.any()
        assert ep.user_video is None
        if want.reference is not None:
            assert not ep.reference.audio.any()
            assert ep.reference.audio.shape == want.reference.audio.shape
            assert ep.reference.speech == want.reference.speech
            assert ep.reference.actions == want.reference.actions
        # the packed turns are the episode's own, with its real audio and camera
        packed = want
        if want.user_video is not None:
            packed = replace(want, user_video=VisionCodec(80).fit_track(want.user_video))
        assert turns.equals(pack_episode(packed, TINY))
        assert turns.n_turns == TINY.n_turns(ep.duration_s)
        assert turns.user_audio.any()
        assert turns.user_video_present.any() == (ep.scenario == "proactive_vision")


def test_eval_set_without_camera_slots(tmp_path) -> None:
    """A layout without camera slots evaluates a camera scenario blind (as training
    data does) instead of failing."""
    blind = Layout(video_size=0)
    path = write_eval_set(tmp_path / "blind", ["proactive_vision"], 1, blind)
    [(ep, turns)] = load_eval_set(path, blind)
    assert ep.scenario == "proactive_vision" and ep.user_video is None
    assert turns.user_video.shape[1] == 0 and turns.user_video_present.shape[1] == 0
    assert turns.user_audio.any()


def test_load_eval_set_errors(eval_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="not an evaluation set"):
        load_eval_set(tmp_path, TINY)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / TURNS_FILE).write_bytes((eval_dir / TURNS_FILE).read_bytes())
    with gzip.open(eval_dir / EPISODES_FILE, "rt") as f:
        episodes = json.load(f)
    with gzip.open(broken / EPISODES_FILE, "wt") as f:
        json.dump(episodes[:1], f)
    with pytest.raises(ValueError, match="1 episodes but 3 packed"):
        load_eval_set(broken, TINY)


# ---- the timeline read off the model's tracks ------------------------------------


def _written(n: int) -> MicroTurns:
    """Hand-made model outputs on tiny's 200 ms micro-turns (output t plays from
    (t + 1) * 0.2 s, 16 dMel frames of 12.5 ms each)."""
    turns = MicroTurns.empty(TINY, n)
    eom = int(Special.EOM)

    def write(t: int, text: bytes, end: bool = False) -> None:
        ids = list(text) + ([eom] if end else [])
        turns.model_text[t, : len(ids)] = ids

    turns.model_audio[5:10] = 9  # loud: speech from 1.2 s to 2.2 s
    write(5, b"hi ")  # 4 text slots per micro-turn: a message spans several
    write(6, b"the")
    write(7, b"re", end=True)
    turns.model_audio[12:14] = 3  # below the speech bin: quiet, not speech
    turns.model_action[12, 0] = int(Special.DELEGATE)  # played at 2.6 s
    write(13, b"2+2", end=True)  # its task: handed to a thinker, never said
    turns.model_audio[15:17, 2:] = 4  # the second half of two turns, just loud enough
    write(18, b"ok", end=True)  # written, never voiced
    return turns


def test_timeline_of_reads_speech_text_and_actions() -> None:
    turns = _written(20)
    tl = timeline_of(turns, TINY, "ep-7")
    assert tl.episode_id == "ep-7" and tl.micro_turn_s == pytest.approx(0.2)
    assert [(s.start_s, s.end_s, s.text) for s in tl.speech] == [
        (pytest.approx(1.2), pytest.approx(2.2), "hi there"),
        (pytest.approx(3.3), pytest.approx(3.6), ""),
        (pytest.approx(3.8), pytest.approx(3.8), "ok"),
    ]
    assert [(a.time_s, a.kind) for a in tl.actions] == [(pytest.approx(2.6), "delegate")]
    # without the delegate action, its task would be speech
    turns.model_action[12, 0] = int(Special.PAD)
    assert "2+2" in [s.text for s in timeline_of(turns, TINY).speech]
    turns.model_action[12, 0] = int(Special.DELEGATE)
    # a task still being written is no speech either
    partial = _written(20)
    partial.model_text[13] = [ord("2"), ord("+"), int(Special.PAD), int(Special.PAD)]
    partial.model_text[18] = int(Special.PAD)
    assert [s.text for s in timeline_of(partial, TINY).speech] == ["hi there", ""]
    # a message that ends and one that starts in the same micro-turn stay two
    turns.model_text[18] = [ord("o"), ord("k"), int(Special.EOM), ord("y")]
    said = [s.text for s in timeline_of(turns, TINY).speech]
    assert said[-2:] == ["ok", "y"]
    # silence only: nothing said, nothing done
    quiet = timeline_of(MicroTurns.empty(TINY, 10), TINY)
    assert quiet.speech == [] and quiet.actions == []


# ---- free running ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> InteractionModel:
    torch.manual_seed(0)
    return InteractionModel(ModelConfig.preset("tiny"))


def test_free_run_keeps_inputs_and_lengths(model, eval_set) -> None:
    inputs = [eval_set[0][1][:9], eval_set[2][1][:5]]  # different lengths, one with camera
    copies = [MicroTurns.concat([t]) for t in inputs]
    model.train()
    out = free_run(model, inputs, seeds=[1, 2])
    assert model.training  # the mode it had before
    assert [t.n_turns for t in out] == [9, 5]
    for got, given, copy in zip(out, inputs, copies, strict=True):
        assert given.equals(copy)  # the inputs were not written into
        got.validate(TINY)  # shapes, dtypes and value ranges of the layout
        for name in INPUT_FIELDS:
            assert np.array_equal(getattr(got, name), getattr(given, name)), name
    # the model wrote its own outputs: an untrained model does not write only padding
    assert any(
        not np.array_equal(o.model_text, i.model_text) for o, i in zip(out, inputs, strict=True)
    )


def test_free_run_is_deterministic_per_seed(model, eval_set) -> None:
    inputs = [eval_set[0][1][:6], eval_set[1][1][:4]]
    a = free_run(model, inputs, seeds=[3, 4])
    b = free_run(model, inputs, seeds=[3, 4])
    c = free_run(model, inputs, seeds=[5, 6])
    for x, y in zip(a, b, strict=True):
        assert x.equals(y)
    outputs = ("model_text", "model_action", "model_audio")
    assert any(
        not np.array_equal(getattr(x, k), getattr(y, k))
        for x, y in zip(a, c, strict=True)
        for k in outputs
    )
    assert {f.name for f in fields(MicroTurns)} == {*INPUT_FIELDS, *outputs}


def test_start_odds_arithmetic() -> None:
    """Odds of a start count decisions only, stop at the reference's own start, and
    quiet runs from the end of the reference's last message."""
    odds = StartOdds(
        p_quiet=np.full(6, 0.5),
        deciding=np.array([1, 1, 0, 0, 1, 1], bool),  # a reference message open at 2, 3
        writes=np.array([0, 1, 1, 1, 0, 0], bool),  # it starts at 1
        times_s=np.arange(6.0),
    )
    assert odds.odds_of_start(0, 6) == 0.75  # decisions 0 and 1, then the reference speaks
    assert odds.odds_of_start(4, 6) == 0.75  # decisions 4 and 5
    assert odds.odds_of_start(2, 4) is None  # no decision in the window
    assert odds.quiet_since_last_message(5.5) == 0.25  # 4 and 5, after the message
    assert odds.quiet_since_last_message(1.5) == 0.25  # 0 and 1, no message before


def test_start_odds_of_a_recorded_episode(model, eval_set) -> None:
    ep, turns = eval_set[0]  # time awareness: the reference acknowledges and says cues
    odds = start_odds(model.eval(), turns)
    assert odds.p_quiet.shape == odds.deciding.shape == (turns.n_turns,)
    assert ((odds.p_quiet > 0) & (odds.p_quiet < 1)).all()
    assert odds.deciding[0] and not odds.deciding.all()  # quiet at first, then speaking
    assert odds.writes.sum() >= len(ep.reference.speech)  # a start per message at least
    assert np.allclose(np.diff(odds.times_s), TINY.micro_turn_s)


# ---- the headline figure -----------------------------------------------------------


def test_headline() -> None:
    scores = {
        "turn_taking": {"turn_tor": 0.9, "pause_tor": 0.2},  # 0.7
        "interruption": {"stop_rate_0_5s": None},  # no applicable episode: 0
        "backchannel": {"reply_rate": 0.5, "takeover_rate": 0.75},  # -0.25
        "time_awareness": {"macro_accuracy": 0.5, "countdown_accuracy": None},  # 0.5
        "proactive_vision": {"accuracy": 1.0, "false_alarm_rate": 0.5},  # 0.5
        "repetition_counting": {"accuracy": 0.25},  # 0.25
        "delegation": {"answer_delay_median_s": 1.0},  # accuracy missing: 0
    }
    assert headline(scores) == pytest.approx((0.7 + 0 - 0.25 + 0.5 + 0.5 + 0.25 + 0) / 7)
    assert headline({"delegation": {"accuracy": 1.0}}) == 1.0
    # talking all the time never pays: every pause taken cancels every turn taken
    assert headline({"turn_taking": {"turn_tor": 1.0, "pause_tor": 1.0}}) == 0.0
    assert headline({}) == 0.0


def test_evaluate_command_scores_a_checkpoint(model, eval_dir, tmp_path, capsys) -> None:
    from microturn.model import save_pretrained
    from microturn.train.evaluate import main

    save_pretrained(model, tmp_path / "m")
    args = [str(tmp_path / "m"), str(eval_dir), "--scenarios", "delegation", "--seeds", "0,7"]
    main([*args, "--show"])
    printed = capsys.readouterr()
    lines = [json.loads(line) for line in printed.out.splitlines()]
    assert [r["seed"] for r in lines] == [0, 7]
    keys = {"model", "seed", "start_bias", "headline", "delegation"}
    assert all(set(r) == keys for r in lines)
    shown = [line for line in printed.err.splitlines() if line.startswith("# delegation-")]
    n = sum(ep.scenario == "delegation" for ep, _ in load_eval_set(eval_dir, model.layout))
    assert n and len(shown) == 2 * n  # one line per episode and seed
    with pytest.raises(SystemExit, match="no episodes of counting"):
        main([str(tmp_path / "m"), str(eval_dir), "--scenarios", "counting"])


def test_slot_tally_counts_per_slot_where_it_should() -> None:
    """Text is judged only inside messages (bytes and EOM), audio only where the
    reference speaks, each slot apart: a model right everywhere but slot 0 scores 0 there."""
    from microturn.codecs.dmel import N_BINS, N_MELS
    from microturn.model.transformer import Logits

    b, n, slots, k, vocab = 1, 3, 4, 2, 300
    text = torch.full((b, n, slots), ord("a"))
    text[0, 2] = Special.PAD  # after the message: between messages, not judged
    open_message = torch.ones(b, n, slots, dtype=torch.bool)
    open_message[0, 2] = False
    text_logits = torch.zeros(b, n, slots, vocab)
    text_logits[..., ord("a")] = 5.0
    text_logits[:, :, 0, ord("a")] = -5.0  # slot 0 wrong
    audio = torch.zeros(b, n, slots, k, N_MELS, dtype=torch.uint8)
    audio[0, :, 2, 0, 10] = 8  # the reference speaks in slot 2 only
    audio_logits = torch.zeros(b, n, slots, k, N_MELS, N_BINS)
    targets = {
        "model_action": torch.full((b, n, 1), int(Special.PAD)),
        "model_text": text,
        "model_audio": audio,
    }
    logits = Logits(
        model_action=torch.zeros(b, n, 1, vocab), model_text=text_logits, model_audio=audio_logits
    )
    tally = slot_tally(logits, targets, open_message)
    assert tally["text_n"].tolist() == [2, 2, 2, 2]
    assert tally["text_right"].tolist() == [0, 2, 2, 2]
    assert tally["text_nll"][0] > 5 > tally["text_nll"][1]
    assert tally["audio_n"].tolist() == [0, 0, 3, 0]
    uniform = float(torch.log(torch.tensor(float(N_BINS))))
    assert tally["audio_nll"].tolist() == pytest.approx([0, 0, 3 * uniform, 0], rel=1e-5)

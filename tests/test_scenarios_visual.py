"""Visual scenarios (proactive vision, repetition counting) and delegation: the renderer,
the generators and the scorers, including the reference behaviour scoring perfectly."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from microturn.codecs.vision import VisionCodec
from microturn.data import FACTS_PATH, load_facts
from microturn.scenarios import delegation, get, proactive_vision, render, repetition_counting
from microturn.scenarios.base import arrival_s
from microturn.scenarios.delegation import contains_answer
from microturn.scenarios.scoring import normalize, number_words, numbers_in, says
from microturn.stream.episode import ActionEvent, Episode, Event, SpeechSegment, Timeline
from microturn.stream.layout import Layout, pack_episode
from tests.helpers import assert_replies_follow_their_causes

SCENARIOS = ("proactive_vision", "repetition_counting", "delegation")


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------


def _box_mean(frame: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return frame[y0:y1, x0:x1].reshape(-1, 3).astype(float).mean(axis=0)


def _colour_mask(frame: np.ndarray, colour: tuple[int, int, int], tol: float = 50.0):
    return np.linalg.norm(frame.astype(float) - np.array(colour, float), axis=-1) < tol


@pytest.mark.parametrize("seed", range(4))
def test_traffic_light_turns_green_on_the_event_frame(seed: int) -> None:
    event = render.snap_to_frame(4.1)
    scene = render.traffic_light(rng(seed), event, 8.0)
    i = scene.frame_index(event)
    assert scene.event_times_s == (event,) and scene.times_s[i] == event
    states = scene.info["states"]
    assert "green" not in states[:i] and set(states[i:]) == {"green"}
    before, after = (_box_mean(scene.frames[k], scene.info["target_box"]) for k in (i - 1, i))
    # The target lamp: much greener than red afterwards, not before.
    assert (after[1] - after[0]) - (before[1] - before[0]) > 60


@pytest.mark.parametrize("seed", range(4))
def test_ball_enters_the_goal_on_the_event_frame(seed: int) -> None:
    event = render.snap_to_frame(5.0)
    scene = render.ball_to_goal(rng(seed), event, 8.0)
    i = scene.frame_index(event)
    inside = scene.info["inside"]
    assert not inside[:i].any() and inside[i:].all()
    x0, y0, x1, y1 = (round(float(v)) for v in scene.info["goal"])

    def ball_pixels_in_goal(k: int) -> int:
        return int(_colour_mask(scene.frames[k], scene.info["colour"])[y0:y1, x0:x1].sum())

    assert ball_pixels_in_goal(i) > ball_pixels_in_goal(i - 1) + 10


@pytest.mark.parametrize("seed", range(3))
def test_tower_reaches_its_height_on_the_event_frame(seed: int) -> None:
    event = render.snap_to_frame(6.0)
    scene = render.tower(rng(seed), 5, event, 8.0)
    i = scene.frame_index(event)
    heights = scene.info["heights"]
    assert heights[i] == 5 and heights[i - 1] == 4 and heights.max() == 5
    assert np.all(np.diff(heights) >= 0)
    x0, y0, x1, _ = scene.info["target_box"]
    top = (x0, y0, x1, y0 + 6)
    diff = np.abs(_box_mean(scene.frames[i], top) - _box_mean(scene.frames[i - 1], top)).sum()
    assert diff > 30  # the last block now sits where there was background


def _count_reps(scene: render.Scene) -> int:
    """Count repetitions from pixels only: centroid of the object's colour, distance from
    where it rests, crossings of half the largest distance."""
    axis = 0 if scene.info["axis"] == "x" else 1
    track = []
    for frame in scene.frames:
        ys, xs = np.nonzero(_colour_mask(frame, scene.info["colour"]))
        track.append((xs if axis == 0 else ys).mean())
    away = np.abs(np.array(track) - track[0])
    above = away > away.max() / 2
    return int(np.sum(above[1:] & ~above[:-1]) + above[0])


@pytest.mark.parametrize("kind", list(render.REP_KINDS))
@pytest.mark.parametrize("count", [2, 7, 12])
def test_repetitions_are_countable_from_the_pixels(kind: str, count: int) -> None:
    r = rng(count * 10 + len(kind))
    schedule = render.rep_schedule(r, count, 0.6, max_motion_s=18.0)
    assert schedule.count == count and schedule.end_s <= 0.6 + 18.0 + 1e-9
    assert all(render.MIN_REP_PERIOD_S <= p <= render.MAX_REP_PERIOD_S for p in schedule.periods)
    scene = render.repetitions(r, schedule, schedule.end_s + 1.0, kind=kind)
    assert scene.info["count"] == count and len(scene.event_times_s) == count
    assert _count_reps(scene) == count
    # It stays still once it has stopped.
    end = scene.frame_index(schedule.end_s) + 1
    assert np.allclose(scene.info["positions"][end:], scene.info["positions"][-1])


def test_fastest_repetitions_are_still_countable() -> None:
    schedule = render.RepSchedule(tuple(0.6 + 0.6 * k for k in range(10)), (0.6,) * 10)
    for seed in range(3):
        scene = render.repetitions(rng(seed), schedule, schedule.end_s + 0.5, kind="ball")
        assert _count_reps(scene) == 10


def test_scenes_vary_with_the_seed() -> None:
    event = render.snap_to_frame(3.0)
    balls = [render.ball_to_goal(rng(s), event, 5.0) for s in range(8)]
    assert len({b.info["colour"] for b in balls}) >= 3
    assert len({b.info["side"] for b in balls}) >= 2
    assert len({tuple(np.round(b.info["goal"])) for b in balls}) == 8
    lights = [render.traffic_light(rng(s), event, 5.0) for s in range(20)]
    assert {light.info["variant"] for light in lights} == {"traffic", "lamp"}
    assert len({tuple(np.round(light.info["target_box"])) for light in lights}) == 20
    for make in (
        lambda r: render.traffic_light(r, event, 5.0),
        lambda r: render.tower(r, 4, event, 5.0),
    ):
        a, b = make(rng(0)), make(rng(1))
        assert np.abs(a.frames[0].astype(int) - b.frames[0].astype(int)).mean() > 10
        assert np.array_equal(a.frames, make(rng(0)).frames)  # and a seed is a seed


def test_frame_grid_sizes_and_rates() -> None:
    assert render.snap_to_frame(4.0) == 4.0 and render.snap_to_frame(4.01) == 4.2
    times = render.frame_times(3.0)
    assert times[0] == 0 and times[-1] == 3.0 and np.allclose(np.diff(times), 0.2)
    scene = render.ball_to_goal(rng(0), 2.0, 3.0, size=80, fps=10.0)
    assert scene.frames.shape == (31, 80, 80, 3) and scene.frames.dtype == np.uint8
    with pytest.raises(ValueError, match="frame time"):
        render.traffic_light(rng(0), 2.05, 3.0)
    with pytest.raises(ValueError, match="too low"):
        render.repetitions(rng(0), render.rep_schedule(rng(0), 3, 0.5), 8.0, fps=2.0)


# ---------------------------------------------------------------------------------
# Generators: deterministic, both drivers, train and eval, packable, reference perfect
# ---------------------------------------------------------------------------------


def _reference_timeline(episode: Episode) -> Timeline:
    ref = episode.reference
    assert ref is not None
    return Timeline("reference", 0.2, episode.id, list(ref.speech), list(ref.actions))


IDEAL = {
    "proactive_vision": {"accuracy": 1.0, "false_alarm_rate": 0.0},
    "repetition_counting": {"accuracy": 1.0},
    "delegation": {"accuracy": 1.0, "delegated_rate": 1.0},
}


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("driver", ["speech", "text"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_generated_episodes_are_valid_and_the_reference_is_perfect(
    name: str, driver: str, split: str
) -> None:
    scenario = get(name)
    ep = scenario.generate(3, split, driver)
    assert ep.scenario == name and ep.split == split and ep.meta["driver"] == driver
    assert 8.0 <= ep.duration_s <= 30.0
    if driver == "speech":
        assert ep.user_speech and not ep.user_text
    else:
        assert ep.user_text and not ep.user_speech and not np.any(ep.user_audio)
    assert all(s.start_s >= 0.4 for s in ep.reference.speech)
    if name == "delegation":
        assert ep.user_video is None
    else:
        assert ep.user_video.frames.shape[1:] == (160, 160, 3)
        assert np.allclose(np.diff(ep.user_video.times_s), 0.2)
    metrics = scenario.aggregate([scenario.score(ep, _reference_timeline(ep))])
    assert metrics.items() >= IDEAL[name].items()
    if ep.user_video is not None:
        ep = dataclasses.replace(ep, user_video=VisionCodec(80).fit_track(ep.user_video))
    turns = pack_episode(ep, Layout.preset("tiny"))
    assert turns.n_turns == Layout.preset("tiny").n_turns(ep.duration_s)
    assert_replies_follow_their_causes(ep, turns, Layout.preset("tiny"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_generators_are_deterministic_by_seed(name: str) -> None:
    scenario = get(name)
    a, b = scenario.generate(5, "eval", "speech"), scenario.generate(5, "eval", "speech")
    assert np.array_equal(a.user_audio, b.user_audio)
    assert np.array_equal(a.reference.audio, b.reference.audio)
    assert a.events == b.events and a.reference.speech == b.reference.speech
    assert a.reference.actions == b.reference.actions and a.background == b.background
    if a.user_video is not None:
        assert np.array_equal(a.user_video.frames, b.user_video.frames)
    c = scenario.generate(6, "eval", "text")
    assert c.events != a.events


@pytest.mark.parametrize("name", SCENARIOS)
def test_unseen_engine_split(name: str) -> None:
    from microturn.voices import ENGINES

    if "festival" not in ENGINES:
        pytest.skip("festival voices are not wired in yet")
    ep = get(name).generate(1, "unseen_engine", "speech")
    assert ep.meta["user_voice"].startswith("festival:")


def test_proactive_timing_and_wording() -> None:
    scenario = proactive_vision.SCENARIO
    seen = set()
    for seed in range(6):
        ep = scenario.generate(seed, "train", "text")
        end = proactive_vision.find_event(ep, "request_end").time_s
        visual = proactive_vision.find_event(ep, "visual_event")
        seen.add(visual.data["scene"])
        typed = ep.user_text[0]
        assert end == arrival_s([typed], typed, 2)
        assert 3.0 <= visual.time_s - end <= 20.2
        ack, cue = ep.reference.speech
        assert 0.3 <= ack.start_s - end <= 0.6 + 1e-6
        assert 0.3 - 1e-6 <= cue.start_s - visual.time_s <= 0.6 + 1e-6
    assert len(seen) >= 2
    for scene, words in proactive_vision.CUE_WORDS.items():
        assert all(
            any(says(c.format(n="five"), w) for w in words) for c in proactive_vision.CUES[scene]
        )
        for ack in proactive_vision.ACKS:
            assert not any(says(ack, w) for w in words)


def test_delegation_timing_and_answers() -> None:
    scenario = delegation.SCENARIO
    facts = load_facts()
    for seed in range(8):
        ep = scenario.generate(seed, "train", "text")
        end = proactive_vision.find_event(ep, "question_end")
        (action,) = ep.reference.actions
        (result,) = ep.background
        assert action.kind == "delegate" and 0.2 <= action.time_s - end.time_s <= 0.4
        assert 1.5 <= result.time_s - action.time_s <= 3.0
        hold, answer = ep.reference.speech
        assert hold.start_s < result.time_s and answer.start_s > result.time_s
        if action.text.startswith("lookup: "):
            assert result.text == facts[action.text.removeprefix("lookup: ")]
        else:
            a, op, b = action.text.split()
            want = {"*": int(a) * int(b), "+": int(a) + int(b), "-": int(a) - int(b)}[op]
            assert result.text == str(want)
        assert end.data["answer"] == result.text and contains_answer(answer.text, result.text)
        assert not contains_answer(hold.text, result.text)


# ---------------------------------------------------------------------------------
# Scorers on hand-made timelines
# ---------------------------------------------------------------------------------


def _episode(name: str, events: list[Event], seconds: float = 30.0) -> Episode:
    return Episode(
        id=f"{name}-hand",
        scenario=name,
        user_audio=np.zeros(round(seconds * 16000), np.float32),
        events=events,
    )


def _timeline(*speech: tuple[float, str], actions: tuple[ActionEvent, ...] = ()) -> Timeline:
    segs = [SpeechSegment(t, t + 1.0, text) for t, text in speech]
    return Timeline("hand", 0.2, None, segs, list(actions))


def test_proactive_scorer() -> None:
    scenario = proactive_vision.SCENARIO
    ep = _episode(
        "proactive_vision",
        [
            Event(1.0, "request"),
            Event(3.0, "request_end"),
            Event(10.0, "visual_event", {"scene": "light"}),
        ],
    )
    ack = (3.4, "okay, I'll tell you when it's green")  # in the acknowledgement window
    cases = {
        "correct": _timeline(ack, (10.4, "it's green now")),
        "early": _timeline(ack, (8.0, "it's green now"), (10.4, "it's green now")),
        "late": _timeline(ack, (11.8, "it's green now")),
        "wrong": _timeline(ack, (10.4, "it's red now")),
        "silent": _timeline(),
        "double": _timeline(ack, (10.4, "green now"), (12.5, "it's green")),
    }
    r = {k: scenario.score(ep, t) for k, t in cases.items()}
    assert r["correct"]["correct"] and r["correct"]["delay_s"] == pytest.approx(0.4)
    assert r["early"]["false_alarm"] and not r["early"]["correct"]
    assert not r["late"]["correct"] and not r["late"]["false_alarm"]
    assert not r["wrong"]["correct"] and not r["wrong"]["false_alarm"]
    assert not r["silent"]["correct"] and r["silent"]["delay_s"] is None
    assert r["double"]["correct"] and r["double"]["cues"] == 2
    assert scenario.score(ep, _timeline((10.0, "green")))["correct"]  # at the event: fine
    assert scenario.score(ep, _timeline((11.5, "green")))["correct"]  # the limit: fine
    chatter = _timeline((6.0, "still watching"), (10.3, "it's green"))
    assert scenario.score(ep, chatter)["correct"]  # no cue word: not a false alarm
    metrics = scenario.aggregate(list(r.values()))
    assert metrics["accuracy"] == pytest.approx(2 / 6)
    assert metrics["false_alarm_rate"] == pytest.approx(1 / 6)
    assert metrics["delay_median_s"] == pytest.approx(0.4)
    assert scenario.aggregate([r["silent"]])["delay_median_s"] is None

    goal = _episode(
        "proactive_vision",
        [
            Event(0.5, "request"),
            Event(2.0, "request_end"),
            Event(9.0, "visual_event", {"scene": "goal"}),
        ],
    )
    assert scenario.score(goal, _timeline((9.5, "the ball is in")))["correct"]
    assert not scenario.score(goal, _timeline((9.5, "it's green now")))["correct"]
    assert scenario.score(goal, _timeline((7.0, "goal!")))["false_alarm"]


def test_repetition_scorer() -> None:
    scenario = repetition_counting.SCENARIO
    ep = _episode(
        "repetition_counting",
        [
            Event(11.0, "motion_end", {"count": 7}),
            Event(12.0, "question"),
            Event(14.0, "question_end", {"count": 7}),
        ],
    )
    cases = {
        "correct": _timeline((14.4, "it jumped seven times")),
        "digits": _timeline((14.4, "7 times")),
        "wrong": _timeline((14.4, "six times")),
        "wrong_first": _timeline((14.4, "six"), (15.6, "no, seven")),
        "hedge": _timeline((14.4, "six or seven times")),
        "think_first": _timeline((14.3, "let me think"), (15.5, "seven")),
        "counting_along_only": _timeline((5.0, "five, six, seven")),
        "late": _timeline((19.5, "seven times")),
        "silent": _timeline(),
        "double": _timeline((14.4, "seven times"), (16.0, "seven")),
    }
    r = {k: scenario.score(ep, t) for k, t in cases.items()}
    right = {"correct", "digits", "think_first", "double"}
    assert {k for k, v in r.items() if v["correct"]} == right
    assert r["wrong_first"]["said"] == [6]
    assert scenario.aggregate(list(r.values()))["accuracy"] == pytest.approx(len(right) / len(r))


def test_delegation_scorer() -> None:
    scenario = delegation.SCENARIO
    ep = _episode(
        "delegation",
        [
            Event(1.0, "question"),
            Event(3.0, "question_end", {"answer": "10063"}),
        ],
    )
    act = (ActionEvent(3.3, "delegate", "347 * 29"),)
    hold = (3.4, "let me check")
    cases = {
        "correct": _timeline(hold, (7.0, "347 times 29 is 10,063"), actions=act),
        "words": _timeline(hold, (7.5, "ten thousand and sixty three"), actions=act),
        "wrong": _timeline(hold, (7.0, "347 times 29 is 10,062"), actions=act),
        "undelegated": _timeline((6.0, "that's 10063")),
        "early": _timeline((2.0, "10,063"), actions=act),
        "late": _timeline(hold, (13.5, "it's 10,063"), actions=act),
        "silent": _timeline(),
        "double": _timeline(hold, (7.0, "10,063"), (9.0, "yes, 10,063"), actions=act),
    }
    r = {k: scenario.score(ep, t) for k, t in cases.items()}
    assert {k for k, v in r.items() if v["correct"]} == {
        "correct",
        "words",
        "undelegated",
        "double",
    }
    assert {k for k, v in r.items() if v["delegated"]} == set(cases) - {"undelegated", "silent"}
    assert r["correct"]["delay_s"] == pytest.approx(4.0) and r["double"][
        "delay_s"
    ] == pytest.approx(4.0)
    assert r["correct"]["task"] == "347 * 29"
    assert (
        scenario.score(ep, _timeline(actions=(ActionEvent(0.5, "delegate", "x"),)))["delegated"]
        is False
    )
    metrics = scenario.aggregate(list(r.values()))
    assert metrics["accuracy"] == pytest.approx(4 / 8)
    assert metrics["delegated_rate"] == pytest.approx(6 / 8)
    assert metrics["answer_delay_median_s"] == pytest.approx(4.0)  # 4.0, 4.5, 3.0, 4.0

    lookup = _episode(
        "delegation", [Event(1.0, "question"), Event(3.0, "question_end", {"answer": "Canberra"})]
    )
    assert scenario.score(lookup, _timeline((6.0, "the capital of Australia is Canberra.")))[
        "correct"
    ]
    assert not scenario.score(lookup, _timeline((6.0, "it's Sydney")))["correct"]
    assert contains_answer("it's 8849 meters high", "8,849 metres")
    assert not contains_answer("it's 8848 metres", "8,849 metres")
    assert contains_answer("It's the Pacific Ocean.", "the Pacific Ocean")


def test_numbers_in() -> None:
    for n in [0, 7, 12, 40, 99, 100, 105, 347, 1000, 1204, 10063, 384400, 999999]:
        assert numbers_in(number_words(n)) == [n]
        assert numbers_in(f"{n:,}") == [n]
    assert numbers_in("347 times 29 is 10,063") == [347, 29, 10063]
    assert numbers_in("one hundred and five") == [105]
    assert numbers_in("six or seven, twice") == [6, 7, 2]
    assert numbers_in("six seven") == [6, 7]
    assert numbers_in("nothing here") == []


# ---------------------------------------------------------------------------------
# The fact table
# ---------------------------------------------------------------------------------


def test_fact_table_ships_and_loads() -> None:
    facts = load_facts()
    assert 30 <= len(facts) <= 60
    assert facts["capital of australia"] == "Canberra"
    assert FACTS_PATH.read_text().startswith("#")
    assert delegation.load_facts is load_facts  # one loader, shared with the thinker
    for value in facts.values():  # scorers read numbers as words: keep them in range
        assert all(int(n.replace(",", "")) < 1_000_000 for n in re.findall(r"[\d,]+\d", value))


def test_load_facts_rejects_malformed_lines(tmp_path) -> None:
    good = tmp_path / "good.tsv"
    good.write_text("# comment\n\nCapital of Mars\tOlympus\n")
    assert load_facts(good) == {"capital of mars": "Olympus"}
    for body, line in [
        ("# header\na\tb\nno tab here\n", 3),
        ("a\tb\tc\n", 1),
        ("a\t \n", 1),
        ("a\tb\nA\tc\n", 2),
    ]:
        bad = tmp_path / "bad.tsv"
        bad.write_text(body)
        with pytest.raises(ValueError, match=rf"bad\.tsv:{line}:"):
            load_facts(bad)


def test_any_run_of_digits_a_model_writes_can_be_scored() -> None:
    # a free-running model once wrote "19549993650": scoring crashed mid-training
    assert normalize("at 19549993650 now") == (
        "at one nine five four nine nine nine three six five zero now"
    )
    assert normalize("999999 and 1,000,000") == (
        "nine hundred ninety nine thousand nine hundred ninety nine and one zero zero zero"
        " zero zero zero"
    )
    assert not says("it's 19549993650", "green")

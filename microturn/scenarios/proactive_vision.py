"""Proactive vision: "tell me when the light turns green", then silence until it does.

The user asks (spoken or typed, per `driver`) to be told when something happens on
camera and says nothing more. The event (a light turns green, a ball reaches the goal,
a tower reaches its announced height; see `render.py`) happens 3-20 s after the request
has reached the model. Reference behaviour: a short acknowledgement 0.3-0.6 s after the
request ("okay, I'll watch"), then silence, then the cue ("it's green now"), starting
0.3-0.6 s after the event.

Scoring (per episode), with `request_end` = when the last word was heard (spoken) or
the last typed byte reached the model (typed), and `event` = the first frame showing it:

- A *cue* is a model speech segment that starts at or after `request_end + ACK_WINDOW_S`
  (2.5 s) and says one of the scene's cue words (`CUE_WORDS`: "green"; "goal", "in",
  "scored", "reached"; "done", "finished", "complete"), word-aligned after `normalize`.
  Speech starting before that is the acknowledgement and is never judged (it may well
  say "I'll tell you when it's green"); other speech without a cue word is ignored.
- `false_alarm`: some cue starts before the event.
- `correct`: no false alarm, and a cue starts in [event, event + CUE_LIMIT_S] (1.5 s).
  Repeating the cue later does not undo a correct episode (`cues` counts them).
- `delay_s`: event -> start of the first cue, for correct episodes.

Metrics: `accuracy`, `false_alarm_rate` (share of episodes with a cue before the event),
`delay_median_s` (median over correct episodes; None when there are none).

"""

from __future__ import annotations

from typing import Any

import numpy as np

from microturn.scenarios import render
from microturn.scenarios.base import (
    MODEL_VOICE,
    EpisodeBuilder,
    Scenario,
    check_driver,
    find_event,
    model_speaks,
    pick,
    rng_for,
    seen_s,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import median, number_words, rate, says
from microturn.stream.episode import Episode, Timeline
from microturn.voices import synthesize

NAME = "proactive_vision"
SCENES = ("light", "goal", "tower")
ACK_WINDOW_S = 2.5  # speech starting this soon after the request is the acknowledgement
CUE_LIMIT_S = 1.5  # the cue must start within this long after the event
EVENT_DELAY_S = (3.0, 20.0)  # request end -> event
MAX_DURATION_S = 30.0
MIN_DURATION_S = 8.0

REQUESTS: dict[str, tuple[str, ...]] = {
    "light": (
        "tell me when the light turns green",
        "let me know when the light goes green",
        "say something when the light turns green",
        "can you tell me when the light is green?",
        "watch the light and tell me when it turns green",
    ),
    "goal": (
        "let me know when the ball reaches the goal",
        "tell me when the ball gets into the goal",
        "say when the ball is in the goal",
        "watch the ball and tell me when it goes in the goal",
    ),
    "tower": (
        "say when the tower is finished, it will be {n} blocks high",
        "tell me when the tower is {n} blocks tall",
        "let me know when the tower reaches {n} blocks",
        "watch the tower and tell me when it has {n} blocks",
    ),
}
ACKS = (
    "okay, I'll watch",
    "sure, I'm watching",
    "okay, I'll keep an eye on it",
    "will do",
    "got it, I'll tell you",
)
CUES: dict[str, tuple[str, ...]] = {
    "light": ("it's green now", "the light is green", "green now", "it just turned green"),
    "goal": ("the ball is in", "it's in the goal", "the ball just reached the goal", "goal!"),
    "tower": (
        "the tower is done",
        "it's finished",
        "the tower is finished now",
        "done, that's {n}",
    ),
}
CUE_WORDS: dict[str, tuple[str, ...]] = {
    "light": ("green",),
    "goal": ("goal", "in", "scored", "reached"),
    "tower": ("done", "finished", "complete"),
}

# ---------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------


def _scene_text(template: str, n: int, typed: bool, rng: np.random.Generator) -> str:
    number = str(n) if typed and rng.random() < 0.5 else number_words(n)
    return template.format(n=number)


class ProactiveVision(Scenario):
    """Speak up, unprompted, when the thing the user asked about happens on camera."""

    name = NAME
    categories = ("proactive", "vision")

    def __init__(self, size: int = render.DEFAULT_SIZE, fps: float = render.DEFAULT_FPS):
        self.size, self.fps = size, fps

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(NAME, seed, split)
        builder = EpisodeBuilder(NAME, seed, split, rng, user_voice(rng, split))
        scene = SCENES[int(rng.integers(len(SCENES)))]
        height = int(rng.integers(3, 8))
        request = _scene_text(pick(rng, REQUESTS[scene]), height, driver == "text", rng)
        start, end = user_turn(builder, request, float(rng.uniform(0.5, 2.0)), driver)
        ack = model_speaks(builder, pick(rng, ACKS), end + float(rng.uniform(0.3, 0.6)), end)
        cue_text = _scene_text(pick(rng, CUES[scene]), height, False, rng)
        cue_len = synthesize(cue_text, MODEL_VOICE).duration_s
        tail = float(rng.uniform(1.5, 3.0))
        latest = min(EVENT_DELAY_S[1], MAX_DURATION_S - end - 0.6 - cue_len - tail - 0.3)
        earliest = max(EVENT_DELAY_S[0], ack.end_s + 1.0 - end)
        if latest < earliest:
            raise ValueError(f"seed {seed}: the request leaves no room for the event")
        event = render.snap_to_frame(end + float(rng.uniform(earliest, latest)), self.fps)
        cue = model_speaks(builder, cue_text, event + float(rng.uniform(0.3, 0.6)), seen_s(event))
        duration = max(MIN_DURATION_S, cue.end_s + tail)
        if scene == "light":
            video = render.traffic_light(rng, event, duration, size=self.size, fps=self.fps)
        elif scene == "goal":
            video = render.ball_to_goal(rng, event, duration, size=self.size, fps=self.fps)
        else:
            video = render.tower(rng, height, event, duration, size=self.size, fps=self.fps)
        builder.video = video.track()
        builder.event("request", start, text=request, driver=driver)
        builder.event("request_end", end)
        builder.event("visual_event", event, scene=scene, cue=cue.text)
        builder.meta.update(driver=driver, scene=scene, request=request)
        if scene == "tower":
            builder.meta["height"] = height
        return builder.build(duration)

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        visual = find_event(episode, "visual_event")
        event, scene = visual.time_s, visual.data["scene"]
        request_end = find_event(episode, "request_end").time_s
        words = CUE_WORDS[scene]
        cues = [
            s
            for s in sorted(timeline.speech, key=lambda s: s.start_s)
            if s.start_s >= request_end + ACK_WINDOW_S and any(says(s.text, w) for w in words)
        ]
        false_alarm = any(s.start_s < event for s in cues)
        on_time = [s for s in cues if event <= s.start_s <= event + CUE_LIMIT_S]
        correct = not false_alarm and bool(on_time)
        return {
            "scene": scene,
            "correct": correct,
            "false_alarm": false_alarm,
            "delay_s": on_time[0].start_s - event if correct else None,
            "cues": len(cues),
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "accuracy": rate(r["correct"] for r in results),
            "false_alarm_rate": rate(r["false_alarm"] for r in results),
            "delay_median_s": median(r["delay_s"] for r in results),
        }


SCENARIO = ProactiveVision()

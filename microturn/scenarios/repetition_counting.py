"""Repetition counting (RepCount-style): "how many times did it jump?".

On camera an object repeats one motion K times (K in 2..12; a stick figure jumps, a
ball bounces, a square or a bar moves sideways and back; period 0.6-2 s with jitter,
sometimes pauses; see `render.repetitions`), then stays still. 0.5-2 s later the user
asks how many times (spoken or typed, several wordings). Reference: the number, in
words, 0.3-0.6 s after the question ("it jumped seven times").

Scoring: the *answer* is the first model speech segment that starts at or after the
question starts, no later than ANSWER_LIMIT_S (5 s) after the question has reached the
model, and contains a number (`numbers_in`: digits or words, "twice" included).
Speech without a number ("let me think") is skipped; counting aloud during the motion
(before the question) is ignored. `correct`: the answer's numbers are all exactly K
("seven, seven times" is right; "six or seven" and a wrong number first are wrong; no
answer in time is wrong). Metric: `accuracy`.

`numbers_in` is the one reading of numbers in speech for the scorers of this family.
"""

from __future__ import annotations

from typing import Any

from microturn.scenarios import render
from microturn.scenarios.base import (
    EpisodeBuilder,
    Scenario,
    check_driver,
    find_event,
    model_speaks,
    pick,
    rng_for,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import number_words, numbers_in, rate
from microturn.stream.episode import Episode, Timeline

NAME = "repetition_counting"
COUNT_RANGE = (2, 12)
ANSWER_LIMIT_S = 5.0  # the answer must start within this long after the question ends
MAX_MOTION_S = 15.0
MIN_DURATION_S = 8.0
MAX_DURATION_S = 30.0

QUESTIONS: dict[str, tuple[str, ...]] = {
    "jump": (
        "how many times did it jump?",
        "how many jumps was that?",
        "how many times did the figure jump?",
        "so how many times did it jump?",
        "count them for me: how many jumps did you see?",
    ),
    "bounce": (
        "how many times did the ball bounce?",
        "how many bounces was that?",
        "how many times did it bounce?",
        "how many bounces did you see?",
    ),
    "move": (
        "how many times did it move?",
        "how many times did it move back and forth?",
        "how many times did the {thing} move?",
        "how many moves did you count?",
    ),
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "jump": ("it jumped {n} times", "{n} times", "that was {n} jumps", "I counted {n} jumps"),
    "bounce": ("it bounced {n} times", "{n} bounces", "{n} times", "I counted {n} bounces"),
    "move": ("it moved {n} times", "{n} times", "that was {n} moves", "I counted {n}"),
}


class RepetitionCounting(Scenario):
    """Watch a repeated motion, then say how many repetitions there were."""

    name = NAME
    categories = ("vision", "counting")

    def __init__(self, size: int = render.DEFAULT_SIZE, fps: float = render.DEFAULT_FPS):
        self.size, self.fps = size, fps

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(NAME, seed, split)
        builder = EpisodeBuilder(NAME, seed, split, rng, user_voice(rng, split))
        kind = str(list(render.REP_KINDS)[int(rng.integers(len(render.REP_KINDS)))])
        verb = render.REP_KINDS[kind][0]
        count = int(rng.integers(COUNT_RANGE[0], COUNT_RANGE[1] + 1))
        schedule = render.rep_schedule(rng, count, float(rng.uniform(0.5, 2.0)), MAX_MOTION_S)
        question = pick(rng, QUESTIONS[verb]).format(thing=kind)
        ask_at = schedule.end_s + float(rng.uniform(0.5, 2.0))
        start, end = user_turn(builder, question, ask_at, driver)
        answer_text = pick(rng, ANSWERS[verb]).format(n=number_words(count))
        answer = model_speaks(builder, answer_text, end + float(rng.uniform(0.3, 0.6)), end)
        duration = max(MIN_DURATION_S, answer.end_s + float(rng.uniform(1.0, 2.5)))
        if duration > MAX_DURATION_S:
            raise ValueError(f"seed {seed}: episode would last {duration:.1f} s")
        video = render.repetitions(rng, schedule, duration, kind=kind, size=self.size, fps=self.fps)
        builder.video = video.track()
        builder.event("motion_end", schedule.end_s, count=count)
        builder.event("question", start, text=question, driver=driver)
        builder.event("question_end", end, count=count)
        builder.meta.update(driver=driver, kind=kind, verb=verb, count=count)
        return builder.build(duration)

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        start = find_event(episode, "question").time_s
        end_event = find_event(episode, "question_end")
        count = int(end_event.data["count"])
        answer = None
        for seg in sorted(timeline.speech, key=lambda s: s.start_s):
            if start <= seg.start_s <= end_event.time_s + ANSWER_LIMIT_S and numbers_in(seg.text):
                answer = seg
                break
        said = numbers_in(answer.text) if answer else []
        return {
            "count": count,
            "said": said,
            "correct": bool(said) and set(said) == {count},
            "delay_s": answer.start_s - end_event.time_s if answer else None,
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": rate(r["correct"] for r in results)}


SCENARIO = RepetitionCounting()

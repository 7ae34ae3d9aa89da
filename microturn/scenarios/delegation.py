"""Delegation: a question the foreground model cannot answer alone, handed to a thinker.

The user asks (spoken or typed) for multi-digit arithmetic ("what is 347 times 29?",
"what's 1,204 plus 3,987?", "what's 5,210 minus 1,987?") or a fact from the local fact
table (`microturn/data/facts.tsv`, read by `load_facts`; "what's the capital of
australia?"). Reference behaviour, with `question_end` = when the whole question has
reached the model:

- 0.2-0.4 s after `question_end`: a `delegate` action with the task ("347 * 29",
  "lookup: capital of australia");
- 0.3-0.6 s after `question_end`: a short hold ("let me check", "one moment");
- 1.5-3 s after the action (drawn per episode): the thinker's result on the background
  track ("10063", "Canberra"), which then flows in at 10 bytes/s;
- 0.3-0.6 s after the result has fully arrived: the answer ("347 times 29 is 10,063",
  "the capital of australia is Canberra"). The user is silent meanwhile.

Scoring (per episode):
- `correct`: some model speech segment starting in [question_end, question_end +
  ANSWER_LIMIT_S (10 s)] contains the answer (`contains_answer`: when the answer has
  digits, all its numbers appear among the numbers said, read through `normalize`, so
  "10,063", "10063" and "ten thousand sixty three" agree and units are not judged;
  otherwise the answer's words, word-aligned after `normalize`). Speech before the
  question has reached the model does not count.
- `delay_s`: question_end -> start of the first segment with the answer (correct only).
- `delegated`: a `delegate` action at or after the question starts.
Metrics: `accuracy`, `answer_delay_median_s` (over correct episodes), `delegated_rate`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from microturn.data import FACTS_PATH, load_facts
from microturn.scenarios.base import (
    EpisodeBuilder,
    Scenario,
    arrival_s,
    check_driver,
    find_event,
    model_speaks,
    pick,
    rng_for,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import median, numbers_in, rate, says
from microturn.stream.episode import Episode, Timeline
from microturn.stream.layout import Layout

__all__ = ["FACTS_PATH", "SCENARIO", "Delegation", "contains_answer", "load_facts"]

NAME = "delegation"
ANSWER_LIMIT_S = 10.0
RESULT_DELAY_S = (1.5, 3.0)  # delegate action -> background result
MIN_DURATION_S = 8.0
MAX_DURATION_S = 30.0
BACKGROUND_SLOTS = Layout().background_slots

QUESTIONS: dict[str, tuple[str, ...]] = {
    "*": (
        "what is {a} times {b}?",
        "what's {a} multiplied by {b}?",
        "can you work out {a} times {b}?",
        "quick one: {a} times {b}?",
    ),
    "+": (
        "what's {a} plus {b}?",
        "what is {a} plus {b}?",
        "add {a} and {b} for me",
        "can you add up {a} and {b}?",
    ),
    "-": ("what's {a} minus {b}?", "what is {a} take away {b}?", "subtract {b} from {a}"),
    "lookup": (
        "what's the {key}?",
        "what is the {key}?",
        "do you know the {key}?",
        "can you look up the {key}?",
        "remind me, what's the {key}?",
    ),
}
SPOKEN_OP = {"*": "times", "+": "plus", "-": "minus"}
HOLDS = ("let me check", "one moment", "just a second", "hold on, let me work that out")
LOOKUP_HOLDS = ("let me look that up", "one moment", "let me check")
ANSWERS: dict[str, tuple[str, ...]] = {
    "arithmetic": ("{a} {op} {b} is {r}", "that's {r}", "it's {r}", "the answer is {r}"),
    "lookup": ("the {key} is {value}", "it's {value}", "that's {value}"),
}


def contains_answer(text: str, answer: str) -> bool:
    """Whether `text` states `answer`: all of its numbers when it has digits (units and
    number formatting ignored), else its words, word-aligned after `normalize`."""
    if re.search(r"\d", answer):
        said = set(numbers_in(text))
        wanted = numbers_in(answer)
        return bool(wanted) and all(n in said for n in wanted)
    return says(text, answer)


def _arithmetic(rng: np.random.Generator) -> tuple[str, int, int, int]:
    op = str(rng.choice(["*", "+", "-"]))
    if op == "*":
        a, b = int(rng.integers(100, 1000)), int(rng.integers(11, 100))
        return op, a, b, a * b
    a, b = int(rng.integers(1000, 10000)), int(rng.integers(1000, 10000))
    if op == "-":
        a, b = max(a, b), min(a, b)
        return op, a, b, a - b
    return op, a, b, a + b


class Delegation(Scenario):
    """Hold the floor, delegate, and weave the background result into the conversation."""

    name = NAME
    categories = ("delegation", "background")

    def __init__(self, facts: dict[str, str] | None = None) -> None:
        self._facts = facts

    @property
    def facts(self) -> dict[str, str]:
        if self._facts is None:
            self._facts = load_facts()
        return self._facts

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(NAME, seed, split)
        builder = EpisodeBuilder(NAME, seed, split, rng, user_voice(rng, split))
        typed = driver == "text"
        if rng.random() < 0.5:
            kind = "arithmetic"
            op, a, b, r = _arithmetic(rng)
            commas = not typed or rng.random() < 0.5
            fa, fb = (f"{a:,}", f"{b:,}") if commas else (str(a), str(b))
            question = pick(rng, QUESTIONS[op]).format(a=fa, b=fb)
            task, result = f"{a} {op} {b}", str(r)
            answer_text = pick(rng, ANSWERS[kind]).format(
                a=f"{a:,}", op=SPOKEN_OP[op], b=f"{b:,}", r=f"{r:,}"
            )
            hold = pick(rng, HOLDS)
        else:
            kind = "lookup"
            keys = sorted(self.facts)
            key = keys[int(rng.integers(len(keys)))]
            question = pick(rng, QUESTIONS["lookup"]).format(key=key)
            task, result = f"lookup: {key}", self.facts[key]
            answer_text = pick(rng, ANSWERS[kind]).format(key=key, value=result)
            hold = pick(rng, LOOKUP_HOLDS)
        start, end = user_turn(builder, question, float(rng.uniform(0.5, 2.0)), driver)
        act_at = end + float(rng.uniform(0.2, 0.4))
        builder.model_acts("delegate", task, act_at)
        held = model_speaks(builder, hold, end + float(rng.uniform(0.3, 0.6)), heard_s=end)
        result_at = act_at + float(rng.uniform(*RESULT_DELAY_S))
        result_event = builder.background_result(result, result_at)
        arrived = arrival_s(builder.background, result_event, BACKGROUND_SLOTS)
        answer_at = max(arrived + float(rng.uniform(0.3, 0.6)), held.end_s + 0.3)
        answer = model_speaks(builder, answer_text, answer_at, heard_s=arrived)
        duration = max(MIN_DURATION_S, answer.end_s + float(rng.uniform(1.0, 2.5)))
        if duration > MAX_DURATION_S:
            raise ValueError(f"seed {seed}: episode would last {duration:.1f} s")
        builder.event("question", start, text=question, driver=driver)
        builder.event("question_end", end, answer=result, task_kind=kind, task=task)
        builder.event("result_arrived", arrived)
        builder.meta.update(driver=driver, kind=kind, task=task, answer=result)
        return builder.build(duration)

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        start = find_event(episode, "question").time_s
        end_event = find_event(episode, "question_end")
        end, answer = end_event.time_s, str(end_event.data["answer"])
        hits = [
            s
            for s in sorted(timeline.speech, key=lambda s: s.start_s)
            if end <= s.start_s <= end + ANSWER_LIMIT_S and contains_answer(s.text, answer)
        ]
        delegations = [a for a in timeline.actions if a.kind == "delegate" and a.time_s >= start]
        return {
            "kind": end_event.data.get("task_kind"),
            "correct": bool(hits),
            "delay_s": hits[0].start_s - end if hits else None,
            "delegated": bool(delegations),
            "task": delegations[0].text if delegations else None,
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "accuracy": rate(r["correct"] for r in results),
            "answer_delay_median_s": median(r["delay_s"] for r in results),
            "delegated_rate": rate(r["delegated"] for r in results),
        }


SCENARIO = Delegation()

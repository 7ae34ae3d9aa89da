"""Turn taking (Full-Duplex-Bench v1 definitions): stay quiet in a user's mid-utterance
pause, take the turn soon after the user has finished.

An episode is 2-3 user turns, each a question or a statement that deserves a short reply;
at least one turn is split between two words by a pause of 0.4-1.5 s: one rendering of
the sentence cut at the word boundary, so the first part keeps its unfinished intonation
as a person's does (two renderings would end it like a finished sentence), or two typed
messages. The reference
model stays silent in the pauses and replies 0.2-0.3 s after each turn ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from microturn.scenarios.base import (
    EpisodeBuilder,
    Scenario,
    check_driver,
    episode_length,
    lead_s,
    model_speaks,
    pick,
    rng_for,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import median, rate, segments_between
from microturn.stream.episode import Episode, Timeline

FIRST_USER_S = (0.5, 1.0)  # the user starts here: reference speech can follow >= 0.4 s


# ---------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------

# (user turn, reference replies). Questions and statements, each deserving a reply.
QUESTIONS = (
    ("What is the capital of France?", ("Paris.", "It is Paris.")),
    ("How many days are there in a week?", ("Seven.", "There are seven days.")),
    ("Can you tell me what time it is in Tokyo right now?", ("It is evening in Tokyo.",)),
    ("What should I cook for dinner tonight?", ("How about pasta?", "Maybe a soup.")),
    ("Do you know a good name for a black cat?", ("How about Shadow?", "Maybe Pepper.")),
    ("How long does it take to boil an egg?", ("About ten minutes.", "Ten minutes.")),
    ("Which planet is closest to the sun?", ("Mercury.", "That is Mercury.")),
    ("Could you suggest a book for a long flight?", ("Try a good mystery novel.",)),
)
STATEMENTS = (
    ("I just got back from a long walk in the park.", ("That sounds nice.", "Nice, how was it?")),
    ("My sister is coming to visit me next week.", ("That is great news.", "How nice.")),
    ("I finally finished painting the kitchen this morning.", ("Well done.", "Nice work.")),
    ("I think I am going to learn to play the guitar.", ("That sounds like fun.",)),
    ("The train was late again this morning.", ("Sorry to hear that.", "That is annoying.")),
    ("We are planning a trip to the mountains in the summer.", ("That sounds lovely.",)),
    ("I have a job interview tomorrow afternoon.", ("Good luck.", "You will do great.")),
    ("My neighbor gave me a basket of fresh tomatoes.", ("How kind of them.", "Lucky you.")),
)
PAUSE_S = (0.4, 1.5)
REPLY_DELAY_S = (0.2, 0.3)
NEXT_TURN_GAP_S = (0.6, 1.2)  # after the reference reply ends
# Scoring windows.
TAKE_WINDOW_S = 3.0  # a reply must start within this long after the user's turn ends ...
ANTICIPATE_S = 0.5  # ... or up to this much before it (an early start still takes the turn)
LATENCY_BAR_S = 0.4  # issue #6's bar on latency_median_s: a reply this soon is on time


class TurnTaking(Scenario):
    name = "turn_taking"
    categories = ("question", "statement")

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(self.name, seed, split)
        b = EpisodeBuilder(self.name, seed, split, rng, user_voice(rng, split))
        n_turns = int(rng.integers(2, 4))
        paused = rng.random(n_turns) < 0.5
        paused[int(rng.integers(n_turns))] = True  # at least one pause per episode
        t = float(rng.uniform(*FIRST_USER_S))
        kinds = []
        for i in range(n_turns):
            kind = str(pick(rng, self.categories))
            text, replies = pick(rng, QUESTIONS if kind == "question" else STATEMENTS)
            kinds.append(kind)
            start, last_part, end = self._turn(b, rng, text, t, driver, bool(paused[i]))
            reply = model_speaks(b, str(pick(rng, replies)), end + rng.uniform(*REPLY_DELAY_S), end)
            b.event("user_turn_end", end, turn=kind, start_s=start, last_part_s=last_part)
            t = reply.end_s + rng.uniform(*NEXT_TURN_GAP_S)
        ends = [e for e in b.events if e.kind == "user_turn_end"]
        starts = [e.data["start_s"] for e in ends]
        for e, nxt in zip(ends, [*starts[1:], None], strict=True):
            e.data["next_user_s"] = nxt
        b.meta.update(driver=driver, kinds=kinds)
        return b.build(episode_length(b.end_s()))

    def _turn(
        self,
        b: EpisodeBuilder,
        rng: np.random.Generator,
        text: str,
        at: float,
        driver: str,
        paused: bool,
    ) -> tuple[float, float, float]:
        """One user turn, split by a pause when `paused`; (start, start of its last part, end)."""
        if not paused:
            start, end = user_turn(b, text, at, driver)
            return start, start, end
        words = text.split()
        cut = int(rng.integers(2, len(words) - 1))  # >= 2 words either side
        pause = float(rng.uniform(*PAUSE_S))
        if driver == "speech":
            said = b.user_says_paused(text, at, cut, pause)
            if said is not None:
                first_part, last_part = said
                b.event("pause_start", first_part.end_s, end_s=last_part.start_s)
                return first_part.start_s, last_part.start_s, last_part.end_s
        first, second = " ".join(words[:cut]), " ".join(words[cut:])
        start, pause_start = user_turn(b, first, at, driver)
        if driver == "speech":  # no word timings to cut at: two renderings
            # The second part starts `pause` after the first part's last word: synthesized
            # alone it leads with its own silence, which the word timing tells.
            second_at = pause_start + pause - lead_s(second, b.user_voice)
        else:
            second_at = pause_start + pause
        part_start, end = user_turn(b, second, second_at, driver)
        b.event("pause_start", pause_start, end_s=part_start)
        return start, part_start, end

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        """Per pause: did the model start speaking in it. Per turn: did a reply start within
        [end - 0.5 s (not before the turn's last part), end + 3 s (not after the next
        user turn starts)), and its latency (first reply start - end; negative if early)."""
        pauses = [
            bool(segments_between(timeline, e.time_s, e.data["end_s"]))
            for e in episode.events
            if e.kind == "pause_start"
        ]
        turns = []
        for e in episode.events:
            if e.kind != "user_turn_end":
                continue
            lo = max(e.data["last_part_s"], e.time_s - ANTICIPATE_S)
            hi = e.time_s + TAKE_WINDOW_S
            if e.data.get("next_user_s") is not None:
                hi = min(hi, e.data["next_user_s"])
            replies = segments_between(timeline, lo, hi)
            latency = min(s.start_s for s in replies) - e.time_s if replies else None
            turns.append({"taken": bool(replies), "latency_s": latency})
        return {"pauses_taken": pauses, "turns": turns}

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float | None]:
        """Pooled over all pauses and turns of all episodes (None when there are none)."""
        pauses = [p for r in results for p in r["pauses_taken"]]
        turns = [t for r in results for t in r["turns"]]
        return {
            "pause_tor": rate(pauses),
            "turn_tor": rate(t["taken"] for t in turns),
            "latency_median_s": median(t["latency_s"] for t in turns if t["taken"]),
            "n_pauses": len(pauses),
            "n_turns": len(turns),
        }


SCENARIO = TurnTaking()

"""Time awareness (TimeSpeak-style): say the right thing at the right time.

Categories:
- `remind_every`: "remind me to breathe in and out every N seconds until I say stop"
  (N in 3..8). The cue ("Breathe in and out.") is due N, 2N, ... KN s after the request
  ends (K >= 2); the user says "stop" after the K-th cue and before the next would be due.
- `say_after`: "say 'turn left' in about N seconds" (N in 3..15): once, N s after.
- `countdown`: "count down from N" (N in 3..10): N at 1.2 s after the request, then one
  number a second down to one.

The reference acknowledges 0.3 s after the request, saying the number back ("Okay, every
five seconds.", "Sure, in seven seconds."; a countdown: "Okay." after 0.2 s, so it ends
well before the first number), says each cue with its first word exactly on time, and
after "stop" acknowledges without the cue. Why the number back: when a cue is due
depends on N, heard in the request, and a model that only learns it from the cues'
timing has little to learn from (a probe found no trace of N in the shipped model's
states after the request, docs/benchmarks.md). Said back, N is a word the model writes,
learned like any word, and what it later times the cues by is its own text.

Scoring: the request's end is when the model has all of it (last word, or the typed
message's arrival). Cue utterances are the model's speech that starts at least 0.5 s
after the request ends (so an acknowledgement may repeat the task) and has the cue's
content (the task keyword, the phrase, or any counting number). Each expected utterance
must be matched, in order, by one cue utterance with the right content starting within
max(0.5 s, 15% of its delay from the request's end) of when it is due; the episode is
correct only if every expected one is matched and no cue utterance is left over (said
twice, too early, too late or after "stop").
"""

from __future__ import annotations

from typing import Any

from microturn.scenarios.base import (
    MAX_EPISODE_S,
    EpisodeBuilder,
    Scenario,
    check_driver,
    episode_length,
    lead_s,
    model_speaks,
    pick,
    rng_for,
    typing_s,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import normalize, number_words, says, within
from microturn.scenarios.turn_taking import FIRST_USER_S
from microturn.stream.episode import Episode, Event, Timeline
from microturn.voices import synthesize

# (task as asked, cue the model says, keyword that makes an utterance this cue)
REMIND_TASKS = (
    ("breathe in and out", "Breathe in and out.", "breathe"),
    ("drink some water", "Drink some water.", "water"),
    ("stretch your back", "Stretch your back.", "stretch"),
    ("stand up", "Stand up.", "stand up"),
)
REMIND_REQUESTS = (
    "Remind me to {task} every {n} seconds until I say stop.",
    "Every {n} seconds, tell me to {task}, until I say stop.",
    "Can you remind me to {task} every {n} seconds? I will tell you when to stop.",
    "Please tell me to {task} every {n} seconds until I ask you to stop.",
)
STOPS = ("Stop.", "Okay, you can stop now.", "That's enough, stop.", "Thanks, please stop.")
STOP_ACKS = ("Okay, I'll stop.", "Alright.", "Got it.", "Okay.")
PHRASES = ("turn left", "turn right", "time to go", "take a break", "stand up")
SAY_REQUESTS = (
    "Say {q}{p}{q} in about {n} seconds.",
    "In {n} seconds, say {q}{p}{q}.",
    "Can you say {q}{p}{q} in {n} seconds?",
    "Wait about {n} seconds, then say {q}{p}{q}.",
    "Please say {q}{p}{q} after {n} seconds.",
)
COUNT_REQUESTS = (
    "Count down from {n}.",
    "Can you count down from {n} for me?",
    "Please count down from {n}, one number a second.",
    "Give me a countdown from {n}.",
    "Count backwards from {n} to one.",
)
REMIND_ACKS = ("Okay, every {n} seconds.", "Sure, every {n} seconds.", "Got it, every {n} seconds.")
SAY_ACKS = ("Okay, in {n} seconds.", "Sure, in {n} seconds.", "Got it, in {n} seconds.")
COUNT_ACK = "Okay."
COUNT_ACK_DELAY_S = 0.2
COUNT_FIRST_S = 1.2  # the first number, then one a second

REMIND_N = (3, 8)
SAY_N = (3, 15)
COUNT_N = (3, 10)
MAX_REMIND_SPAN_S = 16.0  # K * N at most this (K >= 2 always)
ACK_DELAY_S = 0.3
ACK_GRACE_S = 0.5  # speech starting sooner after the request is an acknowledgement
STOP_ACK_DELAY_S = (0.3, 0.5)
# After the last cue is due: the cue, "stop" (<= 1.3 s after it, up to 2.2 s long), the
# acknowledgement and the 2 s tail; with a little to spare.
REMIND_AFTER_S = 9.0
STOP_GAP_S = 0.3  # "stop" starts this long after a cue and ends this long before the next
COUNTING = {number_words(n) for n in range(1, 21)}
# Words that sound exactly like a number: an utterance of only this word is that number
# (ASR cannot tell "two" from "to").
HOMOPHONES = {
    "to": "two",
    "too": "two",
    "for": "four",
    "fore": "four",
    "won": "one",
    "ate": "eight",
}
NUMBER_CUE = "<number>"  # countdown utterances are recognized by saying a counting number


def _n_text(n: int, digits: bool) -> str:
    """A number as digits or words (both appear in real requests)."""
    return str(n) if digits else number_words(n)


def _giving_s(b: EpisodeBuilder, text: str, driver: str) -> float:
    """How long the user takes to say (first to last word) or type `text`."""
    if driver == "text":
        return typing_s(text)
    words = synthesize(text, b.user_voice).words
    return words[-1].end_s - words[0].start_s if words else 1.0


class TimeAwareness(Scenario):
    name = "time_awareness"
    categories = ("remind_every", "say_after", "countdown")

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(self.name, seed, split)
        b = EpisodeBuilder(self.name, seed, split, rng, user_voice(rng, split))
        category = str(pick(rng, self.categories))
        make = {"remind_every": self._remind, "say_after": self._say_after}
        make.get(category, self._countdown)(b, rng, float(rng.uniform(*FIRST_USER_S)), driver)
        b.meta.update(driver=driver, category=category)
        return b.build(episode_length(b.end_s(), tail_s=2.0))

    # ---- generators ------------------------------------------------------------------
    @staticmethod
    def _request(
        b: EpisodeBuilder,
        rng: Any,
        text: str,
        at: float,
        driver: str,
        acks: tuple[str, ...],
        n: int,
    ) -> float:
        """The user's request and the reference's acknowledgement, which says `n` back
        (one of `acks`); when the request ends."""
        _, end = user_turn(b, text, at, driver)
        ack = str(pick(rng, acks)).format(n=number_words(n))
        model_speaks(b, ack, end + ACK_DELAY_S, heard_s=end)
        return end

    def _remind(self, b: EpisodeBuilder, rng: Any, at: float, driver: str) -> None:
        task, cue, keyword = pick(rng, REMIND_TASKS)
        n = int(rng.integers(REMIND_N[0], REMIND_N[1] + 1))
        k = int(rng.integers(2, max(2, int(MAX_REMIND_SPAN_S // n)) + 1))
        digits = bool(rng.random() < 0.5)
        # Two cues, "stop" and the rest must fit in the episode: a long (typed) request
        # leaves room only for shorter wordings or, failing those, a shorter interval.
        while True:
            requests = [r.format(task=task, n=_n_text(n, digits)) for r in REMIND_REQUESTS]
            fitting = [
                r
                for r in requests
                if at + _giving_s(b, r, driver) + 2 * n + REMIND_AFTER_S <= MAX_EPISODE_S
            ]
            if fitting or n == REMIND_N[0]:
                break
            n -= 1
        request = str(pick(rng, fitting or requests[:1]))
        end = self._request(b, rng, request, at, driver, REMIND_ACKS, n)
        k = max(2, min(k, int((MAX_EPISODE_S - REMIND_AFTER_S - end) // n)))
        dues = [end + i * n for i in range(1, k + 1)]
        last_end = [model_speaks(b, cue, due) for due in dues][-1].end_s
        # "Stop" after the last cue, fully given 0.3 s before the next one would be due.
        earliest, deadline = last_end + STOP_GAP_S, dues[-1] + n - STOP_GAP_S
        fits = [t for t in STOPS if earliest + _giving_s(b, t, driver) <= deadline]
        stop_text = str(pick(rng, fits or STOPS[:1]))
        latest = max(earliest, deadline - _giving_s(b, stop_text, driver))
        stop_at = float(rng.uniform(earliest, min(latest, earliest + 1.0)))
        if driver == "speech":
            stop_at -= lead_s(stop_text, b.user_voice)
        _, stop_end = user_turn(b, stop_text, stop_at, driver)
        model_speaks(
            b, str(pick(rng, STOP_ACKS)), stop_end + rng.uniform(*STOP_ACK_DELAY_S), stop_end
        )
        b.event(
            "request_end",
            end,
            category="remind_every",
            interval_s=n,
            expected=[[due, keyword] for due in dues],
            cue=keyword,
            stop_s=stop_end,
        )

    def _say_after(self, b: EpisodeBuilder, rng: Any, at: float, driver: str) -> None:
        phrase = str(pick(rng, PHRASES))
        n = int(rng.integers(SAY_N[0], SAY_N[1] + 1))
        quote = "'" if driver == "text" else ""  # quotes are for reading, not for speaking
        request = str(pick(rng, SAY_REQUESTS)).format(
            q=quote, p=phrase, n=_n_text(n, bool(rng.random() < 0.5))
        )
        end = self._request(b, rng, request, at, driver, SAY_ACKS, n)
        model_speaks(b, phrase.capitalize() + ".", end + n)
        b.event(
            "request_end",
            end,
            category="say_after",
            delay_s=n,
            expected=[[end + n, phrase]],
            cue=phrase,
        )

    def _countdown(self, b: EpisodeBuilder, rng: Any, at: float, driver: str) -> None:
        n = int(rng.integers(COUNT_N[0], COUNT_N[1] + 1))
        request = str(pick(rng, COUNT_REQUESTS)).format(n=_n_text(n, bool(rng.random() < 0.5)))
        _, end = user_turn(b, request, at, driver)
        # A short acknowledgement that ends well before the first number: heard apart.
        model_speaks(b, COUNT_ACK, end + COUNT_ACK_DELAY_S, heard_s=end)
        expected = []
        for i, k in enumerate(range(n, 0, -1)):
            due = end + COUNT_FIRST_S + i
            model_speaks(b, number_words(k).capitalize() + ".", due)
            expected.append([due, number_words(k)])
        b.event(
            "request_end",
            end,
            category="countdown",
            start_from=n,
            expected=expected,
            cue=NUMBER_CUE,
        )

    # ---- scoring ---------------------------------------------------------------------
    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        """Match expected utterances in order (see the module docstring)."""
        e = next(e for e in episode.events if e.kind == "request_end")
        end, cue = e.time_s, e.data["cue"]
        spoken = [s for s in timeline.speech if s.start_s >= end + ACK_GRACE_S]
        cues = sorted((s for s in spoken if _is_cue(s.text, cue)), key=lambda s: s.start_s)
        used: set[int] = set()
        matched = []
        for due, content in e.data["expected"]:
            hit = None
            for i, s in enumerate(cues):
                if i in used or not within(s.start_s - end, due - end):
                    continue
                if _has_content(s.text, content, cue):
                    hit = i
                    break
            if hit is not None:
                used.add(hit)
            matched.append(
                {
                    "due_s": due,
                    "content": content,
                    "said_s": None if hit is None else cues[hit].start_s,
                }
            )
        extra = len(cues) - len(used)
        return {
            "category": e.data["category"],
            "matched": sum(m["said_s"] is not None for m in matched),
            "expected": len(matched),
            "extra": extra,
            "correct": extra == 0 and all(m["said_s"] is not None for m in matched),
            "utterances": matched,
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float | None]:
        """Per-category accuracy (None without episodes of it) and their mean over the
        categories that have episodes; and, since an episode is right only when every cue
        is, the share of due cues said on time and the cues said wrongly per episode: what
        shows progress while no episode is right yet."""
        out: dict[str, float | None] = {}
        for c in self.categories:
            rs = [r["correct"] for r in results if r["category"] == c]
            out[f"{c}_accuracy"] = sum(rs) / len(rs) if rs else None
        present = [v for v in out.values() if v is not None]
        expected = sum(r["expected"] for r in results)
        return {
            "macro_accuracy": sum(present) / len(present) if present else None,
            **out,
            "cue_recall": sum(r["matched"] for r in results) / expected if expected else None,
            "extra_cues_per_episode": (
                sum(r["extra"] for r in results) / len(results) if results else None
            ),
        }


# Where each category's request_end event keeps the N asked for
N_KEYS = {"remind_every": "interval_s", "say_after": "delay_s", "countdown": "start_from"}


def requested_n(request_end: Event) -> int:
    """The N a request asked for: a reminder's interval, a phrase's delay (s), or the
    number a countdown starts from."""
    return int(request_end.data[N_KEYS[request_end.data["category"]]])


def _numbers(text: str) -> list[str]:
    """The counting numbers said in `text` (a lone homophone counts as its number)."""
    words = normalize(text).split()
    if len(words) == 1:
        words = [HOMOPHONES.get(words[0], words[0])]
    return [w for w in words if w in COUNTING]


def _is_cue(text: str, cue: str) -> bool:
    return bool(_numbers(text)) if cue == NUMBER_CUE else says(text, cue)


def _has_content(text: str, content: str, cue: str) -> bool:
    """A countdown utterance says exactly its number; others contain the cue phrase."""
    return _numbers(text) == [content] if cue == NUMBER_CUE else says(text, content)


SCENARIO = TimeAwareness()

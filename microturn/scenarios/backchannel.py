"""Backchannels: while the user tells a long story, short acknowledgements ("yeah",
"right") are welcome, taking the floor is not; when the story ends, reply.

An episode is one monologue of about 15-23 s: sentences of one story, each its own utterance,
with natural pauses of 0.5-1.2 s between them. The reference says 1-3 acknowledgements
in pauses (never over the user) and replies 0.25-0.4 s after the monologue ends.

The reference acknowledgements are words flite says clearly: "mm-hmm" and "uh-huh" would
be spelled out or misheard ("mm-hmm" is read as letters), so they are not used.
"""

from __future__ import annotations

from typing import Any

from microturn.scenarios.base import (
    MODEL_VOICE,
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
from microturn.scenarios.scoring import normalize, rate, segments_between
from microturn.scenarios.turn_taking import FIRST_USER_S
from microturn.stream.episode import Episode, SpeechSegment, Timeline
from microturn.voices import synthesize

# Stories: sentences told in order; the last one closes the monologue.
STORIES: tuple[tuple[str, ...], ...] = (
    (
        "So last weekend I finally went camping with my brother.",
        "We drove for about three hours to get to the lake.",
        "The first night it rained so hard that our tent started to leak.",
        "We ended up sleeping in the car with the seats pushed back.",
        "In the morning the sky was clear and the lake was beautiful.",
        "We went fishing and my brother caught a huge trout.",
        "Then we cooked it over the fire for lunch.",
        "Anyway, it was a great trip in the end.",
    ),
    (
        "I started a new job at the library two weeks ago.",
        "The first day I got completely lost in the basement.",
        "There are old maps and newspapers down there from the eighteen hundreds.",
        "My boss asked me to sort a whole room of donated books.",
        "Some of them had letters and photos tucked inside.",
        "I found a postcard from nineteen fifty two with a lovely note.",
        "We are going to put some of them in a small display.",
        "So yes, so far I really like it there.",
    ),
    (
        "My grandmother is teaching me how to bake bread.",
        "She says the secret is to be patient with the dough.",
        "The first loaf I made was as flat as a pancake.",
        "It turned out that my yeast was too old.",
        "The second time it rose nicely but I burned the crust.",
        "Last Sunday I finally got one that looked right.",
        "We ate it warm with butter and honey.",
        "I think I will bake one every week now.",
    ),
    (
        "I have been trying to run every morning this month.",
        "At first I could only manage about ten minutes.",
        "My legs were sore for days after the first week.",
        "Then a friend showed me how to pace myself.",
        "Now I can run for half an hour without stopping.",
        "Yesterday I even saw a family of deer by the river.",
        "They just stood there and watched me go by.",
        "Honestly, it has been the best part of my day.",
    ),
    (
        "We adopted a puppy from the shelter on Friday.",
        "She is a little brown mix with very big ears.",
        "The first night she cried until I sat next to her crate.",
        "Since then she has chewed two shoes and a chair leg.",
        "But she already knows how to sit and give a paw.",
        "The kids are completely in love with her.",
        "We still cannot agree on a name though.",
        "So that is the big news at our house.",
    ),
)
ACKS = ("Yeah.", "Right.", "Okay.", "I see.", "Got it.", "Yep.")
REPLIES = (
    "That sounds wonderful.",
    "What a story, thanks for telling me.",
    "That is great to hear.",
    "Wow, that sounds like quite an adventure.",
)
MONOLOGUE_S = (16.5, 22.0)  # add sentences until about this long (drawn per episode) ...
MAX_MONOLOGUE_S = 23.0  # ... but not past this, counting every pause at its longest
PAUSE_S = (0.5, 1.2)
ACK_AFTER_S = 0.15  # an acknowledgement starts this far into a pause ...
# ... or later: its sound waits for the next micro-turn boundary (base.heard_by_s) and
# the voice's lead-in (~0.22 s) comes first, so its first word starts by this far in ...
ACK_LATEST_S = 0.45
ACK_CLEAR_S = 0.3  # ... and ends at least this long before the user goes on
REPLY_DELAY_S = (0.25, 0.4)
# Scoring: a backchannel is short in time and words.
MAX_BACKCHANNEL_S = 1.0
MAX_BACKCHANNEL_WORDS = 2
REPLY_WINDOW_S = 3.0


def is_backchannel(segment: SpeechSegment) -> bool:
    """Under 1 s and at most 2 words (after normalizing); ASR text may be empty."""
    words = normalize(segment.text).split()
    return segment.end_s - segment.start_s < MAX_BACKCHANNEL_S and len(words) <= (
        MAX_BACKCHANNEL_WORDS
    )


class Backchannel(Scenario):
    name = "backchannel"
    categories = ("monologue",)

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(self.name, seed, split)
        b = EpisodeBuilder(self.name, seed, split, rng, user_voice(rng, split))
        story = pick(rng, STORIES)
        target = float(rng.uniform(*MONOLOGUE_S))
        n_acks = int(rng.integers(1, 4))
        acks = [str(pick(rng, ACKS)) for _ in range(n_acks)]

        sentences = self._plan(story, target, driver, b)
        n_pauses = len(sentences) - 1
        held = sorted(
            int(i) for i in rng.choice(n_pauses, size=min(n_acks, n_pauses), replace=False)
        )

        start, end = user_turn(b, sentences[0], float(rng.uniform(*FIRST_USER_S)), driver)
        first_start = start
        pauses: list[tuple[float, float]] = []
        for i, sentence in enumerate(sentences[1:]):
            pause = float(rng.uniform(*PAUSE_S))
            if i in held:  # long enough for its acknowledgement
                ack = acks[held.index(i)]
                pause = max(pause, ACK_LATEST_S + _spoken_s(ack) + ACK_CLEAR_S)
            at = end + pause
            if driver == "speech":
                at -= lead_s(sentence, b.user_voice)
            next_start, next_end = user_turn(b, sentence, at, driver)
            pauses.append((end, next_start))
            b.event("pause_start", end, end_s=next_start)
            end = next_end
        for ack, i in zip(acks, held, strict=False):
            model_speaks(b, ack, pauses[i][0] + ACK_AFTER_S, heard_s=pauses[i][0])
        reply = model_speaks(b, str(pick(rng, REPLIES)), end + rng.uniform(*REPLY_DELAY_S), end)
        b.event("user_turn_end", end, start_s=first_start, acknowledgements=n_acks)
        b.meta.update(driver=driver, category="monologue")
        return b.build(episode_length(max(b.end_s(), reply.end_s)))

    @staticmethod
    def _plan(story: tuple[str, ...], target: float, driver: str, b: EpisodeBuilder) -> list[str]:
        """The story's first sentence, then more in order while the monologue is shorter
        than `target` (estimated, closing sentence included), capped at MAX_MONOLOGUE_S."""

        def length(sentence: str) -> float:
            if driver == "text":
                return typing_s(sentence)
            words = synthesize(sentence, b.user_voice).words
            return words[-1].end_s - words[0].start_s if words else 3.0

        mean, longest = sum(PAUSE_S) / 2, PAUSE_S[1]
        chosen = [story[0]]
        total = length(story[0]) + length(story[-1])
        n_pauses = 1
        for sentence in story[1:-1]:
            if total + n_pauses * mean >= target:
                break
            if total + length(sentence) + (n_pauses + 1) * longest > MAX_MONOLOGUE_S:
                break
            chosen.append(sentence)
            total += length(sentence)
            n_pauses += 1
        return [*chosen, story[-1]]

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        """Model speech starting while the user holds the floor (first word to last word
        of the monologue): each short one is a backchannel, any longer one a takeover."""
        e = next(e for e in episode.events if e.kind == "user_turn_end")
        start, end = e.data["start_s"], e.time_s
        during = segments_between(timeline, start, end)
        backchannels = [s for s in during if is_backchannel(s)]
        return {
            "user_speech_s": end - start,
            "backchannels": len(backchannels),
            "takeovers": len(during) - len(backchannels),
            "replied": bool(segments_between(timeline, end, end + REPLY_WINDOW_S)),
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float | None]:
        """rate_per_min: all backchannels / all monologue minutes; takeover_rate: share of
        episodes with at least one takeover; reply_rate: share replied within 3 s."""
        minutes = sum(r["user_speech_s"] for r in results) / 60.0
        return {
            "rate_per_min": sum(r["backchannels"] for r in results) / minutes if minutes else None,
            "takeover_rate": rate(r["takeovers"] > 0 for r in results),
            "reply_rate": rate(r["replied"] for r in results),
            "n_episodes": len(results),
        }


def _spoken_s(text: str) -> float:
    """How long the model voice takes from first to last word of `text`."""
    words = synthesize(text, MODEL_VOICE).words
    return words[-1].end_s - words[0].start_s if words else synthesize(text, MODEL_VOICE).duration_s


SCENARIO = Backchannel()

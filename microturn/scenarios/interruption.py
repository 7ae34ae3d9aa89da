"""Interruption (barge-in): the user talks over the model; it should stop within ~0.3 s
and, once the user is done, answer what the interruption asked.

The system under test only hears the user's audio, so the episode first makes it speak:
the user asks for something long ("tell me about the moon", "count to twenty"), the
reference answers at length, and the user interrupts at a random point inside one of the
answer's sentences (at least 0.4 s after it starts, at least 0.5 s before it ends). The
reference's audio is cut 0.15-0.3 s after the interruption onset; after the user has
finished it replies. Its text runs ahead of its voice, so the cut message's text is what
it had written by the first micro-turn that could hear the interruption, not the words
it said (those would be a cut decided before its cause).

Kinds of interruption (`categories`):
- `stop` ("wait, stop"): the reply acknowledges ("Okay, I'll stop.").
- `question` ("hold on, how far away is it?"): the reply answers with the topic's keywords.
- `where` (while counting: "wait, what number are you on?"): the reply says the number
  it had reached.

With the text driver the requests are typed; an interruption's onset is then the moment
the typed message has fully arrived (when the model can first know it), and the user is
"finished" at that moment too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE
from microturn.scenarios.base import (
    MODEL_VOICE,
    TEXT_LAYOUT,
    EpisodeBuilder,
    Scenario,
    check_driver,
    episode_length,
    heard_by_s,
    lead_s,
    model_speaks,
    pick,
    rng_for,
    typing_s,
    user_turn,
    user_voice,
)
from microturn.scenarios.scoring import (
    median,
    normalize,
    number_words,
    rate,
    says,
    segments_between,
    speaking_at,
)
from microturn.scenarios.turn_taking import FIRST_USER_S
from microturn.stream.episode import Episode, SpeechSegment, Timeline, Word
from microturn.stream.layout import written_before
from microturn.voices import synthesize

# A topic: its noun phrase, the reference's long answer, follow-up questions with the
# reference reply and the keywords a reply must contain (any one of them).
TOPICS: tuple[dict[str, Any], ...] = (
    {
        "topic": "the moon",
        "answer": (
            "The moon is the only natural satellite of the Earth.",
            "It is about a quarter as wide as our planet.",
            "Its gravity pulls on the oceans and causes the tides.",
            "People first walked on it in nineteen sixty nine.",
        ),
        "questions": (
            (
                "how far away is it?",
                "It is about four hundred thousand kilometers away.",
                ("kilometers", "thousand", "far"),
            ),
            (
                "why does it change shape?",
                "We see different parts of its sunny side.",
                ("sunny", "side", "sun", "light"),
            ),
        ),
    },
    {
        "topic": "coffee",
        "answer": (
            "Coffee is made from the roasted seeds of a small red fruit.",
            "It first became popular in Yemen and Ethiopia.",
            "Today it is one of the most traded crops in the world.",
            "A cup has about one hundred milligrams of caffeine.",
        ),
        "questions": (
            (
                "is it bad for sleep?",
                "Coffee late in the day can make it hard to sleep.",
                ("sleep",),
            ),
            (
                "where does it grow?",
                "It grows in warm places near the equator.",
                ("warm", "equator"),
            ),
        ),
    },
    {
        "topic": "honey bees",
        "answer": (
            "Honey bees live in large colonies with one queen.",
            "Worker bees collect nectar and pollen from flowers.",
            "They turn the nectar into honey and store it in wax cells.",
            "A strong hive can hold more than fifty thousand bees.",
        ),
        "questions": (
            (
                "do they sting?",
                "Yes, but only when they feel threatened.",
                ("yes", "threatened", "sting"),
            ),
            (
                "how do they make wax?",
                "Young bees make wax with glands on their bodies.",
                ("glands", "wax"),
            ),
        ),
    },
    {
        "topic": "volcanoes",
        "answer": (
            "A volcano is an opening in the crust of the Earth.",
            "Hot melted rock rises from deep below the surface.",
            "When pressure builds up, the volcano can erupt.",
            "Some islands, like Hawaii, were made by volcanoes.",
        ),
        "questions": (
            (
                "are any active now?",
                "Yes, dozens of volcanoes erupt every year.",
                ("yes", "erupt", "year"),
            ),
            (
                "what is lava made of?",
                "Lava is melted rock, mostly silica.",
                ("rock", "silica", "melted"),
            ),
        ),
    },
    {
        "topic": "the ocean",
        "answer": (
            "The ocean covers about seventy percent of the planet.",
            "Its deepest point is nearly eleven kilometers down.",
            "It holds most of the water on Earth.",
            "Tiny plants in the ocean make much of the oxygen we breathe.",
        ),
        "questions": (
            (
                "why is it salty?",
                "Rivers carry salt from rocks into the sea.",
                ("salt", "rocks", "rivers"),
            ),
            (
                "how cold is it deep down?",
                "Near the bottom it is only a few degrees.",
                ("degrees", "cold"),
            ),
        ),
    },
)
TOPIC_REQUESTS = (
    "Tell me about {topic}.",
    "Can you tell me about {topic}?",
    "What do you know about {topic}?",
    "Talk to me about {topic} for a while.",
    "Please explain {topic} to me.",
)
COUNT_REQUESTS = (
    "Count to {n}.",
    "Can you count to {n} for me?",
    "Please count from one to {n}.",
    "Count up to {n}, please.",
)
QUESTION_PREFIXES = ("Hold on,", "Wait,", "Sorry, quick question,", "Actually,", "Hang on,")
STOPS = (
    "Wait, stop.",
    "Okay, stop there, thanks.",
    "Hold on, please stop.",
    "Sorry, can you stop for a second?",
    "That's enough, thank you.",
)
STOP_REPLIES = ("Okay, I'll stop.", "Got it, I'll stop.", "Alright, I'll stop here.", "Okay.")
STOP_KEYWORDS = ("okay", "ok", "sure", "alright", "all right", "got it", "stop", "sorry")
WHERES = (
    "Wait, what number are you on?",
    "Hold on, where were you?",
    "Sorry, what was the last number?",
    "Hang on, which number was that?",
)
WHERE_REPLIES = ("I was at {n}.", "{N}.", "That was {n}.", "I had just said {n}.")
COUNT_TO = (15, 20)

ANSWER_DELAY_S = (0.2, 0.35)  # request end -> first word of the answer
SENTENCE_GAP_S = (0.25, 0.45)  # between the answer's sentences
ONSET_AFTER_START_S = 0.4  # the interruption lands this far into a sentence ...
ONSET_BEFORE_END_S = 0.5  # ... and this far before its end
REF_STOP_S = (0.15, 0.3)  # reference audio ends this long after the onset
REPLY_DELAY_S = (0.25, 0.4)  # user finished -> reply
FADE_S = 0.01
# Scoring.
STOP_WINDOW_S = 0.5  # the model should be quiet from onset + this (or the user's end)
STOP_OK_S = 0.5  # stop_rate_0_5s: audio ends within this of the onset
REPLY_WINDOW_S = 4.0  # the reply starts within this long after the user finished


class _Builder(EpisodeBuilder):
    """EpisodeBuilder whose reference speech can be cut off mid-sentence."""

    # (index in model_speech, the sentence, when the model could first know to stop)
    _cut: tuple[int, str, float] | None = None

    def model_says_until(
        self, text: str, at: float, stop_s: float, heard_s: float
    ) -> SpeechSegment:
        """Reference speech from `at` whose audio ends at `stop_s` (a 10 ms fade); the
        segment keeps the words begun before then. Its text (what goes on the text
        track) is settled in `build`: what was written of `text` before the model could
        hear what stops it (`heard_s`), since text runs ahead of the voice. (The words
        said would be a cut the model made before its cause: in 95% of episodes it
        wrote them all, then EOM, a median 0.58 s before the interruption began.) The
        segment returned here, and `model_speech`, still hold the words said."""
        seg, audio = self._speak(text, MODEL_VOICE, at)
        if stop_s >= seg.end_s:
            return self.model_says(text, at)
        audio = audio[: max(1, round((stop_s - at) * SAMPLE_RATE))].copy()
        fade = min(audio.size, round(FADE_S * SAMPLE_RATE))
        audio[audio.size - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        words = tuple(
            Word(w.text, w.start_s, min(w.end_s, stop_s)) for w in seg.words if w.start_s < stop_s
        )
        cut = SpeechSegment(seg.start_s, stop_s, " ".join(w.text for w in words), words)
        self._model.append((round(at * SAMPLE_RATE), audio))
        assert self._cut is None, "one cut per episode: build() rewrites only one"
        self._cut = (len(self.model_speech), text, heard_s)
        self.model_speech.append(cut)
        return cut

    def build(self, duration_s: float, *, reference: bool = True) -> Episode:
        episode = super().build(duration_s, reference=reference)
        if episode.reference is None or self._cut is None:
            return episode
        index, text, heard_s = self._cut
        speech = episode.reference.speech
        stop_turn = TEXT_LAYOUT.output_turn(heard_by_s(heard_s))
        written = written_before(
            TEXT_LAYOUT, text, episode.reference.audio, speech[index].start_s, stop_turn
        )
        speech[index] = replace(speech[index], text=written)
        return episode


class Interruption(Scenario):
    name = "interruption"
    categories = ("stop", "question", "where")

    def generate(self, seed: int, split: str = "train", driver: str = "speech") -> Episode:
        check_driver(driver)
        rng = rng_for(self.name, seed, split)
        b = _Builder(self.name, seed, split, rng, user_voice(rng, split))
        kind = str(pick(rng, self.categories))
        if kind == "where" or (kind == "stop" and rng.random() < 0.3):
            n = int(rng.integers(COUNT_TO[0], COUNT_TO[1] + 1))
            request = str(pick(rng, COUNT_REQUESTS)).format(n=n)
            # One utterance, so commas give counting pauses and words give each number's time.
            sentences: tuple[str, ...] = (
                ", ".join(number_words(i) for i in range(1, n + 1)).capitalize() + ".",
            )
            topic = None
        else:
            topic = pick(rng, TOPICS)
            request = str(pick(rng, TOPIC_REQUESTS)).format(topic=topic["topic"])
            sentences = topic["answer"]
        _, req_end = user_turn(b, request, float(rng.uniform(*FIRST_USER_S)), driver)
        if kind == "stop":
            interruption = str(pick(rng, STOPS))
        elif kind == "question":
            question, answer, keywords = pick(rng, topic["questions"])
            interruption = f"{pick(rng, QUESTION_PREFIXES)} {question}"
        else:
            interruption = str(pick(rng, WHERES))

        # Lay the answer out on paper first: where each sentence's words would be.
        plan = []
        # The answer waits until the request has been heard, as every reply does.
        t = max(req_end + rng.uniform(*ANSWER_DELAY_S), heard_by_s(req_end) + lead_s(sentences[0]))
        for sentence in sentences:
            speech = synthesize(sentence, MODEL_VOICE)
            lead = lead_s(sentence)
            last = speech.words[-1].end_s if speech.words else speech.duration_s
            plan.append((sentence, t, t + last - lead))
            t = plan[-1][2] + rng.uniform(*SENTENCE_GAP_S)
        # Onset ranges inside each sentence; a typed interruption is typed after the answer
        # began, so it can arrive no sooner than its typing time after that.
        earliest = plan[0][1] + (typing_s(interruption) if driver == "text" else 0.0)
        ranges = [
            (max(start + ONSET_AFTER_START_S, earliest), end - ONSET_BEFORE_END_S)
            for _, start, end in plan
        ]
        ranges = [r for r in ranges if r[1] - r[0] >= 0.1]
        if len(ranges) > 1:
            ranges = ranges[1:]  # let the model talk a while first
        lo, hi = pick(rng, ranges)
        target_onset = float(rng.uniform(lo, hi))
        # Speech: the first word lands on the onset. Text: the message arrives then.
        if driver == "speech":
            onset, user_end = user_turn(
                b, interruption, target_onset - lead_s(interruption, b.user_voice), driver
            )
        else:
            at = max(0.0, target_onset - typing_s(interruption))
            _, arrival = user_turn(b, interruption, at, driver)
            onset = user_end = arrival
        stop_s = onset + rng.uniform(*REF_STOP_S)

        for sentence, start, _ in plan:
            if start >= stop_s:
                break
            b.model_says_until(sentence, start - lead_s(sentence), stop_s, onset)
        spoken = [w for seg in b.model_speech for w in seg.words]
        if kind == "where":
            said = [w for w in spoken if w.start_s < onset]
            reached = _number_of(said[-1].text) if said else 1
            reply = str(pick(rng, WHERE_REPLIES)).format(
                n=number_words(reached), N=number_words(reached).capitalize()
            )
            keywords = (number_words(reached),)
        elif kind == "stop":
            reply, keywords, reached = str(pick(rng, STOP_REPLIES)), STOP_KEYWORDS, None
        else:
            reply, reached = answer, None
        finished = max(user_end, onset + STOP_WINDOW_S)
        reply_seg = model_speaks(b, reply, finished + rng.uniform(*REPLY_DELAY_S), finished)
        b.event("request_end", req_end)
        b.event(
            "interrupt",
            onset,
            interruption=kind,
            end_s=user_end,
            keywords=list(keywords),
            number=reached,
            reference_stop_s=stop_s,
        )
        b.meta.update(driver=driver, category=kind, topic=topic["topic"] if topic else "counting")
        return b.build(episode_length(max(b.end_s(), reply_seg.end_s)))

    def score(self, episode: Episode, timeline: Timeline) -> dict[str, Any]:
        """Applicable when the model is speaking at the onset. Then its audio "ends" at the
        last end of the speech it holds over [onset, max(user end, onset + 0.5 s)): speech
        that starts before the user has finished counts as not having stopped. The reply
        is the speech starting within 4 s after that; it addresses the interruption when it
        says any keyword (`where`: the number reached, +-1, as the reference counts)."""
        e = next(e for e in episode.events if e.kind == "interrupt")
        onset = e.time_s
        finished = max(e.data["end_s"], onset + STOP_WINDOW_S)
        applicable = speaking_at(timeline, onset)
        stop_latency = None
        if applicable:
            held = [s for s in timeline.speech if s.start_s < finished and s.end_s > onset]
            stop_latency = max(s.end_s for s in held) - onset
        reply = segments_between(timeline, finished, finished + REPLY_WINDOW_S)
        text = " ".join(s.text for s in reply)
        keywords = list(e.data["keywords"])
        if e.data.get("number") is not None:
            n = int(e.data["number"])
            keywords = [number_words(k) for k in (n - 1, n, n + 1) if k >= 1]
        return {
            "interruption": e.data["interruption"],
            "applicable": applicable,
            "stop_latency_s": stop_latency,
            "stopped_0_5s": None if stop_latency is None else stop_latency <= STOP_OK_S,
            "replied": bool(reply),
            "addressed": any(says(text, k) for k in keywords),
        }

    def aggregate(self, results: list[dict[str, Any]]) -> dict[str, float | None]:
        """Stop metrics over applicable episodes only (the model was speaking at the onset);
        `addressed_rate` over all episodes (an interruption deserves an answer either way)."""
        applicable = [r for r in results if r["applicable"]]
        return {
            "stop_rate_0_5s": rate(r["stopped_0_5s"] for r in applicable),
            "stop_latency_median_s": median(r["stop_latency_s"] for r in applicable),
            "addressed_rate": rate(r["addressed"] for r in results),
            "applicable_rate": rate(r["applicable"] for r in results),
            "n_episodes": len(results),
        }


def _number_of(word: str) -> int:
    """1..99 from its single-word form ("seven", "twenty"); counting words are single."""
    norm = normalize(word)
    for n in range(1, 100):
        if number_words(n) == norm:
            return n
    raise ValueError(f"{word!r} is not a counting word")


SCENARIO = Interruption()

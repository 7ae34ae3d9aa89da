"""The cascade baseline: what today's voice assistants do, measured by the same harness.

Voice activity detection on 20 ms frames decides when the user's turn ended (after
`END_SILENCE_S` of silence), pocketsphinx transcribes the turn, a turn-based text
responder answers, espeak-ng speaks the answer. Like Pipecat / LiveKit pipelines it
stops talking when the user barges in (after `BARGE_IN_S` of user speech), and it speaks
only after a user turn: it cannot remind, count time, watch the camera or speak up on
its own. Its compute time (ASR + responder + TTS, measured on this machine) delays the
reply, rounded up to the next micro-turn.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from microturn.bench.asr import transcribe
from microturn.codecs.audio import SAMPLE_RATE
from microturn.engine.runner import RawTurn, TurnReply
from microturn.scenarios.scoring import normalize, number_words
from microturn.stream.layout import Layout
from microturn.voices import Voice, synthesize

FRAME = 320  # 20 ms VAD frames
SPEECH_DBFS = -40.0
START_S = 0.2  # speech this long starts a user turn (and barges in)
END_SILENCE_S = 0.7  # silence this long ends it
BARGE_IN_S = 0.2
TTS_VOICE = Voice("espeak-ng", "en-us")


def respond(text: str, facts: dict[str, str]) -> str:
    """A turn-based responder: answers what it can parse, acknowledges the rest."""
    words = normalize(text)
    if not words:
        return ""
    answer = _arithmetic(words)
    if answer is not None:
        return answer
    for key, value in facts.items():
        if normalize(key) in words:
            return f"The {key} is {value}."
    if any(w in words for w in ("stop", "wait", "hold on")):
        return "Okay."
    if "remind me" in words or "every" in words.split():
        return "Okay, I will remind you."
    if "count down" in words:
        m = re.search(r"from (\w+(?: \w+)?)", words)
        n = _to_int(m.group(1)) if m else None
        if n is not None and 0 < n <= 20:
            return " ".join(number_words(i) for i in range(n, 0, -1)) + "."
    if words.startswith(("tell me when", "let me know", "say when", "tell me if")):
        return "Okay, I will let you know."
    if "how many" in words:
        return "Sorry, I can't see that."
    if words.startswith(("what", "how", "why", "when", "where", "who", "can", "could", "is")):
        return "Let me think. I am not sure."
    return "I see."


_OPS = {"plus": "+", "minus": "-", "times": "*", "multiplied by": "*", "divided by": "/"}


@lru_cache(maxsize=1)
def _spelled() -> dict[str, int]:
    return {number_words(n): n for n in range(100_000)}


def _to_int(phrase: str) -> int | None:
    phrase = phrase.strip()
    if phrase.isdigit():
        return int(phrase)
    return _spelled().get(phrase)


_PHRASINGS = (  # "add A and B", "subtract B from A": rewritten to "A plus B", "A minus B"
    (re.compile(r"\badd (?:up )?(.+?) and (.+)"), r"\1 plus \2"),
    (re.compile(r"\bsubtract (.+?) from (.+)"), r"\2 minus \1"),
    (re.compile(r"\bmultiply (.+?) by (.+)"), r"\1 times \2"),
    (re.compile(r"\btake away\b"), "minus"),
)


def _arithmetic(words: str) -> str | None:
    for pattern, repl in _PHRASINGS:
        words = pattern.sub(repl, words)
    for op_words, op in _OPS.items():
        m = re.search(rf"((?:\w+ ){{0,6}}?\w+) {op_words} ((?:\w+ ?){{1,7}})", words)
        if not m:
            continue
        left = _number_at_end(m.group(1))
        right = _number_at_start(m.group(2))
        if left is None or right is None:
            continue
        value = {"+": left + right, "-": left - right, "*": left * right}.get(op)
        if op == "/":
            value = left // right if right else None
        if value is not None:
            return f"{left} {op_words} {right} is {value}."
    return None


def _number_at_end(phrase: str) -> int | None:
    toks = phrase.split()
    for i in range(len(toks)):
        n = _to_int(" ".join(toks[i:]))
        if n is not None:
            return n
    return None


def _number_at_start(phrase: str) -> int | None:
    toks = phrase.split()
    for i in range(len(toks), 0, -1):
        n = _to_int(" ".join(toks[:i]))
        if n is not None:
            return n
    return None


class CascadeSystem:
    """VAD + pocketsphinx + responder + espeak-ng, micro-turn by micro-turn."""

    name = "cascade"

    def __init__(self, layout: Layout | None = None) -> None:
        from microturn.data import load_facts

        self.layout = layout or Layout.preset("tiny")
        self.facts = load_facts()

    def open(self, seed: int) -> CascadeSession:
        return CascadeSession(self)


@dataclass
class CascadeSession:
    system: CascadeSystem
    turn_audio: list[np.ndarray] = field(default_factory=list)
    speech_run_s: float = 0.0
    silence_run_s: float = 0.0
    in_turn: bool = False
    playing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    start_in_turns: int = 0  # compute latency left before the reply starts
    pending_text: str = ""
    typed: list[str] = field(default_factory=list)

    def step(self, turn: RawTurn) -> TurnReply:
        lay = self.system.layout
        spt = lay.samples_per_turn
        audio = turn.audio if turn.audio is not None else np.zeros(spt, np.float32)
        ended = self._vad(audio)
        self.typed += turn.text
        user_text = ""
        if ended:
            user_text = transcribe(np.concatenate(self.turn_audio)) if self.turn_audio else ""
            self.turn_audio = []
        if self.typed:
            user_text = (user_text + " " + " ".join(self.typed)).strip()
            self.typed = []
        step_ms = 0.0
        if user_text:
            started = time.perf_counter()
            reply = respond(user_text, self.system.facts)
            if reply:
                speech = synthesize(reply, TTS_VOICE)
                self.playing = speech.audio
                self.pending_text = reply
            step_ms = (time.perf_counter() - started) * 1000
            self.start_in_turns = int(np.ceil(step_ms / lay.micro_turn_ms))
        out = np.zeros(spt, np.float32)
        text, eom = "", False
        if self.start_in_turns > 0:
            self.start_in_turns -= 1
        elif self.playing.size:
            n = min(spt, self.playing.size)
            out[:n] = self.playing[:n]
            self.playing = self.playing[n:]
            if self.pending_text:
                text, eom, self.pending_text = self.pending_text, True, ""
        return TurnReply(out, text, eom, [], step_ms)

    def _vad(self, audio: np.ndarray) -> bool:
        """Track the user's turn; True when it just ended. Barge-in stops playback."""
        frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
        rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        ended = False
        step = FRAME / SAMPLE_RATE
        for i, active in enumerate(rms_db > SPEECH_DBFS):
            if active:
                self.speech_run_s += step
                self.silence_run_s = 0.0
                if self.speech_run_s >= START_S and not self.in_turn:
                    self.in_turn = True
                if self.in_turn and self.speech_run_s >= BARGE_IN_S and self.playing.size:
                    self.playing = np.zeros(0, np.float32)  # barge-in: stop talking
                    self.pending_text = ""
                    self.start_in_turns = 0
            else:
                self.silence_run_s += step
                if self.silence_run_s >= 0.06:
                    self.speech_run_s = 0.0
                if self.in_turn and self.silence_run_s >= END_SILENCE_S:
                    self.in_turn = False
                    ended = True
            if self.in_turn or active:
                self.turn_audio.append(frames[i])
        return ended

    def close(self) -> None:
        self.playing = np.zeros(0, np.float32)

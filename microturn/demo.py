"""`microturn demo` (what `make demo` runs): one scripted conversation with the model, in
real time.

A synthesized user (an eval-split voice, held out from training) asks to be reminded to
breathe every five seconds, later asks an arithmetic question that needs delegation, then
says "stop". The user's audio track is built once from the script below and streamed into
an engine session one micro-turn at a time; with the real clock every tick waits for its
micro-turn's deadline, so the session takes as long as the conversation. A live timeline
is printed as it goes (who speaks, what the model writes, its actions, each reminder and
its spacing), then a summary judged with the scenarios' own scorers, on the model's text
track and on what ASR hears in its audio. Written to the output folder: the model's
speech on the session's time axis (`model.wav`), the user's (`user.wav`), both mixed
(`mix.wav`), the Timeline JSON and a PNG of the timeline.

Delegated tasks go through the engine's delegator to the built-in thinker (exact
arithmetic, units, clock, the fact table): the engine reads the task the model writes
after its `delegate` action, hands it over without waiting, and puts the result (or a
failure, in words) on the model's background track. The built-in thinker answers at
once; its result is held back `THINK_HOLD_S` (1.1 s) after the task is written, so it
arrives when the delegation scenario taught the model to expect it. Delegation start,
result and the moment the model says it are printed and kept in the Timeline.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, audible_frames, write_wav
from microturn.model.checkpoint import default_checkpoint
from microturn.scenarios.base import EpisodeBuilder, rng_for, user_turn
from microturn.scenarios.delegation import QUESTIONS
from microturn.scenarios.scoring import number_words, says
from microturn.scenarios.time_awareness import ACK_GRACE_S, REMIND_REQUESTS, REMIND_TASKS, STOPS
from microturn.stream.episode import ActionEvent, Episode, Timeline
from microturn.voices import Voice

# The user speaks with flite's rms: an eval-split voice, never heard in training.
DEFAULT_VOICE = "flite:rms"
TASK, CUE, KEYWORD = REMIND_TASKS[0]  # "breathe in and out", "Breathe in and out.", "breathe"
INTERVAL_S = 5
A, B = 347, 29


@dataclass(frozen=True)
class Utterance:
    """The user says `text` from `at_s` seconds (its first word a little later: voices
    lead with silence). `role`: "request", "question" or "stop"."""

    at_s: float
    role: str
    text: str


@dataclass(frozen=True)
class Script:
    utterances: tuple[Utterance, ...]
    duration_s: float
    interval_s: float = INTERVAL_S  # the reminder interval the request asks for
    keyword: str = KEYWORD  # what makes a model utterance a reminder
    task: str = f"{A} * {B}"  # what the question asks the model to delegate
    answer: str = str(A * B)


# The wordings are the scenarios' own (time_awareness, delegation), so the model has seen
# them in training; only the voice is new to it.
SCRIPT = Script(
    (
        Utterance(1.0, "request", REMIND_REQUESTS[0].format(task=TASK, n=number_words(INTERVAL_S))),
        Utterance(17.0, "question", QUESTIONS["*"][0].format(a=f"{A:,}", b=f"{B:,}")),
        Utterance(28.0, "stop", STOPS[0]),
    ),
    duration_s=35.0,
)


@dataclass
class Said:
    """The script as placed: when each utterance is heard (first to last word)."""

    role: str
    text: str
    start_s: float
    end_s: float


def _show(text: str, n: int = 70) -> str:
    """Text for one line of the terminal: a weak model writes control bytes."""
    text = "".join(c if c.isprintable() else "·" for c in text.strip())
    return text if len(text) <= n else text[: n - 1] + "…"


def _line(time_s: float, who: str, what: str) -> str:
    return f"{time_s:6.1f} s  {who:<7} {what}"


def _voiced(pcm: np.ndarray) -> bool:
    """Speech in this audio: a 10 ms frame above the Timeline's threshold (-45 dBFS)."""
    return bool(audible_frames(pcm).any())


@dataclass
class LiveView:
    """Follows one session's outputs micro-turn by micro-turn and prints the timeline,
    with the engine's delegation records: a delegation starting (with its task), the
    thinker's result arriving on the background track, the model saying it."""

    said: list[Said]
    keyword: str
    micro_turn_s: float
    emit: Callable[[str], None]
    messages: list[tuple[float, str]] = field(default_factory=list)  # (start, text)
    reminders: list[float] = field(default_factory=list)
    delegate_actions: int = 0  # read off the action track
    delegations: list[ActionEvent] = field(default_factory=list)  # started, with a task
    background: list[dict[str, Any]] = field(default_factory=list)  # thinker results
    spoken: list[ActionEvent] = field(default_factory=list)  # results the model said
    _partial: tuple[float, str] | None = None
    _voice_from: float | None = None
    _voice_last: float = 0.0

    @property
    def request_end_s(self) -> float:
        return next(s.end_s for s in self.said if s.role == "request")

    # ---- the user's side (called before each micro-turn is fed) ------------------------
    def user_window(self, start_s: float, end_s: float) -> None:
        for s in self.said:
            if start_s <= s.start_s < end_s:
                self.emit(_line(s.start_s, "user", f'"{_show(s.text)}"'))

    # ---- the model's side (the session's on_output) ------------------------------------
    def on_output(self, _session: Any, out: Any) -> None:
        t = out.play_at_s
        events = list(getattr(out, "events", ()))
        self.delegate_actions += sum(a.kind == "delegate" for a in out.actions)
        for e in events:
            if e.kind == "delegation_result":
                self._result(e)
        started = [e for e in events if e.kind == "delegate"]
        spoken = [e for e in events if e.kind == "delegation_spoken"]
        if out.text:
            start, text = self._partial or (t, "")
            self._partial = (start, text + out.text)
        if out.end_of_message and self._partial is not None:
            if started:  # the message that just ended is the task of this delegation
                self.messages.append(self._partial)
            else:
                self._message(*self._partial, spoken=spoken)
            self._partial = None
        for e in started:
            self.delegations.append(e)
            did = e.data.get("id")
            self.emit(
                _line(
                    e.time_s,
                    "model",
                    f'[delegate] "{_show(e.text)}"' + (f" ({did})" if did else ""),
                )
            )
        self.spoken += spoken
        self._voice(t, _voiced(out.audio))

    def finish(self, end_s: float) -> None:
        """Flush what is still open when the session ends."""
        if self._partial is not None:
            start, text = self._partial
            self._message(start, text, unfinished=True)
            self._partial = None
        if self._voice_from is not None:
            self._voice(end_s, False, force=True)
        untold = self.delegate_actions - len(self.delegations)
        if untold > 0:
            self.emit(
                _line(end_s, "model", f"{untold} delegate action(s) never got a task written")
            )

    def _result(self, e: ActionEvent) -> None:
        r = {
            "time_s": e.time_s,
            "text": e.text,
            "task": e.data.get("task"),
            "id": e.data.get("id"),
            "error": e.data.get("error"),
        }
        self.background.append(r)
        failed = f" [failed: {r['error']}]" if r["error"] else ""
        self.emit(
            _line(
                e.time_s,
                "thinker",
                f'-> "{_show(e.text)}" (for "{_show(str(r["task"]), 30)}"){failed}',
            )
        )

    def _message(
        self,
        start: float,
        text: str,
        *,
        unfinished: bool = False,
        spoken: list[ActionEvent] | None = None,
    ) -> None:
        self.messages.append((start, text))
        what = f'"{_show(text)}"' + (" (unfinished)" if unfinished else "")
        if says(text, self.keyword) and start >= self.request_end_s + ACK_GRACE_S:
            prev = self.reminders[-1] if self.reminders else None
            self.reminders.append(start)
            since = (
                f"{start - prev:.1f} s after the last"
                if prev is not None
                else f"{start - self.request_end_s:.1f} s after the request ended"
            )
            what += f"   <- reminder {len(self.reminders)}, {since}"
        for e in spoken or ():
            what += f'   <- says the result of "{_show(str(e.data.get("task")), 30)}"'
        self.emit(_line(start, "model", what))

    def _voice(self, t: float, active: bool, *, force: bool = False) -> None:
        """'voice on' when the model's audio turns to speech, 'voice off' after 0.4 s of
        silence (shorter pauses stay inside one utterance)."""
        if active:
            if self._voice_from is None:
                self._voice_from = t
                self.emit(_line(t, "model", "(voice on)"))
            self._voice_last = t + self.micro_turn_s
        elif self._voice_from is not None and (force or t - self._voice_last >= 0.4 - 1e-9):
            spoke = self._voice_last - self._voice_from
            self.emit(_line(self._voice_last, "model", f"(voice off, {spoke:.1f} s)"))
            self._voice_from = None


def build_user(
    script: Script, voice: Voice | str, micro_turn_s: float, seed: int = 0
) -> tuple[Episode, list[Said]]:
    """The user's side of the session as an Episode (audio, what was said when) with the
    events the scenarios' scorers read: the reminder request (and when each reminder is
    due, until "stop"), the question and its answer, the stop."""
    voice = Voice.parse(voice) if isinstance(voice, str) else voice
    roles = [u.role for u in script.utterances]
    if roles.count("request") != 1 or any(r not in ("request", "question", "stop") for r in roles):
        raise ValueError(f"a demo script has one request, then questions or a stop: {roles}")
    b = EpisodeBuilder("demo", seed, "eval", rng_for("demo", seed, "eval"), voice)
    said = []
    for u in sorted(script.utterances, key=lambda u: u.at_s):
        start, end = user_turn(b, u.text, u.at_s, "speech")
        said.append(Said(u.role, u.text, start, end))
    n = math.ceil(script.duration_s / micro_turn_s - 1e-9)
    duration = round(n * micro_turn_s, 6)
    if said[-1].end_s > duration:
        raise ValueError(f"the script's last utterance ends after {duration:.1f} s")
    request = next(s for s in said if s.role == "request")
    stop = next((s for s in said if s.role == "stop" and s.start_s > request.end_s), None)
    until = stop.start_s if stop else duration - 1.0  # a reminder due later cannot be judged
    dues = []
    while request.end_s + (len(dues) + 1) * script.interval_s < until:
        dues.append(round(request.end_s + (len(dues) + 1) * script.interval_s, 3))
    b.event(
        "request_end",
        request.end_s,
        category="remind_every",
        interval_s=script.interval_s,
        expected=[[d, script.keyword] for d in dues],
        cue=script.keyword,
        stop_s=stop.end_s if stop else None,
    )
    for d in dues:
        b.event("reminder_due", d)
    question = next((s for s in said if s.role == "question"), None)
    if question is not None:
        b.event("question", question.start_s, text=question.text, driver="speech")
        b.event(
            "question_end",
            question.end_s,
            answer=script.answer,
            task_kind="arithmetic",
            task=script.task,
        )
    if stop is not None:
        b.event("stop", stop.end_s)
    episode = b.build(duration, reference=False)
    episode.id = "demo"
    episode.meta.update(script=[dataclasses.asdict(s) for s in said])
    return episode, said


def run_demo(
    out: Path,
    model_dir: Path | None = None,
    *,
    realtime: bool = True,
    voice: str = DEFAULT_VOICE,
    seed: int = 0,
    script: Script | None = None,
    asr: bool = True,
    threads: int | None = 1,
    emit: Callable[[str], None] | None = None,
) -> int:
    """Run the scripted session and write its outputs to `out`; returns an exit code.

    `threads`: torch's intra-op threads (None: torch's choice). One is the default: one
    session of a small model steps in ~30 ms on one core, while two threads on a machine
    whose other core is busy stall for seconds (measured: p50 29 ms with one thread,
    175 ms and 6 s worst with two, beside another process on 2 cores).
    """
    import torch

    say = emit or (lambda s: print(s, flush=True))
    script = script or SCRIPT
    if model_dir is None:
        try:
            model_dir = default_checkpoint()
        except ValueError as err:
            print(f"microturn demo: {err}", file=sys.stderr)
            return 2
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out, Path(model_dir), realtime, voice, seed, script, asr, say)
    finally:
        torch.set_num_threads(before)


def _run(
    out: Path,
    model_dir: Path,
    realtime: bool,
    voice: str,
    seed: int,
    script: Script,
    asr: bool,
    say: Callable[[str], None],
) -> int:
    from microturn.background import BuiltinThinker, Delegator
    from microturn.engine.clock import RealClock, SimulatedClock
    from microturn.engine.engine import Engine
    from microturn.engine.runner import THINK_HOLD_S
    from microturn.engine.vocoder import StreamingVocoder, decode_many
    from microturn.model import from_pretrained
    from microturn.model.transformer import count_parameters

    model = from_pretrained(model_dir)
    lay = model.layout
    episode, said = build_user(script, voice, lay.micro_turn_s, seed)
    total, active = count_parameters(model)
    say(
        f"microturn demo: model {model_dir} ({total / 1e6:.1f}M parameters, "
        f"{active / 1e6:.1f}M active), user voice {episode.meta['user_voice']} (held out), "
        + ("real time" if realtime else "simulated clock (--no-realtime)")
        + f", {lay.micro_turn_ms:g} ms micro-turns, {episode.duration_s:.0f} s"
    )

    # Real time: the thinker runs on the delegator's worker thread, off the tick; on the
    # simulated clock it runs inline (deterministic). Either way its answer is held back
    # to THINK_HOLD_S after the task was written, on the engine's clock.
    clock = RealClock() if realtime else SimulatedClock()
    delegator = Delegator(
        BuiltinThinker(), clock=clock.now, inline=not realtime, hold_s=THINK_HOLD_S
    )
    engine = Engine(model, max_sessions=1, clock=clock, keep_audio=True, delegator=delegator)
    warm = engine.open("warm-up")  # the first steps pay for torch's lazy set-up
    for _ in range(2):
        warm.push_audio(np.zeros(lay.samples_per_turn, np.float32))
        engine.tick()
    engine.close(warm)
    voc = StreamingVocoder(n_iter=engine.vocoder_iters)  # and librosa's first decode (JIT)
    for _ in range(2):
        decode_many([voc], [np.full((lay.frames_per_turn, 80), 8, np.uint8)])
    session = engine.open("demo", seed=seed)
    view = LiveView(said, script.keyword, lay.micro_turn_s, say)
    session.on_output = view.on_output
    spt = lay.samples_per_turn
    audio = episode.user_audio
    n = lay.n_turns(episode.duration_s)

    def feed(t: int) -> None:
        a, b = lay.input_start_s(t), lay.input_start_s(t + 1)
        view.user_window(a, b)
        session.push_audio(audio[t * spt : (t + 1) * spt])

    say(f"{'time':>8}  {'who':<7} what")
    started = time.monotonic()
    interrupted = False
    try:
        engine.run(n, feed)
    except KeyboardInterrupt:
        interrupted = True
        say(f"interrupted after {session.turn * lay.micro_turn_s:.1f} s; writing what there is")
    wall_s = time.monotonic() - started
    view.finish(lay.output_start_s(session.turn))
    try:
        _finish(out, model_dir, realtime, script, episode, session, view, wall_s, asr, say)
    finally:
        engine.shutdown()  # the delegator's threads go; the session's records stay readable
    return 130 if interrupted else 0


def _finish(
    out: Path,
    model_dir: Path,
    realtime: bool,
    script: Script,
    episode: Episode,
    session: Any,
    view: LiveView,
    wall_s: float,
    asr: bool,
    say: Callable[[str], None],
) -> None:
    from microturn.bench.asr import asr_timeline
    from microturn.bench.interact import plot_episode
    from microturn.scenarios.delegation import SCENARIO as DELEGATION
    from microturn.scenarios.time_awareness import SCENARIO as TIME_AWARENESS

    lay = session.layout
    timeline = session.timeline()  # its `delegate` actions carry their tasks
    timeline.episode_id = episode.id
    timeline.meta["demo"] = {
        "model": str(model_dir),
        "user_voice": episode.meta["user_voice"],
        "realtime": realtime,
        "wall_s": round(wall_s, 3),
        "script": episode.meta["script"],
        "background": view.background,
    }
    # The model's speech on the session's time axis (its first sample plays at 0.2 s).
    n = episode.user_audio.size
    played = session.audio()
    start = round(session.recorder.audio_start_s * SAMPLE_RATE)
    model_audio = np.zeros(n, np.float32)
    model_audio[start : start + played.size] = played[: max(0, n - start)]
    if asr:
        say("(transcribing the model's speech with pocketsphinx, drawing the timeline)")
        heard = asr_timeline(timeline, model_audio)
    else:
        heard = dataclasses.replace(timeline, speech=[], meta={"speech_source": "none"})

    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "model.wav", model_audio)
    write_wav(out / "user.wav", episode.user_audio)
    write_wav(out / "mix.wav", np.clip(episode.user_audio + model_audio, -1.0, 1.0))
    timeline.save(out / "timeline.json")
    if asr:
        heard.save(out / "heard.json")
    plot_episode(episode, timeline, heard, out / "timeline.png")

    say("")
    say("summary")
    request = next(e for e in episode.events if e.kind == "request_end")
    dues = [d for d, _ in request.data["expected"]]
    say(
        f"  reminders: asked for every {script.interval_s:g} s after the request ended at "
        f"{request.time_s:.1f} s; due at " + ", ".join(f"{d:.1f}" for d in dues) + " s"
    )
    views = [("text track", timeline)] + ([("heard (ASR)", heard)] if asr else [])
    for name, tl in views:
        said = _reminders(tl, script.keyword, request.time_s)
        r = TIME_AWARENESS.score(episode, tl)
        if said:
            gaps = np.diff([request.time_s, *said])
            say(
                f"    {name}: at {', '.join(f'{t:.1f}' for t in said)} s; spacing "
                f"{', '.join(f'{g:.1f}' for g in gaps)} s (first from the request's end); "
                f"{r['matched']} of {r['expected']} on time, {r['extra']} extra"
            )
        else:
            say(f"    {name}: no reminder at all")
    stop = next((e for e in episode.events if e.kind == "stop"), None)
    if stop is not None:
        say(f'  stop: "{_show(_said_text(view.said, "stop"))}" ended at {stop.time_s:.1f} s')
        for name, tl in views:
            said = _reminders(tl, script.keyword, request.time_s)
            after = [t for t in said if t >= stop.time_s]
            if after:
                verdict = "kept reminding after it, at " + ", ".join(f"{t:.1f}" for t in after)
                verdict += " s"
            elif said:
                verdict = "no reminder after it: it stopped"
            else:
                verdict = "no reminders, so nothing to stop"
            say(f"    {name}: {verdict}")
    question = next((e for e in episode.events if e.kind == "question"), None)
    if question is not None:
        acts = [a for a in timeline.actions if a.kind == "delegate"]
        first = next((a for a in acts if a.time_s >= question.time_s), None)
        if first is None:
            did = "did not delegate after the question"
        else:
            task = f'"{_show(first.text, 40)}"' if first.text else "(no task written)"
            did = f"delegated {task} at {first.time_s:.1f} s"
        say(f"  delegation: {did} ({len(acts)} delegate action(s) in the whole session)")
        got = [
            f'"{_show(r["text"], 40)}" at {r["time_s"]:.1f} s'
            + (f" (failed: {r['error']})" if r["error"] else "")
            for r in view.background
        ]
        say("    thinker answered " + (", ".join(got) if got else "nothing"))
        said = [f'"{_show(e.text, 40)}" at {e.time_s:.1f} s' for e in view.spoken]
        say(
            "    the model said a result: " + ", ".join(said)
            if said
            else "    the model never said a result it got"
        )
        for name, tl in views:
            r = DELEGATION.score(episode, tl)
            when = (
                f"said {r['delay_s']:.1f} s after the question ended"
                if r["correct"]
                else "not said within 10 s of the question"
            )
            say(f"    answer {script.answer} ({name}): {when}")
    voiced = sum(s.end_s - s.start_s for s in timeline.speech)
    texts = [m for m in view.messages if m[1].strip()]
    if not texts and voiced == 0:
        say("  the model said nothing: no text on its text track, no audio above -45 dBFS")
    else:
        say(
            f"  the model wrote {len(texts)} message(s) and voiced {voiced:.1f} s of audio"
            + (f"; ASR heard {len(heard.speech)} stretch(es) of speech" if asr else "")
        )
    m = session.metrics
    say(
        f"  timing: {m.turns} micro-turns of {lay.micro_turn_ms:g} ms in {wall_s:.1f} s "
        f"({'real time' if realtime else 'simulated clock'})"
    )
    if m.step_ms:
        say(
            f"    step p50 {np.percentile(m.step_ms, 50):.0f} ms, "
            f"p99 {np.percentile(m.step_ms, 99):.0f} ms"
        )
        # Real clock: lateness = how long after its deadline a micro-turn's output was
        # ready (its step time, plus any backlog); behind = over a whole micro-turn, so
        # the next tick started late. Simulated clock: only compute over a micro-turn.
        p50, p99 = np.percentile(m.lateness_ms, [50, 99])
        limit = lay.micro_turn_ms if realtime else 0.0
        behind = sum(x > limit for x in m.lateness_ms)
        say(
            f"    lateness (output ready after its deadline) p50 {p50:.0f} ms, p99 {p99:.0f} ms,"
            f" worst {max(m.lateness_ms):.0f} ms; micro-turns that fell behind (over "
            f"{lay.micro_turn_ms:g} ms): {behind}; missing inputs {m.missing_inputs}"
        )
    files = ["model.wav (its speech, on the session's time axis)", "user.wav", "mix.wav"]
    files += ["timeline.json"] + (["heard.json (ASR)"] if asr else []) + ["timeline.png"]
    say(f"  wrote {out}/: " + ", ".join(files))


def _said_text(said: list[Said], role: str) -> str:
    return next((s.text for s in said if s.role == role), "")


def _reminders(timeline: Timeline, keyword: str, request_end_s: float) -> list[float]:
    """Start times of the model's utterances that say the keyword after the request (an
    acknowledgement right after it may repeat the task: the scorer's grace)."""
    return [
        round(s.start_s, 2)
        for s in sorted(timeline.speech, key=lambda s: s.start_s)
        if s.start_s >= request_end_s + ACK_GRACE_S and says(s.text, keyword)
    ]

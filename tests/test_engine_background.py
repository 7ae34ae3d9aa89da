"""The engine's delegation: a `delegate` action's task goes to a thinker without holding
up a tick, the result comes back on the background track, and its start, arrival and the
moment the model says it land in the Timeline and in each tick's events.

The model is a tiny untrained one whose text and action outputs are replaced by a script
after each real step (`Scripted`), so what it "writes" is exact."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque

import numpy as np
import pytest
import torch

from microturn.background import (
    FAILURE_TEXT,
    BuiltinThinker,
    ContextPackage,
    Delegator,
    ThinkerError,
)
from microturn.bench.interact import recording_for
from microturn.codecs.text import ByteTokenizer, Special
from microturn.engine.clock import RealClock, SimulatedClock
from microturn.engine.engine import Engine
from microturn.engine.runner import THINK_HOLD_S, ModelSystem, Recording, run_recording
from microturn.model import InteractionModel, ModelConfig
from microturn.scenarios.delegation import RESULT_DELAY_S, Delegation
from microturn.stream.episode import TextEvent

T = 0.2  # the tiny preset's micro-turn


@pytest.fixture(scope="module")
def model() -> InteractionModel:
    torch.manual_seed(0)
    return InteractionModel(ModelConfig.preset("tiny")).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two fight a busy machine's other work and a step takes seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Scripted:
    """Runs the real step, then overwrites its text and action outputs with a script:
    `say(turn, text)` writes a message from that micro-turn on (4 bytes per micro-turn,
    queued like the model's text track), `delegate(turn, task)` a `delegate` action and
    its task. Every session gets the same script, by its own micro-turn count.
    `answer`: a reply template said 2 micro-turns after a whole message has come in on
    the background track ("it's {}"). `silent`: its speech frames are silence (an
    untrained model's noise would swallow every text-only segment of the Timeline)."""

    def __init__(
        self,
        model: InteractionModel,
        monkeypatch: pytest.MonkeyPatch,
        *,
        answer: str | None = None,
        silent: bool = False,
    ) -> None:
        self.layout = model.layout
        self.real = model.step
        self.plan: dict[int, list[tuple[str, str]]] = {}
        self.queue: dict[int, deque[int]] = {}
        self.turns: dict[int, int] = {}  # batch row -> its micro-turn
        self.fail_at: set[int] = set()
        self.answer = answer
        self.silent = silent
        self.heard = bytearray()  # the background track, row 0
        monkeypatch.setattr(model, "step", self.step)

    def say(self, turn: int, text: str) -> Scripted:
        self.plan.setdefault(turn, []).append(("say", text))
        return self

    def delegate(self, turn: int, task: str) -> Scripted:
        self.plan.setdefault(turn, []).append(("delegate", task))
        return self

    def step(self, state, inputs, *, sampling=None, teacher=None):
        b = state.batch_size
        turns = [self.turns.get(row, 0) for row in range(b)]
        if turns[0] in self.fail_at:
            self.fail_at.discard(turns[0])
            raise RuntimeError("injected step failure")
        result = self.real(state, inputs, sampling=sampling, teacher=teacher)
        lay = self.layout
        if self.answer is not None:
            for tok in inputs["background"][0, 0].tolist():
                if tok == Special.EOM:
                    reply = self.answer.format(self.heard.decode())
                    self.say(turns[0] + 2, reply)
                    self.heard = bytearray()
                elif tok < 256:
                    self.heard.append(tok)
        text = torch.full((b, lay.model_text_slots), int(Special.PAD), dtype=torch.long)
        action = torch.full((b, lay.action_slots), int(Special.PAD), dtype=torch.long)
        tok = ByteTokenizer()
        for row, turn in enumerate(turns):
            q = self.queue.setdefault(row, deque())
            for kind, words in self.plan.get(turn, []):
                if kind == "delegate":
                    action[row, 0] = int(Special.DELEGATE)
                q.extend(tok.encode(words, eom=True))
            for i in range(min(lay.model_text_slots, len(q))):
                text[row, i] = q.popleft()
            self.turns[row] = turn + 1
        audio = torch.zeros_like(result.model_audio) if self.silent else result.model_audio
        return dataclasses.replace(
            result,
            model_text=text.to(result.model_text.dtype),
            model_action=action.to(result.model_action.dtype),
            model_audio=audio,
        )


class Recorder:
    """A thinker that keeps every package it gets and answers from a table."""

    name = "recorder"

    def __init__(self, answers: dict[str, str] | None = None, delay_s: float = 0.0) -> None:
        self.answers = answers or {}
        self.delay_s = delay_s
        self.packages: list[ContextPackage] = []
        self.cancelled = threading.Event()

    def think(self, package: ContextPackage, cancel: threading.Event) -> str:
        self.packages.append(package)
        if self.delay_s and cancel.wait(self.delay_s):
            self.cancelled.set()
            raise ThinkerError("cancelled")
        if package.task not in self.answers:
            raise ThinkerError("unsupported")
        return self.answers[package.task]


def capture_background(session) -> dict[int, list[str]]:
    """What went onto the session's background track, per micro-turn."""
    seen: dict[int, list[str]] = {}
    real = session.packer.pack

    def pack(inputs, outputs=None):
        if inputs.background:
            seen[session.packer.turn] = list(inputs.background)
        return real(inputs, outputs)

    session.packer.pack = pack
    return seen


def simulated_engine(model, thinker, hold_s: float) -> Engine:
    clock = SimulatedClock()
    delegator = Delegator(thinker, clock=clock.now, inline=True, hold_s=hold_s)
    return Engine(model, max_sessions=2, clock=clock, delegator=delegator)


def run_ticks(engine: Engine, n: int, start: int = 0) -> list[dict]:
    """n micro-turns on the engine's clock (silence from every session)."""
    outs = []
    spt = engine.layout.samples_per_turn
    for t in range(start, start + n):
        for s in engine.rows:
            s.push_audio(np.zeros(spt, np.float32))
        deadline = (t + 1) * T
        engine.clock.sleep_until(deadline)
        outs.append(engine.tick(deadline))
    return outs


def events_of(outs: list[dict], sid: str) -> list:
    return [e for o in outs if sid in o for e in o[sid].events]


def test_task_transcript_result_and_timeline(model, monkeypatch) -> None:
    script = Scripted(model, monkeypatch)
    script.say(2, "let me see")
    script.delegate(5, "347 * 29")  # bytes in micro-turns 5, 6, 7 (EOM): submitted at 7
    script.say(16, "that's 10,063")
    thinker = Recorder({"347 * 29": "10063"})
    engine = simulated_engine(model, thinker, hold_s=1.0)
    s = engine.open("a")
    frame = np.full((80, 80, 3), 7, np.uint8)
    s.push_frame(frame)
    s.push_text("what is 347 times 29?")
    seen = capture_background(s)
    outs = run_ticks(engine, 22)

    # the task, with the conversation so far and the camera frame
    (p,) = thinker.packages
    assert p.task == "347 * 29" and p.session_id == "a"
    assert [(x.role, x.text) for x in p.transcript] == [
        ("user", "what is 347 times 29?"),
        ("model", "let me see"),
    ]
    assert p.transcript[0].time_s == 0.0 and p.transcript[1].time_s == pytest.approx(0.6)
    assert p.frame is not None and np.array_equal(p.frame, frame)
    assert p.session_s == pytest.approx(1.6)  # the tick that read the task's EOM

    # the result reaches the background track once the hold is over, not before
    (arrived,) = [t for t, texts in seen.items() if texts == ["10063"]]
    submitted = 7
    assert arrived == submitted + round(1.0 / T)  # held 1 s on the engine's clock

    # events per tick and the Timeline: start (with its task), result, spoken
    ev = events_of(outs, "a")
    assert [e.kind for e in ev] == ["delegate", "delegation_result", "delegation_spoken"]
    start, result, spoken = ev
    assert start.text == "347 * 29" and start.time_s == pytest.approx((5 + 1) * T)
    assert start.data["id"] == result.data["id"] == spoken.data["id"]
    assert start.data["transcript_lines"] == 2 and start.data["frame_shape"] == [80, 80, 3]
    assert result.text == "10063" and result.data["ok"] and result.data["thinker"] == "recorder"
    assert arrived * T <= result.time_s < (arrived + 1) * T  # inside the window it went in
    assert spoken.text == "that's 10,063" and spoken.time_s == pytest.approx((16 + 1) * T)
    tl = s.timeline()
    kinds = [(a.kind, a.text) for a in tl.actions]
    assert kinds == [
        ("delegate", "347 * 29"),  # the bare action read off the action track, completed
        ("delegation_result", "10063"),
        ("delegation_spoken", "that's 10,063"),
    ]
    # the task is not a model line of the transcript; what the model said is
    assert [x.text for x in s.transcript if x.role == "model"] == ["let me see", "that's 10,063"]
    assert s.delegations == set()
    engine.shutdown()


def test_several_in_flight_and_failures_are_spoken(model, monkeypatch) -> None:
    """Two delegations at once; one thinker cannot read its task and one raises a bug:
    each failure is a sentence on the background track, like any result."""

    class Mixed(Recorder):
        def think(self, package, cancel):
            if package.task == "crash":
                raise RuntimeError("a bug in a thinker")
            return super().think(package, cancel)

    script = Scripted(model, monkeypatch)
    script.delegate(1, "1 + 1").delegate(3, "write a poem").delegate(5, "crash")
    engine = simulated_engine(model, Mixed({"1 + 1": "2"}), hold_s=0.4)
    s = engine.open("a")
    seen = capture_background(s)
    outs = run_ticks(engine, 12)
    results = [e for e in events_of(outs, "a") if e.kind == "delegation_result"]
    assert [(r.text, r.data["error"]) for r in results] == [
        ("2", None),
        (FAILURE_TEXT["unsupported"], "unsupported"),
        (FAILURE_TEXT["error"], "error"),
    ]
    assert "a bug" in results[2].data["detail"]
    pushed = [text for texts in seen.values() for text in texts]
    assert pushed == ["2", FAILURE_TEXT["unsupported"], FAILURE_TEXT["error"]]
    engine.shutdown()


def test_a_thinker_that_takes_2_s_never_makes_a_tick_late(model, monkeypatch) -> None:
    """Real clock, 200 ms micro-turns: the delegation runs beside the ticks; submitting
    and polling cost well under a millisecond; no micro-turn falls behind."""
    script = Scripted(model, monkeypatch)
    script.delegate(1, "slow")  # 4 bytes + EOM: the task is complete in micro-turn 2
    thinker = Recorder({"slow": "done"}, delay_s=2.0)
    engine = Engine(model, max_sessions=1, clock=RealClock(), thinker=thinker)
    warm = engine.open("warm")  # torch's first steps are slow: not what is measured
    for _ in range(3):
        warm.push_audio(np.zeros(3200, np.float32))
        engine.tick()
    engine.close(warm)
    script.turns.clear()

    spent: dict[str, list[float]] = {"submit": [], "poll": []}
    for name in spent:
        real = getattr(engine.delegator, name)

        def timed(*a, _real=real, _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                spent[_name].append((time.perf_counter() - t0) * 1000)

        monkeypatch.setattr(engine.delegator, name, timed)

    s = engine.open("a")
    outs = []
    s.on_output = lambda _s, out: outs.append((time.monotonic(), out))
    engine.run(17, feed=lambda t: s.push_audio(np.zeros(3200, np.float32)))
    submitted_at = next(at for at, o in outs if any(e.kind == "delegate" for e in o.events))
    arrived_at = next(at for at, o in outs if any(e.kind == "delegation_result" for e in o.events))
    late = [o.lateness_ms for _, o in outs]
    print(
        f"lateness p50 {np.median(late):.1f} ms, max {max(late):.1f} ms; submit "
        f"{max(spent['submit']):.3f} ms; poll max {max(spent['poll']):.3f} ms over "
        f"{len(spent['poll'])} ticks; result {arrived_at - submitted_at:.2f} s after submit"
    )
    assert len(spent["submit"]) == 1 and max(spent["submit"]) < 5.0
    assert max(spent["poll"]) < 5.0
    assert max(late) < 200.0  # every micro-turn's output was ready within its micro-turn
    # the result went into the first micro-turn after the thinker answered
    assert 1.9 < arrived_at - submitted_at < 2.7
    (r,) = [e for _, o in outs for e in o.events if e.kind == "delegation_result"]
    assert r.text == "done" and r.data["ok"]
    engine.shutdown()


def test_closing_a_session_cancels_its_delegation(model, monkeypatch) -> None:
    script = Scripted(model, monkeypatch)
    script.delegate(1, "x")
    thinker = Recorder({"x": "never said"}, delay_s=5.0)
    engine = Engine(model, max_sessions=2, thinker=thinker)
    a, b = engine.open("a"), engine.open("b")
    run_ticks(engine, 3)
    (did,) = a.delegations
    (other,) = b.delegations  # the same script: b delegated too
    assert {f["id"] for f in engine.delegator.in_flight()} == {did, other}
    engine.close(a)
    assert {f["id"] for f in engine.delegator.in_flight()} == {other}
    assert thinker.cancelled.wait(2.0)  # the thinker was told to stop
    outs = run_ticks(engine, 2, start=3)
    assert all("a" not in o for o in outs)
    assert not [e for e in events_of(outs, "b") if e.kind == "delegation_result"]
    engine.shutdown()
    assert engine.delegator._closed and engine.rows == []


def test_a_failed_step_gives_back_the_inputs_it_took(model, monkeypatch) -> None:
    """The rollback restores typed text, background results (one a delegation result
    polled in that very tick) and audio; the retry consumes them as if nothing failed."""
    script = Scripted(model, monkeypatch)
    script.delegate(0, "347 * 29")  # submitted at micro-turn 2, held 0.4 s: due at 4
    engine = simulated_engine(model, BuiltinThinker(), hold_s=0.4)
    s = engine.open("a")
    run_ticks(engine, 4)
    chunk = np.linspace(-0.1, 0.1, 3200, dtype=np.float32)
    s.push_audio(chunk)
    s.push_text("hello")
    s.push_background("injected")
    metrics = (s.metrics.missing_inputs, s.metrics.dropped_samples)
    packer_turn = s.packer.turn
    script.fail_at.add(4)
    engine.clock.sleep_until(5 * T)
    with pytest.raises(RuntimeError, match="injected step failure"):
        engine.tick(5 * T)
    assert s._text == ["hello"]
    assert s._background == ["injected", "10063"]  # the result polled in the failed tick
    assert np.array_equal(s._audio, chunk)
    assert (s.metrics.missing_inputs, s.metrics.dropped_samples) == metrics
    assert s.packer.turn == packer_turn and s.turn == 4
    seen = capture_background(s)
    out = engine.tick(5 * T)["a"]  # the retry
    assert out.missing == () and seen == {4: ["injected", "10063"]}
    assert [e.kind for e in out.events] == ["delegation_result"]  # recorded once
    assert s._text == [] and s._background == [] and s._audio.size == 0
    assert [a.kind for a in s.timeline().actions].count("delegation_result") == 1
    engine.shutdown()


def test_without_a_thinker_the_task_is_still_recorded(model, monkeypatch) -> None:
    Scripted(model, monkeypatch).delegate(1, "lookup: capital of australia")
    engine = Engine(model, max_sessions=1)
    s = engine.open("a")
    outs = run_ticks(engine, 12)
    (start,) = events_of(outs, "a")
    assert (start.kind, start.text, start.data) == ("delegate", "lookup: capital of australia", {})
    assert [(a.kind, a.text) for a in s.timeline().actions] == [
        ("delegate", "lookup: capital of australia")
    ]


def test_offline_runs_answer_their_own_delegations(model, monkeypatch) -> None:
    """`ModelSystem` (bench interact, `microturn run`): the built-in thinker inline on
    the simulated clock; the episode's own background results are not injected."""
    assert RESULT_DELAY_S[0] <= 0.4 + THINK_HOLD_S <= RESULT_DELAY_S[1]
    system = ModelSystem(model)
    assert system.delegates and isinstance(system.thinker, BuiltinThinker)
    episode = Delegation().generate(0, "eval", "text")
    assert episode.background  # the reference result the scenario would inject
    assert recording_for(episode, system).background == []
    assert recording_for(episode, ModelSystem(model, delegate=False)).background

    script = Scripted(model, monkeypatch)
    script.delegate(3, "347 * 29").say(12, "it's 10063")
    rec = Recording(np.zeros(16000 * 3, np.float32), text=[TextEvent(0.1, "347 times 29?")])
    tl = run_recording(system, rec, tail_s=0.2).timeline
    assert [(a.kind, a.text) for a in tl.actions] == [
        ("delegate", "347 * 29"),
        ("delegation_result", "10063"),
        ("delegation_spoken", "it's 10063"),
    ]
    start, result, _ = tl.actions
    assert start.data["transcript_lines"] == 1
    # submitted at the tick of micro-turn 5 (input window ends 1.2 s), held THINK_HOLD_S
    assert result.time_s == pytest.approx(1.2 + THINK_HOLD_S)
    assert result.time_s - start.time_s == pytest.approx(RESULT_DELAY_S[0])


@pytest.mark.parametrize("seed", [1, 3])  # arithmetic (spoken question), a lookup (typed)
def test_the_delegation_scenario_runs_end_to_end_on_the_builtin_thinker(
    model, monkeypatch, seed
) -> None:
    """The benchmark's path (`recording_for` + `run_recording` + the scorer) with a model
    that acts as the scenario's reference does: it delegates the reference task at the
    reference time and, once its background track has brought a result in, says it. The
    result comes from the built-in thinker: nothing from the episode is injected."""
    scenario = Delegation()
    episode = scenario.generate(seed, "eval", "speech" if seed == 1 else "text")
    (act,) = episode.reference.actions
    script = Scripted(model, monkeypatch, answer="it's {}", silent=True)
    script.delegate(model.layout.output_turn(act.time_s), act.text)
    system = ModelSystem(model)
    tl = run_recording(system, recording_for(episode, system), seed=seed).timeline
    score = scenario.score(episode, tl)
    assert score["delegated"] and score["task"] == act.text
    assert score["correct"], [(s.start_s, s.text) for s in tl.speech]
    kinds = [a.kind for a in tl.actions]
    assert kinds == ["delegate", "delegation_result", "delegation_spoken"]
    result = tl.actions[1]
    assert result.data["thinker"] == "builtin" and result.text == episode.meta["answer"]
    # the result arrived THINK_HOLD_S after the task was written, inside the scenario's
    # 1.5-3 s after the action for this task's length (or later for long fact keys)
    assert result.time_s - act.time_s >= RESULT_DELAY_S[0] - T
    print(f"{episode.id}: {act.text!r} -> {result.text!r}, answered {score['delay_s']:.2f} s")

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from microturn.cli import main
from microturn.codecs.audio import write_wav
from microturn.codecs.dmel import DMelCodec
from microturn.engine.clock import RealClock, SimulatedClock
from microturn.engine.engine import Engine, SessionClosedError
from microturn.engine.runner import ModelSystem, Recording, run_recording
from microturn.engine.vocoder import StreamingVocoder
from microturn.model import InteractionModel, ModelConfig, SamplingConfig
from microturn.stream.episode import TextEvent, Timeline
from microturn.stream.layout import Layout


def tiny_model(seed: int = 0, **overrides) -> InteractionModel:
    torch.manual_seed(seed)
    return InteractionModel(replace(ModelConfig.preset("tiny"), **overrides)).eval()


def micro_model() -> InteractionModel:
    """A very small model with 1 s micro-turns: long conversations in few ticks."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        layout=Layout(
            micro_turn_ms=1000,
            audio_group=16,
            video_size=0,
            user_text_slots=1,
            background_slots=1,
            model_text_slots=1,
        ),
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        ffn="dense",
        d_ff=64,
        depth_layers=1,
        depth_d_model=32,
        depth_heads=2,
        depth_d_ff=64,
        window_turns=5,
    )
    return InteractionModel(cfg).eval()


def noise(t: int, n: int = 3200) -> np.ndarray:
    return np.random.default_rng(t).normal(0, 0.05, n).astype(np.float32)


def outputs_of(engine: Engine, session_id: str, ticks: int, start: int = 0) -> list:
    outs = []
    s = engine.get(session_id)
    for t in range(start, start + ticks):
        s.push_audio(noise(t))
        outs.append(engine.tick()[session_id])
    return outs


def same(a, b) -> bool:
    return np.array_equal(a.audio, b.audio) and a.text == b.text


def test_failed_step_rolls_back_exactly(monkeypatch) -> None:
    model = tiny_model()
    ref = Engine(model, max_sessions=2)
    ref.open("a", seed=3)
    expected = outputs_of(ref, "a", 4)

    engine = Engine(model, max_sessions=2)
    s = engine.open("a", seed=3)
    outputs_of(engine, "a", 2)
    before = (
        engine.state.lengths.clone(),
        engine.state.turns.clone(),
        {k: v.clone() for k, v in engine.state.pending.items()},
        engine.state.all_generators[0].get_state(),
        s.packer.turn,
    )
    calls = {"n": 0}
    real_extend = model.depth.extend

    def failing(*args, **kwargs):  # fail after the main forward wrote into the cache
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real_extend(*args, **kwargs)

    monkeypatch.setattr(model.depth, "extend", failing)
    s.push_audio(noise(2))
    with pytest.raises(RuntimeError, match="injected"):
        engine.tick()
    monkeypatch.setattr(model.depth, "extend", real_extend)
    assert torch.equal(engine.state.lengths, before[0])
    assert torch.equal(engine.state.turns, before[1])
    for k, v in before[2].items():
        assert torch.equal(engine.state.pending[k], v)
    assert torch.equal(engine.state.all_generators[0].get_state(), before[3])
    assert s.packer.turn == before[4] and s.turn == 2
    assert np.array_equal(s._audio, noise(2))  # the audio it took came back
    # the retry gives exactly what a run without the failure gave
    again = [engine.tick()["a"], *outputs_of(engine, "a", 1, start=3)]
    assert same(again[0], expected[2]) and same(again[1], expected[3])


def test_missing_input_is_marked_and_the_clock_goes_on() -> None:
    engine = Engine(tiny_model(), max_sessions=2)
    s = engine.open("a")
    s.push_audio(noise(0))
    first = engine.tick()["a"]
    second = engine.tick()["a"]  # nothing arrived for this micro-turn
    s.push_audio(noise(1)[:1000])  # a partial chunk is not enough either
    third = engine.tick()["a"]
    assert first.missing == () and second.missing == ("user_audio",)
    assert third.missing == ("user_audio",)
    assert s.metrics.missing_inputs == 2 and s.turn == 3
    assert [r.missing for r in s.timeline().turns] == [(), ("user_audio",), ("user_audio",)]


def test_sessions_are_independent_and_close_frees_the_row() -> None:
    model = tiny_model()
    solo = Engine(model, max_sessions=3)
    solo.open("b", seed=7)
    expected = outputs_of(solo, "b", 4)

    engine = Engine(model, max_sessions=3)
    engine.open("a", seed=1)
    b = engine.open("b", seed=7)
    got = []
    for t in range(4):
        if "a" in engine.sessions:
            engine.get("a").push_audio(noise(100 + t))
        b.push_audio(noise(t))
        got.append(engine.tick()["b"])
        if t == 1:
            engine.close("a")  # b moves into row 0 mid-conversation
            assert b.row == 0 and len(engine.rows) == 1
            assert int(engine.state.lengths[1]) == 0  # the freed row holds nothing
    for g, e in zip(got, expected, strict=True):
        assert np.allclose(g.audio, e.audio, atol=1e-4) and g.text == e.text
    assert "a" not in engine.sessions
    c = engine.open("c")
    assert c.row == 1


def test_closed_and_unknown_sessions() -> None:
    engine = Engine(tiny_model(), max_sessions=1)
    s = engine.open("a")
    engine.close(s)
    with pytest.raises(SessionClosedError):
        s.push_audio(noise(0))
    with pytest.raises(KeyError, match="unknown session"):
        engine.get("a")
    engine.open("b")
    with pytest.raises(RuntimeError, match="session slots"):
        engine.open("c")
    other = Engine(tiny_model(), max_sessions=2)
    other.open("x")
    with pytest.raises(ValueError, match="already exists"):
        other.open("x")


def test_bad_input_hurts_only_its_session() -> None:
    engine = Engine(tiny_model(), max_sessions=2)
    a, b = engine.open("a"), engine.open("b")
    with pytest.raises(ValueError, match="44100 Hz"):
        a.push_audio(noise(0), sample_rate=44100)
    with pytest.raises(ValueError, match="NaN"):
        a.push_audio(np.full(3200, np.nan, np.float32))
    with pytest.raises(ValueError):
        a.push_frame(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        a.push_text("")
    b.push_audio(noise(1))
    out = engine.tick()
    assert set(out) == {"a", "b"} and out["b"].missing == ()


def test_long_session_keeps_bounded_memory() -> None:
    """10 minutes of 1 s micro-turns: the cache never grows or moves."""
    model = micro_model()
    engine = Engine(model, max_sessions=1)
    s = engine.open("a")
    ptr, size = engine.state.keys[0].data_ptr(), engine.state.nbytes()
    for t in range(600):
        s.push_audio(noise(t, 16000))
        engine.tick()
    assert engine.state.keys[0].data_ptr() == ptr and engine.state.nbytes() == size
    held = int((engine.state.slot_pos[0] >= 0).sum())
    lay = model.layout
    assert held <= (1 + 5 + 1) * lay.slots_per_turn  # sinks + window + one micro-turn
    assert int(engine.state.lengths[0]) > 500 * lay.slots_per_turn


def test_idle_sessions_time_out() -> None:
    engine = Engine(tiny_model(), max_sessions=2, idle_timeout_s=0.5)
    active, idle = engine.open("active"), engine.open("idle")
    engine.run(5, feed=lambda t: active.push_audio(noise(t)))
    assert "idle" not in engine.sessions and idle.closed and "active" in engine.sessions


def test_simulated_and_real_clocks_agree() -> None:
    model = tiny_model()
    results = []
    for clock in (SimulatedClock(), RealClock()):
        engine = Engine(model, max_sessions=1, clock=clock)
        s = engine.open("a", seed=5)
        outs = []
        s.on_output = lambda _s, out, outs=outs: outs.append(out)
        engine.run(6, feed=lambda t, s=s: s.push_audio(noise(t)))
        results.append(outs)
    sim, real = results
    assert len(sim) == len(real) == 6
    for a, b in zip(sim, real, strict=True):
        assert same(a, b)
    assert all(o.lateness_ms >= 0 for o in real)  # measured, never negative


def test_run_recording_and_text_events() -> None:
    model = tiny_model()
    rec = Recording(noise(0, 16000), text=[TextEvent(0.5, "hello")])
    result = run_recording(ModelSystem(model), rec, seed=1)
    tl = result.timeline
    assert len(tl.turns) == model.layout.n_turns(2.0)
    assert result.audio.size == len(tl.turns) * 3200
    with pytest.raises(ValueError, match="outside"):
        run_recording(ModelSystem(model), Recording(noise(0), text=[TextEvent(3.0, "late")]))


def test_the_engine_samples_as_the_model_says_unless_told() -> None:
    """A checkpoint's sampling (model.sampling, e.g. a calibrated start bias) reaches the
    engine, and so the demo, server and bench; a caller's own sampling still wins."""
    model = tiny_model()
    rec = Recording(noise(0, 16000))

    def says(system: ModelSystem) -> bool:
        return any(s.text for s in run_recording(system, rec, seed=1).timeline.speech)

    assert says(ModelSystem(model))  # a random model writes at once
    model.sampling = SamplingConfig(start_bias=-30.0)
    assert not says(ModelSystem(model))
    assert says(ModelSystem(model, sampling=SamplingConfig()))


def run_cli(tmp_path, speech, seconds: float, *args: str) -> int:
    """`microturn run` on the first `seconds` of real speech, writing into tmp_path."""
    write_wav(tmp_path / "user.wav", speech[: round(seconds * 16000)])
    return main(
        ["run", "--audio", str(tmp_path / "user.wav"), "--out", str(tmp_path / "t.json"), *args]
    )


def test_cli_run_writes_a_valid_timeline(tmp_path, speech) -> None:
    rc = run_cli(
        tmp_path,
        speech,
        1.5,
        "--preset",
        "tiny",
        "--text",
        "0.5:hi there",
        "--wav",
        str(tmp_path / "m.wav"),
    )
    assert rc == 0
    tl = Timeline.load(tmp_path / "t.json")
    assert tl.system == "microturn" and len(tl.turns) == 13
    assert json.loads((tmp_path / "t.json").read_text())["schema"] == "microturn.timeline/1"
    assert (tmp_path / "m.wav").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "tiny", "--text", "nonsense"], "SECONDS:TEXT"),
        (["--preset", "tiny", "--text", "99:too late"], "outside"),
        (["--preset", "tiny", "--video", "missing.mp4"], "no such file|not found|No such"),
        (["--model", "nope"], "checkpoint"),
    ],
)
def test_cli_run_bad_input(tmp_path, speech, capsys, args, message) -> None:
    assert run_cli(tmp_path, speech, 1.0, *args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "t.json").exists()


def test_streaming_vocoder_is_continuous_and_faithful(flite_speech) -> None:
    codec = DMelCodec()
    bins = codec.encode(flite_speech)
    bins = np.concatenate([bins, np.zeros(((-len(bins)) % 16 + 16, 80), np.uint8)])
    voc = StreamingVocoder()
    chunks = [voc.push(bins[i : i + 16]) for i in range(0, len(bins), 16)]
    assert all(c.size == 3200 for c in chunks)
    out = np.concatenate(chunks)
    delayed = out[800:]  # 50 ms behind the frames
    n = min(delayed.size, flite_speech.size)
    assert codec.mel_distance(flite_speech[:n], delayed[:n]) < 0.25
    jumps = np.abs(np.diff(out))
    joins = [k * 3200 - 1 for k in range(1, len(chunks))]
    assert jumps[joins].max() <= 2 * np.percentile(jumps, 99.9)  # no clicks at joins
    assert not voc.push(np.zeros((16, 80), np.uint8)).any()  # silence stays silent

import json

import numpy as np
import pytest
import torch

from microturn.bench import interact
from microturn.bench.cascade import CascadeSystem, respond
from microturn.engine.runner import ModelSystem, RawTurn, Recording, run_recording
from microturn.model import InteractionModel, ModelConfig, SamplingConfig, save_pretrained
from microturn.model.checkpoint import save_sampling
from microturn.scenarios import NAMES, get
from microturn.voices import synthesize


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("what is 347 times 29", "10063"),
        ("add 4,792 and 4,078 for me", "8870"),
        ("what's the capital of australia", "Canberra"),
        ("count down from three", "three two one"),
        ("remind me to breathe every four seconds", "remind you"),
        ("tell me when the light turns green", "let you know"),
        ("", ""),
    ],
)
def test_cascade_responder(said: str, expected: str) -> None:
    assert expected in respond(said, {"capital of australia": "Canberra"})


def test_cascade_answers_after_the_turn_and_stops_on_barge_in() -> None:
    system = CascadeSystem()
    question = synthesize("what is twelve plus thirty", "flite:slt").audio
    audio = np.zeros(16000 * 8, np.float32)
    audio[16000 : 16000 + question.size] = question
    result = run_recording(system, Recording(audio))
    spoken = [s for s in result.timeline.speech if s.text]
    assert spoken and "42" in spoken[0].text
    end = (16000 + question.size) / 16000
    assert spoken[0].start_s >= end + 0.7  # waits for the end-of-turn silence

    # barge-in: interrupt the answer while it plays
    session = system.open(0)
    spt = system.layout.samples_per_turn
    played = []
    chunks = np.concatenate([audio, np.zeros(spt * 10, np.float32)])
    interrupt_at = None
    for t in range(len(chunks) // spt):
        chunk = chunks[t * spt : (t + 1) * spt].copy()
        if played and any(p.any() for p in played[-1:]) and interrupt_at is None:
            interrupt_at = t
        if interrupt_at is not None and t < interrupt_at + 3:
            chunk = question[4000 : 4000 + spt].copy()  # the user talks over it
        played.append(session.step(RawTurn(t, chunk)).audio)
    assert interrupt_at is not None
    # it stops within one micro-turn, and stays quiet until the interruption has ended
    # and its end-of-turn silence has passed (it then answers the new turn)
    assert not any(p.any() for p in played[interrupt_at + 1 : interrupt_at + 6])


def test_harness_runs_every_scenario_with_the_cascade(tmp_path) -> None:
    data = interact.run("cascade", "eval", tmp_path, episodes=1)
    assert set(data["scenarios"]) == set(NAMES) == set(data["scenarios_text"])
    saved = json.loads((tmp_path / "interact.json").read_text())
    assert saved["system"] == "cascade" and saved["split"] == "eval"
    for name in NAMES:
        assert set(saved["scenarios"][name]) == set(get(name).aggregate([]))
    assert (tmp_path / "interact.md").read_text().startswith("system `cascade`")
    assert len(list(tmp_path.glob("*.png"))) == len(NAMES)


def test_harness_runs_a_checkpoint_folder(tmp_path) -> None:
    torch.manual_seed(0)
    save_pretrained(InteractionModel(ModelConfig.preset("tiny")), tmp_path / "ckpt")
    ckpt, one = str(tmp_path / "ckpt"), {"episodes": 1, "scenarios": ["turn_taking"]}
    data = interact.run(ckpt, "eval", tmp_path / "out", **one)
    assert "turn_taking" in data["scenarios"]
    assert data["start_bias"] == 0.0  # what the checkpoint says
    assert data["start_rule"] == "sample"
    # the start bias reaches the model's sampler (its effect: test_model.py) and the report
    quiet = interact.run(ckpt, "eval", tmp_path / "quiet", start_bias=-30.0, **one)
    assert quiet["start_bias"] == -30.0
    assert interact.sampling_of(interact.make_system(ckpt, -30.0)).start_bias == -30.0
    assert "start bias -30" in (tmp_path / "quiet" / "interact.md").read_text()
    save_sampling(ckpt, SamplingConfig(start_bias=2.5))  # a calibrated checkpoint
    assert interact.sampling_of(interact.make_system(ckpt)).start_bias == 2.5
    assert interact.sampling_of(interact.make_system(ckpt, 0.0)).start_bias == 0.0
    assert interact.sampling_of(interact.make_system("cascade")) is None


def test_harness_bad_names(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        interact.run("cascade", "eval", tmp_path, scenarios=["juggling"])
    with pytest.raises(ValueError, match="not a system name"):
        interact.run(str(tmp_path / "nothing"), "eval", tmp_path)
    with pytest.raises(ValueError, match="not the cascade"):
        interact.run("cascade", "eval", tmp_path, start_bias=1.0)


def test_model_system_runs_an_episode() -> None:
    torch.manual_seed(0)
    system = ModelSystem(InteractionModel(ModelConfig.preset("tiny")))
    episode = get("proactive_vision").generate(0, "eval", "text")
    result = run_recording(system, interact.recording_for(episode, system))
    assert result.audio.size >= episode.user_audio.size

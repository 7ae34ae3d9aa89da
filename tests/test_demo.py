"""`microturn demo`: the scripted real-time session (here on the simulated clock)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from microturn import demo
from microturn.cli import main
from microturn.stream.episode import ActionEvent, Timeline

SHORT = demo.Script(
    (
        demo.Utterance(0.3, "request", demo.SCRIPT.utterances[0].text),
        demo.Utterance(6.0, "question", demo.SCRIPT.utterances[1].text),
        demo.Utterance(10.0, "stop", demo.SCRIPT.utterances[2].text),
    ),
    duration_s=12.0,
    interval_s=2,
)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    from microturn.model import InteractionModel, ModelConfig
    from microturn.model.checkpoint import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(
        InteractionModel(ModelConfig.preset("tiny")), tmp_path_factory.mktemp("tiny")
    )


@pytest.mark.slow
def test_demo_writes_wavs_timeline_and_plot(tmp_path, untrained, monkeypatch, capsys) -> None:
    monkeypatch.setattr(demo, "SCRIPT", SHORT)
    threads = torch.get_num_threads()
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", str(untrained), "--no-realtime"]) == 0
    printed = capsys.readouterr().out
    assert 'user    "Remind me to breathe' in printed
    assert "summary" in printed and "step p50" in printed
    assert f"wrote {out}/: model.wav" in printed and "timeline.png" in printed

    for name in ("model.wav", "user.wav", "mix.wav"):
        audio, rate = sf.read(out / name)
        assert rate == 16000 and audio.ndim == 1
        assert audio.size == 12 * 16000  # the session's length, on the session's time axis
    user, _ = sf.read(out / "user.wav")
    assert np.abs(user[:4800]).max() < 1e-3 < np.abs(user[8000:80000]).max()  # speaks from 0.3 s

    tl = Timeline.load(out / "timeline.json")
    assert len(tl.turns) == 60
    assert tl.meta["demo"]["realtime"] is False
    assert [s["role"] for s in tl.meta["demo"]["script"]] == ["request", "question", "stop"]
    assert tl.meta["step_ms_p50"] > 0
    # delegations go through the engine to the built-in thinker: every result it gave
    # (an untrained model's tasks are noise: spoken failures) is in the Timeline
    results = [a for a in tl.actions if a.kind == "delegation_result"]
    assert [(r.text, r.data["thinker"]) for r in results] == [
        (b["text"], "builtin") for b in tl.meta["demo"]["background"]
    ]
    assert "thinker answered" in printed or "did not delegate" in printed
    assert torch.get_num_threads() == threads  # the demo's one thread was given back

    png = (out / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_demo_without_default_model_says_so(tmp_path, monkeypatch, capsys) -> None:
    from microturn.model import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "default")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    printed = capsys.readouterr().err
    assert "no trained model" in printed and "--model" in printed
    assert not (tmp_path / "demo").exists()
    # every command that defaults to the shipped model says the same
    out = str(tmp_path / "bench")
    assert main(["bench", "interact", "--system", "default", "--episodes", "1", "--out", out]) == 2
    assert "no trained model" in capsys.readouterr().err


def _said() -> list[demo.Said]:
    return [
        demo.Said("request", "Remind me ...", 1.0, 5.0),
        demo.Said("question", "what is 347 times 29?", 12.0, 14.0),
    ]


def _out(t: float, text: str = "", eom: bool = False, actions=(), voiced=False, events=()):
    audio = np.zeros(3200, np.float32)
    if voiced:
        audio[:] = 0.1 * np.sin(np.arange(3200) / 5)
    return SimpleNamespace(
        play_at_s=t,
        text=text,
        end_of_message=eom,
        actions=list(actions),
        audio=audio,
        events=list(events),
    )


def test_live_view_marks_reminders_delegation_and_thinker() -> None:
    lines: list[str] = []
    view = demo.LiveView(_said(), "breathe", 0.2, lines.append)
    view.user_window(1.0, 1.2)
    view.on_output(None, _out(5.2, "Okay.", eom=True))  # the acknowledgement: no reminder
    view.on_output(None, _out(10.0, "Breathe ", voiced=True))
    view.on_output(None, _out(10.2, "in and out.", eom=True, voiced=True))
    view.on_output(None, _out(10.4))
    view.on_output(None, _out(10.6))  # 0.4 s of silence: voice off
    view.on_output(None, _out(14.4, "347 ", actions=[ActionEvent(14.4, "delegate")]))
    start = ActionEvent(14.4, "delegate", "347 * 29", {"id": "d1", "task": "347 * 29"})
    view.on_output(None, _out(14.6, "* 29", eom=True, events=[start]))  # the engine's record
    view.on_output(None, _out(15.1, "Breathe in and out.", eom=True))
    result = ActionEvent(16.1, "delegation_result", "10063", {"id": "d1", "task": "347 * 29"})
    view.on_output(None, _out(16.2, events=[result]))
    spoken = ActionEvent(16.6, "delegation_spoken", "that's 10,063", {"task": "347 * 29"})
    view.on_output(None, _out(16.6, "that's 10,063", eom=True, events=[spoken]))
    view.on_output(None, _out(17.0, "", actions=[ActionEvent(17.0, "delegate")]))
    view.finish(20.0)

    text = "\n".join(lines)
    assert 'user    "Remind me ..."' in text
    assert "reminder 1, 5.0 s after the request ended" in text
    assert "reminder 2, 5.1 s after the last" in text
    assert "(voice on)" in text and "(voice off, 0.4 s)" in text
    assert '[delegate] "347 * 29" (d1)' in text
    assert not any(line.endswith('model   "347 * 29"') for line in lines)  # not a message
    assert 'thinker -> "10063" (for "347 * 29")' in text
    assert '"that\'s 10,063"   <- says the result of "347 * 29"' in text
    assert "1 delegate action(s) never got a task written" in text
    assert view.reminders == [10.0, 15.1]
    assert [e.text for e in view.delegations] == ["347 * 29"]
    assert [(r["text"], r["task"], r["error"]) for r in view.background] == [
        ("10063", "347 * 29", None)
    ]
    assert [e.text for e in view.spoken] == ["that's 10,063"]

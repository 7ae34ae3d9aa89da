import json
import os
from dataclasses import replace

import pytest
import torch

from microturn.bench import calibrate
from microturn.model import InteractionModel, ModelConfig, from_pretrained, save_pretrained
from microturn.model.checkpoint import load_sampling, save_sampling
from microturn.scenarios import TUNE_FIRST_SEED


def test_calibrate_runs_the_benchmark_on_the_tune_set(tmp_path, monkeypatch) -> None:
    """The real thing, small: a checkpoint benched per bias on the train split at tune
    seeds, the report written, the winner stored."""
    torch.manual_seed(0)
    ckpt = save_pretrained(InteractionModel(ModelConfig.preset("tiny")), tmp_path / "ckpt")
    out = tmp_path / "cal"
    result = calibrate.run(
        ckpt, out, biases=(-30.0, -0.0), episodes=1, scenarios=["turn_taking"], write=True
    )
    assert [r["start_bias"] for r in result["rows"]] == [-30.0, 0.0]
    assert from_pretrained(ckpt).sampling.start_bias == result["best"]
    for bias in (-30.0, 0.0):
        run = json.loads((calibrate.folder_for(out, bias) / "interact.json").read_text())
        assert run["split"] == "train" and run["start_bias"] == bias
        episodes = json.loads((calibrate.folder_for(out, bias) / "episodes.json").read_text())
        assert episodes["turn_taking"][0]["episode"].endswith(str(TUNE_FIRST_SEED))
    assert json.loads((out / "calibrate.json").read_text())["best"] == result["best"]
    assert "best" in (out / "calibrate.md").read_text()
    assert (out / "calibrate.png").stat().st_size > 0

    # a calibration stopped midway goes on where it was: finished runs are reused ...
    def no_rerun(*args, **kwargs):
        raise AssertionError("ran again")

    monkeypatch.setattr(calibrate.interact, "run", no_rerun)
    again = calibrate.run(ckpt, out, biases=(-30.0, 0.0), episodes=1, scenarios=["turn_taking"])
    assert again["rows"] == result["rows"]
    # ... but not for other episodes, or once the weights are newer than the run
    with pytest.raises(AssertionError, match="ran again"):
        calibrate.run(ckpt, out, biases=(0.0,), episodes=2, scenarios=["turn_taking"])
    # ... or under another start rule than the checkpoint now has
    ruled = ckpt.parent / "ruled"
    ruled.mkdir()
    for f in ckpt.iterdir():
        (ruled / f.name).write_bytes(f.read_bytes())
    for bias in (-30.0, 0.0):  # the runs as if made on this checkpoint, under "sample"
        folder = calibrate.folder_for(out, bias)
        run = json.loads((folder / "interact.json").read_text())
        (folder / "interact.json").write_text(json.dumps({**run, "system": str(ruled)}))
    assert calibrate.run(ruled, out, biases=(-30.0, 0.0), episodes=1, scenarios=["turn_taking"])
    save_sampling(ruled, replace(load_sampling(ruled), start_rule="greedy"))
    with pytest.raises(AssertionError, match="ran again"):
        calibrate.run(ruled, out, biases=(0.0,), episodes=1, scenarios=["turn_taking"])
    weights = ckpt / "model.safetensors"
    later = (out / "bias+0" / "interact.json").stat().st_mtime + 10
    os.utime(weights, (later, later))
    with pytest.raises(AssertionError, match="ran again"):
        calibrate.run(ckpt, out, biases=(0.0,), episodes=1, scenarios=["turn_taking"])


def test_calibrate_writes_the_winner_and_checks_it_on_fresh_episodes(tmp_path, monkeypatch) -> None:
    """With headlines fixed per bias: the best one is stored, the check against bias 0
    runs both on tune seeds the search never saw, and the choice is made on search and
    check pooled: a winner that falls behind there gives way to bias 0."""
    torch.manual_seed(0)
    ckpt = save_pretrained(InteractionModel(ModelConfig.preset("tiny")), tmp_path / "ckpt")
    calls = []
    scores = {0.0: 0.1, 1.0: 0.4, 2.0: 0.2}
    pooled_gain = {"value": 0.2}

    def fake_interact(system, split, out, *, seed, start_bias, **_):
        calls.append((start_bias, seed))
        return {"scenarios": {"repetition_counting": {"accuracy": scores[start_bias]}}}

    def fake_compare(a, b, out):
        if isinstance(a, list):  # search and check pooled
            assert [f.name for f in a] == ["bias+0", "bias+0"]
            assert [f.parent.name for f in a] == [out.parent.name, "check"]
            assert b[0].name == b[1].name != "bias+0"  # the best, in both
            gain = pooled_gain["value"]
        else:
            assert a.name == "bias+0" and a.parent.name == b.parent.name == "check"
            gain = 0.3
        return {"views": {"asr": [{"b_minus_a": gain, "ci_low": gain - 0.2, "ci_high": 0.5}]}}

    monkeypatch.setattr(calibrate.interact, "run", fake_interact)
    monkeypatch.setattr(calibrate.compare, "run", fake_compare)
    result = calibrate.run(ckpt, tmp_path / "cal", biases=(0.0, 1.0, 2.0), write=True)
    assert result["best"] == result["chosen"] == 1.0
    assert from_pretrained(ckpt).sampling.start_bias == 1.0
    seed = TUNE_FIRST_SEED
    check = seed + calibrate.CHECK_OFFSET
    assert calls == [(0.0, seed), (1.0, seed), (2.0, seed), (0.0, check), (1.0, check)]
    assert result["check"]["seed"] == check
    report = (tmp_path / "cal" / "calibrate.md").read_text()
    assert "B better" in report and "Chosen: +1 (written)" in report
    # without --write the checkpoint keeps what it had
    calibrate.run(ckpt, tmp_path / "cal2", biases=(0.0, 2.0))
    assert from_pretrained(ckpt).sampling.start_bias == 1.0
    # the winner behind bias 0 over search and check: 0 is chosen and written; bias 0
    # is run on the search's episodes first when the search did not have it
    pooled_gain["value"] = -0.05
    calls.clear()
    result = calibrate.run(ckpt, tmp_path / "cal3", biases=(1.0, 2.0), write=True)
    assert result["best"] == 1.0 and result["chosen"] == 0.0
    assert calls == [(1.0, seed), (2.0, seed), (0.0, check), (1.0, check), (0.0, seed)]
    assert from_pretrained(ckpt).sampling.start_bias == 0.0
    assert "Chosen: +0 (written)" in (tmp_path / "cal3" / "calibrate.md").read_text()


def test_best_of_prefers_the_higher_mean_then_the_smaller_bias() -> None:
    rows = [
        {"start_bias": -2.0, "mean_headline": 0.3},
        {"start_bias": 0.0, "mean_headline": 0.1},
        {"start_bias": 1.0, "mean_headline": 0.3},
        {"start_bias": 3.0, "mean_headline": 0.2},
    ]
    assert calibrate.best_of(rows)["start_bias"] == 1.0
    assert calibrate.best_of(rows[1:2])["start_bias"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"biases": ()}, "at least one bias"),
        ({"biases": (1.0, 1.0)}, "repeat"),
        ({"biases": (0.0, -0.0)}, "repeat"),
        ({"biases": (0.0, float("nan"))}, "finite"),
        ({"biases": (0.0,), "episodes": 0}, "at least 1"),
    ],
)
def test_calibrate_refuses_bad_requests_before_any_work(tmp_path, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        calibrate.run(tmp_path, tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_calibrate_refuses_what_is_not_a_checkpoint(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a microturn checkpoint"):
        calibrate.run(tmp_path / "nothing", tmp_path / "o", biases=(0.0,))

import json

import pytest
import torch

from microturn.bench import calibrate
from microturn.model import InteractionModel, ModelConfig, from_pretrained, save_pretrained


def test_calibrate_benches_each_bias_on_the_tune_set_and_writes_the_best(tmp_path) -> None:
    torch.manual_seed(0)
    ckpt = save_pretrained(InteractionModel(ModelConfig.preset("tiny")), tmp_path / "ckpt")
    out = tmp_path / "cal"
    result = calibrate.run(
        ckpt, out, biases=(-30.0, 0.0), episodes=1, scenarios=["turn_taking"], write=True
    )
    assert [r["start_bias"] for r in result["rows"]] == [-30.0, 0.0]
    assert result["best"] == calibrate.best_of(result["rows"])["start_bias"]
    assert from_pretrained(ckpt).sampling.start_bias == result["best"]
    for bias in (-30.0, 0.0):  # the tune set: the train split, far from training seeds
        run = json.loads((calibrate.folder_for(out, bias) / "interact.json").read_text())
        assert run["split"] == "train" and run["start_bias"] == bias
        episodes = json.loads((calibrate.folder_for(out, bias) / "episodes.json").read_text())
        assert episodes["turn_taking"][0]["episode"].endswith(f"{calibrate.TUNE_SEED}")
    assert json.loads((out / "calibrate.json").read_text())["best"] == result["best"]
    assert "best" in (out / "calibrate.md").read_text()
    assert (out / "calibrate.png").stat().st_size > 0


def test_best_of_prefers_the_higher_mean_then_the_smaller_bias() -> None:
    rows = [
        {"start_bias": -2.0, "mean_headline": 0.3},
        {"start_bias": 0.0, "mean_headline": 0.1},
        {"start_bias": 1.0, "mean_headline": 0.3},
        {"start_bias": 3.0, "mean_headline": 0.2},
    ]
    assert calibrate.best_of(rows)["start_bias"] == 1.0
    assert calibrate.best_of(rows[1:2])["start_bias"] == 0.0


def test_calibrate_refuses_bad_requests(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one bias"):
        calibrate.run(tmp_path, tmp_path / "o", biases=())
    with pytest.raises(ValueError, match="repeat"):
        calibrate.run(tmp_path, tmp_path / "o", biases=(1.0, 1.0))
    with pytest.raises(ValueError, match="not a microturn checkpoint"):
        calibrate.run(tmp_path / "nothing", tmp_path / "o", biases=(0.0,))

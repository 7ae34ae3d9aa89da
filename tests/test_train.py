import json

import numpy as np
import pytest

from microturn.stream.layout import Layout
from microturn.train.augment import augment_audio
from microturn.train.data import load_shard, make_example, save_shard, write_shards
from microturn.train.loop import TrainConfig, lr_at, train

TINY = Layout.preset("tiny")


def test_augment_keeps_length_and_timing() -> None:
    t = np.arange(16000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 300 * t) * (t > 0.5)).astype(np.float32)
    a = augment_audio(pcm, np.random.default_rng(1))
    b = augment_audio(pcm, np.random.default_rng(1))
    assert a.shape == pcm.shape and np.isfinite(a).all() and np.array_equal(a, b)
    assert not np.array_equal(a, pcm)
    # the tone still starts at 0.5 s: timing is never changed
    env = np.abs(a).reshape(100, 160).max(1)
    assert env[:45].max() < env[55:].max() / 3


def test_shards_round_trip(tmp_path) -> None:
    episodes = [make_example("time_awareness", 0, TINY), make_example("proactive_vision", 1, TINY)]
    assert episodes[1].user_video_present.any() and not episodes[0].user_video_present.any()
    save_shard(tmp_path / "shard-00000.npz", episodes, ["time_awareness", "proactive_vision"])
    back = load_shard(tmp_path / "shard-00000.npz", TINY)
    assert [s for s, _ in back] == ["time_awareness", "proactive_vision"]
    for (_, got), want in zip(back, episodes, strict=True):
        assert got.equals(want)
    (tmp_path / "bad.npz").write_bytes(b"not a shard")
    with pytest.raises(ValueError, match="unreadable shard"):
        load_shard(tmp_path / "bad.npz", TINY)


def test_lr_schedule() -> None:
    cfg = TrainConfig(data="", out="", steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert lr_at(55, cfg) < lr_at(20, cfg)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, ["time_awareness", "turn_taking"], 4, TINY, per_shard=2, workers=2)
    return out


def test_training_reduces_loss_and_resumes_exactly(shards, tmp_path) -> None:
    base = {
        "data": str(shards),
        "batch": 2,
        "lr": 3e-3,
        "warmup": 2,
        "log_every": 1,
        "save_every": 3,
        "device": "cpu",
    }
    straight = train(TrainConfig(out=str(tmp_path / "a"), steps=6, **base))
    losses = [r["loss"] for r in straight["log"]]
    assert losses[-1] < losses[0]
    train(TrainConfig(out=str(tmp_path / "b"), steps=3, **base))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), steps=6, **base), resume=True)
    assert resumed["log"][-1]["loss"] == pytest.approx(straight["log"][-1]["loss"], rel=1e-5)
    lines = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])["by_scenario"]) <= {"time_awareness", "turn_taking"}
    assert (tmp_path / "a" / "model.safetensors").is_file()


def test_no_shards_is_an_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="no shards"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), steps=1))

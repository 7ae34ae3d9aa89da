import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from microturn.codecs.text import VOCAB_SIZE, Special
from microturn.model import (
    InteractionModel,
    Logits,
    ModelConfig,
    SamplingConfig,
    from_pretrained,
    output_losses,
    save_pretrained,
    to_batch,
)
from microturn.model.checkpoint import save_sampling
from microturn.model.loss import per_turn_losses
from microturn.model.sampling import between_before, next_between
from microturn.scenarios import TUNE_FIRST_SEED
from microturn.stream.layout import Layout
from microturn.train.augment import augment_audio, augment_batch
from microturn.train.data import load_shard, make_example, save_shard, write_shards
from microturn.train.evaluate import write_eval_set
from microturn.train.loop import (
    TRAINER_FILE,
    TrainConfig,
    draw_batch,
    lr_at,
    onset_turns,
    train,
    weighted_losses,
)

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
    # the camera-less episode's frames are one empty frame seen n times, not n copies
    assert back[0][1].user_video.strides[0] == 0 and back[1][1].user_video.strides[0] > 0
    (tmp_path / "bad.npz").write_bytes(b"not a shard")
    with pytest.raises(ValueError, match="unreadable shard"):
        load_shard(tmp_path / "bad.npz", TINY)


def test_a_failed_shard_write_stops_generation_with_its_error(tmp_path, monkeypatch) -> None:
    """Shards are written in threads; a write that fails (disk full) is an error of the
    whole run, not a shard silently missing from it."""

    def full(*_: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr("microturn.train.data.save_shard", full)
    with pytest.raises(OSError, match="No space left"):
        write_shards(tmp_path, ["turn_taking"], 3, TINY, per_shard=1, workers=1)
    assert not list(tmp_path.glob("shard-*.npz"))


def test_a_shard_being_written_is_not_trained_on(tmp_path, monkeypatch) -> None:
    """A shard cut off while written (data generation stopped or still running) leaves
    only a temporary file, which training's shard-*.npz never picks up."""
    episodes = [make_example("time_awareness", 0, TINY)]

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("microturn.train.data.os.replace", stop)
    with pytest.raises(KeyboardInterrupt):
        save_shard(tmp_path / "shard-00000.npz", episodes, ["time_awareness"])
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob("shard-*.npz"))
    with pytest.raises(ValueError, match="no shards"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), steps=1))


def test_lr_schedule() -> None:
    cfg = TrainConfig(data="", out="", steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert lr_at(55, cfg) < lr_at(20, cfg)
    # a run cut by its time limit ends its cosine with the time, not mid-schedule
    assert lr_at(20, cfg, time_used=1.0) == pytest.approx(1e-4)
    assert lr_at(20, cfg, time_used=0.5) == pytest.approx(lr_at(55, cfg))
    assert lr_at(60, cfg, time_used=0.1) == pytest.approx(lr_at(60, cfg))


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
    # past its time limit a run stops at the next log step and saves
    cut = train(TrainConfig(out=str(tmp_path / "c"), steps=50, time_limit_s=1e-6, **base))
    assert cut["steps"] == 1 and (tmp_path / "c" / "model.safetensors").is_file()


def test_batches_of_similar_length_cover_every_episode() -> None:
    lengths = np.random.default_rng(0).integers(40, 150, size=200)
    by_length = np.argsort(lengths, kind="stable")
    rng = np.random.default_rng(1)
    seen: set[int] = set()
    real = padded = 0
    for _ in range(400):
        picks = draw_batch(rng, by_length, 8, 4)
        seen.update(picks.tolist())
        real += lengths[picks].sum()
        padded += lengths[picks].max() * len(picks)
    assert seen == set(range(200))  # the extremes of the length order are drawn too
    assert real / padded > 0.85
    uniform = [draw_batch(rng, by_length, 8, 0) for _ in range(400)]
    assert np.mean([lengths[p].sum() / (lengths[p].max() * 8) for p in uniform]) < 0.75
    assert len(draw_batch(rng, by_length[:3], 8, 4)) == 8  # fewer episodes than a batch


def test_scenario_filter_and_fine_tuning_from_a_model(shards, tmp_path) -> None:
    base = {"data": str(shards), "batch": 2, "log_every": 1, "device": "cpu"}
    # A model without the depth decoder's output history (as shipped so far), to grow one.
    result = train(
        TrainConfig(
            out=str(tmp_path / "a"), steps=2, scenarios="turn_taking", output_history=0, **base
        )
    )
    assert {s for r in result["log"] for s in r["by_scenario"]} == {"turn_taking"}
    with pytest.raises(ValueError, match="no episodes of counting"):
        train(TrainConfig(out=str(tmp_path / "x"), steps=1, scenarios="counting", **base))
    # --init starts from the trained weights, not from a fresh initialization, and not
    # from their calibrated sampling
    save_sampling(tmp_path / "a", SamplingConfig(start_bias=2.0))
    start = from_pretrained(tmp_path / "a")
    fine = train(
        TrainConfig(out=str(tmp_path / "b"), steps=1, lr=0.0, init=str(tmp_path / "a"), **base)
    )
    assert fine["steps"] == 1
    tuned = from_pretrained(tmp_path / "b")
    assert tuned.sampling == SamplingConfig()
    for name, p in start.state_dict().items():
        assert torch.equal(p, tuned.state_dict()[name]), name  # lr 0: weights unchanged
    # --clock-octaves and --onset-clock-turns grow a clock and an onset clock on the
    # fine-tuned model; training moves them off zero
    clocked = train(
        TrainConfig(
            out=str(tmp_path / "c"),
            steps=2,
            init=str(tmp_path / "a"),
            clock_octaves=3,
            onset_clock_turns=6,
            **base,
        )
    )
    assert clocked["steps"] == 2
    grown = from_pretrained(tmp_path / "c")
    assert grown.cfg.clock_octaves == 3 and start.cfg.clock_octaves == 0
    assert grown.clock is not None and grown.clock.proj.weight.abs().sum() > 0
    assert grown.cfg.onset_clock_turns == 6 and start.onset_clock is None
    assert grown.onset_clock is not None and grown.onset_clock.embed.weight.abs().sum() > 0
    # --output-history grows the depth decoder's history; --train-only depth trains only
    # the depth decoder, the main model stays as it was
    history = train(
        TrainConfig(
            out=str(tmp_path / "d"),
            steps=2,
            init=str(tmp_path / "a"),
            output_history=1,
            train_only="depth",
            **base,
        )
    )
    assert history["steps"] == 2
    tuned = from_pretrained(tmp_path / "d")
    assert not start.cfg.output_history and start.depth.history is None
    assert tuned.cfg.output_history and tuned.depth.history is not None
    moved = {n for n, p in start.state_dict().items() if not torch.equal(p, tuned.state_dict()[n])}
    assert moved and all(n.startswith("depth.") for n in moved), moved
    with pytest.raises(ValueError, match="no parameter"):
        train(TrainConfig(out=str(tmp_path / "e"), steps=1, train_only="nothing", **base))


def test_training_seeds_stay_below_the_tune_set(tmp_path) -> None:
    with pytest.raises(ValueError, match="tune set"):
        write_shards(
            tmp_path / "d", ["turn_taking"], 2, TINY, workers=1, first_seed=TUNE_FIRST_SEED - 1
        )
    assert not (tmp_path / "d").exists()  # refused before any work


def test_no_shards_is_an_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="no shards"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), steps=1))


def test_training_on_the_union_of_several_shard_folders(tmp_path) -> None:
    write_shards(tmp_path / "a", ["turn_taking"], 1, TINY, workers=1)
    write_shards(tmp_path / "b", ["time_awareness"], 1, TINY, workers=1, first_seed=7)
    both = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    cfg = {"batch": 6, "log_every": 1, "device": "cpu", "length_window": 0, "steps": 1}
    result = train(TrainConfig(data=both, out=str(tmp_path / "o"), **cfg))
    assert set(result["log"][0]["by_scenario"]) == {"turn_taking", "time_awareness"}
    with pytest.raises(ValueError, match=r"no shards .* in .*missing"):
        train(
            TrainConfig(
                data=f"{tmp_path / 'a'},{tmp_path / 'missing'}", out=str(tmp_path / "x"), **cfg
            )
        )


# ---- onset weighting ---------------------------------------------------------------

PAD, EOM, DELEGATE = int(Special.PAD), int(Special.EOM), int(Special.DELEGATE)


def _outputs(text_turns: list[list[int]], action_turns: list[list[int]]) -> dict:
    """model_text [1, N, 4] and model_action [1, N, 1], PAD-filled, from per-turn ids."""
    n = len(text_turns)
    text = torch.full((1, n, 4), PAD, dtype=torch.long)
    action = torch.full((1, n, 1), PAD, dtype=torch.long)
    for t, ids in enumerate(text_turns):
        text[0, t, : len(ids)] = torch.tensor(ids)
    for t, ids in enumerate(action_turns):
        action[0, t, : len(ids)] = torch.tensor(ids)
    return {"model_text": text, "model_action": action}


def test_onset_turns_marks_speech_starts_and_actions() -> None:
    h, i = ord("h"), ord("i")
    rows = [
        _outputs(  # silent, "hi" over two turns (one onset), silent, "i" again, an action alone
            [[], [h, i], [i], [], [i, EOM], []],
            [[], [], [], [], [], [DELEGATE]],
        ),
        _outputs(  # writing from turn 0 on (an onset: nothing before), an action mid-text,
            # EOM alone still continues the message, then text right after silence
            [[h], [i], [EOM], [], [], [h]],
            [[], [], [DELEGATE], [], [], []],
        ),
    ]
    batch = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    got = onset_turns(batch)
    assert got.dtype == torch.bool and got.shape == (2, 6)
    assert got.tolist() == [
        [False, True, False, False, True, True],
        [True, False, True, False, False, True],
    ]
    # nothing written, nothing done: no onsets
    quiet = _outputs([[]] * 4, [[]] * 4)
    assert not onset_turns(quiet).any()


def _random_logits_and_batch(seed: int = 0) -> tuple[Logits, dict, torch.Tensor]:
    """Random logits, hand-made targets with onsets, and a turn mask with padding."""
    g = torch.Generator().manual_seed(seed)
    b, n = 2, 8
    logits = Logits(
        model_action=torch.randn(b, n, 1, VOCAB_SIZE, generator=g),
        model_text=torch.randn(b, n, 4, VOCAB_SIZE, generator=g),
        model_audio=torch.randn(b, n, 4, 4, 80, 16, generator=g),
    )
    a, x = ord("a"), ord("x")
    rows = [
        _outputs(
            [[], [a, a], [a], [], [], [x, EOM], [], []],
            [[], [], [], [], [DELEGATE], [], [], []],
        ),
        # the onset at turn 6 is in the padding (mask keeps 5 turns): it must not count
        _outputs([[a], [a], [], [], [], [], [x], [x]], [[]] * 8),
    ]
    batch = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    batch["model_audio"] = torch.randint(0, 16, (b, n, 4, 4, 80), generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 5:] = False
    return logits, batch, mask


def test_weighted_losses_without_onset_weight_is_the_plain_mean() -> None:
    logits, batch, mask = _random_logits_and_batch()
    cfg = TrainConfig(data="", out="", onset_weight=0.0)
    losses, per_sample = weighted_losses(logits, batch, mask, cfg)
    plain = output_losses(logits, batch, mask)
    kept = mask.float()
    plain_sample = {
        k: (per * kept).sum(1) / kept.sum(1) for k, per in per_turn_losses(logits, batch).items()
    }
    assert set(losses) == set(plain) == {"model_action", "model_text", "model_audio"}
    for k in plain:
        torch.testing.assert_close(losses[k], plain[k])
        torch.testing.assert_close(per_sample[k], plain_sample[k])
        assert not per_sample[k].requires_grad  # for logging only


def test_weighted_losses_pull_text_and_actions_toward_onsets() -> None:
    logits, batch, mask = _random_logits_and_batch()
    w = 10.0
    losses, per_sample = weighted_losses(
        logits, batch, mask, TrainConfig(data="", out="", onset_weight=w)
    )
    plain = output_losses(logits, batch, mask)
    per_turn = per_turn_losses(logits, batch)
    onsets = onset_turns(batch) & mask
    assert onsets.sum() == 4  # turns 1, 4, 5 of row 0 and turn 0 of row 1
    kept = mask.float()
    for k in ("model_text", "model_action"):
        per = per_turn[k]
        want = ((per * kept).sum() + w * per[onsets].sum()) / (kept.sum() + w * onsets.sum())
        torch.testing.assert_close(losses[k], want)
        onset_mean = per[onsets].mean()
        # between the plain mean and the onsets' mean, and nearer the onsets
        assert abs(losses[k] - onset_mean) < abs(plain[k] - onset_mean)
        lo, hi = sorted([float(plain[k]), float(onset_mean)])
        assert lo <= float(losses[k]) <= hi
        # row 1: its padded onset (turn 6) counts for nothing
        row = per[1, :5]
        weights = torch.tensor([1 + w, 1, 1, 1, 1])
        torch.testing.assert_close(per_sample[k][1], (row * weights).sum() / weights.sum())


def test_between_before_follows_the_sampling_rule_slot_by_slot() -> None:
    g = torch.Generator().manual_seed(3)
    # mostly PAD, some bytes and EOMs, and a non-byte special that changes nothing
    choices = torch.tensor([PAD] * 6 + [ord("a"), ord("b"), EOM, DELEGATE])
    text = choices[torch.randint(0, len(choices), (5, 7, 4), generator=g)]
    got = between_before(text)
    flat = text.reshape(5, -1)
    state = torch.ones(5, dtype=torch.bool)
    want = []
    for k in range(flat.shape[1]):
        want.append(state.clone())
        state = next_between(state, flat[:, k])
    assert got.tolist() == torch.stack(want, 1).view(5, 7, 4).tolist()
    # by hand: "hi" over turns 1-2 ends with EOM mid-turn 2; the slot after is a decision
    row = _outputs([[], [ord("h")], [ord("i"), EOM], []], [[]] * 4)["model_text"]
    assert between_before(row)[0].tolist() == [
        [True] * 4,
        [True, False, False, False],
        [False, False, True, True],
        [True] * 4,
    ]


def test_floor_weight_takes_decisions_out_of_the_onset_weighting() -> None:
    logits, batch, mask = _random_logits_and_batch()
    # floor weight 1 and no onset weight: exactly the plain mean
    plain = output_losses(logits, batch, mask)
    flat, _ = weighted_losses(
        logits, batch, mask, TrainConfig(data="", out="", onset_weight=0.0, floor_weight=1.0)
    )
    for k in plain:
        torch.testing.assert_close(flat[k], plain[k])
    # onset weight 10: the gradient on a decision slot has the same scale at an onset
    # (the model starts) as in a quiet turn; with floor_weight 0 the onset's is 11 times it
    decide = between_before(batch["model_text"]) & mask[..., None]
    onsets = onset_turns(batch) & mask

    def decision_grad_scale(floor_weight: float) -> tuple[float, float]:
        text = logits.model_text.clone().requires_grad_(True)
        cfg = TrainConfig(data="", out="", onset_weight=10.0, floor_weight=floor_weight)
        losses, _ = weighted_losses(dataclasses.replace(logits, model_text=text), batch, mask, cfg)
        losses["model_text"].backward()
        # d CE / d logit of the target is p - 1: divide it out to get the slot's weight
        p = text.detach().softmax(-1).gather(-1, batch["model_text"][..., None]).squeeze(-1)
        target_grad = text.grad.gather(-1, batch["model_text"][..., None]).squeeze(-1)
        weight = target_grad / (p - 1)
        at_onset = weight[decide & onsets[..., None]]
        quiet = weight[decide & ~onsets[..., None]]
        torch.testing.assert_close(quiet, quiet[0].expand_as(quiet))
        return float(at_onset.mean()), float(quiet.mean())

    onset, quiet = decision_grad_scale(1.0)
    assert onset == pytest.approx(quiet, rel=1e-4)
    onset, quiet = decision_grad_scale(0.0)
    assert onset == pytest.approx(11 * quiet, rel=1e-4)
    with pytest.raises(ValueError, match="floor_weight"):
        TrainConfig(data="", out="", floor_weight=-1.0)


def test_onset_weighting_has_a_gradient_through_the_model() -> None:
    torch.manual_seed(0)
    model = InteractionModel(ModelConfig.preset("tiny"))
    ep = make_example("time_awareness", 0, TINY)[:10]
    batch = to_batch([ep])
    logits, _ = model(batch)
    mask = torch.ones(1, 10, dtype=torch.bool)
    losses, _ = weighted_losses(logits, batch, mask, TrainConfig(data="", out=""))
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---- per-batch augmentation --------------------------------------------------------


def _aug_batch(seed: int = 0, video: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, n = 6, 5
    audio = torch.randint(0, 16, (b, n, 4, 4, 80), generator=g, dtype=torch.uint8)
    audio[:, :2] = 0  # silent turns
    audio[:, 2, 0, 0, :4] = torch.tensor([1, 15, 0, 8], dtype=torch.uint8)  # the edges
    batch = {"user_audio": audio, "model_text": torch.full((b, n, 4), PAD)}
    if video:
        batch["user_video"] = torch.randint(
            0, 256, (b, n, 4, 40, 40, 3), generator=g, dtype=torch.uint8
        )
        batch["user_video"][:, 0] = 0
        batch["user_video"][:, 1] = 255
    return batch


def test_augment_batch_shifts_levels_but_keeps_silence() -> None:
    batch = _aug_batch()
    before = {k: v.clone() for k, v in batch.items()}
    augment_batch(batch, torch.Generator().manual_seed(3))
    audio, old = batch["user_audio"], before["user_audio"]
    assert audio.dtype == torch.uint8 and audio.shape == old.shape
    assert torch.equal(audio == 0, old == 0)  # silence stays silence, speech stays speech
    assert int(audio.min()) >= 0 and int(audio.max()) <= 15
    shifts = set()
    for i in range(audio.shape[0]):
        # one level shift per sequence, -1..+1 bin; only the clamp at 1 and 15 differs
        inner = (old[i] > 1) & (old[i] < 15)
        d = torch.unique(audio[i][inner].long() - old[i][inner].long())
        assert d.numel() == 1 and int(d) in (-1, 0, 1)
        clamped = (old[i].long() + d).clamp(1, 15)
        speech = old[i] > 0
        assert torch.equal(audio[i][speech].long(), clamped[speech])
        shifts.add(int(d))
    assert len(shifts) > 1  # drawn per sequence, not once for the batch
    assert torch.equal(batch["model_text"], before["model_text"])  # outputs untouched
    # camera noise: still uint8 pixels in range, and the frames changed
    video = batch["user_video"]
    assert video.dtype == torch.uint8 and video.shape == before["user_video"].shape
    assert not torch.equal(video, before["user_video"])
    changed = (video != before["user_video"]).flatten(1).any(1)
    assert changed.sum() >= 4  # noise of up to 5 grey levels, drawn per sequence


def test_augment_batch_audio_is_deterministic_per_generator_seed() -> None:
    a, b, c = _aug_batch(video=False), _aug_batch(video=False), _aug_batch(video=False)
    augment_batch(a, torch.Generator().manual_seed(5))
    augment_batch(b, torch.Generator().manual_seed(5))
    augment_batch(c, torch.Generator().manual_seed(6))
    assert torch.equal(a["user_audio"], b["user_audio"])
    assert not torch.equal(a["user_audio"], c["user_audio"])
    # no camera in the batch (or a layout without camera slots): nothing to add noise to
    empty = _aug_batch(video=False)
    empty["user_video"] = torch.zeros((6, 5, 0, 40, 40, 3), dtype=torch.uint8)
    augment_batch(empty, torch.Generator().manual_seed(5))
    assert empty["user_video"].shape == (6, 5, 0, 40, 40, 3)


def test_augment_batch_video_is_deterministic_per_generator_seed() -> None:
    a, b = _aug_batch(), _aug_batch()
    torch.manual_seed(0)
    augment_batch(a, torch.Generator().manual_seed(5))
    torch.manual_seed(1)  # the global RNG elsewhere must not matter
    augment_batch(b, torch.Generator().manual_seed(5))
    assert torch.equal(a["user_video"], b["user_video"])


# ---- evaluation during training, checkpoints -------------------------------------


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-set")
    return write_eval_set(out, ["time_awareness", "delegation"], 1, TINY)


def test_training_evaluates_and_keeps_the_best_checkpoint(shards, eval_set, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(
        data=str(shards),
        out=str(out),
        steps=3,
        batch=1,
        warmup=1,
        log_every=1,
        save_every=3,
        eval_data=str(eval_set),
        eval_every=2,
        device="cpu",
    )
    result = train(cfg)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in records if "eval" not in r] == [1, 2, 3]
    assert [r["step"] for r in evals] == [2, 3]  # every eval_every steps and at the end
    for r in evals:
        assert set(r["eval"]) == {"time_awareness", "delegation"}
        assert "macro_accuracy" in r["eval"]["time_awareness"]
        assert "accuracy" in r["eval"]["delegation"]
        assert isinstance(r["eval_score"], float) and r["eval_score"] <= 1.0
    # best/ is the first evaluation with the highest score
    scores = [r["eval_score"] for r in evals]
    want = evals[scores.index(max(scores))]
    for name in ("model.safetensors", "config.json", "eval.json"):
        assert (out / "best" / name).is_file(), name
    best = json.loads((out / "best" / "eval.json").read_text())
    assert best["step"] == want["step"] and best["score"] == want["eval_score"]
    assert best["scenarios"] == want["eval"]
    assert result["best"] == {"step": want["step"], "score": want["eval_score"]}
    from_pretrained(out / "best")  # a loadable checkpoint
    trainer = torch.load(out / TRAINER_FILE, map_location="cpu", weights_only=False)
    assert trainer["best"] == result["best"]  # survives a resume


def _checkpoint_folder(path) -> None:
    """A checkpoint as training leaves it: weights, config and trainer state."""
    torch.manual_seed(0)
    model = InteractionModel(ModelConfig.preset("tiny"))
    save_pretrained(model, path)
    torch.save({"step": 1}, path / TRAINER_FILE)


def _growing(shards: Path, folder: Path, monkeypatch, at_step: int) -> None:
    """`folder` starts with the first of `shards`' two shards; the second appears while the
    run trains (as `microturn data` writing beside it would put it), after step `at_step`."""
    import microturn.train.loop as loop

    first, second = sorted(shards.glob("shard-*.npz"))
    folder.mkdir()
    shutil.copy(first, folder / first.name)
    calls = {"n": 0}
    real = loop.augment_batch

    def augment_then_write(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == at_step + 1:
            shutil.copy(second, folder / second.name)
        real(*args)

    monkeypatch.setattr(loop, "augment_batch", augment_then_write)


def test_a_growing_run_trains_on_shards_as_they_appear_and_resumes_exactly(
    shards, tmp_path, monkeypatch
) -> None:
    base = {"batch": 2, "lr": 3e-3, "warmup": 2, "log_every": 1, "device": "cpu"}
    _growing(shards, tmp_path / "ga", monkeypatch, at_step=2)
    base["grow_data"] = True
    straight = train(
        TrainConfig(data=str(tmp_path / "ga"), out=str(tmp_path / "a"), steps=6, **base)
    )
    grew = [
        json.loads(line)
        for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()
        if "episodes" in line
    ]
    assert grew == [
        {"step": 0, "shards": 1, "episodes": 2},
        {"step": 3, "shards": 2, "episodes": 4},
    ]
    trainer = torch.load(tmp_path / "a" / TRAINER_FILE, weights_only=False)
    assert trainer["shards"] == [[0, "shard-00000.npz"], [0, "shard-00001.npz"]]
    # cut at step 3, when the second shard came (the schedule of 3 steps is that of 6 so
    # far), then resumed: the same shards in the same order, so the same batches, even
    # from another working directory (started with a relative path, resumed with another)
    _growing(shards, tmp_path / "gb", monkeypatch, at_step=2)
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(data="gb", out=str(tmp_path / "b"), steps=3, **base))
    monkeypatch.chdir(tmp_path / "gb")
    resumed = train(TrainConfig(data=".", out=str(tmp_path / "b"), steps=6, **base), resume=True)
    assert resumed["log"][-1]["loss"] == pytest.approx(straight["log"][-1]["loss"], rel=1e-5)
    # a growing run may start with an empty folder beside a full one, not with nothing
    (tmp_path / "empty").mkdir()
    both = f"{tmp_path / 'empty'},{tmp_path / 'ga'}"
    assert train(TrainConfig(data=both, out=str(tmp_path / "c"), steps=1, **base))["steps"] == 1
    with pytest.raises(ValueError, match="no shards"):
        train(TrainConfig(data=str(tmp_path / "empty"), out=str(tmp_path / "d"), grow_data=True))
    (tmp_path / "ga" / "shard-00001.npz").unlink()
    with pytest.raises(ValueError, match="is gone"):
        train(TrainConfig(data=str(tmp_path / "ga"), out=str(tmp_path / "a"), steps=8), resume=True)


def test_resume_from_broken_weights_is_a_clear_error(shards, tmp_path) -> None:
    out = tmp_path / "run"
    _checkpoint_folder(out)
    cfg = TrainConfig(data=str(shards), out=str(out), steps=2, batch=1, device="cpu")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="corrupt weights"):
        train(cfg, resume=True)
    weights.unlink()
    with pytest.raises(ValueError, match=r"no model\.safetensors"):
        train(cfg, resume=True)
    (out / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt config"):
        train(cfg, resume=True)
    (out / TRAINER_FILE).write_bytes(b"cut off")
    with pytest.raises(ValueError, match="corrupt trainer state"):
        train(cfg, resume=True)
    # nothing was written over the broken checkpoint
    assert not weights.exists() and not (out / "log.jsonl").exists()


def test_resume_without_a_run_and_zero_intervals_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="nothing to resume"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o")), resume=True)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(data="", out="", eval_every=0)
    with pytest.raises(ValueError, match="without in-loop evaluation"):
        TrainConfig(data="", out="", fsdp=True, eval_data="set")


def test_training_report_plots_losses_and_evaluations(tmp_path) -> None:
    from microturn.train.report import GREW, NO_EVALUATION, draw_log, plot_log

    log = tmp_path / "log.jsonl"
    steps = [
        {
            "step": s,
            "lr": 1e-3 / s,
            "loss": 2.0 / s,
            "model_action": 0.1,
            "model_text": 1.0 / s,
            "model_audio": 1.0,
        }
        for s in (1, 2, 3)
    ]
    evals = [{"step": 3, "eval": {"time_awareness": {"macro_accuracy": 0.5}}, "eval_score": 0.5}]
    log.write_text("\n".join(json.dumps(r) for r in steps + evals))
    png = plot_log(log, tmp_path / "run.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    # a run without --eval-data (the GPU runs) plots its losses and its learning rate
    log.write_text("\n".join(json.dumps(r) for r in steps))
    assert plot_log(log, tmp_path / "no-eval.png").read_bytes()[:4] == b"\x89PNG"
    loss_panel, eval_panel = draw_log(steps).axes
    assert len(loss_panel.lines) == 1 + 3  # total and each head
    assert eval_panel.get_title() == NO_EVALUATION
    assert list(eval_panel.lines[0].get_ydata()) == [1e-3, 5e-4, 1e-3 / 3]
    assert draw_log(steps + evals).axes[1].get_title() != NO_EVALUATION
    # a run whose data grew shows the episodes it drew from, step by step
    grew = [{"step": 0, "shards": 1, "episodes": 100}, {"step": 2, "shards": 3, "episodes": 300}]
    data_axis = draw_log(steps + grew).axes[2]
    assert data_axis.get_ylabel() == GREW
    assert list(data_axis.lines[0].get_ydata()) == [100, 300, 300]
    assert len(draw_log(steps).axes) == 2
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no training steps"):
        plot_log(tmp_path / "empty.jsonl", tmp_path / "x.png")


def test_the_shipped_default_model_loads_small_and_half_precision() -> None:
    from safetensors import safe_open

    from microturn.model.checkpoint import DEFAULT_CHECKPOINT, from_pretrained

    weights = DEFAULT_CHECKPOINT / "model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    with safe_open(str(weights), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in list(f.keys())}
    assert "torch.float16" in dtypes and dtypes <= {"torch.float16", "torch.int64"}
    model = from_pretrained(DEFAULT_CHECKPOINT)
    assert model.cfg.layout.micro_turn_ms == 200
    assert (DEFAULT_CHECKPOINT / "README.md").is_file()

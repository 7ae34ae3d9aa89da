import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from microturn.codecs.text import VOCAB_SIZE
from microturn.model import (
    InteractionModel,
    ModelConfig,
    SamplingConfig,
    count_parameters,
    from_pretrained,
    output_losses,
    save_pretrained,
    to_batch,
)
from microturn.model.batch import INPUT_KEYS
from microturn.model.checkpoint import load_sampling, save_sampling
from microturn.model.sampling import (
    NO_ONSET,
    HeadSampling,
    sample_text,
    text_onsets,
    turns_since_onset,
)
from microturn.stream.layout import OUTPUT_TRACKS, Layout, MicroTurns

TINY = ModelConfig.preset("tiny")
OUTPUT_KEYS = [t.value for t in OUTPUT_TRACKS]


def random_turns(layout: Layout, n: int, seed: int) -> MicroTurns:
    rng = np.random.default_rng(seed)
    mt = MicroTurns.empty(layout, n)
    for name in ("user_audio", "model_audio"):
        getattr(mt, name)[:] = rng.integers(0, 16, getattr(mt, name).shape)
    mt.user_video[:] = rng.integers(0, 256, mt.user_video.shape)
    mt.user_video_present[:] = rng.random(mt.user_video_present.shape) > 0.3
    mt.user_audio_present[:] = rng.random(n) > 0.2
    for name in ("user_text", "background", "model_text"):
        getattr(mt, name)[:] = rng.integers(0, 259, getattr(mt, name).shape)
    mt.model_action[:] = rng.choice([256, 259], mt.model_action.shape)
    return mt


def with_silences(mt: MicroTurns, turns: tuple[int, ...]) -> MicroTurns:
    """`mt` with the model's text track silent (PAD) in `turns`: random text writes in
    every micro-turn, so the model would start a message only once."""
    mt.model_text[list(turns)] = 256
    return mt


def split(batch: dict, t: int) -> tuple[dict, dict]:
    inputs = {k: batch[k][:, t : t + 1] for k in INPUT_KEYS}
    teacher = {k: batch[k][:, t : t + 1] for k in OUTPUT_KEYS}
    return inputs, teacher


def make_model(cfg: ModelConfig = TINY, seed: int = 0) -> InteractionModel:
    torch.manual_seed(seed)
    return InteractionModel(cfg).eval()


def test_parameter_counts() -> None:
    total, active = count_parameters(make_model())
    assert total <= 10_000_000 and active < total
    with torch.device("meta"):
        big = InteractionModel(ModelConfig.preset("tml-small"))
    total, active = count_parameters(big)
    assert abs(total / 276e9 - 1) < 0.05, total
    assert abs(active / 12e9 - 1) < 0.05, active
    small_total, _ = count_parameters(make_model(ModelConfig.preset("small")))
    assert 10_000_000 < small_total < 300_000_000


@pytest.mark.parametrize(
    "ffn,clock,history,onset",
    [
        ("moe", 0, False, 0),
        ("dense", 0, False, 0),
        ("moe", 7, False, 0),
        ("moe", 0, True, 0),
        ("moe", 0, True, 3),
    ],
)
def test_streaming_step_matches_full_forward(
    ffn: str, clock: int, history: bool, onset: int
) -> None:
    cfg = replace(
        TINY,
        ffn=ffn,
        n_shared_experts=1 if ffn == "moe" else 0,
        clock_octaves=clock,
        output_history=history,
        onset_clock_turns=onset,
    )
    model = make_model(cfg)
    n = 7
    batch = to_batch(
        [
            with_silences(random_turns(cfg.layout, n, 1), (1, 2, 3)),
            with_silences(random_turns(cfg.layout, n, 2), (0, 4)),
        ]
    )
    with torch.no_grad():
        full, _ = model(batch)
    state = model.new_state(2)
    for t in range(n):
        inputs, teacher = split(batch, t)
        result = model.step(state, inputs, teacher=teacher)
        for track in OUTPUT_TRACKS:
            got = result.logits.track(track)[:, 0]
            want = full.track(track)[:, t]
            assert torch.allclose(got, want, atol=1e-4, rtol=0), (track, t)
    # the last micro-turn's outputs wait in `pending` until the next step writes them
    assert state.lengths.tolist() == [n * cfg.layout.slots_per_turn - 9] * 2


@pytest.mark.parametrize("history,onset", [(False, 0), (True, 0), (True, 4)])
def test_streams_of_different_lengths_step_together(history: bool, onset: int) -> None:
    model = make_model(replace(TINY, output_history=history, onset_clock_turns=onset))
    lay = TINY.layout
    turns = [with_silences(random_turns(lay, 6, s), (s + 1, 3)) for s in range(3)]
    fulls = []
    with torch.no_grad():
        for mt in turns:
            fulls.append(model(to_batch(mt))[0])
    batches = [to_batch(mt) for mt in turns]
    state = model.new_state(3)
    done = [0, 0, 0]

    def step(rows: list[int]) -> None:
        inputs = {
            k: torch.cat([split(batches[r], done[r])[0][k] for r in rows]) for k in INPUT_KEYS
        }
        teacher = {
            k: torch.cat([split(batches[r], done[r])[1][k] for r in rows]) for k in OUTPUT_KEYS
        }
        view = state if rows == [0, 1, 2] else state.select(rows)
        result = model.step(view, inputs, teacher=teacher)
        for j, r in enumerate(rows):
            for track in OUTPUT_TRACKS:
                got = result.logits.track(track)[j, 0]
                want = fulls[r].track(track)[0, done[r]]
                assert torch.allclose(got, want, atol=1e-4, rtol=0), (r, done[r], track)
            done[r] += 1

    for _ in range(3):
        step([0])
    step([2])
    for _ in range(3):
        step([0, 1, 2])  # three streams at three different lengths in one batch
    step([1, 2])
    assert done == [6, 4, 5]
    s = lay.slots_per_turn
    assert state.lengths.tolist() == [6 * s - 9, 4 * s - 9, 5 * s - 9]
    assert state.turns.tolist() == [6, 4, 5]


def test_positions_advance_the_same_every_turn() -> None:
    """Each step writes the previous outputs and the new inputs: S positions a turn."""
    model = make_model()
    state = model.new_state(1)
    b = to_batch(random_turns(TINY.layout, 3, 0))
    seen = []
    for t in range(3):
        model.step(state, split(b, t)[0])
        seen.append(int(state.lengths[0]))
    s, i = TINY.layout.slots_per_turn, TINY.layout.input_slots
    assert seen == [i, i + s, i + 2 * s]


def test_sampling_is_seeded_and_per_stream() -> None:
    model = make_model()
    b = to_batch([random_turns(TINY.layout, 2, 0)] * 2)
    hot = SamplingConfig()

    def run(seeds: list[int]) -> list:
        state = model.new_state(len(seeds), seeds=seeds)
        outs = []
        for t in range(2):
            inputs = {k: v[: len(seeds)] for k, v in split(b, t)[0].items()}
            r = model.step(state, inputs, sampling=hot)
            outs.append((r.model_text.clone(), r.model_audio.clone()))
        return outs

    a, again, other = run([5, 6]), run([5, 6]), run([7, 6])
    for (ta, aa), (tb, ab) in zip(a, again, strict=True):
        assert torch.equal(ta, tb) and torch.equal(aa, ab)
    assert any(not torch.equal(x[1][0], y[1][0]) for x, y in zip(a, other, strict=True))
    # stream 1 (seed 6) samples the same whatever stream 0 does
    for x, y in zip(a, other, strict=True):
        assert torch.equal(x[1][1], y[1][1])
    alone = run([6])
    for x, y in zip(a, alone, strict=True):
        assert torch.equal(x[1][1], y[1][0])


def test_sampled_outputs_are_in_range() -> None:
    model = make_model()
    b = to_batch(random_turns(TINY.layout, 1, 0))
    r = model.step(model.new_state(1), split(b, 0)[0])
    assert r.model_audio.shape == (1, 4, 4, 80) and int(r.model_audio.max()) < 16
    assert set(r.model_action.flatten().tolist()) <= {256, 259}
    assert not set(r.model_text.flatten().tolist()) & {257, 259}  # never MISSING or an action


def test_start_bias_moves_only_the_decision_to_start_a_message() -> None:
    """A random model starts messages at once (PAD is 1 of 258 text ids); a start bias
    of -20 keeps it silent between messages but never cuts a message it is writing."""
    model = make_model()
    b = to_batch(random_turns(TINY.layout, 2, 0))
    inputs0, teacher = split(b, 0)
    inputs1 = split(b, 1)[0]
    pad, eom = 256, 258

    def next_text(previous: list[int], bias: float | SamplingConfig) -> list[int]:
        state = model.new_state(1, seeds=[3])
        model.step(state, inputs0, teacher={**teacher, "model_text": torch.tensor([[previous]])})
        sampling = bias if isinstance(bias, SamplingConfig) else SamplingConfig(start_bias=bias)
        out = model.step(state, inputs1, sampling=sampling)
        return out.model_text[0].tolist()

    assert next_text([pad] * 4, 0.0)[0] != pad  # no bias: speaks at once
    assert next_text([pad] * 4, -20.0) == [pad] * 4  # between messages: silent
    assert next_text([65, 66, eom, pad], -20.0) == [pad] * 4  # a closed message is between
    assert next_text([pad, 65, 66, 67], -20.0)[0] != pad  # mid-message: keeps writing
    greedy = SamplingConfig(start_rule="greedy", start_bias=-20.0)
    assert next_text([pad] * 4, greedy) == [pad] * 4
    assert next_text([pad, 65, 66, 67], greedy)[0] != pad
    # the rule decides in `step` too: just above the model's own odds it starts, just
    # below it keeps quiet, whichever stream seed draws
    silent = {**teacher, "model_text": torch.tensor([[[pad] * 4]])}
    state = model.new_state(1, seeds=[3])
    model.step(state, inputs0, teacher=silent)
    logits = model.step(state, inputs1, sampling=greedy).logits.model_text[0, 0, 0]
    allowed = logits.clone()
    allowed[257] = allowed[259:] = float("-inf")  # MISSING and actions: never text
    logp = allowed.log_softmax(-1)
    odds = float(torch.log1p(-logp[pad].exp()) - logp[pad])
    for margin, starts in ((0.05, True), (-0.05, False)):
        rule = SamplingConfig(start_rule="greedy", start_bias=margin - odds)
        for seed in (3, 4, 5, 6):
            state = model.new_state(1, seeds=[seed])
            model.step(state, inputs0, teacher=silent)
            first = model.step(state, inputs1, sampling=rule).model_text[0, 0]
            assert (first != pad) == starts

    # per stream in one batch: the one mid-message writes on, the other stays silent
    state = model.new_state(2, seeds=[3, 4])
    both = {k: v.expand(2, *v.shape[1:]) for k, v in inputs0.items()}
    written = torch.tensor([[[pad, 65, 66, 67]], [[65, eom, pad, pad]]])
    model.step(
        state,
        both,
        teacher={
            **{k: v.expand(2, *v.shape[1:]) for k, v in teacher.items()},
            "model_text": written,
        },
    )
    out = model.step(
        state,
        {k: v.expand(2, *v.shape[1:]) for k, v in inputs1.items()},
        sampling=SamplingConfig(start_bias=-20.0),
    )
    assert out.model_text[0, 0] != pad and out.model_text[1].tolist() == [pad] * 4
    # a reused row starts between messages, whatever its last stream was writing
    state.reset_rows([0])
    out = model.step(
        state,
        {k: v.expand(2, *v.shape[1:]) for k, v in inputs0.items()},
        sampling=SamplingConfig(start_bias=-20.0),
    )
    assert out.model_text[0].tolist() == [pad] * 4
    with pytest.raises(ValueError, match="finite"):
        SamplingConfig(start_bias=float("inf"))
    # without a `sampling` argument, the model samples as its own `sampling` says
    model.sampling = SamplingConfig(start_bias=-20.0)
    state = model.new_state(1, seeds=[3])
    assert model.step(state, inputs0).model_text[0].tolist() == [pad] * 4


def test_greedy_start_rule_starts_exactly_when_the_odds_reach_the_threshold() -> None:
    """Between messages, "greedy" starts iff P(start) >= sigmoid(-start_bias), whatever
    the draw; "sample" draws the decision; a row inside a message is drawn as usual."""
    pad = 256
    logits = torch.full((64, VOCAB_SIZE), float("-inf"))
    logits[:, pad] = 0.0
    logits[:, 65] = math.log(0.4 / 0.6)  # P(start) = 0.4 over the allowed ids
    logits[:, 259] = 5.0  # a disallowed id (an action) counts for nothing
    between = torch.ones(64, dtype=torch.bool)
    between[-1] = False
    gens = [torch.Generator().manual_seed(i) for i in range(64)]

    def draw(**kw) -> list[int]:
        return sample_text(logits, between, SamplingConfig(**kw), gens).tolist()

    assert set(draw(start_rule="greedy")[:-1]) == {pad}  # 0.4 < 0.5
    assert set(draw(start_rule="greedy", start_bias=0.5)[:-1]) == {65}  # 0.4 >= 0.378
    assert set(draw(start_rule="greedy", start_bias=0.3)[:-1]) == {pad}  # 0.4 < 0.426
    assert set(draw()[:-1]) == {pad, 65}  # sampled: some of each
    assert set(draw(start_rule="greedy")[-1:]) <= {pad, 65}  # mid-message: a draw
    between[:] = False  # every row mid-message: the rule leaves them to the draw
    assert set(draw(start_rule="greedy")) == {pad, 65}
    with pytest.raises(ValueError, match="start_rule"):
        SamplingConfig(start_rule="eager")
    with pytest.raises(ValueError, match="start_rule"):
        SamplingConfig.from_dict({"start_rule": 1})


def test_losses_and_expert_load() -> None:
    model = make_model()
    model.train()
    batch = to_batch([random_turns(TINY.layout, 4, s) for s in range(2)])
    logits, aux = model(batch)
    losses = output_losses(logits, batch)
    assert set(losses) == set(OUTPUT_KEYS)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["model_text"].item() == pytest.approx(
        np.log(272), rel=0.1
    )  # near-uniform at init
    load = model.expert_load()
    assert load.shape == (TINY.n_layers, TINY.n_experts)
    assert torch.allclose(load.sum(-1), torch.ones(TINY.n_layers))
    assert aux.item() > 0
    (sum(losses.values()) + aux).backward()
    assert model.embed.audio_bag.weight.grad.abs().sum() > 0
    assert model.embed.hmlp.pixel.weight.grad.abs().sum() > 0


def test_few_steps_reduce_loss_on_a_fixed_batch() -> None:
    model = make_model()
    model.train()
    batch = to_batch([random_turns(TINY.layout, 3, s) for s in range(2)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        logits, aux = model(batch)
        loss = sum(output_losses(logits, batch).values()) + 0.01 * aux
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.8


def test_save_and_load(tmp_path) -> None:
    model = make_model()
    save_pretrained(model, tmp_path / "ckpt")
    loaded = from_pretrained(tmp_path / "ckpt")
    b = to_batch(random_turns(TINY.layout, 2, 0))
    with torch.no_grad():
        assert torch.equal(model(b)[0].model_text, loaded(b)[0].model_text)
    save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.6 * (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    with torch.no_grad():
        diff = from_pretrained(tmp_path / "half")(b)[0].model_text - model(b)[0].model_text
    assert diff.abs().max() < 1e-2
    # lossless: float16 where the cast changes nothing (here: a part already in float16
    # precision), float32 elsewhere; the loaded model is exactly the saved one
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.copy_(p.half().float())
    save_pretrained(model, tmp_path / "mixed", dtype=torch.float16, lossless=True)
    mixed = (tmp_path / "mixed" / "model.safetensors").stat().st_size
    assert half < mixed < (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    exact = from_pretrained(tmp_path / "mixed")
    for name, p in model.state_dict().items():
        assert torch.equal(p, exact.state_dict()[name]), name


def test_a_checkpoint_carries_its_sampling(tmp_path) -> None:
    """The default sampling travels in config.json: saved, loaded, set alone (the weights
    untouched), and absent in an older checkpoint (then SamplingConfig())."""
    model = make_model()
    model.sampling = SamplingConfig(start_bias=1.5, audio=HeadSampling(0.5, top_p=0.8))
    ck = save_pretrained(model, tmp_path / "c")
    assert from_pretrained(ck).sampling == model.sampling
    assert load_sampling(ck) == model.sampling
    weights = (ck / "model.safetensors").read_bytes()
    save_sampling(ck, SamplingConfig(start_bias=-2.0))
    assert from_pretrained(ck).sampling == SamplingConfig(start_bias=-2.0)
    assert (ck / "model.safetensors").read_bytes() == weights
    cfg = json.loads((ck / "config.json").read_text())
    del cfg["sampling"]
    (ck / "config.json").write_text(json.dumps(cfg))
    assert from_pretrained(ck).sampling == SamplingConfig()
    cfg["sampling"] = {"start_bias": 1.0}  # a partial section keeps the other defaults
    (ck / "config.json").write_text(json.dumps(cfg))
    assert from_pretrained(ck).sampling == SamplingConfig(start_bias=1.0)
    for bad, match in [
        ({"start_bias": "high"}, "must be a number"),
        ({"start_bias": float("nan")}, "finite"),
        ({"eagerness": 2}, "unknown sampling fields"),
        ({"start_bias": True}, "must be a number"),
        ({"text": {"temperature": -1}}, "temperature must be finite and >= 0"),
        ({"text": {"temperature": float("nan")}}, "temperature must be finite"),
        ({"audio": {"top_k": 2.5}}, "top_k must be an integer"),
        ({"audio": {"top_p": "all"}}, "top_p must be a number"),
        ({"text": {"warmth": 1}}, "sampling.text"),
        ({"text": 0.7}, "must be a JSON object"),
        ([1, 2], "must be a JSON object"),
    ]:
        cfg["sampling"] = bad
        (ck / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match="bad sampling") as err:
            from_pretrained(ck)
        assert err.match(match)


def test_bad_checkpoints(tmp_path) -> None:
    model = make_model()
    ck = save_pretrained(model, tmp_path / "c")
    with pytest.raises(ValueError, match=r"no config\.json"):
        from_pretrained(tmp_path / "nothing")
    weights = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="corrupt weights"):
        from_pretrained(ck)
    (ck / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupt weights"):
        from_pretrained(ck)
    (ck / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no model\.safetensors"):
        from_pretrained(ck)
    ck = save_pretrained(model, tmp_path / "d")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"]["d_model"] = 128
    cfg["model"]["n_heads"] = 2
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        from_pretrained(ck)
    cfg["model"]["n_layers"] = 5
    cfg["model"]["d_model"] = 256
    cfg["model"]["n_heads"] = 4
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        from_pretrained(ck)
    cfg["model"]["wings"] = 2
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model config fields"):
        from_pretrained(ck)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt config"):
        from_pretrained(ck)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b.pop("user_text"), "missing track 'user_text'"),
        (lambda b: b.update(user_text=b["user_text"][..., :1]), r"user_text: shape"),
        (lambda b: b.update(user_audio=b["user_audio"].float()), "integer type"),
        (lambda b: b.update(user_text=b["user_text"] + 1000), r"values must lie in 0\.\.271"),
        (lambda b: b.update(user_audio=b["user_audio"] + 16), r"values must lie in 0\.\.15"),
        (lambda b: b.update(user_video=b["user_video"][:, :, :2]), "user_video: shape"),
        (lambda b: b.update(user_audio_present=b["user_audio_present"].long()), "expected bool"),
    ],
)
def test_bad_step_inputs(mutate, match: str) -> None:
    model = make_model()
    inputs, _ = split(to_batch(random_turns(TINY.layout, 1, 0)), 0)
    mutate(inputs)
    state = model.new_state(1)
    with pytest.raises(ValueError, match=match):
        model.step(state, inputs)
    assert state.lengths.item() == 0  # nothing was written


def test_wrong_batch_size() -> None:
    model = make_model()
    inputs, _ = split(to_batch(random_turns(TINY.layout, 1, 0)), 0)
    with pytest.raises(ValueError, match="shape"):
        model.step(model.new_state(2), inputs)


def test_bounded_memory_and_window() -> None:
    """Past the window the cache stays the same size; until then it is exact."""
    model = make_model()
    n = 12
    batch = to_batch(random_turns(TINY.layout, n, 3))
    with torch.no_grad():
        full, _ = model(batch)
    state = model.new_state(1, window_turns=4, sink_turns=1)
    size = state.nbytes()
    for t in range(n):
        inputs, teacher = split(batch, t)
        r = model.step(state, inputs, teacher=teacher)
        same = torch.allclose(r.logits.model_audio[:, 0], full.model_audio[:, t], atol=1e-4)
        if t < 4:  # everything still inside the window (+ sinks): exact
            assert same, t
        assert torch.isfinite(r.logits.model_text).all()
    assert state.nbytes() == size
    assert not same  # by turn 11 the window has forgotten the start
    s = TINY.layout.slots_per_turn
    assert int(state.lengths[0]) == (n - 1) * s + TINY.layout.input_slots


def test_snapshot_restore_is_exact() -> None:
    model = make_model()
    batch = to_batch([random_turns(TINY.layout, 4, s) for s in range(2)])
    state = model.new_state(2, window_turns=2)
    for t in range(3):
        model.step(state, split(batch, t)[0])
    snap = state.snapshot()
    first = model.step(state, split(batch, 3)[0], sampling=SamplingConfig())
    state.restore(snap)
    again = model.step(state, split(batch, 3)[0], sampling=SamplingConfig())
    assert torch.equal(first.model_audio, again.model_audio)
    assert torch.equal(first.logits.model_text, again.logits.model_text)


def test_stream_bookkeeping_keeps_the_onset_count() -> None:
    """snapshot/restore, move_row, prefix and reset_rows carry each stream's count of
    micro-turns since its last message start, as they carry its length."""
    state = make_model(replace(TINY, onset_clock_turns=5)).new_state(3)
    state.since_onset.copy_(torch.tensor([4, 7, 2]))
    snap = state.snapshot()
    state.since_onset.zero_()
    state.restore(snap)
    assert state.since_onset.tolist() == [4, 7, 2]
    state.move_row(1, 0)
    assert state.since_onset.tolist() == [7, 7, 2]
    state.reset_rows([1])
    assert state.since_onset.tolist() == [7, NO_ONSET, 2]
    view = state.prefix(2)
    view.set_since_onset(torch.tensor([1, 1]))
    assert state.since_onset.tolist() == [1, 1, 2]
    state.select([2]).set_since_onset(torch.tensor([9]))
    assert state.since_onset.tolist() == [1, 1, 9]


def test_a_reused_row_counts_from_no_start() -> None:
    """A row reset after another conversation (whose last micro-turn wrote text) steps
    and prefills as a fresh state does: its count starts from "never", and its first
    written micro-turn is a start."""
    model = make_model(replace(TINY, output_history=True, onset_clock_turns=5))
    old = to_batch(random_turns(TINY.layout, 3, 5))  # writes in every micro-turn
    new = to_batch(random_turns(TINY.layout, 3, 6))
    state = model.new_state(1)
    for t in range(3):
        model.step(state, split(old, t)[0], teacher=split(old, t)[1])
    assert state.since_onset.tolist() == [3]
    state.reset_rows([0])
    fresh = model.new_state(1)
    for t in range(2):
        x = model.step(state, split(new, t)[0], teacher=split(new, t)[1])
        y = model.step(fresh, split(new, t)[0], teacher=split(new, t)[1])
        for track in OUTPUT_TRACKS:
            assert torch.allclose(x.logits.track(track), y.logits.track(track), atol=1e-5)
    assert state.since_onset.tolist() == fresh.since_onset.tolist() == [2]
    state.reset_rows([0])
    model.prefill(state, {k: v[:, :2] for k, v in new.items()})
    assert state.since_onset.tolist() == [2]


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=250)
    with pytest.raises(ValueError, match="top_k"):
        ModelConfig(top_k=5)
    with pytest.raises(ValueError, match="ffn"):
        ModelConfig(ffn="sparse")
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("huge")
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY


def test_forward_checks_its_batch() -> None:
    model = make_model()
    batch = to_batch(random_turns(TINY.layout, 2, 0))
    batch["model_text"] = batch["model_text"][:, :1]
    with pytest.raises(ValueError, match="model_text: shape"):
        model(batch)


def test_windowed_training_forward_matches_streaming_past_the_window() -> None:
    """Training masks attention like the streaming ring; without sinks the two agree
    on every micro-turn, long after the window has slid."""
    cfg = replace(TINY, window_turns=3, sink_turns=0)
    model = make_model(cfg)
    n = 9
    batch = to_batch(random_turns(cfg.layout, n, 4))
    with torch.no_grad():
        full, _ = model(batch)
    state = model.new_state(1)
    for t in range(n):
        inputs, teacher = split(batch, t)
        r = model.step(state, inputs, teacher=teacher)
        for track in OUTPUT_TRACKS:
            assert torch.allclose(r.logits.track(track)[:, 0], full.track(track)[:, t], atol=1e-4)


def test_a_grown_clock_starts_silent_and_is_saved(tmp_path) -> None:
    """grow(clock_octaves=...) keeps what a trained model computes (the clock starts at
    zero), and a clocked checkpoint loads back with its clock."""
    model = make_model()
    batch = to_batch(random_turns(TINY.layout, 4, 3))
    grown = model.grow(clock_octaves=7)
    assert grown.cfg.clock_octaves == 7 and model.grow(clock_octaves=0) is model
    with torch.no_grad():
        for track in OUTPUT_TRACKS:
            assert torch.equal(model(batch)[0].track(track), grown(batch)[0].track(track))
    assert grown.clock is not None
    torch.nn.init.normal_(grown.clock.proj.weight, std=0.5)
    save_pretrained(grown, tmp_path / "clocked")
    loaded = from_pretrained(tmp_path / "clocked")
    with torch.no_grad():
        assert torch.equal(loaded(batch)[0].model_text, grown(batch)[0].model_text)
        assert not torch.equal(loaded(batch)[0].model_text, model(batch)[0].model_text)


def test_the_onset_clock_counts_from_the_model_s_last_message_start() -> None:
    """Micro-turns since the last start of the model's text (text after a micro-turn
    without), counted before each micro-turn; none yet counts from NO_ONSET, or from
    what a stream carried over."""
    pad = 256
    text = torch.tensor([[[pad, pad], [65, pad], [66, 67], [pad, pad], [pad, 68], [69, 70]]])
    onsets = text_onsets(text)
    assert onsets.tolist() == [[False, True, False, False, True, False]]
    since = turns_since_onset(onsets)
    assert since[0, 2:].tolist() == [1, 2, 3, 1, 2]
    assert since[0, :2].tolist() == [NO_ONSET, NO_ONSET + 1]
    carried = turns_since_onset(onsets, torch.tensor([5]))
    assert carried[0, :3].tolist() == [5, 6, 1]
    # a micro-turn that continues the text of the one before starts nothing
    assert text_onsets(text[:, 2:3], text[:, 1]).tolist() == [[False]]
    assert text_onsets(text[:, 2:3], text[:, 0]).tolist() == [[True]]


def test_a_grown_onset_clock_starts_silent_and_is_read_by_the_depth_decoder(tmp_path) -> None:
    """grow(onset_clock_turns=...) keeps what a trained model computes; trained, the
    outputs depend on how long ago the model last started writing (the same inputs and
    main-model states), and the checkpoint loads back with it."""
    model = make_model()
    grown = model.grow(onset_clock_turns=5)
    assert grown.cfg.onset_clock_turns == 5 and model.grow(onset_clock_turns=0) is model
    early = with_silences(random_turns(TINY.layout, 6, 3), (1,))  # starts at 0 and 2
    late = with_silences(random_turns(TINY.layout, 6, 3), (1, 3))  # at 0, 2 and 4
    batch = to_batch(early)
    with torch.no_grad():
        assert torch.equal(model(batch)[0].model_text, grown(batch)[0].model_text)
    assert grown.onset_clock is not None
    torch.nn.init.normal_(grown.onset_clock.embed.weight, std=0.5)
    with torch.no_grad():
        context, written, _ = grown.encode(batch)
        since = grown.since_onset(batch)
        assert since is not None and since[0].tolist()[1:] == [1, 2, 1, 2, 3]
        a = grown.decode(context, written, since)
        b = grown.decode(context, written, grown.since_onset(to_batch(late)))
        assert torch.equal(a.model_text[:, :5], b.model_text[:, :5])  # late: 2, 1 at the end
        assert not torch.allclose(a.model_text[:, 5:], b.model_text[:, 5:])
        with pytest.raises(ValueError, match="since its last message start"):
            grown.decode(context, written)
    save_pretrained(grown, tmp_path / "onset")
    loaded = from_pretrained(tmp_path / "onset")
    with torch.no_grad():
        assert torch.equal(loaded(batch)[0].model_text, grown(batch)[0].model_text)


def test_the_clock_reads_micro_turns_off_positions() -> None:
    """One reading per micro-turn (every slot of it alike), a different one for each
    micro-turn, repeating only after the longest period (2^octaves micro-turns)."""
    clock = make_model(replace(TINY, clock_octaves=3)).clock
    assert clock is not None
    s = TINY.layout.slots_per_turn
    with torch.no_grad():
        read = clock(torch.arange(10 * s)[None], torch.float32)[0].view(10, s, -1)
    assert torch.allclose(read, read[:, :1].expand_as(read))  # slots of a micro-turn
    per_turn = read[:, 0]
    distinct = torch.cdist(per_turn[:8], per_turn[:8]) + torch.eye(8)
    assert distinct.min() > 1e-3  # 8 micro-turns, 8 readings
    assert torch.allclose(per_turn[8], per_turn[0], atol=1e-6)  # period 2^3


@pytest.mark.parametrize("history,onset", [(False, 0), (True, 0), (True, 3)])
def test_prefill_then_step_matches_streaming(history: bool, onset: int) -> None:
    """Prefilling recorded micro-turns (in two pieces) leaves the state a streamed run
    would have."""
    model = make_model(replace(TINY, output_history=history, onset_clock_turns=onset))
    batch = to_batch(with_silences(random_turns(TINY.layout, 5, 8), (1, 3)))
    streamed = model.new_state(1)
    for t in range(4):
        model.step(streamed, split(batch, t)[0], teacher=split(batch, t)[1])
    prefilled = model.new_state(1)
    model.prefill(prefilled, {k: v[:, :2] for k, v in batch.items()})
    model.prefill(prefilled, {k: v[:, 2:4] for k, v in batch.items()})
    assert torch.equal(prefilled.lengths, streamed.lengths)
    assert torch.equal(prefilled.turns, streamed.turns)
    assert torch.equal(prefilled.since_onset, streamed.since_onset)
    a = model.step(streamed, split(batch, 4)[0], teacher=split(batch, 4)[1])
    b = model.step(prefilled, split(batch, 4)[0], teacher=split(batch, 4)[1])
    assert torch.allclose(a.logits.model_audio, b.logits.model_audio, atol=1e-4)


def test_prefill_in_pieces_counts_as_streaming_does() -> None:
    """Prefilled in pieces that cut a silence (the count must carry over a piece
    without a start) and a run of written micro-turns (a piece that opens on text
    after text starts nothing), a state counts what the streamed one counts."""
    model = make_model(replace(TINY, onset_clock_turns=8))
    batch = to_batch(with_silences(random_turns(TINY.layout, 6, 9), (1, 2)))  # starts: 0, 3
    streamed = model.new_state(1)
    counts = []
    for t in range(6):
        model.step(streamed, split(batch, t)[0], teacher=split(batch, t)[1])
        counts.append(streamed.since_onset.item())
    assert counts == [1, 2, 3, 1, 2, 3]
    prefilled = model.new_state(1)
    for lo, hi in ((0, 1), (1, 3), (3, 4), (4, 6)):
        model.prefill(prefilled, {k: v[:, lo:hi] for k, v in batch.items()})
        assert prefilled.since_onset.item() == counts[hi - 1], (lo, hi)


def test_output_history_reads_the_previous_micro_turn(tmp_path) -> None:
    """With output_history, what the depth decoder writes in micro-turn t depends on the
    outputs of t - 1 through its own input, not only through the main model; a reused
    stream row starts from no outputs; grow adds the history to a trained model keeping
    every other weight, and the checkpoint loads back with it."""
    model = make_model(replace(TINY, output_history=False))
    grown = model.grow(output_history=True)
    assert grown.cfg.output_history and grown.depth.history is not None
    assert model.grow(output_history=False) is model
    assert all(torch.equal(v, grown.state_dict()[k]) for k, v in model.state_dict().items())
    torch.nn.init.normal_(grown.depth.history.weight, std=0.5)
    batch = to_batch(random_turns(TINY.layout, 3, 4))
    context = torch.randn(1, TINY.d_model)
    written = torch.zeros(1, 0, TINY.d_model)
    with torch.no_grad():
        outputs = grown.encode(batch)[1]  # [1, 3, O, d]: each micro-turn's written slots
        a, b = (grown.depth.hidden(context, written, outputs[:, t]) for t in (0, 1))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="previous outputs"):
        grown.depth.hidden(context, written)
    # Streaming, the depth cache gives the states the whole prefix gives, slot by slot.
    with torch.no_grad():
        slots = outputs[:, 1]
        whole = grown.depth.hidden(context, slots[:, :-1], outputs[:, 0])
        cache, first = grown.depth.start(context, outputs[:, 0])
        cached = [first] + [
            grown.depth.extend(cache, slots[:, j]) for j in range(slots.shape[1] - 1)
        ]
    assert torch.allclose(torch.stack(cached, 1), whole, atol=1e-5)
    # A reused row (reset after another conversation) computes what a fresh state does.
    state = grown.new_state(1)
    for t in range(3):
        grown.step(state, split(batch, t)[0], teacher=split(batch, t)[1])
    state.reset_rows([0])
    x = grown.step(state, split(batch, 0)[0], teacher=split(batch, 0)[1])
    y = grown.step(grown.new_state(1), split(batch, 0)[0], teacher=split(batch, 0)[1])
    for track in OUTPUT_TRACKS:
        assert torch.allclose(x.logits.track(track), y.logits.track(track), atol=1e-5)
    save_pretrained(grown, tmp_path / "history")
    loaded = from_pretrained(tmp_path / "history")
    with torch.no_grad():
        assert torch.equal(loaded(batch)[0].model_text, grown(batch)[0].model_text)

"""Free-running evaluation inside training, by scenario scores rather than loss.

The model hears the evaluation split's packed inputs and writes its own outputs micro-turn
by micro-turn, sampled exactly as in a live session (`model.step`), every episode of the
set in one batch; each scenario's scorer then judges the Timeline. Speech activity is read
off the model's dMel frames and text off its text track (the benchmark's text view, with
no vocoder), which keeps it cheap enough to run every few hundred steps, also on a GPU
machine without speech synthesizers: the set is generated once and stored.

A set is a folder with `turns.npz` (shard format: the packed episodes) and
`episodes.json.gz` (each Episode for its scorer, with its media blanked to keep it small).
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from microturn.codecs.text import N_BYTES, Special
from microturn.codecs.vision import VisionCodec
from microturn.engine.recorder import TimelineRecorder, read_turn
from microturn.model.batch import INPUT_KEYS, to_batch
from microturn.model.loss import per_slot_losses
from microturn.model.sampling import SamplingConfig, between_before
from microturn.model.transformer import InteractionModel, Logits
from microturn.scenarios import get
from microturn.scenarios.scoring import headline
from microturn.stream.episode import Episode, Timeline
from microturn.stream.layout import OUTPUT_TRACKS, Layout, MicroTurns, Track, pack_episode
from microturn.train.data import load_shard, save_shard

TURNS_FILE = "turns.npz"
EPISODES_FILE = "episodes.json.gz"
SPEECH_BIN = 4  # a dMel frame whose loudest channel reaches this bin is speech
DMEL_FRAMES_PER_10MS = 0.8  # dMel frames are 12.5 ms; activity is kept per 10 ms


def driver_for(index: int) -> str:
    """The benchmark's driver choice: a quarter of the episodes typed."""
    return "text" if index % 4 == 3 else "speech"


def write_eval_set(
    out: Path,
    scenarios: list[str],
    per_scenario: int,
    layout: Layout,
    *,
    split: str = "eval",
    first_seed: int = 0,
) -> Path:
    """Generate and store `per_scenario` episodes of each scenario (benchmark seeds)."""
    out.mkdir(parents=True, exist_ok=True)
    turns, names, episodes = [], [], []
    for name in tqdm(scenarios, desc=f"eval set ({split})", unit="scenario"):
        for i in range(per_scenario):
            ep = get(name).generate(first_seed + i, split, driver_for(i))
            packed_ep = ep
            if ep.user_video is not None:  # a layout without camera slots is blind
                video = None
                if layout.video_size:
                    video = VisionCodec(layout.video_size).fit_track(ep.user_video)
                packed_ep = replace(ep, user_video=video)
            turns.append(pack_episode(packed_ep, layout))
            names.append(name)
            episodes.append(_blank_media(ep).to_dict())
    save_shard(out / TURNS_FILE, turns, names)
    with gzip.open(out / EPISODES_FILE, "wt") as f:
        json.dump(episodes, f)
    return out


def _blank_media(ep: Episode) -> Episode:
    """The episode as its scorer needs it: times, words and metadata; silent audio."""
    silent = np.zeros_like(ep.user_audio)
    ref = ep.reference
    if ref is not None:
        ref = replace(ref, audio=np.zeros_like(ref.audio))
    return replace(ep, user_audio=silent, user_video=None, reference=ref)


def load_eval_set(path: Path, layout: Layout) -> list[tuple[Episode, MicroTurns]]:
    path = Path(path)
    if not (path / TURNS_FILE).is_file() or not (path / EPISODES_FILE).is_file():
        raise ValueError(f"{path}: not an evaluation set (needs {TURNS_FILE}, {EPISODES_FILE})")
    packed = load_shard(path / TURNS_FILE, layout)
    with gzip.open(path / EPISODES_FILE, "rt") as f:
        episodes = [Episode.from_dict(d) for d in json.load(f)]
    if len(episodes) != len(packed):
        raise ValueError(f"{path}: {len(episodes)} episodes but {len(packed)} packed")
    return [(ep, turns) for ep, (_, turns) in zip(episodes, packed, strict=True)]


@torch.no_grad()
def free_run(
    model: InteractionModel,
    inputs: list[MicroTurns],
    *,
    seeds: list[int],
    sampling: SamplingConfig | None = None,
) -> list[MicroTurns]:
    """Each episode's inputs with the outputs the model wrote itself, all streams in one
    batch; streams shorter than the longest are fed empty micro-turns at the end."""
    layout = model.layout
    n = max(t.n_turns for t in inputs)
    padded = [
        MicroTurns.concat([t, MicroTurns.empty(layout, n - t.n_turns)]) if t.n_turns < n else t
        for t in inputs
    ]
    device = next(model.parameters()).device
    batch = to_batch(padded, device)
    state = model.new_state(len(inputs), seeds=seeds)
    written: dict[str, list[np.ndarray]] = defaultdict(list)
    was_training = model.training
    model.eval()
    try:
        for t in range(n):
            step_in = {k: batch[k][:, t : t + 1] for k in INPUT_KEYS}
            result = model.step(state, step_in, sampling=sampling)
            for track in OUTPUT_TRACKS:
                written[track.value].append(getattr(result, track.value).cpu().numpy())
    finally:
        model.train(was_training)
    out = []
    for i, t in enumerate(inputs):
        outputs = {
            name: np.stack([w[i] for w in per_turn])[: t.n_turns].astype(getattr(t, name).dtype)
            for name, per_turn in written.items()
        }
        out.append(replace(t, **outputs))
    return out


def timeline_of(turns: MicroTurns, layout: Layout, episode_id: str | None = None) -> Timeline:
    """What the model did, as the harness's text view would record it."""
    rec = TimelineRecorder("microturn", layout.micro_turn_s, episode_id, keep_audio=False)
    rec.audio_start_s = layout.output_start_s(0)
    frames = turns.model_audio.reshape(-1, turns.model_audio.shape[-1])
    speaking = frames.max(axis=1) >= SPEECH_BIN
    ten_ms = round(frames.shape[0] * 12.5 / 10)
    rec.add_activity(speaking[(np.arange(ten_ms) * DMEL_FRAMES_PER_10MS).astype(int)])
    for t in range(turns.n_turns):
        at, text_ids = layout.output_start_s(t), turns.model_text[t].tolist()
        _, _, actions = read_turn(text_ids, turns.model_action[t].tolist(), at)
        rec.add_output(at, text_ids, actions)
    return rec.timeline()


def timelines(
    model: InteractionModel,
    eval_set: list[tuple[Episode, MicroTurns]],
    *,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
) -> list[Timeline]:
    """What the model did in each episode of the set, free-running (text view)."""
    written = free_run(
        model,
        [turns for _, turns in eval_set],
        seeds=[seed + i for i in range(len(eval_set))],
        sampling=sampling,
    )
    return [
        timeline_of(turns, model.layout, ep.id)
        for (ep, _), turns in zip(eval_set, written, strict=True)
    ]


def score(
    eval_set: list[tuple[Episode, MicroTurns]], runs: list[Timeline]
) -> dict[str, dict[str, float]]:
    """Each scenario's aggregate metrics over the set's timelines."""
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (ep, _), timeline in zip(eval_set, runs, strict=True):
        results[ep.scenario].append(get(ep.scenario).score(ep, timeline))
    return {name: get(name).aggregate(rows) for name, rows in results.items()}


def evaluate(
    model: InteractionModel,
    eval_set: list[tuple[Episode, MicroTurns]],
    *,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Scenario metrics (text view) of the model free-running on the set."""
    return score(eval_set, timelines(model, eval_set, seed=seed, sampling=sampling))


@dataclass(frozen=True)
class StartOdds:
    """Teacher-forced, per micro-turn of one episode: the probability that the model
    keeps quiet at the first text slot (P(PAD) at temperature 1, over all ids, not the
    sampler's), whether that slot is a decision (no message open), and when output t is
    played. What the floor and cue-timing probes (scripts/) read: a model's timing of
    its own speech without the noise of sampling."""

    p_quiet: np.ndarray  # [N]
    deciding: np.ndarray  # [N] bool
    writes: np.ndarray  # [N] bool: the reference writes text in t (where deciding: a start)
    times_s: np.ndarray  # [N]

    def decisions(self, lo_s: float, hi_s: float) -> np.ndarray:
        """The micro-turns in [lo, hi) that decide, up to the reference's own start in
        the window (after that, the context holds the reference's words)."""
        idx = np.flatnonzero((self.times_s >= lo_s) & (self.times_s < hi_s) & self.deciding)
        onset = idx[self.writes[idx]]
        return idx[idx <= onset[0]] if len(onset) else idx

    def odds_of_start(self, lo_s: float, hi_s: float) -> float | None:
        """P(a start in [lo, hi)), up to the reference's own start; None where no
        decision falls there."""
        idx = self.decisions(lo_s, hi_s)
        return float(1 - np.prod(self.p_quiet[idx])) if len(idx) else None

    def quiet_since_last_message(self, before_s: float) -> float:
        """P(no start from the end of the reference's last message before `before_s`)."""
        busy = np.flatnonzero(~self.deciding & (self.times_s < before_s))
        since = self.times_s[busy[-1] + 1] if len(busy) else -1.0
        idx = np.flatnonzero((self.times_s >= since) & (self.times_s < before_s) & self.deciding)
        return float(np.prod(self.p_quiet[idx]))


def slot_tally(
    logits: Logits, targets: dict[str, torch.Tensor], open_message: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Where within a micro-turn a model errs, teacher-forced: per text / audio slot,
    sums over every leading dimension (add them up over batches, then divide).
    text_right, text_nll, text_n: over the bytes and EOM written inside a message
    (`open_message` [..., text slots]: a message is open before the slot, the negation
    of `between_before`); audio_nll (a slot's mean over frames and channels), audio_n:
    over the slots where the reference speaks. What scripts/output-slots.py and
    scripts/depth-history.py print."""
    per = per_slot_losses(logits, targets)
    text = targets[Track.MODEL_TEXT.value]
    inside = open_message & ((text < N_BYTES) | (text == Special.EOM))
    right = inside & (logits.model_text.argmax(-1) == text)
    speaking = targets[Track.MODEL_AUDIO.value].long().amax(dim=(-1, -2)) >= SPEECH_BIN
    audio = per[Track.MODEL_AUDIO.value].mean(dim=(-1, -2))
    sums = {
        "text_right": right.float(),
        "text_nll": per[Track.MODEL_TEXT.value] * inside,
        "text_n": inside.float(),
        "audio_nll": audio * speaking,
        "audio_n": speaking.float(),
    }
    return {k: v.flatten(0, -2).sum(0) for k, v in sums.items()}


@torch.no_grad()
def start_odds(model: InteractionModel, turns: MicroTurns) -> StartOdds:
    """`StartOdds` of one recorded episode (its reference outputs as the model's)."""
    batch = to_batch([turns], next(model.parameters()).device)
    logits, _ = model(batch)
    p_quiet = logits.model_text[0, :, 0].float().softmax(-1)[:, Special.PAD].cpu().numpy()
    deciding, writes = reference_decisions(turns)
    times = np.array([model.layout.output_start_s(t) for t in range(turns.n_turns)])
    return StartOdds(p_quiet, deciding, writes, times)


def reference_decisions(turns: MicroTurns) -> tuple[np.ndarray, np.ndarray]:
    """Per micro-turn of a recorded episode: whether its first text slot is a decision
    (no reference message open) and whether the reference writes text in it (where
    deciding: the reference starts a message)."""
    text = torch.from_numpy(turns.model_text.astype(np.int64))[None]
    deciding = between_before(text)[0, :, 0].numpy()
    return deciding, (turns.model_text < Special.PAD).any(1)


def main(argv: list[str] | None = None) -> int:
    """`python -m microturn.train.evaluate MODEL SET`: a checkpoint's free-running scores
    on a stored set, one JSON line per sampling seed. Minutes on a CPU, no vocoder or ASR:
    what compares checkpoints between training runs (the benchmark is the final word)."""
    import argparse

    from microturn.model.checkpoint import from_pretrained

    p = argparse.ArgumentParser(prog="python -m microturn.train.evaluate")
    p.add_argument("model", type=Path, help="checkpoint folder")
    p.add_argument("set", type=Path, help="evaluation set (microturn data writes DIR/eval)")
    p.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
    p.add_argument(
        "--start-bias", type=float, help="SamplingConfig.start_bias (default: the checkpoint's)"
    )
    p.add_argument("--show", action="store_true", help="also print what the model said")
    args = p.parse_args(argv)
    model = from_pretrained(args.model)
    eval_set = load_eval_set(args.set, model.layout)
    wanted = {s for s in args.scenarios.split(",") if s}
    if wanted:
        eval_set = [x for x in eval_set if x[0].scenario in wanted]
        if not eval_set:
            raise SystemExit(f"{args.set} holds no episodes of {args.scenarios}")
    sampling = model.sampling
    if args.start_bias is not None:
        sampling = replace(sampling, start_bias=args.start_bias)
    for seed in (int(s) for s in args.seeds.split(",")):
        runs = timelines(model, eval_set, seed=seed, sampling=sampling)
        if args.show:
            for (ep, _), run in zip(eval_set, runs, strict=True):
                said = [f"{s.start_s:.1f} s {s.text!r}" for s in run.speech if s.text]
                print(f"# {ep.id}: " + "; ".join(said), file=sys.stderr)
        scores = score(eval_set, runs)
        row = {"model": str(args.model), "seed": seed, "start_bias": sampling.start_bias}
        print(json.dumps({**row, "headline": headline(scores), **scores}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training data: scenario episodes (train split), augmented, packed into micro-turn slots
and stored as shards, so a training run never waits on speech synthesis.

A shard is one `.npz`: every MicroTurns field concatenated over its episodes along the
turn axis, plus each episode's length and scenario. Camera slots are stored only for
episodes that have a camera (most don't), which keeps shards small.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import zipfile
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from microturn.codecs.vision import VisionCodec
from microturn.scenarios import TUNE_FIRST_SEED, get
from microturn.scenarios.render import without_sensor_noise
from microturn.stream.episode import Episode
from microturn.stream.layout import Layout, MicroTurns, pack_episode
from microturn.train.augment import augment_audio, mask_channels

VIDEO_FIELDS = ("user_video", "user_video_present")
# Episodes per scenario of the default model's data: weighted toward the scenarios with
# quality bars; camera episodes cost ~4x the disk (about 25 KB / 90 KB / 57 KB per
# speech / proactive-vision / counting episode with deflate, ~1.7x less with LZMA now),
# which a GPU machine's 64 MiB carry bounds.
DEFAULT_MIX = {
    "time_awareness": 450,
    "turn_taking": 300,
    "interruption": 300,
    "proactive_vision": 200,
    "delegation": 120,
    "backchannel": 120,
    "repetition_counting": 50,
}
DEFAULT_FIRST_SEED = 100_000  # training seeds stay clear of the benchmark's (0, 1, ...)
TEXT_SHARE = 0.25  # a quarter of the episodes are driven by typed text


def make_example(
    scenario: str, seed: int, layout: Layout, *, split: str = "train", augment: bool = True
) -> MicroTurns:
    """One episode of `scenario`, augmented and packed for `layout`."""
    return make_episode(scenario, seed, layout, split=split, augment=augment)[1]


def make_episode(
    scenario: str, seed: int, layout: Layout, *, split: str = "train", augment: bool = True
) -> tuple[Episode, MicroTurns]:
    """`make_example` with the episode it packed (as augmented; its words and events
    say what was said when, which a probe of the packed slots may need)."""
    rng = np.random.default_rng([seed, 7])
    driver = "text" if rng.random() < TEXT_SHARE else "speech"
    # with augmentation, camera noise is added per batch instead (augment_batch)
    with without_sensor_noise() if augment else contextlib.nullcontext():
        ep = get(scenario).generate(seed, split, driver)
    if ep.user_video is not None and layout.video_size:
        ep.user_video = VisionCodec(layout.video_size).fit_track(ep.user_video)
    elif ep.user_video is not None:
        ep.user_video = None  # this layout has no camera: the scenario is then blind
    if augment:
        ep = replace(ep, user_audio=augment_audio(ep.user_audio, rng))
    turns = pack_episode(ep, layout)
    if augment:
        mask_channels(turns, rng)
    return ep, turns


def save_shard(path: Path, episodes: list[MicroTurns], scenarios: list[str]) -> None:
    has_video = np.array([bool(e.user_video_present.any()) for e in episodes])
    arrays: dict[str, np.ndarray] = {
        "lengths": np.array([e.n_turns for e in episodes], np.int64),
        "has_video": has_video,
        "scenarios": np.array(scenarios),
    }
    for f in fields(MicroTurns):
        parts = [
            getattr(e, f.name)
            for e, v in zip(episodes, has_video, strict=True)
            if f.name not in VIDEO_FIELDS or v
        ]
        if parts:
            arrays[f.name] = np.concatenate(parts)
    tmp = path.with_name(path.name + ".tmp")  # not shard-*.npz: training never reads it
    # An .npz that np.load reads, but LZMA-compressed: 1.7x smaller than savez_compressed
    # (3.37 -> 1.99 MB for 100 mixed episodes), which is what bounds the data a GPU
    # machine can be given (64 MiB); writing costs ~11 s per 100 episodes, reading 0.2 s.
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    os.replace(tmp, path)


def load_shard(path: Path, layout: Layout) -> list[tuple[str, MicroTurns]]:
    """(scenario, episode) pairs of one shard, checked against `layout`."""
    try:
        with np.load(path) as npz:  # read each array once: NpzFile re-reads on every access
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: unreadable shard ({err})") from err
    out = []
    starts = {f.name: 0 for f in fields(MicroTurns)}
    no_camera = MicroTurns.empty(layout, 1)
    for n, has_video, scenario in zip(
        data["lengths"], data["has_video"], data["scenarios"], strict=True
    ):
        values = {}
        for f in fields(MicroTurns):
            if f.name in VIDEO_FIELDS and not has_video:
                # A read-only view of one empty turn, not n zeroed frames: most episodes
                # have no camera, and their zeros were two thirds of a run's memory.
                one = getattr(no_camera, f.name)
                values[f.name] = np.broadcast_to(one, (int(n), *one.shape[1:]))
                continue
            a = starts[f.name]
            values[f.name] = data[f.name][a : a + n]
            starts[f.name] = a + n
        out.append((str(scenario), MicroTurns(**values).validate(layout)))
    return out


def _worker(job: tuple[str, int, dict, str, bool]) -> tuple[str, MicroTurns]:
    scenario, seed, layout, split, augment = job
    return scenario, make_example(
        scenario, seed, Layout.from_dict(layout), split=split, augment=augment
    )


def write_shards(
    out: Path,
    scenarios: list[str] | dict[str, int],
    episodes: int,
    layout: Layout,
    *,
    per_shard: int = 200,
    workers: int | None = None,
    first_seed: int = 0,
    split: str = "train",
    augment: bool = True,
) -> list[Path]:
    """Generate episodes in worker processes: `episodes` spread evenly over a list of
    scenarios, or a {scenario: count} mix (then `episodes` is ignored). Seeds are
    first_seed + i, distinct across scenarios; episodes are interleaved across shards.
    Train-split seeds stay below TUNE_FIRST_SEED: those episodes choose sampling."""
    if isinstance(scenarios, dict):
        names = [s for s, n in scenarios.items() for _ in range(n)]
        order = np.random.default_rng(first_seed).permutation(len(names))
        names = [names[i] for i in order]
    else:
        names = [scenarios[i % len(scenarios)] for i in range(episodes)]
    if split == "train" and first_seed + len(names) > TUNE_FIRST_SEED:
        raise ValueError(
            f"seeds {first_seed}..{first_seed + len(names) - 1} reach the tune set's, from "
            f"{TUNE_FIRST_SEED:,} (bench calibrate): start lower"
        )
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (name, first_seed + i, layout.to_dict(), split, augment) for i, name in enumerate(names)
    ]
    workers = workers or max(1, (os.cpu_count() or 2))
    n_writers = max(1, workers // 2)
    written: list[Future[Path]] = []
    batch: list[tuple[str, MicroTurns]] = []
    ctx = multiprocessing.get_context("spawn")
    # Compressing a shard takes ~10 s of one core, nearly half of what making its
    # episodes takes: one writer would cap 14 workers near 10 episodes/s. LZMA releases
    # the GIL, so writer threads run in parallel.
    with ctx.Pool(workers) as pool, ThreadPoolExecutor(n_writers) as writers:
        for scenario, turns in tqdm(
            pool.imap(_worker, jobs, chunksize=4), total=len(jobs), desc="episodes", unit="ep"
        ):
            batch.append((scenario, turns))
            if len(batch) == per_shard:
                _keep_up(written, 2 * n_writers)
                written.append(writers.submit(_flush, out, len(written), batch))
                batch = []
        if batch:
            written.append(writers.submit(_flush, out, len(written), batch))
        return [w.result() for w in written]


def _keep_up(written: list[Future[Path]], most_waiting: int) -> None:
    """Raise a failed shard write now, not after the last episode (a long run would go on
    without it), and wait while `most_waiting` shards queue (each holds ~150 MB)."""
    waiting = [w for w in written if not w.done()]
    if len(waiting) >= most_waiting:
        wait(waiting, return_when=FIRST_COMPLETED)
    for w in written:
        if w.done() and w.exception() is not None:
            w.result()


def _flush(out: Path, index: int, batch: list[tuple[str, MicroTurns]]) -> Path:
    path = out / f"shard-{index:05d}.npz"
    save_shard(path, [t for _, t in batch], [s for s, _ in batch])
    return path


# Ground-truth events after which the reference answers: what it answers is complete then.
REPLY_CAUSES = ("user_turn_end", "request_end", "question_end", "visual_event", "result_arrived")
NEAR_CAUSE_S = 0.5  # replies are looked for from this long before a cause on


def reply_slacks(episode: Episode, turns: MicroTurns, layout: Layout) -> list[tuple[str, float]]:
    """(cause, slack) for each cause of `episode`: when the micro-turn of the first
    reference message from NEAR_CAUSE_S before the cause on that starts out of silence
    is decided (input window t closes), minus when the cause was complete. Negative:
    the data asks the model to answer what it has not yet heard or seen
    (scenarios/base.heard_by_s prevents it)."""
    from microturn.scenarios.base import seen_s
    from microturn.train.evaluate import SPEECH_BIN, reference_decisions

    deciding, writes = reference_decisions(turns)
    # A reply starts out of silence; text that starts while the voice is still sounding
    # is a message that waited its turn on a busy text track, not a decision.
    loud = turns.model_audio.reshape(turns.n_turns, -1).max(1) >= SPEECH_BIN
    was_quiet = np.concatenate([[True], ~loud[:-1]])
    onsets = np.flatnonzero(deciding & writes & was_quiet)
    out = []
    for e in episode.events:
        if e.kind in REPLY_CAUSES:
            near = onsets[layout.output_start_s(onsets) >= e.time_s - NEAR_CAUSE_S]
            if len(near):
                # a camera event is complete when the window showing its frame closes
                done = seen_s(e.time_s, layout) if e.kind == "visual_event" else e.time_s
                out.append((e.kind, (near[0] + 1) * layout.micro_turn_s - done))
    return out

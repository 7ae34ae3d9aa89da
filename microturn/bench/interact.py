"""`microturn bench interact`: run the interactivity scenarios against a system and score
what it said, through its text track and, independently, through ASR of its audio.

Every system goes through one interface (`microturn.engine.runner.System`): our model
(the shipped default or any checkpoint folder), the cascade baseline, or a user's own
adapter. Episodes come from the scenarios' `eval` or `unseen_engine` split (or `train`:
the tune set of `bench calibrate`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from microturn.bench.asr import asr_timeline
from microturn.bench.report import markdown_table
from microturn.codecs.vision import VisionCodec
from microturn.engine.runner import ModelSystem, Recording, System, run_recording
from microturn.model.checkpoint import CONFIG_FILE, default_checkpoint
from microturn.model.sampling import SamplingConfig
from microturn.scenarios import NAMES, get
from microturn.stream.episode import Episode, Timeline

PLOTS_PER_SCENARIO = 2


def make_system(spec: str, start_bias: float | None = None) -> System:
    """'default' (the shipped model), 'cascade', or a checkpoint folder; a model samples
    as its checkpoint says, or with `start_bias` (SamplingConfig: log-odds of starting a
    message) where one is given."""
    from microturn.bench.cascade import CascadeSystem
    from microturn.model import from_pretrained

    if spec == "cascade":
        if start_bias is not None:
            raise ValueError("--start-bias applies to a model, not the cascade")
        return CascadeSystem()
    path = default_checkpoint() if spec == "default" else Path(spec)
    if not (path / CONFIG_FILE).is_file():
        raise ValueError(f"{spec}: not a system name (default, cascade) or checkpoint folder")
    model = from_pretrained(path)
    if start_bias is not None:
        model.sampling = replace(model.sampling, start_bias=start_bias)
    return ModelSystem(model, name=spec)


def sampling_of(system: System) -> SamplingConfig | None:
    """How a system samples: its start bias and rule (None: not a model)."""
    return system.sampling if isinstance(system, ModelSystem) else None


def recording_for(episode: Episode, system: System) -> Recording:
    """The episode as the system hears it (camera frames fitted to its layout). A
    system with its own thinker (`delegates`) gets no background results from the
    episode: only what its own delegations bring back."""
    rec = Recording.from_episode(episode)
    if getattr(system, "delegates", False):
        rec.background = []
    size = system.layout.video_size
    if rec.video is not None:
        rec.video = VisionCodec(size).fit_track(rec.video) if size else None
    return rec


def run(
    system_spec: str,
    split: str,
    out: Path,
    *,
    episodes: int = 20,
    scenarios: list[str] | None = None,
    seed: int = 0,
    start_bias: float | None = None,
) -> dict[str, Any]:
    names = scenarios or list(NAMES)
    for name in names:
        get(name)  # unknown names fail before any work
    system = make_system(system_spec, start_bias)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {"text": {}, "asr": {}}
    per_episode: dict[str, list[dict[str, Any]]] = {}
    progress = tqdm(total=len(names) * episodes, desc=f"{system.name} on {split}", unit="ep")
    for name in names:
        scenario = get(name)
        text_scores, asr_scores, rows = [], [], []
        for i in range(episodes):
            s = seed + i
            driver = "text" if i % 4 == 3 else "speech"  # a quarter typed
            episode = scenario.generate(s, split, driver)
            result = run_recording(
                system, recording_for(episode, system), seed=s, episode_id=episode.id
            )
            heard = asr_timeline(result.timeline, result.audio)
            text_scores.append(scenario.score(episode, result.timeline))
            asr_scores.append(scenario.score(episode, heard))
            rows.append(
                {
                    "episode": episode.id,
                    "driver": driver,
                    "text": text_scores[-1],
                    "asr": asr_scores[-1],
                }
            )
            if i < PLOTS_PER_SCENARIO:
                plot_episode(episode, result.timeline, heard, out / f"{episode.id}.png")
            progress.update(1)
        results["text"][name] = scenario.aggregate(text_scores)
        results["asr"][name] = scenario.aggregate(asr_scores)
        per_episode[name] = rows
    progress.close()
    sampling = sampling_of(system)
    data = {
        "system": system.name,
        "split": split,
        "episodes_per_scenario": episodes,
        "start_bias": sampling.start_bias if sampling else None,
        "start_rule": sampling.start_rule if sampling else None,
        "scenarios": results["asr"],  # what was heard: the honest figure
        "scenarios_text": results["text"],  # what the text track says was said
    }
    (out / "interact.json").write_text(json.dumps(data, indent=1, default=_jsonable))
    (out / "episodes.json").write_text(json.dumps(per_episode, indent=1, default=_jsonable))
    (out / "interact.md").write_text(report_table(data))
    return data


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def report_table(data: dict[str, Any]) -> str:
    rows = []
    for name, metrics in data["scenarios"].items():
        for metric, value in metrics.items():
            rows.append(
                {
                    "scenario": name,
                    "metric": metric,
                    "heard (ASR)": value,
                    "text track": data["scenarios_text"][name].get(metric),
                }
            )
    head = (
        f"system `{data['system']}`, split `{data['split']}`, "
        f"{data['episodes_per_scenario']} episodes per scenario"
        + (f", start bias {data['start_bias']:+g}" if data.get("start_bias") else "")
        + (f", start rule {data['start_rule']}" if data.get("start_rule") == "greedy" else "")
        + "\n\n"
    )
    return head + markdown_table(rows, ["scenario", "metric", "heard (ASR)", "text track"]) + "\n"


def _printable(text: str, n: int = 40) -> str:
    """Text for a plot label: a random model writes control bytes; fonts lack them."""
    return "".join(c if c.isprintable() else "·" for c in text[:n])


def plot_episode(episode: Episode, timeline: Timeline, heard: Timeline, path: Path) -> None:
    """User speech, the system's speech (text track and as heard) and events on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.2))
    lanes = {"user": 3, "model (text)": 2, "model (heard)": 1, "events": 0}
    for seg in episode.user_speech:
        ax.barh(3, seg.end_s - seg.start_s, left=seg.start_s, color="#4c72b0", height=0.6)
        ax.text(seg.start_s, 3.35, _printable(seg.text), fontsize=7)
    for e in episode.user_text:
        ax.plot([e.time_s], [3], marker="v", color="#4c72b0")
        ax.text(e.time_s, 2.65, "typed: " + _printable(e.text, 30), fontsize=7)
    for lane, tl, colour in ((2, timeline, "#dd8452"), (1, heard, "#55a868")):
        for seg in tl.speech:
            width = max(seg.end_s - seg.start_s, 0.05)
            ax.barh(lane, width, left=seg.start_s, color=colour, height=0.6)
            if seg.text:
                ax.text(seg.start_s, lane + 0.35, _printable(seg.text), fontsize=7)
    for a in timeline.actions:
        ax.plot([a.time_s], [2], marker="*", color="black")
    for e in episode.events:
        ax.axvline(e.time_s, color="grey", lw=0.6, ls="--")
        ax.text(e.time_s, 0.1, e.kind, fontsize=7, rotation=90, va="bottom")
    ax.set_yticks(list(lanes.values()), list(lanes.keys()))
    ax.set_xlim(0, episode.duration_s + 1)
    ax.set_ylim(-0.5, 3.8)
    ax.set_xlabel("seconds")
    ax.set_title(f"{episode.id} ({timeline.system})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

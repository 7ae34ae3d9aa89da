"""`microturn bench calibrate MODEL`: choose a checkpoint's start bias on a tune set.

The start bias (SamplingConfig.start_bias) sets when the model takes the floor: too low
and it never answers, too high and it talks into the user's pauses. Chosen by looking at
the eval split, that split's figures would flatter it. So the tune set is the *train*
split (voices the model heard in training) at seeds far above any training data's
(`microturn data` starts at 100,000; TUNE_SEED is 9,000,000): new episodes, not the
benchmark's. `bench interact` runs once per candidate bias on the same episodes; the
bias with the best mean headline (heard) wins, and a paired bootstrap against bias 0 says
whether the win is larger than the episodes' noise. `--write` stores the winner in the
checkpoint's config.json, so every user of the folder (bench, demo, server) samples
with it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from microturn.bench import compare, interact
from microturn.bench.report import markdown_table
from microturn.model.checkpoint import load_sampling, save_sampling
from microturn.scenarios.scoring import HEADLINE, headline

TUNE_SPLIT = "train"
TUNE_SEED = 9_000_000
BIASES = (-1.0, 0.0, 1.0, 2.0, 3.0)
EPISODES = 12


def folder_for(out: Path, bias: float) -> Path:
    return out / f"bias{bias:+g}"


def run(
    checkpoint: Path,
    out: Path,
    *,
    biases: tuple[float, ...] = BIASES,
    episodes: int = EPISODES,
    scenarios: list[str] | None = None,
    seed: int = TUNE_SEED,
    write: bool = False,
) -> dict[str, Any]:
    """Bench `checkpoint` on the tune set at each bias; pick the best mean headline
    (ties: the smallest |bias|); write calibrate.json, .md, .png to `out` and, with
    `write`, the winner into the checkpoint."""
    if not biases:
        raise ValueError("give at least one bias")
    if len(set(biases)) != len(biases):
        raise ValueError(f"biases repeat: {biases}")
    before = load_sampling(checkpoint)  # a bad checkpoint fails before any work
    rows = []
    for bias in biases:
        data = interact.run(
            str(checkpoint),
            TUNE_SPLIT,
            folder_for(out, bias),
            episodes=episodes,
            scenarios=scenarios,
            seed=seed,
            start_bias=bias,
        )
        heard = data["scenarios"]
        rows.append(
            {
                "start_bias": bias,
                "mean_headline": headline(heard),
                **{name: HEADLINE[name](metrics) for name, metrics in heard.items()},
            }
        )
    best = best_of(rows)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "split": TUNE_SPLIT,
        "seed": seed,
        "episodes_per_scenario": episodes,
        "rows": rows,
        "best": best["start_bias"],
        "before": before.start_bias,
        "written": write,
    }
    if 0.0 in biases and best["start_bias"] != 0.0:
        compared = compare.run(
            folder_for(out, 0.0), folder_for(out, best["start_bias"]), out / "against-0"
        )
        result["against_0"] = compared["views"]["asr"][-1]  # the mean headline, heard
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibrate.json").write_text(json.dumps(result, indent=1))
    (out / "calibrate.md").write_text(report_table(result))
    plot(result, out / "calibrate.png")
    if write:
        save_sampling(checkpoint, replace(before, start_bias=best["start_bias"]))
    return result


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best mean headline; of equals, the smallest |bias| (the least
    change to how the model was trained to behave)."""
    return max(rows, key=lambda r: (r["mean_headline"], -abs(r["start_bias"])))


def report_table(result: dict[str, Any]) -> str:
    names = [k for k in result["rows"][0] if k not in ("start_bias", "mean_headline")]
    head = (
        f"Start bias of `{result['checkpoint']}` on the tune set (split `{result['split']}`, "
        f"seeds from {result['seed']:,}, {result['episodes_per_scenario']} episodes per "
        f"scenario; headlines as heard): best {result['best']:+g}"
        f" (the checkpoint had {result['before']:+g}"
        f"{'; written' if result['written'] else ''}).\n\n"
    )
    table = markdown_table(result["rows"], ["start_bias", "mean_headline", *names])
    tail = ""
    if "against_0" in result:
        row = result["against_0"]
        tail = (
            f"\nBest against bias 0, mean headline: {row['b_minus_a']:+.3f} "
            f"({row['ci_low']:+.3f}..{row['ci_high']:+.3f}, paired bootstrap, 95%): "
            f"{compare.verdict(row)}.\n"
        )
    return head + table + "\n" + tail


def plot(result: dict[str, Any], path: Path) -> None:
    """Each scenario's headline and the mean against the bias, the winner marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = np.array([r["start_bias"] for r in rows])
    order = np.argsort(x)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in [k for k in rows[0] if k not in ("start_bias", "mean_headline")]:
        ax.plot(x[order], np.array([r[name] for r in rows])[order], "o-", lw=1, label=name)
    mean = np.array([r["mean_headline"] for r in rows])[order]
    ax.plot(x[order], mean, "o-", color="black", lw=2.5, label="mean headline")
    ax.axvline(result["best"], color="black", ls=":", lw=1)
    ax.set_xlabel("start bias (log-odds of starting a message)")
    ax.set_ylabel("headline (heard)")
    ax.set_title(
        f"{result['checkpoint']}: tune set, {result['episodes_per_scenario']} episodes per "
        f"scenario; best {result['best']:+g}",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

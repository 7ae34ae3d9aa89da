"""`microturn bench calibrate MODEL`: choose a checkpoint's start bias on a tune set.

The start bias (SamplingConfig.start_bias) sets when the model takes the floor: too low
and it never answers, too high and it talks into the user's pauses. Chosen by looking at
the eval split, that split's figures would flatter it. So the tune set is the *train*
split (voices the model heard in training) at seeds from TUNE_FIRST_SEED (9,000,000),
which training data never reaches (`microturn data` refuses): new episodes, not the
benchmark's. `bench interact` runs once per candidate bias on the same episodes; the
bias with the best mean headline (heard) wins. The winner was picked on those episodes,
so comparing it with bias 0 there would flatter it too: the check runs both again on a
fresh block of tune seeds and judges them with the paired bootstrap of `bench compare`.
The bias chosen is then the better of the winner and 0 over all the tune episodes both
ran (search and check pooled): on 12 episodes a search winner can be noise, and the
check alone is as small. `--write` stores the winner in the checkpoint's config.json
before the check (so a failure there loses nothing) and the chosen bias after it; every
user of the folder samples with it. A run
already in `out` for the same weights is reused: a calibration stopped midway (hours of
CPU) goes on where it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from microturn.bench import compare, interact
from microturn.bench.report import markdown_table
from microturn.model.checkpoint import WEIGHTS_FILE, load_sampling, save_sampling
from microturn.scenarios import NAMES, TUNE_FIRST_SEED
from microturn.scenarios.scoring import HEADLINE, headline

TUNE_SPLIT = "train"
BIASES = (-1.0, 0.0, 1.0, 2.0, 3.0)
EPISODES = 12
CHECK_OFFSET = 100_000  # the check's episodes: tune seeds this far above the search's


def folder_for(out: Path, bias: float) -> Path:
    return out / f"bias{bias:+g}"


def run(
    checkpoint: Path,
    out: Path,
    *,
    biases: tuple[float, ...] = BIASES,
    episodes: int = EPISODES,
    scenarios: list[str] | None = None,
    seed: int = TUNE_FIRST_SEED,
    write: bool = False,
) -> dict[str, Any]:
    """Bench `checkpoint` on the tune set at each bias; pick the best mean headline
    (ties: the smallest |bias|); with `write`, store it in the checkpoint; check it
    against bias 0 on fresh tune episodes; write calibrate.json, .md, .png to `out`."""
    biases = tuple(float(b) + 0.0 for b in biases)  # + 0.0: -0 is 0
    if not biases:
        raise ValueError("give at least one bias")
    if not all(math.isfinite(b) for b in biases):
        raise ValueError(f"biases must be finite: {biases}")
    if len(set(biases)) != len(biases):
        raise ValueError(f"biases repeat: {biases}")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1; got {episodes}")
    before = load_sampling(checkpoint)  # a bad checkpoint fails before any work

    def bench(bias: float, folder: Path, first_seed: int) -> dict[str, Any]:
        done = finished_run(
            folder, checkpoint, bias, first_seed, episodes, scenarios, before.start_rule
        )
        if done is not None:
            print(f"bias {bias:+g}: {folder} holds this run already; reusing it")
            return done
        return interact.run(
            str(checkpoint),
            TUNE_SPLIT,
            folder,
            episodes=episodes,
            scenarios=scenarios,
            seed=first_seed,
            start_bias=bias,
        )

    rows = []
    for bias in biases:
        heard = bench(bias, folder_for(out, bias), seed)["scenarios"]
        rows.append(
            {
                "start_bias": bias,
                "mean_headline": headline(heard),
                **{name: HEADLINE[name](metrics) for name, metrics in heard.items()},
            }
        )
    best = best_of(rows)["start_bias"]
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "split": TUNE_SPLIT,
        "seed": seed,
        "episodes_per_scenario": episodes,
        "rows": rows,
        "best": best,
        "chosen": best,  # until the check says otherwise
        "before": before.start_bias,
        "written": write,
    }
    if write:
        save_sampling(checkpoint, replace(before, start_bias=best))
    _write(result, out)
    if best != 0.0:
        check = out / "check"
        for bias in (0.0, best):
            bench(bias, folder_for(check, bias), seed + CHECK_OFFSET)
        compared = compare.run(folder_for(check, 0.0), folder_for(check, best), check)
        result["check"] = {"seed": seed + CHECK_OFFSET, **compared["views"]["asr"][-1]}
        if 0.0 not in biases:  # the pooled choice needs bias 0 on the search's episodes
            bench(0.0, folder_for(out, 0.0), seed)
        pooled = compare.run(
            [folder_for(out, 0.0), folder_for(check, 0.0)],
            [folder_for(out, best), folder_for(check, best)],
            out / "pooled",
        )
        result["pooled"] = pooled["views"]["asr"][-1]
        result["chosen"] = best if result["pooled"]["b_minus_a"] > 0 else 0.0
        if write:
            save_sampling(checkpoint, replace(before, start_bias=result["chosen"]))
        _write(result, out)
    return result


def finished_run(
    folder: Path,
    checkpoint: Path,
    bias: float,
    first_seed: int,
    episodes: int,
    scenarios: list[str] | None,
    start_rule: str,
) -> dict[str, Any] | None:
    """The `bench interact` output in `folder` if it is exactly the run wanted (same
    checkpoint, newer than its weights; same bias, start rule, split and episodes), else
    None: a calibration stopped midway goes on where it was. (A rule changed in the
    checkpoint's config.json leaves the weights as old as before: hence the check.)"""
    try:
        data = json.loads((folder / "interact.json").read_text())
        done = json.loads((folder / "episodes.json").read_text())
        fresh = (folder / "interact.json").stat().st_mtime > (
            Path(checkpoint) / WEIGHTS_FILE
        ).stat().st_mtime
    except (OSError, ValueError):
        return None
    wanted = {
        name: [f"{name}-{TUNE_SPLIT}-{first_seed + i}" for i in range(episodes)]
        for name in (scenarios or NAMES)
    }
    same = (
        data.get("system") == str(checkpoint)
        and data.get("split") == TUNE_SPLIT
        and data.get("start_bias") == bias
        and (data.get("start_rule") or "sample") == start_rule  # runs before the rule: sample
        and {name: [r.get("episode") for r in rows] for name, rows in done.items()} == wanted
    )
    return data if fresh and same else None


def _write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibrate.json").write_text(json.dumps(result, indent=1))
    (out / "calibrate.md").write_text(report_table(result))
    plot(result, out / "calibrate.png")


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
        f"{'; written' if result['written'] and 'pooled' not in result else ''}).\n\n"
    )
    table = markdown_table(result["rows"], ["start_bias", "mean_headline", *names])
    tail = ""
    if "check" in result:
        row = result["check"]
        tail = (
            f"\nCheck on fresh tune episodes (seeds from {row['seed']:,}), the best against "
            f"bias 0, mean headline: {row['b_minus_a']:+.3f} ({row['ci_low']:+.3f}.."
            f"{row['ci_high']:+.3f}, paired bootstrap, 95%): {compare.verdict(row)}.\n"
        )
    if "pooled" in result:
        row = result["pooled"]
        tail += (
            f"\nSearch and check pooled, the best against bias 0: {row['b_minus_a']:+.3f} "
            f"({row['ci_low']:+.3f}..{row['ci_high']:+.3f}). Chosen: {result['chosen']:+g}"
            f"{' (written)' if result['written'] else ''}.\n"
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
    ax.axvline(result["chosen"], color="black", ls=":", lw=1)
    ax.set_xlabel("start bias (log-odds of starting a message)")
    ax.set_ylabel("headline (heard)")
    ax.set_title(
        f"{result['checkpoint']}: tune set, {result['episodes_per_scenario']} episodes per "
        f"scenario; best {result['best']:+g}, chosen {result['chosen']:+g}",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""`microturn bench compare A B`: is system B measurably better than system A?

Twenty episodes per scenario leave every figure noisy: an interruption rate rests on the
handful of episodes where the model was speaking when interrupted. Two runs of `bench
interact` on the same split, seed and episode count see the same episodes, so the
difference can be judged per episode: a paired bootstrap resamples the episode indices
of each scenario (the same indices for both systems), re-aggregates each system's
per-episode scores with the scenario's own `aggregate`, and takes the headline
(`scenarios.scoring.HEADLINE`) of each. The 95% interval of B - A over the resamples
says whether a change is larger than the episodes' own noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from microturn.bench.report import markdown_table
from microturn.scenarios import get
from microturn.scenarios.scoring import HEADLINE, headline

VIEWS = {"asr": "heard", "text": "text track"}
RESAMPLES = 2000
LEVEL = 0.95


def load_run(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A `bench interact` output folder: its summary and its per-episode scores."""
    summary, episodes = Path(folder) / "interact.json", Path(folder) / "episodes.json"
    for f in (summary, episodes):
        if not f.is_file():
            raise ValueError(f"{folder}: no {f.name} (not a `microturn bench interact` output)")
    return json.loads(summary.read_text()), json.loads(episodes.read_text())


def load_runs(folders: list[Path]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Several `bench interact` outputs of one system on one split (e.g. `--seed 0` and
    `--seed 40`) as one run: more episodes, a narrower interval, nothing run twice."""
    if not folders:
        raise ValueError("no runs given")
    summary, episodes = load_run(folders[0])  # freshly parsed: ours to extend
    for folder in folders[1:]:
        more_summary, more = load_run(folder)
        for key in ("system", "split"):
            if more_summary.get(key) != summary.get(key):
                raise ValueError(
                    f"{folder}: another {key} ({more_summary.get(key)!r}) than "
                    f"{folders[0]} ({summary.get(key)!r}): pool runs of one system and split"
                )
        if set(more) != set(episodes):
            raise ValueError(f"{folder}: other scenarios than {folders[0]}")
        for name, rows in more.items():
            episodes[name] += rows
        summary["episodes_per_scenario"] += more_summary["episodes_per_scenario"]
    for name, rows in episodes.items():
        ids = [r["episode"] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: pooled runs score some episodes twice (same seeds?)")
    return summary, episodes


def _paired(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The scenarios both runs scored, after checking they scored the same episodes."""
    shared = [name for name in a if name in b]
    if not shared:
        raise ValueError("the two runs share no scenario")
    for name in shared:
        ids_a = [r["episode"] for r in a[name]]
        ids_b = [r["episode"] for r in b[name]]
        if ids_a != ids_b:
            raise ValueError(
                f"{name}: the runs scored different episodes ({len(ids_a)} against "
                f"{len(ids_b)}, or another split or seed): a paired comparison needs the same"
            )
    return shared


def _aggregate(name: str, rows: list[dict[str, Any]], view: str) -> dict[str, Any]:
    return get(name).aggregate([r[view] for r in rows])


def _headline_of(name: str, rows: list[dict[str, Any]], view: str) -> float:
    return HEADLINE[name](_aggregate(name, rows, view))


def compare(
    a: dict[str, list[dict[str, Any]]],
    b: dict[str, list[dict[str, Any]]],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Per view and scenario, and for the mean over scenarios: A's and B's headline,
    B - A, its 95% interval and the share of resamples in which B is ahead."""
    names = _paired(a, b)
    rng = np.random.default_rng(seed)
    # The same resampled indices serve both systems and both views.
    draws = {n: rng.integers(0, len(a[n]), size=(resamples, len(a[n]))) for n in names}
    lo, hi = (1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100
    out: dict[str, Any] = {}
    for view in VIEWS:
        diffs = np.zeros((len(names), resamples))
        rows = []
        for k, name in enumerate(names):
            for i, idx in enumerate(draws[name]):
                diffs[k, i] = _headline_of(name, [b[name][j] for j in idx], view) - _headline_of(
                    name, [a[name][j] for j in idx], view
                )
            rows.append(
                _row(
                    name,
                    _headline_of(name, a[name], view),
                    _headline_of(name, b[name], view),
                    diffs[k],
                    lo,
                    hi,
                )
            )
        means = [headline({n: _aggregate(n, x[n], view) for n in names}) for x in (a, b)]
        # the mean over scenarios of each resample's differences: B - A of the mean headline
        rows.append(_row("mean headline", *means, diffs.mean(0), lo, hi))
        out[view] = rows
    return {"scenarios": names, "resamples": resamples, "level": LEVEL, "views": out}


def _row(name: str, a: float, b: float, diffs: np.ndarray, lo: float, hi: float) -> dict:
    low, high = np.percentile(diffs, [lo, hi])
    return {
        "scenario": name,
        "a": a,
        "b": b,
        "b_minus_a": round(b - a, 12),  # not 7e-18 where the two are equal
        "ci_low": float(low),
        "ci_high": float(high),
        "p_b_ahead": float(np.mean(diffs > 0)),
    }


def verdict(row: dict[str, Any]) -> str:
    """What the interval says about one difference."""
    if row["ci_low"] > 0:
        return "B better"
    if row["ci_high"] < 0:
        return "B worse"
    return "no measurable difference"


def report_table(result: dict[str, Any]) -> str:
    interval = f"{round(result['level'] * 100)}% interval"
    rows = []
    for view, label in VIEWS.items():
        for r in result["views"][view]:
            rows.append(
                {
                    "view": label,
                    "scenario": r["scenario"],
                    "A": r["a"],
                    "B": r["b"],
                    "B - A": r["b_minus_a"],
                    interval: f"{r['ci_low']:+.3f} .. {r['ci_high']:+.3f}",
                    "P(B ahead)": r["p_b_ahead"],
                    "verdict": verdict(r),
                }
            )
    cols = ["view", "scenario", "A", "B", "B - A", interval, "P(B ahead)", "verdict"]
    head = (
        f"A = `{result['a']}`, B = `{result['b']}`; paired bootstrap over episodes "
        f"({result['resamples']} resamples)\n\n"
    )
    return head + markdown_table(rows, cols) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """B - A with its interval, per scenario and view: what changed at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["scenario"] for r in result["views"]["asr"]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.4))
    for k, (view, label) in enumerate(VIEWS.items()):
        rows = result["views"][view]
        y = np.arange(len(rows))[::-1] + (0.15 if k == 0 else -0.15)
        d = np.array([r["b_minus_a"] for r in rows])
        err = np.array(
            [[r["b_minus_a"] - r["ci_low"], r["ci_high"] - r["b_minus_a"]] for r in rows]
        )
        ax.errorbar(d, y, xerr=err.T, fmt="o", capsize=3, label=label)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(np.arange(len(labels))[::-1], labels)
    ax.set_xlabel(f"headline, B - A ({round(result['level'] * 100)}% paired bootstrap interval)")
    ax.set_title(f"A = {result['a']}   B = {result['b']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    folder_a: Path | list[Path],
    folder_b: Path | list[Path],
    out: Path,
    *,
    resamples: int | None = None,
) -> dict:
    """Compare two `bench interact` outputs, each one folder or several pooled
    (RESAMPLES resamples unless told); write compare.json, .md and .png to `out`."""
    folder_a = folder_a if isinstance(folder_a, list) else [folder_a]
    folder_b = folder_b if isinstance(folder_b, list) else [folder_b]
    summary_a, episodes_a = load_runs(folder_a)
    summary_b, episodes_b = load_runs(folder_b)
    for key in ("split", "episodes_per_scenario"):
        if summary_a.get(key) != summary_b.get(key):
            raise ValueError(
                f"the runs differ in {key}: {summary_a.get(key)!r} against {summary_b.get(key)!r}"
            )
    result = compare(episodes_a, episodes_b, resamples=resamples or RESAMPLES)
    result.update(
        a=f"{summary_a['system']} ({', '.join(map(str, folder_a))})",
        b=f"{summary_b['system']} ({', '.join(map(str, folder_b))})",
        split=summary_a["split"],
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    (out / "compare.md").write_text(report_table(result))
    plot(result, out / "compare.png")
    return result

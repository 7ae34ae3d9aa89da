"""A training run at a glance: loss per head and the in-loop evaluation per scenario (or,
in a run without one, the learning rate: a time limit ends the cosine early), and for a
run whose data grew (--grow-data) the episodes it had at each step, from `log.jsonl`, as
one PNG (`python -m microturn.train.report LOG PNG`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from microturn.scenarios.scoring import HEADLINE

HEADS = ("model_action", "model_text", "model_audio")


NO_EVALUATION = "learning rate (no in-loop evaluation in this run)"
GREW = "episodes to draw from (--grow-data)"


def draw_log(records: list[dict]) -> Figure:
    """The figure of a run's log records (kept apart from the file I/O so what it shows
    can be checked)."""
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    if not steps:
        raise ValueError("no training steps logged")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = [r["step"] for r in steps]
    left.plot(x, [r["loss"] for r in steps], label="total (weighted)", color="black")
    for head in HEADS:
        left.plot(x, [r[head] for r in steps], label=head.removeprefix("model_"))
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("training loss (onset-weighted)")
    left.legend()
    if evals:
        ex = [r["step"] for r in evals]
        for name, figure in HEADLINE.items():
            ys = [figure(r["eval"][name]) for r in evals if name in r["eval"]]
            if len(ys) == len(ex):
                right.plot(ex, ys, marker="o", label=name)
        right.plot(ex, [r["eval_score"] for r in evals], "k--", lw=2, label="mean (headline)")
        right.set_ylim(-1.05, 1.05)
        right.legend(fontsize=7)
        right.set_title("free-running evaluation, text view (headline per scenario)")
    else:  # a run without --eval-data: its schedule rather than empty axes
        right.plot(x, [r["lr"] for r in steps], color="tab:purple")
        right.set_title(NO_EVALUATION)
    right.set_xlabel("step")
    grew = [r for r in records if "episodes" in r]
    if grew:  # how fresh the data was: the set a growing run drew from, step by step
        data = right.twinx()
        xs = [r["step"] for r in grew] + [x[-1]]
        ys = [r["episodes"] for r in grew] + [grew[-1]["episodes"]]
        data.step(xs, ys, where="post", color="tab:gray", alpha=0.7)
        data.set_ylabel(GREW)
    fig.tight_layout()
    return fig


def plot_log(log: Path, png: Path) -> Path:
    records = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    try:
        fig = draw_log(records)
    except ValueError as err:
        raise ValueError(f"{log}: {err}") from err
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m microturn.train.report LOG.jsonl OUT.png")
    print(plot_log(Path(sys.argv[1]), Path(sys.argv[2])))

"""Teacher-forced odds that the model starts each time-awareness cue on time: a
low-noise check of *when* it speaks, where the free-running score (every cue of an
episode right, nothing extra) sits at 0 for every model so far.

For each cue the reference says at time d (tolerance max(0.5 s, 15% of d minus the
request's end), as the scorer's): P(on time) = P(the model keeps quiet from the end of
the reference's previous message to d - tol) x P(it starts in [d - tol, d]), the latter
stopping at the reference's own start (after it the context holds the reference's words).
Quiet and start odds are the text head's P(PAD) at temperature 1 (`start_odds`).
Printed: the mean over cues, all and by category, and the mean P(quiet until the window);
then, by driver, the mean per-micro-turn odds of starting (1 - P(PAD)) before the user
starts, during the request, and in the 0.6 s after it ends (up to the reference's
acknowledgement): a model that does not wait for the end of a request talks during it.
With --by-count, per category: at each number of micro-turns since the reference last
started a message, the model's mean odds of starting at a decision against how often
the reference starts there. A countdown is timed by that count alone; a reminder's or a
delayed phrase's start also depends on the N asked for, so a model that knows N has
odds that follow the reference's, and one that does not has odds that just rise with
the count.

Usage: python scripts/cue-timing.py MODEL SET[,SET...] [--by-count]
(sets: microturn data's DIR/eval, or a time-awareness-only set written with
microturn.train.evaluate.write_eval_set)
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from microturn.model import from_pretrained
from microturn.model.sampling import NO_ONSET, since_onset_before
from microturn.scenarios.scoring import tolerance_s
from microturn.stream.episode import Episode
from microturn.stream.layout import MicroTurns
from microturn.train.evaluate import StartOdds, load_eval_set, start_odds

AFTER_S = 0.6
MIN_DECISIONS = 4  # counts with fewer decisions are not printed


def request_hazards(ep: Episode, odds: StartOdds) -> dict[str, list[float]]:
    """Per-micro-turn odds of starting before, during and just after the request."""
    end = next(e for e in ep.events if e.kind == "request_end").time_s
    first = ep.user_text[0].time_s if ep.user_text else ep.user_speech[0].start_s
    windows = {"before": (0.0, first), "during": (first, end), "after": (end, end + AFTER_S)}
    return {name: (1 - odds.p_quiet[odds.decisions(*w)]).tolist() for name, w in windows.items()}


def cue_odds(ep: Episode, odds: StartOdds) -> list[tuple[str, float, float]]:
    """(category, P(on time), P(quiet until the window)) of each cue the episode asks for."""
    rows = []
    for e in (e for e in ep.events if e.kind == "request_end"):
        for due, _ in e.data["expected"]:
            tol = tolerance_s(due - e.time_s)
            quiet = odds.quiet_since_last_message(due - tol)
            start = odds.odds_of_start(due - tol, due + tol) or 0.0
            rows.append((e.data["category"], quiet * start, quiet))
    return rows


def by_count(turns: MicroTurns, odds: StartOdds) -> list[tuple[int, float, bool]]:
    """(micro-turns since the reference's last start, the model's odds of starting,
    whether the reference starts) of each decision of an episode."""
    text = torch.from_numpy(turns.model_text.astype(np.int64))[None]
    since = since_onset_before(text)[0].numpy()
    return [
        (int(since[i]), 1 - float(odds.p_quiet[i]), bool(odds.writes[i]))
        for i in np.flatnonzero(odds.deciding)
    ]


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    counts: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    hazards: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in sys.argv[2].split(","):
        for ep, turns in load_eval_set(Path(s), model.layout):
            if ep.scenario != "time_awareness":
                continue
            odds = start_odds(model, turns)
            for name, values in request_hazards(ep, odds).items():
                hazards[(ep.meta["driver"], name)] += values
            for category, on_time, quiet in cue_odds(ep, odds):
                rows[category].append((on_time, quiet))
            for since, start, writes in by_count(turns, odds):
                counts[(ep.meta["category"], since)].append((start, writes))
    every = [r for v in rows.values() for r in v]
    print(f"{sys.argv[1]} on {sys.argv[2]}:")
    for name, v in [("all", every), *sorted(rows.items())]:
        on, quiet = np.mean(v, axis=0)
        print(
            f"  {name}: {len(v)} cues, P(on time) {on:.3f}, P(quiet until the window) {quiet:.3f}"
        )
    for driver in ("speech", "text"):
        said = ", ".join(
            f"{name} {np.mean(hazards[(driver, name)]):.3f}"
            for name in ("before", "during", "after")
            if hazards[(driver, name)]
        )
        print(f"  odds of starting per micro-turn, {driver} requests: {said}")
    if "--by-count" in sys.argv:
        print("  micro-turns since the last start: model's odds / reference's rate (decisions)")
        for category in sorted({c for c, _ in counts}):
            cells = [
                f"{n}: {np.mean([x[0] for x in v]):.2f} / {np.mean([x[1] for x in v]):.2f} "
                f"({len(v)})"
                for (c, n), v in sorted(counts.items())
                if c == category and len(v) >= MIN_DECISIONS and n < NO_ONSET  # not "never"
            ]
            print(f"  {category}: " + "; ".join(cells))


if __name__ == "__main__":
    main()

"""Teacher-forced odds that the model starts each time-awareness cue on time: a
low-noise check of *when* it speaks, where the free-running score (every cue of an
episode right, nothing extra) sits at 0 for every model so far.

For each cue the reference says at time d (tolerance max(0.5 s, 15% of d minus the
request's end), as the scorer's): P(on time) = P(the model keeps quiet from the end of
the reference's previous message to d - tol) x P(it starts in [d - tol, d]), the latter
stopping at the reference's own start (after it the context holds the reference's words).
Quiet and start odds are the text head's P(PAD) at temperature 1 (`start_odds`).
Printed: the mean over cues, all and by category, and the mean P(quiet until the window).

Usage: python scripts/cue-timing.py MODEL SET[,SET...]   (sets: microturn data's DIR/eval,
or a time-awareness-only set written with microturn.train.evaluate.write_eval_set)
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from microturn.model import from_pretrained
from microturn.train.evaluate import load_eval_set, start_odds

TOLERANCE_S, TOLERANCE_SHARE = 0.5, 0.15  # the scorer's (scenarios/time_awareness.py)


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in sys.argv[2].split(","):
        for ep, turns in load_eval_set(Path(s), model.layout):
            if ep.scenario != "time_awareness":
                continue
            odds = start_odds(model, turns)
            for e in (e for e in ep.events if e.kind == "request_end"):
                for due, _ in e.data["expected"]:
                    tol = max(TOLERANCE_S, TOLERANCE_SHARE * (due - e.time_s))
                    quiet = odds.quiet_since_last_message(due - tol)
                    start = odds.odds_of_start(due - tol, due + tol) or 0.0
                    rows[e.data["category"]].append((quiet * start, quiet))
    every = [r for v in rows.values() for r in v]
    print(f"{sys.argv[1]} on {sys.argv[2]}:")
    for name, v in [("all", every), *sorted(rows.items())]:
        on, quiet = np.mean(v, axis=0)
        print(
            f"  {name}: {len(v)} cues, P(on time) {on:.3f}, P(quiet until the window) {quiet:.3f}"
        )


if __name__ == "__main__":
    main()

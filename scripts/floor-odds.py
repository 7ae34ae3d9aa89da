"""Teacher-forced odds of taking the floor in turn-taking episodes: a low-noise check of
the one decision the turn-taking bars measure, without sampling.

For each mid-sentence pause: the probability that the model starts a message at some
micro-turn of the pause, given that it stayed silent before (1 - product of P(PAD) at
the first text slot). For each turn end: the same over [end - 0.2 s, end + 0.4 s) (the
latency bar), stopping at the reference reply's first micro-turn. P(PAD) is the text
head's softmax at temperature 1 over all ids, not the sampler's (temperature 0.7, top-k,
allowed ids): a model's ranking of pauses against turn ends, not its sampled rates.
Printed: the mean of each and, for a few thresholds, the share of pauses and turn ends
whose odds pass it (a free-running model sits near one such point; start_bias moves it).

Usage: python scripts/floor-odds.py MODEL SET[,SET...]   (sets: microturn data's DIR/eval)
"""

import sys
from pathlib import Path

import numpy as np

from microturn.model import from_pretrained
from microturn.scenarios.turn_taking import LATENCY_BAR_S
from microturn.stream.episode import Episode
from microturn.train.evaluate import StartOdds, load_eval_set, start_odds

ANTICIPATE_S = 0.2


def floor_odds(ep: Episode, odds: StartOdds) -> tuple[list, list]:
    """The odds of a start in each mid-sentence pause and by each turn end's latency bar
    (None where no decision falls in the window)."""
    pauses, turn_ends = [], []
    for e in ep.events:
        if e.kind == "pause_start":
            pauses.append(odds.odds_of_start(e.time_s, e.data["end_s"]))
        elif e.kind == "user_turn_end":
            lo, hi = e.time_s - ANTICIPATE_S, e.time_s + LATENCY_BAR_S
            turn_ends.append(odds.odds_of_start(lo, hi))
    return pauses, turn_ends


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    pauses, turn_ends = [], []
    for s in sys.argv[2].split(","):
        for ep, turns in load_eval_set(Path(s), model.layout):
            if ep.scenario != "turn_taking":
                continue
            p, t = floor_odds(ep, start_odds(model, turns))
            pauses += p
            turn_ends += t
    p = np.array([x for x in pauses if x is not None])
    t = np.array([x for x in turn_ends if x is not None])
    print(
        f"{sys.argv[1]}: {len(p)} pauses, mean odds {p.mean():.3f}; {len(t)} turn ends, "
        f"mean odds by +{LATENCY_BAR_S} s {t.mean():.3f}"
    )
    for thr in (0.3, 0.5, 0.7):
        print(f"  odds > {thr}: pauses {np.mean(p > thr):.2f}, turn ends {np.mean(t > thr):.2f}")


if __name__ == "__main__":
    main()

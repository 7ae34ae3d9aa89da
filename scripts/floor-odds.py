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
import torch

from microturn.codecs.text import Special
from microturn.model import from_pretrained, to_batch
from microturn.model.sampling import between_before
from microturn.train.evaluate import load_eval_set

LATENCY_BAR_S = 0.4
ANTICIPATE_S = 0.2


def episode_odds(model, ep, turns) -> tuple[list[float], list[float]]:
    """(odds per pause, odds per turn end) of one episode, teacher-forced."""
    lay = model.layout
    batch = to_batch([turns], "cpu")
    with torch.no_grad():
        logits, _ = model(batch)
    p_pad = logits.model_text[0, :, 0].float().softmax(-1)[:, Special.PAD].numpy()
    text = batch["model_text"][0]
    open_before = ~between_before(text[None])[0, :, 0].numpy()  # a message is open at t
    starts = (text < Special.PAD).any(1).numpy()
    times = np.array([lay.output_start_s(t) for t in range(len(p_pad))])

    def odds(lo: float, hi: float) -> list[float]:
        idx = np.flatnonzero((times >= lo) & (times < hi) & ~open_before)
        onset = [i for i in idx if starts[i]]
        if onset:
            idx = idx[idx <= onset[0]]
        return [float(1 - np.prod(p_pad[idx]))] if len(idx) else []

    pauses, turn_ends = [], []
    for e in ep.events:
        if e.kind == "pause_start":
            pauses += odds(e.time_s, e.data["end_s"])
        elif e.kind == "user_turn_end":
            turn_ends += odds(e.time_s - ANTICIPATE_S, e.time_s + LATENCY_BAR_S)
    return pauses, turn_ends


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    sets = [Path(s) for s in sys.argv[2].split(",")]
    pauses, turn_ends = [], []
    for s in sets:
        for ep, turns in load_eval_set(s, model.layout):
            if ep.scenario == "turn_taking":
                a, b = episode_odds(model, ep, turns)
                pauses += a
                turn_ends += b
    p, t = np.array(pauses), np.array(turn_ends)
    print(
        f"{sys.argv[1]}: {len(p)} pauses, mean odds {p.mean():.3f}; {len(t)} turn ends, "
        f"mean odds by +{LATENCY_BAR_S} s {t.mean():.3f}"
    )
    for thr in (0.3, 0.5, 0.7):
        print(f"  odds > {thr}: pauses {np.mean(p > thr):.2f}, turn ends {np.mean(t > thr):.2f}")


if __name__ == "__main__":
    main()

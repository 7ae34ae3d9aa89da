"""Where a model's free-running turn-taking goes: per user turn end, the reply taken on
time (latency 0-0.4 s, the bar), early (< 0 s: started in the turn's last 0.5 s) or
late, or the turn missed while the model was already talking at the end (it took the
floor earlier and kept it) or missed in silence. turn_tor alone does not tell a model
that holds the floor too long from one that never starts.

Usage: python scripts/turn-outcomes.py MODEL SET [SEED]   (text view, as
`python -m microturn.train.evaluate`; SET: an evaluation set with turn-taking episodes)
"""

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from microturn.model import from_pretrained
from microturn.scenarios.scoring import speaking_at
from microturn.scenarios.turn_taking import LATENCY_BAR_S, SCENARIO
from microturn.train.evaluate import load_eval_set, timelines


def main(model_dir: str, set_dir: str, seed: int = 0) -> None:
    model = from_pretrained(Path(model_dir))
    eval_set = [
        x for x in load_eval_set(Path(set_dir), model.layout) if x[0].scenario == "turn_taking"
    ]
    if not eval_set:
        raise SystemExit(f"{set_dir} holds no turn-taking episodes")
    outcomes: Counter[str] = Counter()
    latencies, message_s = [], []
    for (episode, _), timeline in zip(eval_set, timelines(model, eval_set, seed=seed), strict=True):
        message_s += [s.end_s - s.start_s for s in timeline.speech]
        ends = [e for e in episode.events if e.kind == "user_turn_end"]
        for end, turn in zip(ends, SCENARIO.score(episode, timeline)["turns"], strict=True):
            if turn["taken"]:
                latency = turn["latency_s"]
                latencies.append(latency)
                key = "early" if latency < 0 else "on time" if latency <= LATENCY_BAR_S else "late"
                outcomes[f"taken {key}"] += 1
            elif speaking_at(timeline, end.time_s):
                outcomes["missed, already talking"] += 1
            else:
                outcomes["missed, silent"] += 1
    n = sum(outcomes.values())
    print(f"{model_dir} on {set_dir}: {n} turn ends")
    for key in (
        "taken on time",
        "taken early",
        "taken late",
        "missed, already talking",
        "missed, silent",
    ):
        print(f"  {key}: {outcomes[key] / n:.2f}")
    if latencies:
        print("  latency quartiles (s):", np.percentile(latencies, [25, 50, 75]).round(2).tolist())
    if message_s:
        print(
            "  message length quartiles (s):",
            np.percentile(message_s, [25, 50, 75]).round(2).tolist(),
        )


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 0)

"""How long the reference's replies leave the model to hear what they answer: for each
cause (a turn's end, a typed message's arrival, a camera event, a background result),
when the first reference message after it is decided minus when the cause was complete
(`microturn.train.data.reply_slacks`). Negative: the data asked the model to answer
before it could have heard the cause (every set made before scenarios/base.heard_by_s).

Usage: python scripts/reply-slack.py SET[,SET...]   (sets: microturn data's DIR/eval)
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from microturn.model.config import ModelConfig
from microturn.train.data import reply_slacks
from microturn.train.evaluate import load_eval_set


def main() -> None:
    layout = ModelConfig.preset("tiny").layout
    rows: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in sys.argv[1].split(","):
        for ep, turns in load_eval_set(Path(s), layout):
            for _, slack in reply_slacks(ep, turns, layout):
                rows[(ep.scenario, ep.meta.get("driver", "speech"))].append(slack)
    for (scenario, driver), v in sorted(rows.items()):
        a = np.array(v)
        print(
            f"{scenario}, {driver}: {len(a)} replies, median slack {np.median(a):+.2f} s, "
            f"decided before the cause {np.mean(a < -1e-6):.0%}, with under 0.1 s of it "
            f"{np.mean(a < 0.1):.0%}"
        )


if __name__ == "__main__":
    main()

"""Does a model's state after a time-awareness request hold what the request asked for:
its number N (the reminder's interval, the phrase's delay, the countdown's start) or its
cue (the reminder's task, the phrase)? A linear probe, trained on one stored set and
scored on others.

When a reminder or a delayed phrase is due depends on N, heard (or read) in the
request. Teacher-forced, the shipped model's odds of starting a cue do not peak at any
delay (scripts/cue-timing.py): this asks whether it has N at all. Feature: the main
model's state (`InteractionModel.encode`) averaged over the micro-turns played in the
0.4 s after the request ends, before a teacher-forced acknowledgement could say N back
(the scenario's acknowledgements have said it since this script was written); label: N
(3..15 s). Multinomial logistic regression with an L2 weight chosen by 5-fold
cross-validation on the training set; accuracy is printed by driver and category beside
the share of the most common label (what a probe that learned nothing gets).

Two controls say whether an empty result is the model's or the probe's:
- `--target cue`: the reminder's task or the phrase, content the model must say later
  ("Stand up.") and so is trained to keep;
- `--categories countdown`: a countdown's N, which is the first number the model says,
  1.2 s after the request (so the text loss asks for it directly).

Usage: python scripts/request-number.py MODEL TRAIN_SET EVAL_SET[,EVAL_SET...]
[--target n|cue] [--categories remind_every,say_after|countdown]
(sets: `microturn.train.evaluate.write_eval_set(DIR, ["time_awareness"], N, layout,
split=..., first_seed=...)`; TRAIN_SET on the train split, with seeds no model trained on)
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from microturn.model import from_pretrained
from microturn.model.batch import to_batch
from microturn.model.transformer import InteractionModel
from microturn.scenarios.time_awareness import requested_n
from microturn.train.evaluate import load_eval_set

AFTER_S = (0.0, 0.4)
WEIGHTS = (1e-3, 1e-2, 3e-2, 1e-1)
FOLDS = 5


@torch.no_grad()
def features(
    model: InteractionModel, path: Path, target: str, categories: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    """(states [E, d], label [E], driver [E], category [E]) of the set's requests in
    `categories`; the label is N or the cue's text (`target`)."""
    rows: list[tuple] = []
    for ep, turns in load_eval_set(path, model.layout):
        e = next((e for e in ep.events if e.kind == "request_end"), None)
        if e is None or e.data["category"] not in categories:
            continue
        if target == "n":
            label: object = requested_n(e)
        else:
            label = str(e.data["cue"])
        context, _, _ = model.encode(to_batch([turns]))
        times = model.layout.output_start_s(np.arange(turns.n_turns))
        chosen = (times >= e.time_s + AFTER_S[0]) & (times < e.time_s + AFTER_S[1])
        state = context[0][torch.from_numpy(chosen)].mean(0).numpy()
        rows.append((state, label, ep.meta["driver"], e.data["category"]))
    x, labels, drivers, cats = (np.array(v) for v in zip(*rows, strict=True))
    return x, labels, drivers, cats


class Probe:
    def __init__(self, x: np.ndarray, y: np.ndarray, weight: float, classes: np.ndarray) -> None:
        self.mean, self.std, self.classes = x.mean(0), x.std(0) + 1e-6, classes
        xt, yt = self._x(x), torch.from_numpy(np.searchsorted(classes, y))
        self.w = torch.zeros(x.shape[1], len(classes), requires_grad=True)
        self.b = torch.zeros(len(classes), requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=500)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = xt @ self.w + self.b
            loss = torch.nn.functional.cross_entropy(logits, yt) + weight * (self.w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    def _x(self, x: np.ndarray) -> torch.Tensor:
        return torch.tensor((x - self.mean) / self.std, dtype=torch.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.classes[(self._x(x) @ self.w + self.b).argmax(1).numpy()]


def most_common_share(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / len(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("train_set", type=Path)
    parser.add_argument("eval_sets")
    parser.add_argument("--target", choices=("n", "cue"), default="n")
    parser.add_argument("--categories", default="remind_every,say_after")
    args = parser.parse_args()
    categories = tuple(args.categories.split(","))
    model = from_pretrained(args.model).eval()
    x, y, _, _ = features(model, args.train_set, args.target, categories)
    classes = np.unique(y)
    folds = np.random.default_rng(0).integers(0, FOLDS, len(y))
    print(f"most common {args.target} in the training set: {most_common_share(y):.3f} of requests")
    scores = {}
    for weight in WEIGHTS:
        right = [
            np.mean(
                Probe(x[folds != f], y[folds != f], weight, classes).predict(x[folds == f])
                == y[folds == f]
            )
            for f in range(FOLDS)
        ]
        scores[weight] = float(np.mean(right))
        print(f"L2 {weight}: cross-validated accuracy {scores[weight]:.3f} ({len(y)} requests)")
    probe = Probe(x, y, max(scores, key=scores.get), classes)
    for path in args.eval_sets.split(","):
        xe, ye, drivers, cats = features(model, Path(path), args.target, categories)
        guess = probe.predict(xe)
        for driver in ("speech", "text"):
            for category in categories:
                m = (drivers == driver) & (cats == category)
                if not m.any():
                    continue
                line = (
                    f"{path} {driver} {category}: {m.sum()} requests, accuracy "
                    f"{np.mean(guess[m] == ye[m]):.2f}"
                )
                if args.target == "n":
                    line += f", within 1 s {np.mean(abs(guess[m] - ye[m]) <= 1):.2f}"
                print(f"{line} (most common {most_common_share(ye[m]):.2f})")


if __name__ == "__main__":
    main()

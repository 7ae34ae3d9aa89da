"""Does the model know which number to say? Teacher-forced, at the first place after a
time-awareness request where the reference writes the request's N as a word (a
countdown's first number, "Five."; since acknowledgements say N back, "Okay, every five
seconds."), the model's own likelihood ranks every N the category allows, each word
with the character after it. The top candidate is the number the model would write.

Why beside the linear probe (scripts/request-number.py): a probe reads the state at one
moment and may miss what attention fetches when it is needed; this reads the model's
answer where the data asks it for N. Chance is 1 / (numbers allowed): 1/8 for a
countdown, 1/6 for a reminder, 1/13 for a delayed phrase.

Usage: python scripts/said-number.py MODEL SET[,SET...] [--next]
(sets: `microturn.train.evaluate.write_eval_set(DIR, ["time_awareness"], N, layout,
split=..., first_seed=...)`)
"""

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from microturn.codecs.text import ByteTokenizer
from microturn.model import from_pretrained
from microturn.model.batch import to_batch
from microturn.scenarios.scoring import number_words, says
from microturn.scenarios.time_awareness import COUNT_N, REMIND_N, SAY_N, requested_n
from microturn.stream.layout import MicroTurns
from microturn.train.evaluate import load_eval_set

ALLOWED = {"remind_every": REMIND_N, "say_after": SAY_N, "countdown": COUNT_N}


def find(track: np.ndarray, pattern: list[int], start: int) -> int | None:
    """First index >= start of `pattern` in the flat text track."""
    for i in range(start, track.size - len(pattern) + 1):
        if track[i : i + len(pattern)].tolist() == pattern:
            return i
    return None


@torch.no_grad()
def rank(model, turns: MicroTurns, at: int, words: list[str], after: str) -> list[float]:
    """Log-likelihood of each word (plus `after`) written from flat text slot `at`, all
    candidates in one batch, over the micro-turns up to the last one they reach (the
    rest cannot change their logits)."""
    tok, slots = ByteTokenizer(), turns.model_text.shape[1]
    written = [tok.encode(word + after) for word in words]
    turns = turns[: (at + max(map(len, written)) - 1) // slots + 1]
    batch = to_batch([turns] * len(words))
    text = batch["model_text"].reshape(len(words), -1).clone()
    for row, ids in enumerate(written):
        text[row, at : at + len(ids)] = torch.tensor(ids)  # later slots: causal, no effect
    batch["model_text"] = text.reshape(len(words), -1, slots)
    logits, _ = model(batch)
    logp = logits.model_text.float().log_softmax(-1).flatten(1, 2)
    return [
        float(sum(logp[row, at + i, t] for i, t in enumerate(ids)))
        for row, ids in enumerate(written)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("sets")
    parser.add_argument(
        "--next",
        action="store_true",
        help="countdowns only: the second number (N - 1), which the model's own first "
        "number tells: a control that the ranking reads what the model knows",
    )
    args = parser.parse_args()
    model = from_pretrained(args.model).eval()
    tok = ByteTokenizer()
    shift = -1 if args.next else 0
    results: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for path in args.sets.split(","):
        for ep, turns in load_eval_set(Path(path), model.layout):
            e = next((e for e in ep.events if e.kind == "request_end"), None)
            if e is None:
                continue
            category = e.data["category"]
            if args.next and category != "countdown":
                continue
            n = requested_n(e) + shift
            said = next(
                (
                    s
                    for s in ep.reference.speech
                    if s.start_s > e.time_s - 0.5 and says(s.text, number_words(n))
                ),
                None,
            )
            if said is None:  # acknowledgements without N (sets made before they said it)
                continue
            lower = said.text.lower()
            offset = lower.index(number_words(n))
            capital = said.text[offset].isupper()
            after = said.text[offset + len(number_words(n))]
            start = model.layout.output_turn(said.start_s - 2.0) * turns.model_text.shape[1]
            at = find(turns.model_text.reshape(-1), tok.encode(said.text), max(0, start))
            if at is None:
                continue
            lo, hi = (k + shift for k in ALLOWED[category])
            words = [number_words(k) for k in range(lo, hi + 1)]
            words = [w.capitalize() if capital else w for w in words]
            scores = rank(model, turns, at + offset, words, after)
            best = lo + int(np.argmax(scores))
            results[(category, ep.meta["driver"])].append((best == n, abs(best - n) <= 1))
    for (category, driver), rows in sorted(results.items()):
        lo, hi = ALLOWED[category]
        right = np.mean([r[0] for r in rows])
        near = np.mean([r[1] for r in rows])
        print(
            f"{category} {driver}: {len(rows)} requests, top candidate right {right:.2f}, "
            f"within 1 {near:.2f} (chance {1 / (hi - lo + 1):.2f})"
        )


if __name__ == "__main__":
    main()

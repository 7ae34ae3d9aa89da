"""Where a model misspells: its text head's accuracy inside messages by the slot's place
in the micro-turn, teacher-forced, and how many of the words it writes free-running are
words at all.

A micro-turn holds 4 text slots. Slot j of a micro-turn is written by the depth decoder
after slots 0..j-1 of the same micro-turn; the bytes of earlier micro-turns reach it only
through the main model's state (or, with `text_history`, as the depth decoder's own
input). Accuracy that climbs from slot 0 to slot 3 says the state carries little of the
bytes just written: words break at micro-turn boundaries ("Eigh", "Turn lef").

Printed, teacher-forced (bytes and EOM inside messages, argmax against the reference):
accuracy and mean negative log-likelihood per slot. Free-running (sampling seed 0, the
live sampler): the share of the model's words found in the vocabulary of the set
(every reference reply and user message; a proxy: a right word the set never uses counts as
unknown, so compare models on the same set), and the first messages it wrote.

Usage: python scripts/text-slots.py MODEL SET [EPISODES]   (SET: microturn data's DIR/eval;
EPISODES: the first this many, default all)
"""

import sys
from pathlib import Path

import torch

from microturn.codecs.text import N_BYTES, Special
from microturn.model import from_pretrained
from microturn.model.batch import to_batch
from microturn.model.sampling import between_before
from microturn.scenarios.scoring import normalize
from microturn.train.evaluate import load_eval_set, timelines

SHOWN = 12


@torch.no_grad()
def slot_accuracy(model, eval_set) -> tuple[list[float], list[float], list[int]]:
    """Per text slot: accuracy, mean NLL and count of in-message targets."""
    slots = model.layout.model_text_slots
    hits, nll, count = [0.0] * slots, [0.0] * slots, [0] * slots
    for _, turns in eval_set:
        batch = to_batch([turns])
        logits = model(batch)[0].model_text.float()  # [1, N, slots, vocab]
        target = batch["model_text"]
        inside = ~between_before(target) & ((target < N_BYTES) | (target == Special.EOM))
        right = logits.argmax(-1) == target
        loss = -logits.log_softmax(-1).gather(-1, target[..., None])[..., 0]
        for j in range(slots):
            m = inside[..., j]
            count[j] += int(m.sum())
            hits[j] += float(right[..., j][m].sum())
            nll[j] += float(loss[..., j][m].sum())
    return (
        [h / max(1, c) for h, c in zip(hits, count, strict=True)],
        [x / max(1, c) for x, c in zip(nll, count, strict=True)],
        count,
    )


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    eval_set = load_eval_set(Path(sys.argv[2]), model.layout)
    if len(sys.argv) > 3:
        eval_set = eval_set[: int(sys.argv[3])]
    acc, nll, count = slot_accuracy(model, eval_set)
    print(f"{sys.argv[1]} on {sys.argv[2]}: {len(eval_set)} episodes")
    print("  teacher-forced, in-message targets per slot:", count)
    print("  accuracy per slot:", " ".join(f"{a:.3f}" for a in acc))
    print("  NLL per slot:     ", " ".join(f"{x:.3f}" for x in nll))
    texts = [
        *(s.text for ep, _ in eval_set if ep.reference for s in ep.reference.speech),
        *(s.text for ep, _ in eval_set for s in ep.user_speech),
        *(e.text for ep, _ in eval_set for e in ep.user_text),
    ]
    vocabulary = {w for text in texts for w in normalize(text).split()}
    said = [s.text for run in timelines(model, eval_set, seed=0) for s in run.speech if s.text]
    words = [w for text in said for w in normalize(text).split()]
    known = sum(w in vocabulary for w in words)
    print(
        f"  free-running: {len(said)} messages, {len(words)} words, "
        f"{known / max(1, len(words)):.3f} of them known (vocabulary {len(vocabulary)} words)"
    )
    for text in said[:SHOWN]:
        print(f"    {text!r}")


if __name__ == "__main__":
    main()

"""Where a model errs within a micro-turn: its text head's accuracy inside messages and
its audio head's NLL where it speaks, by the slot's place in the micro-turn,
teacher-forced; and how many of the words it writes free-running are words at all.

A micro-turn holds 4 text and 4 audio slots. Slot j is written by the depth decoder after
the slots before it in the same micro-turn; what earlier micro-turns wrote reaches it only
through the main model's state (or, with `output_history`, as the depth decoder's own
input). Accuracy that climbs from slot 0 to slot 3 says the state carries little of what
was just written: words break at micro-turn boundaries ("Eigh", "Turn lef") and the voice
jumps.

Printed, teacher-forced: per slot, the text accuracy (bytes and EOM inside messages,
argmax against the reference) and mean NLL, and the audio NLL (mean over a slot's frames
and channels, in slots where the reference speaks). Free-running (sampling seed 0, the
live sampler): the share of the model's words found in the vocabulary of the set (every
reference reply and user message; a proxy: a right word the set never uses counts as
unknown, so compare models on the same set), and the first messages it wrote.

Usage: python scripts/output-slots.py MODEL SET [EPISODES]   (SET: microturn data's
DIR/eval; EPISODES: the first this many, default all)
"""

import sys
from pathlib import Path

import torch

from microturn.model import from_pretrained
from microturn.model.batch import to_batch
from microturn.model.sampling import between_before
from microturn.scenarios.scoring import normalize
from microturn.train.evaluate import load_eval_set, slot_tally, timelines

SHOWN = 12


@torch.no_grad()
def slot_figures(model, eval_set) -> dict[str, list[float]]:
    """Per slot, over the set: text accuracy and NLL inside messages, audio NLL where the
    reference speaks, and the counts they are means over."""
    total: dict[str, torch.Tensor] = {}
    for _, turns in eval_set:
        batch = to_batch([turns])
        tally = slot_tally(model(batch)[0], batch, ~between_before(batch["model_text"]))
        total = {k: total.get(k, 0) + v for k, v in tally.items()}
    text_n, audio_n = total["text_n"].clamp(min=1), total["audio_n"].clamp(min=1)
    return {
        "accuracy": (total["text_right"] / text_n).tolist(),
        "nll": (total["text_nll"] / text_n).tolist(),
        "count": total["text_n"].int().tolist(),
        "audio_nll": (total["audio_nll"] / audio_n).tolist(),
    }


def main() -> None:
    model = from_pretrained(Path(sys.argv[1])).eval()
    eval_set = load_eval_set(Path(sys.argv[2]), model.layout)
    if len(sys.argv) > 3:
        eval_set = eval_set[: int(sys.argv[3])]
    figures = slot_figures(model, eval_set)
    print(f"{sys.argv[1]} on {sys.argv[2]}: {len(eval_set)} episodes")
    print("  teacher-forced, in-message text targets per slot:", figures["count"])
    rows = (("text accuracy", "accuracy"), ("text NLL", "nll"), ("audio NLL", "audio_nll"))
    for name, key in rows:
        print(f"  {name} per slot:", " ".join(f"{x:.3f}" for x in figures[key]))
    texts = [
        # the words said: an interrupted message's text may end in a cut word
        *(
            " ".join(w.text for w in s.words) or s.text
            for ep, _ in eval_set
            if ep.reference
            for s in ep.reference.speech
        ),
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

"""Does asking the main model which words it just heard teach it to hear them? A CPU
fine-tune with an auxiliary loss, against the same fine-tune without it.

Why: no model so far knows the number a time-awareness request asks for, not even where
its data asks it to say that number (a countdown's first number, the acknowledgement's
"every five seconds"; scripts/said-number.py) and not even typed. The only signal that a
spoken word was a particular word is the few later text targets that depend on it. This
adds a dense one: at every micro-turn, a linear head on the main model's state
(`InteractionModel.encode`) predicts which words the user finished saying in the last
`--window` micro-turns (a multi-hot over hashed words, binary cross-entropy summed over
the buckets, averaged over micro-turns). With `--weight 0` the head reads detached
states: the control arm, whose head is then a probe of the words trained alongside.

Data: `--episodes` episodes of `--scenarios` (train split, augmented as `microturn data`
does, a quarter typed), made once and cached at `--cache` (both arms read the same).
Training: the loss of `microturn train` (onset weighting, MoE balance), AdamW, warmup
plus cosine, the same batches for every arm (`--seed`). The model (without the head) is
written to OUT.

Usage: python scripts/heard-words.py MODEL OUT --cache FILE [--weight W] [--steps N]
[--batch B] [--lr LR] [--episodes E] [--first-seed S] [--scenarios a,b]
       python scripts/heard-words.py RUN - --cache - --evaluate SET[,SET...]
"""

import argparse
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from microturn.model import from_pretrained, save_pretrained
from microturn.model.batch import to_batch
from microturn.scenarios.scoring import normalize, number_words
from microturn.stream.episode import Episode
from microturn.stream.layout import Layout, MicroTurns
from microturn.train.augment import augment_batch
from microturn.train.data import make_episode
from microturn.train.loop import TrainConfig, lr_at, make_optimizer, pad_batch, weighted_losses

BUCKETS = 1024


def word_key(text: str) -> str:
    """A spoken word as the bucket sees it: lower case letters, digits as words."""
    return normalize(text).replace("'", "").replace(" ", "")


def spoken_words(ep: Episode, layout: Layout, n_turns: int) -> Iterator[tuple[int, str]]:
    """(micro-turn whose input window holds the word's end, word_key) of each word the
    user spoke (typed text is in the input as bytes already)."""
    for seg in ep.user_speech:
        for w in seg.words:
            key, t = word_key(w.text), layout.input_turn(w.end_s)
            if key and 0 <= t < n_turns:
                yield t, key


def bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


def ended_words(ep: Episode, layout: Layout, n_turns: int) -> list[list[int]]:
    """Per micro-turn, the buckets of the user's spoken words that ended in it."""
    out: list[list[int]] = [[] for _ in range(n_turns)]
    for t, key in spoken_words(ep, layout, n_turns):
        out[t].append(bucket(key))
    return out


def targets(ended: list[list[int]], n: int, window: int) -> torch.Tensor:
    """[n, BUCKETS]: words finished in the last `window` micro-turns (0 past the end)."""
    hot = torch.zeros(n, BUCKETS)
    for t, buckets in enumerate(ended):
        for b in buckets:
            hot[t : t + window, b] = 1.0
    return hot


NUMBERS = [number_words(k) for k in range(1, 16)]
TOP = 10


@torch.no_grad()
def evaluate(run: Path, sets: str, window: int) -> None:
    """The run's head on stored sets: its loss per micro-turn; top-10 recall of each
    spoken word as it ends (its bucket among the 10 highest), numbers apart from the
    rest (template words like "seconds" can be guessed from context, a number cannot);
    and how often, as the user finishes a number from one to fifteen, that number's
    bucket scores highest of the fifteen, beside always guessing the most common one
    ("one" is also a word of the countdown requests' templates, "to one")."""
    from microturn.train.evaluate import load_eval_set

    model = from_pretrained(run).eval()
    head = torch.nn.Linear(model.cfg.d_model, BUCKETS)
    head.load_state_dict(torch.load(run / "heard-head.pt"))
    buckets = torch.tensor([bucket(w) for w in NUMBERS])
    for path in sets.split(","):
        losses, picked, heard_numbers = [], [], []
        recall: dict[str, list[bool]] = {"numbers": [], "other words": []}
        for ep, turns in load_eval_set(Path(path), model.layout):
            context, _, _ = model.encode(to_batch([turns]))
            scores = head(context[0].float())
            hot = targets(ended_words(ep, model.layout, turns.n_turns), turns.n_turns, window)
            per_turn = F.binary_cross_entropy_with_logits(scores, hot, reduction="none")
            losses.append(float(per_turn.sum(-1).mean()))
            top = scores.topk(TOP).indices
            for t, key in spoken_words(ep, model.layout, turns.n_turns):
                recall["numbers" if key in NUMBERS else "other words"].append(
                    bool((top[t] == bucket(key)).any())
                )
                if key in NUMBERS:
                    picked.append(NUMBERS[int(scores[t, buckets].argmax())] == key)
                    heard_numbers.append(key)
        print(f"{run} on {path}: heard loss {np.mean(losses):.3f} per micro-turn")
        for kind, hits in recall.items():
            print(f"  top-{TOP} recall, {kind}: {sum(hits)}/{len(hits)} = {np.mean(hits):.3f}")
        print(
            f"  numbers one to fifteen, the right one highest: {sum(picked)}/{len(picked)} = "
            f"{np.mean(picked):.3f} (always the most common: "
            f"{max(map(heard_numbers.count, NUMBERS)) / max(len(heard_numbers), 1):.3f})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--weight", type=float, default=0.0)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--onset-weight", type=float, default=10.0)
    p.add_argument("--episodes", type=int, default=800)
    p.add_argument("--first-seed", type=int, default=8_000_000)
    p.add_argument("--scenarios", default="time_awareness")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--evaluate", help="score the run at MODEL on these stored sets instead")
    args = p.parse_args()
    if args.evaluate:
        evaluate(args.model, args.evaluate, args.window)
        return

    model = from_pretrained(args.model)
    layout = model.layout
    if not args.cache.exists():
        names = args.scenarios.split(",")
        jobs = [(names[i % len(names)], args.first_seed + i) for i in range(args.episodes)]
        made = []
        for s, seed in tqdm(jobs, desc="episodes", unit="ep"):
            ep, turns = make_episode(s, seed, layout)
            made.append((turns, ended_words(ep, layout, turns.n_turns)))
        torch.save(made, args.cache.with_suffix(".tmp"))
        args.cache.with_suffix(".tmp").rename(args.cache)  # the other arm may be waiting
    data: list[tuple[MicroTurns, list[list[int]]]] = torch.load(args.cache, weights_only=False)

    head = torch.nn.Linear(model.cfg.d_model, BUCKETS)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, -5.0)  # a word is rare at any one micro-turn
    params = list(model.parameters()) + list(head.parameters())
    opt = make_optimizer(params, args.lr, 0.1)
    schedule = TrainConfig(
        data="", out=str(args.out), steps=args.steps, lr=args.lr, warmup=args.warmup
    )
    loss_cfg = SimpleNamespace(onset_weight=args.onset_weight, floor_weight=0.0)
    rng, aug = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed + 1000)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "heard-log.jsonl").open("w")
    model.train()
    sums: dict[str, float] = {}
    started = time.perf_counter()
    for step in tqdm(range(1, args.steps + 1), desc="train", unit="step"):
        picks = rng.integers(len(data), size=args.batch)
        episodes, mask = pad_batch([data[i][0] for i in picks], layout)
        batch = to_batch(episodes)
        augment_batch(batch, aug)
        turn_mask = torch.from_numpy(mask)
        n = turn_mask.shape[1]
        hot = torch.stack([targets(data[i][1], n, args.window) for i in picks])
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, schedule)
        context, written, aux = model.encode(batch)
        logits = model.decode(context, written, model.since_onset(batch))
        losses, _ = weighted_losses(logits, batch, turn_mask, loss_cfg)
        # the control's head reads detached states: a probe that leaves the model alone
        states = context if args.weight > 0 else context.detach()
        per_turn = F.binary_cross_entropy_with_logits(
            head(states.float()), hot, reduction="none"
        ).sum(-1)
        heard = (per_turn * turn_mask).sum() / turn_mask.sum()
        loss = sum(losses.values()) + model.cfg.aux_loss_weight * aux
        loss = loss + (args.weight if args.weight > 0 else 1.0) * heard
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, v in {**losses, "heard": heard}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        if step % args.log_every == 0:
            record = {
                "step": step,
                **{k: round(v / args.log_every, 4) for k, v in sums.items()},
                "s": round(time.perf_counter() - started, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(json.dumps(record))
            sums = {}
    save_pretrained(model.eval(), args.out)
    torch.save(head.state_dict(), args.out / "heard-head.pt")


if __name__ == "__main__":
    main()

"""Can the main model's audio path learn to hear a spoken number when asked for it
directly? A CPU experiment: the number a time-awareness request asks for, as the only
training signal.

Why: no model so far holds the N a spoken request asks for (scripts/request-number.py,
scripts/said-number.py), and a loss on all words heard did not teach it numbers
(scripts/heard-words.py). A 2.4M-parameter classifier of the same dMel input learned N
in 14 CPU minutes (../shared/notes/measurements.md). This asks the same of the main
model: is the failure the architecture's (a bag of embeddings per 50 ms slot, four
layers shared with every other track) or the supervision's (one late text target per
request)?

Data: spoken requests (`--driver text`: typed ones, a control that the model and this
training can learn N when it arrives as bytes; a quarter of the episodes). Each example
is a time-awareness episode cut after the micro-turn that hears the request end plus
`--margin` micro-turns (the model is causal: the cut changes nothing before it); its
label is N. Training examples come from the train split, augmented as `microturn data`
does; held-out sets are fresh train-split seeds (voices seen in training), the eval
split (voices never heard) and unseen_engine (a synthesizer never heard), without
augmentation. Made once in worker processes and cached at `--cache`.

Training: a linear head on the main model's state (`InteractionModel.encode`) at the
cut's last micro-turn (or, `--pool max`, the top layer's max over all its slots),
cross-entropy over N, nothing else; AdamW, warmup plus cosine.
`--init` is a checkpoint (its weights) or `scratch:` + a checkpoint (its config, fresh
weights). `--freeze` trains the head alone (a linear probe: what the init already holds), on
states read once.
`--audio-stem conv` swaps the model's audio stem for ConvAudioStem (below).
Accuracy on each held-out set is logged every `--eval-every` steps beside the share of
the most common N.

Usage: python scripts/hear-number.py OUT --init MODEL|scratch:MODEL --cache FILE
[--steps N] [--batch B] [--lr LR] [--freeze] [--pool last|max] [--audio-stem bag|conv]
[--train E] [--held-out E] [--driver speech|text]
"""

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from microturn.codecs import dmel
from microturn.model import from_pretrained, load_config
from microturn.model.batch import to_batch
from microturn.model.transformer import InteractionModel
from microturn.scenarios.time_awareness import requested_n
from microturn.stream.layout import Layout, MicroTurns
from microturn.train.data import make_episode
from microturn.train.loop import TrainConfig, lr_at, make_optimizer, pad_batch

CLASSES = 21  # N is at most 20 in every category
SETS = {  # name: (split, first seed, augmented)
    "train": ("train", 8_500_000, True),
    "seen voices": ("train", 8_900_000, False),
    "eval": ("eval", 60_000, False),
    "unseen_engine": ("unseen_engine", 60_000, False),
}


class ConvAudioStem(torch.nn.Module):
    """A candidate audio front end, for this experiment only: each 12.5 ms frame through
    its own bag of embeddings, a causal convolution over the stream's frames (`kernel`
    frames, across slot and micro-turn boundaries), then a slot's frames side by side
    into one vector. The model's own stem sums one linear bag over a slot's 4 x 80 bins;
    the classifier in ../shared/notes/measurements.md only began to learn N with a
    convolution over frames. Streaming would keep the last `kernel - 1` frames."""

    def __init__(self, d_model: int, group: int, width: int = 128, kernel: int = 7) -> None:
        super().__init__()
        self.width, self.kernel = width, kernel
        self.frame = torch.nn.EmbeddingBag(dmel.N_MELS * dmel.N_BINS, width, mode="sum")
        offsets = torch.arange(dmel.N_MELS) * dmel.N_BINS
        self.register_buffer("offsets", offsets, persistent=False)
        self.conv = torch.nn.Conv1d(width, width, kernel)
        self.out = torch.nn.Linear(group * width, d_model)

    def forward(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins [B, N, slots, k, 80] -> [B, N, slots, d]."""
        lead, k = bins.shape[:-2], bins.shape[-2]
        idx = bins.reshape(-1, dmel.N_MELS).long() + self.offsets
        frames = self.frame(idx) / dmel.N_MELS**0.5
        seq = frames.view(bins.shape[0], -1, self.width).transpose(1, 2)  # [B, width, T]
        seq = seq + F.gelu(self.conv(F.pad(seq, (self.kernel - 1, 0))))
        return self.out(seq.transpose(1, 2).reshape(*lead, k * self.width))


def cut_request(
    job: tuple[int, str, bool, Layout, int, str],
) -> tuple[MicroTurns, int, str] | None:
    """(the episode up to `margin` micro-turns after the one that hears the request end,
    N, category), or None for a request of another driver (spoken or typed)."""
    seed, split, augment, layout, margin, driver = job
    ep, turns = make_episode("time_awareness", seed, layout, split=split, augment=augment)
    if ep.meta["driver"] != driver:
        return None
    end = next(e for e in ep.events if e.kind == "request_end")
    n = min(layout.input_turn(end.time_s) + 1 + margin, turns.n_turns)
    return turns[:n], requested_n(end), str(end.data["category"])


def make_sets(layout: Layout, sizes: dict[str, int], margin: int, driver: str) -> dict[str, list]:
    out = {}
    with ProcessPoolExecutor(2) as pool:
        for name, (split, first, augment) in SETS.items():
            jobs = [(first + i, split, augment, layout, margin, driver) for i in range(sizes[name])]
            made = pool.map(cut_request, jobs, chunksize=16)
            out[name] = [m for m in tqdm(made, total=len(jobs), desc=name, unit="ep") if m]
    return out


def read_states(model: InteractionModel, examples: list, pool: str) -> torch.Tensor:
    """[E, d]: the state at each example's last micro-turn (`last`: what the model's
    heads read), or the element-wise max of the top layer over every slot of its
    micro-turns (`max`: whether any slot holds the number, however the last one reads)."""
    padded, mask = pad_batch([e[0] for e in examples], model.layout)
    kept: list[torch.Tensor] = []
    hook = model.norm.register_forward_hook(lambda _m, _i, out: kept.append(out))
    context, _, _ = model.encode(to_batch(padded))
    hook.remove()
    if pool == "max":
        top = kept[0].view(len(examples), mask.shape[1], model.layout.slots_per_turn, -1)
        real = torch.from_numpy(mask)[:, :, None, None]
        return top.masked_fill(~real, float("-inf")).amax(dim=(1, 2))
    last = torch.from_numpy(mask.sum(1) - 1)
    return context[torch.arange(len(examples)), last]


@torch.no_grad()
def states_of(model: InteractionModel, examples: list, pool: str) -> torch.Tensor:
    """[E, d]: read_states for many examples, 32 at a time, in eval mode, no graph."""
    model.eval()
    chunks = [read_states(model, examples[i : i + 32], pool) for i in range(0, len(examples), 32)]
    model.train()
    return torch.cat(chunks).float()


@torch.no_grad()
def accuracy(head: torch.nn.Linear, states: torch.Tensor, labels: torch.Tensor) -> dict:
    right = head(states).argmax(-1) == labels
    return {
        "accuracy": round(float(right.float().mean()), 3),
        "most_common": round(float(labels.bincount().max()) / len(labels), 3),
        "n": len(labels),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--init", required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--freeze", action="store_true")
    p.add_argument("--pool", choices=("last", "max"), default="last")
    p.add_argument("--audio-stem", choices=("bag", "conv"), default="bag")
    p.add_argument("--driver", choices=("speech", "text"), default="speech")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--margin", type=int, default=1)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--held-out", type=int, default=240)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    if args.init.startswith("scratch:"):
        model = InteractionModel(load_config(args.init.removeprefix("scratch:")))
    else:
        model = from_pretrained(args.init)
    if args.audio_stem == "conv":  # registered, and called in place of the bag for both tracks
        model.embed.conv_stem = ConvAudioStem(model.cfg.d_model, model.layout.audio_group)
        model.embed.__dict__["audio"] = model.embed.conv_stem
    if not args.cache.exists():
        sizes = {name: args.train if name == "train" else args.held_out for name in SETS}
        made = make_sets(model.layout, sizes, args.margin, args.driver)
        torch.save(made, args.cache.with_suffix(".tmp"))
        args.cache.with_suffix(".tmp").rename(args.cache)  # the other arm may be waiting
    sets = torch.load(args.cache, weights_only=False)
    train = sets.pop("train")

    head = torch.nn.Linear(model.cfg.d_model, CLASSES)
    held_labels = {k: torch.tensor([e[1] for e in v]) for k, v in sets.items()}
    if args.freeze:  # the states never change: read each example once
        model.requires_grad_(False)
        frozen = states_of(model, train, args.pool)
        frozen_held = {k: states_of(model, v, args.pool) for k, v in sets.items()}
    params = [q for q in [*model.parameters(), *head.parameters()] if q.requires_grad]
    opt = make_optimizer(params, args.lr, 0.1)
    schedule = TrainConfig(
        data="", out=str(args.out), steps=args.steps, lr=args.lr, warmup=args.warmup
    )
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "hear-log.jsonl").open("w")
    print(json.dumps({"train": len(train), **{k: len(v) for k, v in sets.items()}}))
    model.train()
    losses, right, started = [], [], time.perf_counter()
    for step in tqdm(range(1, args.steps + 1), desc="train", unit="step"):
        picks = rng.integers(len(train), size=args.batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, schedule)
        if args.freeze:
            states = frozen[picks]
        else:
            states = read_states(model, [train[i] for i in picks], args.pool).float()
        logits = head(states)
        labels = torch.tensor([train[i][1] for i in picks])
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        right += (logits.argmax(-1) == labels).tolist()
        if step % args.eval_every == 0 or step == args.steps:
            held = (
                frozen_held
                if args.freeze
                else {k: states_of(model, v, args.pool) for k, v in sets.items()}
            )
            record = {
                "step": step,
                "loss": round(float(np.mean(losses)), 4),
                "train_accuracy": round(float(np.mean(right)), 3),
                **{k: accuracy(head, held[k], held_labels[k]) for k in sets},
                "s": round(time.perf_counter() - started, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(json.dumps(record))
            losses, right = [], []


if __name__ == "__main__":
    main()

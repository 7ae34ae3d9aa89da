"""How much speech must a model hear before it hears a spoken N on voices it never
heard? A CPU sizing experiment for the GPU run the time-awareness bar needs.

Why: the main model never learned the N of a spoken time-awareness request, neither in
the GPU runs (about 2,600 distinct spoken requests, ~16,000 presentations per arm, by the
mix's proportions) nor with N as its only target (scripts/hear-number.py: 9,600
presentations, chance on every held-out set). The classifier in
../shared/notes/measurements.md learned N from 5,000 utterances of one synthesizer. This
asks it of our data: the requests the time_awareness scenario makes (three synthesizers,
many voices, the training augmentation), a dedicated classifier of the same dMel input,
and held-out voices as the benchmark splits define them. Its learning curve, read against
how many requests the main model was shown, sizes what a GPU run must present.

Data: the request's audio alone (from 0.3 s before its first word to 0.2 s after its
last), from spoken-driver episodes of `TimeAwareness.generate`; training examples
augmented with `augment_audio` (on the request, not the whole episode), held-out ones
clean. Made in worker processes and cached at `--cache`.

Model: each 12.5 ms frame through a bag of embeddings over its 80 channels x 16 bins, a
causal convolution over frames, frames grouped by 4 (the layout's audio slot), a
bidirectional transformer, max pooling, a linear head over N. AdamW, warmup + cosine.

Usage: python scripts/hear-scale.py OUT --cache FILE[,FILE...] [--make E] [--train-from SEED]
[--train-size E] [--steps N]
       python scripts/hear-scale.py plot PNG RUN [RUN ...]   (held-out accuracy per run)
"""

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from microturn.codecs import dmel
from microturn.codecs.audio import SAMPLE_RATE
from microturn.scenarios.time_awareness import TimeAwareness, requested_n
from microturn.train.augment import augment_audio

CLASSES = 16  # N is at most 15
GROUP = 4  # frames per audio slot, as the layout groups them
SETS = {  # name: (split, first seed, augmented)
    "train": ("train", 9_100_000, True),
    "seen voices": ("train", 9_900_000, False),
    "eval": ("eval", 70_000, False),
    "unseen_engine": ("unseen_engine", 70_000, False),
}


def make_request(job: tuple[int, str, bool]) -> tuple[np.ndarray, int, str]:
    """(dMel bins [frames, 80] of the request, N, category)."""
    seed, split, augment = job
    ep = TimeAwareness().generate(seed, split, driver="speech")
    end = next(e for e in ep.events if e.kind == "request_end")
    start = max(0.0, ep.user_speech[0].start_s - 0.3)
    pcm = ep.user_audio[int(start * SAMPLE_RATE) : int((end.time_s + 0.2) * SAMPLE_RATE)]
    if augment:
        pcm = augment_audio(pcm, np.random.default_rng([seed, 11]))
    return dmel.shared_codec().encode(pcm), requested_n(end), str(end.data["category"])


def make_sets(sizes: dict[str, int], workers: int, train_from: int) -> dict[str, list]:
    out = {}
    with ProcessPoolExecutor(workers) as pool:
        for name, (split, first, augment) in SETS.items():
            first += train_from if name == "train" else 0
            jobs = [(first + i, split, augment) for i in range(sizes[name])]
            made = pool.map(make_request, jobs, chunksize=8)
            out[name] = list(tqdm(made, total=len(jobs), desc=name, unit="request"))
    return out


class RequestClassifier(torch.nn.Module):
    """dMel frames -> N. The front end is the one that got the notes' classifier moving
    (a convolution over frames, max pooling); the rest is a small transformer."""

    def __init__(self, d_model: int = 192, layers: int = 4, width: int = 96) -> None:
        super().__init__()
        self.width = width
        # a bag of embeddings over (channel, bin), written as one-hot times a matrix:
        # the same sum, ~10x faster on CPU than EmbeddingBag's backward at this size
        self.frame = torch.nn.Linear(dmel.N_MELS * dmel.N_BINS, width, bias=False)
        torch.nn.init.normal_(self.frame.weight)  # as an embedding table is
        self.conv = torch.nn.Conv1d(width, width, 7)
        self.slot = torch.nn.Linear(GROUP * width, d_model)
        self.position = torch.nn.Embedding(512, d_model)
        block = torch.nn.TransformerEncoderLayer(
            d_model, 4, 4 * d_model, dropout=0.1, batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d_model, CLASSES)

    def forward(self, bins: torch.Tensor, slots_real: torch.Tensor) -> torch.Tensor:
        """bins [B, slots * 4, 80] (uint8), slots_real [B, slots] (bool) -> logits."""
        b, frames = bins.shape[:2]
        hot = F.one_hot(bins.long(), dmel.N_BINS).float().view(b, frames, -1)
        seq = (self.frame(hot) / dmel.N_MELS**0.5).transpose(1, 2)
        seq = seq + F.gelu(self.conv(F.pad(seq, (6, 0))))
        slots = self.slot(seq.transpose(1, 2).reshape(b, frames // GROUP, GROUP * self.width))
        slots = slots + self.position(torch.arange(slots.shape[1]))
        top = self.blocks(slots, src_key_padding_mask=~slots_real)
        return self.head(top.masked_fill(~slots_real[..., None], float("-inf")).amax(1))


def batch_of(examples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    slots = max(math.ceil(len(e[0]) / GROUP) for e in examples)
    bins = np.zeros((len(examples), slots * GROUP, dmel.N_MELS), np.uint8)
    real = np.zeros((len(examples), slots), bool)
    for i, (b, _, _) in enumerate(examples):
        bins[i, : len(b)] = b
        real[i, : math.ceil(len(b) / GROUP)] = True
    labels = torch.tensor([e[1] for e in examples])
    return torch.from_numpy(bins), torch.from_numpy(real), labels


@torch.no_grad()
def accuracy(model: RequestClassifier, examples: list) -> dict:
    model.eval()
    right = []
    for i in range(0, len(examples), 64):
        bins, real, labels = batch_of(examples[i : i + 64])
        right += (model(bins, real).argmax(-1) == labels).tolist()
    model.train()
    counts = np.bincount([e[1] for e in examples])
    return {
        "accuracy": round(float(np.mean(right)), 3),
        "most_common": round(float(counts.max()) / len(examples), 3),
        "n": len(examples),
    }


def plot(png: Path, runs: list[Path]) -> None:
    """Held-out accuracy against requests presented, one line per run, one panel per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in SETS if name != "train"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), sharey=True)
    for run in runs:
        log = [json.loads(line) for line in (run / "scale-log.jsonl").open()]
        for ax, name in zip(axes, names, strict=True):
            x = [r["presented"] / 1000 for r in log]
            ax.plot(x, [r[name]["accuracy"] for r in log], marker="o", label=run.name)
    for ax, name in zip(axes, names, strict=True):
        ax.axhline(log[0][name]["most_common"], color="grey", ls="--", lw=1, label="most common N")
        ax.set(title=name, xlabel="requests presented (thousands)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy of N")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "plot":
        plot(Path(sys.argv[2]), [Path(r) for r in sys.argv[3:]])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument(
        "--cache",
        required=True,
        help="FILE[,FILE...]: training requests of all, held-out sets of the first",
    )
    p.add_argument(
        "--train-from", type=int, default=0, help="a missing cache's training seeds start here"
    )
    p.add_argument("--make", type=int, default=6000, help="training requests to make")
    p.add_argument("--held-out", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-size", type=int, default=0, help="use the first E (0: all)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    caches = [Path(c) for c in args.cache.split(",")]
    if sum(not c.exists() for c in caches) > 1:  # they would be made from the same seeds
        sys.exit("make one missing cache at a time (each with its own --train-from)")
    for cache in caches:
        if not cache.exists():
            sizes = {name: args.make if name == "train" else args.held_out for name in SETS}
            made = make_sets(sizes, args.workers, args.train_from)
            torch.save(made, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").rename(cache)
    sets = torch.load(caches[0], weights_only=False)
    train = sets.pop("train")
    for cache in caches[1:]:
        train += torch.load(cache, weights_only=False)["train"]
    train = train[: args.train_size or len(train)]

    torch.manual_seed(args.seed)
    model = RequestClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "scale-log.jsonl").open("w")
    params = sum(q.numel() for q in model.parameters())
    print(
        json.dumps({"train": len(train), "params": params, **{k: len(v) for k, v in sets.items()}})
    )
    losses, right, started = [], [], time.perf_counter()
    for step in tqdm(range(1, args.steps + 1), desc="train", unit="step"):
        # this script's own schedule, not train.loop.lr_at: every arm in docs/benchmarks.md
        # ran with it, and a rerun of their commands must give their figures
        warm = min(1.0, step / args.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = args.lr * warm * (0.1 + 0.9 * cosine)
        bins, real, labels = batch_of([train[i] for i in rng.integers(len(train), size=args.batch)])
        logits = model(bins, real)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        right += (logits.argmax(-1) == labels).tolist()
        if step % args.eval_every == 0 or step == args.steps:
            record = {
                "step": step,
                "presented": step * args.batch,
                "loss": round(float(np.mean(losses)), 4),
                "train_accuracy": round(float(np.mean(right)), 3),
                **{k: accuracy(model, v) for k, v in sets.items()},
                "s": round(time.perf_counter() - started, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(json.dumps(record))
            losses, right = [], []


if __name__ == "__main__":
    main()

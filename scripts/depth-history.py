"""Does the depth decoder need the previous micro-turn's outputs? Two fresh depth
decoders, one without and one with `output_history`, trained side by side on the same
fixed main model's states (`InteractionModel.encode`, computed once), on the same
batches; each one's teacher-forced text accuracy (inside messages) and audio NLL (where
the reference speaks) per slot of the micro-turn, on an evaluation set.

Why this way: the question is about the depth decoder's input, and a fixed main model
makes it cheap (no main-model forward per step: a CPU answers it in minutes) and fair
(both arms start from scratch; a history grown on a trained depth decoder starts
behind). The main model was trained without a history, so its states carry what the
depth decoder needed then: the gap is a lower bound on what a model trained with one
from scratch gains.

Usage: python scripts/depth-history.py MODEL SHARDS EVAL_SET [--shards N] [--steps N]
[--onset-weight W] [--only-history --save DIR] [--init-depth CKPT --lr LR --seed S]
(SHARDS: a microturn data DIR/train; its first N shards, default 5; steps default 1000,
batches of 256 micro-turns; W weighs the micro-turns where the model starts writing as
`microturn train` does, default 0. `--only-history --save DIR` trains only the arm with
the history and writes it, on MODEL's main model, as a checkpoint folder: a candidate to
benchmark. `--init-depth CKPT` starts the history arm from CKPT's depth decoder, one
trained with the history on the same main model, e.g. an earlier --save: a stopped
training continues (a fresh cosine from LR, default 3e-3; draw other batches with
--seed).)
"""

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from microturn.model import from_pretrained, save_pretrained
from microturn.model.batch import to_batch
from microturn.model.loss import per_slot_losses
from microturn.model.sampling import between_before
from microturn.model.transformer import InteractionModel, Logits
from microturn.train.data import load_shard
from microturn.train.evaluate import load_eval_set, slot_tally
from microturn.train.loop import onset_turns

BATCH_TURNS = 256
LR = 3e-3
REPORTS = 4


@torch.no_grad()
def states(model: InteractionModel, episodes: list) -> dict[str, torch.Tensor]:
    """Per micro-turn of every episode: main-model state, written outputs (and the
    previous micro-turn's), targets, and whether a text slot is inside a message."""
    rows: dict[str, list[torch.Tensor]] = {}
    for turns in episodes:
        batch = to_batch([turns])
        context, written, _ = model.encode(batch)
        parts = {
            "context": context[0].half(),
            "written": written[0].half(),
            "before": written.roll(1, dims=1)[0].half(),
            "first": torch.arange(turns.n_turns) == 0,
            "inside": ~between_before(batch["model_text"])[0],
            "onset": onset_turns(batch)[0],
            **{k: batch[k][0] for k in ("model_action", "model_text", "model_audio")},
        }
        for k, v in parts.items():
            rows.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in rows.items()}


def logits_of(arm: InteractionModel, data: dict[str, torch.Tensor], idx: torch.Tensor):
    """The arm's depth decoder on micro-turns `idx` (each with its own history)."""
    context, written = data["context"][idx].float(), data["written"][idx].float()
    history = arm._output_history(data["before"][idx].float(), data["first"][idx])
    hidden = arm.depth.hidden(context, written[:, :-1], history)
    return arm.depth.logits(hidden)


def targets(data: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: data[k][idx] for k in ("model_action", "model_text", "model_audio")}


@torch.no_grad()
def report(name: str, arm: InteractionModel, data: dict[str, torch.Tensor]) -> None:
    total: dict[str, torch.Tensor] = {}
    n = data["context"].shape[0]
    for lo in range(0, n, 2048):
        idx = torch.arange(lo, min(n, lo + 2048))
        logits = Logits(**logits_of(arm, data, idx))
        tally = slot_tally(logits, targets(data, idx), data["inside"][idx])
        total = {k: total.get(k, 0) + v for k, v in tally.items()}
    acc = " ".join(f"{x:.3f}" for x in (total["text_right"] / total["text_n"]).tolist())
    nll = " ".join(f"{x:.3f}" for x in (total["audio_nll"] / total["audio_n"]).tolist())
    print(f"{name}: text accuracy per slot {acc} | audio NLL per slot {nll}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python scripts/depth-history.py")
    p.add_argument("model", type=Path)
    p.add_argument("shards", type=Path, help="a microturn data DIR/train")
    p.add_argument("eval_set", type=Path)
    p.add_argument("--shards", dest="shard_files", type=int, default=5)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--only-history", action="store_true", help="skip the arm without it")
    p.add_argument("--save", type=Path, help="write the history arm here (a checkpoint)")
    p.add_argument(
        "--onset-weight",
        type=float,
        default=0.0,
        help="extra loss weight where the model starts writing, as in microturn train "
        "(0: every micro-turn alike, as this script first ran)",
    )
    p.add_argument("--init-depth", type=Path, help="start from this checkpoint's depth decoder")
    p.add_argument("--lr", type=float, default=LR, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="which batches are drawn")
    args = p.parse_args()
    model = from_pretrained(args.model).eval()
    if model.onset_clock is not None:
        # these probes run the depth decoder on cached states, without the count it reads
        raise SystemExit(f"{args.model} has an onset clock, which this script does not feed")
    start = depth_of(args.init_depth, model) if args.init_depth else None
    shards = sorted(args.shards.glob("shard-*.npz"))[: args.shard_files]
    started = time.perf_counter()
    train = states(model, [turns for s in shards for _, turns in load_shard(s, model.layout)])
    held = states(model, [turns for _, turns in load_eval_set(args.eval_set, model.layout)])
    print(
        f"states of {train['context'].shape[0]} training and {held['context'].shape[0]} "
        f"evaluation micro-turns in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    report(f"{args.model} as trained", model, held)
    for history in (True,) if args.only_history else (False, True):
        arm = train_arm(
            model,
            history,
            train,
            held,
            args.steps,
            args.onset_weight,
            start=start if history else None,
            lr=args.lr,
            seed=args.seed,
        )
        if history and args.save:
            save_pretrained(arm.eval(), args.save)
            print(f"wrote {args.save}", flush=True)


def depth_of(path: Path, model: InteractionModel) -> dict[str, torch.Tensor]:
    """The depth decoder of checkpoint `path`, checked to sit on `model`'s main model:
    a decoder trained on other states would continue from the wrong place."""
    other = from_pretrained(path)
    if not other.cfg.output_history:
        raise SystemExit(f"{path}: its depth decoder has no output history")
    ours, theirs = model.state_dict(), other.state_dict()
    main = [k for k in ours if not k.startswith("depth.")]
    if any(k not in theirs or not torch.equal(ours[k], theirs[k]) for k in main):
        raise SystemExit(f"{path}: its main model differs from MODEL's")
    return {k: v for k, v in theirs.items() if k.startswith("depth.")}


def train_arm(
    model: InteractionModel,
    history: bool,
    train: dict[str, torch.Tensor],
    held: dict[str, torch.Tensor],
    steps: int,
    onset_weight: float = 0.0,
    start: dict[str, torch.Tensor] | None = None,
    lr: float = LR,
    seed: int = 0,
) -> InteractionModel:
    """A depth decoder (with or without the history) under `model`'s frozen main model,
    fresh or from `start`, trained on the cached states; reported REPORTS times on
    `held`. Each micro-turn's loss weighs 1, or 1 + onset_weight where the model starts
    writing."""
    torch.manual_seed(1)  # the model's own initialization, the same in both arms
    arm = InteractionModel(replace(model.cfg, output_history=history))
    main = {k: v for k, v in model.state_dict().items() if not k.startswith("depth.")}
    arm.load_state_dict(main | (start or {}), strict=start is not None)
    arm.requires_grad_(False)
    params = list(arm.depth.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    draw = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * warm * cosine
        idx = torch.randint(0, train["context"].shape[0], (BATCH_TURNS,), generator=draw)
        per = per_slot_losses(Logits(**logits_of(arm, train, idx)), targets(train, idx))
        weight = 1 + onset_weight * train["onset"][idx].float()
        loss = sum((v.flatten(1).mean(1) * weight).sum() / weight.sum() for v in per.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % max(1, steps // REPORTS) == 0:
            took = time.perf_counter() - started
            report(f"history={history} step {step + 1} ({took:.0f} s)", arm.eval(), held)
            arm.train()
    return arm


if __name__ == "__main__":
    main()

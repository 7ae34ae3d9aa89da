"""`python -m microturn.train DATA OUT [--steps N] ...`: train on prepared shards."""

from __future__ import annotations

import argparse
import json

from microturn.train.loop import TrainConfig, train


def main(argv: list[str] | None = None, prog: str = "python -m microturn.train") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train the interaction model on prepared shards (microturn data). "
        "Under torchrun --nproc_per_node N, N processes train with DDP.",
    )
    p.add_argument("data", help="shard folder (microturn data); several: A,B")
    p.add_argument("out")
    defaults = TrainConfig(data="", out="")
    for name in (
        "preset",
        "steps",
        "batch",
        "lr",
        "warmup",
        "seed",
        "device",
        "log_every",
        "save_every",
        "time_limit_s",
        "onset_weight",
        "floor_weight",
        "eval_data",
        "eval_every",
        "init",
        "scenarios",
        "clock_octaves",
        "output_history",
        "onset_clock_turns",
        "train_only",
        "length_window",
    ):
        value = getattr(defaults, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument(
        "--grow-data",
        action="store_true",
        help="the data folders are still being written: new shards join at log steps",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard weights, gradients and optimizer state (FSDP), not DDP",
    )
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k != "resume"})
    result = train(cfg, resume=args.resume)
    print(
        json.dumps(
            {
                "steps": result["steps"],
                "tokens_per_s": result["tokens_per_s"],
                "last": result["log"][-1] if result["log"] else None,
                "best": result["best"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

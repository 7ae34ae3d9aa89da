"""A run's best and last checkpoints in float16, each cut into two parts (the device
machine returns files of at most 16 MiB; the tiny preset is ~17 MiB in float16).
Usage: pack-checkpoint.py RUN OUT [best] [last] (default: both)."""

import shutil
import sys
from pathlib import Path

import torch

from microturn.model import from_pretrained, save_pretrained

run, out = Path(sys.argv[1]), Path(sys.argv[2])
wanted = set(sys.argv[3:]) or {"best", "last"}
for name, src in (("best", run / "best"), ("last", run)):
    if name not in wanted or not (src / "model.safetensors").is_file():
        continue
    dst = out / name
    save_pretrained(from_pretrained(src), dst, dtype=torch.float16)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").unlink()
    half = len(data) // 2 + 1
    (dst / "part0").write_bytes(data[:half])
    (dst / "part1").write_bytes(data[half:])
    for extra in ("eval.json", "log.jsonl"):
        if (src / extra).is_file():
            shutil.copy(src / extra, dst / extra)
    print("packed", name, len(data), "bytes")

"""`microturn bench model`: parameter counts, streaming step time, training throughput."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from microturn.bench.report import machine, markdown_table, write_report
from microturn.model import (
    PRESETS,
    InteractionModel,
    ModelConfig,
    count_parameters,
    output_losses,
    to_batch,
)
from microturn.model.batch import INPUT_KEYS
from microturn.stream.layout import Layout, MicroTurns

MEASURED = ("tiny", "small")  # the others are counted on the meta device only
COLUMNS = [
    "preset",
    "params_total",
    "params_active",
    "step_ms_p50_1",
    "step_ms_p99_1",
    "step_ms_p50_8",
    "step_ms_p99_8",
    "train_tokens_per_s",
]


def random_turns(layout: Layout, n: int, seed: int) -> MicroTurns:
    """Inputs with the statistics of real ones do not change the cost; random ones do."""
    rng = np.random.default_rng(seed)
    mt = MicroTurns.empty(layout, n)
    mt.user_audio[:] = rng.integers(0, 16, mt.user_audio.shape)
    mt.model_audio[:] = rng.integers(0, 16, mt.model_audio.shape)
    mt.user_video[:] = rng.integers(0, 256, mt.user_video.shape)
    mt.user_video_present[:] = True
    mt.user_text[:] = rng.integers(0, 256, mt.user_text.shape)
    mt.model_text[:] = rng.integers(0, 256, mt.model_text.shape)
    return mt


def step_times(
    model: InteractionModel, streams: int, warmup: int, turns: int
) -> tuple[float, float]:
    """p50 / p99 wall time (ms) of one micro-turn step for `streams` streams at once,
    after `warmup` micro-turns of context."""
    lay = model.layout
    batch = to_batch([random_turns(lay, warmup + turns, s) for s in range(streams)])
    state = model.new_state(streams)
    times = []
    for t in range(warmup + turns):
        inputs = {k: batch[k][:, t : t + 1] for k in INPUT_KEYS}
        start = time.perf_counter()
        model.step(state, inputs)
        if t >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def train_throughput(model: InteractionModel, batch_size: int, turns: int, iters: int) -> float:
    """Tokens (slots) per second of forward + backward + AdamW step."""
    lay = model.layout
    batch = to_batch([random_turns(lay, turns, s) for s in range(batch_size)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    elapsed = 0.0
    for i in range(iters + 1):
        start = time.perf_counter()
        logits, aux = model(batch)
        loss = sum(output_losses(logits, batch).values()) + model.cfg.aux_loss_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first iteration warms up allocators
            elapsed += time.perf_counter() - start
    model.eval()
    return batch_size * turns * lay.slots_per_turn * iters / elapsed


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    rows = []
    settings = {
        "step_warmup_turns": 10 if quick else 50,
        "step_turns": 10 if quick else 50,
        "train_batch": {"tiny": 4, "small": 1},
        "train_turns": 24 if quick else 48,
        "train_iters": 1 if quick else 3,
    }
    for name in tqdm(list(PRESETS), desc="presets", unit="preset"):
        cfg = ModelConfig.preset(name)
        device = "cpu" if name in MEASURED else "meta"
        with torch.device(device):
            model = InteractionModel(cfg)
        total, active = count_parameters(model)
        row: dict[str, Any] = {
            "preset": name,
            "params_total": total,
            "params_active": active,
            "slots_per_turn": cfg.layout.slots_per_turn,
        }
        if name in MEASURED:
            model.eval()
            for streams in (1, 8):
                p50, p99 = step_times(
                    model, streams, settings["step_warmup_turns"], settings["step_turns"]
                )
                row[f"step_ms_p50_{streams}"] = p50
                row[f"step_ms_p99_{streams}"] = p99
            row["train_tokens_per_s"] = train_throughput(
                model,
                settings["train_batch"][name],
                settings["train_turns"],
                settings["train_iters"],
            )
        rows.append(row)
    data = {"machine": machine(), "settings": settings, "presets": rows}
    table = markdown_table(rows, COLUMNS)
    write_report(out, "model", data, table)
    return data

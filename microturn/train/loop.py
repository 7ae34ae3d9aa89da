"""The training loop: AdamW with warmup + cosine decay, gradient clipping, the MoE
balance loss, loss per head and per scenario, a progress bar with tokens/s, atomic
checkpoints and exact resume. CPU in float32; CUDA with bf16 autocast."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from microturn.model import InteractionModel, ModelConfig, save_pretrained, to_batch
from microturn.model.checkpoint import from_pretrained
from microturn.model.loss import per_sample_losses
from microturn.stream.layout import MicroTurns
from microturn.train.data import load_shard

TRAINER_FILE = "trainer.pt"


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "tiny"
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    save_every: int = 250
    time_limit_s: float = 0.0  # stop (and save) after this much wall time; 0 = no limit
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"model_action": 1.0, "model_text": 1.0, "model_audio": 1.0}
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def pad_batch(episodes: list[MicroTurns], layout: Any) -> tuple[list[MicroTurns], np.ndarray]:
    """Episodes padded (at the end, with empty micro-turns) to the longest; the mask
    says which turns are real. Causal attention keeps padding out of earlier turns."""
    n = max(e.n_turns for e in episodes)
    mask = np.zeros((len(episodes), n), bool)
    padded = []
    for i, e in enumerate(episodes):
        mask[i, : e.n_turns] = True
        if e.n_turns < n:
            e = MicroTurns.concat([e, MicroTurns.empty(layout, n - e.n_turns)])
        padded.append(e)
    return padded, mask


def train(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = ModelConfig.preset(cfg.preset)
    shards = sorted(Path(cfg.data).glob("shard-*.npz"))
    if not shards:
        raise ValueError(f"no shards (shard-*.npz) in {cfg.data}")
    data = [x for p in shards for x in load_shard(p, model_cfg.layout)]
    torch.manual_seed(cfg.seed)
    step = 0
    if resume and (out / TRAINER_FILE).is_file():
        model = from_pretrained(out, device=device)
        state = torch.load(out / TRAINER_FILE, map_location=device, weights_only=False)
        step = state["step"]
    else:
        with torch.device(device):
            model = InteractionModel(model_cfg)
        state = None
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    rng = np.random.default_rng(cfg.seed)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
    model.train()
    log: list[dict[str, Any]] = []
    slots = model_cfg.layout.slots_per_turn
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    tokens, started = 0, time.perf_counter()
    while step < cfg.steps:
        picks = rng.integers(len(data), size=cfg.batch)
        episodes, mask = pad_batch([data[i][1] for i in picks], model_cfg.layout)
        batch = to_batch(episodes, device)
        turn_mask = torch.from_numpy(mask).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, aux = model(batch)
        per = per_sample_losses(logits, batch, turn_mask)
        losses = {k: v.mean() for k, v in per.items()}
        loss = sum(cfg.loss_weights[k] * v for k, v in losses.items())
        loss = loss + model_cfg.aux_loss_weight * aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        step += 1
        tokens += int(mask.sum()) * slots
        rate = tokens / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{rate:,.0f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            total = sum(cfg.loss_weights[k] * v for k, v in per.items()).detach().cpu()
            by_scenario: dict[str, list[float]] = {}
            for i, p in enumerate(picks):
                by_scenario.setdefault(data[p][0], []).append(float(total[i]))
            log.append(
                {
                    "step": step,
                    "lr": lr_at(step - 1, cfg),
                    "loss": loss.item(),
                    "aux": aux.item(),
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": rate,
                    **{k: v.item() for k, v in losses.items()},
                    "by_scenario": {k: float(np.mean(v)) for k, v in by_scenario.items()},
                }
            )
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(log[-1]) + "\n")
        out_of_time = cfg.time_limit_s and time.perf_counter() - started > cfg.time_limit_s
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            save_checkpoint(model, opt, rng, step, cfg, out)
        if out_of_time:
            break
    bar.close()
    return {"steps": step, "log": log, "tokens_per_s": tokens / (time.perf_counter() - started)}


def save_checkpoint(
    model: InteractionModel,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    step: int,
    cfg: TrainConfig,
    out: Path,
) -> None:
    """Weights + config (loadable by from_pretrained) and the trainer state, atomically."""
    save_pretrained(model, out)
    tmp = out / (TRAINER_FILE + ".tmp")
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "step": step,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(cfg),
        },
        tmp,
    )
    os.replace(tmp, out / TRAINER_FILE)

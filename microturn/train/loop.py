"""The training loop: AdamW with warmup + cosine decay, gradient clipping, the MoE
balance loss, loss per head and per scenario, a progress bar with tokens/s, periodic
free-running evaluation by scenario scores (keeping the best checkpoint), atomic
checkpoints and exact resume. CPU in float32; CUDA with bf16 autocast.

Scale-out: under `torchrun --nproc_per_node N` every process trains a slice of each
global batch with DistributedDataParallel (gloo on CPU, NCCL on CUDA); every process
draws the same global batch from the same generator, so a resumed run continues the same
data order whatever the process count was (per-batch augmentation continues exactly only
for a single process: each process has its own generator, and only process 0's is saved);
process 0 logs, evaluates and writes checkpoints. With `--fsdp` each transformer block and
the model are sharded across the processes instead (FSDP2 `fully_shard`): every process
holds a slice of the weights, gradients and optimizer state, and checkpoints gather the
full weights, so what is saved loads anywhere.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from microturn.codecs.text import Special
from microturn.model import (
    InteractionModel,
    ModelConfig,
    SamplingConfig,
    save_pretrained,
    to_batch,
)
from microturn.model.checkpoint import from_pretrained
from microturn.model.loss import per_slot_losses, slot_mean
from microturn.model.sampling import between_before, text_onsets
from microturn.scenarios.scoring import headline
from microturn.stream.layout import MicroTurns, Track
from microturn.train.augment import augment_batch
from microturn.train.data import load_shard
from microturn.train.evaluate import evaluate, load_eval_set

TRAINER_FILE = "trainer.pt"
# trainer.pt's optimizer state keyed by parameter name, whole (what --fsdp saves: any
# process count, sharded or not, resumes from it); otherwise torch's by-index form
FULL_OPTIMIZER = "full_by_name"
BEST_DIR = "best"


@dataclass
class TrainConfig:
    data: str  # a shard folder, or several separated by commas (their union)
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
    # > 0: stop (and save) after this much wall time (checked at log steps); the cosine
    # then runs on whichever ends first, the steps or the time, so a run cut by its time
    # limit still ends at the low learning rate instead of mid-schedule
    time_limit_s: float = 0.0
    onset_weight: float = 10.0  # extra weight of the text/action loss where speech starts
    # > 0: the text head's decisions to start a message or keep quiet get this weight,
    # every decision alike and outside the onset weighting, so the model's odds of
    # starting stay calibrated (onset weighting alone multiplies them by 1 + onset_weight).
    # 0: decisions weigh as the rest of their micro-turn (the shipped models' loss).
    floor_weight: float = 0.0
    eval_data: str = ""  # an evaluation set (train.evaluate); "" = no evaluation
    eval_every: int = 500
    augment: bool = True  # per-batch augmentation (level shift, camera noise)
    init: str = ""  # start from this trained model's weights (fresh optimizer, schedule)
    scenarios: str = ""  # comma-separated: train on these scenarios' episodes only; "" = all
    # -1: the clock the preset (or the --init model) has; otherwise this many octaves
    # (an --init model grows a clock that starts at zero: see InteractionModel.grow)
    clock_octaves: int = -1
    # -1: as the preset (or the --init model) has; 1: the depth decoder reads the previous
    # micro-turn's output slots (ModelConfig.output_history); 0: it does not
    output_history: int = -1
    # -1: as the preset (or the --init model) has; N: the depth decoder reads the
    # micro-turns since the model's last message start, counted up to N
    # (ModelConfig.onset_clock_turns; an --init model grows one at zero); 0: it does not
    onset_clock_turns: int = -1
    # Comma-separated parameter-name prefixes ("depth"): only those train, the rest stays
    # as --init left it (a part grown on a trained model learns without moving the
    # rest, and a frozen main model needs no backward pass). "" = everything trains.
    train_only: str = ""
    length_window: int = 4  # batch from episodes this many batches wide in length order; 0 = any
    # The data folders are still being written (`microturn data` running beside, e.g. on
    # a GPU machine's idle cores): shards that appear join the training set at log steps,
    # so a run sees fresh episodes instead of repeating the first ones. A folder may
    # then start empty.
    grow_data: bool = False
    # Under torchrun: shard weights, gradients and optimizer state across the processes
    # (FSDP) instead of replicating them (DDP), for presets too large for one device.
    fsdp: bool = False
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"model_action": 1.0, "model_text": 1.0, "model_audio": 1.0}
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "log_every", "save_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.floor_weight < 0:
            raise ValueError(f"floor_weight must be >= 0, got {self.floor_weight}")
        if self.output_history not in (-1, 0, 1):
            raise ValueError(f"output_history must be -1, 0 or 1, got {self.output_history}")
        if self.length_window < 0:
            raise ValueError(f"length_window must be >= 0, got {self.length_window}")
        if self.fsdp and self.eval_data:
            raise ValueError(
                "--fsdp trains without in-loop evaluation (it would need every process); "
                "evaluate the saved checkpoint: python -m microturn.train.evaluate RUN SET"
            )

    def scenario_names(self) -> set[str]:
        return {s.strip() for s in self.scenarios.split(",") if s.strip()}


def lr_at(step: int, cfg: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warmup, then cosine to min_lr_ratio; time_used (the share of the time
    limit spent) moves the cosine on when it is ahead of the steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_used)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW as nanoGPT sets it up: weight decay on matrices and embeddings only (decaying
    norms' gains and biases pulls them to zero for nothing), betas (0.9, 0.95)."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
        fused=fused,
    )


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


def draw_batch(
    rng: np.random.Generator, by_length: np.ndarray, size: int, window: int
) -> np.ndarray:
    """Indices of `size` episodes. window = 0: uniform. Otherwise `size` of a random run of
    `window * size` neighbours in length order (`by_length` = argsort of the lengths):
    batches pad to their longest episode, and similar lengths waste little compute on
    padding (real turns per padded turn 0.64 -> 0.92 on the default mix). The order is
    taken as a ring, so every episode is drawn equally often."""
    n = len(by_length)
    if not window:
        return rng.integers(n, size=size)
    span = min(n, window * size)
    return by_length[(rng.integers(n) + rng.integers(span, size=size)) % n]


def onset_turns(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, N] True where the model starts writing (text after a silent micro-turn, or an
    action): the rare moments that carry timing, weighted up in the loss."""
    acting = (batch["model_action"] != int(Special.PAD)).any(-1)
    return text_onsets(batch["model_text"]) | acting


def weighted_losses(
    logits: Any, batch: dict[str, torch.Tensor], turn_mask: torch.Tensor, cfg: TrainConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(per head over the batch, per head per sequence [B]), each kept turn weighted 1
    and onsets 1 + onset_weight (the packer writes an utterance's first text in the
    micro-turn where its sound starts, so the text head makes the decision). With
    floor_weight > 0 the text head's decisions (`between_before`) leave that weighting:
    they are averaged over every kept turn alike and added with weight floor_weight."""
    per_slot = per_slot_losses(logits, batch)
    per_turn = {k: slot_mean(v) for k, v in per_slot.items()}
    onsets = onset_turns(batch).to(turn_mask.dtype)
    kept = turn_mask.float()
    w = kept * (1 + cfg.onset_weight * onsets.float())
    parts = {name: [(per, w)] for name, per in per_turn.items()}  # (loss, weights) to average
    if cfg.floor_weight > 0:
        text = Track.MODEL_TEXT.value
        # the decisions' share of each turn's slot mean, moved out of the onset weighting
        decisions = slot_mean(per_slot[text] * between_before(batch[text]))
        parts[text] = [(per_turn[text] - decisions, w), (cfg.floor_weight * decisions, kept)]
    batch_losses = {k: sum(_mean(x, m, (0, 1)) for x, m in p) for k, p in parts.items()}
    per_sample = {k: sum(_mean(x, m, 1) for x, m in p).detach() for k, p in parts.items()}
    return batch_losses, per_sample


def _mean(x: torch.Tensor, weights: torch.Tensor, dims: int | tuple[int, ...]) -> torch.Tensor:
    return (x * weights).sum(dims) / weights.sum(dims).clamp(min=1)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    rank, world, local_rank = _distributed()
    if cfg.fsdp and world < 2:
        raise ValueError("--fsdp shards across processes: run it under torchrun --nproc_per_node N")
    use_cuda = torch.cuda.is_available() if cfg.device == "auto" else cfg.device.startswith("cuda")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    lead = rank == 0
    out = Path(cfg.out)
    if resume and not (out / TRAINER_FILE).is_file():
        raise ValueError(f"--resume: {out} holds no {TRAINER_FILE}; nothing to resume")
    out.mkdir(parents=True, exist_ok=True)
    # The parts asked for on the command line: a fresh model is built with them, an
    # --init model grows them.
    parts: dict[str, Any] = {}
    if cfg.clock_octaves >= 0:
        parts["clock_octaves"] = cfg.clock_octaves
    if cfg.output_history >= 0:
        parts["output_history"] = bool(cfg.output_history)
    if cfg.onset_clock_turns >= 0:
        parts["onset_clock_turns"] = cfg.onset_clock_turns
    model_cfg = replace(ModelConfig.preset(cfg.preset), **parts)
    wanted = cfg.scenario_names()
    state = None
    if resume:
        try:
            state = torch.load(out / TRAINER_FILE, map_location="cpu", weights_only=False)
        except Exception as err:  # a cut-off or foreign file: pickle, zip or EOF errors
            raise ValueError(f"{out / TRAINER_FILE}: corrupt trainer state ({err})") from err
    # A resumed growing run (only those record their shards) reloads the shards it had,
    # in the order it had them, so its batches are the ones it would have drawn, then
    # picks up what came since; any other run takes the folders as they are now.
    # Process 0's listing is everyone's.
    if state is not None and "shards" in state:
        shards = [(int(i), str(name)) for i, name in state["shards"]]
    else:
        shards = _agree_object(_new_shards(cfg.data, [], allow_empty=cfg.grow_data), device)
    paths = _shard_paths(cfg.data, shards)
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{p}: a shard this run trained on is gone; cannot resume exactly")
    data = _load_episodes(paths, model_cfg.layout, wanted)
    if not data:
        what = f"episodes of {cfg.scenarios}" if wanted else "shards (shard-*.npz)"
        raise ValueError(f"no {what} in {cfg.data}")
    by_length = np.argsort([turns.n_turns for _, turns in data], kind="stable")
    eval_set = load_eval_set(Path(cfg.eval_data), model_cfg.layout) if cfg.eval_data else None
    torch.manual_seed(cfg.seed)
    step, best = 0, None
    if resume:
        model = from_pretrained(out, device=device)
        step, best = state["step"], state.get("best")
    elif cfg.init:
        # Fine-tuning: the weights (and the model config they need) come from `init`;
        # the optimizer, schedule and data order start fresh.
        model = from_pretrained(Path(cfg.init), device=device)
        if model.cfg.layout != model_cfg.layout:
            raise ValueError(f"--init {cfg.init}: its layout differs from preset {cfg.preset!r}")
        model = model.grow(**parts)
        model_cfg = model.cfg
    else:
        with torch.device(device):
            model = InteractionModel(model_cfg)
    # Training, its evaluations and what it saves use the default sampling: a calibration
    # (bench calibrate) fits one set of weights, so it comes after training, not from
    # `init` or a resumed run.
    model.sampling = SamplingConfig()
    # Freeze before DDP wraps the model: it registers the parameters that need gradients.
    prefixes = tuple(f"{x.strip()}." for x in cfg.train_only.split(",") if x.strip())
    if prefixes:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(prefixes))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"--train-only {cfg.train_only}: no parameter has that prefix")
    net: torch.nn.Module = model
    if cfg.fsdp:
        if state is not None and state.get("optimizer_format") != FULL_OPTIMIZER:
            raise ValueError(f"{out} was saved without --fsdp: resume it without --fsdp")
        if use_cuda:
            torch.cuda.set_device(device)
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)  # the rest: embeddings, norms, the depth decoder
    elif world > 1:
        net = DistributedDataParallel(
            model,
            device_ids=[local_rank] if use_cuda else None,
            find_unused_parameters=model_cfg.ffn == "moe",  # an expert may get no tokens
        )
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trained, cfg.lr, cfg.weight_decay, fused=use_cuda)
    rng = np.random.default_rng(cfg.seed)
    aug = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    if state is not None and state.get("optimizer_format") == FULL_OPTIMIZER:
        set_optimizer_state_dict(
            model, opt, state["optimizer"], options=StateDictOptions(full_state_dict=True)
        )
    elif state is not None:
        opt.load_state_dict(state["optimizer"])
    if state is not None:
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if "aug_rng" in state and world == 1:
            aug.set_state(state["aug_rng"])
    model.train()
    log: list[dict[str, Any]] = []
    slots = model_cfg.layout.slots_per_turn
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not lead)
    tokens, started = 0, time.perf_counter()
    if lead and cfg.grow_data:  # what the run starts from; later records say what came
        _append(out, {"step": step, "shards": len(shards), "episodes": len(data)})
    time_used = 0.0  # share of the time limit spent, as process 0 last read it
    while step < cfg.steps:
        everyone = draw_batch(rng, by_length, cfg.batch * world, cfg.length_window)
        picks = everyone[rank * cfg.batch :][: cfg.batch]
        episodes, mask = pad_batch([data[i][1] for i in picks], model_cfg.layout)
        batch = to_batch(episodes, device)
        if cfg.augment:
            augment_batch(batch, aug)
        turn_mask = torch.from_numpy(mask).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, time_used)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda):
            logits, aux = net(batch)
        losses, per_sample = weighted_losses(logits, batch, turn_mask, cfg)
        loss = sum(cfg.loss_weights[k] * v for k, v in losses.items())
        loss = loss + model_cfg.aux_loss_weight * aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        if hasattr(grad_norm, "full_tensor"):  # sharded: a DTensor of the global norm
            grad_norm = grad_norm.full_tensor()
        opt.step()
        step += 1
        tokens += int(mask.sum()) * slots * world
        bar.update(1)
        # Reading a GPU value waits for the GPU, and a collective waits for every process:
        # both only at log steps, not on every step.
        check = step % cfg.log_every == 0 or step == cfg.steps
        if lead and check:
            rate = tokens / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{rate:,.0f}")
            total = sum(cfg.loss_weights[k] * v for k, v in per_sample.items()).cpu()
            by_scenario: dict[str, list[float]] = {}
            for i, p in enumerate(picks):
                by_scenario.setdefault(data[p][0], []).append(float(total[i]))
            log.append(
                {
                    "step": step,
                    "lr": lr_at(step - 1, cfg, time_used),
                    "loss": loss.item(),
                    "aux": aux.item(),
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": rate,
                    **{k: v.item() for k, v in losses.items()},
                    "by_scenario": {k: float(np.mean(v)) for k, v in by_scenario.items()},
                }
            )
            _append(out, log[-1])
        if check and cfg.grow_data:
            found = _new_shards(cfg.data, shards, allow_empty=True) if lead else []
            fresh = _agree_object(found, device)
            if fresh:
                shards += fresh
                data += _load_episodes(_shard_paths(cfg.data, fresh), model_cfg.layout, wanted)
                by_length = np.argsort([turns.n_turns for _, turns in data], kind="stable")
                if lead:
                    tqdm.write(f"step {step}: {len(fresh)} new shards, {len(data)} episodes")
                    _append(out, {"step": step, "shards": len(shards), "episodes": len(data)})
        out_of_time = False
        if check and cfg.time_limit_s:
            elapsed = time.perf_counter() - started
            time_used = _agree_value(elapsed / cfg.time_limit_s, device)
            out_of_time = time_used > 1
        last = step == cfg.steps or out_of_time
        evaluating = eval_set is not None and (step % cfg.eval_every == 0 or last)
        saving = step % cfg.save_every == 0 or last
        if lead and evaluating:
            scores = evaluate(model, eval_set, seed=cfg.seed)
            score = headline(scores)
            _append(out, {"step": step, "eval": scores, "eval_score": score})
            tqdm.write(f"step {step}: eval score {score:.3f}")
            if best is None or score > best["score"]:
                best = {"step": step, "score": score}
                save_pretrained(model, out / BEST_DIR)
                _write_json(out / BEST_DIR / "eval.json", {**best, "scenarios": scores})
        if saving and (lead or cfg.fsdp):  # gathering a sharded state takes every process
            grown = shards if cfg.grow_data else None
            save_checkpoint(model, opt, rng, aug, step, cfg, out, best, grown, lead=lead)
        if world > 1 and (evaluating or saving):
            dist.barrier()  # the others wait while process 0 evaluates or writes
        if out_of_time:
            break
    bar.close()
    return {
        "steps": step,
        "log": log,
        "tokens_per_s": tokens / (time.perf_counter() - started),
        "best": best,
    }


# A shard as (index of its folder in the run's comma-separated data folders, file name):
# the same shard whatever the working directory or where the folders have moved.
ShardKey = tuple[int, str]


def _new_shards(folders: str, known: list[ShardKey], *, allow_empty: bool) -> list[ShardKey]:
    """The complete shards (shard-*.npz; one being written is still *.tmp) in the
    comma-separated `folders` that are not in `known`, folder by folder in name order."""
    seen = set(known)
    out = []
    for i, folder in enumerate(folders.split(",")):
        found = sorted(Path(folder).glob("shard-*.npz"))
        if not found and not allow_empty:
            raise ValueError(f"no shards (shard-*.npz) in {folder}")
        out += [(i, p.name) for p in found if (i, p.name) not in seen]
    return out


def _shard_paths(folders: str, keys: list[ShardKey]) -> list[Path]:
    """Where the shards `keys` are now, under this run's data folders."""
    names = folders.split(",")
    if any(i >= len(names) for i, _ in keys):
        raise ValueError(f"this run trained on more data folders than {folders!r} names")
    return [Path(names[i]) / name for i, name in keys]


def _load_episodes(
    shards: list[Path], layout: Any, wanted: set[str]
) -> list[tuple[str, MicroTurns]]:
    """(scenario, episode) pairs of `shards`, only the `wanted` scenarios if any."""
    data = [x for p in shards for x in load_shard(p, layout)]
    return [x for x in data if x[0] in wanted] if wanted else data


def _agree_object(value: Any, device: torch.device) -> Any:
    """Process 0's `value` on every process (what it found on disk is what all load);
    sent through each process's own device (NCCL would otherwise use GPU 0 for all)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, 0, device=device)
    return box[0]


def _agree_value(value: float, device: torch.device) -> float:
    """Process 0's value on every process (its clock sets the schedule for all)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def _append(out: Path, record: dict[str, Any]) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_checkpoint(
    model: InteractionModel,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    aug: torch.Generator,
    step: int,
    cfg: TrainConfig,
    out: Path,
    best: dict[str, Any] | None = None,
    shards: list[ShardKey] | None = None,
    *,
    lead: bool = True,
) -> None:
    """Weights + config (loadable by from_pretrained) and the trainer state, atomically;
    `shards`: what a growing run has trained on so far, in load order, for an exact
    resume (the folders are still changing; any other run's are read as they are).
    A sharded (--fsdp) model's full weights and optimizer state are gathered first, on
    every process (call it on all); only `lead` writes."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full) if cfg.fsdp else None
    optimizer = get_optimizer_state_dict(model, opt, options=full) if cfg.fsdp else None
    if not lead:
        return
    save_pretrained(model, out, state=weights)
    tmp = out / (TRAINER_FILE + ".tmp")
    torch.save(
        {
            "optimizer": opt.state_dict() if optimizer is None else optimizer,
            "optimizer_format": "by_index" if optimizer is None else FULL_OPTIMIZER,
            "step": step,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "aug_rng": aug.get_state(),
            "best": best,
            "config": asdict(cfg),
            **({"shards": [list(k) for k in shards]} if shards is not None else {}),
        },
        tmp,
    )
    os.replace(tmp, out / TRAINER_FILE)

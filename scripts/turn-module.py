"""Does *when* to speak need attention across micro-turns above the main model? A go /
no-go probe for a turn-level module, on a frozen model.

The floor decision and time-awareness cues are the main model's to learn, and a CPU
cannot retrain it. But each micro-turn's state (`InteractionModel.encode`: the main
model's output at the last input slot, what the depth decoder reads) is one vector per
200 ms: a small causal transformer over those vectors (with a clock: sinusoids of the
micro-turn index) trains in minutes on cached states. If it makes the decisions
(action slot, first text slot) measurably better teacher-forced, the information is in
the states and a turn-level module is worth building into the model; if only a control
without attention across micro-turns (the same module, each micro-turn alone) gets the
same, it is the extra capacity and training, not the cross-turn view.

Arms, on the same batches, the depth decoder frozen: `attend` (the module) and `local`
(its feed-forward layers only). Each adds a zero-initialized correction to the state, so
both start as the model. `onset` adds only an onset clock (the model's
`onset_clock_turns`: one vector per count of micro-turns since the reference last
started a message) and `onset-local` feeds it to the local arm: is the time since the
model's own last start what the decision lacks? `--save DIR` writes the `onset` arm as
a checkpoint (MODEL grown with the trained onset clock). Trained on the decisions only,
the clock also moves every other slot (the first audio slot got worse): benchmark it
before trusting it.
Loss: cross-entropy of the action slot and the first text slot,
each micro-turn weighted 1 + onset weight where the reference starts writing (as
`microturn train`). Reported on evaluation sets: the decisions' mean cross-entropy by
scenario, time-awareness cue odds (scripts/cue-timing.py's) and turn-taking floor odds
(scripts/floor-odds.py's), and every output slot's teacher-forced quality (the words
and sound must not get worse).

Usage: python scripts/turn-module.py MODEL TRAIN[,TRAIN...] EVAL[,EVAL...] [--steps N]
[--cache DIR] [--arms attend,local,onset,onset-local] [--save DIR]
(TRAIN: microturn data DIR/train folders; EVAL: DIR/eval sets)
"""

import argparse
import importlib.util
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from microturn.model import from_pretrained, save_pretrained
from microturn.model.batch import to_batch
from microturn.model.config import ModelConfig
from microturn.model.rope import rotary_angles
from microturn.model.sampling import between_before, since_onset_before
from microturn.model.transformer import (
    Block,
    Clock,
    InteractionModel,
    Logits,
    OnsetClock,
    SwiGLU,
)
from microturn.stream.layout import Special, Track
from microturn.train.data import load_shard
from microturn.train.evaluate import StartOdds, load_eval_set, reference_decisions, slot_tally
from microturn.train.loop import onset_turns

EPISODES_PER_BATCH = 16
OCTAVES = 7
ONSET_TURNS = 80  # 16 s: the longest "say it in N seconds" (15 s) fits


def _script(name: str):
    """A sibling script's module (their names have hyphens)."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cue_odds = _script("cue-timing.py").cue_odds
floor_odds = _script("floor-odds.py").floor_odds


def onset_clock(cfg: ModelConfig) -> OnsetClock:
    """The model's onset clock, starting at zero (as `InteractionModel.grow` adds it)."""
    clock = OnsetClock(ONSET_TURNS, cfg.d_model)
    nn.init.zeros_(clock.embed.weight)
    return clock


class TurnModule(nn.Module):
    """A causal transformer over micro-turn states (or, `attend=False`, its feed-forward
    layers only) whose output, through a zero-initialized projection, corrects them;
    with `onset`, an onset clock is added to its input."""

    def __init__(
        self, cfg: ModelConfig, layers: int, heads: int, attend: bool, onset: bool = False
    ) -> None:
        super().__init__()
        d_model = cfg.d_model
        self.attend, self.heads, self.rope_theta = attend, heads, cfg.rope_theta
        self.onset = onset_clock(cfg) if onset else None
        self.clock = Clock(OCTAVES, cfg.layout, d_model)
        self.blocks = nn.ModuleList(
            [Block(d_model, heads, heads, SwiGLU(d_model, 2 * d_model), cfg) for _ in range(layers)]
        )
        self.norm = nn.RMSNorm(d_model)
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, context: Tensor, since: Tensor) -> Tensor:
        """States [B, N, d] -> corrected states [B, N, d] (causal over N); `since` [B,
        N]: micro-turns since the last message start (read only with `onset`)."""
        b, n, _ = context.shape
        positions = torch.arange(n).expand(b, -1)  # one per micro-turn
        x = context + self.clock(positions * self.clock.slots_per_turn, context.dtype)
        if self.onset is not None:
            x = self.onset(x, since)
        rope = rotary_angles(positions, x.shape[-1] // self.heads, self.rope_theta, x.dtype)
        for block in self.blocks:
            if self.attend:
                x, _ = block(x, rope, None, 0)
            else:
                x = x + block.ffn(block.norm2(x))
        return context + self.out(self.norm(x))


@torch.no_grad()
def episode_states(model: InteractionModel, turns) -> dict[str, Tensor]:
    batch = to_batch([turns])
    context, written, _ = model.encode(batch)
    return {
        "context": context[0].half(),
        "written": written[0].half(),
        "onset": onset_turns(batch)[0],
        **{k: batch[k][0] for k in ("model_action", "model_text", "model_audio")},
    }


def with_since(st: dict[str, Tensor]) -> dict[str, Tensor]:
    """An episode's states plus micro-turns since the reference's last message start
    before each micro-turn (what the model's onset clock reads)."""
    return {**st, "since": since_onset_before(st["model_text"][None].long())[0]}


def cached_states(model: InteractionModel, folders: list[Path], cache: Path, full: bool):
    """Per episode: (scenario, states); written to / read from `cache`. `full` keeps every
    written slot and the audio targets (the evaluation sets' full report); training keeps
    what the decisions need."""
    if cache.is_file():
        return torch.load(cache)
    started, out = time.perf_counter(), []
    for folder in folders:
        if full:
            items = [(ep.scenario, turns) for ep, turns in load_eval_set(folder, model.layout)]
        else:
            shards = sorted(folder.glob("shard-*.npz"))
            items = [item for f in shards for item in load_shard(f, model.layout)]
        for i, (scenario, turns) in enumerate(items):
            st = episode_states(model, turns)
            if not full:
                st = {
                    "context": st["context"],
                    "written": st["written"][:, :1].clone(),
                    "onset": st["onset"],
                    "model_action": st["model_action"],
                    "model_text": st["model_text"],
                }
            out.append((scenario, st))
            if (i + 1) % 200 == 0:
                print(f"  {folder}: {i + 1}/{len(items)} episodes", flush=True)
    print(f"states of {len(out)} episodes in {time.perf_counter() - started:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def pad_batch(episodes: list[dict[str, Tensor]]) -> tuple[dict[str, Tensor], Tensor]:
    """Episodes padded at the end to one length, and the mask of real micro-turns."""
    n = max(e["context"].shape[0] for e in episodes)
    out = {}
    for k in episodes[0]:
        rows = []
        for e in episodes:
            pad = n - e[k].shape[0]
            rows.append(torch.cat([e[k], e[k][-1:].expand(pad, *e[k].shape[1:])]) if pad else e[k])
        out[k] = torch.stack(rows)
    valid = torch.stack([torch.arange(n) < e["context"].shape[0] for e in episodes])
    return out, valid


def decision_logits(model: InteractionModel, context: Tensor, action: Tensor):
    """Action-slot and first-text-slot logits from states [M, d] and the written action
    slot's embedding [M, 1, d]: the depth decoder's first two positions."""
    h = model.depth.hidden(context, action)
    return model.depth.head(Track.MODEL_ACTION, h[:, 0]), model.depth.head(
        Track.MODEL_TEXT, h[:, 1]
    )


def decision_losses(model, module, st: dict[str, Tensor], valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per real micro-turn: action and first-text cross-entropy [M] each."""
    context = st["context"].float()
    if module is not None:
        context = module(context, st["since"])
    ctx, act = context[valid], st["written"][valid].float()
    a, t = decision_logits(model, ctx, act)
    ce_a = F.cross_entropy(a.float(), st["model_action"][valid][:, 0].long(), reduction="none")
    ce_t = F.cross_entropy(t.float(), st["model_text"][valid][:, 0].long(), reduction="none")
    return ce_a, ce_t


def train(model, module, data, steps: int, lr: float, onset_weight: float, seed: int) -> None:
    params = list(module.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    draw = torch.Generator().manual_seed(seed)
    started, running = time.perf_counter(), []
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        idx = torch.randint(0, len(data), (EPISODES_PER_BATCH,), generator=draw).tolist()
        st, valid = pad_batch([data[i][1] for i in idx])
        ce_a, ce_t = decision_losses(model, module, st, valid)
        w = 1 + onset_weight * st["onset"][valid].float()
        loss = ((ce_a + ce_t) * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0:
            print(
                f"  step {step + 1}/{steps}: loss {np.mean(running):.4f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            running = []


@torch.no_grad()
def report(name: str, model, module, held, layout) -> dict:
    """Decision cross-entropy by scenario, cue odds, floor odds, all-slot quality."""
    ce: dict[str, list[float]] = defaultdict(list)
    cues: dict[str, list[tuple[float, float]]] = defaultdict(list)
    pauses, ends, tally = [], [], {}
    for ep, turns, st in held:
        context = st["context"].float()[None]
        if module is not None:
            context = module(context, st["since"][None])
        context = context[0]
        _, t = decision_logits(model, context, st["written"][:, :1].float())
        deciding, writes = reference_decisions(turns)
        ce_t = F.cross_entropy(t.float(), st["model_text"][:, 0].long(), reduction="none")
        ce[ep.scenario] += ce_t[torch.from_numpy(deciding)].tolist()
        p_quiet = t.float().softmax(-1)[:, Special.PAD].numpy()
        times = np.array([layout.output_start_s(i) for i in range(turns.n_turns)])
        odds = StartOdds(p_quiet, deciding, writes, times)
        if ep.scenario == "time_awareness":
            for cat, on, quiet in cue_odds(ep, odds):
                cues[cat].append((on, quiet))
                cues["all"].append((on, quiet))
        elif ep.scenario == "turn_taking":
            p, e = floor_odds(ep, odds)
            pauses += [x for x in p if x is not None]
            ends += [x for x in e if x is not None]
        h = model.depth.hidden(context, st["written"][:, :-1].float())
        logits = Logits(**model.depth.logits(h))
        targets = {k: st[k] for k in ("model_action", "model_text", "model_audio")}
        inside = ~between_before(st["model_text"][None].long())[0]
        part = slot_tally(logits, targets, inside)
        tally = {k: tally.get(k, 0) + v for k, v in part.items()}
    result = {
        "decision_ce": {k: float(np.mean(v)) for k, v in sorted(ce.items())},
        "cue_on_time": {k: float(np.mean([x[0] for x in v])) for k, v in sorted(cues.items())},
        "cue_quiet": float(np.mean([x[1] for x in cues["all"]])) if cues else None,
        "pause_odds": float(np.mean(pauses)) if pauses else None,
        "turn_end_odds": float(np.mean(ends)) if ends else None,
        "pauses_over_half": float(np.mean(np.array(pauses) > 0.5)) if pauses else None,
        "ends_over_half": float(np.mean(np.array(ends) > 0.5)) if ends else None,
        "text_accuracy": (tally["text_right"] / tally["text_n"]).tolist(),
        "audio_nll": (tally["audio_nll"] / tally["audio_n"]).tolist(),
    }
    print(f"{name}:", flush=True)
    for k, v in result.items():
        if isinstance(v, dict):
            v = " ".join(f"{a} {b:.3f}" for a, b in v.items())
        elif isinstance(v, list):
            v = " ".join(f"{x:.3f}" for x in v)
        elif v is not None:
            v = f"{v:.3f}"
        print(f"  {k}: {v}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python scripts/turn-module.py")
    p.add_argument("model", type=Path)
    p.add_argument("train", help="comma-separated microturn data DIR/train folders")
    p.add_argument("eval", help="comma-separated evaluation sets")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--onset-weight", type=float, default=10.0)
    p.add_argument("--arms", default="attend,local")
    p.add_argument("--cache", type=Path, default=Path("out/turnmod"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, help="write the onset arm here as a checkpoint")
    args = p.parse_args()
    model = from_pretrained(args.model).eval().requires_grad_(False)
    if model.onset_clock is not None:
        # these probes run the depth decoder on cached states, without the count it reads
        raise SystemExit(f"{args.model} has an onset clock, which this script does not feed")
    folders = [Path(f) for f in args.train.split(",")]
    tag = "-".join(f.parent.name for f in folders)
    data = cached_states(model, folders, args.cache / f"train-{tag}.pt", full=False)
    data = [(scenario, with_since(st)) for scenario, st in data]
    lengths = [st["context"].shape[0] for _, st in data]
    print(f"{len(data)} training episodes, {sum(lengths)} micro-turns, longest {max(lengths)}")
    held = []
    for f in args.eval.split(","):
        states = cached_states(
            model, [Path(f)], args.cache / f"eval-{Path(f).parent.name}.pt", True
        )
        pairs = load_eval_set(Path(f), model.layout)
        held += [
            (ep, turns, with_since(st)) for (ep, turns), (_, st) in zip(pairs, states, strict=True)
        ]
    report("model as trained", model, None, held, model.layout)
    for arm in args.arms.split(","):
        torch.manual_seed(args.seed)
        if arm == "onset":
            module = onset_clock(model.cfg)
        else:
            module = TurnModule(
                model.cfg, args.layers, 4, attend=arm == "attend", onset=arm == "onset-local"
            )
        print(f"arm {arm}: {sum(p.numel() for p in module.parameters())} parameters", flush=True)
        train(model, module, data, args.steps, args.lr, args.onset_weight, args.seed)
        report(f"arm {arm}", model, module.eval(), held, model.layout)
        torch.save(module.state_dict(), args.cache / f"module-{arm}.pt")
        if arm == "onset" and args.save:
            grown = model.grow(onset_clock_turns=ONSET_TURNS)
            grown.onset_clock.load_state_dict(module.state_dict())
            save_pretrained(grown.eval(), args.save)
            print(f"wrote {args.save}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
